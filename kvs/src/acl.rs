//! Users and what they may do, per key prefix (a namespace, or a tenant).
//!
//! Without an ACL, every client certificate (and the Redis port's one password) may do
//! everything, as before. With one (`calm server --acl FILE`, `calm up --acl FILE`), a
//! connection may do what the file grants its user, the name in its client certificate
//! (or, on the Redis port, the user of `AUTH user password`); a user the file does not list
//! may do nothing. Node certificates may always do everything: nodes are the store.
//!
//! ```toml
//! [users.alice]
//! password = "for the Redis port"     # optional: AUTH alice <password>
//! grants = [
//!   { prefix = "tenant-a/", rights = ["read", "write", "call"] },
//!   { prefix = "shared/", rights = ["read"] },
//! ]
//!
//! [users.ops]
//! grants = [{ prefix = "", rights = ["read", "write", "admin", "register", "call"] }]
//!
//! [[quotas]]                          # optional: limits per node (see storage::quota)
//! prefix = "tenant-a/"
//! keys = 100000
//! bytes = 104857600
//! ```
//!
//! A right on a prefix covers every key (or function name) that starts with it. The file
//! is read when the node starts; every node of a cluster should be given the same one
//! (each checks the requests it receives, so none has to ask another).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::op::Op;
use crate::storage::Quota;

/// One thing a user may do to keys (or functions) under a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Read keys: get, list, subscribe.
    Read,
    /// Change keys: write, delete, expire.
    Write,
    /// Change how keys are kept: their replication.
    Admin,
    /// Register functions and DAGs whose names start with the prefix.
    Register,
    /// Call functions and DAGs whose names start with the prefix.
    Call,
}

impl Right {
    /// The right's name, as the ACL file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
            Right::Register => "register",
            Right::Call => "call",
        }
    }
}

/// Rights on every key (or function name) that starts with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The prefix (empty: everything).
    pub prefix: String,
    /// What the user may do there.
    pub rights: Vec<Right>,
}

/// A user of the ACL file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The password for the Redis port (`AUTH user password`), if the user may use it.
    #[serde(default)]
    pub password: Option<String>,
    /// What the user may do.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// The users and their grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// The users, by name (a client certificate's name, or a Redis user).
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Limits on what the keys under a prefix hold on each node (see
    /// [`quota`](crate::storage::quota)).
    #[serde(default)]
    pub quotas: Vec<Quota>,
}

impl Acl {
    /// Reads an ACL file; what is wrong with it is said with the file's name.
    pub fn read(path: &Path) -> Result<Acl, AclFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Acl::parse(&text).map_err(|reason| AclFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the TOML form.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let acl: Acl = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, user) in &acl.users {
            if name.is_empty() {
                return Err("a user has an empty name".into());
            }
            if user.password.as_deref() == Some("") {
                return Err(format!(
                    "user '{name}' has an empty password (leave it out if the user may not use the Redis port)"
                ));
            }
        }
        let mut prefixes = std::collections::BTreeSet::new();
        for q in &acl.quotas {
            if q.keys.is_none() && q.bytes.is_none() {
                return Err(format!(
                    "the quota for prefix {:?} sets no limit (give it keys = N, bytes = N or both)",
                    q.prefix
                ));
            }
            if !prefixes.insert(q.prefix.as_str()) {
                return Err(format!("two quotas for prefix {:?}", q.prefix));
            }
        }
        Ok(acl)
    }

    /// What user `name` may do: what its grants say, nothing if the file does not list it.
    pub fn access(&self, name: &str) -> Access {
        Access::User {
            name: name.to_string(),
            grants: self
                .users
                .get(name)
                .map(|u| u.grants.clone())
                .unwrap_or_default(),
        }
    }

    /// The access of `name` if `password` is its Redis password.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Option<Access> {
        let user = self.users.get(name)?;
        let expected = user.password.as_deref()?;
        // Compared in constant time, so the time taken says nothing of the password.
        let same = expected.len() == password.len()
            && expected
                .bytes()
                .zip(password)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| self.access(name))
    }
}

/// The right an operation needs on its key.
pub fn right_of(op: &Op) -> Right {
    match op {
        Op::Get { .. } | Op::GetAll { .. } | Op::Raw { .. } | Op::Probe { .. } => Right::Read,
        Op::Write { .. } | Op::Delete { .. } | Op::Expire { .. } => Right::Write,
    }
}

/// Why an ACL file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a valid ACL.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// What one connection may do. It travels with a function call's session from executor to
/// executor (between nodes only), so functions run with their caller's rights everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Everything: a node, or any client where no ACL is configured.
    #[default]
    All,
    /// What the ACL grants user `name`.
    User {
        /// The user's name.
        name: String,
        /// Its grants (none: it may do nothing).
        grants: Vec<Grant>,
    },
}

impl Access {
    /// Whether `right` on `key` (or function name) is granted.
    pub fn allows(&self, right: Right, key: &[u8]) -> bool {
        match self {
            Access::All => true,
            Access::User { grants, .. } => grants
                .iter()
                .any(|g| key.starts_with(g.prefix.as_bytes()) && g.rights.contains(&right)),
        }
    }

    /// `Ok` if `right` on `key` is granted, else why not.
    pub fn check(&self, right: Right, key: &[u8]) -> Result<(), Denied> {
        if self.allows(right, key) {
            return Ok(());
        }
        let user = match self {
            Access::User { name, .. } => name.clone(),
            Access::All => String::new(),
        };
        Err(Denied {
            user,
            right,
            key: String::from_utf8_lossy(key).into_owned(),
        })
    }

    /// The prefixes where `right` is granted (`None`: everywhere).
    pub fn prefixes(&self, right: Right) -> Option<Vec<&str>> {
        match self {
            Access::All => None,
            Access::User { grants, .. } => Some(
                grants
                    .iter()
                    .filter(|g| g.rights.contains(&right))
                    .map(|g| g.prefix.as_str())
                    .collect(),
            ),
        }
    }

    /// `Ok` if every operation of a batch is granted, else why the first that is not is
    /// refused.
    pub fn check_ops(&self, ops: &[Op]) -> Result<(), Denied> {
        if matches!(self, Access::All) {
            return Ok(());
        }
        ops.iter()
            .try_for_each(|op| self.check(right_of(op), op.key()))
    }

    /// Whether `key` may be listed (read).
    pub fn lists(&self, key: &[u8]) -> bool {
        self.allows(Right::Read, key)
    }

    /// The user's name (`None` for [`Access::All`]).
    pub fn user(&self) -> Option<&str> {
        match self {
            Access::All => None,
            Access::User { name, .. } => Some(name),
        }
    }
}

/// A refusal: the user has no such right on the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("user '{user}' may not {} '{key}' (no grant of '{}' on a prefix of it in the ACL)", verb(*right), right.name())]
pub struct Denied {
    /// The user.
    pub user: String,
    /// The right missing.
    pub right: Right,
    /// The key or function name.
    pub key: String,
}

fn verb(right: Right) -> &'static str {
    match right {
        Right::Read => "read",
        Right::Write => "write",
        Right::Admin => "change the replication of",
        Right::Register => "register",
        Right::Call => "call",
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const FILE: &str = r#"
        [users.alice]
        password = "a-secret"
        grants = [
          { prefix = "tenant-a/", rights = ["read", "write", "call"] },
          { prefix = "shared/", rights = ["read"] },
        ]
        [users.ops]
        grants = [{ prefix = "", rights = ["read", "write", "admin", "register", "call"] }]
    "#;

    #[test]
    fn grants_cover_their_prefixes_and_nothing_else() {
        let acl = Acl::parse(FILE).unwrap();
        let alice = acl.access("alice");
        assert!(alice.allows(Right::Write, b"tenant-a/cart"));
        assert!(alice.allows(Right::Read, b"shared/prices"));
        assert!(!alice.allows(Right::Write, b"shared/prices"));
        assert!(!alice.allows(Right::Read, b"tenant-b/cart"));
        assert!(!alice.allows(Right::Admin, b"tenant-a/cart"));
        let err = alice.check(Right::Read, b"tenant-b/cart").unwrap_err();
        assert_eq!(
            err.to_string(),
            "user 'alice' may not read 'tenant-b/cart' (no grant of 'read' on a prefix of it in the ACL)"
        );
        assert!(acl.access("ops").allows(Right::Admin, b"anything"));
        // A user the file does not list may do nothing.
        assert!(!acl.access("mallory").allows(Right::Read, b""));
        assert!(Access::All.allows(Right::Admin, b"x"));
        assert_eq!(
            alice.prefixes(Right::Read),
            Some(vec!["tenant-a/", "shared/"])
        );
    }

    #[test]
    fn passwords_authenticate_only_their_user() {
        let acl = Acl::parse(FILE).unwrap();
        assert_eq!(
            acl.authenticate("alice", b"a-secret")
                .and_then(|a| a.user().map(String::from)),
            Some("alice".to_string())
        );
        assert!(acl.authenticate("alice", b"a-secreT").is_none());
        assert!(acl.authenticate("alice", b"").is_none());
        // ops has no password: not on the Redis port.
        assert!(acl.authenticate("ops", b"").is_none());
        assert!(acl.authenticate("nobody", b"a-secret").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let err =
            Acl::parse("[users.a]\ngrants = [{ prefix = \"\", rights = [\"fly\"] }]").unwrap_err();
        assert!(err.contains("fly"), "{err}");
        let err = Acl::parse("[users.a]\npassword = \"\"").unwrap_err();
        assert!(err.contains("empty password"), "{err}");
        assert!(Acl::parse("[users.a]\ncolour = 1").is_err());
        assert_eq!(Acl::parse("").unwrap(), Acl::default());
    }
}
