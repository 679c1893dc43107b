//! What the benchmark binaries share: choosing parts from the command line, and running them.

use std::future::Future;
use std::pin::Pin;

/// One part of a benchmark, not yet started.
pub type Part = Pin<Box<dyn Future<Output = ()>>>;

/// Runs each `(name, part)` the command line asks for (all of them when it names none; a
/// name is chosen when it contains an argument), one after another on one runtime.
pub fn run_parts(parts: Vec<(&str, Part)>) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, part) in parts {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            rt.block_on(part);
        }
    }
}
