//! Client libraries against `wasmkube up`: kube-rs and the official Python `kubernetes` client
//! each create a wasm pod, wait for Running, read its logs and delete it.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams};

use crate::support::{example_guest, Cluster};

/// Imports the counter example into the cluster's node as `wasmkube.local/counter:v1`.
fn import_counter(c: &Cluster) -> &'static str {
    let image = "wasmkube.local/counter:v1";
    let wasm = example_guest("counter");
    c.import(&wasm, image);
    image
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_runs_a_wasm_pod_reads_its_logs_and_deletes_it() {
    let c = Cluster::start();
    let image = import_counter(&c);
    let pods: Api<Pod> = Api::default_namespaced(c.client().await);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "from-kube-rs"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "counter", "image": image, "imagePullPolicy": "Never",
                "env": [{"name": "INTERVAL_MS", "value": "100"}],
            }],
        },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    until("Running", || async {
        let p = pods.get("from-kube-rs").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let logs = until("logs", || async {
        let text = pods
            .logs("from-kube-rs", &LogParams::default())
            .await
            .ok()?;
        text.contains("count 2").then_some(text)
    })
    .await;
    assert!(logs.starts_with("count 0"), "{logs}");
    pods.delete("from-kube-rs", &DeleteParams::default())
        .await
        .expect("delete");
    until("deletion", || async {
        pods.get_opt("from-kube-rs")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
}

/// The venv python with the `kubernetes` package, or None (reason printed) when skipped.
fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("WASMKUBE_TEST_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: WASMKUBE_TEST_PYTHON is not set (scripts/test sets it up)")
        }
        None => {
            eprintln!("skipping {test}: WASMKUBE_TEST_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

#[test]
fn python_client_runs_a_wasm_pod_reads_its_logs_and_deletes_it() {
    let Some(python) = python("python_client_runs_a_wasm_pod_reads_its_logs_and_deletes_it") else {
        return;
    };
    let c = Cluster::start();
    let image = import_counter(&c);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/pod_lifecycle.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&c.kubeconfig)
        .args([image, "from-python"])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "created from-python",
        "running on",
        "logs: count 0",
        "deleted",
    ] {
        assert!(stdout.contains(step), "{step:?} missing in:\n{stdout}");
    }
}
