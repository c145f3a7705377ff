//! The apiserver in-process (`app()` + `oneshot`, no socket): upstream's object semantics.

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::storage::Storage;
use wasmkube_apiserver::{app, auth, ApiServer};

struct Api {
    router: Router,
    store: Arc<dyn Storage>,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Storage> =
            Arc::new(EmbeddedStore::open(dir.path()).await.expect("open store"));
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
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
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
        self.call("GET", path, "application/json", None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, "application/json", Some(body))
            .await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PUT", path, "application/json", Some(body)).await
    }
    async fn merge(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PATCH", path, "application/merge-patch+json", Some(body))
            .await
    }
    async fn delete(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call("DELETE", path, "application/json", body).await
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

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "x"}}, "data": {"a": "1"}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "example/hello:1"}]}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "example/hello:1"}]}}}})
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("resourceVersion")
}

#[tokio::test]
async fn every_error_is_a_status() {
    let api = Api::new().await;
    let (code, s) = api.get(&format!("{CMS}/nope")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "NotFound");
    assert_eq!(s["message"], r#"configmaps "nope" not found"#);
    assert_eq!(s["details"]["kind"], "configmaps");
    let (code, s) = api.get("/apis/nope/v1/things").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(s["kind"], "Status");
    let (code, s) = api
        .call(
            "POST",
            CMS,
            "application/json",
            Some(json!("not an object")),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(s["kind"], "Status");
}

#[tokio::test]
async fn generate_name_dry_run_and_namespace_lifecycle() {
    let api = Api::new().await;
    let (code, o) = api
        .post(
            CMS,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let (code, o) = api.post(&format!("{CMS}?dryRun=All"), cm("dry")).await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    assert_eq!(
        api.get(&format!("{CMS}/dry")).await.0,
        StatusCode::NOT_FOUND,
        "dry run stores nothing"
    );

    let (code, s) = api
        .post("/api/v1/namespaces/missing/configmaps", cm("x"))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{s}");
    assert_eq!(s["message"], r#"namespaces "missing" not found"#);
}

#[tokio::test]
async fn update_needs_the_current_resource_version() {
    let api = Api::new().await;
    let (_, created) = api.post(CMS, cm("c")).await;
    let mut stale = created.clone();
    stale["data"]["a"] = json!("2");
    let (code, updated) = api.put(&format!("{CMS}/c"), stale.clone()).await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert!(rv(&updated) > rv(&created));
    stale["data"]["a"] = json!("3");
    let (code, s) = api.put(&format!("{CMS}/c"), stale).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(s["reason"], "Conflict");
    // A no-op update keeps the resourceVersion.
    let (_, same) = api.put(&format!("{CMS}/c"), updated.clone()).await;
    assert_eq!(rv(&same), rv(&updated));
}

#[tokio::test]
async fn generation_counts_spec_changes_and_status_is_separate() {
    let api = Api::new().await;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, d) = api.post(path, deployment("d")).await;
    assert_eq!(code, StatusCode::CREATED, "{d}");
    assert_eq!(d["metadata"]["generation"], 1);
    let (_, d) = api
        .merge(
            &format!("{path}/d"),
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(
        d["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );
    let (_, d) = api
        .merge(
            &format!("{path}/d"),
            json!({"spec": {"replicas": 3}, "status": {"replicas": 9}}),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        d["status"].get("replicas").is_none(),
        "the main resource ignores status: {d}"
    );
    let (code, d) = api
        .merge(
            &format!("{path}/d/status"),
            json!({"status": {"replicas": 3}, "spec": {"replicas": 7}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(d["status"]["replicas"], 3);
    assert_eq!(
        d["spec"]["replicas"], 3,
        "the status subresource ignores spec"
    );
    assert_eq!(d["metadata"]["generation"], 2);

    // scale subresource: autoscaling/v1 Scale.
    let (code, s) = api.get(&format!("{path}/d/scale")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(s["kind"], "Scale");
    assert_eq!(s["spec"]["replicas"], 3);
    assert_eq!(s["status"]["selector"], "app=d");
    let (_, s) = api
        .merge(&format!("{path}/d/scale"), json!({"spec": {"replicas": 5}}))
        .await;
    assert_eq!(s["spec"]["replicas"], 5);
    assert_eq!(api.get(&format!("{path}/d")).await.1["spec"]["replicas"], 5);
}

#[tokio::test]
async fn selectors_and_pagination_read_one_snapshot() {
    let api = Api::new().await;
    for i in 0..7 {
        let mut c = cm(&format!("c{i}"));
        c["metadata"]["labels"]["parity"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        api.post(CMS, c).await;
    }
    let (_, l) = api.get(&format!("{CMS}?labelSelector=parity%3Deven")).await;
    assert_eq!(l["items"].as_array().map(Vec::len), Some(4));
    let (_, l) = api
        .get(&format!("{CMS}?fieldSelector=metadata.name%3Dc3"))
        .await;
    assert_eq!(l["items"][0]["metadata"]["name"], "c3");
    let (code, s) = api.get(&format!("{CMS}?fieldSelector=data.a%3D1")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(s["message"], "field label not supported: data.a");

    let (_, page1) = api.get(&format!("{CMS}?limit=3")).await;
    let token = page1["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    // A write between pages is not seen by the rest of this list.
    api.post(CMS, cm("c99")).await;
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
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    assert!(page3["metadata"].get("continue").is_none());
    assert_eq!(
        page1["metadata"]["resourceVersion"],
        page3["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn watch_from_a_version_filters_and_expires_with_410() {
    let api = Api::new().await;
    let (_, a) = api.post(CMS, cm("a")).await;
    let start = rv(&a);
    api.merge(&format!("{CMS}/a"), json!({"data": {"a": "2"}}))
        .await;
    let mut other = cm("b");
    other["metadata"]["labels"]["app"] = json!("other");
    api.post(CMS, other).await;
    api.delete(&format!("{CMS}/a"), None).await;
    let events = api
        .watch_lines(&format!(
            "{CMS}?watch=1&resourceVersion={start}&labelSelector=app%3Dx&timeoutSeconds=1"
        ))
        .await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);
    assert_eq!(events[0]["object"]["data"]["a"], "2");
    assert!(rv(&events[1]["object"]) > rv(&events[0]["object"]));

    // After compaction the old version is gone: one ERROR event with a 410 Status.
    let now = api.store.current_revision().await.expect("rev");
    api.store.compact(now).await.expect("compact");
    let events = api
        .watch_lines(&format!(
            "{CMS}?watch=1&resourceVersion={start}&timeoutSeconds=1"
        ))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn watch_with_initial_events_sends_the_state_then_a_bookmark() {
    let api = Api::new().await;
    api.post(CMS, cm("a")).await;
    let events = api
        .watch_lines(&format!("{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"))
        .await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let api = Api::new().await;
    let mut c = cm("f");
    c["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.post(CMS, c).await;
    let (code, o) = api.delete(&format!("{CMS}/f"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(o["metadata"]["deletionTimestamp"].is_string(), "{o}");
    assert_eq!(api.get(&format!("{CMS}/f")).await.0, StatusCode::OK);
    api.merge(
        &format!("{CMS}/f"),
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(api.get(&format!("{CMS}/f")).await.0, StatusCode::NOT_FOUND);

    // Preconditions on delete.
    api.post(CMS, cm("p")).await;
    let (code, s) = api
        .delete(
            &format!("{CMS}/p"),
            Some(json!({"preconditions": {"uid": "wrong"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{s}");
}

#[tokio::test]
async fn bound_pods_delete_gracefully_and_binding_sets_the_node() {
    let api = Api::new().await;
    api.post(PODS, pod("p")).await;
    let (code, s) = api
        .post(&format!("{PODS}/p/binding"), json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{s}");
    let (_, p) = api.get(&format!("{PODS}/p")).await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    let (code, _) = api
        .post(&format!("{PODS}/p/binding"), json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n2"}}))
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "a pod is bound once");

    // Bound: deletion waits for the node (grace period); an unbound pod goes at once.
    let (_, p) = api.delete(&format!("{PODS}/p"), None).await;
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(api.get(&format!("{PODS}/p")).await.0, StatusCode::OK);
    api.delete(&format!("{PODS}/p?gracePeriodSeconds=0"), None)
        .await;
    assert_eq!(api.get(&format!("{PODS}/p")).await.0, StatusCode::NOT_FOUND);
    api.post(PODS, pod("q")).await;
    api.delete(&format!("{PODS}/q"), None).await;
    assert_eq!(api.get(&format!("{PODS}/q")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn exec_into_a_wasm_pod_is_a_clear_400() {
    let api = Api::new().await;
    api.post(PODS, pod("p")).await;
    let (code, s) = api
        .call(
            "POST",
            &format!("{PODS}/p/exec?command=sh"),
            "application/json",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        s["message"].as_str().unwrap_or("").contains("no shell"),
        "{s}"
    );
}

#[tokio::test]
async fn events_and_hpas_read_in_both_versions() {
    let api = Api::new().await;
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "test", "reportingInstance": "t1",
        "action": "Testing", "reason": "Tested", "type": "Normal", "note": "hello",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
    let (code, o) = api
        .post("/apis/events.k8s.io/v1/namespaces/default/events", ev)
        .await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let (_, core) = api.get("/api/v1/namespaces/default/events/e1").await;
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "hello");
    assert_eq!(core["involvedObject"]["name"], "p");
    let (_, l) = api
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dp")
        .await;
    assert_eq!(l["items"].as_array().map(Vec::len), Some(1));

    let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}});
    let (code, o) = api
        .post(
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            hpa,
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let (_, v2) = api
        .get("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/h")
        .await;
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content() {
    let api = Api::new().await;
    api.post(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}}),
    )
    .await;
    let (code, o) = api.post("/api/v1/namespaces/tmp/configmaps", cm("c")).await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let (_, ns) = api.delete("/api/v1/namespaces/tmp", None).await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, s) = api.post("/api/v1/namespaces/tmp/configmaps", cm("d")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{s}");
    // The finalizer runs in the background: wait for it on the namespace's watch.
    let events = api
        .watch_lines(
            "/api/v1/namespaces?watch=1&fieldSelector=metadata.name%3Dtmp&timeoutSeconds=5",
        )
        .await;
    assert!(events.iter().any(|e| e["type"] == "DELETED"), "{events:?}");
    assert_eq!(
        api.get("/api/v1/namespaces/tmp/configmaps/c").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn delete_collection_by_label() {
    let api = Api::new().await;
    for n in ["a", "b"] {
        api.post(CMS, cm(n)).await;
    }
    let mut keep = cm("keep");
    keep["metadata"]["labels"]["app"] = json!("other");
    api.post(CMS, keep).await;
    let (code, _) = api
        .delete(&format!("{CMS}?labelSelector=app%3Dx"), None)
        .await;
    assert_eq!(code, StatusCode::OK);
    let (_, l) = api.get(CMS).await;
    let names: Vec<&str> = l["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["keep"]);
}

#[tokio::test]
async fn strict_and_warn_field_validation() {
    let api = Api::new().await;
    let mut c = cm("u");
    c["bogus"] = json!(1);
    let (code, s) = api
        .post(&format!("{CMS}?fieldValidation=Strict"), c.clone())
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains(r#"unknown field "bogus""#),
        "{s}"
    );
    let req = Request::post(format!("{CMS}?fieldValidation=Warn"))
        .header("content-type", "application/json")
        .body(Body::from(c.to_string()))
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let warning = resp
        .headers()
        .get("warning")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(warning.contains("unknown field"), "{warning}");
}

#[tokio::test]
async fn oversized_bodies_get_a_413_status() {
    let api = Api::new().await;
    let mut c = cm("big");
    c["data"]["a"] = json!("x".repeat(4 * 1024 * 1024));
    let (code, s) = api.post(CMS, c).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "RequestEntityTooLarge");
}

#[tokio::test]
async fn claims_without_a_class_get_the_newest_default_class() {
    let api = Api::new().await;
    const PVCS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
    const SCS: &str = "/apis/storage.k8s.io/v1/storageclasses";
    let pvc = |name: &str, class: Option<&str>| {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name}, "spec": spec})
    };
    let class = |name: &str, annotation: &str| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": {annotation: "true"}},
            "provisioner": "wasmkube.dev/local-path"})
    };

    // No default class: the claim stays without one.
    let (code, o) = api.post(PVCS, pvc("before", None)).await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    assert!(o["spec"].get("storageClassName").is_none(), "{o}");

    let (code, o) = api
        .post(
            SCS,
            class("old", "storageclass.beta.kubernetes.io/is-default-class"),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let (_, o) = api.post(PVCS, pvc("one-default", None)).await;
    assert_eq!(o["spec"]["storageClassName"], "old", "{o}");

    // Creation timestamps have second resolution: make the second default visibly newer.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, o) = api
        .post(
            SCS,
            class("new", "storageclass.kubernetes.io/is-default-class"),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{o}");
    let (_, o) = api.post(PVCS, pvc("two-defaults", None)).await;
    assert_eq!(
        o["spec"]["storageClassName"], "new",
        "the newest default wins: {o}"
    );

    // An explicit class, or an explicit "" (no class), is kept.
    let (_, o) = api.post(PVCS, pvc("explicit", Some("fast"))).await;
    assert_eq!(o["spec"]["storageClassName"], "fast", "{o}");
    let (_, o) = api.post(PVCS, pvc("none", Some(""))).await;
    assert_eq!(o["spec"]["storageClassName"], "", "{o}");
}
