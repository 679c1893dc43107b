//! Per-key access frequency in bounded memory: a count-min sketch with decay, and the list
//! of the heaviest keys it has seen.
//!
//! Every access adds one to `DEPTH` counters (one per row, picked by slices of one xxh3
//! hash); a key's estimate is the smallest of its counters, which over-counts only by
//! collisions. Every `decay_every` accesses all counters halve, so the estimates follow the
//! recent load rather than all history. The sketch is a fixed `DEPTH x width` array, and the
//! heavy-hitter list holds at most `top` keys: memory does not grow with the number of keys
//! or accesses (no timestamp per access). Sans-IO and deterministic.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const DEPTH: usize = 4;

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct HotKeys {
    width: usize,
    counters: Vec<u32>,
    /// The heavy hitters: key hash, key, estimate.
    top: Vec<(u64, Bytes, u32)>,
    max_top: usize,
    /// The smallest estimate in a full `top` (a key below it cannot enter: most accesses
    /// stop at this check).
    top_floor: u32,
    accesses: u64,
    decay_every: u64,
}

/// A key and its estimated recent accesses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    /// The key.
    pub key: Bytes,
    /// Estimated accesses (decayed).
    pub count: u64,
}

impl HotKeys {
    /// A sketch `width` counters wide (rounded up to a power of two, at most 65536) keeping
    /// the `top` heaviest keys, halving every `decay_every` accesses.
    pub fn new(width: usize, top: usize, decay_every: u64) -> HotKeys {
        let width = width.clamp(16, 1 << 16).next_power_of_two();
        HotKeys {
            width,
            counters: vec![0; width * DEPTH],
            top: Vec::with_capacity(top + 1),
            max_top: top,
            top_floor: 0,
            accesses: 0,
            decay_every: decay_every.max(1),
        }
    }

    fn slots_of(&self, h: u64) -> [usize; DEPTH] {
        let mask = self.width - 1;
        std::array::from_fn(|row| row * self.width + ((h >> (16 * row)) as usize & mask))
    }

    fn slots(&self, key: &[u8]) -> [usize; DEPTH] {
        self.slots_of(xxhash_rust::xxh3::xxh3_64(key))
    }

    /// The estimated recent accesses of `key`.
    pub fn estimate(&self, key: &[u8]) -> u64 {
        u64::from(
            self.slots(key)
                .iter()
                .map(|&i| self.counters[i])
                .min()
                .unwrap_or(0),
        )
    }

    /// Counts one access to `key`.
    pub fn record(&mut self, key: &Bytes) {
        let h = xxhash_rust::xxh3::xxh3_64(key);
        let mut estimate = u32::MAX;
        for i in self.slots_of(h) {
            let c = &mut self.counters[i];
            *c = c.saturating_add(1);
            estimate = estimate.min(*c);
        }
        let full = self.top.len() >= self.max_top;
        // A key at or below the floor is not a heavy hitter, nor was it one: keys in the
        // list are above the floor, and their estimates only grow between decays.
        if !full || estimate > self.top_floor {
            match self.top.iter_mut().find(|(kh, k, _)| *kh == h && k == key) {
                Some(entry) => entry.2 = estimate,
                None if !full => self.top.push((h, Bytes::copy_from_slice(key), estimate)),
                None => {
                    if let Some(min) = self.top.iter_mut().min_by_key(|(_, _, c)| *c)
                        && min.2 < estimate
                    {
                        *min = (h, Bytes::copy_from_slice(key), estimate);
                    }
                }
            }
            if self.top.len() >= self.max_top {
                self.top_floor = self.top.iter().map(|t| t.2).min().unwrap_or(0);
            }
        }
        self.accesses += 1;
        if self.accesses.is_multiple_of(self.decay_every) {
            self.decay();
        }
    }

    /// Halves every counter (and the heavy hitters' counts).
    pub fn decay(&mut self) {
        for c in &mut self.counters {
            *c /= 2;
        }
        for (_, _, c) in &mut self.top {
            *c /= 2;
        }
        self.top.retain(|(_, _, c)| *c > 0);
        self.top_floor /= 2;
    }

    /// The heaviest keys seen, heaviest first.
    pub fn top(&self) -> Vec<HotKey> {
        let mut out: Vec<HotKey> = self
            .top
            .iter()
            .map(|(_, k, c)| HotKey {
                key: k.clone(),
                count: u64::from(*c),
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        out
    }

    /// Bytes of counters (fixed at creation).
    pub fn sketch_bytes(&self) -> usize {
        self.counters.len() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Zipf};

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("key{i}"))
    }

    #[test]
    fn heavy_hitters_of_a_zipf_load_are_found_and_memory_is_fixed() {
        let mut h = HotKeys::new(1024, 8, 1 << 40);
        let bytes = h.sketch_bytes();
        let zipf = Zipf::new(100_000.0, 1.2).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200_000 {
            h.record(&key(zipf.sample(&mut rng) as u64));
        }
        let top: Vec<Bytes> = h.top().into_iter().map(|t| t.key).collect();
        // The most popular keys of a Zipf load are ranks 1, 2, 3.
        for rank in 1..=3 {
            assert!(top.contains(&key(rank)), "rank {rank} missing from {top:?}");
        }
        assert_eq!(h.top()[0].key, key(1));
        assert_eq!(h.sketch_bytes(), bytes);
        // An estimate never under-counts a key's recorded accesses.
        let mut exact = HotKeys::new(1024, 8, 1 << 40);
        for _ in 0..500 {
            exact.record(&key(42));
        }
        assert!(exact.estimate(b"key42") >= 500);
    }

    #[test]
    fn decay_lets_a_new_hot_key_take_over() {
        let mut h = HotKeys::new(256, 2, 1_000);
        for _ in 0..5_000 {
            h.record(&key(1));
        }
        assert_eq!(h.top()[0].key, key(1));
        for _ in 0..5_000 {
            h.record(&key(2));
        }
        assert_eq!(h.top()[0].key, key(2), "{:?}", h.top());
        assert!(h.estimate(b"key1") < 200, "{}", h.estimate(b"key1"));
    }
}
