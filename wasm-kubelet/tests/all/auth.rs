//! The kubelet API with `anonymous_auth = false`: callers' bearer tokens are reviewed with the
//! apiserver (TokenReview) and only `system:masters` members get in; the apiserver presents its
//! kubelet-client credential when it proxies `pods/log`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::auth::{TokenAuthenticator, User};
use wasmkube_apiserver::ApiServer;
use wasmkube_kubelet::KubeletConfig;

use crate::cluster::image;
use crate::guests::{self, Target};

const NODE: &str = "auth-node";
const ADMIN: &str = "admin-token";
const NODE_TOKEN: &str = "node-token";
const APISERVER: &str = "apiserver-kubelet-client-token";

fn client(url: &str, token: &str) -> Client {
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).expect("client")
}

/// One HTTP/1.0 GET to the kubelet: the status code and the body.
async fn get(port: i32, path: &str, token: Option<&str>) -> (u16, String) {
    let host = format!("127.0.0.1:{port}");
    let mut s = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").as_bytes())
        .await
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_api_answers_only_masters_reviewed_by_the_apiserver() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = wasmkube_apiserver::open_store("embedded", &dir.path().join("api"))
        .await
        .expect("store");
    let user = |name: &str, group: &str| User {
        name: name.into(),
        groups: vec![group.into()],
    };
    let tokens = TokenAuthenticator::new([
        (ADMIN.to_string(), user("system:admin", "system:masters")),
        (
            NODE_TOKEN.to_string(),
            user(&format!("system:node:{NODE}"), "system:nodes"),
        ),
        (
            APISERVER.to_string(),
            user(
                "kube-apiserver-kubelet-client",
                wasmkube_kubelet::authn::KUBELET_API,
            ),
        ),
    ]);
    let stop = CancellationToken::new();
    let server = ApiServer::start(store, Box::new(tokens), stop.clone())
        .await
        .expect("apiserver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(wasmkube_apiserver::serve(listener, Arc::clone(&server)));

    // The kubelet runs as its node, and reviews tokens with that credential.
    let data_dir = dir.path().join("node");
    wasmkube_kubelet::import(
        &data_dir,
        &guests::path("hello", Target::P1),
        &image("hello", Target::P1),
    )
    .expect("import");
    let mut config = KubeletConfig::new(NODE, data_dir);
    config.anonymous_auth = false;
    let kubelet = tokio::spawn(wasmkube_kubelet::run(
        client(&url, NODE_TOKEN),
        config,
        stop.clone(),
    ));

    let admin = client(&url, ADMIN);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello-auth"},
        "spec": {"nodeName": NODE, "restartPolicy": "Never", "containers": [
            {"name": "hello", "image": image("hello", Target::P1), "args": ["auth"]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), "hello-auth", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Succeeded")
        }),
    )
    .await
    .expect("pod succeeded in time")
    .expect("watch");

    // Without its credential, the apiserver's log proxy is refused by the kubelet.
    let err = pods
        .logs("hello-auth", &LogParams::default())
        .await
        .expect_err("refused without the apiserver's credential");
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    // With it, logs flow.
    server
        .kubelet_client_token
        .set(APISERVER.to_string())
        .expect("set once");
    let logs = pods
        .logs("hello-auth", &LogParams::default())
        .await
        .expect("logs through the apiserver");
    assert!(logs.starts_with("hello, auth!\n"), "{logs:?}");

    let nodes: Api<Node> = Api::all(admin.clone());
    let port = nodes
        .get(NODE)
        .await
        .expect("node")
        .status
        .and_then(|s| s.daemon_endpoints?.kubelet_endpoint)
        .expect("kubelet endpoint")
        .port;
    let status = |body: &str| serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    let logs_path = "/containerLogs/default/hello-auth/hello";

    // Health needs no credential.
    assert_eq!(get(port, "/healthz", None).await, (200, "ok".to_string()));
    // No token, or one the apiserver does not know: 401 Status.
    for token in [None, Some("made-up")] {
        let (code, body) = get(port, logs_path, token).await;
        assert_eq!(code, 401, "{token:?}: {body}");
        let s = status(&body);
        assert_eq!(
            (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_u64()),
            (Some("Status"), Some("Unauthorized"), Some(401)),
            "{body}"
        );
    }
    // A node's token authenticates, but nodes may not use kubelet APIs: 403 naming who and what.
    let (code, body) = get(port, logs_path, Some(NODE_TOKEN)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status(&body)["message"],
        format!("Forbidden (user=system:node:{NODE}, verb=get, resource=nodes, subresource=proxy)")
    );
    let (code, body) = get(port, "/stats/summary", Some(NODE_TOKEN)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status(&body)["message"],
        format!("Forbidden (user=system:node:{NODE}, verb=get, resource=nodes, subresource=stats)")
    );
    // The admin (system:masters) gets in.
    let (code, body) = get(port, logs_path, Some(ADMIN)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("hello, auth!\n"), "{body:?}");
    let (code, body) = get(port, "/stats/summary", Some(ADMIN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&body)["node"]["nodeName"], NODE);

    stop.cancel();
    kubelet
        .await
        .expect("kubelet task")
        .expect("kubelet stopped cleanly");
}
