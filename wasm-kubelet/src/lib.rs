//! wasmkube node agent: registers a Node, heartbeats its Lease, and runs the pods bound to it
//! in wasmtime sandboxes. Entry point: [`run`].

pub mod authn;
pub mod bench;
pub mod image;
pub mod network;
pub mod node;
pub mod objects;
pub mod pod;
pub mod runtime;
pub mod server;
mod supervisor;
pub mod tls;
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
    /// `--data-dir`: images (`images/`), compiled code (`compiled/`), pod logs (`pods/`), pod
    /// volumes (`volumes/<uid>/`).
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
    /// `--pod-cidr`: this node's pod addresses. Default: the Node's `spec.podCIDR` (set by the
    /// node-IPAM controller), else a `/20` of the cluster CIDR derived from the node name.
    pub pod_cidr: Option<String>,
    /// `--cluster-cidr`: all pods' addresses (pods may connect there). Default
    /// [`network::CLUSTER_CIDR`].
    pub cluster_cidr: String,
    /// `--service-cidr`: ClusterIPs (pods may connect there). Default [`network::SERVICE_CIDR`].
    pub service_cidr: String,
    /// `--allowed-host-path-prefix`: the only host paths `hostPath` volumes may name (and
    /// their descendants). Default empty: no hostPath volume is allowed.
    pub host_path_prefixes: Vec<PathBuf>,
    /// `--local-path-dir`: where local-path PersistentVolumes of this node live (announced on
    /// the Node as annotation `wasmkube.dev/local-path-dir`). Default `<data_dir>/storage`.
    pub local_path_dir: PathBuf,
    /// How often mounted configMap/secret/downwardAPI volumes are re-projected and emptyDir
    /// `sizeLimit`s checked. Default 10 s.
    pub volume_sync_interval: Duration,
    /// `--proxy`: run the node proxy's ClusterIP/NodePort listeners (the kube-proxy role).
    /// Default true; with several kubelets on one host (`wasmkube up` with extra nodes, tests)
    /// exactly one may own them, the others set false. Every kubelet keeps its Service table
    /// (pods' requests by Service name) and forwarding port either way.
    pub proxy: bool,
    /// `--proxy-port`: the forwarding port other nodes' proxies reach this node's pods through
    /// (announced as the Node annotation `wasmkube.dev/proxy-port`); 0 picks a free one.
    pub proxy_port: u16,
    /// `--anonymous-auth`: let callers without a token use the kubelet API. Default true here,
    /// for in-process use; `wasmkube kubelet` and secure `wasmkube up` set false, and then every
    /// request but `/healthz` needs the bearer token of a `system:masters` member, reviewed
    /// with the apiserver (see [`authn`]).
    pub anonymous_auth: bool,
    /// The cluster CA (DER; `wasmkube kubelet` takes it from its kubeconfig, as upstream's
    /// `--client-ca-file`): the kubelet API is then served over TLS and accepts client
    /// certificates signed by it (the apiserver's; see [`tls`]). None: plain HTTP.
    pub client_ca: Option<Vec<Vec<u8>>>,
}

impl KubeletConfig {
    /// The defaults for node `node_name` with data under `data_dir`.
    pub fn new(node_name: &str, data_dir: PathBuf) -> Self {
        Self {
            node_name: node_name.to_string(),
            local_path_dir: data_dir.join("storage"),
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
            pod_cidr: None,
            cluster_cidr: network::CLUSTER_CIDR.into(),
            service_cidr: network::SERVICE_CIDR.into(),
            host_path_prefixes: Vec::new(),
            volume_sync_interval: Duration::from_secs(10),
            proxy: true,
            proxy_port: 0,
            anonymous_auth: true,
            client_ca: None,
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
    #[error("pod network: {0}")]
    Network(#[from] network::ipam::IpamError),
    #[error("kubelet API on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The node's network plugin state: the podCIDR (see [`network::ipam::node_pod_cidr`]),
/// allocations persisted under `<data_dir>/network`.
async fn node_network(
    client: &Client,
    config: &KubeletConfig,
) -> Result<network::policy::NodeNetwork, KubeletError> {
    let cluster_cidr = network::ipam::parse_cidr(&config.cluster_cidr)?;
    let service_cidr = network::ipam::parse_cidr(&config.service_cidr)?;
    let pod_cidr = network::ipam::node_pod_cidr(
        client,
        &config.node_name,
        config.pod_cidr.as_deref(),
        &cluster_cidr,
        network::NODE_CIDR_MASK,
    )
    .await?;
    let ipam = network::ipam::Ipam::open(&config.data_dir.join("network"), pod_cidr)?;
    let mut node_addresses = vec![config.address, IpAddr::V4(Ipv4Addr::LOCALHOST)];
    node_addresses.dedup();
    Ok(network::policy::NodeNetwork {
        ipam,
        cluster_cidr,
        service_cidr,
        node_addresses,
        // The Service table (network::services) plugs in here when the node proxy runs.
        resolver: None,
    })
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
    // Two instance slots per pod (a running container, an in-flight request), at least 256
    // for request bursts on small nodes.
    let runtime = runtime::Runtime::with_pool_slots(
        &config.data_dir.join("compiled"),
        config.max_pods.saturating_mul(2).max(256),
    )?;
    let store = image::ContentStore::open(&images_dir(&config.data_dir))?;
    let images = image::Images::new(store, config.insecure_registries.clone());
    let live = server::LiveLogs::default();
    let stats = server::PodStats::default();

    let api = server::app(server::ServerState {
        pods_dir: pods_dir(&config.data_dir),
        live: live.clone(),
        stats: stats.clone(),
        node_name: config.node_name.clone(),
        reviewer: (!config.anonymous_auth)
            .then(|| Arc::new(authn::TokenReviewer::new(client.clone()))),
        node_cpu: Default::default(),
    });
    let stop = shutdown.clone();
    match &config.client_ca {
        Some(ca) => {
            let tls = tls::server_config(&config.node_name, config.address, ca)?;
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                h.graceful_shutdown(Some(Duration::from_secs(1)));
            });
            let listener = listener.into_std().map_err(|source| KubeletError::Listen {
                addr: config.listen,
                source,
            })?;
            let server =
                axum_server::from_tcp(listener).map_err(|source| KubeletError::Listen {
                    addr: config.listen,
                    source,
                })?;
            tokio::spawn(async move {
                // axum-server hands each request the connection's verified client
                // certificates (`TlsInfo`), which the authn middleware maps to a user.
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
                    axum_server::tls_rustls::RustlsConfig::from_config(tls),
                )
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
                let served = server
                    .acceptor(acceptor)
                    .handle(handle)
                    .serve(api.into_make_service())
                    .await;
                if let Err(e) = served {
                    tracing::error!("kubelet API stopped: {e}");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                let served = axum::serve(listener, api)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!("kubelet API stopped: {e}");
                }
            });
        }
    }

    let machine = node::Machine::detect();
    node::register(&client, &config, &machine, port).await?;
    node::renew_lease(&client, &config).await?;
    tracing::info!(node = %config.node_name, port, "node registered");
    let mut network = node_network(&client, &config).await?;
    let services =
        network::proxy::start(&client, &config, network.ipam.cidr(), shutdown.clone()).await?;
    network.resolver = Some(services);
    let network = Arc::new(network);
    tracing::info!(node = %config.node_name, pod_cidr = %network.ipam.cidr(), "pod network");
    let kubelet = Arc::new(supervisor::Kubelet {
        objects: Arc::new(objects::Objects::new(client.clone())),
        client: client.clone(),
        config: config.clone(),
        runtime,
        images,
        live,
        stats,
        network,
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "kubelet".into(),
                instance: Some(config.node_name.clone()),
            },
        ),
    });
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
    let storage = tokio::spawn(volume::housekeeping(
        client.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    supervisor::watch_pods(kubelet, shutdown).await;
    storage.abort();
    heartbeat.abort();
    Ok(())
}
