//! `wasmkube up` runs the control plane: the scheduler binds pods to nodes.

use crate::support::Cluster;

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
