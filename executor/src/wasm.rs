//! WebAssembly functions: compiled once per module, run in a sandbox with a capability
//! API, and limited in fuel, memory and time.
//!
//! # The guest interface
//!
//! A calm function is a module that exports `memory` and `run: () -> i32` (0 for success;
//! anything else is a failure reported to the caller with the code). It may import only
//! these functions from the module `calm` (no WASI: no files, sockets or clocks):
//!
//! | import | type | what |
//! |---|---|---|
//! | `arg_count` | `() -> i32` | how many arguments the call has |
//! | `arg_len` | `(i) -> i32` | the length of argument `i` (-1: no such argument) |
//! | `arg_read` | `(i, dst) -> i32` | copies argument `i` to `dst` (-1: no such argument) |
//! | `get` | `(key, key_len) -> i64` | reads a key through the node's cache: its length, or -1 if not found |
//! | `get_read` | `(dst)` | copies the value the last `get` found to `dst` |
//! | `put` | `(key, key_len, value, value_len)` | writes a key (stored when the whole call succeeds) |
//! | `log` | `(ptr, len)` | a log line (UTF-8) |
//! | `set_result` | `(ptr, len)` | the call's result (default: empty) |
//!
//! Pointers are offsets into the exported memory; a pointer or length outside it ends the
//! call with [`FnError::BadGuestCall`]. The guest SDK (`executor/guest`) wraps all of this.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{
    Caller, Config, Engine, Extern, ExternType, InstancePre, Linker, Module, ResourceLimiter,
    Store, Trap, ValType,
};

use crate::error::FnError;
use crate::host::Host;

/// Limits of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) per call (default 2 billion).
    pub fuel: u64,
    /// Linear memory per call, bytes (default 64 MiB).
    pub memory_bytes: usize,
    /// Wall-clock time per call, milliseconds (default 10 s).
    pub deadline_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 2_000_000_000,
            memory_bytes: 64 << 20,
            deadline_ms: 10_000,
        }
    }
}

/// How often the engine's epoch advances (the deadline's granularity).
const TICK: Duration = Duration::from_millis(5);

/// The imports calm gives guests: `(name, parameters, results)`.
const HOST_API: [(&str, usize, usize); 8] = [
    ("arg_count", 0, 1),
    ("arg_len", 1, 1),
    ("arg_read", 2, 1),
    ("get", 2, 1),
    ("get_read", 1, 0),
    ("put", 4, 0),
    ("log", 2, 0),
    ("set_result", 2, 0),
];

/// Compiles and runs modules. One per node; cheap to clone.
#[derive(Clone)]
pub struct WasmRuntime {
    engine: Engine,
    linker: Arc<Linker<CallCtx>>,
    compiled: Arc<Mutex<HashMap<u64, Compiled>>>,
    ticker: Arc<Ticker>,
}

struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A module compiled and linked against the host API, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pre: InstancePre<CallCtx>,
}

/// What a call's store holds: the host side of the call.
struct CallCtx {
    name: String,
    host: Box<dyn Host>,
    args: Vec<Bytes>,
    last: Option<Bytes>,
    last_log: String,
    result: Bytes,
    memory_limit: usize,
    memory_exceeded: bool,
    /// An error a host function hit (it traps the guest; this is what the caller sees).
    error: Option<FnError>,
}

impl ResourceLimiter for CallCtx {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The hash that names a module's compiled code.
pub fn module_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

impl WasmRuntime {
    /// A runtime with fuel metering and epoch deadlines, and its epoch ticker thread.
    pub fn new() -> Result<WasmRuntime, FnError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| FnError::NotWasm {
            name: "(engine)".into(),
            reason: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("calm-wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| FnError::Store(format!("cannot start the epoch thread: {e}")))?;
        }
        let linker = Arc::new(host_api(&engine)?);
        Ok(WasmRuntime {
            engine,
            linker,
            compiled: Arc::new(Mutex::new(HashMap::new())),
            ticker: Arc::new(Ticker(stop)),
        })
    }

    /// Compiles `bytes` (binary or text WebAssembly) and checks it is a calm function:
    /// exports `memory` and `run: () -> i32`, imports only calm's host API. Compiled code
    /// is kept by module hash, so a module is compiled once.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled, FnError> {
        let hash = module_hash(bytes);
        if let Some(m) = self.lock().get(&hash) {
            return Ok(m.clone());
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| {
            let first = format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            FnError::NotWasm {
                name: name.to_string(),
                reason: if bytes.starts_with(b"\0asm") {
                    first
                } else {
                    format!(
                        "neither a binary module (no \\0asm header) nor WebAssembly text ({first})"
                    )
                },
            }
        })?;
        check_interface(name, &module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| FnError::NotWasm {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        let compiled = Compiled { pre };
        self.lock().insert(hash, compiled.clone());
        Ok(compiled)
    }

    /// How many distinct modules are compiled.
    pub fn compiled_modules(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Compiled>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `module`'s `run` with `args` against `host`, within `limits`. Returns the
    /// result and the host (with what the call read and wrote).
    pub fn run(
        &self,
        name: &str,
        module: &Compiled,
        args: Vec<Bytes>,
        host: Box<dyn Host>,
        limits: Limits,
    ) -> (Result<Bytes, FnError>, Box<dyn Host>) {
        let _keep_ticking = &self.ticker;
        let ctx = CallCtx {
            name: name.to_string(),
            host,
            args,
            last: None,
            last_log: String::new(),
            result: Bytes::new(),
            memory_limit: limits.memory_bytes,
            memory_exceeded: false,
            error: None,
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| ctx as &mut dyn ResourceLimiter);
        let _ = store.set_fuel(limits.fuel);
        let ticks = limits.deadline_ms.div_ceil(TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let outcome = module
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.get_typed_func::<(), i32>(&mut store, "run"))
            .and_then(|run| run.call(&mut store, ()));
        let ctx = store.into_data();
        let result = match outcome {
            Ok(0) => Ok(ctx.result.clone()),
            Ok(code) => Err(FnError::GuestFailed {
                name: name.to_string(),
                code,
                message: ctx.last_log.clone(),
            }),
            Err(e) => Err(classify(name, &ctx, &limits, e)),
        };
        (result, ctx.host)
    }
}

fn classify(name: &str, ctx: &CallCtx, limits: &Limits, e: wasmtime::Error) -> FnError {
    if let Some(err) = &ctx.error {
        return err.clone();
    }
    let name = name.to_string();
    if ctx.memory_exceeded {
        return FnError::MemoryLimit {
            name,
            limit: limits.memory_bytes,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FnError::OutOfFuel {
            name,
            fuel: limits.fuel,
        },
        Some(Trap::Interrupt) => FnError::DeadlineExceeded {
            name,
            ms: limits.deadline_ms,
        },
        Some(trap) => FnError::Trap {
            name,
            message: trap.to_string(),
        },
        None => FnError::Trap {
            name,
            message: format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        },
    }
}

fn check_interface(name: &str, module: &Module) -> Result<(), FnError> {
    for import in module.imports() {
        let known = HOST_API.iter().any(|(n, params, results)| {
            import.module() == "calm"
                && import.name() == *n
                && matches!(import.ty(), ExternType::Func(f)
                    if f.params().len() == *params
                        && f.results().len() == *results
                        && f.params().chain(f.results()).all(|t| matches!(t, ValType::I32 | ValType::I64)))
        });
        if !known {
            return Err(FnError::ForbiddenImport {
                name: name.to_string(),
                import: format!("{}::{}", import.module(), import.name()),
            });
        }
    }
    let missing = |what: &str| FnError::MissingExport {
        name: name.to_string(),
        what: what.to_string(),
    };
    match module.get_export("run") {
        Some(ExternType::Func(f))
            if f.params().len() == 0
                && f.results().len() == 1
                && f.results().all(|t| matches!(t, ValType::I32)) => {}
        _ => return Err(missing("`run: () -> i32`")),
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err(missing("`memory`")),
    }
}

/// Fails the call with `what` as the reason (the guest traps; the caller sees this).
fn fail(caller: &mut Caller<'_, CallCtx>, what: &str) -> wasmtime::Error {
    let name = caller.data().name.clone();
    caller.data_mut().error = Some(FnError::BadGuestCall {
        name,
        what: what.to_string(),
    });
    wasmtime::Error::msg(what.to_string())
}

fn guest_bytes(caller: &mut Caller<'_, CallCtx>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(fail(caller, "memory (none exported)"));
    };
    let (Ok(start), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return Err(fail(caller, "pointer or length (negative)"));
    };
    match memory.data(&*caller).get(start..start.saturating_add(len)) {
        Some(b) => Ok(b.to_vec()),
        None => Err(fail(caller, "pointer or length (outside its memory)")),
    }
}

fn write_guest(caller: &mut Caller<'_, CallCtx>, dst: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(fail(caller, "memory (none exported)"));
    };
    let Ok(start) = usize::try_from(dst) else {
        return Err(fail(caller, "destination pointer (negative)"));
    };
    match memory
        .data_mut(&mut *caller)
        .get_mut(start..start.saturating_add(bytes.len()))
    {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            Ok(())
        }
        None => Err(fail(caller, "destination pointer (outside its memory)")),
    }
}

fn host_error(caller: &mut Caller<'_, CallCtx>, e: FnError) -> wasmtime::Error {
    let message = e.to_string();
    caller.data_mut().error = Some(e);
    wasmtime::Error::msg(message)
}

fn host_api(engine: &Engine) -> Result<Linker<CallCtx>, FnError> {
    let mut linker: Linker<CallCtx> = Linker::new(engine);
    let link = |e: wasmtime::Error| FnError::Store(format!("cannot link the host API: {e}"));
    linker
        .func_wrap("calm", "arg_count", |caller: Caller<'_, CallCtx>| -> i32 {
            caller.data().args.len() as i32
        })
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "arg_len",
            |caller: Caller<'_, CallCtx>, i: i32| -> i32 {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| caller.data().args.get(i))
                    .map_or(-1, |a| a.len() as i32)
            },
        )
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "arg_read",
            |mut caller: Caller<'_, CallCtx>, i: i32, dst: i32| -> wasmtime::Result<i32> {
                let Some(arg) = usize::try_from(i)
                    .ok()
                    .and_then(|i| caller.data().args.get(i).cloned())
                else {
                    return Ok(-1);
                };
                write_guest(&mut caller, dst, &arg)?;
                Ok(0)
            },
        )
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "get",
            |mut caller: Caller<'_, CallCtx>, kp: i32, kl: i32| -> wasmtime::Result<i64> {
                let key = guest_bytes(&mut caller, kp, kl)?;
                match caller.data_mut().host.get(&key) {
                    Ok(Some(v)) => {
                        let len = v.len() as i64;
                        caller.data_mut().last = Some(v);
                        Ok(len)
                    }
                    Ok(None) => {
                        caller.data_mut().last = None;
                        Ok(-1)
                    }
                    Err(e) => Err(host_error(&mut caller, e)),
                }
            },
        )
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "get_read",
            |mut caller: Caller<'_, CallCtx>, dst: i32| -> wasmtime::Result<()> {
                let last = caller.data().last.clone().unwrap_or_default();
                write_guest(&mut caller, dst, &last)
            },
        )
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "put",
            |mut caller: Caller<'_, CallCtx>,
             kp: i32,
             kl: i32,
             vp: i32,
             vl: i32|
             -> wasmtime::Result<()> {
                let key = guest_bytes(&mut caller, kp, kl)?;
                let value = guest_bytes(&mut caller, vp, vl)?;
                match caller.data_mut().host.put(&key, &value) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(host_error(&mut caller, e)),
                }
            },
        )
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "log",
            |mut caller: Caller<'_, CallCtx>, p: i32, l: i32| -> wasmtime::Result<()> {
                let line = guest_bytes(&mut caller, p, l.min(4096))?;
                let line = String::from_utf8_lossy(&line).into_owned();
                caller.data_mut().host.log(&line);
                caller.data_mut().last_log = line;
                Ok(())
            },
        )
        .map_err(link)?;
    linker
        .func_wrap(
            "calm",
            "set_result",
            |mut caller: Caller<'_, CallCtx>, p: i32, l: i32| -> wasmtime::Result<()> {
                let result = guest_bytes(&mut caller, p, l)?;
                caller.data_mut().result = Bytes::from(result);
                Ok(())
            },
        )
        .map_err(link)?;
    Ok(linker)
}
