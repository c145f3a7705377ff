//! `metrics.k8s.io/v1beta1`: node and pod usage for `kubectl top` and the HPA, the
//! metrics-server role built in. Each request asks the kubelets' `/stats/summary` (over TLS with
//! the apiserver's client certificate, in parallel, a few seconds at most each) and answers
//! upstream's `NodeMetrics` / `PodMetrics`: CPU as the rate the kubelet measured
//! (`usageNanoCores`), memory as the working set. A kubelet that does not answer leaves its node
//! and pods out, as metrics-server does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;

use crate::errors::ApiError;
use crate::podlog::{kubelet_get, KubeletEndpoint};
use crate::request::Params;
use crate::selectors::LabelSelector;
use crate::storage::ListOptions;
use crate::ApiServer;

/// How long one kubelet may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The window the usage stands for, as reported (the kubelet's rates span at least 1 s).
const WINDOW: &str = "1s";

fn not_found_path() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

pub async fn handle(
    server: &Arc<ApiServer>,
    version: &str,
    rest: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    if version != "v1beta1" {
        return Err(not_found_path());
    }
    let params = Params::parse(query)?;
    let selector = LabelSelector::parse(params.str("labelSelector"))?;
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let body = match segs.as_slice() {
        ["nodes"] => list(
            "NodeMetricsList",
            node_metrics(server, None, &selector).await?,
        ),
        ["nodes", name] => node_metrics(server, Some(name), &selector)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found("metrics.k8s.io", "nodes", name))?,
        ["pods"] => list(
            "PodMetricsList",
            pod_metrics(server, None, None, &selector).await?,
        ),
        ["namespaces", ns, "pods"] => list(
            "PodMetricsList",
            pod_metrics(server, Some(ns), None, &selector).await?,
        ),
        ["namespaces", ns, "pods", name] => pod_metrics(server, Some(ns), Some(name), &selector)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found("metrics.k8s.io", "pods", name))?,
        _ => return Err(not_found_path()),
    };
    Ok(axum::Json(body).into_response())
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

/// Objects under `prefix` in the store.
async fn stored(server: &ApiServer, prefix: String) -> Result<Vec<Value>, ApiError> {
    let page = server
        .store
        .list(ListOptions {
            prefix,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

fn labels(obj: &Value) -> Map<String, Value> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The summaries of `nodes`' kubelets, by node name (nodes that did not answer are missing).
async fn summaries(server: &ApiServer, nodes: &[Value]) -> HashMap<String, Value> {
    let tls = server.kubelet_tls.get();
    let scrapes = nodes.iter().map(|node| async move {
        let name = crate::object::name(node).to_string();
        let summary = tokio::time::timeout(SCRAPE_TIMEOUT, async {
            let endpoint = KubeletEndpoint::of(node).ok()?;
            let (code, reader) = kubelet_get(&endpoint, "/stats/summary", tls).await.ok()?;
            let mut body = Vec::new();
            reader.take(64 << 20).read_to_end(&mut body).await.ok()?;
            (code == 200).then(|| serde_json::from_slice::<Value>(&body).ok())?
        })
        .await;
        match summary {
            Ok(Some(s)) => Some((name, s)),
            _ => {
                tracing::debug!(node = %name, "no stats summary from the kubelet");
                None
            }
        }
    });
    futures::future::join_all(scrapes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Upstream's quantities: CPU in nanocores, memory in KiB.
fn usage(stats: &Value) -> Value {
    let cpu = stats["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
    let memory = stats["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", memory / 1024)})
}

fn timestamp(stats: &Value) -> Value {
    stats["cpu"]["time"].clone()
}

async fn node_metrics(
    server: &ApiServer,
    name: Option<&str>,
    selector: &LabelSelector,
) -> Result<Vec<Value>, ApiError> {
    let nodes: Vec<Value> = stored(server, "nodes/".into())
        .await?
        .into_iter()
        .filter(|n| name.is_none_or(|want| crate::object::name(n) == want))
        .filter(|n| selector.matches(&labels(n)))
        .collect();
    let summaries = summaries(server, &nodes).await;
    Ok(nodes
        .iter()
        .filter_map(|n| {
            let name = crate::object::name(n);
            let node = &summaries.get(name)?["node"];
            Some(json!({
                "kind": "NodeMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": name, "labels": n["metadata"]["labels"].clone(),
                             "creationTimestamp": timestamp(node)},
                "timestamp": timestamp(node),
                "window": WINDOW,
                "usage": usage(node),
            }))
        })
        .collect())
}

async fn pod_metrics(
    server: &ApiServer,
    namespace: Option<&str>,
    name: Option<&str>,
    selector: &LabelSelector,
) -> Result<Vec<Value>, ApiError> {
    let prefix = match namespace {
        Some(ns) => format!("pods/{ns}/"),
        None => "pods/".into(),
    };
    let pods: Vec<Value> = stored(server, prefix)
        .await?
        .into_iter()
        .filter(|p| name.is_none_or(|want| crate::object::name(p) == want))
        .filter(|p| selector.matches(&labels(p)))
        .collect();
    // Only the nodes these pods run on are asked.
    let mut wanted: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let nodes: Vec<Value> = stored(server, "nodes/".into())
        .await?
        .into_iter()
        .filter(|n| wanted.binary_search(&crate::object::name(n)).is_ok())
        .collect();
    let summaries = summaries(server, &nodes).await;
    // The summaries' pods by uid (a pod recreated under the same name is another pod).
    let mut by_uid: HashMap<&str, &Value> = HashMap::new();
    for s in summaries.values() {
        for p in s["pods"].as_array().into_iter().flatten() {
            if let Some(uid) = p["podRef"]["uid"].as_str() {
                by_uid.insert(uid, p);
            }
        }
    }
    Ok(pods
        .iter()
        .filter_map(|p| {
            let uid = p.pointer("/metadata/uid").and_then(Value::as_str)?;
            let stats = by_uid.get(uid)?;
            let containers: Vec<Value> = stats["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"name": c["name"].clone(), "usage": usage(c)}))
                .collect();
            Some(json!({
                "kind": "PodMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": crate::object::name(p),
                             "namespace": crate::object::namespace(p),
                             "labels": p["metadata"]["labels"].clone(),
                             "creationTimestamp": timestamp(stats)},
                "timestamp": timestamp(stats),
                "window": WINDOW,
                "containers": containers,
            }))
        })
        .collect())
}
