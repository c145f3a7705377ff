//! The kubelet against an in-process apiserver: node registration, pod lifecycles, statuses.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::json;

use crate::cluster::{
    container, image, phase, restart_count, terminated, waiting_reason, Cluster, NODE,
};
use crate::guests::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_registers_with_wasm_labels_capacity_and_a_lease() {
    let c = Cluster::start().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let node = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Some(n)) = nodes.get_opt(NODE).await {
                if n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some()
                {
                    return n;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node registered");
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/arch"], "wasm32-wasi");
    assert_eq!(labels["kubernetes.io/os"], "wasi");
    assert!(node.spec.unwrap().taints.is_none());
    let status = node.status.unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "1000");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let port = status
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    assert!(port > 0);
    assert_eq!(status.node_info.unwrap().operating_system, "wasi");
    let lease = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Some(l)) = leases.get_opt(NODE).await {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("lease created");
    assert!(lease.spec.unwrap().renew_time.is_some());
    // The kubelet API answers on the advertised port.
    let health = reqwest_get(&format!("http://127.0.0.1:{port}/healthz")).await;
    assert_eq!(health, "ok");
}

/// A tiny HTTP GET without another client dependency.
pub async fn reqwest_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_to_success_as_p1_and_p2_with_status_and_logs() {
    let c = Cluster::start().await;
    for (name, target) in [("hello-p1", Target::P1), ("hello-p2", Target::P2)] {
        c.create_pod(
            name,
            json!({
                "restartPolicy": "Never",
                "containers": [{
                    "name": "hello", "image": image("hello", target), "args": ["$(WHO)"],
                    "env": [
                        {"name": "WHO", "value": "kube"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                }],
            }),
        )
        .await;
        let pod = c.wait_pod(name, 60, |p| phase(p) == "Succeeded").await;
        let t = terminated(&pod, "hello").expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        let cs = container(&pod, "hello");
        assert!(
            cs.image_id.starts_with("wasmkube.test/hello@sha256:"),
            "{}",
            cs.image_id
        );
        assert_eq!(cs.restart_count, 0);
        let status = pod.status.unwrap();
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        assert!(status.start_time.is_some());
        let port = node_port(&c).await;
        let logs = reqwest_get(&format!(
            "http://127.0.0.1:{port}/containerLogs/default/{name}/hello"
        ))
        .await;
        assert_eq!(
            logs,
            format!("hello, kube!\nenv WHO=kube\nenv POD={name}\nhello wrote to stderr too\n")
        );
        // Events like upstream's, about the pod.
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(c.client.clone(), "default");
        let reasons = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let list = events.list(&Default::default()).await.unwrap();
                let reasons: Vec<String> = list
                    .items
                    .iter()
                    .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                    .filter_map(|e| e.reason.clone())
                    .collect();
                if ["Pulled", "Created", "Started"]
                    .iter()
                    .all(|r| reasons.iter().any(|x| x == r))
                {
                    return reasons;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("Pulled, Created and Started events");
        assert!(!reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
    }
}

pub async fn node_port(c: &Cluster) -> i32 {
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes
        .get(NODE)
        .await
        .unwrap()
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_traps_and_oom_are_reported_under_never() {
    let c = Cluster::start().await;
    let run = |name: &'static str, guest: &'static str, extra: serde_json::Value| {
        let mut container = json!({"name": "c", "image": image(guest, Target::P1)});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                container[k] = v.clone();
            }
        }
        c.create_pod(
            name,
            json!({"restartPolicy": "Never", "containers": [container]}),
        )
    };
    run("exit7", "exit-nonzero", json!({"args": ["7"]})).await;
    run("trap", "trap", json!({})).await;
    run(
        "oom",
        "memory-hog",
        json!({"resources": {"limits": {"memory": "16Mi"}}}),
    )
    .await;
    let pod = c.wait_pod("exit7", 60, |p| phase(p) == "Failed").await;
    let t = terminated(&pod, "c").unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")));
    let pod = c.wait_pod("trap", 60, |p| phase(p) == "Failed").await;
    let t = terminated(&pod, "c").unwrap();
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert!(t.message.unwrap_or_default().contains("unreachable"));
    let pod = c.wait_pod("oom", 60, |p| phase(p) == "Failed").await;
    let t = terminated(&pod, "c").unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_with_doubling_crash_loop_backoff() {
    let c = Cluster::start().await;
    c.create_pod(
        "crash",
        json!({"restartPolicy": "OnFailure",
               "containers": [{"name": "c", "image": image("exit-nonzero", Target::P1)}]}),
    )
    .await;
    // Base backoff is 300 ms in tests: restarts at ~0.3, 0.9, 2.1 s.
    let started = Instant::now();
    let pod = c
        .wait_pod("crash", 60, |p| restart_count(p, "c") >= 3)
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300 + 600 + 1200),
        "backoff doubles: {:?}",
        started.elapsed()
    );
    assert_eq!(phase(&pod), "Running");
    let last = container(&pod, "c")
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(last.exit_code, 3);
    let pod = c
        .wait_pod("crash", 30, |p| {
            waiting_reason(p, "c").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    assert!(container(&pod, "c").restart_count >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_then_the_app_containers() {
    let c = Cluster::start().await;
    c.create_pod(
        "init",
        json!({
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "first", "image": image("hello", Target::P1), "args": ["first"]},
                {"name": "second", "image": image("hello", Target::P2), "args": ["second"]},
            ],
            "containers": [
                {"name": "a", "image": image("hello", Target::P1)},
                {"name": "b", "image": image("exit-nonzero", Target::P2), "args": ["0"]},
            ],
        }),
    )
    .await;
    let pod = c.wait_pod("init", 60, |p| phase(p) == "Succeeded").await;
    let status = pod.status.unwrap();
    let inits = status.init_container_statuses.unwrap();
    let finished: Vec<_> = inits
        .iter()
        .map(|s| s.state.clone().unwrap().terminated.unwrap())
        .collect();
    assert!(
        finished[0].finished_at.as_ref().unwrap().0 <= finished[1].started_at.as_ref().unwrap().0
    );
    let app_started = status
        .container_statuses
        .unwrap()
        .iter()
        .map(|s| {
            s.state
                .clone()
                .unwrap()
                .terminated
                .unwrap()
                .started_at
                .unwrap()
                .0
        })
        .min()
        .unwrap();
    assert!(finished[1].finished_at.as_ref().unwrap().0 <= app_started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_bound_loop_is_stopped_on_delete_within_the_grace_period() {
    let c = Cluster::start().await;
    c.create_pod(
        "spin",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [{"name": "c", "image": image("infinite-loop", Target::P2)}]}),
    )
    .await;
    c.wait_pod("spin", 60, |p| phase(p) == "Running").await;
    let asked = Instant::now();
    c.delete_pod("spin", None).await;
    c.wait_gone("spin", 10).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "stopped after the 1 s grace: {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_wait_with_a_clear_reason() {
    let c = Cluster::start().await;
    let bad = c.data_dir.join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\x01\x05broken").unwrap();
    wasmkube_kubelet::import(&c.data_dir, &bad, "wasmkube.test/bad:v1").unwrap();
    c.create_pod(
        "invalid",
        json!({"containers": [{"name": "c", "image": "wasmkube.test/bad:v1"}]}),
    )
    .await;
    c.create_pod(
        "never",
        json!({"containers": [{"name": "c", "image": "wasmkube.test/absent:v1",
                               "imagePullPolicy": "Never"}]}),
    )
    .await;
    let pod = c
        .wait_pod("invalid", 60, |p| {
            waiting_reason(p, "c").is_some_and(|r| r == "CreateContainerError")
        })
        .await;
    assert_eq!(phase(&pod), "Pending");
    c.wait_pod("never", 60, |p| {
        waiting_reason(p, "c").is_some_and(|r| r == "ErrImageNeverPull")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kubelet_restart_pods_run_again_and_count_the_restart() {
    let mut c = Cluster::start().await;
    c.create_pod(
        "survivor",
        json!({"containers": [{"name": "c", "image": image("counter", Target::P1),
                               "env": [{"name": "INTERVAL_MS", "value": "50"}]}]}),
    )
    .await;
    c.create_pod(
        "done",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "c", "image": image("hello", Target::P1)}]}),
    )
    .await;
    c.wait_pod("survivor", 60, |p| phase(p) == "Running").await;
    c.wait_pod("done", 60, |p| phase(p) == "Succeeded").await;
    c.restart_kubelet().await;
    let pod = c
        .wait_pod("survivor", 60, |p| {
            restart_count(p, "c") == 1
                && container(p, "c")
                    .state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some())
        })
        .await;
    assert_eq!(phase(&pod), "Running");
    // A pod that had finished is not run again.
    let done = c.pods().get("done").await.unwrap();
    assert_eq!(phase(&done), "Succeeded");
    assert_eq!(restart_count(&done, "c"), 0);
}

#[test]
fn taints_parse_from_the_flag_syntax() {
    let t: wasmkube_kubelet::Taint = "wasm=true:NoSchedule".parse().unwrap();
    assert_eq!(
        (t.key.as_str(), t.value.as_str(), t.effect.as_str()),
        ("wasm", "true", "NoSchedule")
    );
    let t: wasmkube_kubelet::Taint = "only-key:NoExecute".parse().unwrap();
    assert_eq!(t.value, "");
    assert!("bad".parse::<wasmkube_kubelet::Taint>().is_err());
    assert!("k=v:Sometimes".parse::<wasmkube_kubelet::Taint>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_taints_are_registered() {
    let c = Cluster::start_with(|cfg| {
        cfg.taints = vec!["kubernetes.io/arch=wasm32-wasi:NoSchedule".parse().unwrap()];
    })
    .await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let node = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Some(n)) = nodes.get_opt(NODE).await {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let taints = node.spec.unwrap().taints.unwrap();
    assert_eq!(taints[0].effect, "NoSchedule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_neither_stop_the_kubelet_nor_delay_other_pods() {
    let c = Cluster::start_with(|cfg| cfg.max_log_bytes = 256 << 10).await;
    let hostile = [
        ("spin", "infinite-loop", json!({})),
        ("spam", "spam", json!({})),
        ("bomb", "memory-hog", json!({"limits": {"memory": "64Mi"}})),
    ];
    for (name, guest, resources) in &hostile {
        c.create_pod(
            name,
            json!({"terminationGracePeriodSeconds": 0,
                   "containers": [{"name": "c", "image": image(guest, Target::P1),
                                   "resources": resources}]}),
        )
        .await;
    }
    c.wait_pod("spin", 60, |p| phase(p) == "Running").await;
    c.wait_pod("spam", 60, |p| phase(p) == "Running").await;
    // An ordinary pod still starts and finishes promptly next to them.
    c.create_pod(
        "polite",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "c", "image": image("hello", Target::P2)}]}),
    )
    .await;
    let started = Instant::now();
    c.wait_pod("polite", 30, |p| phase(p) == "Succeeded").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The bomb is OOMKilled and restarted; the flood of output is rotated, not unbounded.
    c.wait_pod("bomb", 60, |p| restart_count(p, "c") >= 1).await;
    let pods_dir = c.data_dir.join("pods");
    let spam_dir = std::fs::read_dir(&pods_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("default_spam_"))
        .unwrap()
        .path()
        .join("c");
    let bytes: u64 = std::fs::read_dir(&spam_dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes <= 2 * (256 << 10) + (64 << 10), "log bytes {bytes}");
    for (name, _, _) in &hostile {
        c.delete_pod(name, Some(0)).await;
    }
    for (name, _, _) in &hostile {
        c.wait_gone(name, 20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_seconds_fails_the_pod() {
    let c = Cluster::start().await;
    c.create_pod(
        "deadline",
        json!({"activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 0,
               "containers": [{"name": "c", "image": image("counter", Target::P1)}]}),
    )
    .await;
    // The phase turns Failed as the deadline passes; the container's terminated state follows
    // once the guest has been stopped (as upstream, in a later status update). The guest is
    // told to stop as a process is with SIGTERM (even with a grace period of 0: upstream's
    // kubelet gives at least 2 s), and a guest cannot handle it, so: 143.
    let pod = c
        .wait_pod("deadline", 30, |p| {
            phase(p) == "Failed"
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.first())
                    .and_then(|c| c.state.as_ref())
                    .is_some_and(|s| s.terminated.is_some())
        })
        .await;
    let status = pod.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    let t = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 143);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_summary_reports_memory_per_running_container() {
    let c = Cluster::start().await;
    c.create_pod(
        "counted",
        json!({"terminationGracePeriodSeconds": 0,
               "containers": [{"name": "c", "image": image("counter", Target::P2)}]}),
    )
    .await;
    c.wait_pod("counted", 60, |p| phase(p) == "Running").await;
    let port = node_port(&c).await;
    let summary: serde_json::Value =
        serde_json::from_str(&reqwest_get(&format!("http://127.0.0.1:{port}/stats/summary")).await)
            .unwrap();
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "counted")
        .expect("the running pod is listed");
    assert!(
        pod["memory"]["workingSetBytes"].as_u64().unwrap() >= 64 << 10,
        "{pod}"
    );
    assert_eq!(pod["containers"][0]["name"], "c");
    assert!(
        summary["node"]["memory"]["availableBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_imported_while_the_kubelet_runs_is_used_without_a_restart() {
    let c = Cluster::start().await;
    c.create_pod(
        "late",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "c", "image": "wasmkube.test/late:v1",
                               "imagePullPolicy": "Never"}]}),
    )
    .await;
    c.wait_pod("late", 60, |p| {
        waiting_reason(p, "c").as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    wasmkube_kubelet::import(
        &c.data_dir,
        &crate::guests::path("hello", Target::P1),
        "wasmkube.test/late:v1",
    )
    .unwrap();
    // The next retry (backoff: 300 ms in tests) finds it.
    c.wait_pod("late", 60, |p| phase(p) == "Succeeded").await;
}

#[test]
fn the_example_manifests_are_valid_pods_or_workloads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let mut pods = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "Pod" {
                let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
                pods += 1;
            }
        }
    }
    assert!(pods >= 6, "{pods} pod manifests");
}
