//! The host side of a call: what a function can do (read, write, log), for native and
//! WebAssembly functions alike.

use bytes::Bytes;
use calm_cache::{Backend, Cache};
use tokio::runtime::Handle;

use crate::error::FnError;
use crate::session::Session;

/// What a running function can ask of its executor. Reads go through the node's cache
/// under the call's consistency mode; writes are buffered until the call succeeds.
pub trait Host: Send {
    /// Reads a key (`None`: not found).
    fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, FnError>;
    /// Writes a key (stored when the whole call succeeds).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), FnError>;
    /// A log line.
    fn log(&mut self, line: &str);
    /// The call's session after the function ran.
    fn into_session(self: Box<Self>) -> Session;
}

/// The largest key a function may name.
pub const MAX_KEY: usize = 64 << 10;

/// The host of one function run on an executor thread: the call's session over the node's
/// cache. Executor threads are not async: reads that miss the cache wait for the owners.
pub struct SessionHost<B: Backend> {
    /// The function.
    pub name: String,
    /// The call's session.
    pub session: Session,
    /// The node's cache.
    pub cache: Cache<B>,
    /// The runtime the cache's requests run on.
    pub handle: Handle,
}

impl<B: Backend> Host for SessionHost<B> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, FnError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(FnError::BadGuestCall {
                name: self.name.clone(),
                what: format!("key of {} bytes (keys are 1 to {MAX_KEY} bytes)", key.len()),
            });
        }
        let key = Bytes::copy_from_slice(key);
        self.handle.block_on(self.session.read(&self.cache, &key))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), FnError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(FnError::BadGuestCall {
                name: self.name.clone(),
                what: format!("key of {} bytes (keys are 1 to {MAX_KEY} bytes)", key.len()),
            });
        }
        self.session
            .write(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value))
    }

    fn log(&mut self, line: &str) {
        tracing::info!(function = %self.name, "{line}");
    }

    fn into_session(self: Box<Self>) -> Session {
        self.session
    }
}
