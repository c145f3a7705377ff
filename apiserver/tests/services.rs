//! Service ClusterIP and NodePort allocation through the REST layer: uniqueness, requested
//! values, release on delete and type change, and agreement between two apiservers on one store.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::allocator::ServiceAllocator;
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::storage::Storage;
use wasmkube_apiserver::{app, auth, ApiServer};

const SVCS: &str = "/api/v1/namespaces/default/services";

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Storage> {
    Arc::new(EmbeddedStore::open(dir.path()).await.expect("open store"))
}

async fn apiserver(store: Arc<dyn Storage>) -> Router {
    let server = ApiServer::start(
        store,
        Box::new(auth::InsecureAdmin),
        CancellationToken::new(),
    )
    .await
    .expect("start");
    app(server)
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    ct: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn create(router: &Router, svc: Value) -> (StatusCode, Value) {
    call(router, "POST", SVCS, "application/json", Some(svc)).await
}

fn svc(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

fn in_service_range(ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    let o = ip.octets();
    o[0] == 127 && (96..112).contains(&o[1]) && ip != std::net::Ipv4Addr::new(127, 96, 0, 0)
}

#[tokio::test]
async fn cluster_ips_are_unique_requested_ones_honoured_and_freed_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let api = apiserver(store(&dir).await).await;
    let mut seen = HashSet::new();
    for i in 0..5 {
        let (code, body) = create(&api, svc(&format!("s{i}"), json!({}))).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        let ip = body["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(in_service_range(&ip), "{ip}");
        assert_eq!(body["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(body["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(body["spec"]["ipFamilyPolicy"], "SingleStack");
        assert!(seen.insert(ip), "a ClusterIP was handed out twice");
    }

    let (code, body) = create(&api, svc("fixed", json!({"clusterIP": "127.96.7.7"}))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["clusterIPs"], json!(["127.96.7.7"]));

    let (code, body) = create(&api, svc("dup", json!({"clusterIP": "127.96.7.7"}))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "Service \"dup\" is invalid: spec.clusterIPs: Invalid value: [\"127.96.7.7\"]: failed to allocate IP 127.96.7.7: provided IP is already allocated"
    );

    let (code, body) = create(&api, svc("far", json!({"clusterIP": "127.0.0.9"}))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"].as_str().unwrap().ends_with(
            "the provided IP (127.0.0.9) is not in the valid range. The range of valid IPs is 127.96.0.0/12"
        ),
        "{body}"
    );

    // An update that leaves clusterIP out keeps it (kubectl apply sends none).
    let (code, body) = call(
        &api,
        "PUT",
        &format!("{SVCS}/fixed"),
        "application/json",
        Some(svc("fixed", json!({"ports": [{"port": 81}]}))),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["clusterIP"], "127.96.7.7");

    let (code, _) = call(
        &api,
        "DELETE",
        &format!("{SVCS}/fixed"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = create(&api, svc("dup", json!({"clusterIP": "127.96.7.7"}))).await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "the deleted Service's IP is free again: {body}"
    );

    let (code, body) = create(&api, svc("headless", json!({"clusterIP": "None"}))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["clusterIPs"], json!(["None"]));
}

#[tokio::test]
async fn node_ports_are_allocated_honoured_and_freed_when_the_type_changes_back() {
    let dir = tempfile::tempdir().unwrap();
    let api = apiserver(store(&dir).await).await;
    let (code, body) = create(
        &api,
        svc(
            "np",
            json!({"type": "NodePort",
        "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30080}]}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let auto = body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&auto) && auto != 30080, "{auto}");
    assert_eq!(body["spec"]["ports"][1]["nodePort"], 30080);

    let (code, body) = create(
        &api,
        svc(
            "np2",
            json!({"type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    // The failed create released the ClusterIP it had taken: only one Service holds one.

    // Back to ClusterIP: the node ports go, and are free for others.
    let (code, body) = call(
        &api,
        "PATCH",
        &format!("{SVCS}/np"),
        "application/merge-patch+json",
        Some(json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null}})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body["spec"]["ports"][1].get("nodePort").is_none(), "{body}");
    let (code, body) = create(
        &api,
        svc(
            "np2",
            json!({"type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");

    // An update that omits the node ports keeps them.
    let (code, body) = call(
        &api,
        "PUT",
        &format!("{SVCS}/np2"),
        "application/json",
        Some(svc(
            "np2",
            json!({"type": "NodePort", "ports": [{"port": 80}]}),
        )),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["ports"][0]["nodePort"], 30080);
}

#[tokio::test]
async fn two_apiservers_on_one_store_never_hand_out_one_address_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (a, b) = (
        apiserver(store.clone()).await,
        apiserver(store.clone()).await,
    );
    let mut tasks = Vec::new();
    for i in 0..40 {
        let api = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let (dynamic, _) =
                create(&api, svc(&format!("d{i}"), json!({"type": "NodePort"}))).await;
            let (fixed, _) = create(
                &api,
                svc(&format!("f{i}"), json!({"clusterIP": "127.100.0.1"})),
            )
            .await;
            (dynamic, fixed)
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (dynamic, fixed) = t.await.unwrap();
        assert_eq!(dynamic, StatusCode::CREATED);
        if fixed == StatusCode::CREATED {
            won += 1;
        } else {
            assert_eq!(fixed, StatusCode::UNPROCESSABLE_ENTITY);
        }
    }
    assert_eq!(won, 1, "exactly one create gets a requested IP");
    let (_, list) = call(&a, "GET", SVCS, "application/json", None).await;
    let items = list["items"].as_array().unwrap();
    let ips: HashSet<&str> = items
        .iter()
        .map(|s| s["spec"]["clusterIP"].as_str().unwrap())
        .collect();
    assert_eq!(
        ips.len(),
        items.len(),
        "every Service has its own ClusterIP"
    );
    let ports: Vec<i64> = items
        .iter()
        .filter_map(|s| s["spec"]["ports"][0]["nodePort"].as_i64())
        .collect();
    assert_eq!(ports.len(), 40);
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        40,
        "node ports are unique"
    );

    // A restarted apiserver sees the same allocations.
    let c = apiserver(store).await;
    let taken = items[0]["spec"]["clusterIP"].as_str().unwrap();
    let (code, _) = create(&c, svc("again", json!({"clusterIP": taken}))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn repair_records_missing_allocations_and_releases_leaked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let api = apiserver(store.clone()).await;
    let (_, body) = create(&api, svc("s", json!({}))).await;
    let ip = body["spec"]["clusterIP"].as_str().unwrap().to_string();
    // An allocation whose Service never got stored (a crash in between), long ago.
    let leaked = json!({"uid": "gone", "service": "default/gone", "time": "2020-01-01T00:00:00Z"});
    store
        .create(
            "serviceallocations/clusterips/127.96.9.9",
            leaked.to_string().into(),
        )
        .await
        .unwrap();
    // The Service's own key lost (a store restored from an older backup, say).
    store
        .delete(&format!("serviceallocations/clusterips/{ip}"), None)
        .await
        .unwrap();
    ServiceAllocator::default()
        .repair(store.as_ref())
        .await
        .unwrap();
    let (code, _) = create(&api, svc("reuse", json!({"clusterIP": "127.96.9.9"}))).await;
    assert_eq!(code, StatusCode::CREATED, "the leaked IP was released");
    let (code, _) = create(&api, svc("clash", json!({"clusterIP": ip}))).await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the Service's IP was recorded again"
    );
}

#[tokio::test]
async fn the_kubernetes_service_gets_the_first_address_and_follows_the_apiserver() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let api = apiserver(store.clone()).await;
    let alloc = ServiceAllocator::default();
    alloc
        .ensure_kubernetes_service(store.as_ref(), "127.0.0.1:6443".parse().unwrap())
        .await
        .unwrap();
    let (code, svc) = call(
        &api,
        "GET",
        &format!("{SVCS}/kubernetes"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{svc}");
    assert_eq!(svc["spec"]["clusterIP"], "127.96.0.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    // Restarted on another port: the Service stays, its endpoints follow.
    alloc
        .ensure_kubernetes_service(store.as_ref(), "127.0.0.1:7443".parse().unwrap())
        .await
        .unwrap();
    let (_, again) = call(
        &api,
        "GET",
        &format!("{SVCS}/kubernetes"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(again["metadata"]["uid"], svc["metadata"]["uid"]);
    let (code, slice) = call(
        &api,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{slice}");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["127.0.0.1"]));
    assert_eq!(slice["ports"][0]["port"], 7443);
    let (code, ep) = call(
        &api,
        "GET",
        "/api/v1/namespaces/default/endpoints/kubernetes",
        "application/json",
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 7443);
    // Its address is taken like any other.
    let (code, _) = create(&api, svc_named("other", "127.96.0.1")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
}

fn svc_named(name: &str, ip: &str) -> Value {
    svc(name, json!({"clusterIP": ip}))
}
