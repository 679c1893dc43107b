//! Checkers for the lattice laws, for testing lattice types, your own included.
//!
//! Each checker takes a few sample values (from a proptest strategy, or written out) and
//! panics with the failing inputs when a law does not hold. Enable the `laws` feature to use
//! them from your own tests.
//!
//! ```
//! use calm_lattice::{laws, Max};
//! laws::check_all(&[Max::new(1u32), Max::new(5), Max::new(3)]);
//! laws::check_atomize(&[Max::new(4u32)]);
//! laws::check_monotone(|m: &Max<u32>| m.at_least(3), &[Max::new(1), Max::new(4)]);
//! ```

use std::cmp::Ordering;
use std::fmt::Debug;

use crate::{Atomize, IsBot, IsTop, Merge};

/// Runs every law that needs only the values: [`check_lattice_properties`],
/// [`check_order`], [`check_bot`] and [`check_top`] on each item that claims to be top.
pub fn check_all<L>(items: &[L])
where
    L: Merge + Clone + PartialOrd + Eq + Debug + IsBot + IsTop + Default,
{
    check_lattice_properties(items);
    check_order(items);
    check_bot(items);
    for top in items.iter().filter(|t| t.is_top()) {
        check_top(top, items);
    }
}

/// Associativity, commutativity, idempotence, and an honest `bool` from merge, over every
/// pair and triple of `items`.
pub fn check_lattice_properties<L: Merge + Clone + Eq + Debug>(items: &[L]) {
    for a in items {
        let aa = a.clone().merge_owned(a.clone());
        assert_eq!(&aa, a, "merge is not idempotent: a = {a:?}");
        for b in items {
            let ab = a.clone().merge_owned(b.clone());
            let ba = b.clone().merge_owned(a.clone());
            assert_eq!(
                ab, ba,
                "merge is not commutative:\n  a = {a:?}\n  b = {b:?}"
            );

            let mut merged = a.clone();
            let changed = merged.merge(b.clone());
            assert_eq!(
                changed,
                &merged != a,
                "merge returned {changed} but the value {} changed:\n  a = {a:?}\n  b = {b:?}\n  a ⊔ b = {merged:?}",
                if &merged != a { "did" } else { "did not" },
            );
            for c in items {
                let left = ab.clone().merge_owned(c.clone());
                let right = a.clone().merge_owned(b.clone().merge_owned(c.clone()));
                assert_eq!(
                    left, right,
                    "merge is not associative:\n  a = {a:?}\n  b = {b:?}\n  c = {c:?}"
                );
            }
        }
    }
}

/// The order agrees with merge: `a <= b` exactly when `a ⊔ b == b`, and `partial_cmp` is
/// consistent with `==` and symmetric.
pub fn check_order<L: Merge + Clone + PartialOrd + Eq + Debug>(items: &[L]) {
    for a in items {
        for b in items {
            let ab = a.clone().merge_owned(b.clone());
            let le_by_merge = &ab == b;
            assert_eq!(
                a <= b,
                le_by_merge,
                "order disagrees with merge: (a <= b) = {}, but (a ⊔ b == b) = {le_by_merge}:\n  a = {a:?}\n  b = {b:?}",
                a <= b,
            );
            assert_eq!(
                a.partial_cmp(b) == Some(Ordering::Equal),
                a == b,
                "partial_cmp says Equal but == disagrees (or the reverse):\n  a = {a:?}\n  b = {b:?}"
            );
            assert_eq!(
                a.partial_cmp(b).map(Ordering::reverse),
                b.partial_cmp(a),
                "partial_cmp is not antisymmetric:\n  a = {a:?}\n  b = {b:?}"
            );
        }
    }
}

/// `Default` is bottom: it merges into anything without change, `is_bot` says so, and no
/// other value claims to be bottom.
pub fn check_bot<L: Merge + Clone + Eq + Debug + IsBot + Default>(items: &[L]) {
    let bot = L::default();
    assert!(bot.is_bot(), "Default::default() is not bottom: {bot:?}");
    for a in items {
        let mut x = a.clone();
        assert!(
            !x.merge(bot.clone()),
            "merging bottom changed a value: a = {a:?}"
        );
        assert_eq!(
            bot.clone().merge_owned(a.clone()),
            *a,
            "bottom ⊔ a != a: a = {a:?}"
        );
        assert_eq!(
            a.is_bot(),
            *a == bot,
            "is_bot() = {} disagrees with a == Default::default(): a = {a:?}",
            a.is_bot()
        );
    }
}

/// `top` absorbs every item: `top ⊔ a == top`.
pub fn check_top<L: Merge + Clone + Eq + Debug + IsTop>(top: &L, items: &[L]) {
    assert!(
        top.is_top(),
        "check_top called with a non-top value: {top:?}"
    );
    for a in items {
        let mut t = top.clone();
        assert!(
            !t.merge(a.clone()),
            "merging into top changed it: top = {top:?}, a = {a:?}"
        );
        assert_eq!(
            a.clone().merge_owned(top.clone()),
            *top,
            "a ⊔ top != top: a = {a:?}"
        );
    }
}

/// Join decomposition: each atom is non-bottom and merging all atoms of `a` into bottom
/// gives back `a`.
pub fn check_atomize<L>(items: &[L])
where
    L: Atomize + Clone + Eq + Debug + Default,
    L::Atom: Debug + Clone,
{
    for a in items {
        let atoms: Vec<L::Atom> = a.clone().atomize().collect();
        for atom in &atoms {
            assert!(
                !atom.is_bot(),
                "atomize produced a bottom atom {atom:?} from a = {a:?}"
            );
        }
        let mut rebuilt = L::default();
        for atom in atoms.iter().cloned() {
            rebuilt.merge(atom);
        }
        assert_eq!(
            rebuilt, *a,
            "atoms do not re-merge to the original:\n  a = {a:?}\n  atoms = {atoms:?}"
        );
    }
}

/// Delta correctness: `mutate` changes `state` and returns its delta; checks that
/// `old ⊔ delta == new`, and that the delta alone brings any other item forward the same
/// way as the full new state would (`x ⊔ new == x ⊔ old ⊔ delta`).
pub fn check_delta<L, D, F>(state: &L, others: &[L], mutate: F)
where
    L: Merge + Merge<D> + Clone + Eq + Debug,
    D: Clone + Debug,
    F: FnOnce(&mut L) -> D,
{
    let mut new = state.clone();
    let delta = mutate(&mut new);
    let rebuilt = state.clone().merge_owned(delta.clone());
    assert_eq!(
        rebuilt, new,
        "old ⊔ delta != new:\n  old = {state:?}\n  delta = {delta:?}\n  new = {new:?}"
    );
    for x in others {
        let via_state = x.clone().merge_owned(new.clone());
        let via_delta = x
            .clone()
            .merge_owned(state.clone())
            .merge_owned(delta.clone());
        assert_eq!(
            via_state, via_delta,
            "x ⊔ old ⊔ delta != x ⊔ new:\n  x = {x:?}\n  old = {state:?}\n  delta = {delta:?}"
        );
    }
}

/// `f` is a lattice morphism: `f(a ⊔ b) == f(a) ⊔ f(b)` for every pair, and `f` maps
/// bottom to bottom.
pub fn check_morphism<A, B, F>(f: F, items: &[A])
where
    A: Merge + Clone + Debug + Default,
    B: Merge + Eq + Debug + IsBot,
    F: Fn(&A) -> B,
{
    let image_of_bot = f(&A::default());
    assert!(
        image_of_bot.is_bot(),
        "f(bottom) is not bottom: f(bottom) = {image_of_bot:?}"
    );
    for a in items {
        for b in items {
            let whole = f(&a.clone().merge_owned(b.clone()));
            let parts = f(a).merge_owned(f(b));
            assert_eq!(
                whole, parts,
                "not a morphism: f(a ⊔ b) != f(a) ⊔ f(b):\n  a = {a:?}\n  b = {b:?}"
            );
        }
    }
}

/// `f` is monotone: `a <= b` implies `f(a) <= f(b)`.
pub fn check_monotone<A, B, F>(f: F, items: &[A])
where
    A: PartialOrd + Debug,
    B: PartialOrd + Debug,
    F: Fn(&A) -> B,
{
    for a in items {
        for b in items {
            if a <= b {
                let (fa, fb) = (f(a), f(b));
                assert!(
                    fa <= fb,
                    "not monotone: a <= b but f(a) is not <= f(b):\n  a = {a:?}\n  b = {b:?}\n  f(a) = {fa:?}\n  f(b) = {fb:?}"
                );
            }
        }
    }
}
