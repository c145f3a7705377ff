//! The apiserver in-process over the etcd backend: HTTP statuses for etcd's errors (410 after
//! compaction, 503 when etcd is unreachable, quickly), consistent pages, and two apiservers on
//! one etcd serving one cluster.
//!
//! Tests that need etcd use `WASMKUBE_TEST_ETCD` (scripts/test starts etcd and sets it): without
//! it they are skipped with a printed reason, except under CI, where they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::storage::etcd::{test_endpoint, EtcdOptions, EtcdStore};
use wasmkube_apiserver::storage::Storage;
use wasmkube_apiserver::{app, auth, ApiServer};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// One apiserver over one etcd store.
struct Api {
    router: Router,
    store: Arc<EtcdStore>,
}

impl Api {
    async fn start(options: EtcdOptions) -> Self {
        let store = Arc::new(EtcdStore::connect(options).await.expect("connect"));
        let server = ApiServer::start(
            store.clone(),
            Box::new(auth::InsecureAdmin),
            CancellationToken::new(),
        )
        .await
        .expect("start");
        Api {
            router: app(server),
            store,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// A watch response read until the server closes it (timeoutSeconds bounds it).
    async fn watch_lines(&self, path: &str) -> Vec<Value> {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let text = match body {
            Value::String(s) => s,
            other => other.to_string(),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("event JSON"))
            .collect()
    }
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("resourceVersion")
}

/// Options for a fresh cluster on the test etcd (a key prefix of its own).
fn options(endpoint: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: vec![endpoint.to_string()],
        prefix: format!("/wasmkube-test/{}/", uuid::Uuid::new_v4().simple()),
        compaction_interval: None,
        ..Default::default()
    }
}

/// Compaction is global in etcd: the tests of this binary take turns.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

#[tokio::test]
async fn unreachable_etcd_answers_503_quickly() {
    // Nothing listens on port 1. The apiserver is assembled directly: `start` would fail on
    // its first write, which is the point.
    let store = Arc::new(
        EtcdStore::connect(EtcdOptions {
            endpoints: vec!["http://127.0.0.1:1".into()],
            request_timeout: Duration::from_secs(1),
            compaction_interval: None,
            ..Default::default()
        })
        .await
        .expect("the channel is lazy"),
    );
    let server = Arc::new(ApiServer {
        store: store.clone(),
        authenticator: Box::new(auth::InsecureAdmin),
        shutdown: CancellationToken::new(),
        namespaces: Default::default(),
        services: Default::default(),
        kubelet_tls: Default::default(),
    });
    let api = Api {
        router: app(server),
        store,
    };
    for (method, path, body) in [
        ("GET", CMS.to_string(), None),
        ("GET", format!("{CMS}/a"), None),
        ("POST", CMS.to_string(), Some(cm("a"))),
        (
            "PATCH",
            format!("{CMS}/a"),
            Some(json!({"data": {"a": "2"}})),
        ),
        ("DELETE", format!("{CMS}/a"), None),
        ("GET", format!("{CMS}?watch=1&resourceVersion=5"), None),
    ] {
        let started = Instant::now();
        let (code, status) = api.call(method, &path, body).await;
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {status}"
        );
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["code"], 503);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{method} {path} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn api_semantics_over_etcd() {
    let Some(endpoint) = test_endpoint("api_semantics_over_etcd") else {
        return;
    };
    let _turn = turn().await;
    let api = Api::start(options(&endpoint)).await;

    // resourceVersions are etcd's revisions.
    let (code, a) = api.post(CMS, cm("a")).await;
    assert_eq!(code, StatusCode::CREATED, "{a}");
    let etcd_rev = api.store.current_revision().await.expect("rev");
    assert_eq!(rv(&a), etcd_rev);
    let (code, s) = api.post(CMS, cm("a")).await;
    assert_eq!(code, StatusCode::CONFLICT, "{s}");
    assert_eq!(s["reason"], "AlreadyExists");

    // A stale resourceVersion conflicts.
    let mut stale = a.clone();
    stale["data"]["a"] = json!("2");
    let (code, updated) = api
        .call("PUT", &format!("{CMS}/a"), Some(stale.clone()))
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert!(rv(&updated) > rv(&a));
    let (code, s) = api.call("PUT", &format!("{CMS}/a"), Some(stale)).await;
    assert_eq!(code, StatusCode::CONFLICT, "{s}");

    // Pages of one list are one snapshot even with writes between them.
    for i in 0..6 {
        api.post(CMS, cm(&format!("p{i}"))).await;
    }
    let (_, page1) = api.get(&format!("{CMS}?limit=3")).await;
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    api.post(CMS, cm("p99")).await;
    let (_, page2) = api.get(&format!("{CMS}?limit=3&continue={token}")).await;
    let (_, page3) = api
        .get(&format!(
            "{CMS}?limit=3&continue={}",
            page2["metadata"]["continue"].as_str().expect("continue")
        ))
        .await;
    let names: Vec<String> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| p["items"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["a", "p0", "p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(
        page1["metadata"]["resourceVersion"],
        page3["metadata"]["resourceVersion"]
    );

    // A watch from an old version replays; after compaction it ends with a 410 ERROR event,
    // and so does a continue token whose snapshot is gone.
    let events = api
        .watch_lines(&format!(
            "{CMS}?watch=1&resourceVersion={}&timeoutSeconds=1",
            rv(&a)
        ))
        .await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"MODIFIED"), "{events:?}");
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    let now = api.store.current_revision().await.expect("rev");
    api.store.compact(now).await.expect("compact");
    let events = api
        .watch_lines(&format!(
            "{CMS}?watch=1&resourceVersion={}&timeoutSeconds=1",
            rv(&a)
        ))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    let (code, s) = api.get(&format!("{CMS}?limit=3&continue={token}")).await;
    assert_eq!(code, StatusCode::GONE, "{s}");
    api.store.delete_all().await.expect("clean up");
}

#[tokio::test]
async fn two_apiservers_on_one_etcd_serve_one_cluster() {
    let Some(endpoint) = test_endpoint("two_apiservers_on_one_etcd_serve_one_cluster") else {
        return;
    };
    let _turn = turn().await;
    let first = options(&endpoint);
    let second = EtcdOptions {
        prefix: first.prefix.clone(),
        ..options(&endpoint)
    };
    let one = Api::start(first).await;
    let two = Api::start(second).await;

    // Both bootstrapped the same system namespaces once.
    let (_, ns) = two.get("/api/v1/namespaces").await;
    assert_eq!(ns["items"].as_array().map(Vec::len), Some(4), "{ns}");

    let (_, list) = two.get(CMS).await;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let (code, a) = one.post(CMS, cm("a")).await;
    assert_eq!(code, StatusCode::CREATED, "{a}");
    // A watch on the second sees the write made through the first.
    let events = two
        .watch_lines(&format!(
            "{CMS}?watch=1&resourceVersion={from}&timeoutSeconds=1"
        ))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["uid"], a["metadata"]["uid"]);
    // An update through the second is read back through the first, same version.
    let (code, b) = two
        .call(
            "PATCH",
            &format!("{CMS}/a"),
            Some(json!({"data": {"a": "2"}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{b}");
    let (_, got) = one.get(&format!("{CMS}/a")).await;
    assert_eq!(got["data"]["a"], "2");
    assert_eq!(rv(&got), rv(&b));
    // A stale write through the first conflicts with the second's.
    let (code, s) = one.call("PUT", &format!("{CMS}/a"), Some(a)).await;
    assert_eq!(code, StatusCode::CONFLICT, "{s}");
    one.store.delete_all().await.expect("clean up");
}
