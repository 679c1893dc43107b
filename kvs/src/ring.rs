//! Consistent hashing with virtual nodes and a stable hash.

use xxhash_rust::xxh3::xxh3_64;

/// The hash every node and client uses for keys: xxh3, the same on every machine and in
/// every process (never a per-process random hasher), so all compute the same owners.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// A consistent-hash ring over members (worker ids here; node ids in a cluster). Each
/// member owns many points on the ring (virtual nodes) so load spreads evenly and a change
/// of membership moves few keys.
///
/// ```
/// use calm_kvs::HashRing;
/// let ring = HashRing::new([0u32, 1, 2], 64);
/// let owners = ring.owners(b"user:42", 2);
/// assert_eq!(owners.len(), 2);
/// assert_ne!(owners[0], owners[1]);
/// assert_eq!(ring.owners(b"user:42", 2), owners); // stable
/// ```
#[derive(Clone, Debug)]
pub struct HashRing {
    /// Points sorted by hash (a sorted vector: a lookup is one binary search).
    points: Vec<(u64, u32)>,
    members: Vec<u32>,
}

impl HashRing {
    /// A ring of `members`, each with `vnodes` points.
    pub fn new(members: impl IntoIterator<Item = u32>, vnodes: u32) -> Self {
        let mut members: Vec<u32> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        let mut points = Vec::new();
        for &m in &members {
            for v in 0..vnodes.max(1) {
                let mut label = [0u8; 8];
                label[..4].copy_from_slice(&m.to_be_bytes());
                label[4..].copy_from_slice(&v.to_be_bytes());
                points.push((xxh3_64(&label), m));
            }
        }
        // On a (vanishingly rare) hash collision the greater member keeps the point, the
        // same on every node.
        points.sort_unstable();
        points.reverse();
        points.dedup_by_key(|p| p.0);
        points.reverse();
        HashRing { points, members }
    }

    /// The points clockwise from `h`, wrapping around once.
    fn clockwise(&self, h: u64) -> impl Iterator<Item = u32> + '_ {
        let start = self.points.partition_point(|p| p.0 < h);
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .map(|p| p.1)
    }

    /// The members of the ring.
    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// The first `n` distinct members clockwise from the key's hash: its owners, primary
    /// first. Fewer if the ring has fewer members.
    pub fn owners(&self, key: &[u8], n: usize) -> Vec<u32> {
        let want = n.min(self.members.len());
        let mut out = Vec::with_capacity(want);
        for m in self.clockwise(key_hash(key)) {
            if out.len() == want {
                break;
            }
            if !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The key's primary owner.
    pub fn primary(&self, key: &[u8]) -> Option<u32> {
        self.clockwise(key_hash(key)).next()
    }

    /// Whether any key's first `n` owners include both `a` and `b`. Keys whose hashes fall
    /// between the same two points share their owners, so looking once from each point
    /// covers every key.
    pub fn shares_keys(&self, a: u32, b: u32, n: usize) -> bool {
        let want = n.min(self.members.len());
        let mut owners = Vec::with_capacity(want);
        (0..self.points.len()).any(|i| {
            owners.clear();
            for p in self.points[i..].iter().chain(&self.points[..i]) {
                if owners.len() == want {
                    break;
                }
                if !owners.contains(&p.1) {
                    owners.push(p.1);
                }
            }
            owners.contains(&a) && owners.contains(&b)
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn hash_is_stable_across_processes() {
        // A fixed vector: if this changes, every deployed node would disagree on owners.
        assert_eq!(key_hash(b"calm"), xxh3_64(b"calm"));
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn shares_keys_agrees_with_the_owners_of_many_keys() {
        for (members, n) in [(2u32, 1usize), (3, 1), (3, 2), (6, 1), (6, 2), (6, 3)] {
            let ring = HashRing::new(0..members, 64);
            for a in 0..members {
                for b in 0..members {
                    let seen = (0..20_000u32).any(|k| {
                        let o = ring.owners(&k.to_be_bytes(), n);
                        o.contains(&a) && o.contains(&b)
                    });
                    assert_eq!(
                        ring.shares_keys(a, b, n),
                        seen,
                        "{members} members, {n} owners, {a} and {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_spread_over_members() {
        let ring = HashRing::new(0..4, 64);
        let mut counts = [0usize; 4];
        for i in 0..10_000u32 {
            counts[ring.primary(&i.to_be_bytes()).unwrap() as usize] += 1;
        }
        for c in counts {
            assert!((1_500..=3_500).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn adding_a_member_moves_few_keys() {
        let before = HashRing::new(0..4, 64);
        let after = HashRing::new(0..5, 64);
        let moved = (0..10_000u32)
            .filter(|i| before.primary(&i.to_be_bytes()) != after.primary(&i.to_be_bytes()))
            .count();
        // Ideal is 1/5 of the keys; allow slack for virtual-node variance.
        assert!(moved < 3_000, "{moved} of 10000 keys moved");
        for i in 0..1_000u32 {
            let k = i.to_be_bytes();
            if before.primary(&k) != after.primary(&k) {
                assert_eq!(
                    after.primary(&k),
                    Some(4),
                    "a key moved between old members"
                );
            }
        }
    }

    #[test]
    fn owners_are_distinct_and_primary_first() {
        let ring = HashRing::new(0..3, 16);
        for i in 0..100u32 {
            let k = i.to_be_bytes();
            let o = ring.owners(&k, 5);
            assert_eq!(o.len(), 3);
            assert_eq!(Some(o[0]), ring.primary(&k));
            let mut d = o.clone();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
    }
}
