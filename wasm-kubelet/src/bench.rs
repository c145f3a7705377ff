//! `wasmkube bench startup`: pod create → Running (observed by a watch) for N pods whose module
//! is already compiled, next to a bare wasmtime instantiate+run of the same module in the same
//! run. The caller provides the apiserver; this starts its own kubelet on `work_dir`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::logs::LogFile;
use crate::runtime::{ContainerSpec, Runtime};
use crate::KubeletConfig;

/// The guest: a WASI p1 module that writes one line and returns.
const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from bench\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 17))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const NODE: &str = "bench-node";
const IMAGE: &str = "wasmkube.bench/hello:v1";

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench guest: {0}")]
    Guest(String),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("apiserver: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Timeout(String),
}

/// The figures of one run (milliseconds).
#[derive(Clone, Debug)]
pub struct StartupFigures {
    pub pods: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bare_p50_ms: f64,
    pub bare_p99_ms: f64,
}

impl StartupFigures {
    /// p99 create→Running ÷ p99 bare instantiate+run.
    pub fn ratio(&self) -> f64 {
        if self.bare_p99_ms > 0.0 {
            self.p99_ms / self.bare_p99_ms
        } else {
            f64::INFINITY
        }
    }

    /// The report; its last line is exactly `p99: X ms, ratio: Y`.
    pub fn report(&self) -> String {
        format!(
            "startup: {} pods, module cached\n\
             pod create -> Running (watch): p50 {:.2} ms, p99 {:.2} ms\n\
             bare wasmtime instantiate+run: p50 {:.3} ms, p99 {:.3} ms\n\
             p99: {:.2} ms, ratio: {:.1}",
            self.pods,
            self.p50_ms,
            self.p99_ms,
            self.bare_p50_ms,
            self.bare_p99_ms,
            self.p99_ms,
            self.ratio()
        )
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pod(name: &str) -> Result<Pod, BenchError> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"wasmkube.io/bench": "startup"}},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Never",
            "containers": [{"name": "hello", "image": IMAGE}],
        },
    }))
    .map_err(|e| BenchError::Guest(e.to_string()))
}

/// Runs the benchmark with `pods` pods against `client`, a kubelet on `work_dir`.
pub async fn startup(
    client: Client,
    work_dir: &std::path::Path,
    pods: usize,
) -> Result<StartupFigures, BenchError> {
    let wasm = wat::parse_str(HELLO_WAT).map_err(|e| BenchError::Guest(e.to_string()))?;
    let file = work_dir.join("hello.wasm");
    std::fs::write(&file, &wasm).map_err(|e| BenchError::Guest(e.to_string()))?;
    let data_dir = work_dir.join("node");
    let record = crate::import(&data_dir, &file, IMAGE)?;

    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let config = KubeletConfig::new(NODE, data_dir.clone());
    let kubelet = tokio::spawn(crate::run(client.clone(), config, stop.clone()));
    let nodes: Api<Node> = Api::all(client.clone());
    wait(
        Duration::from_secs(30),
        "the bench node to register",
        async {
            while nodes.get_opt(NODE).await.ok().flatten().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await?;

    // Pods reaching Running (or straight to Succeeded) as the watch reports them.
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, mut running) = mpsc::unbounded_channel::<(String, Instant)>();
    let watch_cfg = watcher::Config::default().labels("wasmkube.io/bench=startup");
    let mut events = Box::pin(watcher(api.clone(), watch_cfg).applied_objects());
    let watch = tokio::spawn(async move {
        while let Some(Ok(p)) = events.next().await {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Running" | "Succeeded")) {
                let name = p.metadata.name.clone().unwrap_or_default();
                if tx.send((name, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });

    let mut latencies = Vec::with_capacity(pods);
    // Pod 0 warms up (compiles and caches the module); it is not counted.
    for i in 0..=pods {
        let name = format!("startup-{i}");
        let created = Instant::now();
        api.create(&PostParams::default(), &pod(&name)?).await?;
        let seen = wait(
            Duration::from_secs(60),
            &format!("pod {name} to run"),
            async {
                while let Some((n, at)) = running.recv().await {
                    if n == name {
                        return Some(at);
                    }
                }
                None
            },
        )
        .await?
        .ok_or_else(|| BenchError::Timeout("the pod watch ended".into()))?;
        if i > 0 {
            latencies.push(ms(seen - created));
        }
    }

    // The same module, bare: instantiate + run to completion, no orchestration.
    let runtime = Runtime::new(&work_dir.join("bare-compiled"))?;
    let blob = crate::image::ContentStore::open(&crate::images_dir(&data_dir))?
        .blob_path(&record.wasm_digest);
    let program = runtime.load(&record.wasm_digest, &blob).await?;
    let log = LogFile::create(&work_dir.join("bare.log"), 1 << 20)
        .map_err(|e| BenchError::Guest(e.to_string()))?;
    let spec = ContainerSpec {
        argv: vec!["hello".into()],
        ..Default::default()
    };
    let never = CancellationToken::new();
    let mut bare = Vec::with_capacity(pods);
    for _ in 0..=pods {
        let t = Instant::now();
        let exit = runtime.run(&program, &spec, &log, &never).await;
        bare.push(ms(t.elapsed()));
        if exit.exit_code != 0 {
            return Err(BenchError::Guest(format!("bare run failed: {exit:?}")));
        }
    }
    bare.remove(0);
    // Stop the kubelet before the caller stops the apiserver: a quiet exit, no failed
    // requests from a kubelet still syncing.
    watch.abort();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), kubelet).await;

    latencies.sort_by(f64::total_cmp);
    bare.sort_by(f64::total_cmp);
    Ok(StartupFigures {
        pods,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        bare_p50_ms: percentile(&bare, 0.50),
        bare_p99_ms: percentile(&bare, 0.99),
    })
}

async fn wait<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, BenchError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| BenchError::Timeout(format!("timed out after {limit:?} waiting for {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_has_the_agreed_shape() {
        let f = StartupFigures {
            pods: 200,
            p50_ms: 10.0,
            p99_ms: 20.0,
            bare_p50_ms: 0.1,
            bare_p99_ms: 0.5,
        };
        assert_eq!(
            f.report().lines().last(),
            Some("p99: 20.00 ms, ratio: 40.0")
        );
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }
}
