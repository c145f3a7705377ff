//! The wasmtime runtime: one [`Engine`] per kubelet with epoch interruption, compiled code
//! cached on disk by digest + engine settings (a cached start never compiles), and one `Store`
//! per container run. WASI p1 core modules and p2 command components are told apart by their
//! header bytes; a component exporting `wasi:http/incoming-handler` is served instead
//! ([`http`]: one instance per request, pooling allocator).

pub mod http;
pub mod logs;
pub mod probe;
pub mod sandbox;
pub mod sockets;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::network::http::OutgoingHooks;
use crate::network::policy::PodNetwork;

use logs::LogFile;
use sandbox::MemoryLimiter;

/// How often the epoch advances: the granularity of yielding and of stopping a busy guest.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Exit code reported for a container stopped by the kubelet or killed for memory (SIGKILL).
pub const EXIT_KILLED: i32 = 137;
/// Exit code reported for a trap (as `wasmtime run` does: 128 + SIGABRT).
pub const EXIT_TRAP: i32 = 134;

/// Errors of the runtime. `Invalid` and `Link` become `CreateContainerError`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("creating the wasmtime engine: {0}")]
    Engine(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid wasm: {0}")]
    Invalid(String),
    #[error("cannot link the guest against WASI: {0}")]
    Link(String),
    #[error("compile task failed: {0}")]
    Join(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a wasm binary is, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (WASI preview 1).
    Module,
    /// A component (WASI preview 2 `wasi:cli/command`).
    Component,
}

/// Detects a core module or a component from the first 8 bytes.
pub fn detect(bytes: &[u8]) -> Result<WasmKind, RuntimeError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(WasmKind::Module),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(WasmKind::Component),
        _ => Err(RuntimeError::Invalid(
            "not a WebAssembly binary (expected the \\0asm header of a module or component)".into(),
        )),
    }
}

/// What one container run gets: argv, env and limits.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `resources.limits.memory` in bytes.
    pub memory_limit: Option<u64>,
    /// `resources.limits.cpu` in millicores: a guest below 1000m sleeps between its epoch
    /// slices in proportion (wall-clock slices, so the quota is approximate).
    pub cpu_millis: Option<u64>,
    /// Where the run reports what it uses (shared with `/stats/summary`).
    pub usage: Arc<sandbox::Usage>,
    /// The container's volumeMounts as preopened directories.
    pub preopens: Vec<sandbox::Preopen>,
    /// The pod's network (address, socket policy, Service names); `None`: no sockets and no
    /// outgoing HTTP.
    pub network: Option<Arc<PodNetwork>>,
    /// Where a `wasi:http/incoming-handler` component is served (podIP:containerPort).
    pub listen: Vec<SocketAddr>,
    /// Cancelled when the pod is being deleted: an HTTP container stops accepting and lets
    /// in-flight requests finish (`stop` of [`Runtime::run`] ends everything at once).
    pub drain: CancellationToken,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    /// `Completed`, `Error` or `OOMKilled`.
    pub reason: &'static str,
    pub message: Option<String>,
}

/// A compiled, linked guest, ready to instantiate.
#[derive(Clone)]
pub enum Program {
    Module(InstancePre<P1State>),
    Component(CommandPre<P2State>),
    /// A `wasi:http/incoming-handler` component: served, one instance per request.
    Http(ProxyPre<P2State>),
}

/// Store data of a p1 module.
pub struct P1State {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// Store data of a p2 component.
pub struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    http: WasiHttpCtx,
    hooks: OutgoingHooks,
    network: Option<Arc<PodNetwork>>,
}

impl P2State {
    fn new(spec: &ContainerSpec, log: &LogFile, limiter: MemoryLimiter) -> Self {
        Self {
            ctx: sandbox::grants(spec, log).build(),
            table: ResourceTable::new(),
            limiter,
            http: WasiHttpCtx::new(),
            hooks: OutgoingHooks::new(spec.network.clone(), Some(log.clone())),
            network: spec.network.clone(),
        }
    }
}

impl WasiHttpView for P2State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

struct Inner {
    engine: Engine,
    p1: Linker<P1State>,
    p2: wasmtime::component::Linker<P2State>,
    cache_dir: PathBuf,
    engine_key: String,
    loaded: Mutex<HashMap<String, Program>>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The kubelet's wasmtime runtime (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// Builds the engine and linkers, and starts the epoch ticker; compiled code is cached in
    /// `cache_dir`. The instance pool has [`POOL_SLOTS`] slots.
    pub fn new(cache_dir: &Path) -> Result<Self, RuntimeError> {
        Self::with_pool_slots(cache_dir, POOL_SLOTS)
    }

    /// As [`Runtime::new`], with `slots` instance slots in the pool (concurrently running
    /// command containers plus in-flight HTTP requests).
    pub fn with_pool_slots(cache_dir: &Path, slots: u32) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.allocation_strategy(pooling(slots.max(1)));
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut p1 = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1, |s: &mut P1State| &mut s.wasi)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut p2 = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut p2)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        // Outgoing wasi-http for commands and handlers alike (routed by `OutgoingHooks`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut p2)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        // Service names for wasi-sockets guests (and no host DNS); 0.0.0.0 binds the pod IP.
        sockets::shadow(&mut p2).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("epoch ticker: {e}")))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                p1,
                p2,
                cache_dir: cache_dir.to_path_buf(),
                engine_key,
                loaded: Mutex::new(HashMap::new()),
                stop_ticker,
            }),
        })
    }

    /// The engine (shared by every store).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn cached(&self, digest: &str) -> Option<Program> {
        self.inner
            .loaded
            .lock()
            .ok()
            .and_then(|m| m.get(digest).cloned())
    }

    /// The program for the wasm blob `digest` stored at `wasm`: from memory, else from the
    /// on-disk compiled cache, else compiled (off the async threads) and cached.
    pub async fn load(&self, digest: &str, wasm: &Path) -> Result<Program, RuntimeError> {
        if let Some(p) = self.cached(digest) {
            return Ok(p);
        }
        let this = self.clone();
        let digest_owned = digest.to_string();
        let wasm = wasm.to_path_buf();
        let program = tokio::task::spawn_blocking(move || this.load_blocking(&digest_owned, &wasm))
            .await
            .map_err(|e| RuntimeError::Join(e.to_string()))??;
        if let Ok(mut m) = self.inner.loaded.lock() {
            m.insert(digest.to_string(), program.clone());
        }
        Ok(program)
    }

    fn load_blocking(&self, digest: &str, wasm: &Path) -> Result<Program, RuntimeError> {
        let engine = &self.inner.engine;
        let bytes = std::fs::read(wasm).map_err(io_err(wasm))?;
        let kind = detect(&bytes)?;
        let safe_digest = digest.replace(':', "-");
        let compiled = self
            .inner
            .cache_dir
            .join(format!("{safe_digest}-{}.cwasm", self.inner.engine_key));
        let invalid = |e: wasmtime::Error| RuntimeError::Invalid(format!("{e:#}"));
        let link = |e: wasmtime::Error| RuntimeError::Link(format!("{e:#}"));
        match kind {
            WasmKind::Module => {
                // SAFETY: the file was written by `Module::serialize` of an engine with the
                // same compatibility hash (it is in the name) under the kubelet's data dir.
                let module = match unsafe { Module::deserialize_file(engine, &compiled) } {
                    Ok(m) => m,
                    Err(_) => {
                        let m = Module::from_binary(engine, &bytes).map_err(invalid)?;
                        write_cache(&compiled, &m.serialize().map_err(invalid)?)?;
                        m
                    }
                };
                let pre = self.inner.p1.instantiate_pre(&module).map_err(link)?;
                Ok(Program::Module(pre))
            }
            WasmKind::Component => {
                // SAFETY: as above, for components.
                let component = match unsafe { Component::deserialize_file(engine, &compiled) } {
                    Ok(c) => c,
                    Err(_) => {
                        let c = Component::from_binary(engine, &bytes).map_err(invalid)?;
                        write_cache(&compiled, &c.serialize().map_err(invalid)?)?;
                        c
                    }
                };
                let pre = self.inner.p2.instantiate_pre(&component).map_err(link)?;
                if serves_http(engine, &component) {
                    return Ok(Program::Http(ProxyPre::new(pre).map_err(link)?));
                }
                let pre = CommandPre::new(pre).map_err(link)?;
                Ok(Program::Component(pre))
            }
        }
    }

    /// Runs `program` to its end (or until `stop` is cancelled), with output to `log`.
    pub async fn run(
        &self,
        program: &Program,
        spec: &ContainerSpec,
        log: &LogFile,
        stop: &CancellationToken,
    ) -> Exit {
        let engine = &self.inner.engine;
        let grants = || sandbox::grants(spec, log);
        let exit = match program {
            Program::Module(pre) => {
                let state = P1State {
                    wasi: grants().build_p1(),
                    limiter: MemoryLimiter::new(spec.memory_limit, spec.usage.clone()),
                };
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                yield_every_tick(&mut store, spec.cpu_millis);
                let mut drained = false;
                let outcome = {
                    let run = sandbox::metered(&spec.usage, async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await
                    });
                    // Biased: a drain seen together with the stop (a grace period of 0)
                    // still reads as the SIGTERM it stands for.
                    tokio::select! {
                        biased;
                        r = run => Some(r.map(|()| 0)),
                        // WASI has no signals, so a command guest cannot learn it should end:
                        // like a process without a SIGTERM handler, it ends at once.
                        () = spec.drain.cancelled() => {
                            drained = true;
                            None
                        }
                        () = stop.cancelled() => None,
                    }
                };
                terminated(classify(outcome, store.data().limiter.refused), drained)
            }
            Program::Component(pre) => {
                let limiter = MemoryLimiter::new(spec.memory_limit, spec.usage.clone());
                let state = P2State::new(spec, log, limiter);
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                yield_every_tick(&mut store, spec.cpu_millis);
                let mut drained = false;
                let outcome = {
                    let run = sandbox::metered(&spec.usage, async {
                        let command = pre.instantiate_async(&mut store).await?;
                        let result = command.wasi_cli_run().call_run(&mut store).await?;
                        Ok(if result.is_ok() { 0 } else { 1 })
                    });
                    // Biased: a drain seen together with the stop (a grace period of 0)
                    // still reads as the SIGTERM it stands for.
                    tokio::select! {
                        biased;
                        r = run => Some(r),
                        // WASI has no signals, so a command guest cannot learn it should end:
                        // like a process without a SIGTERM handler, it ends at once.
                        () = spec.drain.cancelled() => {
                            drained = true;
                            None
                        }
                        () = stop.cancelled() => None,
                    }
                };
                terminated(classify(outcome, store.data().limiter.refused), drained)
            }
            Program::Http(pre) => http::serve(pre, spec, log, stop).await,
        };
        log.finish();
        exit
    }
}

/// Default instance slots of the pooling allocator: every running command container holds one,
/// every in-flight HTTP request one; an idle HTTP pod none. The kubelet sizes its pool at two
/// slots per pod of `maxPods` (2000 for the default 1000 pods).
pub const POOL_SLOTS: u32 = 2000;

/// The pooling allocator: instances, memories and stacks come from pre-reserved slots (fast
/// per-request instantiation). Each slot reserves 4 GiB of address space (no memory), so
/// 2000 slots take 8 TiB of the 128 TiB a process has.
fn pooling(slots: u32) -> wasmtime::InstanceAllocationStrategy {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_memories(slots)
        .total_stacks(slots)
        // A Rust component has its main core instance plus a few small shims (with tables).
        .total_core_instances(slots.saturating_mul(4))
        .total_tables(slots.saturating_mul(4));
    wasmtime::InstanceAllocationStrategy::Pooling(pool)
}

/// A guest yields to the async runtime at every epoch tick: a busy loop neither starves other
/// pods nor escapes `stop` (the run future is dropped at its next yield). Under a CPU limit
/// below one core it also sleeps after each slice, so it runs `millis`/1000 of the time.
fn yield_every_tick<T>(store: &mut Store<T>, cpu_millis: Option<u64>) {
    store.set_epoch_deadline(1);
    match cpu_millis.filter(|m| *m < 1000) {
        Some(millis) => {
            let millis = u32::try_from(millis.max(1)).unwrap_or(1);
            // Measured, not assumed: the pause is proportional to the time actually run since
            // the last resume, so ticker jitter does not change the share.
            let mut resumed = std::time::Instant::now();
            store.epoch_deadline_callback(move |_| {
                let ran = resumed.elapsed();
                let pause = ran * (1000 - millis) / millis;
                resumed = std::time::Instant::now() + pause;
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::time::sleep(pause)),
                ))
            });
        }
        None => store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1))),
    }
}

/// Whether `component` is served: it exports `wasi:http/incoming-handler` and no
/// `wasi:cli/run` (a command that also handles requests runs as a command).
fn serves_http(engine: &Engine, component: &Component) -> bool {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let has = |prefix: &str| exports.iter().any(|n| n.starts_with(prefix));
    has("wasi:http/incoming-handler@") && !has("wasi:cli/run@")
}

fn write_cache(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Exit code of a container ended because its pod is deleted (128 + SIGTERM, as upstream).
pub const EXIT_TERMINATED: i32 = 143;

/// A command guest stopped by the drain (the pod's deletion, its deadline) reports what a
/// SIGTERM-ed process does; one stopped by the kubelet without a drain, what a SIGKILL-ed does.
fn terminated(exit: Exit, drained: bool) -> Exit {
    let killed = exit.exit_code == EXIT_KILLED && exit.reason == "Error";
    if killed && drained {
        return Exit {
            exit_code: EXIT_TERMINATED,
            reason: "Error",
            message: Some("terminated: the pod is being deleted".into()),
        };
    }
    exit
}

/// Maps a run's outcome (`None`: stopped by the kubelet) to an exit code and reason.
fn classify(outcome: Option<wasmtime::Result<i32>>, memory_refused: bool) -> Exit {
    let exit = |code: i32, reason: &'static str, message: Option<String>| Exit {
        exit_code: code,
        reason,
        message,
    };
    match outcome {
        None => exit(
            EXIT_KILLED,
            "Error",
            Some("stopped by the kubelet (epoch interruption)".into()),
        ),
        Some(Ok(0)) => exit(0, "Completed", None),
        Some(Ok(code)) if memory_refused => exit(code, "OOMKilled", None),
        Some(Ok(code)) => exit(code, "Error", None),
        Some(Err(e)) => {
            if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
                return match *code {
                    0 => exit(0, "Completed", None),
                    c if memory_refused => exit(c, "OOMKilled", None),
                    c => exit(c, "Error", None),
                };
            }
            if memory_refused {
                return exit(
                    EXIT_KILLED,
                    "OOMKilled",
                    Some(format!("memory limit reached: {}", e.root_cause())),
                );
            }
            let message = match e.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => e.root_cause().to_string(),
            };
            exit(EXIT_TRAP, "Error", Some(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_components_are_told_apart_by_their_header() {
        assert_eq!(detect(b"\0asm\x01\0\0\0rest").unwrap(), WasmKind::Module);
        assert_eq!(
            detect(b"\0asm\x0d\0\x01\0rest").unwrap(),
            WasmKind::Component
        );
        assert!(matches!(detect(b"(module)"), Err(RuntimeError::Invalid(_))));
        assert!(matches!(detect(b"\0as"), Err(RuntimeError::Invalid(_))));
    }
}
