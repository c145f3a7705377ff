//! What a container's guest is given. A guest sees nothing of the host it was not granted here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime_wasi::WasiCtxBuilder;

use super::logs::{LogFile, Stream};
use super::ContainerSpec;

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
        // sockets: none until the network plugin grants the pod an address and a policy.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    // files: no preopened directories until the volume plugin grants mounts.
    wasi
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
