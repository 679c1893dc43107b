//! The arguments of each command, as `COMMAND DOCS` lists them: redis-cli (7.2 and later)
//! builds its hints and `HELP` from them.
//!
//! Each command's arguments are written in a short syntax and turned into Redis's argument
//! tree on demand:
//!
//! - `name`: an argument (its type follows from its name: `key`, `pattern`, a number, ...);
//! - `TOKEN name`: an argument that follows a keyword; `TOKEN` alone: a keyword;
//! - `x...`: one or more; `[x]`: optional; `(x y)`: a group; `a | b`: one of (inside
//!   brackets or parentheses).

/// The arguments of every command calm answers, after its name.
pub(crate) const SYNOPSES: &[(&str, &str)] = &[
    ("get", "key"),
    (
        "set",
        "key value [NX | XX] [GET] [EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]",
    ),
    ("mget", "key..."),
    ("mset", "(key value)..."),
    ("strlen", "key"),
    ("incr", "key"),
    ("incrby", "key increment"),
    ("decr", "key"),
    ("decrby", "key decrement"),
    ("setex", "key seconds value"),
    ("psetex", "key milliseconds value"),
    ("del", "key..."),
    ("unlink", "key..."),
    ("exists", "key..."),
    ("type", "key"),
    ("keys", "pattern"),
    ("scan", "cursor [MATCH pattern] [COUNT count] [TYPE type]"),
    ("expire", "key seconds [NX | XX | GT | LT]"),
    ("pexpire", "key milliseconds [NX | XX | GT | LT]"),
    ("expireat", "key unix-time-seconds [NX | XX | GT | LT]"),
    (
        "pexpireat",
        "key unix-time-milliseconds [NX | XX | GT | LT]",
    ),
    ("expiretime", "key"),
    ("pexpiretime", "key"),
    ("persist", "key"),
    ("ttl", "key"),
    ("pttl", "key"),
    ("lpush", "key element..."),
    ("rpush", "key element..."),
    ("llen", "key"),
    ("lrange", "key start stop"),
    ("lindex", "key index"),
    (
        "lpos",
        "key element [RANK rank] [COUNT num-matches] [MAXLEN len]",
    ),
    ("linsert", "key (BEFORE | AFTER) pivot element"),
    ("lrem", "key count element"),
    ("lset", "key index element"),
    ("ltrim", "key start stop"),
    ("sadd", "key member..."),
    ("srem", "key member..."),
    ("smembers", "key"),
    ("srandmember", "key [count]"),
    ("sscan", "key cursor [MATCH pattern] [COUNT count]"),
    ("sismember", "key member"),
    ("smismember", "key member..."),
    ("sinter", "key..."),
    ("sunion", "key..."),
    ("sdiff", "key..."),
    ("sintercard", "numkeys key... [LIMIT limit]"),
    ("touch", "key..."),
    ("getrange", "key start end"),
    ("substr", "key start end"),
    ("time", ""),
    ("publish", "channel message"),
    ("subscribe", "channel..."),
    ("psubscribe", "pattern..."),
    ("unsubscribe", "[channel...]"),
    ("punsubscribe", "[pattern...]"),
    ("memory", "subcommand [argument...]"),
    ("flushall", "[ASYNC | SYNC]"),
    ("flushdb", "[ASYNC | SYNC]"),
    ("scard", "key"),
    ("hset", "key (field value)..."),
    ("hmset", "key (field value)..."),
    ("hget", "key field"),
    ("hmget", "key field..."),
    ("hgetall", "key"),
    ("hrandfield", "key [count [WITHVALUES]]"),
    ("hscan", "key cursor [MATCH pattern] [COUNT count]"),
    ("hkeys", "key"),
    ("hvals", "key"),
    ("hlen", "key"),
    ("hexists", "key field"),
    ("hstrlen", "key field"),
    ("hdel", "key field..."),
    ("hincrby", "key field increment"),
    (
        "zadd",
        "key [NX | XX] [GT | LT] [CH] [INCR] (score member)...",
    ),
    ("zincrby", "key increment member"),
    ("zscore", "key member"),
    ("zmscore", "key member..."),
    ("zcard", "key"),
    ("zrem", "key member..."),
    (
        "zrange",
        "key start stop [BYSCORE | BYLEX] [REV] [LIMIT (offset count)] [WITHSCORES]",
    ),
    ("zrandmember", "key [count [WITHSCORES]]"),
    ("zscan", "key cursor [MATCH pattern] [COUNT count]"),
    (
        "zrangebyscore",
        "key min max [WITHSCORES] [LIMIT (offset count)]",
    ),
    ("zrevrange", "key start stop [WITHSCORES]"),
    (
        "zrevrangebyscore",
        "key max min [WITHSCORES] [LIMIT (offset count)]",
    ),
    ("zcount", "key min max"),
    ("zrangebylex", "key min max [LIMIT (offset count)]"),
    ("zrevrangebylex", "key max min [LIMIT (offset count)]"),
    ("zlexcount", "key min max"),
    ("zrank", "key member [WITHSCORE]"),
    ("zrevrank", "key member [WITHSCORE]"),
    ("ping", "[message]"),
    ("echo", "message"),
    ("auth", "[username] password"),
    (
        "hello",
        "[protover [AUTH (username password)] [SETNAME clientname]]",
    ),
    ("client", "subcommand [argument...]"),
    ("acl", "subcommand [argument...]"),
    ("select", "index"),
    ("quit", ""),
    ("info", "[section...]"),
    ("dbsize", ""),
    ("command", "[subcommand [argument...]]"),
    ("config", "subcommand [argument...]"),
    ("multi", ""),
    ("exec", ""),
    ("discard", ""),
    ("calm.max", "key value"),
    ("calm.priority", "key priority value"),
    ("calm.causal", "key value"),
    ("calm.versions", "key"),
    ("calm.kind", "key"),
];

/// One argument of a command.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// Its name.
    pub name: String,
    /// Redis's argument type: `key`, `string`, `integer`, `double`, `pattern`,
    /// `unix-time`, `pure-token`, `block` or `oneof`.
    pub kind: &'static str,
    /// The keyword before it, if any.
    pub token: Option<String>,
    /// Whether it may be left out.
    pub optional: bool,
    /// Whether it may be given more than once.
    pub multiple: bool,
    /// What a block or a one-of holds.
    pub args: Vec<Arg>,
}

impl Arg {
    fn new(name: String, kind: &'static str, token: Option<String>, args: Vec<Arg>) -> Arg {
        Arg {
            name,
            kind,
            token,
            optional: false,
            multiple: false,
            args,
        }
    }

    /// How many words it takes at least, and whether it can take more.
    #[cfg(test)]
    pub(crate) fn words(&self) -> (usize, bool) {
        let (least, more) = match self.kind {
            "block" => self.args.iter().fold((0, false), |(n, v), a| {
                let (m, w) = a.words();
                (n + m, v || w)
            }),
            "oneof" => {
                let each: Vec<(usize, bool)> = self.args.iter().map(Arg::words).collect();
                let least = each.iter().map(|w| w.0).min().unwrap_or(0);
                let most_differs = each.iter().any(|w| w.0 != least || w.1);
                (least, most_differs)
            }
            "pure-token" => (1, false),
            _ => (1 + usize::from(self.token.is_some()), false),
        };
        if self.optional {
            (0, true)
        } else {
            (least, more || self.multiple)
        }
    }
}

/// The type of an argument named `name`.
fn kind_of(name: &str) -> &'static str {
    match name {
        "key" => "key",
        "pattern" => "pattern",
        "unix-time-seconds" | "unix-time-milliseconds" => "unix-time",
        "score" => "double",
        "seconds" | "milliseconds" | "increment" | "decrement" | "start" | "stop" | "end"
        | "index" | "count" | "rank" | "num-matches" | "len" | "numkeys" | "limit" | "offset"
        | "cursor" | "protover" => "integer",
        _ => "string",
    }
}

/// The arguments of command `name` (lowercase), if calm answers it.
pub fn arguments(name: &str) -> Option<Vec<Arg>> {
    let (_, synopsis) = SYNOPSES.iter().find(|(n, _)| *n == name)?;
    parse(synopsis).ok()
}

/// Reads a synopsis; an error names what was wrong (a bracket left open, ...).
pub fn parse(synopsis: &str) -> Result<Vec<Arg>, String> {
    let spaced = synopsis
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace("...", " ... ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let mut at = 0;
    let args = alternatives(&words, &mut at)?;
    match words.get(at) {
        None => Ok(args),
        Some(w) => Err(format!("unexpected '{w}'")),
    }
}

/// A sequence, or several separated by `|` (then one `oneof`), up to a closing bracket.
fn alternatives(words: &[&str], at: &mut usize) -> Result<Vec<Arg>, String> {
    let mut choices = vec![sequence(words, at)?];
    while words.get(*at) == Some(&"|") {
        *at += 1;
        choices.push(sequence(words, at)?);
    }
    if choices.len() == 1 {
        return Ok(choices.remove(0));
    }
    let args: Vec<Arg> = choices.into_iter().map(group).collect();
    let name = (args.iter().map(|a| a.name.as_str()))
        .collect::<Vec<_>>()
        .join("-or-");
    Ok(vec![Arg::new(name, "oneof", None, args)])
}

/// Several arguments as one: itself if alone, else a block.
fn group(mut args: Vec<Arg>) -> Arg {
    if args.len() == 1 {
        return args.remove(0);
    }
    let name = (args.iter().map(|a| a.name.as_str()))
        .collect::<Vec<_>>()
        .join("-");
    Arg::new(name, "block", None, args)
}

fn sequence(words: &[&str], at: &mut usize) -> Result<Vec<Arg>, String> {
    let mut args = Vec::new();
    while let Some(&word) = words.get(*at) {
        let mut arg = match word {
            "|" | "]" | ")" => break,
            "..." => return Err("'...' after nothing".into()),
            "[" | "(" => {
                *at += 1;
                let inner = alternatives(words, at)?;
                let close = if word == "[" { "]" } else { ")" };
                if words.get(*at) != Some(&close) {
                    return Err(format!("'{word}' not closed"));
                }
                *at += 1;
                let mut arg = group(inner);
                arg.optional |= word == "[";
                arg
            }
            _ if word.chars().any(|c| c.is_ascii_uppercase()) => {
                *at += 1;
                let token = Some(word.to_string());
                match words.get(*at) {
                    Some(&"(") => {
                        let mut block = sequence_one(words, at)?;
                        block.token = token;
                        block
                    }
                    Some(next)
                        if !matches!(*next, "|" | "]" | ")" | "[" | "...")
                            && !next.chars().any(|c| c.is_ascii_uppercase()) =>
                    {
                        *at += 1;
                        Arg::new(next.to_string(), kind_of(next), token, Vec::new())
                    }
                    _ => Arg::new(word.to_ascii_lowercase(), "pure-token", token, Vec::new()),
                }
            }
            _ => {
                *at += 1;
                Arg::new(word.to_string(), kind_of(word), None, Vec::new())
            }
        };
        if words.get(*at) == Some(&"...") {
            *at += 1;
            arg.multiple = true;
        }
        args.push(arg);
    }
    Ok(args)
}

/// One parenthesized group, as one argument.
fn sequence_one(words: &[&str], at: &mut usize) -> Result<Arg, String> {
    *at += 1;
    let inner = alternatives(words, at)?;
    if words.get(*at) != Some(&")") {
        return Err("'(' not closed".into());
    }
    *at += 1;
    Ok(group(inner))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn synopses_read_as_redis_argument_trees() {
        let set = parse("key value [NX | XX] [EX seconds | KEEPTTL] (field value)...").unwrap();
        assert_eq!(set.len(), 5);
        assert_eq!((set[0].kind, set[1].kind), ("key", "string"));
        assert_eq!((set[2].kind, set[2].optional), ("oneof", true));
        assert_eq!(set[2].args[1].token.as_deref(), Some("XX"));
        assert_eq!(set[2].args[1].kind, "pure-token");
        let ex = &set[3].args[0];
        assert_eq!((ex.name.as_str(), ex.kind), ("seconds", "integer"));
        assert_eq!(ex.token.as_deref(), Some("EX"));
        assert_eq!((set[4].kind, set[4].multiple), ("block", true));
        assert_eq!(set[4].args.len(), 2);
        let limit = &parse("[LIMIT (offset count)]").unwrap()[0];
        assert_eq!((limit.kind, limit.optional), ("block", true));
        assert_eq!(limit.token.as_deref(), Some("LIMIT"));
        assert_eq!(limit.words(), (0, true));
        for bad in ["[key", "key)", "...", "(a | b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
