//! NodeRestriction: a node's credential changes only its own Node and Lease and the pods bound
//! to it; anything else is a 403 Status.

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wasmkube_apiserver::auth::{TokenAuthenticator, User};
use wasmkube_apiserver::storage::embedded::EmbeddedStore;
use wasmkube_apiserver::storage::Storage;
use wasmkube_apiserver::{app, ApiServer};

async fn cluster() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(dir.path()).await.expect("store"));
    let user = |name: &str, group: &str| User {
        name: name.into(),
        groups: vec![group.into()],
    };
    let tokens = TokenAuthenticator::new([
        ("admin".to_string(), user("system:admin", "system:masters")),
        ("n1".to_string(), user("system:node:n1", "system:nodes")),
        ("n2".to_string(), user("system:node:n2", "system:nodes")),
    ]);
    let server = ApiServer::start(store, Box::new(tokens), CancellationToken::new())
        .await
        .expect("start");
    (app(server), dir)
}

async fn call(
    app: &Router,
    token: &str,
    method: &str,
    path: &str,
    ct: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ct)
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let code = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn pod(name: &str, node: &str, secret: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}});
    if let Some(s) = secret {
        p["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": s}}]);
    }
    p
}

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

#[tokio::test]
async fn a_node_changes_only_its_own_objects() {
    let (app, _dir) = cluster().await;
    // Each node registers itself; n1 cannot register or change n2.
    assert_eq!(
        call(&app, "n1", "POST", "/api/v1/nodes", JSON, Some(node("n1")))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(&app, "n2", "POST", "/api/v1/nodes", JSON, Some(node("n2")))
            .await
            .0,
        StatusCode::CREATED
    );
    let (code, s) = call(
        &app,
        "n1",
        "PATCH",
        "/api/v1/nodes/n2/status",
        MERGE,
        Some(json!({"status": {"phase": "Running"}})),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{s}");
    assert_eq!(s["reason"], "Forbidden");
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains(r#"User "system:node:n1" cannot patch resource "nodes/status""#),
        "{s}"
    );
    assert_eq!(
        call(
            &app,
            "n1",
            "PATCH",
            "/api/v1/nodes/n1/status",
            MERGE,
            Some(json!({"status": {"phase": "Running"}}))
        )
        .await
        .0,
        StatusCode::OK
    );

    // Pods: status and deletion only for pods bound to the node.
    for (name, bound) in [("on1", "n1"), ("on2", "n2")] {
        let (code, _) = call(
            &app,
            "admin",
            "POST",
            "/api/v1/namespaces/default/pods",
            JSON,
            Some(pod(name, bound, None)),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED);
    }
    let running = json!({"status": {"phase": "Running"}});
    assert_eq!(
        call(
            &app,
            "n1",
            "PATCH",
            "/api/v1/namespaces/default/pods/on1/status",
            MERGE,
            Some(running.clone())
        )
        .await
        .0,
        StatusCode::OK
    );
    let (code, s) = call(
        &app,
        "n1",
        "PATCH",
        "/api/v1/namespaces/default/pods/on2/status",
        MERGE,
        Some(running),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.nodeName set to itself"),
        "{s}"
    );
    assert_eq!(
        call(
            &app,
            "n1",
            "DELETE",
            "/api/v1/namespaces/default/pods/on2",
            JSON,
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            &app,
            "n1",
            "PATCH",
            "/api/v1/namespaces/default/pods/on1",
            MERGE,
            Some(json!({"metadata": {"labels": {"a": "b"}}}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN,
        "a node does not edit pod specs"
    );

    // Leases only its own, in kube-node-lease; events yes; other objects no.
    let lease = |n: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": n}});
    assert_eq!(
        call(
            &app,
            "n1",
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            JSON,
            Some(lease("n1"))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(
            &app,
            "n1",
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            JSON,
            Some(lease("n2"))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "on1", "namespace": "default"}, "reason": "Started", "message": "m"});
    assert_eq!(
        call(
            &app,
            "n1",
            "POST",
            "/api/v1/namespaces/default/events",
            JSON,
            Some(ev)
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    assert_eq!(
        call(
            &app,
            "n1",
            "POST",
            "/api/v1/namespaces/default/configmaps",
            JSON,
            Some(cm)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Reads are allowed (the kubelet watches its pods and reads what they use).
    assert_eq!(
        call(
            &app,
            "n1",
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dn1",
            JSON,
            None
        )
        .await
        .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_node_reads_only_the_secrets_its_pods_use() {
    let (app, _dir) = cluster().await;
    for s in ["mine", "theirs"] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s}, "stringData": {"k": "v"}});
        assert_eq!(
            call(
                &app,
                "admin",
                "POST",
                "/api/v1/namespaces/default/secrets",
                JSON,
                Some(secret)
            )
            .await
            .0,
            StatusCode::CREATED
        );
    }
    call(
        &app,
        "admin",
        "POST",
        "/api/v1/namespaces/default/pods",
        JSON,
        Some(pod("p1", "n1", Some("mine"))),
    )
    .await;
    call(
        &app,
        "admin",
        "POST",
        "/api/v1/namespaces/default/pods",
        JSON,
        Some(pod("p2", "n2", Some("theirs"))),
    )
    .await;
    assert_eq!(
        call(
            &app,
            "n1",
            "GET",
            "/api/v1/namespaces/default/secrets/mine",
            JSON,
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &app,
            "n1",
            "GET",
            "/api/v1/namespaces/default/secrets/theirs",
            JSON,
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(
            &app,
            "n1",
            "GET",
            "/api/v1/namespaces/default/secrets",
            JSON,
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // A list or watch of one secret by name (the kubelet's per-object watch), only for the
    // secrets its pods use.
    let (code, list) = call(
        &app,
        "n1",
        "GET",
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dmine",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "mine");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let watch = "/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dmine";
    assert_eq!(
        call(&app, "n1", "GET", watch, JSON, None).await.0,
        StatusCode::OK
    );
    for refused in [
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Dtheirs",
        "/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dtheirs",
        "/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=1",
        "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name!%3Dmine",
    ] {
        let (code, status) = call(&app, "n1", "GET", refused, JSON, None).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{refused}: {status}");
    }
    // Unknown tokens are 401, not 403.
    assert_eq!(
        call(&app, "bogus", "GET", "/api/v1/namespaces", JSON, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

fn review(token: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token}})
}

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

#[tokio::test]
async fn token_reviews_name_the_user_of_a_token_for_admins_and_nodes() {
    let (app, _dir) = cluster().await;
    // The admin reviews a node's token: the node's user and groups.
    let (code, body) = call(&app, "admin", "POST", REVIEWS, JSON, Some(review("n1"))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["status"]["authenticated"], true);
    assert_eq!(body["status"]["user"]["username"], "system:node:n1");
    assert_eq!(
        body["status"]["user"]["groups"],
        json!(["system:nodes", "system:authenticated"])
    );
    // A node (a kubelet authenticating a caller) reviews the admin's token.
    let (code, body) = call(&app, "n2", "POST", REVIEWS, JSON, Some(review("admin"))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["user"]["username"], "system:admin");
    assert_eq!(
        body["status"]["user"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    // A token nobody issued is not authenticated, with the reason.
    let (code, body) = call(&app, "n2", "POST", REVIEWS, JSON, Some(review("bogus"))).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["authenticated"], false);
    assert_eq!(body["status"]["error"], "invalid bearer token");
    assert!(body["status"]["user"].get("username").is_none());
    // No token in the review is a bad request, as upstream.
    let (code, body) = call(&app, "admin", "POST", REVIEWS, JSON, Some(review(""))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["message"],
        "token is required for TokenReview in authentication.k8s.io"
    );
    // Reviews are not stored: create is the only verb.
    let (code, body) = call(&app, "admin", "GET", REVIEWS, JSON, None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    // Without a credential: 401.
    let req = Request::builder()
        .method("POST")
        .uri(REVIEWS)
        .header("content-type", JSON)
        .body(Body::from(review("admin").to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A bad credential: 401 too.
    let (code, body) = call(&app, "bogus", "POST", REVIEWS, JSON, Some(review("n1"))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "Unauthorized");
    // Discovery lists the group and its one create-only resource.
    let (_, groups) = call(&app, "admin", "GET", "/apis", JSON, None).await;
    assert!(groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .any(|g| g["name"] == "authentication.k8s.io"
            && g["preferredVersion"]["groupVersion"] == "authentication.k8s.io/v1"));
    let (code, list) = call(
        &app,
        "n1",
        "GET",
        "/apis/authentication.k8s.io/v1",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["resources"][0]["name"], "tokenreviews");
    assert_eq!(list["resources"][0]["verbs"], json!(["create"]));
}

#[tokio::test]
async fn token_reviews_are_refused_to_users_that_are_neither_admin_nor_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Storage> = Arc::new(EmbeddedStore::open(dir.path()).await.expect("store"));
    let tokens = TokenAuthenticator::new([(
        "dev".to_string(),
        User {
            name: "jane".into(),
            groups: vec!["developers".into()],
        },
    )]);
    let server = ApiServer::start(store, Box::new(tokens), CancellationToken::new())
        .await
        .expect("start");
    let app = app(server);
    let (code, body) = call(&app, "dev", "POST", REVIEWS, JSON, Some(review("dev"))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "tokenreviews.authentication.k8s.io is forbidden: User \"jane\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope: no permissions are granted to this user"
    );
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A bootstrap token Secret as `wasmkube token create` writes it.
fn bootstrap_secret(id: &str, secret: &str, expiration: &str, usable: bool) -> Value {
    let mut data = json!({"token-id": b64(id), "token-secret": b64(secret),
        "expiration": b64(expiration),
        "auth-extra-groups": b64("system:bootstrappers:wasmkube:default-node-token")});
    if usable {
        data["usage-bootstrap-authentication"] = json!(b64("true"));
    }
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token", "data": data})
}

fn node_token_secret(node: &str, token: &str, kind: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("node-token-{node}"), "namespace": "kube-system"},
        "type": kind, "data": {"token": b64(token)}})
}

const KUBE_SYSTEM_SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
const NODE_TOKEN: &str = "wasmkube.dev/node-token";

/// Waits (up to 10 s) until `token` gets `want` for `GET path`: Secret-held tokens are known
/// once the apiserver's watch has seen them.
async fn until_status(app: &Router, token: &str, path: &str, want: StatusCode) {
    for _ in 0..500 {
        if call(app, token, "GET", path, JSON, None).await.0 == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("GET {path} with token {token} never answered {want}");
}

#[tokio::test]
async fn bootstrap_tokens_only_create_new_node_credentials() {
    let (app, _dir) = cluster().await;
    let cluster_info = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-info"}, "data": {"kubeconfig": "k"}});
    let (code, body) = call(
        &app,
        "admin",
        "POST",
        "/api/v1/namespaces/kube-public/configmaps",
        JSON,
        Some(cluster_info),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    // Anonymous requests may read cluster-info, and nothing else there.
    let anonymous = |path: &str| {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    };
    let resp = app
        .clone()
        .oneshot(anonymous(CLUSTER_INFO))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .clone()
        .oneshot(anonymous("/api/v1/namespaces/kube-public/configmaps"))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    for secret in [
        bootstrap_secret("abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z", true),
        bootstrap_secret("expird", "0123456789abcdef", "2001-01-01T00:00:00Z", true),
        bootstrap_secret("nousag", "0123456789abcdef", "2999-01-01T00:00:00Z", false),
    ] {
        let (code, body) = call(
            &app,
            "admin",
            "POST",
            KUBE_SYSTEM_SECRETS,
            JSON,
            Some(secret),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
    }
    let boot = "abcdef.0123456789abcdef";
    until_status(&app, boot, CLUSTER_INFO, StatusCode::OK).await;
    // Expired tokens and tokens not meant for authentication are refused; so is a wrong secret.
    for refused in [
        "expird.0123456789abcdef",
        "nousag.0123456789abcdef",
        "abcdef.0123456789abcdee",
    ] {
        let (code, body) = call(&app, refused, "GET", CLUSTER_INFO, JSON, None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{refused}: {body}");
    }

    // Anything but creating a node credential is forbidden.
    let (code, s) = call(&app, boot, "GET", "/api/v1/namespaces", JSON, None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .starts_with(r#"namespaces is forbidden: User "system:bootstrap:abcdef" cannot list resource "namespaces""#),
        "{s}"
    );
    let (code, s) = call(
        &app,
        boot,
        "POST",
        KUBE_SYSTEM_SECRETS,
        JSON,
        Some(node_token_secret("joined", "t", "Opaque")),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "wrong type: {s}");
    let (code, s) = call(
        &app,
        boot,
        "POST",
        "/api/v1/namespaces/default/secrets",
        JSON,
        Some(node_token_secret("joined", "t", NODE_TOKEN)),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "wrong namespace: {s}");
    let (code, s) = call(
        &app,
        boot,
        "POST",
        KUBE_SYSTEM_SECRETS,
        JSON,
        Some(node_token_secret("n1", "t", NODE_TOKEN)),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "a configured node: {s}");

    // A new node's credential: created once, never replaced.
    let node_token = "joined-node-token";
    let (code, s) = call(
        &app,
        boot,
        "POST",
        KUBE_SYSTEM_SECRETS,
        JSON,
        Some(node_token_secret("joined", node_token, NODE_TOKEN)),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{s}");
    let (code, s) = call(
        &app,
        boot,
        "POST",
        KUBE_SYSTEM_SECRETS,
        JSON,
        Some(node_token_secret("joined", "another", NODE_TOKEN)),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{s}");
    assert_eq!(s["reason"], "AlreadyExists");
    let (code, s) = call(
        &app,
        boot,
        "GET",
        &format!("{KUBE_SYSTEM_SECRETS}/node-token-joined"),
        JSON,
        None,
    )
    .await;
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "bootstrappers cannot read credentials: {s}"
    );

    // The node token is the node's user: NodeRestriction applies to it.
    until_status(&app, node_token, "/api/v1/nodes", StatusCode::OK).await;
    let (code, s) = call(
        &app,
        node_token,
        "POST",
        "/api/v1/nodes",
        JSON,
        Some(node("joined")),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{s}");
    let (code, s) = call(
        &app,
        node_token,
        "POST",
        "/api/v1/nodes",
        JSON,
        Some(node("other")),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap_or("")
            .contains(r#"User "system:node:joined" cannot create resource "nodes""#),
        "{s}"
    );
    // Deleting the Secret revokes the credential.
    let (code, s) = call(
        &app,
        "admin",
        "DELETE",
        &format!("{KUBE_SYSTEM_SECRETS}/node-token-joined"),
        JSON,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{s}");
    until_status(&app, node_token, "/api/v1/nodes", StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn only_admins_read_metrics() {
    let (app, _dir) = cluster().await;
    let (code, body) = call(
        &app,
        "admin",
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "PodMetricsList");
    let (code, body) = call(
        &app,
        "n1",
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        JSON,
        None,
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["reason"], "Forbidden");
}
