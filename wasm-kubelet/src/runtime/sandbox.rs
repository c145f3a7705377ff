//! What a container's guest is given. A guest sees nothing of the host it was not granted here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::logs::{LogFile, Stream};
use super::ContainerSpec;
use crate::network::policy::Use;

/// Table elements a guest may grow to: generous for real programs, bounded for bombs.
const MAX_TABLE_ELEMENTS: usize = 10_000_000;

/// The WASI grants of one container run, built from its spec.
pub fn grants(spec: &ContainerSpec, log: &LogFile) -> WasiCtxBuilder {
    let mut wasi = WasiCtxBuilder::new();
    wasi
        // argv: the container's command + args (argv[0] is the program name).
        .args(&spec.argv)
        // env: exactly the pod spec's env, envFrom and downward API values; never the host's.
        .envs(&spec.env)
        // stdout/stderr: the container's log file, timestamped per line. stdin stays empty.
        .stdout(log.stream(Stream::Stdout))
        .stderr(log.stream(Stream::Stderr))
        // sockets: none unless the network plugin grants the pod an address and a policy.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    // sockets (p2 only: p1 has no socket creation): bind only the pod's address, connect only
    // to cluster addresses (network::policy); a denial is logged and the guest sees
    // access-denied.
    if let Some(net) = &spec.network {
        let (net, log) = (net.clone(), log.clone());
        wasi.allow_tcp(true)
            .allow_udp(true)
            // Names resolve through runtime::names (cluster names only, never host DNS).
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |addr, use_| {
                let allowed = match net.check(addr, Use::of(use_)) {
                    Ok(()) => true,
                    Err(denied) => {
                        log.note(Stream::Stderr, &format!("kubelet: socket {denied}"));
                        false
                    }
                };
                Box::pin(async move { allowed })
            });
    }
    // files: exactly the pod's volumeMounts, each a directory at its mountPath.
    for p in &spec.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        // The volume plugin checked each directory just before the start; one that vanished
        // since is left out (the guest then sees no such path) rather than failing the run.
        if let Err(e) = wasi.preopened_dir(&p.host, &p.guest, perms) {
            tracing::warn!(host = %p.host.display(), guest = %p.guest, "preopen: {e:#}");
        }
    }
    wasi
}

/// A host directory a guest sees at `guest` (a pod volumeMount).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on the host (already resolved and checked to be inside its volume).
    pub host: PathBuf,
    /// The guest path (`mountPath`).
    pub guest: String,
    /// Read-only directory and file permissions.
    pub read_only: bool,
}

/// `resources.limits.memory` for one store; remembers whether it refused a grow, which is how
/// an out-of-memory guest is told apart from one that trapped for another reason.
pub struct MemoryLimiter {
    limit: Option<usize>,
    /// Set when a memory grow was refused.
    pub refused: bool,
    usage: Arc<Usage>,
    /// Bytes of linear memory granted so far (all memories of the store).
    granted: u64,
}

impl MemoryLimiter {
    pub fn new(limit: Option<u64>, usage: Arc<Usage>) -> Self {
        Self {
            limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            refused: false,
            usage,
            granted: 0,
        }
    }
}

/// What a running container uses, read by `/stats/summary`.
#[derive(Debug, Default)]
pub struct Usage {
    /// Linear memory of the container's instance(s), in bytes.
    pub memory_bytes: AtomicU64,
    /// Time its guests spent running (polled on a runtime thread: wasm and the host calls it
    /// makes; waits are not counted), in nanoseconds: the container's CPU time.
    pub cpu_nanos: AtomicU64,
}

/// Runs `fut` (a guest), adding the time spent in each poll to `usage.cpu_nanos`.
pub async fn metered<F: std::future::Future>(usage: &Usage, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let started = std::time::Instant::now();
        let polled = fut.as_mut().poll(cx);
        let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        usage.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
        polled
    })
    .await
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.limit.is_some_and(|limit| desired > limit) {
            self.refused = true;
            return Ok(false);
        }
        self.granted = self
            .granted
            .saturating_add((desired.saturating_sub(current)) as u64);
        self.usage
            .memory_bytes
            .store(self.granted, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
