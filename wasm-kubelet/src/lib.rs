//! wasmkube node agent: registers a Node, heartbeats its Lease, and runs the pods bound to it
//! in wasmtime sandboxes. Entry point: [`run`].

pub mod bench;
pub mod image;
pub mod network;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod server;
mod supervisor;
pub mod volume;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

pub use image::{import, push};
/// Registry credentials for [`push`] (anonymous or basic).
pub use oci_client::secrets::RegistryAuth;

/// The wasmtime version this kubelet embeds (reported in `nodeInfo`).
pub const WASMTIME_VERSION: &str = "48.0.8";
/// The kubelet version reported in `nodeInfo`.
pub const KUBELET_VERSION: &str = "v1.33.0-wasmkube";

/// A taint to register the Node with (`--register-with-taints key=value:Effect`): for joining a
/// cluster that also runs containers, so that only pods that tolerate it land on wasm nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl std::str::FromStr for Taint {
    type Err = String;

    /// Parses `key=value:Effect` or `key:Effect`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kv, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {s:?}: expected key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "taint {s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        Ok(Self {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }
}

/// The kubelet's configuration (`wasmkube kubelet` flags map onto it one to one).
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// `--node-name`: the Node's name.
    pub node_name: String,
    /// `--data-dir`: images (`images/`), compiled code (`compiled/`), pod logs (`pods/`).
    pub data_dir: PathBuf,
    /// Kubelet API listen address (`/containerLogs`, `/healthz`, `/stats/summary`); port 0
    /// picks a free port, reported in `status.daemonEndpoints`. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The node's InternalIP (`status.addresses`, pods' `hostIP`). Default 127.0.0.1.
    pub address: IpAddr,
    /// `pods` capacity. Default 1000.
    pub max_pods: u32,
    /// `cpu` capacity override (a quantity); default: the machine's cores.
    pub cpu: Option<String>,
    /// `memory` capacity override (a quantity); default: the machine's memory.
    pub memory: Option<String>,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
    /// `--register-with-taints`; none by default, so plain pods schedule without tolerations.
    pub taints: Vec<Taint>,
    /// Registries pulled over plain HTTP (loopback registries always are).
    pub insecure_registries: Vec<String>,
    /// First CrashLoopBackOff delay (doubling to 5 min). Default 10 s.
    pub crash_backoff: Duration,
    /// Lease renewal interval. Default 10 s.
    pub lease_interval: Duration,
    /// Node status refresh interval. Default 60 s.
    pub status_interval: Duration,
    /// Size at which a container log file is rotated. Default 10 MiB.
    pub max_log_bytes: u64,
}

impl KubeletConfig {
    /// The defaults for node `node_name` with data under `data_dir`.
    pub fn new(node_name: &str, data_dir: PathBuf) -> Self {
        Self {
            node_name: node_name.to_string(),
            data_dir,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            max_pods: 1000,
            cpu: None,
            memory: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            insecure_registries: Vec::new(),
            crash_backoff: pod::BASE_BACKOFF,
            lease_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
            max_log_bytes: runtime::logs::DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Where the content store of a data dir lives (shared by `image import` and the kubelet).
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// Where pod logs of a data dir live: `pods/<ns>_<name>_<uid>/<container>/<restart>.log`.
pub fn pods_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pods")
}

/// Errors that stop the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("kubelet API on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the kubelet until `shutdown` is cancelled: registers the Node, serves the kubelet API,
/// heartbeats, and supervises every pod bound to the node.
pub async fn run(
    client: Client,
    config: KubeletConfig,
    shutdown: CancellationToken,
) -> Result<(), KubeletError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| KubeletError::Listen {
            addr: config.listen,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| KubeletError::Listen {
            addr: config.listen,
            source,
        })?
        .port();
    let runtime = runtime::Runtime::new(&config.data_dir.join("compiled"))?;
    let store = image::ContentStore::open(&images_dir(&config.data_dir))?;
    let images = image::Images::new(store, config.insecure_registries.clone());
    let live = server::LiveLogs::default();
    let stats = server::PodStats::default();
    let kubelet = Arc::new(supervisor::Kubelet {
        client: client.clone(),
        config: config.clone(),
        runtime,
        images,
        live: live.clone(),
        stats: stats.clone(),
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "kubelet".into(),
                instance: Some(config.node_name.clone()),
            },
        ),
    });

    let api = server::app(server::ServerState {
        pods_dir: pods_dir(&config.data_dir),
        live,
        stats,
        node_name: config.node_name.clone(),
    });
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, api)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("kubelet API stopped: {e}");
        }
    });

    let machine = node::Machine::detect();
    node::register(&client, &config, &machine, port).await?;
    node::renew_lease(&client, &config).await?;
    tracing::info!(node = %config.node_name, port, "node registered");
    let heartbeat = {
        let (client, config, stop) = (client.clone(), config.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut lease = tokio::time::interval(config.lease_interval);
            let mut status = tokio::time::interval(config.status_interval);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = lease.tick() => {
                        if let Err(e) = node::renew_lease(&client, &config).await {
                            tracing::warn!("{e}");
                        }
                    }
                    _ = status.tick() => {
                        if let Err(e) = node::update_status(&client, &config, &machine, port).await {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
        })
    };
    supervisor::watch_pods(kubelet, shutdown).await;
    heartbeat.abort();
    Ok(())
}
