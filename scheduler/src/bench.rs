//! `wasmkube bench scheduler`: upstream scheduler_perf's SchedulingBasic shape. A fresh
//! apiserver on a temp dir, N node objects (no kubelets; 4 cpu, 32Gi, 110 pods), the scheduler
//! (leader election on, default profile), then M pods (100m cpu, 500Mi) created as fast as the
//! apiserver takes them. Throughput is measured from the first pod create to the last binding
//! seen through a watch on pods, end to end through the apiserver.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{Config, Scheduler};

/// Requests in flight while creating nodes and pods (by default).
const CREATORS: usize = 64;

/// What to vary between runs.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// `percentageOfNodesToScore` (0: upstream's adaptive default; 100: every node).
    pub percentage_of_nodes_to_score: u32,
    /// Pod creates in flight (0: the default).
    pub creators: usize,
    /// Skip the per-pod `Scheduled` Event (upstream writes it; default: written).
    pub no_scheduled_events: bool,
    /// Filter/score worker threads (0: the default, one per core).
    pub parallelism: usize,
    /// Bindings in flight (0: the default).
    pub bind_concurrency: usize,
}

/// The benchmark's figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub nodes: usize,
    pub pods: usize,
    /// First pod create to last binding observed.
    pub elapsed: Duration,
    /// Pods per second over `elapsed`.
    pub throughput: f64,
    pub cycle_p50: Duration,
    pub cycle_p99: Duration,
    /// Nodes filtered per scheduling cycle, on average.
    pub nodes_per_cycle: f64,
    pub percentage_of_nodes_to_score: u32,
    /// Time to create the pods alone (the apiserver's share).
    pub create_elapsed: Duration,
}

impl fmt::Display for BenchReport {
    /// Several lines; the last is exactly `throughput: X pods/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = match self.percentage_of_nodes_to_score {
            0 => "adaptive".to_string(),
            p => format!("{p}%"),
        };
        writeln!(
            f,
            "scheduler bench: {} nodes, {} pods (SchedulingBasic)",
            self.nodes, self.pods
        )?;
        writeln!(
            f,
            "scheduling cycle: p50 {:.3} ms, p99 {:.3} ms; {:.0} nodes filtered per cycle (percentageOfNodesToScore {pct})",
            self.cycle_p50.as_secs_f64() * 1e3,
            self.cycle_p99.as_secs_f64() * 1e3,
            self.nodes_per_cycle,
        )?;
        writeln!(
            f,
            "pods created in {:.3} s, all bound {:.3} s after the first create",
            self.create_elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )?;
        write!(f, "throughput: {:.1} pods/s", self.throughput)
    }
}

/// Runs the benchmark with defaults (see [`bench_with`]).
pub async fn bench(nodes: usize, pods: usize) -> anyhow::Result<BenchReport> {
    bench_with(nodes, pods, BenchOptions::default()).await
}

/// Only what the bench reads of a pod, so its own watch costs little CPU next to the
/// scheduler's.
#[derive(Clone, Debug, Deserialize)]
struct BoundPod {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: BoundSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BoundSpec {
    node_name: Option<String>,
}

impl kube::Resource for BoundPod {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;
    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn node_object(i: usize) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}")}},
        "spec": {},
        "status": {
            "capacity": {"pods": "110", "cpu": "4", "memory": "32Gi"},
            "allocatable": {"pods": "110", "cpu": "4", "memory": "32Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
            "phase": "Running"
        }
    }))?)
}

fn pod_template() -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default"},
        "spec": {"containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {
                "limits": {"cpu": "100m", "memory": "500Mi"},
                "requests": {"cpu": "100m", "memory": "500Mi"}
            }
        }]}
    }))?)
}

/// Watches pods from `rv` until `pods` distinct pods were seen bound; re-watches from the last
/// revision seen when the server ends the stream (timeouts, slow-consumer cut-offs).
async fn wait_all_bound(
    api: Api<BoundPod>,
    mut rv: String,
    pods: usize,
) -> anyhow::Result<Instant> {
    let mut bound = HashSet::with_capacity(pods);
    loop {
        let params = WatchParams::default().timeout(290);
        let mut watch = api.watch(&params, &rv).await?.boxed();
        loop {
            match watch.try_next().await {
                Ok(Some(WatchEvent::Added(p))) | Ok(Some(WatchEvent::Modified(p))) => {
                    if let Some(v) = &p.metadata.resource_version {
                        rv.clone_from(v);
                    }
                    if p.spec.node_name.is_some_and(|n| !n.is_empty()) {
                        bound.insert(p.metadata.name.unwrap_or_default());
                        if bound.len() >= pods {
                            return Ok(Instant::now());
                        }
                    }
                }
                Ok(Some(WatchEvent::Bookmark(b))) => rv = b.metadata.resource_version,
                Ok(Some(WatchEvent::Error(e))) => anyhow::bail!("watching pods: {e}"),
                Ok(Some(WatchEvent::Deleted(_))) => {}
                Ok(None) => break,
                Err(e) => anyhow::bail!("watching pods ({} of {pods} bound): {e}", bound.len()),
            }
        }
    }
}

/// Starts an apiserver and the scheduler, creates `nodes` nodes and `pods` pods, and measures.
pub async fn bench_with(
    nodes: usize,
    pods: usize,
    opts: BenchOptions,
) -> anyhow::Result<BenchReport> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let server = wasmkube_apiserver::LocalServer::start("embedded", dir.path())
        .await
        .context("starting the apiserver")?;
    let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;

    let node_api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..nodes)
        .map(|i| {
            let api = node_api.clone();
            async move {
                let node = node_object(i)?;
                api.create(&PostParams::default(), &node)
                    .await
                    .with_context(|| format!("creating node-{i}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATORS)
        .try_collect::<Vec<()>>()
        .await?;

    let config = Config {
        percentage_of_nodes_to_score: opts.percentage_of_nodes_to_score,
        scheduled_events: !opts.no_scheduled_events,
        ..Config::default()
    };
    let config = Config {
        bind_concurrency: if opts.bind_concurrency == 0 {
            config.bind_concurrency
        } else {
            opts.bind_concurrency
        },
        parallelism: if opts.parallelism == 0 {
            config.parallelism
        } else {
            opts.parallelism
        },
        ..config
    };
    let scheduler = Scheduler::new(client.clone(), config)?;
    let stats = scheduler.stats();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(scheduler.run(shutdown.clone()));
    let ready_by = Instant::now() + Duration::from_secs(120);
    while !(stats.synced.load(Ordering::Relaxed) && stats.nodes.load(Ordering::Relaxed) == nodes) {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the scheduler did not sync {nodes} nodes within 120 s"
        );
        anyhow::ensure!(!run.is_finished(), "the scheduler stopped before syncing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Watch from the current revision before the first create, so no binding is missed.
    let pods_api: Api<BoundPod> = Api::namespaced(client.clone(), "default");
    let rv = pods_api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let watcher = tokio::spawn(wait_all_bound(pods_api, rv, pods));

    let template = pod_template()?;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    futures::stream::iter(0..pods)
        .map(|i| {
            let api = pod_api.clone();
            let mut pod = template.clone();
            pod.metadata.name = Some(format!("pod-{i}"));
            async move {
                api.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("creating pod-{i}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(if opts.creators == 0 {
            CREATORS
        } else {
            opts.creators
        })
        .try_collect::<Vec<()>>()
        .await?;
    let create_elapsed = start.elapsed();
    let done = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("not every pod was bound within 600 s")???;
    let elapsed = done.duration_since(start);

    shutdown.cancel();
    run.await??;
    let cycles = stats.cycles().max(1) as f64;
    Ok(BenchReport {
        nodes,
        pods,
        elapsed,
        throughput: pods as f64 / elapsed.as_secs_f64(),
        cycle_p50: stats.cycle_percentile(0.5),
        cycle_p99: stats.cycle_percentile(0.99),
        nodes_per_cycle: stats.nodes_evaluated.load(Ordering::Relaxed) as f64 / cycles,
        percentage_of_nodes_to_score: opts.percentage_of_nodes_to_score,
        create_elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_bench_binds_every_pod() {
        let r = bench(20, 60).await.expect("bench");
        assert_eq!(r.pods, 60);
        assert!(r.throughput > 0.0);
        let text = r.to_string();
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with("throughput: ") && last.ends_with(" pods/s"),
            "{last}"
        );
    }
}
