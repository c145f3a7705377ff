//! `wasmkube`: the single binary that runs the whole cluster (`up`) or one component.

/// mimalloc: the control plane allocates many small, short-lived JSON values across threads;
/// with glibc malloc a quarter of the scheduler benchmark was spent in malloc/free, and
/// mimalloc raised its throughput by a fifth (same run, same machine).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod controllers;
mod join;
mod kubeconfig;
mod kubelet;
mod scheduler;
mod security;
mod serve;
mod trace;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wasmkube",
    version,
    about = "A Kubernetes-compatible orchestrator for WebAssembly workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Append the pod-start trace events (`wasmkube::trace`) of this process to FILE as JSON
    /// lines, for `wasmkube trace pod`.
    #[arg(long, global = true, env = "WASMKUBE_TRACE_FILE", value_name = "FILE")]
    trace_file: Option<PathBuf>,
}

/// Flags shared by the commands that run an apiserver.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Where state, the kubeconfig and node data live [default: $XDG_DATA_HOME/wasmkube or ~/.local/share/wasmkube]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the apiserver listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Store backend: `embedded` (a durable file under the data dir) or
    /// `etcd://HOST:PORT[,HOST:PORT...][?prefix=/registry/]` (etcd v3; several apiservers may
    /// share one etcd).
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// Serve plain HTTP where every request is the cluster admin (kubectl sends no token over
    /// HTTP). Without it: HTTPS with a generated CA, and bearer tokens.
    #[arg(long)]
    pub insecure: bool,
    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// The CIDR Service ClusterIPs are allocated from (its first address is the `kubernetes`
    /// Service's). The default lies in 127.0.0.0/8: it needs no setup on one host.
    #[arg(long, default_value = wasmkube_apiserver::allocator::DEFAULT_SERVICE_CIDR)]
    pub service_cluster_ip_range: String,
    /// The kubelets' allowed hostPath prefixes (set from `up --allowed-host-path-prefix`).
    #[arg(skip)]
    pub host_path_prefixes: Vec<PathBuf>,
    /// The pod CIDR of `up`'s node IPAM and kubelets (set from `up --cluster-cidr`).
    #[arg(skip)]
    pub cluster_cidr: String,
    /// `up --node-monitor-grace-period`.
    #[arg(skip)]
    pub node_monitor_grace_period: std::time::Duration,
}

/// Parses a duration as upstream flags take them: `40s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 40s, 5m or 250ms"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Flags of `wasmkube up`.
#[derive(clap::Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Kubelets to run on this machine (for trying multi-node): the first is named after the
    /// host, the others `<host>-2`, `<host>-3`, ..., each with its own data dir under
    /// DIR/nodes/ and its own credential.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Host directories `hostPath` volumes may name, with everything below them (repeatable);
    /// none by default, so no pod can reach the host's files.
    #[arg(long = "allowed-host-path-prefix")]
    pub host_path_prefixes: Vec<PathBuf>,
    /// The pod CIDR: each node gets a /20 `podCIDR` of it, each pod an address from its node's.
    /// The default lies in 127.0.0.0/8: it needs no setup on one host. Clusters sharing a host
    /// need disjoint ranges (and `--service-cluster-ip-range`s).
    #[arg(long, default_value = wasmkube_controllers::nodeipam::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// A node whose kubelet is not heard of for this long becomes `Ready=Unknown` and tainted
    /// unreachable; its pods are evicted after their toleration (upstream's flag and default).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
}

/// `wasmkube kubelet [FLAGS]` or `wasmkube kubelet join [FLAGS]`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct KubeletCommand {
    #[command(subcommand)]
    join: Option<KubeletSubcommand>,
    #[command(flatten)]
    args: kubelet::KubeletArgs,
}

#[derive(Subcommand)]
enum KubeletSubcommand {
    /// Join a cluster with a bootstrap token (from `wasmkube token create`), pinning its CA by
    /// hash; write the node's credential to DATA_DIR/kubeconfig and run the kubelet with it.
    Join(join::JoinArgs),
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole cluster in one process (apiserver, scheduler, controllers, one kubelet)
    /// and write DIR/kubeconfig.
    Up(UpArgs),
    /// Run the apiserver alone and write DIR/kubeconfig.
    Apiserver(ServerArgs),
    /// Run the scheduler against the apiserver in a kubeconfig.
    Scheduler(scheduler::SchedulerArgs),
    /// Run the controllers (ReplicaSet, Deployment, Job, GC, ...) against a kubeconfig.
    ControllerManager(controllers::ControllerArgs),
    /// Run a node agent that runs the wasm pods bound to it (`kubelet join`: join a cluster
    /// first).
    Kubelet(Box<KubeletCommand>),
    /// Manage bootstrap tokens for joining nodes.
    #[command(subcommand)]
    Token(join::Token),
    /// Manage the nodes' module store.
    #[command(subcommand)]
    Image(kubelet::Image),
    /// Push a .wasm to an OCI registry as a wasm artifact.
    Push(kubelet::PushArgs),
    /// Print a pod's path through the cluster with timings.
    #[command(subcommand)]
    Trace(trace::Trace),
    /// Measure a component against a same-run baseline.
    #[command(subcommand)]
    Bench(bench::Bench),
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.trace_file.as_deref());
    // One TLS crypto provider for every client and server in the process (kube, oci pulls
    // and pushes, the apiserver).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => {
                anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
                let mut server = args.server;
                server.host_path_prefixes = args.host_path_prefixes;
                server.cluster_cidr = args.cluster_cidr;
                server.node_monitor_grace_period = args.node_monitor_grace_period;
                serve::run(server, serve::Role::Cluster { nodes: args.nodes }).await
            }
            Command::Apiserver(args) => serve::run(args, serve::Role::Apiserver).await,
            Command::Scheduler(args) => scheduler::run(args).await,
            Command::ControllerManager(args) => controllers::run(args).await,
            Command::Kubelet(cmd) => match *cmd {
                KubeletCommand {
                    join: Some(KubeletSubcommand::Join(args)),
                    ..
                } => join::join(args).await,
                KubeletCommand { args, .. } => kubelet::run(args).await,
            },
            Command::Token(cmd) => join::token(cmd).await,
            Command::Image(cmd) => kubelet::image(cmd),
            Command::Push(args) => kubelet::push(args).await,
            Command::Trace(t) => trace::run(t).await,
            Command::Bench(b) => bench::run(b).await,
        }
    });
    if let Err(e) = result {
        fail(&format!("{e:#}"));
    }
}

/// Logs to stderr as `WASMKUBE_LOG` says and, with `--trace-file`, the pod-start trace events
/// to that file.
fn init_logging(trace_file: Option<&std::path::Path>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG")
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let trace = trace_file.map(|path| match trace::TraceFile::open(path) {
        Ok(t) => t.with_filter(trace::trace_events()),
        Err(e) => fail(&format!("{e:#}")),
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(trace)
        .init();
}

/// One line on stderr and a non-zero exit: the CLI's way to fail.
fn fail(msg: &str) -> ! {
    eprintln!("wasmkube: error: {msg}");
    std::process::exit(1)
}

/// Waits for SIGINT or SIGTERM: how every long-running command stops.
pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_upstream_flags_write_them() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("expected a duration"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
    }
}
