//! Secure by default: HTTPS with the generated CA, bearer tokens, 401 for anonymous requests.

use crate::support::Cluster;

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
