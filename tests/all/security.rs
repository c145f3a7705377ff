//! Secure by default: HTTPS with the generated CA, bearer tokens, 401 for anonymous requests.

use std::path::Path;

use crate::support::{eventually, example_guest, wasmkube, Cluster};

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

/// `curl` to a kubelet's HTTPS API (its certificate is self-signed: `-k`), with a bearer token
/// or a client certificate (`[cert, key]` files), returning (HTTP status, body).
fn curl_kubelet(url: &str, token: Option<&str>, cert: Option<[&Path; 2]>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some([c, k]) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
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
    let url = format!("https://127.0.0.1:{port}/containerLogs/default/counter/counter");
    let (code, body) = curl_kubelet(&url, None, None);
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["reason"], "Unauthorized");
    let node_token = kubeconfig_token(&c.dir.path().join("nodes").join(&node).join("kubeconfig"));
    let (code, body) = curl_kubelet(&url, Some(&node_token), None);
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        format!("Forbidden (user=system:node:{node}, verb=get, resource=nodes, subresource=proxy)")
    );
    let admin = kubeconfig_token(&c.kubeconfig);
    let (code, body) = curl_kubelet(&url, Some(&admin), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("count 1"), "{body}");
    // The apiserver's client certificate opens the kubelet API, and no bearer token of it
    // exists that a kubelet could replay.
    let pki = c.dir.path().join("pki");
    let cert = [
        pki.join("kubelet-client.crt"),
        pki.join("kubelet-client.key"),
    ];
    let (code, body) = curl_kubelet(&url, None, Some([&cert[0], &cert[1]]));
    assert_eq!(code, 200, "{body}");
    let tokens = std::fs::read_to_string(pki.join("tokens.csv")).expect("tokens");
    assert!(
        !tokens.contains("kube-apiserver-kubelet-client"),
        "{tokens}"
    );
    assert_eq!(
        curl_kubelet(&format!("https://127.0.0.1:{port}/healthz"), None, None),
        (200, "ok".to_string())
    );
}

/// A child process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `wasmkube` with `args`, asserts failure and returns stderr.
fn wasmkube_fails(args: &[String]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(args)
        .output()
        .expect("run wasmkube");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "wasmkube {args:?} should fail: {stderr}"
    );
    stderr
}

#[test]
fn a_node_joins_with_a_bootstrap_token_and_runs_pods() {
    let c = Cluster::start();
    let printed = wasmkube(&[
        "token".as_ref(),
        "create".as_ref(),
        "--data-dir".as_ref(),
        c.dir.path().as_os_str(),
    ]);
    let join: Vec<String> = printed.split_whitespace().map(str::to_string).collect();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert_eq!(
        join[..4],
        ["wasmkube", "kubelet", "join", "--server"],
        "{printed}"
    );
    assert_eq!(join[4], c.url);
    assert_eq!(
        (join[5].as_str(), join[7].as_str()),
        ("--token", "--ca-cert-hash")
    );
    let (token, hash) = (join[6].clone(), join[8].clone());
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    let nodes = tempfile::tempdir().expect("temp dir");
    let node_dir = nodes.path().join("joined");
    let join_args = |token: &str, hash: &str, name: &str, dir: &std::path::Path| -> Vec<String> {
        [
            "kubelet",
            "join",
            "--server",
            &c.url,
            "--token",
            token,
            "--ca-cert-hash",
            hash,
            "--node-name",
            name,
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--proxy=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // A pin that is not the cluster's CA: refused before any credential is sent.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = wasmkube_fails(&join_args(&token, &wrong, "joined", &node_dir));
    assert!(
        err.contains(&format!(
            "the cluster CA's hash is {hash}, not the --ca-cert-hash {wrong}"
        )),
        "{err}"
    );
    // A token the cluster never issued: 401, said plainly.
    let err = wasmkube_fails(&join_args(
        "abcdef.0123456789abcdef",
        &hash,
        "joined",
        &node_dir,
    ));
    assert!(
        err.contains("refused the bootstrap token (401 Unauthorized)"),
        "{err}"
    );
    assert!(!node_dir.join("kubeconfig").exists());

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(join_args(&token, &hash, "joined", &node_dir))
        .env("WASMKUBE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start wasmkube kubelet join");
    let _joined = Running(child);
    eventually(60, "node joined is Ready", || {
        let out = c.kubectl(&[
            "get",
            "node",
            "joined",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });
    let kubeconfig = node_dir.join("kubeconfig");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&kubeconfig)
        .expect("kubeconfig")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the node credential is private: {mode:o}");

    // A pod pinned to the joined node runs there, and its logs come through the apiserver.
    let image = "wasmkube.local/counter:v1";
    wasmkube(&[
        "image".as_ref(),
        "import".as_ref(),
        example_guest("counter").as_os_str(),
        image.as_ref(),
        "--data-dir".as_ref(),
        node_dir.as_os_str(),
    ]);
    c.ok_in(
        &["apply", "-f", "-"],
        &format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "on-joined"}},
            "spec": {{"terminationGracePeriodSeconds": 1,
            "nodeSelector": {{"kubernetes.io/hostname": "joined"}},
            "containers": [{{"name": "counter", "image": "{image}", "imagePullPolicy": "Never",
            "env": [{{"name": "INTERVAL_MS", "value": "100"}}]}}]}}}}"#
        ),
    );
    eventually(
        90,
        "kubectl logs shows the counter on the joined node",
        || {
            let out = c.kubectl(&["logs", "on-joined"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success() && text.contains("count 1")).then_some(())
        },
    );
    assert_eq!(
        c.ok(&["get", "pod", "on-joined", "-o", "jsonpath={.spec.nodeName}"]),
        "joined"
    );

    // The same name again: the credential exists and is not replaced.
    let err = wasmkube_fails(&join_args(
        &token,
        &hash,
        "joined",
        &nodes.path().join("again"),
    ));
    assert!(
        err.contains("node joined already joined: its credential exists; delete secret kube-system/node-token-joined to rejoin"),
        "{err}"
    );

    // Its data dir already holds a credential: join says how to restart instead.
    let err = wasmkube_fails(&join_args(&token, &hash, "joined", &node_dir));
    assert!(err.contains("already joined a cluster"), "{err}");

    // The joined node's credential is a node's: it cannot change another node.
    let up_node = c
        .ok(&["get", "nodes", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("node/").to_string())
        .find(|n| n != "joined")
        .expect("up's node");
    let err = c.err(&[
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
        "label",
        "node",
        &up_node,
        "stolen=yes",
    ]);
    assert!(
        err.contains(
            r#"User "system:node:joined" cannot patch resource "nodes" in API group "" at the cluster scope"#
        ),
        "{err}"
    );
}
