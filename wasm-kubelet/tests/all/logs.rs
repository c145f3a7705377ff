//! Container logs through the apiserver's `pods/log` (proxied to the kubelet), with kube-rs and
//! the real `kubectl`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use kube::api::LogParams;
use serde_json::json;

use crate::cluster::{image, phase, restart_count, Cluster};
use crate::guests::Target;

fn kubeconfig(c: &Cluster) -> std::path::PathBuf {
    let path = c.data_dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\n\
             contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n\
             current-context: t\nusers:\n- name: t\n  user: {{}}\n",
            c.url()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_timestamps_and_previous_through_the_apiserver() {
    let c = Cluster::start().await;
    c.create_pod(
        "hello",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "c", "image": image("hello", Target::P2), "args": ["logs"]}]}),
    )
    .await;
    c.wait_pod("hello", 60, |p| phase(p) == "Succeeded").await;
    let all = c.pods().logs("hello", &LogParams::default()).await.unwrap();
    assert_eq!(all, "hello, logs!\nhello wrote to stderr too\n");
    let tail = c
        .pods()
        .logs(
            "hello",
            &LogParams {
                tail_lines: Some(1),
                timestamps: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (ts, text) = tail.trim_end().split_once(' ').unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{tail}");
    assert_eq!(text, "hello wrote to stderr too");

    c.create_pod(
        "crash",
        json!({"restartPolicy": "Always",
               "containers": [{"name": "c", "image": image("exit-nonzero", Target::P1), "args": ["4"]}]}),
    )
    .await;
    c.wait_pod("crash", 60, |p| restart_count(p, "c") >= 1)
        .await;
    let previous = c
        .pods()
        .logs(
            "crash",
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(previous, "exiting with 4\n");
    let err = c
        .pods()
        .logs(
            "hello",
            &LogParams {
                container: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_new_lines_with_kube_rs_and_kubectl() {
    let c = Cluster::start().await;
    c.create_pod(
        "counter",
        json!({"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "c", "image": image("counter", Target::P1),
            "env": [{"name": "INTERVAL_MS", "value": "50"}],
        }]}),
    )
    .await;
    c.wait_pod("counter", 60, |p| phase(p) == "Running").await;
    let stream = c
        .pods()
        .log_stream(
            "counter",
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<String> = tokio::time::timeout(
        Duration::from_secs(20),
        stream.lines().take(5).map(|l| l.unwrap()).collect(),
    )
    .await
    .expect("5 lines followed");
    assert_eq!(
        lines,
        (0..5).map(|i| format!("count {i}")).collect::<Vec<_>>()
    );

    // The real kubectl: `kubectl logs -f` keeps printing as the guest counts.
    let config = kubeconfig(&c);
    let lines = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("kubectl")
            .args(["--kubeconfig"])
            .arg(&config)
            .args(["logs", "-f", "--tail=1", "counter"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl");
        let out = child.stdout.take().unwrap();
        let lines: Vec<String> = BufReader::new(out)
            .lines()
            .take(3)
            .map(|l| l.unwrap())
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("kubectl followed")
        .unwrap();
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| l.strip_prefix("count ").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
    c.delete_pod("counter", Some(0)).await;
    c.wait_gone("counter", 10).await;
}
