//! Secure by default: HTTPS with the generated CA, bearer tokens, 401 for anonymous requests.

use crate::support::{eventually, example_guest, Cluster};

#[test]
fn anonymous_requests_get_401_except_health_and_version() {
    let c = Cluster::apiserver();
    assert!(c.url.starts_with("https://"), "{}", c.url);
    let (code, body) = c.curl("/api/v1/namespaces", &[]);
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");
    let (code, _) = c.curl("/api/v1/namespaces", &["-H", "Authorization: Bearer wrong"]);
    assert_eq!(code, 401);
    assert_eq!(c.curl("/healthz", &[]).0, 200);
    assert_eq!(c.curl("/version", &[]).0, 200);
    // The kubeconfig's token is the admin.
    assert!(c
        .ok(&["get", "ns", "-o", "name"])
        .contains("namespace/default"));
}

#[test]
fn a_client_that_does_not_trust_the_ca_is_refused() {
    let c = Cluster::apiserver();
    let other = Cluster::apiserver();
    // Same server, the other cluster's CA: TLS verification must fail.
    let text = std::fs::read_to_string(&c.kubeconfig).expect("kubeconfig");
    let other_text = std::fs::read_to_string(&other.kubeconfig).expect("kubeconfig");
    let ca_line = |t: &str| {
        t.lines()
            .find(|l| l.contains("certificate-authority-data"))
            .expect("CA in kubeconfig")
            .to_string()
    };
    let forged = text.replace(&ca_line(&text), &ca_line(&other_text));
    let path = c.dir.path().join("wrong-ca.kubeconfig");
    std::fs::write(&path, forged).expect("write");
    let out = c
        .kubectl_cmd(&[
            "get",
            "ns",
            "--kubeconfig",
            path.to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") || err.contains("x509"), "{err}");
}

/// The bearer token a kubeconfig carries.
fn kubeconfig_token(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("kubeconfig")
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .expect("a token in the kubeconfig")
}

/// `curl` over plain HTTP to a kubelet, returning (HTTP status, body).
fn curl_kubelet(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_kubelet_api_requires_the_apiservers_credential() {
    let c = Cluster::start();
    let image = "wasmkube.local/counter:v1";
    let wasm = example_guest("counter");
    c.import(&wasm, image);
    c.ok_in(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "counter"}},
            "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "counter",
            "image": "{image}", "imagePullPolicy": "Never",
            "env": [{{"name": "INTERVAL_MS", "value": "100"}}]}}]}}}}"#
        ),
    );
    // `kubectl logs` goes through the apiserver, which presents its kubelet-client credential.
    eventually(90, "kubectl logs shows the counter", || {
        let out = c.kubectl(&["logs", "counter"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("count 1")).then_some(())
    });
    // Straight to the kubelet: no token, 401; a node's token, 403; the admin's, the logs.
    let node = c.ok(&["get", "pod", "counter", "-o", "jsonpath={.spec.nodeName}"]);
    let port = c.ok(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let url = format!("http://127.0.0.1:{port}/containerLogs/default/counter/counter");
    let (code, body) = curl_kubelet(&url, None);
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "Unauthorized");
    let node_token = kubeconfig_token(&c.dir.path().join("nodes").join(&node).join("kubeconfig"));
    let (code, body) = curl_kubelet(&url, Some(&node_token));
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        format!("Forbidden (user=system:node:{node}, verb=get, resource=nodes, subresource=proxy)")
    );
    let admin = kubeconfig_token(&c.kubeconfig);
    let (code, body) = curl_kubelet(&url, Some(&admin));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("count 1"), "{body}");
    assert_eq!(
        curl_kubelet(&format!("http://127.0.0.1:{port}/healthz"), None),
        (200, "ok".to_string())
    );
}
