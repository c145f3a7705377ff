//! Integration tests: the scheduler against an in-process apiserver, one apiserver per test.
//! One test binary (modules) keeps link time low.

mod ha;
mod placement;
mod volumes;

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::LocalServer;
use wasmkube_scheduler::{Config, Scheduler, Stats};

/// An apiserver on a temp dir and a client for it.
pub struct Cluster {
    pub client: kube::Client,
    _server: LocalServer,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let server = LocalServer::start("embedded", dir.path())
            .await
            .expect("apiserver");
        let url = server.url().parse().expect("url");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
        Self {
            client,
            _server: server,
            _dir: dir,
        }
    }

    pub async fn node(&self, name: &str, cpu: &str, memory: &str, labels: Value, taints: Value) {
        let mut labels = labels;
        labels["kubernetes.io/hostname"] = json!(name);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}
            }
        }))
        .expect("node");
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
    }

    /// Creates pod `name` in `default` with these labels and spec (containers default to one
    /// requesting `cpu`/`memory` if the spec has none).
    pub async fn pod(&self, name: &str, labels: Value, cpu: &str, spec: Value) {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "example/app:v1",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": spec
        }))
        .expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn node_of(&self, pod: &str) -> Option<String> {
        self.pods()
            .get(pod)
            .await
            .ok()
            .and_then(|p| p.spec.and_then(|s| s.node_name))
            .filter(|n| !n.is_empty())
    }

    /// Waits until every pod is bound; returns their nodes in order.
    pub async fn wait_bound(&self, pods: &[&str]) -> Vec<String> {
        wait_for(&format!("pods {pods:?} bound"), || async {
            let mut out = Vec::new();
            for p in pods {
                out.push(self.node_of(p).await?);
            }
            Some(out)
        })
        .await
    }
}

/// A scheduler running in the background.
pub struct Running {
    pub stats: std::sync::Arc<Stats>,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), wasmkube_scheduler::Error>>,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("scheduler");
    }
}

pub fn start_scheduler(client: &kube::Client, config: Config) -> Running {
    let s = Scheduler::new(client.clone(), config).expect("scheduler config");
    let stats = s.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(s.run(stop.clone()));
    Running { stats, stop, task }
}

/// Polls `check` until it returns `Some` (condition wait with a deadline, no fixed sleeps
/// standing in for synchronization).
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Default configuration without leader election (single-instance tests).
pub fn solo_config() -> Config {
    let mut c = Config::default();
    c.leader_election.leader_elect = false;
    c
}
