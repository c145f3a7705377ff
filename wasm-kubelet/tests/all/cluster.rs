//! An in-process apiserver plus a kubelet on a temp data dir, with the example guests imported.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::Client;
use tokio_util::sync::CancellationToken;
use wasmkube_kubelet::KubeletConfig;

use crate::guests::{self, Target};

pub const NODE: &str = "wasm-node-1";

pub struct Cluster {
    pub client: Client,
    pub data_dir: PathBuf,
    pub server: wasmkube_apiserver::LocalServer,
    pub stop: CancellationToken,
    config: KubeletConfig,
    kubelet: Option<tokio::task::JoinHandle<Result<(), wasmkube_kubelet::KubeletError>>>,
    _dir: tempfile::TempDir,
}

/// The image reference a guest is imported under.
pub fn image(name: &str, target: Target) -> String {
    let t = match target {
        Target::P1 => "p1",
        Target::P2 => "p2",
    };
    format!("wasmkube.test/{name}:{t}")
}

/// An in-process apiserver on a temp dir and a client for it (no kubelet).
pub async fn connect() -> (Client, wasmkube_apiserver::LocalServer, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("WASMKUBE_LOG"))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let server = wasmkube_apiserver::LocalServer::start("embedded", &dir.path().join("api"))
        .await
        .expect("apiserver");
    let config = kube::Config::new(server.url().parse().unwrap());
    let client = Client::try_from(config).unwrap();
    (client, server, dir)
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut KubeletConfig)) -> Self {
        let (client, server, dir) = connect().await;
        let data_dir = dir.path().join("node");
        for name in [
            "hello",
            "counter",
            "exit-nonzero",
            "trap",
            "memory-hog",
            "infinite-loop",
            "spam",
        ] {
            for target in [Target::P1, Target::P2] {
                wasmkube_kubelet::import(
                    &data_dir,
                    &guests::path(name, target),
                    &image(name, target),
                )
                .expect("import");
            }
        }
        // Share compiled code across tests (keys include the digest and engine settings).
        let shared = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmkube-compiled");
        std::fs::create_dir_all(&shared).unwrap();
        std::os::unix::fs::symlink(&shared, data_dir.join("compiled")).unwrap();
        let mut config = KubeletConfig::new(NODE, data_dir.clone());
        config.crash_backoff = Duration::from_millis(300);
        tune(&mut config);
        let stop = CancellationToken::new();
        let kubelet = tokio::spawn(wasmkube_kubelet::run(
            client.clone(),
            config.clone(),
            stop.clone(),
        ));
        Self {
            client,
            data_dir,
            server,
            stop,
            config,
            kubelet: Some(kubelet),
            _dir: dir,
        }
    }

    /// Stops the kubelet (its guests die with it) and starts a new one on the same data dir.
    pub async fn restart_kubelet(&mut self) {
        self.stop.cancel();
        if let Some(k) = self.kubelet.take() {
            k.await
                .expect("kubelet task")
                .expect("kubelet stopped cleanly");
        }
        self.stop = CancellationToken::new();
        self.kubelet = Some(tokio::spawn(wasmkube_kubelet::run(
            self.client.clone(),
            self.config.clone(),
            self.stop.clone(),
        )));
    }

    /// The apiserver's URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod bound to the test node from a JSON spec.
    pub async fn create_pod(&self, name: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["nodeName"] = NODE.into();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created")
    }

    /// Waits (up to `secs`) until pod `name` satisfies `cond`; returns it.
    pub async fn wait_pod(&self, name: &str, secs: u64, cond: impl Fn(&Pod) -> bool) -> Pod {
        let found = tokio::time::timeout(
            Duration::from_secs(secs),
            await_condition(self.pods(), name, move |p: Option<&Pod>| {
                p.is_some_and(&cond)
            }),
        )
        .await;
        match found {
            Ok(Ok(Some(p))) => p,
            other => {
                let now = self.pods().get_opt(name).await.ok().flatten();
                panic!(
                    "pod {name}: condition not met within {secs}s ({:?}); pod now: {}",
                    other.map(|r| r.map(|_| ())),
                    serde_json::to_string_pretty(&now.map(|p| p.status)).unwrap_or_default()
                )
            }
        }
    }

    /// Waits until pod `name` is gone.
    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let gone = tokio::time::timeout(
            Duration::from_secs(secs),
            await_condition(self.pods(), name, |p: Option<&Pod>| p.is_none()),
        )
        .await;
        assert!(
            matches!(gone, Ok(Ok(_))),
            "pod {name} not gone within {secs}s"
        );
    }

    pub async fn delete_pod(&self, name: &str, grace: Option<u32>) {
        let params = DeleteParams {
            grace_period_seconds: grace,
            ..Default::default()
        };
        self.pods().delete(name, &params).await.expect("delete");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The container status named `name` (app containers).
pub fn container<'a>(p: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status for container {name}"))
}

/// The restart count of container `name`, 0 before it has a status.
pub fn restart_count(p: &Pod, name: &str) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .map_or(0, |c| c.restart_count)
}

pub fn terminated(
    p: &Pod,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    container(p, name).state.as_ref()?.terminated.clone()
}

pub fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}
