//! `wasmkube up` runs the control plane: the scheduler binds pods to nodes.

use crate::support::{eventually, Cluster};

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {kubernetes.io/os: wasi, kubernetes.io/hostname: n1}
status:
  allocatable: {cpu: '4', memory: 8Gi, pods: '100'}
  capacity: {cpu: '4', memory: 8Gi, pods: '100'}
  conditions:
  - {type: Ready, status: 'True', reason: KubeletReady, message: ready}
";

#[test]
fn up_schedules_pods_onto_nodes() {
    let c = Cluster::start();
    c.ok_in(&["create", "-f", "-"], NODE);
    // `up` runs its own node too: select n1 to see this pod land on the one created here.
    c.ok(&[
        "run",
        "p",
        "--image=example/hello:1",
        "--restart=Never",
        r#"--overrides={"spec":{"nodeSelector":{"kubernetes.io/hostname":"n1"}}}"#,
    ]);
    c.ok(&[
        "wait",
        "--for=jsonpath={.spec.nodeName}=n1",
        "pod/p",
        "--timeout=60s",
    ]);
    let cond = c.ok(&[
        "get",
        "pod",
        "p",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    assert_eq!(cond.trim(), "True");
}

#[test]
fn up_runs_a_wasm_pod_end_to_end_and_serves_its_logs() {
    let c = Cluster::start();
    let wasm = crate::support::example_guest("hello");
    c.import(&wasm, "wasmkube.local/hello:v1");
    // kubectl → apiserver → scheduler → binding → kubelet → wasmtime → status → logs.
    c.ok(&[
        "run",
        "hello",
        "--image=wasmkube.local/hello:v1",
        "--image-pull-policy=Never",
        "--restart=Never",
        "--",
        "world",
    ]);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/hello",
        "--timeout=60s",
    ]);
    let logs = c.ok(&["logs", "hello"]);
    assert!(logs.contains("hello, world!"), "{logs}");
    let table = c.ok(&["get", "pod", "hello"]);
    assert!(table.contains("Completed"), "{table}");
}

/// `kubectl top`'s CPU or memory column of the row for `name` (`250m` → 250, `12Mi` → 12).
fn top_column(table: &str, name: &str, column: usize) -> Option<u64> {
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let cell = row.split_whitespace().nth(column)?;
    cell.trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .ok()
}

/// A cluster with the spinning guest imported as `wasmkube.local/spin:v1`.
fn cluster_with_spinner() -> Cluster {
    let c = Cluster::start();
    c.import(
        &crate::support::example_guest("infinite-loop"),
        "wasmkube.local/spin:v1",
    );
    c
}

#[test]
fn kubectl_top_shows_what_pods_and_nodes_use() {
    let c = cluster_with_spinner();
    c.import(
        &crate::support::example_guest("counter"),
        "wasmkube.local/counter:v1",
    );
    // A guest spinning under a 300m limit, and one that mostly sleeps.
    c.ok_in(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: spin, labels: {app: spin}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: c, image: "wasmkube.local/spin:v1", imagePullPolicy: Never,
     resources: {limits: {cpu: 300m}}}
---
apiVersion: v1
kind: Pod
metadata: {name: idle, labels: {app: idle}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: c, image: "wasmkube.local/counter:v1", imagePullPolicy: Never,
     env: [{name: INTERVAL_MS, value: "1000"}]}
"#,
    );
    for pod in ["spin", "idle"] {
        c.ok(&[
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ]);
    }
    // The kubelet measures CPU between scrapes at least a second apart: ask until a window
    // shows the spinning guest near its limit.
    let (spin, idle) = eventually(60, "kubectl top pods shows the spinning pod's CPU", || {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let out = c.kubectl(&["top", "pods"]);
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        let spin = top_column(&table, "spin", 1)?;
        let idle = top_column(&table, "idle", 1)?;
        (spin >= 100).then_some((spin, idle))
    });
    assert!(spin <= 400, "spin uses {spin}m under a 300m limit");
    assert!(idle < 50, "idle uses {idle}m");
    // Label selectors narrow it, as the HPA asks.
    let table = c.ok(&["top", "pods", "-l", "app=idle"]);
    assert!(top_column(&table, "idle", 1).is_some(), "{table}");
    assert!(top_column(&table, "spin", 1).is_none(), "{table}");
    // Nodes: CPU and memory of the machine, with percentages of allocatable.
    let node = c.ok(&["get", "pod", "spin", "-o", "jsonpath={.spec.nodeName}"]);
    let table = c.ok(&["top", "nodes"]);
    assert!(top_column(&table, &node, 1).is_some(), "{table}");
    assert!(
        top_column(&table, &node, 3).is_some_and(|mib| mib > 0),
        "{table}"
    );
}

#[test]
fn an_autoscaler_scales_a_deployment_on_the_cpu_its_pods_really_use() {
    let c = cluster_with_spinner();
    // Each pod asks for 100m and spins at its 200m limit: 200 % of its request.
    c.ok_in(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spin}
spec:
  replicas: 1
  selector: {matchLabels: {app: spin}}
  template:
    metadata: {labels: {app: spin}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: c, image: "wasmkube.local/spin:v1", imagePullPolicy: Never,
         resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}}
"#,
    );
    c.ok(&[
        "autoscale",
        "deployment",
        "spin",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    // Metrics from the kubelets (no test-fed numbers): the HPA sees ~200 % and scales to its
    // maximum within a sync period or two.
    eventually(90, "the autoscaler to scale spin to 3", || {
        let replicas = c.ok(&[
            "get",
            "deployment",
            "spin",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        (replicas.trim() == "3").then_some(())
    });
    let current = c.ok(&[
        "get",
        "hpa",
        "spin",
        "-o",
        "jsonpath={.status.currentMetrics[0].resource.current.averageUtilization}",
    ]);
    let current: i64 = current.trim().parse().expect("a measured utilization");
    assert!(current > 50, "utilization {current}% (target 50%)");
}
