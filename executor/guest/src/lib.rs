//! Write calm functions in plain Rust.
//!
//! A calm function is a WebAssembly module that calm's executors run next to the data.
//! With this crate it is an ordinary Rust function from its arguments to its result,
//! exported with [`function!`]:
//!
//! ```ignore
//! fn increment(args: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
//!     let x: i64 = calm_guest::text(&args[0])?.trim().parse().map_err(|_| "not an integer")?;
//!     Ok((x + 1).to_string().into_bytes())
//! }
//! calm_guest::function!(increment);
//! ```
//!
//! Build it for `wasm32-unknown-unknown` as a `cdylib` (see `scripts/build-guests`), then
//! `calm fn register increment increment.wasm`.
//!
//! A function sees only what the host gives it: its arguments, [`get`] and [`put`] of keys
//! through the node's cache (under the call's consistency mode; writes are stored when the
//! whole call succeeds), and [`log`]. No files, sockets or clocks. Each call has a fuel,
//! memory and time budget; a function that exceeds one is stopped and its caller gets a
//! typed error.

#[link(wasm_import_module = "calm")]
unsafe extern "C" {
    fn arg_count() -> i32;
    fn arg_len(i: i32) -> i32;
    fn arg_read(i: i32, dst: *mut u8) -> i32;
    #[link_name = "get"]
    fn host_get(key: *const u8, key_len: i32) -> i64;
    fn get_read(dst: *mut u8);
    #[link_name = "put"]
    fn host_put(key: *const u8, key_len: i32, value: *const u8, value_len: i32);
    #[link_name = "log"]
    fn host_log(ptr: *const u8, len: i32);
    fn set_result(ptr: *const u8, len: i32);
}

/// The call's arguments: for a source function the caller's (a `ref:KEY` argument arrives
/// as the key's value), otherwise its predecessors' outputs in the order of their edges.
pub fn args() -> Vec<Vec<u8>> {
    // SAFETY: the host API copies into buffers of the length it reported.
    unsafe {
        (0..arg_count())
            .map(|i| {
                let len = usize::try_from(arg_len(i)).unwrap_or(0);
                let mut buf = vec![0u8; len];
                arg_read(i, buf.as_mut_ptr());
                buf
            })
            .collect()
    }
}

/// Reads a key through the node's cache: `None` when it is not found.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: the host reads `key` within its length and writes exactly the length it
    // returned into the buffer.
    unsafe {
        let len = host_get(key.as_ptr(), key.len() as i32);
        let len = usize::try_from(len).ok()?;
        let mut buf = vec![0u8; len];
        get_read(buf.as_mut_ptr());
        Some(buf)
    }
}

/// Writes a key (last writer wins; with the causal mode, recording what the call read).
/// Stored once the whole call has succeeded.
pub fn put(key: &[u8], value: &[u8]) {
    // SAFETY: the host reads both slices within their lengths.
    unsafe { host_put(key.as_ptr(), key.len() as i32, value.as_ptr(), value.len() as i32) }
}

/// Logs a line on the node (and, if the function then fails, in the caller's error).
pub fn log(line: &str) {
    // SAFETY: the host reads the string within its length.
    unsafe { host_log(line.as_ptr(), line.len() as i32) }
}

/// An argument as UTF-8 text.
pub fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "the argument is not UTF-8 text".to_string())
}

/// Runs `f` on the call's arguments and hands its result to the host; an error is logged
/// and reported as failure code 1. Used by [`function!`].
pub fn run_with(f: fn(Vec<Vec<u8>>) -> Result<Vec<u8>, String>) -> i32 {
    match f(args()) {
        Ok(result) => {
            // SAFETY: the host reads the result within its length.
            unsafe { set_result(result.as_ptr(), result.len() as i32) };
            0
        }
        Err(message) => {
            log(&message);
            1
        }
    }
}

/// Exports `f: fn(Vec<Vec<u8>>) -> Result<Vec<u8>, String>` as the module's calm function.
#[macro_export]
macro_rules! function {
    ($f:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn run() -> i32 {
            $crate::run_with($f)
        }
    };
}
