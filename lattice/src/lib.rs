//! Lattices and delta-state CRDTs for disorderly programming.
//!
//! A *lattice* is a set of states with a `merge` (join, ⊔) that is associative, commutative
//! and idempotent. State that only ever grows by merging needs no coordination to converge:
//! replicas may receive updates late, twice, or out of order and still end up equal. This
//! is the CALM theorem (Consistency As Logical Monotonicity), and everything in calm is
//! built on it: the store keeps lattice values, replicas converge by gossiping deltas, caches
//! and functions read them.
//!
//! ```
//! use calm_lattice::{Merge, OrSet, ReplicaId};
//!
//! // Two devices edit the same set while apart.
//! let (phone, laptop) = (ReplicaId(1), ReplicaId(2));
//! let mut a = OrSet::<String>::default();
//! let mut b = OrSet::<String>::default();
//! let d1 = a.add(phone, "milk".to_string());
//! let d2 = b.add(laptop, "eggs".to_string());
//!
//! // They exchange deltas, in any order, any number of times.
//! b.merge(d1.clone());
//! a.merge(d2);
//! b.merge(d1); // duplicate: no change
//! assert_eq!(a, b);
//! assert_eq!(a.len(), 2);
//! ```
//!
//! # The traits
//!
//! | trait | what it says |
//! |---|---|
//! | [`Merge`] | `merge(&mut self, other) -> bool`: join `other` into `self`, return whether `self` grew |
//! | [`PartialOrd`] | the lattice order: `a <= b` exactly when `a ⊔ b == b` |
//! | [`IsBot`] / [`IsTop`] | the least / greatest element; [`Default`] is always bottom |
//! | [`Atomize`] | join decomposition: split a value into minimal deltas that re-merge to it |
//! | [`Lattice`] | all of the above, implemented automatically |
//!
//! Every mutating operation on a CRDT (for example [`OrSet::add`], [`PNCounter::increment`])
//! returns its *delta*: a small value `d` such that `old ⊔ d == new`. Ship deltas, not whole
//! states; merging them in any order, with duplicates, converges.
//!
//! # The types
//!
//! | type | lattice |
//! |---|---|
//! | [`Max`], [`Min`] | a totally ordered value that only goes up (down) |
//! | [`SetUnion`] ([`SetUnionHashSet`], [`SetUnionBTreeSet`], [`SetUnionSingle`]) | grow-only set |
//! | [`OrderedSet`] | grow-only set kept in order, with range reads |
//! | [`MapUnion`] | map whose values are lattices, merged key by key |
//! | [`Pair`], [`DomPair`] | product, and lexicographic (dominating) pair |
//! | [`WithBot`], [`WithTop`] | adds a new bottom / top to a lattice |
//! | [`Conflict`] | a value that becomes "conflict" when two different ones meet |
//! | [`Hlc`], [`Lww`] | hybrid logical clock, last-writer-wins register with total tie-break |
//! | [`VectorClock`] | causal history, one counter per replica |
//! | [`SingleKeyCausal`], [`MultiKeyCausal`] | multi-value registers: concurrent writes kept |
//! | [`Priority`] | lowest priority wins |
//! | [`TopK`], [`BoundedSet`] | the k greatest elements; a set that saturates at a bound |
//! | [`GCounter`], [`PNCounter`] | grow-only and increment/decrement counters |
//! | [`OrSet`], [`OrMap`] | add-wins observed-remove set and map, no tombstones |
//! | [`Rga`] | a sequence (list): inserts at the front, back or after an element, removals |
//!
//! Product lattices of your own come from `#[derive(Lattice)]` (see [`macro@Lattice`]).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `serde` | yes | `Serialize`/`Deserialize` for every type |
//! | `laws` | no | the `laws` module: checkers for the lattice laws, for your own types' tests |
//! | `crdts` | no | the `crdts_interop` module: use `crdts` types through these traits, and conversions |
#![deny(missing_docs)]
#![warn(rustdoc::broken_intra_doc_links)]

// Lets `#[derive(Lattice)]` name `::calm_lattice` from inside this crate too.
extern crate self as calm_lattice;

mod bounded_set;
mod causal_context;
mod conflict;
mod dom_pair;
mod dot_store;
mod g_counter;
mod hlc;
mod lww;
mod map_union;
mod multi_key_causal;
mod or_map;
mod or_set;
mod ord;
mod ordered_set;
mod pair;
mod pn_counter;
mod priority;
mod replica;
mod rga;
mod set_union;
mod single_key_causal;
mod top_k;
mod vec_map;
mod vector_clock;
mod versions;
mod with_bot;
mod with_top;

#[cfg(feature = "crdts")]
pub mod crdts_interop;
#[cfg(any(test, feature = "laws"))]
pub mod laws;

pub use bounded_set::BoundedSet;
pub use causal_context::{CausalContext, Dot};
pub use conflict::Conflict;
pub use dom_pair::DomPair;
pub use g_counter::GCounter;
pub use hlc::{ClockDrift, Hlc, HlcClock, HlcOutOfRange};
pub use lww::{Lww, Stamp};
pub use map_union::MapUnion;
pub use multi_key_causal::{CausalVersion, MultiKeyCausal};
pub use or_map::OrMap;
pub use or_set::OrSet;
pub use ord::{Greatest, Least, Max, Min};
pub use ordered_set::OrderedSet;
pub use pair::Pair;
pub use pn_counter::PNCounter;
pub use priority::Priority;
pub use replica::ReplicaId;
pub use rga::{Anchor, Elem, ElemId, Rga};
pub use set_union::{
    SetRead, SetUnion, SetUnionBTreeSet, SetUnionHashSet, SetUnionSingle, SetWrite, Single,
};
pub use single_key_causal::SingleKeyCausal;
pub use top_k::TopK;
pub use vector_clock::VectorClock;
pub use with_bot::WithBot;
pub use with_top::WithTop;

/// Derives [`Merge`], [`PartialOrd`] (the product order), [`IsBot`] and [`IsTop`] for a
/// struct whose fields are all lattices: a *product lattice*.
///
/// Merge joins field by field and reports a change when any field changed; `a <= b` when
/// every field of `a` is `<=` the same field of `b`. Derive `Default`, `PartialEq` and `Eq`
/// yourself (do not derive `PartialOrd`: the product order is not the lexicographic one).
///
/// ```
/// use calm_lattice::{IsBot, Lattice, Max, Merge, SetUnionBTreeSet};
///
/// #[derive(Lattice, Default, Clone, Debug, PartialEq, Eq)]
/// struct Stats {
///     peak: Max<u64>,
///     seen: SetUnionBTreeSet<&'static str>,
/// }
///
/// let mut a = Stats { peak: Max::new(3), seen: SetUnionBTreeSet::new_from(["x"]) };
/// let b = Stats { peak: Max::new(7), seen: SetUnionBTreeSet::default() };
/// assert!(a.merge(b.clone()));
/// assert_eq!(a.peak, Max::new(7));
/// assert!(b < a);
/// assert!(Stats::default().is_bot());
/// ```
pub use calm_lattice_derive::Lattice;

/// Derives [`Atomize`](trait@Atomize) for a product lattice whose fields all atomize (and
/// have a bottom, `Default`): its atoms are the struct with one field set to one atom of
/// that field, every other field bottom, so anti-entropy and gossip can ship a struct in
/// the same small pieces as its fields.
///
/// ```
/// use calm_lattice::{Atomize, Lattice, Merge, SetUnionBTreeSet};
///
/// #[derive(Lattice, Atomize, Default, Clone, Debug, PartialEq, Eq)]
/// struct Tags {
///     public: SetUnionBTreeSet<u8>,
///     private: SetUnionBTreeSet<u8>,
/// }
///
/// let tags = Tags {
///     public: SetUnionBTreeSet::new_from([1, 2]),
///     private: SetUnionBTreeSet::new_from([9]),
/// };
/// let atoms: Vec<Tags> = tags.clone().atomize().collect();
/// assert_eq!(atoms.len(), 3);
/// let mut again = Tags::default();
/// for atom in atoms {
///     again.merge(atom);
/// }
/// assert_eq!(again, tags);
/// ```
pub use calm_lattice_derive::Atomize;

/// Derives delta mutators for a product lattice, for each field `f`: `Self::with_f(delta)`,
/// the struct with `f` set to `delta` and every other field bottom; and
/// `self.update_f(|f| f.mutator(..))`, which runs a field's delta mutator (it changes the
/// field and returns the delta it applied) and returns that delta as a whole struct, to
/// merge into other replicas. (Tuple structs get `with_0`, `update_0`, ...) Fields need a
/// bottom (`Default`).
///
/// ```
/// use calm_lattice::{Deltas, Lattice, Max, Merge, OrSet, ReplicaId};
///
/// #[derive(Lattice, Deltas, Default, Clone, Debug, PartialEq, Eq)]
/// struct Cart {
///     items: OrSet<String>,
///     most: Max<u64>,
/// }
///
/// let (mut phone, mut laptop) = (Cart::default(), Cart::default());
/// // Each edit returns a small delta of the whole cart...
/// let d = phone.update_items(|items| items.add(ReplicaId(1), "milk".to_string()));
/// assert_eq!(d.most, Max::default());
/// // ...which brings another replica up to date.
/// laptop.merge(d);
/// laptop.merge(Cart::with_most(Max::new(3)));
/// phone.merge(laptop.clone());
/// assert_eq!(phone, laptop);
/// ```
pub use calm_lattice_derive::Deltas;

/// Join another value into this one.
///
/// `Other` is usually `Self`, but may be a different representation of the same lattice
/// (a single-element delta merged into a full set, say).
///
/// Laws (checked for every type by the `laws` module): merge is associative, commutative and
/// idempotent, and the returned `bool` is `true` exactly when `self` changed.
pub trait Merge<Other = Self> {
    /// Joins `other` into `self`; returns `true` exactly when `self` changed.
    fn merge(&mut self, other: Other) -> bool;

    /// Joins `other` into `self` and returns the result.
    fn merge_owned(mut self, other: Other) -> Self
    where
        Self: Sized,
    {
        self.merge(other);
        self
    }
}

/// The least element of a lattice: merging it into anything changes nothing.
///
/// For every type here, [`Default::default`] is bottom.
pub trait IsBot {
    /// Whether this is the least element.
    fn is_bot(&self) -> bool;
}

/// The greatest element of a lattice: merging anything into it changes nothing.
///
/// Many lattices (sets, counters) have no top; their `is_top` is always `false`.
pub trait IsTop {
    /// Whether this is the greatest element.
    fn is_top(&self) -> bool;
}

/// Join decomposition: splits a value into small non-bottom *atoms* whose merge is the
/// original value. Gossip and anti-entropy use atoms as the smallest units to ship.
pub trait Atomize: Merge<Self::Atom> {
    /// The type of one atom; often `Self`, sometimes a cheaper representation.
    type Atom: IsBot;

    /// Splits `self` into atoms; merging them all into bottom gives back `self`.
    fn atomize(self) -> impl Iterator<Item = Self::Atom>;
}

/// A lattice: [`Merge`] with itself, ordered consistently with merge, with a bottom
/// ([`Default`]) and a top test. Implemented automatically for every such type.
pub trait Lattice: Sized + Merge<Self> + PartialOrd + IsBot + IsTop + Default {}

impl<T: Sized + Merge<T> + PartialOrd + IsBot + IsTop + Default> Lattice for T {}

/// The one-point lattice: nothing to merge. Lets a map of lattices carry bare keys.
impl Merge for () {
    fn merge(&mut self, _other: ()) -> bool {
        false
    }
}

impl IsBot for () {
    fn is_bot(&self) -> bool {
        true
    }
}

impl IsTop for () {
    fn is_top(&self) -> bool {
        true
    }
}

/// The lattice order computed from merge: `a <= b` exactly when `a ⊔ b == b`.
///
/// Types whose order has no cheaper direct form use this for their [`PartialOrd`], so the
/// order agrees with merge by construction.
pub(crate) fn order_by_merge<L: Merge + Clone + Eq>(a: &L, b: &L) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    if a == b {
        return Some(Ordering::Equal);
    }
    let joined = a.clone().merge_owned(b.clone());
    if &joined == b {
        Some(Ordering::Less)
    } else if &joined == a {
        Some(Ordering::Greater)
    } else {
        None
    }
}

/// Combines the field-by-field orderings of a product into the product order.
#[doc(hidden)]
pub fn product_order(
    parts: impl IntoIterator<Item = Option<std::cmp::Ordering>>,
) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering;
    let mut acc = Ordering::Equal;
    for part in parts {
        match (acc, part?) {
            (_, Ordering::Equal) => {}
            (Ordering::Equal, o) => acc = o,
            (a, o) if a == o => {}
            _ => return None,
        }
    }
    Some(acc)
}
