//! The write-ahead log's format: framing, checksums and recovery, with no I/O.
//!
//! A log is a sequence of records, each
//!
//! ```text
//! | mark: 4 bytes "cLw1" | len: u32 LE | check: u64 LE | payload: len bytes |
//! ```
//!
//! where `check` is the xxh3 hash of `len` and the payload. Reading a log back
//! ([`scan`]) keeps every record whose checksum holds. After a damaged record it looks for
//! the next mark whose record checks out, so flipped bytes in the middle cost only the
//! records they touch; a record cut short at the end (a torn write) and anything after the
//! last intact record is reported as the tail to cut.

use std::ops::Range;

/// The bytes every record starts with.
pub const MARK: [u8; 4] = *b"cLw1";
/// Bytes before a record's payload.
pub const HEADER: usize = 16;
/// The largest payload a record may have; a larger length is damage.
pub const MAX_RECORD: usize = 1 << 30;

/// Appends one record holding `payload` to `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("log records are smaller than 4 GiB");
    out.extend_from_slice(&MARK);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn checksum(len: u32, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.digest()
}

/// What reading a log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The payloads of the intact records, in log order (ranges into the log).
    pub records: Vec<Range<usize>>,
    /// Damaged stretches between intact records, skipped.
    pub skipped: Vec<Range<usize>>,
    /// Where the intact log ends: everything from here on is a torn or damaged tail.
    pub valid_len: usize,
    /// Whether the tail holds a record cut short by the end of the log (a torn write), as
    /// opposed to damaged bytes.
    pub torn: bool,
}

impl Scan {
    /// Bytes after the last intact record.
    pub fn tail_len(&self, log_len: usize) -> usize {
        log_len - self.valid_len
    }
}

/// The record starting at `pos`, if it is whole and intact: its payload range.
/// `Err(true)` means the log ends inside it.
fn record_at(log: &[u8], pos: usize) -> Result<Range<usize>, bool> {
    let Some(header) = log.get(pos..pos + HEADER) else {
        return Err(true);
    };
    if header[..4] != MARK {
        return Err(false);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let check = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let len_usize = len as usize;
    if len_usize > MAX_RECORD {
        return Err(false);
    }
    let start = pos + HEADER;
    let Some(payload) = log.get(start..start + len_usize) else {
        return Err(true);
    };
    if checksum(len, payload) != check {
        return Err(false);
    }
    Ok(start..start + len_usize)
}

/// Reads a log back; see the [module docs](self).
pub fn scan(log: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0;
    while pos < log.len() {
        match record_at(log, pos) {
            Ok(payload) => {
                pos = payload.end;
                out.records.push(payload);
                out.valid_len = pos;
            }
            Err(cut_short) => {
                // Find the next intact record; without one, the rest is the tail.
                let next = (pos + 1..log.len())
                    .filter(|&p| log[p..].starts_with(&MARK))
                    .find(|&p| record_at(log, p).is_ok());
                match next {
                    Some(p) => {
                        out.skipped.push(pos..p);
                        pos = p;
                    }
                    None => {
                        out.torn = cut_short;
                        break;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    fn log_of(payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut log = Vec::new();
        let mut starts = Vec::new();
        for p in payloads {
            starts.push(log.len());
            encode_record(p, &mut log);
        }
        (log, starts)
    }

    fn payloads<'a>(log: &'a [u8], scan: &Scan) -> Vec<&'a [u8]> {
        scan.records.iter().map(|r| &log[r.clone()]).collect()
    }

    #[test]
    fn intact_log_reads_back_whole() {
        let (log, _) = log_of(&[b"one", b"", b"three"]);
        let s = scan(&log);
        assert_eq!(payloads(&log, &s), vec![&b"one"[..], b"", b"three"]);
        assert_eq!(s.valid_len, log.len());
        assert!(s.skipped.is_empty() && !s.torn);
    }

    #[test]
    fn torn_tail_is_cut_at_every_length() {
        let (full, starts) = log_of(&[b"alpha", b"beta", b"gamma-gamma"]);
        let last = starts[2];
        for cut in last + 1..full.len() {
            let s = scan(&full[..cut]);
            assert_eq!(
                payloads(&full, &s),
                vec![&b"alpha"[..], b"beta"],
                "cut {cut}"
            );
            assert_eq!(s.valid_len, last);
            assert!(s.torn, "cut {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_costs_only_its_record() {
        let (full, starts) = log_of(&[b"alpha", b"beta", b"gamma", b"delta"]);
        // Flip each byte of the second record in turn: the others always survive.
        for i in starts[1]..starts[2] {
            let mut log = full.clone();
            log[i] ^= 0x5a;
            let s = scan(&log);
            assert_eq!(
                payloads(&log, &s),
                vec![&b"alpha"[..], b"gamma", b"delta"],
                "flipped byte {i}"
            );
            assert_eq!(s.skipped, vec![starts[1]..starts[2]]);
            assert_eq!(s.valid_len, log.len());
        }
    }

    #[test]
    fn garbage_at_the_end_is_a_damaged_tail() {
        let (mut log, _) = log_of(&[b"alpha"]);
        let good = log.len();
        log.extend_from_slice(&[0xff; 40]);
        let s = scan(&log);
        assert_eq!(payloads(&log, &s), vec![&b"alpha"[..]]);
        assert_eq!(s.valid_len, good);
        assert_eq!(s.tail_len(log.len()), 40);
        assert!(!s.torn);
    }

    #[test]
    fn a_huge_length_is_damage_not_an_allocation() {
        let mut log = Vec::new();
        log.extend_from_slice(&MARK);
        log.extend_from_slice(&u32::MAX.to_le_bytes());
        log.extend_from_slice(&[0; 8]);
        let s = scan(&log);
        assert!(s.records.is_empty());
        assert_eq!(s.valid_len, 0);
    }
}
