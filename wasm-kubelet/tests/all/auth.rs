//! The kubelet API with `anonymous_auth = false` and a client CA: served over TLS; callers'
//! client certificates (verified against the CA) or bearer tokens (reviewed with the apiserver,
//! TokenReview) name who they are, and only `system:masters` and the apiserver's kubelet-client
//! identity get in; the apiserver presents its client certificate when it proxies `pods/log`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::Client;
use rustls::pki_types::pem::PemObject;
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

fn client(url: &str, token: &str) -> Client {
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).expect("client")
}

/// One HTTP/1.0 GET to the kubelet over TLS (`tls`: with or without a client certificate):
/// the status code and the body.
async fn get(
    port: i32,
    path: &str,
    token: Option<&str>,
    tls: &Arc<rustls::ClientConfig>,
) -> (u16, String) {
    let host = format!("127.0.0.1:{port}");
    let tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let mut s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").as_bytes())
        .await
        .expect("request");
    let mut bytes = Vec::new();
    // The server may close without a TLS close_notify: what arrived is the response.
    let _ = s.read_to_end(&mut bytes).await;
    let out = String::from_utf8_lossy(&bytes).to_string();
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
    // The cluster's PKI: the kubelet trusts its CA for client certificates.
    let pki =
        wasmkube_apiserver::tls::Pki::load_or_create(&dir.path().join("pki"), &[]).expect("pki");
    let ca =
        rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_cert_pem.as_bytes()).expect("CA");
    let mut config = KubeletConfig::new(NODE, data_dir);
    config.anonymous_auth = false;
    config.client_ca = Some(vec![ca.to_vec()]);
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

    // Without its client certificate (plain HTTP to a TLS port), the log proxy fails.
    pods.logs("hello-auth", &LogParams::default())
        .await
        .expect_err("no logs without TLS");
    // With it, logs flow.
    let apiserver = pki
        .kubelet_client_config(
            "kube-apiserver-kubelet-client",
            wasmkube_kubelet::authn::KUBELET_API,
        )
        .expect("client certificate");
    server.kubelet_tls.set(apiserver.clone()).expect("set once");
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

    let anonymous = wasmkube_apiserver::tls::kubelet_connector(None).expect("TLS client");
    let stranger = pki
        .kubelet_client_config("someone", "nobody")
        .expect("another certificate");
    // Health needs no credential.
    assert_eq!(
        get(port, "/healthz", None, &anonymous).await,
        (200, "ok".to_string())
    );
    // No certificate and no token, or a token the apiserver does not know: 401 Status.
    for token in [None, Some("made-up")] {
        let (code, body) = get(port, logs_path, token, &anonymous).await;
        assert_eq!(code, 401, "{token:?}: {body}");
        let s = status(&body);
        assert_eq!(
            (s["kind"].as_str(), s["reason"].as_str(), s["code"].as_u64()),
            (Some("Status"), Some("Unauthorized"), Some(401)),
            "{body}"
        );
    }
    // A node's token authenticates, but nodes may not use kubelet APIs: 403 naming who and what.
    let (code, body) = get(port, logs_path, Some(NODE_TOKEN), &anonymous).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status(&body)["message"],
        format!("Forbidden (user=system:node:{NODE}, verb=get, resource=nodes, subresource=proxy)")
    );
    let (code, body) = get(port, "/stats/summary", Some(NODE_TOKEN), &anonymous).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status(&body)["message"],
        format!("Forbidden (user=system:node:{NODE}, verb=get, resource=nodes, subresource=stats)")
    );
    // A certificate of the CA for someone else: authenticated, not allowed.
    let (code, body) = get(port, logs_path, None, &stranger).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        status(&body)["message"],
        "Forbidden (user=someone, verb=get, resource=nodes, subresource=proxy)"
    );
    // The admin's token (system:masters) and the apiserver's certificate get in.
    for (token, tls) in [(Some(ADMIN), &anonymous), (None, &apiserver)] {
        let (code, body) = get(port, logs_path, token, tls).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("hello, auth!\n"), "{body:?}");
        let (code, body) = get(port, "/stats/summary", token, tls).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(status(&body)["node"]["nodeName"], NODE);
    }

    stop.cancel();
    kubelet
        .await
        .expect("kubelet task")
        .expect("kubelet stopped cleanly");
}
