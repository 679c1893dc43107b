//! Services a node serves next to its store: named request handlers that other crates
//! register (the function executors, for one), reached by clients with
//! [`Client::call_service`](crate::Client::call_service).
//!
//! The node only carries the bytes: a service decodes its own requests and answers with
//! bytes or a message that says what was wrong.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::acl::Access;

/// What a service answers: bytes, or why it could not.
pub type ServiceResult = Result<Bytes, String>;

/// A boxed future of a service's answer.
pub type ServiceFuture = Pin<Box<dyn Future<Output = ServiceResult> + Send>>;

/// A request handler.
pub trait Service: Send + Sync {
    /// Answers one request from a caller with `access` (what the ACL grants it: a service
    /// that touches keys or names for its caller checks them against it).
    fn call(&self, access: &Access, body: Bytes) -> ServiceFuture;
}

/// The services a node serves, by name.
#[derive(Clone, Default)]
pub struct Services {
    by_name: Arc<RwLock<HashMap<String, Arc<dyn Service>>>>,
}

impl Services {
    /// Serves `service` as `name` (replacing any service of that name).
    pub fn register(&self, name: &str, service: Arc<dyn Service>) {
        self.by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), service);
    }

    /// Answers a request for the service `name` from a caller with `access`.
    pub fn call(&self, name: &str, access: &Access, body: Bytes) -> ServiceFuture {
        let service = self
            .by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        match service {
            Some(s) => s.call(access, body),
            None => {
                let message = format!(
                    "this node serves no '{name}' service (is it a calm server started with executors?)"
                );
                Box::pin(async move { Err(message) })
            }
        }
    }
}
