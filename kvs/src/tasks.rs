//! Running tokio tasks side by side, and the wall clock the shells read.

/// Milliseconds since the Unix epoch, by this machine's clock: what the shells hand the
/// sans-IO cores as "now" (HLC stamps, deadlines, timers).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs futures concurrently on the runtime and collects their outputs in order (a task
/// that panicked is left out).
pub async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
