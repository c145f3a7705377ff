//! `wasmkube bench http`: requests/s and p99 latency through a Service's ClusterIP to the
//! `http-hello` component run as a pod, next to the same component served by a bare
//! wasmtime-wasi-http host loop in this process (one instance per request, pooling allocator,
//! hyper; no kubelet code). Rounds alternate between the two so both see the same machine
//! drift; medians are reported. Last line: `ratio: X` (Service requests/s ÷ bare requests/s).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{median, ms, percentile, HttpConn};

const IMAGE: &str = "wasmkube.local/http-hello:bench";
const ROUNDS: usize = 3;

/// Runs the benchmark and prints its report.
pub async fn run(
    requests: usize,
    concurrency: usize,
    component: Option<PathBuf>,
) -> anyhow::Result<()> {
    let wasm = match component {
        Some(p) => p,
        None => build_example()?,
    };
    println!(
        "bench http: {requests} GETs, {concurrency} keep-alive connections, {} ({} B), {ROUNDS} alternating rounds",
        wasm.display(),
        std::fs::metadata(&wasm).with_context(|| format!("reading {}", wasm.display()))?.len()
    );
    let dir = tempfile::tempdir().context("temp dir")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = CancellationToken::new();
    let cluster = start_cluster(dir.path(), &wasm, &stop).await?;
    let (cluster_ip, pod) = (cluster.service, cluster.pod);
    let bare = bare_server(&wasm, &stop).await?;
    // Warm both (compiled code, pools, connections).
    let warm = (requests / 20).clamp(50, 1000);
    load(cluster_ip, concurrency, warm).await?;
    load(bare, concurrency, warm).await?;
    load(pod, concurrency, warm).await?;
    let per_round = requests.div_ceil(ROUNDS).max(1);
    let (mut svc_rates, mut bare_rates, mut svc_lat, mut bare_lat) =
        (vec![], vec![], vec![], vec![]);
    let (mut pod_rates, mut pod_lat) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let (rate, mut lat) = load(cluster_ip, concurrency, per_round).await?;
        svc_rates.push(rate);
        svc_lat.append(&mut lat);
        let (rate, mut lat) = load(bare, concurrency, per_round).await?;
        bare_rates.push(rate);
        bare_lat.append(&mut lat);
        // For reference: the pod's own address, without the node proxy.
        let (rate, mut lat) = load(pod, concurrency, per_round).await?;
        pod_rates.push(rate);
        pod_lat.append(&mut lat);
    }
    // Components first, then the apiserver they talk to: a quiet shutdown.
    stop.cancel();
    for c in cluster.components {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    drop(cluster.server);
    svc_lat.sort();
    bare_lat.sort();
    pod_lat.sort();
    let (svc, bare_rate) = (median(&mut svc_rates), median(&mut bare_rates));
    println!(
        "service {cluster_ip}: {svc:.0} requests/s (median of {ROUNDS} rounds), p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&svc_lat, 0.5)),
        ms(percentile(&svc_lat, 0.99)),
    );
    println!(
        "pod {pod} (no proxy, for reference): {:.0} requests/s (median of {ROUNDS} rounds), p50 {:.2} ms, p99 {:.2} ms",
        median(&mut pod_rates),
        ms(percentile(&pod_lat, 0.5)),
        ms(percentile(&pod_lat, 0.99)),
    );
    println!(
        "bare wasmtime-wasi-http: {bare_rate:.0} requests/s (median of {ROUNDS} rounds), p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&bare_lat, 0.5)),
        ms(percentile(&bare_lat, 0.99)),
    );
    println!("ratio: {:.3}", svc / bare_rate.max(f64::MIN_POSITIVE));
    Ok(())
}

/// Builds the examples workspace for wasm32-wasip2 (a no-op when up to date) and returns
/// `http_hello.wasm`.
fn build_example() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .args([
            "build",
            "--release",
            "-p",
            "http-hello",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(dir.join("target"))
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "building examples/http-hello for wasm32-wasip2 failed (pass --component FILE to use a \
         built one):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir.join("target/wasm32-wasip2/release/http_hello.wasm"))
}

/// The in-process cluster of the benchmark.
struct Cluster {
    /// `ClusterIP:80`
    service: SocketAddr,
    /// The pod's own `podIP:8080`.
    pod: SocketAddr,
    server: wasmkube_apiserver::LocalServer,
    components: Vec<tokio::task::JoinHandle<()>>,
}

/// An in-process cluster (apiserver, scheduler, controllers, one kubelet) serving `wasm` as a
/// one-replica Deployment behind a ClusterIP Service, once `ClusterIP:80` answers.
async fn start_cluster(
    dir: &Path,
    wasm: &Path,
    stop: &CancellationToken,
) -> anyhow::Result<Cluster> {
    let server = wasmkube_apiserver::LocalServer::start("embedded", &dir.join("api")).await?;
    let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
    let node_dir = dir.join("node");
    std::fs::create_dir_all(&node_dir)?;
    wasmkube_kubelet::import(&node_dir, wasm, IMAGE).context("importing the component")?;
    let mut components = Vec::new();
    let (c, s) = (client.clone(), stop.clone());
    components.push(tokio::spawn(async move {
        if let Err(e) = wasmkube_scheduler::run(c, wasmkube_scheduler::Config::default(), s).await {
            tracing::error!("scheduler: {e}");
        }
    }));
    let config = wasmkube_controllers::ControllerConfig {
        leader_election: false,
        ..Default::default()
    };
    let (c, s) = (client.clone(), stop.clone());
    components.push(tokio::spawn(async move {
        if let Err(e) = wasmkube_controllers::run(c, config, s).await {
            tracing::error!("controllers: {e}");
        }
    }));
    let (c, s) = (client.clone(), stop.clone());
    let kubelet = wasmkube_kubelet::KubeletConfig::new("bench-node", node_dir);
    components.push(tokio::spawn(async move {
        if let Err(e) = wasmkube_kubelet::run(c, kubelet, s).await {
            tracing::error!("kubelet: {e}");
        }
    }));
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": [{
                "name": "hello", "image": IMAGE, "imagePullPolicy": "Never",
                "ports": [{"containerPort": 8080, "name": "http"}],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            }]}}}
    }))?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": "http"}]}
    }))?;
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await?;
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service got no ClusterIP")?;
    let addr: SocketAddr = format!("{ip}:80").parse()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut conn) = HttpConn::connect(addr).await {
            if let Ok(200) = conn.get("/").await {
                let pods = Api::<Pod>::namespaced(client, "default")
                    .list(&ListParams::default().labels("app=hello"))
                    .await?;
                let ip = pods
                    .items
                    .iter()
                    .find_map(|p| p.status.as_ref()?.pod_ip.clone())
                    .context("the pod has no IP")?;
                return Ok(Cluster {
                    service: addr,
                    pod: format!("{ip}:8080").parse()?,
                    server,
                    components,
                });
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Service at {addr} did not answer 200 within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `requests` GETs over `concurrency` keep-alive connections; requests/s and every latency.
async fn load(
    addr: SocketAddr,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, errors) = (next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = None;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                if conn.is_none() {
                    conn = HttpConn::connect(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let t = Instant::now();
                match c.get("/").await {
                    Ok(200) => lat.push(t.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    let failed = errors.load(Ordering::Relaxed);
    anyhow::ensure!(
        failed == 0,
        "{failed} of {requests} requests to {addr} failed"
    );
    Ok((lat.len() as f64 / elapsed.as_secs_f64(), lat))
}

/// The baseline host's per-request state.
struct Bare {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// The bare host loop: wasmtime-wasi-http's serving recipe on 127.0.0.1, one instance per
/// request; returns its address. Stops with `stop`.
async fn bare_server(wasm: &Path, stop: &CancellationToken) -> anyhow::Result<SocketAddr> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(1000)
        .total_memories(1000)
        .total_stacks(1000)
        .total_core_instances(4000)
        .total_tables(4000);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, wasm)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
            };
            let _ = stream.set_nodelay(true);
            let pre = pre.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let pre = pre.clone();
                    async move { Ok::<_, Infallible>(handle(&pre, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    pre: &ProxyPre<Bare>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    let mut store = Store::new(
        pre.engine(),
        Bare {
            ctx: WasiCtxBuilder::new().env("POD_NAME", "bare").build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let prepared = (|| {
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        wasmtime::Result::<_>::Ok((req, out))
    })();
    let Ok((req, out)) = prepared else {
        return error_response();
    };
    let pre = pre.clone();
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
    });
    match receiver.await {
        Ok(Ok(resp)) => {
            drop(task); // detached: the guest may still be writing the body
            resp
        }
        _ => error_response(),
    }
}

fn error_response() -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(b"error\n"))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    resp
}
