//! `wasmkube bench ...`: each benchmark starts what it needs, prints its figures, and a
//! baseline measured in the same run, as a ratio on its last line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::storage::embedded::bench_puts;
use wasmkube_apiserver::{auth, open_store, serve, ApiServer};

#[derive(clap::Subcommand)]
pub enum Bench {
    /// ConfigMap creates/s through the apiserver's HTTP API vs. durable puts/s of the raw store.
    Apiserver {
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// ConfigMaps to create.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Bytes of data in each ConfigMap (and in each raw put).
        #[arg(long, default_value_t = 1024)]
        value_size: usize,
        /// Store backend to measure.
        #[arg(long, default_value = "embedded")]
        store: String,
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

async fn apiserver(
    clients: usize,
    count: usize,
    value_size: usize,
    store_spec: &str,
) -> anyhow::Result<()> {
    println!("bench apiserver: {count} ConfigMap creates, {clients} concurrent clients, {value_size} B values, store {store_spec}");
    // Through the apiserver: HTTP + decode + defaults + validation + store.
    let dir = tempfile::tempdir().context("temp dir")?;
    let store = open_store(store_spec, dir.path()).await?;
    let shutdown = CancellationToken::new();
    let server = ApiServer::start(store, Box::new(auth::InsecureAdmin), shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!(
        "http://{}/api/v1/namespaces/default/configmaps",
        listener.local_addr()?
    );
    let task = tokio::spawn(serve(listener, server));

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http();
    let data = "x".repeat(value_size);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, data, next, errors) = (
            client.clone(),
            url.clone(),
            data.clone(),
            next.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return lat;
                }
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i}")}, "data": {"v": data}})
                .to_string();
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid request");
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        status == http::StatusCode::CREATED
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    let _ = task.await;
    lat.sort();
    let api_rate = lat.len() as f64 / elapsed.as_secs_f64();
    let failed = errors.load(Ordering::Relaxed);
    println!(
        "apiserver: {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms ({} ok, {failed} failed, {:.2} s)",
        api_rate,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        lat.len(),
        elapsed.as_secs_f64()
    );
    if failed > 0 {
        anyhow::bail!("{failed} creates failed");
    }

    // Baseline: the same store, used directly, with the same value size and concurrency.
    let raw_dir = tempfile::tempdir().context("temp dir")?;
    let raw_store = open_store(store_spec, raw_dir.path()).await?;
    let raw = bench_puts(raw_store, clients, count, value_size).await;
    println!(
        "raw store: {:.0} durable puts/s, p50 {:.2} ms, p99 {:.2} ms ({} failed)",
        raw.puts_per_sec,
        ms(raw.p50),
        ms(raw.p99),
        raw.errors
    );
    println!(
        "ratio: {:.3}",
        api_rate / raw.puts_per_sec.max(f64::MIN_POSITIVE)
    );
    Ok(())
}
