//! One interface to the store, in-process or over the network.

use std::future::Future;

use bytes::Bytes;

use crate::error::KvsError;
use crate::metrics::StatsSnapshot;
use crate::op::{Op, OpResult, Reply};
use crate::value::{CustomLattice, ReadValue, Value, Write};

/// A calm store: [`EmbeddedStore`](crate::EmbeddedStore) in-process, or [`Client`](crate::Client) over QUIC.
/// Applications and the benchmark harness are written against this trait and switch
/// between the two freely.
///
/// [`execute`](Store::execute) runs a batch of operations in one round trip; the typed
/// methods are one-operation conveniences over it.
pub trait Store: Send + Sync {
    /// Runs `ops` in one round trip; one result per operation, in order. Operations on the
    /// same key run in the order given.
    fn execute(&self, ops: Vec<Op>)
    -> impl Future<Output = Result<Vec<OpResult>, KvsError>> + Send;

    /// The node's counters and latency percentiles.
    fn stats(&self) -> impl Future<Output = Result<StatsSnapshot, KvsError>> + Send;

    /// Runs one operation.
    fn run(&self, op: Op) -> impl Future<Output = Result<Reply, KvsError>> + Send {
        async move {
            let mut results = self.execute(vec![op]).await?;
            match (results.pop(), results.is_empty()) {
                (Some(result), true) => Ok(result?),
                _ => Err(KvsError::UnexpectedReply(
                    "expected exactly one result for one operation".into(),
                )),
            }
        }
    }

    /// Reads a key: `None` when it is not found (never written, or deleted).
    fn get(
        &self,
        key: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Option<ReadValue>, KvsError>> + Send {
        read(self, key.into(), false)
    }

    /// Reads a key with its version metadata (timestamp, vector clock).
    fn get_with_meta(
        &self,
        key: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Option<ReadValue>, KvsError>> + Send {
        read(self, key.into(), true)
    }

    /// Applies a write of any kind.
    fn write(
        &self,
        key: impl Into<Bytes>,
        write: Write,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        let op = Op::Write {
            key: key.into(),
            write,
        };
        async move {
            match self.run(op).await? {
                Reply::Written => Ok(()),
                other => Err(unexpected(&other)),
            }
        }
    }

    /// Sets last-writer-wins bytes.
    fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        self.write(key, Write::Lww(value.into()))
    }

    /// Raises an integer to at least `n`.
    fn put_max(
        &self,
        key: impl Into<Bytes>,
        n: i64,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        self.write(key, Write::Max(n))
    }

    /// Offers `value` at `priority`; the lowest priority wins.
    fn put_priority(
        &self,
        key: impl Into<Bytes>,
        priority: i64,
        value: impl Into<Bytes>,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        self.write(
            key,
            Write::Priority {
                priority,
                value: value.into(),
            },
        )
    }

    /// Writes a causal register (concurrent writes are all kept).
    fn put_causal(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        self.write(key, Write::SingleCausal(value.into()))
    }

    /// Adds members to a grow-only set.
    fn set_add(
        &self,
        key: impl Into<Bytes>,
        members: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        let members = members.into_iter().map(Into::into).collect();
        self.write(key, Write::SetAdd(members))
    }

    /// Adds members to an add-wins set.
    fn orset_add(
        &self,
        key: impl Into<Bytes>,
        members: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        let members = members.into_iter().map(Into::into).collect();
        self.write(key, Write::OrSetAdd(members))
    }

    /// Removes members from an add-wins set.
    fn orset_remove(
        &self,
        key: impl Into<Bytes>,
        members: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        let members = members.into_iter().map(Into::into).collect();
        self.write(key, Write::OrSetRemove(members))
    }

    /// Adds `by` (negative to subtract) to a counter.
    fn increment(
        &self,
        key: impl Into<Bytes>,
        by: i64,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        self.write(key, Write::Increment(by))
    }

    /// Merges a whole lattice value into the key.
    fn merge(
        &self,
        key: impl Into<Bytes>,
        value: Value,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        self.write(key, Write::Merge(value))
    }

    /// Merges `value` into the key, a value of the application's own lattice `T` (a delta
    /// or a whole state; see [`custom`](crate::value::custom)). The nodes must have been
    /// started with `T`'s kind ([`NodeConfig::kinds`](crate::NodeConfig::kinds)); merging
    /// is idempotent, so a write whose outcome is unknown may be sent again.
    fn merge_custom<T: CustomLattice>(
        &self,
        key: impl Into<Bytes>,
        value: &T,
    ) -> impl Future<Output = Result<(), KvsError>> + Send {
        let write = Write::custom(value);
        let key = key.into();
        async move { self.write(key, write?).await }
    }

    /// Reads a key holding the application's lattice `T`: `None` when it is not found; an
    /// error when it holds another kind.
    fn get_custom<T: CustomLattice>(
        &self,
        key: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Option<T>, KvsError>> + Send {
        let key = key.into();
        async move {
            match self.get(key).await? {
                None => Ok(None),
                Some(read) => Ok(Some(read.custom::<T>()?)),
            }
        }
    }

    /// Deletes a key; returns whether it had a visible value.
    fn delete(&self, key: impl Into<Bytes>) -> impl Future<Output = Result<bool, KvsError>> + Send {
        let op = Op::Delete { key: key.into() };
        async move {
            match self.run(op).await? {
                Reply::Deleted { existed } => Ok(existed),
                other => Err(unexpected(&other)),
            }
        }
    }

    /// Gives a key a deadline (milliseconds since the Unix epoch) after which it reads as
    /// absent, or with `None` takes its deadline away; returns whether the deadline changed
    /// (a key not found changes nothing).
    fn expire(
        &self,
        key: impl Into<Bytes>,
        at_ms: Option<u64>,
    ) -> impl Future<Output = Result<bool, KvsError>> + Send {
        let op = Op::Expire {
            key: key.into(),
            at_ms,
        };
        async move {
            match self.run(op).await? {
                Reply::Expiry { changed } => Ok(changed),
                other => Err(unexpected(&other)),
            }
        }
    }
}

fn unexpected(reply: &Reply) -> KvsError {
    KvsError::UnexpectedReply(format!("{reply:?}"))
}

async fn read<S: Store + ?Sized>(
    store: &S,
    key: Bytes,
    meta: bool,
) -> Result<Option<ReadValue>, KvsError> {
    match store.run(Op::Get { key, meta }).await? {
        Reply::Value(v) => Ok(v),
        other => Err(unexpected(&other)),
    }
}
