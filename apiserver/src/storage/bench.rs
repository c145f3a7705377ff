//! The closed-loop load driver of the raw-store baselines: `concurrency` workers take
//! operation numbers `0..total` in turn and time each one.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Throughput and latency of one run.
#[derive(Clone, Copy, Debug)]
pub struct BenchResult {
    pub puts_per_sec: f64,
    /// Median latency of one operation.
    pub p50: Duration,
    /// 99th percentile latency of one operation.
    pub p99: Duration,
    /// Operations that failed (they count in neither the rate nor the latencies).
    pub errors: usize,
}

/// Runs `op(i)` for every `i` in `0..total` from `concurrency` tasks; `op` answers whether
/// the operation succeeded.
pub async fn run_load<F, Fut>(concurrency: usize, total: usize, op: F) -> BenchResult
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return (latencies, errors);
                }
                let t = Instant::now();
                if op(i).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
        });
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((l, e)) => {
                latencies.extend(l);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[idx.min(latencies.len() - 1)]
    };
    BenchResult {
        puts_per_sec: if elapsed > 0.0 {
            latencies.len() as f64 / elapsed
        } else {
            0.0
        },
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}
