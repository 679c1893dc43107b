//! Frames on the wire. All encoding of calm's protocol lives here, so the codec can be
//! swapped in one place.
//!
//! A frame is a 4-byte big-endian length `n`, then `n` bytes: one byte of protocol
//! version, then a bincode 2 (standard configuration) encoding of the message. Decoding is
//! bounded: a frame longer than the limit is refused before it is read, and bincode may not
//! claim more than the frame holds, so no input makes a node allocate what it was told to.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::ProtocolError;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// The default largest frame, in bytes (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// A frame could not be encoded, read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame declares more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame declared.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The frame has no version byte.
    #[error("empty frame (no protocol version byte)")]
    Empty,
    /// The frame's version is not [`PROTOCOL_VERSION`].
    #[error("protocol version {got} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version received.
        got: u8,
    },
    /// The frame's bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// The error to report to the peer before closing the stream, if the peer can still be
    /// told anything (`None` for failures of the stream itself).
    pub fn to_protocol_error(&self) -> Option<ProtocolError> {
        match self {
            WireError::FrameTooLarge { len, max } => Some(ProtocolError::FrameTooLarge {
                len: *len,
                max: *max,
            }),
            WireError::UnsupportedVersion { got } => Some(ProtocolError::UnsupportedVersion {
                got: *got,
                supported: PROTOCOL_VERSION,
            }),
            WireError::Empty | WireError::Malformed(_) => {
                Some(ProtocolError::Malformed(self.to_string()))
            }
            WireError::Truncated { .. } | WireError::Encode(_) | WireError::Io(_) => None,
        }
    }
}

/// Encodes `msg` as one complete frame (length, version, payload).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut frame = vec![0u8; 5];
    frame[4] = PROTOCOL_VERSION;
    bincode::serde::encode_into_std_write(msg, &mut frame, bincode::config::standard())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let len = u32::try_from(frame.len() - 4)
        .map_err(|_| WireError::Encode("message larger than 4 GiB".into()))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Reads one frame's body (version byte and payload). `Ok(None)` when the stream ends
/// cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame: usize,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut len_bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len_bytes[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::Truncated { expected: 4, got })
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max_frame {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(WireError::Truncated { expected: len, got });
        }
        got += n;
    }
    Ok(Some(body))
}

/// Decodes a frame body read by [`read_frame`]: checks the version, then decodes the
/// payload without letting it claim more memory than the frame holds.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (&version, payload) = body.split_first().ok_or(WireError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion { got: version });
    }
    // The limit covers every length prefix inside the payload: a hostile prefix cannot make
    // bincode allocate more than the frame's size.
    let config = bincode::config::standard().with_limit::<{ DEFAULT_MAX_FRAME }>();
    let (msg, used) = bincode::serde::decode_from_slice(payload, config)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(WireError::Malformed(format!(
            "{} bytes left over after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::op::Op;
    use crate::protocol::{Request, RequestBody};

    fn request() -> Request {
        Request {
            id: 7,
            body: RequestBody::ops(vec![Op::Get {
                key: bytes::Bytes::from_static(b"k"),
                meta: true,
            }]),
        }
    }

    async fn round_trip(bytes: &[u8], max: usize) -> Result<Option<Request>, WireError> {
        let mut reader = bytes;
        match read_frame(&mut reader, max).await? {
            Some(body) => decode_body(&body).map(Some),
            None => Ok(None),
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let frame = encode_frame(&request()).unwrap();
        assert_eq!(round_trip(&frame, 1024).await.unwrap(), Some(request()));
        assert_eq!(round_trip(&[], 1024).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_frames_are_typed_errors() {
        let frame = encode_frame(&request()).unwrap();
        // Truncated inside the length and inside the body.
        assert!(matches!(
            round_trip(&frame[..2], 1024).await,
            Err(WireError::Truncated {
                expected: 4,
                got: 2
            })
        ));
        assert!(matches!(
            round_trip(&frame[..frame.len() - 1], 1024).await,
            Err(WireError::Truncated { .. })
        ));
        // Over the limit: refused from the length alone.
        assert!(matches!(
            round_trip(&frame, 3).await,
            Err(WireError::FrameTooLarge { max: 3, .. })
        ));
        // Another protocol version.
        let mut other = frame.clone();
        other[4] = 9;
        assert!(matches!(
            round_trip(&other, 1024).await,
            Err(WireError::UnsupportedVersion { got: 9 })
        ));
        // Garbage payload, and an unknown request type (enum variant out of range).
        let mut garbage = vec![0, 0, 0, 6, PROTOCOL_VERSION];
        garbage.extend([0xff; 5]);
        assert!(matches!(
            round_trip(&garbage, 1024).await,
            Err(WireError::Malformed(_))
        ));
        let mut unknown = frame.clone();
        unknown[6] = 42; // the RequestBody variant index
        assert!(matches!(
            round_trip(&unknown, 1024).await,
            Err(WireError::Malformed(_))
        ));
        // An empty frame.
        assert!(matches!(
            round_trip(&[0, 0, 0, 0], 1024).await,
            Err(WireError::Empty)
        ));
    }

    #[tokio::test]
    async fn hostile_length_prefixes_inside_the_payload_do_not_allocate() {
        // A request claiming a batch of 2^60 operations in a 20-byte frame.
        let mut body = vec![PROTOCOL_VERSION, 1, 0];
        body.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        let r: Result<Request, _> = decode_body(&body);
        assert!(matches!(r, Err(WireError::Malformed(_))));
    }
}
