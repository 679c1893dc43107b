//! End to end: a real `calm server --resp` process driven by clients nobody here wrote —
//! `redis-cli` (installed by `scripts/test` when missing) and the `redis` crate — and by raw
//! sockets for the bad-input cases; and `calm up`'s Redis ports across a cluster.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::Up;

struct Resp {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Resp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(password: Option<&str>) -> Resp {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_tcp_base_port(1);
    let listen = format!("127.0.0.1:{}", common::free_base_port(1));
    let resp = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut args = vec![
        "--listen",
        &listen,
        "--resp",
        &resp,
        "--threads",
        "2",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    if let Some(p) = password {
        args.extend(["--resp-password", p]);
    }
    let (child, line) = common::server(&args);
    assert!(line.contains(&format!("RESP {resp}")), "{line}");
    Resp {
        child,
        port,
        _dir: dir,
    }
}

/// `redis-cli -p PORT ARGS...`: its output, trimmed (and what it printed on stderr).
fn cli_both(port: u16, args: &[&str]) -> (String, String) {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli is installed (scripts/test installs redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    (
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn cli(port: u16, args: &[&str]) -> String {
    cli_both(port, args).0
}

#[test]
fn redis_cli_runs_every_command() {
    let r = start(None);
    let p = r.port;
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG"),
        (&["PING", "hello"], "hello"),
        (&["ECHO", "calm"], "calm"),
        (&["SET", "greeting", "hello world"], "OK"),
        (&["GET", "greeting"], "hello world"),
        (&["GET", "missing"], ""),
        (&["EXISTS", "greeting", "missing", "greeting"], "2"),
        (&["MSET", "k1", "v1", "k2", "v2"], "OK"),
        (&["MGET", "k1", "missing", "k2"], "v1\n\nv2"),
        (&["DEL", "k1", "missing"], "1"),
        (&["GET", "k1"], ""),
        (&["STRLEN", "greeting"], "11"),
        (&["STRLEN", "missing"], "0"),
        (&["UNLINK", "k2", "missing"], "1"),
        (&["GET", "k2"], ""),
        (&["INCR", "visits"], "1"),
        (&["INCRBY", "visits", "41"], "42"),
        (&["DECR", "visits"], "41"),
        (&["DECRBY", "visits", "11"], "30"),
        (&["GET", "visits"], "30"),
        (&["SADD", "tags", "red", "green", "red"], "2"),
        (&["SADD", "tags", "green", "blue"], "1"),
        (&["SREM", "tags", "red", "purple"], "1"),
        (&["SMEMBERS", "tags"], "blue\ngreen"),
        (&["SISMEMBER", "tags", "blue"], "1"),
        (&["SISMEMBER", "tags", "red"], "0"),
        (&["SCARD", "tags"], "2"),
        (&["TYPE", "tags"], "set"),
        (&["TYPE", "greeting"], "string"),
        (&["TYPE", "visits"], "string"),
        (&["TYPE", "missing"], "none"),
        // The keys that read as something: greeting, visits, tags (k1 and k2 were deleted).
        (&["DBSIZE"], "3"),
        (&["KEYS", "*i*"], "greeting\nvisits"),
        (&["CLIENT", "SETNAME", "tester"], "OK"),
        (&["CLIENT", "GETNAME"], ""),
        (&["CALM.MAX", "high", "7"], "OK"),
        (&["CALM.MAX", "high", "3"], "OK"),
        (&["GET", "high"], "7"),
        (&["CALM.PRIORITY", "job", "5", "later"], "OK"),
        (&["CALM.PRIORITY", "job", "1", "now"], "OK"),
        (&["GET", "job"], "now"),
        (&["CALM.KIND", "job"], "priority"),
        (&["CALM.CAUSAL", "doc", "v1"], "OK"),
        (&["CALM.VERSIONS", "doc"], "v1"),
        (&["TTL", "greeting"], "-1"),
        (&["TTL", "missing"], "-2"),
        (
            &["AUTH", "x"],
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(cli(p, args), *expected, "redis-cli {args:?}");
    }
    assert_eq!(
        cli(p, &["COMMAND", "COUNT"]),
        calm_kvs::resp::COMMANDS.len().to_string()
    );
    // What tools read: settings, command descriptions, the connections.
    assert_eq!(cli(p, &["CONFIG", "GET", "maxmemory"]), "maxmemory\n0");
    let max = cli(p, &["CONFIG", "GET", "maxmemory*"]);
    assert!(max.contains("maxmemory-policy\nnoeviction"), "{max}");
    assert_eq!(cli(p, &["CONFIG", "GET", "port"]), format!("port\n{p}"));
    assert!(
        cli(p, &["CONFIG", "SET", "maxmemory", "1"]).starts_with("ERR CONFIG SET is not supported")
    );
    // Redis's knobs for compact encodings change nothing in calm, and are accepted.
    assert_eq!(
        cli(p, &["CONFIG", "SET", "hash-max-listpack-entries", "10"]),
        "OK"
    );
    assert_eq!(cli(p, &["FUNCTION", "FLUSH"]), "OK");
    let usage: i64 = cli(p, &["MEMORY", "USAGE", "greeting"]).parse().unwrap();
    assert!(usage > "greeting".len() as i64 + 11, "{usage}");
    assert_eq!(cli(p, &["MEMORY", "USAGE", "missing"]), "");
    let info = cli(p, &["COMMAND", "INFO", "get", "nosuch", "zadd"]);
    assert!(
        info.starts_with("get\n2\nreadonly\nfast\n1\n1\n1"),
        "{info}"
    );
    assert!(info.contains("zadd\n-4\nwrite"), "{info}");
    let docs = cli(p, &["COMMAND", "DOCS", "hset"]);
    assert!(docs.contains("summary") && docs.contains("hash"), "{docs}");
    // The arguments, from which redis-cli 7.2 and later build their hints.
    assert!(
        docs.contains("arguments\nname\nkey\ntype\nkey\nname\nfield-value\ntype\nblock\nflags\nmultiple\narguments\nname\nfield"),
        "{docs}"
    );
    assert_eq!(
        cli(p, &["COMMAND", "LIST"]).lines().count(),
        calm_kvs::resp::COMMANDS.len()
    );
    let mut named = redis::Client::open(format!("redis://127.0.0.1:{p}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("lister")
        .query(&mut named)
        .unwrap();
    let list = cli(p, &["CLIENT", "LIST"]);
    let line = list
        .lines()
        .find(|l| l.contains("name=lister"))
        .unwrap_or_else(|| panic!("the named connection in {list}"));
    assert!(
        line.contains("addr=127.0.0.1:") && line.contains("cmd=client"),
        "{line}"
    );
    assert_eq!(
        list.lines().count(),
        2,
        "the named connection and redis-cli's: {list}"
    );
    drop(named);
    // Every connection of redis-cli is new: a name is per connection, as in Redis.
    assert!(cli(p, &["INFO"]).contains("redis_version:"));
    assert!(cli(p, &["INFO"]).contains("db0:keys="));
    // Sections by name, with Redis's field names: what monitoring tools read.
    let memory = cli(p, &["INFO", "memory"]);
    assert!(memory.starts_with("# Memory"), "{memory}");
    assert!(!memory.contains("# Server"), "{memory}");
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} in {text}"))
    };
    assert!(field(&memory, "used_memory") > 0, "{memory}");
    assert!(field(&memory, "used_memory_rss") > field(&memory, "used_memory"));
    assert!(field(&memory, "used_memory_peak") >= field(&memory, "used_memory"));
    assert!(field(&cli(p, &["INFO", "clients"]), "connected_clients") >= 1);
    assert!(field(&cli(p, &["INFO", "stats"]), "total_commands_processed") > 0);
    assert_eq!(cli(p, &["QUIT"]), "OK");
    // RESP3.
    let hello = cli(p, &["-3", "HELLO", "3"]);
    assert!(hello.contains("proto") && hello.contains('3'), "{hello}");
    assert_eq!(cli(p, &["-3", "SMEMBERS", "tags"]).lines().count(), 2);
}

/// The same commands, in the same order, through redis-cli against a calm node and against
/// a real redis-server: every reply must be the same, except that an error of calm may
/// say more after Redis's words (which it must start with). Field and member names are
/// chosen so that Redis's insertion order is also calm's sorted order. The few replies that
/// differ by design are listed apart, with what calm answers instead (and why).
#[test]
fn same_replies_as_redis_server() {
    let calm = start(None);
    let redis = common::RedisServer::start();
    let script: &[&[&str]] = &[
        // Strings and counters.
        &["SET", "s", "text"],
        &["GET", "s"],
        &["STRLEN", "s"],
        &["INCR", "n"],
        &["INCRBY", "n", "9223372036854775806"],
        &["INCR", "n"],
        &["DECRBY", "n", "-1"],
        &["GET", "n"],
        &["SADD", "s", "x"],
        // Sets.
        &["SADD", "set", "a", "b", "a"],
        &["SREM", "set", "a", "zz"],
        &["SMEMBERS", "set"],
        &["SCARD", "set"],
        &["TYPE", "set"],
        &["SADD", "set2", "b", "c", "d"],
        &["SMISMEMBER", "set", "a", "b", "zz"],
        &["SINTER", "set", "set2"],
        &["SINTER", "set", "nokey"],
        &["SINTERCARD", "2", "set", "set2"],
        &["SINTERCARD", "2", "set2", "set2", "LIMIT", "2"],
        &["SINTERCARD", "0", "set"],
        &["SINTERCARD", "a", "set"],
        &["SINTERCARD", "3", "set", "set2"],
        &["SINTER", "set", "s"],
        &["TOUCH", "s", "set", "nokey"],
        &["GETRANGE", "s", "0", "1"],
        &["GETRANGE", "s", "-3", "-1"],
        &["GETRANGE", "s", "2", "100"],
        &["GETRANGE", "s", "5", "1"],
        &["SUBSTR", "s", "1", "2"],
        &["GETRANGE", "nokey", "0", "-1"],
        // Hashes.
        &["HSET", "h", "f1", "v1", "f2", "v2"],
        &["HSET", "h", "f1", "v9", "f3", "v3"],
        &["HSET", "h", "f1"],
        &["HGET", "h", "f1"],
        &["HGET", "h", "nope"],
        &["HGET", "nokey", "f1"],
        &["HMGET", "h", "f1", "nope", "f2"],
        &["HGETALL", "h"],
        &["HKEYS", "h"],
        &["HVALS", "h"],
        &["HLEN", "h"],
        &["HLEN", "nokey"],
        &["HEXISTS", "h", "f2"],
        &["HEXISTS", "h", "nope"],
        &["HSTRLEN", "h", "f3"],
        &["HSTRLEN", "h", "nope"],
        &["HDEL", "h", "f2", "nope"],
        &["HDEL", "h", "f2"],
        &["HGETALL", "h"],
        &["HINCRBY", "h", "f4", "5"],
        &["HINCRBY", "h", "f4", "-7"],
        &["HGET", "h", "f4"],
        &["HINCRBY", "h", "f1", "1"],
        &["HINCRBY", "h", "f4", "x"],
        &["HINCRBY", "h", "f4", "9223372036854775807"],
        &["HSET", "h", "f4", "10"],
        &["HINCRBY", "h", "f4", "1"],
        &["HMSET", "h", "f5", "a", "f6", "b"],
        &["HLEN", "h"],
        &["HINCRBY", "h0", "f", "0"],
        &["HGET", "h0", "f"],
        &["HLEN", "h0"],
        &["SCARD", "h"],
        &["SISMEMBER", "h", "f5"],
        &["ZCARD", "h"],
        &["ZSCORE", "h", "f5"],
        &["LLEN", "h"],
        &["HLEN", "set"],
        &["HGET", "set", "a"],
        &["SMISMEMBER", "nokey", "a", "b"],
        &["HMGET", "nokey", "a", "b"],
        &["ZMSCORE", "nokey", "a", "b"],
        &["LRANGE", "nokey", "0", "-1"],
        &["LINDEX", "nokey", "0"],
        &["TYPE", "h"],
        &["GET", "h"],
        &["SADD", "h", "x"],
        &["HSET", "s", "f", "v"],
        &["HGET", "s", "f"],
        &["HGETALL", "nokey"],
        &["DEL", "h"],
        &["HGETALL", "h"],
        &["HDEL", "h", "f1"],
        &["EXISTS", "h"],
        &["HSET", "h", "again", "1"],
        &["HGETALL", "h"],
        // Sorted sets.
        &["ZADD", "z", "1", "a", "2", "b", "3", "c"],
        &["ZADD", "z", "1.5", "a", "4", "d", "2.5", "a"],
        &["ZADD", "z", "CH", "2.5", "a", "-1", "b", "9", "e"],
        &["ZADD", "z", "x", "a"],
        &["ZADD", "z", "1", "a", "2"],
        &["ZADD", "z", "nan", "a"],
        &["ZADD", "z", "INCR", "1", "a", "2", "b"],
        &["ZSCORE", "z", "a"],
        &["ZSCORE", "z", "nope"],
        &["ZSCORE", "nokey", "a"],
        &["ZMSCORE", "z", "a", "nope", "e"],
        &["ZCARD", "z"],
        &["ZCARD", "nokey"],
        &["ZINCRBY", "z", "0.25", "a"],
        &["ZINCRBY", "z", "5", "new"],
        &["ZINCRBY", "z", "x", "a"],
        &["ZADD", "z", "INCR", "-0.75", "a"],
        &["ZRANGE", "z", "0", "-1"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZRANGE", "z", "1", "2"],
        &["ZRANGE", "z", "-2", "-1"],
        &["ZRANGE", "z", "5", "1"],
        &["ZRANGE", "z", "0", "100"],
        &["ZRANGE", "z", "0", "-1", "REV"],
        &["ZRANGE", "z", "2", "5", "BYSCORE"],
        &["ZRANGE", "z", "(2", "+inf", "BYSCORE", "WITHSCORES"],
        &[
            "ZRANGE", "z", "+inf", "-inf", "BYSCORE", "REV", "LIMIT", "1", "2",
        ],
        &["ZRANGE", "z", "0", "-1", "LIMIT", "1", "2"],
        &["ZRANGE", "z", "x", "1"],
        &["ZRANGE", "z", "0", "1", "BOGUS"],
        &["ZRANGEBYSCORE", "z", "-inf", "(3"],
        &[
            "ZRANGEBYSCORE",
            "z",
            "-inf",
            "+inf",
            "WITHSCORES",
            "LIMIT",
            "0",
            "3",
        ],
        &["ZRANGEBYSCORE", "z", "a", "b"],
        &["ZREVRANGE", "z", "0", "1", "WITHSCORES"],
        &["ZREVRANGEBYSCORE", "z", "+inf", "2"],
        &["ZCOUNT", "z", "2", "(5"],
        &["ZCOUNT", "z", "-inf", "+inf"],
        &[
            "ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e",
        ],
        &["ZRANGEBYLEX", "lex", "-", "+"],
        &["ZRANGEBYLEX", "lex", "[b", "(d"],
        &["ZRANGEBYLEX", "lex", "(a", "[z", "LIMIT", "1", "2"],
        &["ZREVRANGEBYLEX", "lex", "+", "-"],
        &["ZREVRANGEBYLEX", "lex", "[d", "(a", "LIMIT", "0", "2"],
        &["ZLEXCOUNT", "lex", "[b", "+"],
        &["ZLEXCOUNT", "nokey", "-", "+"],
        &["ZRANGE", "lex", "[a", "(c", "BYLEX"],
        &["ZRANGE", "lex", "+", "-", "BYLEX", "REV", "LIMIT", "1", "1"],
        &["ZRANGEBYLEX", "lex", "a", "+"],
        &["ZRANGEBYLEX", "lex", "-", "+", "WITHSCORES"],
        &["ZRANGE", "lex", "-", "+", "BYLEX", "WITHSCORES"],
        &["ZRANGE", "lex", "-", "+", "BYLEX", "BYSCORE"],
        &["ZLEXCOUNT", "lex", "-", "x"],
        &["SADD", "sc", "a1", "a2", "b1"],
        &["SSCAN", "nokey", "0"],
        &["SSCAN", "sc", "x"],
        &["SSCAN", "sc", "0", "COUNT", "0"],
        &["SSCAN", "sc", "0", "BOGUS", "1"],
        &["SADD", "one", "m"],
        &["SRANDMEMBER", "one"],
        &["SRANDMEMBER", "one", "3"],
        &["SRANDMEMBER", "one", "-3"],
        &["SRANDMEMBER", "one", "0"],
        &["SRANDMEMBER", "nokey"],
        &["SRANDMEMBER", "nokey", "2"],
        &["SRANDMEMBER", "one", "x"],
        &["SRANDMEMBER", "one", "-9223372036854775808"],
        &["SRANDMEMBER", "hc"],
        &["HSET", "hone", "f", "v"],
        &["HRANDFIELD", "hone"],
        &["HRANDFIELD", "hone", "2", "WITHVALUES"],
        &["HRANDFIELD", "hone", "-2", "WITHVALUES"],
        &["HRANDFIELD", "hone", "1", "BOGUS"],
        &["HRANDFIELD", "hone", "-9223372036854770000", "WITHVALUES"],
        &["HRANDFIELD", "sc"],
        &["ZADD", "zone", "1.5", "m"],
        &["ZRANDMEMBER", "zone"],
        &["ZRANDMEMBER", "zone", "-2", "WITHSCORES"],
        &["ZRANDMEMBER", "zone", "5"],
        &["ZRANDMEMBER", "nokey", "5", "WITHSCORES"],
        &["HSET", "hc", "f1", "v1", "f2", "v2", "g", "w"],
        &["HSCAN", "hc", "0"],
        &["HSCAN", "hc", "0", "MATCH", "f*"],
        &["ZSCAN", "lex", "0", "MATCH", "[a-c]"],
        &["ZSCAN", "z", "0"],
        &["HSCAN", "sc", "0"],
        &["SSCAN", "hc", "0"],
        &["ZSCAN", "sc", "0"],
        &["ZRANK", "z", "e"],
        &["ZRANK", "z", "nope"],
        &["ZREVRANK", "z", "e"],
        &["ZREM", "z", "a", "nope", "a"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZADD", "z", "-inf", "low", "inf", "high"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZINCRBY", "z", "-inf", "high"],
        &["TYPE", "z"],
        &["GET", "z"],
        &["ZADD", "s", "1", "a"],
        &["ZRANGE", "s", "0", "1"],
        &["ZREM", "z", "b", "c", "d", "e", "new", "low", "high"],
        &["EXISTS", "z"],
        &["ZADD", "z", "1", "back"],
        &["ZRANGE", "z", "0", "-1"],
        // Lists.
        &["LPUSH", "l", "a", "b", "c"],
        &["LRANGE", "l", "0", "-1"],
        &["RPUSH", "l", "d", "e"],
        &["LLEN", "l"],
        &["LLEN", "nokey"],
        &["LINDEX", "l", "0"],
        &["LINDEX", "l", "-1"],
        &["LINDEX", "l", "99"],
        &["LINSERT", "l", "BEFORE", "b", "X"],
        &["LINSERT", "l", "AFTER", "e", "Z"],
        &["LINSERT", "l", "AFTER", "nope", "Y"],
        &["LINSERT", "nokey", "BEFORE", "a", "b"],
        &["LINSERT", "l", "SIDEWAYS", "a", "b"],
        &["LRANGE", "l", "0", "-1"],
        &["RPUSH", "l", "a", "a"],
        &["LREM", "l", "-2", "a"],
        &["LREM", "l", "0", "X"],
        &["LREM", "l", "1", "nope"],
        &["LRANGE", "l", "0", "-1"],
        &["LSET", "l", "0", "first"],
        &["LSET", "l", "-1", "last"],
        &["LSET", "l", "99", "x"],
        &["LSET", "nokey", "0", "x"],
        &["LRANGE", "l", "1", "2"],
        &["LRANGE", "l", "-100", "100"],
        &["LRANGE", "l", "5", "1"],
        &["LRANGE", "nokey", "0", "-1"],
        &["RPUSH", "pos", "a", "b", "c", "a", "b", "a", "c"],
        &["LPOS", "pos", "a"],
        &["LPOS", "pos", "a", "RANK", "2"],
        &["LPOS", "pos", "a", "RANK", "-1"],
        &["LPOS", "pos", "a", "RANK", "-2", "COUNT", "0"],
        &["LPOS", "pos", "a", "COUNT", "2"],
        &["LPOS", "pos", "c", "COUNT", "0", "MAXLEN", "3"],
        &["LPOS", "pos", "c", "MAXLEN", "2"],
        &["LPOS", "pos", "z"],
        &["LPOS", "pos", "z", "COUNT", "0"],
        &["LPOS", "nokey", "a"],
        &["LPOS", "nokey", "a", "COUNT", "1"],
        &["LPOS", "pos", "a", "RANK", "0"],
        &["LPOS", "pos", "a", "COUNT", "-1"],
        &["LPOS", "pos", "a", "MAXLEN", "-1"],
        &["LPOS", "pos", "a", "RANK"],
        &["LPOS", "pos", "a", "FOO", "1"],
        &["LPOS", "pos", "a", "RANK", "x"],
        &["LPOS", "h", "a"],
        &["LTRIM", "l", "1", "-2"],
        &["LRANGE", "l", "0", "-1"],
        &["TYPE", "l"],
        &["GET", "l"],
        &["LPUSH", "s", "x"],
        &["LRANGE", "s", "0", "1"],
        &["LTRIM", "l", "5", "1"],
        &["EXISTS", "l"],
        &["RPUSH", "l", "again"],
        &["LRANGE", "l", "0", "-1"],
        // Times to live (long ones: the replies must not depend on the moment).
        &["SET", "t", "v", "EX", "1000"],
        &["TTL", "t"],
        &["EXPIRE", "t", "2000"],
        &["TTL", "t"],
        &["PERSIST", "t"],
        &["TTL", "t"],
        &["PERSIST", "t"],
        &["EXPIRE", "nokey", "10"],
        &["TTL", "nokey"],
        &["PTTL", "nokey"],
        &["SETEX", "t2", "1000", "v"],
        &["TTL", "t2"],
        &["SETEX", "t2", "0", "v"],
        &["PSETEX", "t2", "-5", "v"],
        &["SET", "t3", "v", "EX", "0"],
        &["SET", "t3", "v", "EX", "x"],
        &["SET", "t3", "v", "EX"],
        &["SET", "t3", "v", "PX", "100000"],
        &["TTL", "t3"],
        &["EXPIRE", "t3", "x"],
        &["SET", "t3", "w"],
        &["TTL", "t3"],
        &["EXPIREAT", "t3", "4102444800"],
        &["EXPIRETIME", "t3"],
        &["PEXPIRETIME", "t3"],
        &["TTL", "nokey"],
        &["EXPIRETIME", "t"],
        &["INCR", "tc"],
        &["EXPIRE", "tc", "1000"],
        &["INCR", "tc"],
        &["TTL", "tc"],
        &["HSET", "th", "f", "v"],
        &["PEXPIRE", "th", "1000000"],
        &["HSET", "th", "g", "w"],
        &["TTL", "th"],
        &["EXPIRE", "t3", "-1"],
        &["GET", "t3"],
        &["TTL", "t3"],
        &["EXISTS", "t3"],
        &["PEXPIREAT", "th", "1"],
        &["HGETALL", "th"],
        &["TYPE", "th"],
        &["SET", "t3", "again"],
        &["TTL", "t3"],
        &["GET", "t3"],
        // A deleted hash takes any type.
        &["DEL", "h"],
        &["SET", "h", "string now"],
        &["GET", "h"],
    ];
    for args in script {
        let theirs = cli(redis.port, args);
        let ours = cli(calm.port, args);
        let is_error = ["ERR", "WRONGTYPE"].iter().any(|e| theirs.starts_with(e));
        if is_error {
            assert!(
                ours.starts_with(&theirs),
                "{args:?}: redis-server answered {theirs:?}, calm {ours:?}"
            );
        } else {
            assert_eq!(ours, theirs, "{args:?}: calm against redis-server");
        }
    }
    // Listings: the same keys, in whatever order (Redis's is its hash table's).
    let sorted = |port: u16, args: &[&str]| {
        let mut lines: Vec<String> = cli(port, args).lines().map(String::from).collect();
        lines.sort();
        lines
    };
    for args in [
        &["KEYS", "*"][..],
        &["KEYS", "t*"],
        &["KEYS", "[hs]"],
        &["KEYS", "nomatch*"],
        &["SUNION", "set", "set2", "nokey"],
        &["SDIFF", "set2", "set"],
        &["SSCAN", "sc", "0"],
        &["SSCAN", "sc", "0", "MATCH", "a*", "COUNT", "100"],
        &["--scan"],
        &["--scan", "--pattern", "t?"],
        &["SCAN", "0", "COUNT", "1000", "TYPE", "zset"],
        &[
            "SCAN", "0", "COUNT", "1000", "TYPE", "string", "MATCH", "t*",
        ],
    ] {
        assert_eq!(
            sorted(calm.port, args),
            sorted(redis.port, args),
            "{args:?}"
        );
    }
    assert_eq!(cli(calm.port, &["DBSIZE"]), cli(redis.port, &["DBSIZE"]));
    // By design: a calm counter is a kind of its own, not a string that parses as a number.
    let differ: &[(&[&str], &str)] = &[
        (&["INCR", "s"], "WRONGTYPE"),
        // Conditional on the list existing at every replica at once: refused.
        (&["LPUSHX", "l", "x"], "ERR LPUSHX is not supported"),
    ];
    for (args, calm_says) in differ {
        let theirs = cli(redis.port, args);
        let ours = cli(calm.port, args);
        assert_ne!(
            ours, theirs,
            "{args:?} no longer differs: move it to the script"
        );
        assert!(
            ours.starts_with(calm_says),
            "{args:?}: calm answered {ours:?}"
        );
    }
    // And everything goes.
    for args in [
        &["FLUSHALL"][..],
        &["DBSIZE"],
        &["KEYS", "*"],
        &["GET", "s"],
    ] {
        assert_eq!(cli(calm.port, args), cli(redis.port, args), "{args:?}");
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let r = start(None);
    let p = r.port;
    cli(p, &["SET", "s", "text"]);
    cli(p, &["SADD", "set", "a"]);
    let expect = |args: &[&str], start: &str, contains: &str| {
        let out = cli(p, args);
        assert!(
            out.starts_with(start) && out.contains(contains),
            "redis-cli {args:?}: {out}"
        );
    };
    expect(&["INCR", "s"], "WRONGTYPE", "lww");
    expect(&["SADD", "s", "x"], "WRONGTYPE", "lww");
    expect(&["GET", "set"], "WRONGTYPE", "orset");
    expect(&["SET", "s", "v", "NX"], "ERR", "coordinate");
    expect(&["SET", "s", "v", "XX"], "ERR", "coordinate");
    expect(&["SET", "s", "v", "KEEPTTL"], "ERR", "not supported yet");
    expect(&["EXPIRE", "s", "10", "NX"], "ERR", "coordinate");
    expect(&["ZADD", "z", "GT", "1", "m"], "ERR", "coordinate");
    expect(&["ZPOPMIN", "z"], "ERR", "coordinate");
    expect(&["HSETNX", "h", "f", "v"], "ERR", "coordinate");
    expect(&["WATCH", "s"], "ERR", "coordinate");
    expect(&["INCRBY", "n", "lots"], "ERR", "not an integer");
    // A counter stays within 64 bits, as in Redis; the refused increment changes nothing.
    assert_eq!(
        cli(p, &["INCRBY", "big", "9223372036854775807"]),
        "9223372036854775807"
    );
    expect(
        &["INCR", "big"],
        "ERR",
        "increment or decrement would overflow",
    );
    assert_eq!(cli(p, &["GET", "big"]), "9223372036854775807");
    assert_eq!(
        cli(p, &["DECRBY", "small", "9223372036854775807"]),
        "-9223372036854775807"
    );
    expect(
        &["DECRBY", "small", "2"],
        "ERR",
        "increment or decrement would overflow",
    );
    assert_eq!(cli(p, &["DECR", "small"]), "-9223372036854775808");
    expect(&["GET"], "ERR", "wrong number of arguments for 'get'");
    expect(&["NOSUCH", "x"], "ERR", "unknown command 'NOSUCH'");
    expect(&["SELECT", "3"], "ERR", "one keyspace");
    // Nothing was changed by the refused writes.
    assert_eq!(cli(p, &["GET", "s"]), "text");
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let r = start(Some("s3cret"));
    let p = r.port;
    assert!(cli(p, &["GET", "k"]).starts_with("NOAUTH"));
    assert!(cli(p, &["PING"]).starts_with("NOAUTH"));
    let (out, err) = cli_both(p, &["--no-auth-warning", "-a", "wrong", "PING"]);
    assert!(
        err.contains("WRONGPASS") && out.starts_with("NOAUTH"),
        "{out} / {err}"
    );
    assert_eq!(
        cli(p, &["--no-auth-warning", "-a", "s3cret", "SET", "k", "v"]),
        "OK"
    );
    assert_eq!(
        cli(p, &["--no-auth-warning", "-a", "s3cret", "GET", "k"]),
        "v"
    );
    // Through the redis crate: a URL with the password.
    let url = format!("redis://:s3cret@127.0.0.1:{p}/");
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
    let url = format!("redis://:nope@127.0.0.1:{p}/");
    assert!(redis::Client::open(url).unwrap().get_connection().is_err());
}

/// A transaction applies nothing: calm cannot run one (replicas never agree on an order),
/// so it follows the protocol — MULTI, QUEUED, then EXECABORT — and no write inside runs.
#[test]
fn a_transaction_applies_nothing() {
    let r = start(None);
    let url = format!("redis://127.0.0.1:{}/", r.port);
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // What `pipeline(transaction=True)` sends.
    let refused: redis::RedisResult<(String, i64)> = redis::pipe()
        .atomic()
        .set("tx", "1")
        .incr("tx-count", 5)
        .query(&mut con);
    assert!(refused.is_err(), "EXEC is refused: {refused:?}");
    let (tx, count): (Option<String>, Option<i64>) = redis::pipe()
        .get("tx")
        .get("tx-count")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        (tx, count),
        (None, None),
        "nothing inside the transaction ran"
    );
    // Commands inside are queued, not run; DISCARD drops them; the connection goes on.
    let ok: String = redis::cmd("MULTI").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let queued: String = redis::cmd("SET")
        .arg("tx")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    let nested = redis::cmd("MULTI").query::<String>(&mut con).unwrap_err();
    assert!(nested.to_string().contains("nested"), "{nested}");
    let ok: String = redis::cmd("DISCARD").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    // EXEC answers EXECABORT (what redis-py raises as ExecAbortError).
    let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCRBY")
        .arg("tx-count")
        .arg(5)
        .query(&mut con)
        .unwrap();
    let err = redis::cmd("EXEC")
        .query::<redis::Value>(&mut con)
        .unwrap_err();
    assert_eq!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
        "{err}"
    );
    assert!(
        err.to_string().contains("nothing in it was applied"),
        "{err}"
    );
    let (tx, count): (Option<String>, Option<i64>) = redis::pipe()
        .get("tx")
        .get("tx-count")
        .query(&mut con)
        .unwrap();
    assert_eq!((tx, count), (None, None), "nothing queued ran");
    let stray = redis::cmd("EXEC").query::<String>(&mut con).unwrap_err();
    assert!(stray.to_string().contains("without MULTI"), "{stray}");
    let set: String = redis::cmd("SET")
        .arg("tx")
        .arg("3")
        .query(&mut con)
        .unwrap();
    assert_eq!(set, "OK");
}

#[test]
fn the_redis_crate_works_pipelined_and_with_resp3() {
    let r = start(None);
    for url in [
        format!("redis://127.0.0.1:{}/", r.port),
        format!("redis://127.0.0.1:{}/?protocol=resp3", r.port),
    ] {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let prefix = if url.contains("resp3") { "r3" } else { "r2" };
        // 1000 commands in one pipeline: replies come back in order.
        let mut pipe = redis::pipe();
        for i in 0..500 {
            pipe.cmd("SET").arg(format!("{prefix}:{i}")).arg(i);
            pipe.cmd("INCRBY").arg(format!("{prefix}:n")).arg(i);
        }
        let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
        assert_eq!(replies.len(), 1000);
        let mut total = 0;
        for i in 0..500 {
            assert_eq!(replies[2 * i], redis::Value::Okay, "{url}");
            total += i as i64;
            assert_eq!(replies[2 * i + 1], redis::Value::Int(total), "{url}");
        }
        let got: Vec<Option<String>> = redis::cmd("MGET")
            .arg(format!("{prefix}:7"))
            .arg(format!("{prefix}:missing"))
            .query(&mut con)
            .unwrap();
        assert_eq!(got, vec![Some("7".to_string()), None]);
        let _: i64 = redis::cmd("SADD")
            .arg(format!("{prefix}:set"))
            .arg("a")
            .arg("b")
            .query(&mut con)
            .unwrap();
        let mut members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{prefix}:set"))
            .query(&mut con)
            .unwrap();
        members.sort();
        assert_eq!(members, vec!["a", "b"]);
        let err = redis::cmd("INCR")
            .arg(format!("{prefix}:set"))
            .query::<i64>(&mut con)
            .unwrap_err();
        assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
        let name: Option<String> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("calm-test")
            .query::<()>(&mut con)
            .and_then(|()| redis::cmd("CLIENT").arg("GETNAME").query(&mut con))
            .unwrap();
        assert_eq!(name.as_deref(), Some("calm-test"));
    }
}

/// Sends raw bytes and returns everything the server answers before it closes (or 2 s).
fn raw(port: u16, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_input_is_refused_and_other_clients_carry_on() {
    let r = start(None);
    let p = r.port;
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$4\r\nPING\r\n*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
        (b"*2\r\n$3\r\nGET\r\n:5\r\n", "expected '$'"),
        (b"*1\r\n*1\r\n*1\r\n*1\r\n$1\r\nx\r\n", "expected '$'"),
        (b"*1\r\n$4\r\nPINGxx", "not terminated"),
        (b"*99999999\r\n", "invalid multibulk length"),
    ];
    for (bytes, says) in cases {
        let (out, closed) = raw(p, bytes);
        assert!(
            out.contains("-ERR Protocol error") && out.contains(says),
            "{:?} -> {out:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(closed, "the connection should be closed after {out:?}");
    }
    // The valid command before the bad frame was answered first.
    assert!(
        raw(p, b"*1\r\n$4\r\nPING\r\n*x\r\n")
            .0
            .starts_with("+PONG\r\n")
    );
    // An unterminated array: the server waits for the rest, and nothing breaks when the
    // client goes away.
    let (out, closed) = raw(p, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n");
    assert_eq!(out, "");
    assert!(!closed);
    // Inline commands, as typed into telnet.
    assert!(
        raw(p, b"PING\r\nQUIT\r\n")
            .0
            .starts_with("+PONG\r\n+OK\r\n")
    );

    // A client that sends without reading: 1 MiB values asked for 3,000 times (3 GiB of
    // replies). The node stops reading from it; memory stays bounded; others are served.
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{p}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg("big")
        .arg("v".repeat(1 << 20))
        .query::<()>(&mut con)
        .unwrap();
    let before = rss_kib(r.child.id());
    let mut flood = TcpStream::connect(("127.0.0.1", p)).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(3_000);
    let _ = flood.write_all(&request); // may block once the node stops reading: fine
    let started = Instant::now();
    assert_eq!(cli(p, &["PING"]), "PONG");
    assert!(started.elapsed() < Duration::from_secs(5));
    let after = rss_kib(r.child.id());
    eprintln!("node memory: {before} KiB before the flood, {after} KiB during it");
    assert!(
        after < before + (100 << 10),
        "memory grew by {} MiB",
        (after - before) / 1024
    );
    drop(flood);
    assert_eq!(cli(p, &["GET", "greeting-after-flood"]), "");
}

#[test]
fn calm_up_reads_your_writes_through_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port(3);
    let up = Up::start(3, &dir.path().join("data"), base, &["--threads", "1"]);
    // The README's example, with redis-cli: a write through node 0, a read through node 2.
    for i in 0..20 {
        let key = format!("readme:{i}");
        assert_eq!(cli(up.resp[0], &["SET", &key, "1"]), "OK");
        assert_eq!(
            cli(up.resp[2], &["GET", &key]),
            "1",
            "{key} read through node 2"
        );
    }
    // Through the redis crate: each write goes through one node and is read at once through
    // another, for keys every node owns, some and none of; counters, lists, sets, hashes and sorted sets too.
    let mut cons: Vec<redis::Connection> = up
        .resp
        .iter()
        .map(|p| {
            redis::Client::open(format!("redis://127.0.0.1:{p}/"))
                .unwrap()
                .get_connection()
                .unwrap()
        })
        .collect();
    let mut stale = Vec::new();
    for i in 0..300usize {
        let (w, r) = (i % 3, (i + 1 + i / 3 % 2) % 3);
        let key = format!("ryw:{i}");
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query(&mut cons[w])
            .unwrap();
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut cons[r]).unwrap();
        if got != Some(i.to_string()) {
            stale.push(format!("{key} written via {w}, read via {r}: {got:?}"));
        }
        let n: i64 = redis::cmd("INCRBY")
            .arg("ryw:n")
            .arg(1)
            .query(&mut cons[w])
            .unwrap();
        let seen: i64 = redis::cmd("GET").arg("ryw:n").query(&mut cons[r]).unwrap();
        if seen < n {
            stale.push(format!("counter {n} written via {w}, read via {r}: {seen}"));
        }
        let _: i64 = redis::cmd("SADD")
            .arg("ryw:s")
            .arg(i)
            .query(&mut cons[w])
            .unwrap();
        let member: bool = redis::cmd("SISMEMBER")
            .arg("ryw:s")
            .arg(i)
            .query(&mut cons[r])
            .unwrap();
        if !member {
            stale.push(format!("member {i} added via {w}, not seen via {r}"));
        }
        let _: i64 = redis::cmd("HSET")
            .arg("ryw:h")
            .arg(i % 7)
            .arg(i)
            .query(&mut cons[w])
            .unwrap();
        let field: Option<String> = redis::cmd("HGET")
            .arg("ryw:h")
            .arg(i % 7)
            .query(&mut cons[r])
            .unwrap();
        if field != Some(i.to_string()) {
            stale.push(format!(
                "field {} set to {i} via {w}, read via {r}: {field:?}",
                i % 7
            ));
        }
        let _: i64 = redis::cmd("RPUSH")
            .arg("ryw:l")
            .arg(i)
            .query(&mut cons[w])
            .unwrap();
        let tail: Vec<String> = redis::cmd("LRANGE")
            .arg("ryw:l")
            .arg(-1)
            .arg(-1)
            .query(&mut cons[r])
            .unwrap();
        if tail != [i.to_string()] {
            stale.push(format!(
                "{i} pushed via {w}, list ends with {tail:?} via {r}"
            ));
        }
        let _: i64 = redis::cmd("ZADD")
            .arg("ryw:z")
            .arg(i)
            .arg(i % 5)
            .query(&mut cons[w])
            .unwrap();
        let score: Option<String> = redis::cmd("ZSCORE")
            .arg("ryw:z")
            .arg(i % 5)
            .query(&mut cons[r])
            .unwrap();
        if score != Some(i.to_string()) {
            stale.push(format!(
                "member {} scored {i} via {w}, read via {r}: {score:?}",
                i % 5
            ));
        }
    }
    assert!(stale.is_empty(), "{} stale reads: {stale:?}", stale.len());
}

#[test]
fn a_deleted_key_takes_any_type_and_racing_types_converge() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port(3);
    let up = Up::start(3, &dir.path().join("data"), base, &["--threads", "1"]);
    let p = up.resp[0];
    assert_eq!(cli(p, &["SADD", "x", "a"]), "1");
    assert_eq!(cli(p, &["DEL", "x"]), "1");
    assert_eq!(cli(up.resp[1], &["SET", "x", "v"]), "OK");
    for port in &up.resp {
        let got = cli(*port, &["GET", "x"]);
        if got != "v" {
            let later: Vec<String> = up.resp.iter().map(|p| cli(*p, &["GET", "x"])).collect();
            panic!("GET x through {port}: {got:?} (then, through each node: {later:?})");
        }
        assert_eq!(cli(*port, &["TYPE", "x"]), "string");
    }
    assert!(
        cli(p, &["SADD", "x", "b"]).contains("WRONGTYPE"),
        "a live string stays one"
    );
    assert_eq!(cli(p, &["DEL", "x"]), "1");
    assert_eq!(cli(p, &["INCRBY", "x", "4"]), "4");

    // Two writers on two nodes race on the same keys: one deletes and writes a string,
    // the other deletes and increments. Every node ends with the same type and value for
    // each key, one of the two writers' (the later type change wins).
    let keys: Vec<String> = (0..40).map(|i| format!("race:{i}")).collect();
    for k in &keys {
        assert_eq!(cli(p, &["SADD", k, "m"]), "1");
    }
    let writer = |port: u16, keys: Vec<String>, string: bool| {
        std::thread::spawn(move || {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            for k in keys {
                let _: i64 = redis::cmd("DEL").arg(&k).query(&mut con).unwrap();
                let r: redis::RedisResult<redis::Value> = if string {
                    redis::cmd("SET").arg(&k).arg("s").query(&mut con)
                } else {
                    redis::cmd("INCR").arg(&k).query(&mut con)
                };
                // The other writer's type may have won already: that is the refusal.
                if let Err(e) = r {
                    assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");
                }
            }
        })
    };
    let a = writer(up.resp[1], keys.clone(), true);
    let b = writer(up.resp[2], keys.clone(), false);
    a.join().unwrap();
    b.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for k in &keys {
        loop {
            let seen: Vec<(String, String)> = up
                .resp
                .iter()
                .map(|port| (cli(*port, &["TYPE", k]), cli(*port, &["GET", k])))
                .collect();
            let agreed = seen.iter().all(|s| *s == seen[0]);
            if agreed {
                assert!(
                    seen[0] == ("string".into(), "s".into())
                        || seen[0] == ("string".into(), "1".into()),
                    "{k}: {seen:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{k} never converged: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Times to live across `calm up`: a key set with `PX` through one node reads through every
/// node until its deadline and as absent after it, everywhere; its `TTL` counts down; a
/// counter given a deadline starts again from nothing once it passed; `PERSIST` keeps a key.
#[test]
fn keys_expire_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port(3);
    let up = Up::start(3, &dir.path().join("data"), base, &["--threads", "1"]);
    let (w, others) = (up.resp[0], [up.resp[1], up.resp[2]]);
    let keys: Vec<String> = (0..20).map(|i| format!("ttl:{i}")).collect();
    for k in &keys {
        assert_eq!(cli(w, &["SET", k, "v", "PX", "3000"]), "OK");
    }
    assert_eq!(cli(w, &["INCRBY", "ttl:counter", "5"]), "5");
    assert_eq!(cli(w, &["PEXPIRE", "ttl:counter", "3000"]), "1");
    assert_eq!(cli(w, &["SET", "ttl:kept", "v", "PX", "3000"]), "OK");
    assert_eq!(cli(others[0], &["PERSIST", "ttl:kept"]), "1");
    // Any node lists the keys of every node (well before the deadline).
    for p in up.resp.iter().copied() {
        assert_eq!(
            cli(p, &["KEYS", "ttl:*"]).lines().count(),
            22,
            "through {p}"
        );
        assert_eq!(cli(p, &["DBSIZE"]), "22", "through {p}");
    }
    let start = Instant::now();
    for k in &keys {
        for p in others {
            let got = cli(p, &["GET", k]);
            // Reads right after the write see it, unless the deadline already passed.
            if start.elapsed() < Duration::from_millis(2_500) {
                assert_eq!(got, "v", "{k} through port {p}");
            }
        }
    }
    let ttl: i64 = cli(others[1], &["PTTL", "ttl:counter"]).parse().unwrap();
    assert!((0..=3_000).contains(&ttl), "PTTL {ttl}");
    std::thread::sleep(Duration::from_millis(3_100));
    for p in up.resp.iter().copied() {
        for k in &keys {
            assert_eq!(cli(p, &["GET", k]), "", "{k} expired, through port {p}");
            assert_eq!(cli(p, &["TTL", k]), "-2");
        }
        assert_eq!(cli(p, &["GET", "ttl:kept"]), "v", "PERSIST kept it");
        assert_eq!(cli(p, &["KEYS", "*"]), "ttl:kept");
        assert_eq!(cli(p, &["TTL", "ttl:kept"]), "-1");
    }
    // Each node collected its copies (20 keys and the counter, replication 2 of 3 nodes).
    std::thread::sleep(Duration::from_millis(500));
    let collected: u64 = up
        .resp
        .iter()
        .map(|p| {
            cli(*p, &["INFO", "stats"])
                .lines()
                .find_map(|l| l.strip_prefix("expired_keys:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .expect("expired_keys in INFO stats")
        })
        .sum();
    assert_eq!(collected, 2 * 21, "copies collected");
    // A counter that expired starts from nothing, through any node.
    assert_eq!(cli(others[1], &["INCR", "ttl:counter"]), "1");
    for p in up.resp.iter().copied() {
        assert_eq!(cli(p, &["GET", "ttl:counter"]), "1");
        assert_eq!(cli(p, &["TTL", "ttl:counter"]), "-1");
    }
}

/// Publish/subscribe across `calm up`: subscribers on two nodes (one to a channel, one to a
/// pattern) receive what is published through a third; `PUBLISH` counts them; a client
/// that unsubscribed receives nothing more.
#[test]
fn publish_reaches_subscribers_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::free_base_port(3);
    let up = Up::start(3, &dir.path().join("data"), base, &["--threads", "1"]);
    let connect = |p: u16| {
        redis::Client::open(format!("redis://127.0.0.1:{p}/"))
            .unwrap()
            .get_connection()
            .unwrap()
    };
    let mut one = connect(up.resp[1]);
    let mut two = connect(up.resp[2]);
    let mut by_channel = one.as_pubsub();
    by_channel.subscribe("news").unwrap();
    let mut by_pattern = two.as_pubsub();
    by_pattern.psubscribe("n*").unwrap();
    by_channel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    by_pattern
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(cli(up.resp[0], &["PUBLISH", "news", "hello"]), "2");
    let m = by_channel.get_message().unwrap();
    assert_eq!(
        (m.get_channel_name(), m.get_payload::<String>().unwrap()),
        ("news", "hello".to_string())
    );
    let m = by_pattern.get_message().unwrap();
    assert_eq!(m.get_pattern::<String>().unwrap(), "n*");
    assert_eq!(m.get_payload::<String>().unwrap(), "hello");
    assert_eq!(cli(up.resp[0], &["PUBLISH", "other", "x"]), "0");
    by_channel.unsubscribe("news").unwrap();
    assert_eq!(cli(up.resp[1], &["PUBLISH", "news", "again"]), "1");
    let m = by_pattern.get_message().unwrap();
    assert_eq!(m.get_payload::<String>().unwrap(), "again");
    // While subscribed, a RESP2 connection takes subscription commands only.
    let (reply, closed) = raw(
        up.resp[0],
        b"SUBSCRIBE x\r\nGET k\r\nPING\r\nUNSUBSCRIBE\r\nGET k\r\nQUIT\r\n",
    );
    assert!(closed, "{reply}");
    let expected = "*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n\
        -ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n\
        *2\r\n$4\r\npong\r\n$0\r\n\r\n\
        *3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:0\r\n\
        $-1\r\n+OK\r\n";
    assert_eq!(reply, expected);
}
