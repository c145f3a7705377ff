//! `wasmkube kubelet`, `wasmkube image import` and `wasmkube push`: the node agent and its
//! module store.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wasmkube_kubelet::{KubeletConfig, Taint};

/// Flags of `wasmkube kubelet`.
#[derive(clap::Args, Clone, Debug)]
pub struct KubeletArgs {
    /// Kubeconfig with this node's credential (required).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
}

impl NodeArgs {
    /// `--data-dir`, which every form of `wasmkube kubelet` needs.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        self.data_dir
            .clone()
            .context("wasmkube kubelet: --data-dir is required")
    }
}

/// The node's flags, shared by `wasmkube kubelet` and `wasmkube kubelet join`.
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// The Node's name [default: this host's name].
    #[arg(long)]
    pub node_name: Option<String>,
    /// Images, compiled code and pod logs live here (required).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Kubelet API address (logs, stats); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The node's InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Pods this node accepts.
    #[arg(long, default_value_t = 1000)]
    pub max_pods: u32,
    /// CPU capacity (a quantity) [default: the machine's cores].
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory capacity (a quantity) [default: the machine's memory].
    #[arg(long)]
    pub memory: Option<String>,
    /// Extra node labels, KEY=VALUE (repeatable).
    #[arg(long = "node-label")]
    pub labels: Vec<String>,
    /// Taints to register with, KEY=VALUE:EFFECT (comma-separated). Use when joining a cluster
    /// that also runs containers, so only pods that tolerate wasm land here.
    #[arg(long = "register-with-taints", value_delimiter = ',')]
    pub taints: Vec<String>,
    /// Registries to pull from over plain HTTP (loopback registries always are).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Host directories `hostPath` volumes may name, with everything below them (repeatable);
    /// none by default, so no pod can reach the host's files.
    #[arg(long = "allowed-host-path-prefix")]
    pub host_path_prefixes: Vec<PathBuf>,
    /// Where this node's local-path PersistentVolumes live [default: DATA_DIR/storage].
    #[arg(long)]
    pub local_path_dir: Option<PathBuf>,
    /// Run the node proxy's ClusterIP/NodePort listeners (the kube-proxy role). With several
    /// kubelets on one host, only one may: pass `--proxy=false` to the others.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub proxy: bool,
    /// The port other nodes' proxies reach this node's pods through (announced as the Node
    /// annotation `wasmkube.dev/proxy-port`); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub proxy_port: u16,
    /// This node's pod addresses (a CIDR) [default: the Node's spec.podCIDR from the node-IPAM
    /// controller, else a /20 of --cluster-cidr derived from the node name].
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// All pods' addresses: pods may connect there.
    #[arg(long, default_value = wasmkube_kubelet::network::CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// ClusterIPs: pods may connect there.
    #[arg(long, default_value = wasmkube_kubelet::network::SERVICE_CIDR)]
    pub service_cidr: String,
    /// Let callers without a bearer token use the kubelet API (logs, stats). Off by default:
    /// every request but /healthz needs the token of a system:masters member (the apiserver's
    /// kubelet-client identity or an admin), reviewed with the apiserver. An `--insecure`
    /// apiserver presents no credential: its kubelets need --anonymous-auth=true.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,
}

/// This host's name, the default node name (as k3s does).
pub fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wasmkube-node".to_string())
}

pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    let kubeconfig = args
        .kubeconfig
        .context("wasmkube kubelet: --kubeconfig (or KUBECONFIG) is required")?;
    run_node(&kubeconfig, args.node).await
}

/// Runs the kubelet with the credential in `kubeconfig` until SIGINT or SIGTERM.
pub async fn run_node(kubeconfig: &std::path::Path, args: NodeArgs) -> anyhow::Result<()> {
    let node = args.node_name.clone().unwrap_or_else(default_node_name);
    let data_dir = args.data_dir()?;
    let mut config = KubeletConfig::new(&node, data_dir.clone());
    config.listen = args.listen;
    config.address = args.address;
    config.max_pods = args.max_pods;
    config.cpu = args.cpu.clone();
    config.memory = args.memory.clone();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-label {l:?}: expected KEY=VALUE"))?;
        config.labels.insert(k.to_string(), v.to_string());
    }
    for t in &args.taints {
        let taint: Taint = t
            .parse()
            .map_err(|e| anyhow::anyhow!("--register-with-taints {t:?}: {e}"))?;
        config.taints.push(taint);
    }
    config.insecure_registries = args.insecure_registries.clone();
    config.proxy = args.proxy;
    config.proxy_port = args.proxy_port;
    config.pod_cidr = args.pod_cidr.clone();
    config.cluster_cidr = args.cluster_cidr.clone();
    config.service_cidr = args.service_cidr.clone();
    config.host_path_prefixes = args.host_path_prefixes.clone();
    config.anonymous_auth = args.anonymous_auth;
    if let Some(dir) = &args.local_path_dir {
        config.local_path_dir = dir.clone();
    }
    let (client, ca) = crate::kubeconfig::client_and_ca(kubeconfig).await?;
    // A secure cluster's kubelet serves its API over TLS and lets the apiserver in by its
    // client certificate, signed by the CA the kubeconfig trusts.
    config.client_ca = ca;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(wasmkube_kubelet::run(client, config, shutdown.clone()));
    println!(
        "wasmkube kubelet: node {node}, data in {}",
        data_dir.display()
    );
    crate::wait_for_signal().await?;
    shutdown.cancel();
    task.await.context("kubelet task")??;
    Ok(())
}

/// `wasmkube image`.
#[derive(clap::Subcommand)]
pub enum Image {
    /// Load a .wasm into the module store of the node(s) of `wasmkube up --data-dir DIR` (or of
    /// a kubelet's --data-dir), like `kind load`; works while they run.
    Import {
        file: PathBuf,
        /// The image reference pods name, e.g. `example.com/hello:v1`.
        reference: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn image(cmd: Image) -> anyhow::Result<()> {
    let Image::Import {
        file,
        reference,
        data_dir,
    } = cmd;
    let dir = match data_dir {
        Some(d) => d,
        None => crate::kubeconfig::default_data_dir()?,
    };
    // `up`'s layout holds one kubelet dir per node under nodes/; a kubelet dir is used as is.
    let nodes = dir.join("nodes");
    let targets: Vec<PathBuf> = match std::fs::read_dir(&nodes) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        // An `up` data dir (it has the cluster's pki/) without nodes/ yet is not a kubelet dir.
        Err(_) if dir.join("pki").is_dir() => Vec::new(),
        Err(_) => vec![dir.clone()],
    };
    if targets.is_empty() {
        anyhow::bail!(
            "no nodes under {}: start `wasmkube up --data-dir {}` first",
            nodes.display(),
            dir.display()
        );
    }
    for t in &targets {
        let record = wasmkube_kubelet::import(t, &file, &reference)
            .with_context(|| format!("importing {} into {}", file.display(), t.display()))?;
        println!("{reference} imported into {} ({record:?})", t.display());
    }
    Ok(())
}

/// Flags of `wasmkube push`.
#[derive(clap::Args, Clone, Debug)]
pub struct PushArgs {
    pub file: PathBuf,
    /// Where to push, e.g. `127.0.0.1:5000/hello:v1`.
    pub reference: String,
    /// Plain HTTP (loopback registries always use it).
    #[arg(long)]
    pub insecure: bool,
}

pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let url = wasmkube_kubelet::push(
        &args.file,
        &args.reference,
        args.insecure,
        &wasmkube_kubelet::RegistryAuth::Anonymous,
    )
    .await?;
    println!("pushed {} to {url}", args.file.display());
    Ok(())
}
