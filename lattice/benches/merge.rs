//! Merge cost of calm's lattices beside the raw std operation each one wraps, measured in
//! the same run so the ratio is meaningful on a noisy machine.
//!
//! Run: `cargo bench -p calm-lattice --bench merge`, then
//! `python3 lattice/benches/ratios.py` prints the table of ratios (calm / raw).

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;

use calm_lattice::{
    Hlc, Lww, MapUnion, Max, Merge, OrSet, PNCounter, ReplicaId, SetUnion, SetUnionHashSet, Single,
    Stamp,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const N: u64 = 1_000;

fn max(c: &mut Criterion) {
    let values: Vec<u64> = (0..N)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20)
        .collect();
    let mut g = c.benchmark_group("max_1k_merges");
    g.bench_function("calm", |b| {
        b.iter(|| {
            let mut m = Max::new(0u64);
            for v in &values {
                m.merge(Max::new(*v));
            }
            black_box(m)
        })
    });
    g.bench_function("raw", |b| {
        b.iter(|| {
            let mut m = 0u64;
            for v in &values {
                m = m.max(*v);
            }
            black_box(m)
        })
    });
    g.finish();
}

fn lww(c: &mut Criterion) {
    let writes: Vec<(Stamp, u64)> = (0..N)
        .map(|i| {
            let ms = (i * 7919) % 1000;
            (Stamp::new(Hlc::new(ms, 0), ReplicaId(i % 5)), i)
        })
        .collect();
    let mut g = c.benchmark_group("lww_1k_merges");
    g.bench_function("calm", |b| {
        b.iter(|| {
            let mut reg = Lww::default();
            for (s, v) in &writes {
                reg.merge(Lww::new(*s, *v));
            }
            black_box(reg)
        })
    });
    // The raw equivalent: keep the greatest (stamp, value) pair.
    g.bench_function("raw", |b| {
        b.iter(|| {
            let mut reg: Option<(Stamp, u64)> = None;
            for w in &writes {
                if Some(*w) > reg {
                    reg = Some(*w);
                }
            }
            black_box(reg)
        })
    });
    g.finish();
}

fn set_union(c: &mut Criterion) {
    let a: HashSet<u64> = (0..N).collect();
    let other: HashSet<u64> = (N / 2..N + N / 2).collect();
    let mut g = c.benchmark_group("set_union_1k_into_1k");
    g.bench_function("calm", |b| {
        b.iter_batched(
            || {
                (
                    SetUnionHashSet::new(a.clone()),
                    SetUnionHashSet::new(other.clone()),
                )
            },
            |(mut x, y)| {
                x.merge(y);
                x
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("raw", |b| {
        b.iter_batched(
            || (a.clone(), other.clone()),
            |(mut x, y)| {
                x.extend(y);
                x
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // One element into a million: the set grows by one new element per iteration, on both
    // sides alike.
    let big: HashSet<u64> = (0..1_000_000).collect();
    let mut g = c.benchmark_group("set_union_1_into_1m");
    let mut calm = SetUnionHashSet::new(big.clone());
    let mut next = 1_000_000u64;
    g.bench_function("calm", |b| {
        b.iter(|| {
            next += 1;
            black_box(calm.merge(SetUnion::new(Single(next))));
        })
    });
    let mut raw = big;
    let mut next = 1_000_000u64;
    g.bench_function("raw", |b| {
        b.iter(|| {
            next += 1;
            black_box(raw.insert(next));
        })
    });
    g.finish();
}

fn map_union(c: &mut Criterion) {
    let a: BTreeMap<u64, u64> = (0..N).map(|k| (k, k)).collect();
    let other: BTreeMap<u64, u64> = (N / 2..N + N / 2).map(|k| (k, k * 3 % 1000)).collect();
    let lattice =
        |m: &BTreeMap<u64, u64>| MapUnion::new_from(m.iter().map(|(k, v)| (*k, Max::new(*v))));
    let (la, lo) = (lattice(&a), lattice(&other));
    let mut g = c.benchmark_group("map_union_1k_into_1k");
    g.bench_function("calm", |b| {
        b.iter_batched(
            || (la.clone(), lo.clone()),
            |(mut x, y)| {
                x.merge(y);
                x
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("raw", |b| {
        b.iter_batched(
            || (a.clone(), other.clone()),
            |(mut x, y)| {
                for (k, v) in y {
                    let e = x.entry(k).or_insert(v);
                    *e = (*e).max(v);
                }
                x
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn or_set(c: &mut Criterion) {
    // Two replicas that each added half of 1k elements and saw part of each other.
    let mut x = OrSet::default();
    let mut y = OrSet::default();
    for i in 0..N {
        if i % 2 == 0 {
            x.add(ReplicaId(1), i);
        } else {
            y.add(ReplicaId(2), i);
        }
    }
    let raw_x: std::collections::BTreeSet<u64> = x.iter().copied().collect();
    let raw_y: std::collections::BTreeSet<u64> = y.iter().copied().collect();
    let mut g = c.benchmark_group("or_set_1k_into_1k");
    g.bench_function("calm", |b| {
        b.iter_batched(
            || (x.clone(), y.clone()),
            |(mut a, b)| {
                a.merge(b);
                a
            },
            BatchSize::SmallInput,
        )
    });
    // What an OrSet wraps at its simplest: a set union (it also tracks dots and a context).
    g.bench_function("raw", |b| {
        b.iter_batched(
            || (raw_x.clone(), raw_y.clone()),
            |(mut a, b)| {
                a.extend(b);
                a
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn pn_counter(c: &mut Criterion) {
    // Counters touched by 16 replicas each.
    let mut x = PNCounter::default();
    let mut y = PNCounter::default();
    for r in 0..16 {
        x.increment(ReplicaId(r), r * 3 + 1);
        x.decrement(ReplicaId(r), r);
        y.increment(ReplicaId(r), 50 - r);
        y.decrement(ReplicaId(r), 2 * r);
    }
    let raw = |c: &PNCounter| {
        (
            c.increments()
                .iter()
                .map(|(r, n)| (r.0, n))
                .collect::<BTreeMap<u64, u64>>(),
            c.decrements()
                .iter()
                .map(|(r, n)| (r.0, n))
                .collect::<BTreeMap<u64, u64>>(),
        )
    };
    let (rx, ry) = (raw(&x), raw(&y));
    let mut g = c.benchmark_group("pn_counter_16_replicas");
    g.bench_function("calm", |b| {
        b.iter_batched(
            || (x.clone(), y.clone()),
            |(mut a, b)| {
                a.merge(b);
                a
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("raw", |b| {
        b.iter_batched(
            || (rx.clone(), ry.clone()),
            |(mut a, b)| {
                for (side, other) in [(&mut a.0, b.0), (&mut a.1, b.1)] {
                    for (k, v) in other {
                        let e = side.entry(k).or_insert(v);
                        *e = (*e).max(v);
                    }
                }
                a
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, max, lww, set_union, map_union, or_set, pn_counter);
criterion_main!(benches);
