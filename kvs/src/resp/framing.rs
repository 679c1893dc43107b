//! Finding where one request ends before it is decoded, with limits: requests are arrays
//! of bulk strings (or inline lines); anything else, a length over the limits, or nesting is
//! refused before any memory is committed to it.

/// Where the first request in a buffer stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A whole array request of this many bytes.
    Array(usize),
    /// A whole inline request (a line of words) of this many bytes.
    Inline(usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a request calm accepts: the reason, in Redis's words where it has some.
    Invalid(String),
}

/// Limits on one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Arguments in one request.
    pub max_args: usize,
    /// Bytes in one argument.
    pub max_bulk: usize,
    /// Bytes in an inline request line.
    pub max_inline: usize,
}

/// The number on a header line starting at `at` (after its type byte), and where the next
/// line starts.
fn header(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, String> {
    let rest = &buf[at.min(buf.len())..];
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        // A length needs at most 20 digits and a sign.
        return if rest.len() > 24 {
            Err("invalid length line".into())
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&rest[..end]).map_err(|_| "invalid length".to_string())?;
    let n = text
        .parse::<i64>()
        .map_err(|_| format!("invalid length {text:?}"))?;
    Ok(Some((n, at + end + 2)))
}

/// Where the first request in `buf` ends; see [`Framed`].
pub fn frame(buf: &[u8], limits: Limits) -> Framed {
    let Some(&first) = buf.first() else {
        return Framed::Incomplete;
    };
    if first != b'*' {
        return match buf.iter().position(|&b| b == b'\n') {
            Some(end) if end + 1 > limits.max_inline => {
                Framed::Invalid("too big inline request".into())
            }
            Some(end) => Framed::Inline(end + 1),
            None if buf.len() > limits.max_inline => {
                Framed::Invalid("too big inline request".into())
            }
            None => Framed::Incomplete,
        };
    }
    let (count, mut at) = match header(buf, 1) {
        Ok(Some(h)) => h,
        Ok(None) => return Framed::Incomplete,
        Err(e) => return Framed::Invalid(format!("invalid multibulk length ({e})")),
    };
    if count > limits.max_args as i64 {
        return Framed::Invalid(format!(
            "invalid multibulk length: {count} arguments, the limit is {}",
            limits.max_args
        ));
    }
    for _ in 0..count.max(0) {
        match buf.get(at) {
            None => return Framed::Incomplete,
            Some(b'$') => {}
            Some(&other) => {
                return Framed::Invalid(format!(
                    "expected '$', got '{}': commands are arrays of bulk strings",
                    char::from(other).escape_default()
                ));
            }
        }
        let (len, start) = match header(buf, at + 1) {
            Ok(Some(h)) => h,
            Ok(None) => return Framed::Incomplete,
            Err(e) => return Framed::Invalid(format!("invalid bulk length ({e})")),
        };
        if len < 0 || len > limits.max_bulk as i64 {
            return Framed::Invalid(format!(
                "invalid bulk length {len}: arguments are 0 to {} bytes",
                limits.max_bulk
            ));
        }
        let end = start + len as usize;
        match buf.get(end..end + 2) {
            None => return Framed::Incomplete,
            Some(b"\r\n") => at = end + 2,
            Some(_) => return Framed::Invalid("bulk string not terminated by CRLF".into()),
        }
    }
    Framed::Array(at)
}

#[cfg(test)]
mod test {
    use super::*;

    const LIMITS: Limits = Limits {
        max_args: 4,
        max_bulk: 10,
        max_inline: 32,
    };

    #[test]
    fn whole_requests_and_every_prefix() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(frame(req, LIMITS), Framed::Array(req.len()));
        for cut in 0..req.len() {
            assert_eq!(frame(&req[..cut], LIMITS), Framed::Incomplete, "cut {cut}");
        }
        let mut two = req.to_vec();
        two.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(frame(&two, LIMITS), Framed::Array(req.len()));
        assert_eq!(frame(b"PING\r\n", LIMITS), Framed::Inline(6));
        assert_eq!(frame(b"*0\r\n", LIMITS), Framed::Array(4));
    }

    proptest::proptest! {
        /// Any bytes at all: framing answers, never panics, and never claims more bytes than
        /// it was given.
        #[test]
        fn any_bytes_are_framed_or_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            match frame(&bytes, LIMITS) {
                Framed::Array(n) | Framed::Inline(n) => proptest::prop_assert!(n <= bytes.len()),
                Framed::Incomplete | Framed::Invalid(_) => {}
            }
        }

        /// A request built from any arguments frames to exactly its length, and the crate
        /// decodes it back to the same arguments.
        #[test]
        fn built_requests_frame_and_decode_back(
            args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..10), 1..4),
            trailing in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        ) {
            let mut req = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                req.extend_from_slice(a);
                req.extend_from_slice(b"\r\n");
            }
            let len = req.len();
            req.extend_from_slice(&trailing);
            proptest::prop_assert_eq!(frame(&req, LIMITS), Framed::Array(len));
            let decoded = super::super::decode(bytes::Bytes::copy_from_slice(&req[..len])).unwrap();
            let decoded: Vec<Vec<u8>> = decoded.into_iter().map(|b| b.to_vec()).collect();
            proptest::prop_assert_eq!(decoded, args);
        }
    }

    #[test]
    fn limits_and_bad_shapes_are_refused_at_once() {
        let bad: [&[u8]; 8] = [
            b"*5\r\n",
            b"*2\r\n$11\r\n",
            b"*2\r\n$-1\r\n",
            b"*1\r\n*1\r\n$1\r\nx\r\n",
            b"*1\r\n$1\r\nxyz",
            b"*x\r\n",
            b"*99999999999999999999999999\r\n",
            b"PING PING PING PING PING PING PING PING",
        ];
        for b in bad {
            assert!(
                matches!(frame(b, LIMITS), Framed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }
}
