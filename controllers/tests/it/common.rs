//! The harness: an apiserver on a temp dir, a kube client, the controllers, and condition waits.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::LocalServer;
use wasmkube_controllers::ControllerConfig;

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub client: Client,
    pub stop: CancellationToken,
    _server: LocalServer,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An apiserver and a client, without controllers.
pub async fn apiserver() -> anyhow::Result<Cluster> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir()?;
    let server = LocalServer::start("embedded", dir.path()).await?;
    let client = Client::try_from(kube::Config::new(server.url().parse()?))?;
    Ok(Cluster {
        client,
        stop: CancellationToken::new(),
        _server: server,
        _dir: dir,
    })
}

/// An apiserver with every controller running under `config` (leader election off).
pub async fn cluster_with(config: ControllerConfig) -> anyhow::Result<Cluster> {
    let cluster = apiserver().await?;
    let config = ControllerConfig {
        leader_election: false,
        ..config
    };
    tokio::spawn(wasmkube_controllers::run(
        cluster.client.clone(),
        config,
        cluster.stop.clone(),
    ));
    Ok(cluster)
}

pub async fn cluster() -> anyhow::Result<Cluster> {
    cluster_with(ControllerConfig::default()).await
}

/// Polls `check` until it yields `Some`, failing after [`DEADLINE`] with `what` and the last state.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pods in `ns` matching `selector` (e.g. `app=web`), not being deleted.
pub async fn pods(client: &Client, ns: &str, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default().labels(selector)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Plays the kubelet: marks a pod Running and Ready (or Running and not ready).
pub async fn set_ready(client: &Client, pod: &Pod, ready: bool) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().context("namespace")?);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = if ready { "True" } else { "False" };
    let body = json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        ],
    }});
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(body),
    )
    .await?;
    Ok(())
}

/// Plays the kubelet: marks a pod finished (`Succeeded` or `Failed`).
pub async fn set_phase(client: &Client, pod: &Pod, phase: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().context("namespace")?);
    let body = json!({"status": {"phase": phase}});
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(body),
    )
    .await?;
    Ok(())
}

/// Marks every not-yet-ready pod matching `selector` ready, so rollouts can progress.
pub async fn ready_all(client: &Client, ns: &str, selector: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    for pod in pods(client, ns, selector).await? {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            // The pod may go away between list and patch (a controller scaled it down).
            if set_ready(client, &pod, true).await.is_ok() {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// A minimal pod template labelled `app=<app>` with one container running `image`.
pub fn template(app: &str, image: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": image}]},
    })
}

/// Plays the kubelet in the background: every 100 ms marks each pod matching `selector` Ready.
/// Stops when dropped.
pub struct FakeKubelet(tokio::task::JoinHandle<()>);

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FakeKubelet {
    pub fn spawn(f: impl Future<Output = ()> + Send + 'static) -> Self {
        FakeKubelet(tokio::spawn(f))
    }
}

pub fn fake_kubelet(client: &Client, ns: &str, selector: &str) -> FakeKubelet {
    let (client, ns, selector) = (client.clone(), ns.to_string(), selector.to_string());
    FakeKubelet(tokio::spawn(async move {
        loop {
            let _ = ready_all(&client, &ns, &selector).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }))
}
