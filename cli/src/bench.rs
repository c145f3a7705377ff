//! `wasmkube bench ...`: each benchmark starts what it needs, prints its figures, and a
//! baseline measured in the same run, as a ratio on its last line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::storage::embedded::bench_puts;
use wasmkube_apiserver::storage::etcd::{bench_raw_puts, EtcdOptions, EtcdStore, RawWrite};
use wasmkube_apiserver::storage::Storage;
use wasmkube_apiserver::{auth, open_store, serve, ApiServer};

mod http;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// ConfigMap creates/s through the apiserver's HTTP API vs. durable puts/s of the raw store.
    Apiserver {
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// ConfigMaps to create.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Bytes of data in each ConfigMap (and in each raw put).
        #[arg(long, default_value_t = 1024)]
        value_size: usize,
        /// Store backend to measure: `embedded` or `etcd://HOST:PORT[,HOST:PORT...]` (then the
        /// baseline is plain etcd-client puts to the same etcd).
        #[arg(long, default_value = "embedded")]
        store: String,
    },
    /// Scheduler throughput (scheduler_perf SchedulingBasic): a fresh apiserver, N node
    /// objects, M pods; first create to last binding. Last line: `throughput: X pods/s`.
    Scheduler {
        /// Node objects to create (no kubelets).
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Pods to create and schedule.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// percentageOfNodesToScore (0: upstream's adaptive default, 100: every node).
        #[arg(long, default_value_t = 0)]
        percentage_of_nodes_to_score: u32,
    },
    /// Pod create -> Running (seen by watch) with the module cached, next to a bare wasmtime
    /// instantiate+run of the same module. Last line: `p99: X ms, ratio: Y`.
    Startup {
        /// Pods to start.
        #[arg(long, default_value_t = 200)]
        pods: usize,
    },
    /// GETs through a Service's ClusterIP to the `http-hello` component (a pod behind the node
    /// proxy), next to the same component on a bare wasmtime-wasi-http loop. Last line:
    /// `ratio: X` (Service requests/s ÷ bare requests/s).
    Http {
        /// Requests per side.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The component to serve [default: examples/http-hello, built for wasm32-wasip2].
        #[arg(long)]
        component: Option<std::path::PathBuf>,
    },
}

pub async fn run(b: Bench) -> anyhow::Result<()> {
    match b {
        Bench::Apiserver {
            clients,
            count,
            value_size,
            store,
        } => apiserver(clients.max(1), count.max(1), value_size, &store).await,
        Bench::Scheduler {
            nodes,
            pods,
            percentage_of_nodes_to_score,
        } => {
            let opts = wasmkube_scheduler::bench::BenchOptions {
                percentage_of_nodes_to_score,
                ..Default::default()
            };
            let report =
                wasmkube_scheduler::bench::bench_with(nodes.max(1), pods.max(1), opts).await?;
            println!("{report}");
            Ok(())
        }
        Bench::Startup { pods } => {
            let dir = tempfile::tempdir().context("temp dir")?;
            let server =
                wasmkube_apiserver::LocalServer::start("embedded", &dir.path().join("api")).await?;
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
            let figures = wasmkube_kubelet::bench::startup(client, dir.path(), pods.max(1)).await?;
            println!("{}", figures.report());
            Ok(())
        }
        Bench::Http {
            requests,
            concurrency,
            component,
        } => http::run(requests.max(1), concurrency.max(1), component).await,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rounds of apiserver creates and raw puts, alternated: this VM's fsync latency drifts over
/// seconds, and alternating exposes both sides to the same drift. Medians are reported.
const ROUNDS: usize = 3;

async fn apiserver(
    clients: usize,
    count: usize,
    value_size: usize,
    store_spec: &str,
) -> anyhow::Result<()> {
    println!("bench apiserver: {count} ConfigMap creates, {clients} concurrent clients, {value_size} B values, store {store_spec}, {ROUNDS} alternating rounds");
    // Through the apiserver: HTTP + decode + defaults + validation + managedFields + store.
    let dir = tempfile::tempdir().context("temp dir")?;
    // The baseline: the same kind of store used directly, same value size and concurrency. For
    // etcd that is plain etcd-client puts against the same etcd, and the apiserver gets a fresh
    // key prefix (deleted afterwards) so that runs never collide.
    let (store, baseline, etcd_store) = if store_spec.starts_with("etcd://") {
        let mut options = EtcdOptions::from_spec(store_spec).map_err(anyhow::Error::msg)?;
        let raw = options.clone();
        options.prefix = format!("{}wasmkube-bench/{}/", options.prefix, uuid_like(),);
        let store = Arc::new(EtcdStore::connect(options).await?);
        let dyn_store: Arc<dyn Storage> = store.clone();
        (dyn_store, Baseline::Etcd(raw), Some(store))
    } else {
        let store = open_store(store_spec, dir.path()).await?;
        let raw_dir = tempfile::tempdir().context("temp dir")?;
        let raw_store = open_store(store_spec, raw_dir.path()).await?;
        (
            store,
            Baseline::Store {
                store: raw_store,
                _dir: raw_dir,
            },
            None,
        )
    };
    let shutdown = CancellationToken::new();
    let server = ApiServer::start(store, Box::new(auth::InsecureAdmin), shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, server));

    let per_round = count.div_ceil(ROUNDS);
    let (mut api_rates, mut raw_rates, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    // etcd only: also create transactions (put if absent), the write the store itself sends.
    let (mut txn_rates, mut txn_last) = (Vec::new(), None);
    let mut raw_last = None;
    for round in 0..ROUNDS {
        let first = round * per_round;
        let n = per_round.min(count - first.min(count));
        let (rate, mut l) = create_through_http(addr, clients, first, n, value_size).await?;
        api_rates.push(rate);
        lat.append(&mut l);
        let raw = match &baseline {
            Baseline::Store { store, .. } => {
                bench_puts(store.clone(), clients, n, value_size).await
            }
            Baseline::Etcd(options) => {
                let txn =
                    bench_raw_puts(options, clients, n, value_size, RawWrite::CreateTxn).await?;
                if txn.errors > 0 {
                    anyhow::bail!("{} raw create transactions failed", txn.errors);
                }
                txn_rates.push(txn.puts_per_sec);
                txn_last = Some(txn);
                bench_raw_puts(options, clients, n, value_size, RawWrite::Put).await?
            }
        };
        if raw.errors > 0 {
            anyhow::bail!("{} raw puts failed", raw.errors);
        }
        raw_rates.push(raw.puts_per_sec);
        raw_last = Some(raw);
    }
    shutdown.cancel();
    let _ = task.await;
    if let Some(store) = etcd_store {
        store.delete_all().await?;
    }
    lat.sort();
    let api_rate = median(&mut api_rates);
    let raw_rate = median(&mut raw_rates);
    println!(
        "apiserver: {:.0} creates/s (median of {ROUNDS} rounds), p50 {:.2} ms, p99 {:.2} ms",
        api_rate,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
    );
    if let Some(raw) = raw_last {
        let what = match baseline {
            Baseline::Store { .. } => "raw store: {rate} durable puts/s",
            Baseline::Etcd(_) => "raw etcd: {rate} etcd-client puts/s",
        };
        println!(
            "{} (median of {ROUNDS} rounds), last round p50 {:.2} ms, p99 {:.2} ms",
            what.replace("{rate}", &format!("{raw_rate:.0}")),
            ms(raw.p50),
            ms(raw.p99),
        );
    }
    if let Some(txn) = txn_last {
        let txn_rate = median(&mut txn_rates);
        println!(
            "raw etcd: {txn_rate:.0} etcd-client create transactions/s (put if absent, as the store writes; median of {ROUNDS} rounds), last round p50 {:.2} ms, p99 {:.2} ms",
            ms(txn.p50),
            ms(txn.p99),
        );
        println!(
            "apiserver / create transactions: {:.3}",
            api_rate / txn_rate.max(f64::MIN_POSITIVE)
        );
    }
    println!("ratio: {:.3}", api_rate / raw_rate.max(f64::MIN_POSITIVE));
    Ok(())
}

/// What the apiserver's figure is compared with.
enum Baseline {
    /// The same kind of store, opened directly (its temp dir lives as long as it).
    Store {
        store: Arc<dyn Storage>,
        _dir: tempfile::TempDir,
    },
    /// Plain etcd-client puts against the same etcd.
    Etcd(EtcdOptions),
}

/// A unique name for one run's keys.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Creates ConfigMaps `cm-first` .. `cm-(first+n)` with `clients` keep-alive connections;
/// returns creates/s and every latency.
async fn create_through_http(
    addr: std::net::SocketAddr,
    clients: usize,
    first: usize,
    n: usize,
    value_size: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let data = "x".repeat(value_size);
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + n;
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (data, next, errors) = (data.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = match HttpConn::connect(addr).await {
                Ok(c) => c,
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return lat;
                }
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return lat;
                }
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i}")}, "data": {"v": data}})
                .to_string();
                let t = Instant::now();
                match conn.post(PATH, &body).await {
                    Ok(201) => lat.push(t.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        anyhow::bail!("{failed} creates failed");
    }
    Ok((lat.len() as f64 / elapsed.as_secs_f64(), lat))
}

const PATH: &str = "/api/v1/namespaces/default/configmaps";

/// A minimal HTTP/1.1 keep-alive client, as load generators like wrk use: the load it adds to
/// this 2-core machine is small, so the figure measures the server.
struct HttpConn {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl HttpConn {
    async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// POSTs a JSON body; returns the status code after reading the whole response.
    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes()).await
    }

    /// GETs `path`; returns the status code after reading the whole response.
    async fn get(&mut self, path: &str) -> std::io::Result<u16> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.send(req.as_bytes()).await
    }

    /// Sends one request; returns the status code after reading the whole response.
    async fn send(&mut self, req: &[u8]) -> std::io::Result<u16> {
        self.stream.get_mut().write_all(req).await?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(bad("connection closed"));
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        match (length, chunked) {
            (Some(n), _) => {
                self.body.resize(n, 0);
                self.stream.read_exact(&mut self.body).await?;
            }
            (None, true) => loop {
                self.line.clear();
                self.stream.read_line(&mut self.line).await?;
                let n =
                    usize::from_str_radix(self.line.trim(), 16).map_err(|_| bad("bad chunk"))?;
                self.body.resize(n + 2, 0);
                self.stream.read_exact(&mut self.body).await?;
                if n == 0 {
                    break;
                }
            },
            (None, false) => return Err(bad("response without length")),
        }
        Ok(status)
    }
}
