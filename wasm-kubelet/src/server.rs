//! The kubelet HTTP API used by the apiserver: `/containerLogs/{ns}/{pod}/{container}`
//! (follow, tailLines, sinceSeconds, timestamps, previous, limitBytes), `/healthz` and
//! `/stats/summary`.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::runtime::logs::{self, Record};
use crate::runtime::sandbox::Usage;

/// How often a followed log is polled for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The log files of containers that are running now (a follow ends when its file leaves).
#[derive(Clone, Default)]
pub struct LiveLogs(Arc<Mutex<HashSet<PathBuf>>>);

impl LiveLogs {
    pub fn insert(&self, path: &Path) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(path.to_path_buf());
        }
    }

    pub fn remove(&self, path: &Path) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(path);
        }
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(path))
    }
}

/// A pod as `/stats/summary` names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One running container's usage handle.
#[derive(Clone, Debug)]
pub struct ContainerStat {
    pub started: String,
    pub usage: Arc<Usage>,
    /// The CPU usage rate as `/stats/summary` last measured it.
    pub cpu: Arc<CpuWindow>,
}

/// A CPU usage rate (`usageNanoCores`) measured between samples at least [`CpuWindow::MIN`]
/// apart: scrapes in quick succession (kubectl top and the HPA) share one window instead of
/// measuring nothing.
#[derive(Debug)]
pub struct CpuWindow(Mutex<(std::time::Instant, u64, Option<u64>)>);

impl Default for CpuWindow {
    /// A window opening now, at zero CPU time.
    fn default() -> Self {
        Self(Mutex::new((std::time::Instant::now(), 0, None)))
    }
}

impl CpuWindow {
    /// The shortest window a rate is measured over.
    pub const MIN: std::time::Duration = std::time::Duration::from_secs(1);

    /// The rate (CPU nanoseconds per second) now that the total is `total_nanos`.
    pub fn rate(&self, total_nanos: u64) -> u64 {
        let now = std::time::Instant::now();
        let Ok(mut w) = self.0.lock() else {
            return 0;
        };
        let (at, nanos, rate) = *w;
        let elapsed = now.duration_since(at);
        if elapsed < Self::MIN {
            if let Some(r) = rate {
                return r;
            }
        }
        let secs = elapsed.as_secs_f64().max(1e-3);
        let r = (total_nanos.saturating_sub(nanos) as f64 / secs) as u64;
        if elapsed >= Self::MIN {
            *w = (now, total_nanos, Some(r));
        }
        r
    }
}

/// The machine's busy CPU time (all cores) from `/proc/stat`, in nanoseconds.
fn node_cpu_nanos() -> u64 {
    // USER_HZ: 100 on every Linux platform Rust targets.
    const NANOS_PER_TICK: u64 = 10_000_000;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) * NANOS_PER_TICK
}

/// The usage of running containers, by pod (entries live while the container runs).
#[derive(Clone, Default)]
pub struct PodStats(Arc<Mutex<BTreeMap<PodRef, BTreeMap<String, ContainerStat>>>>);

impl PodStats {
    pub fn insert(&self, pod: PodRef, container: &str, stat: ContainerStat) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(pod)
                .or_default()
                .insert(container.to_string(), stat);
        }
    }

    pub fn remove(&self, pod: &PodRef, container: &str) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(cs) = m.get_mut(pod) {
                cs.remove(container);
                if cs.is_empty() {
                    m.remove(pod);
                }
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<PodRef, BTreeMap<String, ContainerStat>> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    pub pods_dir: PathBuf,
    pub live: LiveLogs,
    pub stats: PodStats,
    pub node_name: String,
    /// Reviews callers' bearer tokens ([`crate::authn`]); None lets anonymous callers in
    /// (`anonymous_auth`).
    pub reviewer: Option<Arc<crate::authn::TokenReviewer>>,
    /// The machine's CPU usage rate.
    pub node_cpu: Arc<CpuWindow>,
}

/// The kubelet API's routes.
pub fn app(state: ServerState) -> Router {
    let reviewer = state.reviewer.clone();
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats/summary", get(stats_summary))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(state);
    match reviewer {
        Some(reviewer) => routes.layer(axum::middleware::from_fn_with_state(
            reviewer,
            crate::authn::authenticate,
        )),
        None => routes,
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// `kubectl logs` options, as the apiserver forwards them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    #[serde(default)]
    pub follow: Option<String>,
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(default)]
    pub timestamps: Option<String>,
    #[serde(default)]
    pub tail_lines: Option<i64>,
    #[serde(default)]
    pub since_seconds: Option<i64>,
    #[serde(default)]
    pub limit_bytes: Option<i64>,
}

fn flag(v: &Option<String>) -> bool {
    // `kubectl` sends `true`; an empty value (`?follow`) means true as well.
    matches!(v.as_deref(), Some("true" | "1" | ""))
}

/// The newest directory of pod `ns/name` (a recreated pod has a new uid).
fn pod_dir(pods_dir: &Path, ns: &str, name: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{name}_");
    std::fs::read_dir(pods_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The run numbers of a container's log files, ascending.
fn runs(dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    runs
}

fn render(records: &[Record], timestamps: bool) -> String {
    let mut out = String::new();
    for r in records {
        if timestamps {
            out.push_str(&r.timestamp);
            out.push(' ');
        }
        out.push_str(&r.text);
        if r.full {
            out.push('\n');
        }
    }
    out
}

async fn container_logs(
    State(state): State<ServerState>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(opts): Query<LogOptions>,
) -> Response {
    // Names are DNS labels/subdomains: nothing else may reach the file system.
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if ![&ns, &pod, &container].iter().all(|s| valid(s)) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid namespace, pod or container name: {ns:?}/{pod:?}/{container:?}"),
        );
    }
    let Some(dir) = pod_dir(&state.pods_dir, &ns, &pod) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} has no logs on this node"),
        );
    };
    let dir = dir.join(&container);
    let runs = runs(&dir);
    let Some(&current) = runs.last() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod {ns}/{pod} has not started"),
        );
    };
    let run = if flag(&opts.previous) {
        match runs.iter().rev().nth(1) {
            Some(&r) => r,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                )
            }
        }
    } else {
        current
    };
    let path = dir.join(format!("{run}.log"));
    let mut records = match logs::read_all(&path) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")),
    };
    if let Some(since) = opts.since_seconds.filter(|s| *s > 0) {
        let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(since);
        records.retain(|r| {
            r.timestamp
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t >= cutoff)
        });
    }
    if let Some(tail) = opts.tail_lines.filter(|t| *t >= 0) {
        let tail = usize::try_from(tail).unwrap_or(usize::MAX);
        let skip = records.len().saturating_sub(tail);
        records.drain(..skip);
    }
    let timestamps = flag(&opts.timestamps);
    let mut initial = render(&records, timestamps);
    if let Some(limit) = opts.limit_bytes.and_then(|l| usize::try_from(l).ok()) {
        let mut cut = limit.min(initial.len());
        while !initial.is_char_boundary(cut) {
            cut -= 1;
        }
        initial.truncate(cut);
    }
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !flag(&opts.follow) || !state.live.contains(&path) {
        return (text_plain, initial).into_response();
    }
    let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(initial))).await.is_err() {
            return;
        }
        let mut offset = offset;
        let mut carry = String::new();
        loop {
            let live = state.live.contains(&path);
            let (chunk, next) = read_from(&path, offset);
            offset = next;
            carry.push_str(&chunk);
            let complete = carry.rfind('\n').map(|i| i + 1).unwrap_or(0);
            if complete > 0 {
                let lines: Vec<Record> =
                    carry[..complete].lines().filter_map(logs::parse).collect();
                carry.drain(..complete);
                if tx
                    .send(Ok(Bytes::from(render(&lines, timestamps))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !live {
                return;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (text_plain, body).into_response()
}

/// The bytes appended to `path` after `offset` (from the start if it was rotated).
fn read_from(path: &Path, offset: u64) -> (String, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), offset);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if len < offset { 0 } else { offset };
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (String::new(), offset);
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return (String::new(), offset);
    }
    let next = start + buf.len() as u64;
    (String::from_utf8_lossy(&buf).into_owned(), next)
}

async fn stats_summary(State(state): State<ServerState>) -> Json<serde_json::Value> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(':')?;
            v.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|k| k * 1024)
        })
    };
    let total = field("MemTotal").unwrap_or(0);
    let available = field("MemAvailable").unwrap_or(0);
    let pods: Vec<serde_json::Value> = state
        .stats
        .snapshot()
        .into_iter()
        .map(|(pod, containers)| {
            let (mut pod_bytes, mut pod_rate, mut pod_nanos) = (0u64, 0u64, 0u64);
            let containers: Vec<serde_json::Value> = containers
                .into_iter()
                .map(|(name, c)| {
                    let bytes = c.usage.memory_bytes.load(Ordering::Relaxed);
                    let nanos = c.usage.cpu_nanos.load(Ordering::Relaxed);
                    let rate = c.cpu.rate(nanos);
                    pod_bytes += bytes;
                    pod_rate += rate;
                    pod_nanos += nanos;
                    json!({
                        "name": name,
                        "startTime": c.started,
                        "cpu": {"time": now, "usageNanoCores": rate, "usageCoreNanoSeconds": nanos},
                        "memory": {"time": now, "usageBytes": bytes, "workingSetBytes": bytes},
                    })
                })
                .collect();
            json!({
                "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "containers": containers,
                "cpu": {"time": now, "usageNanoCores": pod_rate, "usageCoreNanoSeconds": pod_nanos},
                "memory": {"time": now, "usageBytes": pod_bytes, "workingSetBytes": pod_bytes},
            })
        })
        .collect();
    let node_nanos = node_cpu_nanos();
    Json(json!({
        "node": {
            "nodeName": state.node_name,
            "startTime": now,
            "cpu": {
                "time": now,
                "usageNanoCores": state.node_cpu.rate(node_nanos),
                "usageCoreNanoSeconds": node_nanos,
            },
            "memory": {
                "time": now,
                "availableBytes": available,
                "workingSetBytes": total.saturating_sub(available),
            },
        },
        "pods": pods,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn names_that_could_escape_the_log_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(ServerState {
            pods_dir: dir.path().to_path_buf(),
            live: LiveLogs::default(),
            stats: PodStats::default(),
            node_name: "n".into(),
            reviewer: None,
            node_cpu: Default::default(),
        });
        let req = |uri: &str| {
            axum::http::Request::builder()
                .uri(uri)
                .body(Body::empty())
                .unwrap()
        };
        let res = app
            .clone()
            .oneshot(req("/containerLogs/default/p/.."))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let res = app
            .oneshot(req("/containerLogs/default/p/c"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    async fn body(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn tail_since_timestamps_and_previous_select_the_right_lines() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("default_p_uid1/c");
        std::fs::create_dir_all(&c).unwrap();
        let old = "2001-01-01T00:00:00.000000000Z";
        std::fs::write(c.join("0.log"), format!("{old} stdout F first run\n")).unwrap();
        let now = jiff::Timestamp::now();
        std::fs::write(
            c.join("1.log"),
            format!("{old} stdout F old line\n{now:.9} stderr F new line\n{now:.9} stdout P part"),
        )
        .unwrap();
        let app = app(ServerState {
            pods_dir: dir.path().to_path_buf(),
            live: LiveLogs::default(),
            stats: PodStats::default(),
            node_name: "n".into(),
            reviewer: None,
            node_cpu: Default::default(),
        });
        let get = |q: &str| {
            let uri = format!("/containerLogs/default/p/c{q}");
            let app = app.clone();
            async move {
                let req = axum::http::Request::builder()
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap();
                body(app.oneshot(req).await.unwrap()).await
            }
        };
        assert_eq!(get("").await, "old line\nnew line\npart");
        assert_eq!(get("?tailLines=1").await, "part");
        assert_eq!(get("?sinceSeconds=60").await, "new line\npart");
        assert_eq!(get("?previous=true").await, "first run\n");
        assert_eq!(
            get("?previous=true&timestamps=true").await,
            format!("{old} first run\n")
        );
        assert_eq!(get("?limitBytes=3").await, "old");
    }
}
