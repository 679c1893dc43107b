//! An application's own lattice as a kind of value: a Rust type that merges
//! ([`CustomLattice`]), stored under a name of its own and merged by the type's code on the
//! nodes that were built with it ([`Kinds`]).
//!
//! The store keeps such a value encoded (bincode, the bottom element as no bytes at all)
//! and merges two values by decoding both, merging them as the type does and encoding the
//! result. The code is found by the kind's name in a table of this process
//! ([`Kinds::with`] adds a type to it); a node accepts the kinds its
//! [`NodeConfig`](crate::NodeConfig) names and refuses the others with
//! [`OpError::UnknownKind`](crate::OpError::UnknownKind): client writes, and deltas
//! replicated from other nodes alike (the sender keeps what was refused, so a node built
//! with the kind later takes it).
//!
//! A write merges a value of the type into the key (a delta or a whole state: merging is
//! idempotent, so a write is safe to send again). A delete starts the key afresh, as a
//! new [generation](super) of a key does: a write concurrent with the delete (made on a
//! replica that had not seen it) is dropped, as a last-writer-wins overwrite drops the
//! writes it follows.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

use bytes::Bytes;
use calm_lattice::Merge;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An application's lattice that calm can store as a kind of its own: a type that merges
/// (for instance one with `#[derive(Lattice)]`), whose [`Default`] is its bottom, and that
/// serde encodes. Its encoding should be canonical (equal values encode to equal bytes: use
/// `BTreeMap`/`BTreeSet`, not `HashMap`), so that replicas holding equal values agree that
/// they do.
///
/// ```
/// use calm_kvs::value::CustomLattice;
/// use calm_lattice::{Lattice, Max, SetUnionBTreeSet};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Lattice, Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// struct Cart {
///     items: SetUnionBTreeSet<String>,
///     most: Max<u64>,
/// }
///
/// impl CustomLattice for Cart {
///     const KIND: &'static str = "cart";
/// }
/// ```
pub trait CustomLattice:
    Merge + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The kind's name, as keys of this kind report it (`TYPE`, `calm get`): 1 to
    /// [`CustomKind::MAX_LEN`] bytes of lowercase ASCII letters, digits, `_` and `-`,
    /// starting with a letter, and not one of calm's own kinds (`lww`, `set`, ...).
    const KIND: &'static str;
}

/// The name of an application's kind (see [`CustomLattice::KIND`]): held inline, so a
/// [`Kind`](super::Kind) stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomKind {
    len: u8,
    name: [u8; CustomKind::MAX_LEN],
}

/// A name that cannot be a kind's (see [`CustomLattice::KIND`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} cannot name a kind: {why} (a kind's name is 1 to 23 bytes of lowercase letters, digits, '_' and '-', starting with a letter, and not one of calm's own kinds)"
)]
pub struct BadKindName {
    /// The name refused.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl CustomKind {
    /// The longest name, bytes.
    pub const MAX_LEN: usize = 23;

    /// The kind named `name`, if it can be one.
    pub fn new(name: &str) -> Result<CustomKind, BadKindName> {
        let bad = |why| BadKindName {
            name: name.chars().take(64).collect(),
            why,
        };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(bad("its length"));
        }
        if !bytes[0].is_ascii_lowercase() {
            return Err(bad("it does not start with a lowercase letter"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
        {
            return Err(bad("a character other than a-z, 0-9, '_' and '-'"));
        }
        if super::Kind::ALL.iter().any(|k| k.name() == name) {
            return Err(bad("it is one of calm's own kinds"));
        }
        let mut inline = [0; Self::MAX_LEN];
        inline[..bytes.len()].copy_from_slice(bytes);
        Ok(CustomKind {
            len: bytes.len() as u8,
            name: inline,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked by `new`, which decoding goes through).
        std::str::from_utf8(&self.name[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Display for CustomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CustomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomKind({:?})", self.as_str())
    }
}

impl Serialize for CustomKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CustomKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        CustomKind::new(&name).map_err(serde::de::Error::custom)
    }
}

/// A key's value of an application's kind: the kind and the value, encoded (no bytes:
/// bottom, nothing written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomValue {
    /// The kind.
    pub kind: CustomKind,
    /// The value as [`encode`] makes it.
    pub state: Bytes,
}

impl CustomValue {
    /// An empty value of `kind` (bottom).
    pub fn empty(kind: CustomKind) -> CustomValue {
        CustomValue {
            kind,
            state: Bytes::new(),
        }
    }

    /// Merges `other` (of the same kind) into this value; returns whether it changed.
    /// Without the kind's code in this process, bottom merges with anything and equal
    /// values merge, but two different values cannot: `Err` and nothing changes (a node
    /// refuses the kinds it lacks before it would have to).
    pub fn merge(&mut self, other: CustomValue) -> Result<bool, CustomError> {
        if other.state.is_empty() || other.state == self.state {
            return Ok(false);
        }
        if self.state.is_empty() {
            self.state = other.state;
            return Ok(true);
        }
        let code = code_of(self.kind)?;
        match (code.merge)(&self.state, &other.state)? {
            Some(merged) => {
                self.state = merged;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Checks that the state decodes as the kind's type (in this process), and makes it
    /// the type's own encoding of that value: replicas holding equal values then hold
    /// equal bytes (the same value can decode from other bytes, members out of order say,
    /// which would keep their digests apart).
    pub fn canonicalize(&mut self) -> Result<(), CustomError> {
        if let Some(canonical) = (code_of(self.kind)?.canonical)(&self.state)? {
            self.state = canonical;
        }
        Ok(())
    }
}

/// Why a value of an application's kind could not be merged or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustomError {
    /// This process was not built with the kind (see [`Kinds::with`]).
    #[error(
        "no code for the kind '{0}' in this process (register its type with Kinds::with and give the Kinds to the node)"
    )]
    Unknown(CustomKind),
    /// The bytes are not a value of the kind's type.
    #[error("a value of kind '{kind}' does not decode as {type_name}: {reason}")]
    Decode {
        /// The kind.
        kind: CustomKind,
        /// The type it was decoded as.
        type_name: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A read asked for one kind and the key holds another.
    #[error("the key holds a value of kind '{stored}', not '{wanted}'")]
    OtherKind {
        /// What the key holds.
        stored: String,
        /// What was asked for.
        wanted: CustomKind,
    },
    /// Two types were registered under one name.
    #[error("the kind '{kind}' is registered for {registered}; {attempted} cannot take its name")]
    Taken {
        /// The kind.
        kind: CustomKind,
        /// The type that has it.
        registered: &'static str,
        /// The type refused.
        attempted: &'static str,
    },
    /// The type's name cannot be a kind's.
    #[error(transparent)]
    BadName(#[from] BadKindName),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A value of `T` as the store keeps it: no bytes for bottom (`T::default()`), otherwise
/// bincode's standard encoding.
pub fn encode<T: CustomLattice>(value: &T) -> Bytes {
    if *value == T::default() {
        return Bytes::new();
    }
    // Encoding into a vector fails only for types serde cannot describe to bincode
    // (maps with unknown length and the like), which a stored lattice never is.
    Bytes::from(bincode::serde::encode_to_vec(value, config()).unwrap_or_default())
}

/// A value of `T` from what [`encode`] made.
pub fn decode<T: CustomLattice>(state: &[u8]) -> Result<T, CustomError> {
    if state.is_empty() {
        return Ok(T::default());
    }
    let fail = |reason: String| CustomError::Decode {
        kind: CustomKind::new(T::KIND).unwrap_or(CustomKind {
            len: 0,
            name: [0; CustomKind::MAX_LEN],
        }),
        type_name: std::any::type_name::<T>(),
        reason,
    };
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(state, config())
        .map_err(|e| fail(e.to_string()))?;
    if read != state.len() {
        return Err(fail(format!(
            "{} bytes left over after the value",
            state.len() - read
        )));
    }
    Ok(value)
}

/// What a kind's code answers for a merge or an encoding: the new bytes, or `None` when
/// they are the ones given.
type Rewritten = Result<Option<Bytes>, CustomError>;

/// A kind's code, as the process-wide table holds it.
#[derive(Clone, Copy)]
struct Code {
    type_id: TypeId,
    type_name: &'static str,
    /// The merge of two values, if other than the first.
    merge: fn(&[u8], &[u8]) -> Rewritten,
    /// The canonical encoding of the value, if other than the one given.
    canonical: fn(&[u8]) -> Rewritten,
}

fn merge_as<T: CustomLattice>(a: &[u8], b: &[u8]) -> Rewritten {
    let mut a: T = decode(a)?;
    let b: T = decode(b)?;
    Ok(a.merge(b).then(|| encode(&a)))
}

fn canonical_as<T: CustomLattice>(state: &[u8]) -> Rewritten {
    let canonical = encode(&decode::<T>(state)?);
    Ok((canonical != state).then_some(canonical))
}

/// The kinds' code in this process, by name. Values are decoded where no node is at hand
/// (replies merged by a coordinator, deltas queued for a peer), so the code is found by
/// the kind's name alone; which kinds a node accepts is its own ([`Kinds`]).
static CODE: RwLock<BTreeMap<CustomKind, Code>> = RwLock::new(BTreeMap::new());

/// Whether this process has the code of `kind` (see [`Kinds::with`]).
pub fn has_code(kind: CustomKind) -> bool {
    code_of(kind).is_ok()
}

fn code_of(kind: CustomKind) -> Result<Code, CustomError> {
    let table = CODE.read().unwrap_or_else(|e| e.into_inner());
    table.get(&kind).copied().ok_or(CustomError::Unknown(kind))
}

/// The application's kinds a node accepts (none by default): give them to
/// [`NodeConfig::kinds`](crate::NodeConfig::kinds). A node refuses writes and replicated
/// values of any other kind with [`OpError::UnknownKind`](crate::OpError::UnknownKind).
///
/// ```
/// # use calm_kvs::value::CustomLattice;
/// # use calm_lattice::{Lattice, Max};
/// # #[derive(Lattice, Default, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
/// # struct Cart { most: Max<u64> }
/// # impl CustomLattice for Cart { const KIND: &'static str = "cart"; }
/// use calm_kvs::value::Kinds;
/// let kinds = Kinds::new().with::<Cart>().unwrap();
/// assert!(kinds.names().eq(["cart"]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kinds(std::collections::BTreeSet<CustomKind>);

impl Kinds {
    /// No kinds.
    pub fn new() -> Kinds {
        Kinds::default()
    }

    /// These kinds and `T`'s, whose code it adds to this process's table. Refused if
    /// `T::KIND` cannot be a kind's name or names another type's kind.
    pub fn with<T: CustomLattice>(mut self) -> Result<Kinds, CustomError> {
        let kind = CustomKind::new(T::KIND)?;
        let code = Code {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            merge: merge_as::<T>,
            canonical: canonical_as::<T>,
        };
        let mut table = CODE.write().unwrap_or_else(|e| e.into_inner());
        match table.get(&kind) {
            Some(other) if other.type_id != code.type_id => {
                return Err(CustomError::Taken {
                    kind,
                    registered: other.type_name,
                    attempted: code.type_name,
                });
            }
            Some(_) => {}
            None => {
                table.insert(kind, code);
            }
        }
        self.0.insert(kind);
        Ok(self)
    }

    /// Whether `kind` is one of these.
    pub fn accepts(&self, kind: CustomKind) -> bool {
        self.0.contains(&kind)
    }

    /// The kinds' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(CustomKind::as_str)
    }

    /// Takes `value` (a write's or a replica's) as a node with these kinds does: a value of
    /// an application's kind not among these is refused, and so are bytes that are not a
    /// value of the kind's type; the others are made canonical
    /// ([`CustomValue::canonicalize`]). Values of calm's own kinds pass unchanged.
    pub fn admit(&self, value: &mut super::Value) -> Result<(), crate::OpError> {
        use super::Value;
        match value {
            Value::Generation { value, .. } | Value::Expiring { value, .. } => self.admit(value),
            Value::Custom(v) => self.admit_custom(v),
            _ => Ok(()),
        }
    }

    /// Takes `write` as a node with these kinds does (see [`admit`](Self::admit)).
    pub fn admit_write(&self, write: &mut super::Write) -> Result<(), crate::OpError> {
        match write {
            super::Write::Custom(v) => self.admit_custom(v),
            super::Write::Merge(v) => self.admit(v),
            _ => Ok(()),
        }
    }

    fn admit_custom(&self, value: &mut CustomValue) -> Result<(), crate::OpError> {
        if !self.accepts(value.kind) {
            return Err(crate::OpError::UnknownKind {
                kind: value.kind.to_string(),
            });
        }
        value.canonicalize().map_err(|e| crate::OpError::BadValue {
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use calm_lattice::{Max, SetUnionBTreeSet};

    #[derive(
        calm_lattice::Lattice, Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize,
    )]
    struct Basket {
        items: SetUnionBTreeSet<String>,
        most: Max<u64>,
    }

    impl CustomLattice for Basket {
        const KIND: &'static str = "basket";
    }

    #[derive(
        calm_lattice::Lattice, Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize,
    )]
    struct Impostor {
        most: Max<u64>,
    }

    impl CustomLattice for Impostor {
        const KIND: &'static str = "basket";
    }

    fn basket(items: &[&str], most: u64) -> Basket {
        Basket {
            items: SetUnionBTreeSet::new_from(items.iter().map(|s| s.to_string())),
            most: Max::new(most),
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(CustomKind::new("cart-v2_1").unwrap().as_str(), "cart-v2_1");
        for bad in [
            "",
            "Cart",
            "1cart",
            "car t",
            "lww",
            "zset",
            "ä",
            &"a".repeat(24),
        ] {
            assert!(CustomKind::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(CustomKind::new(&"a".repeat(23)).unwrap().as_str().len(), 23);
        // Decoding goes through the same check.
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec("Not A Kind", config).unwrap();
        assert!(bincode::serde::decode_from_slice::<CustomKind, _>(&bytes, config).is_err());
        let good = bincode::serde::encode_to_vec(CustomKind::new("cart").unwrap(), config);
        let (kind, _) =
            bincode::serde::decode_from_slice::<CustomKind, _>(&good.unwrap(), config).unwrap();
        assert_eq!(kind.as_str(), "cart");
    }

    #[test]
    fn values_merge_as_their_type_does() {
        Kinds::new().with::<Basket>().unwrap();
        let kind = CustomKind::new("basket").unwrap();
        let value = |b: &Basket| CustomValue {
            kind,
            state: encode(b),
        };
        assert!(encode(&Basket::default()).is_empty());
        let mut a = value(&basket(&["milk"], 2));
        let b = value(&basket(&["eggs"], 6));
        assert_eq!(a.merge(b.clone()), Ok(true));
        assert_eq!(
            decode::<Basket>(&a.state).unwrap(),
            basket(&["eggs", "milk"], 6)
        );
        assert_eq!(a.merge(b), Ok(false), "merging is idempotent");
        assert_eq!(a.merge(CustomValue::empty(kind)), Ok(false));
        let mut empty = CustomValue::empty(kind);
        assert_eq!(empty.merge(a.clone()), Ok(true));
        assert_eq!(empty, a);
        // Bytes that are no basket are refused, and nothing changes.
        let junk = CustomValue {
            kind,
            state: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(matches!(
            junk.clone().canonicalize(),
            Err(CustomError::Decode { .. })
        ));
        let before = a.clone();
        assert!(a.merge(junk).is_err());
        assert_eq!(a, before);
    }

    #[test]
    fn a_name_belongs_to_one_type_and_unknown_kinds_merge_only_what_needs_no_code() {
        Kinds::new().with::<Basket>().unwrap();
        let err = Kinds::new().with::<Impostor>().unwrap_err();
        assert!(matches!(err, CustomError::Taken { .. }), "{err}");
        let kind = CustomKind::new("nobody-registers-this").unwrap();
        let one = CustomValue {
            kind,
            state: Bytes::from_static(b"\x01"),
        };
        let mut v = CustomValue::empty(kind);
        assert_eq!(v.merge(one.clone()), Ok(true));
        assert_eq!(v.merge(one), Ok(false));
        let two = CustomValue {
            kind,
            state: Bytes::from_static(b"\x02"),
        };
        assert_eq!(v.merge(two), Err(CustomError::Unknown(kind)));
        assert!(!Kinds::new().with::<Basket>().unwrap().accepts(kind));
    }
}
