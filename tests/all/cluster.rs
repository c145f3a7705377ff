//! `wasmkube up` runs the control plane: the scheduler binds pods to nodes.

use crate::support::Cluster;

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {kubernetes.io/os: wasi}
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
    c.ok(&["run", "p", "--image=example/hello:1", "--restart=Never"]);
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
