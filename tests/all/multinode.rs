//! `wasmkube up --nodes 2` with the real kubectl only: a Deployment pulled from a real
//! `docker-registry` spreads over both nodes, scales, rolls out a new image and is deleted
//! without a trace; the same on etcd; and a SIGTERM + restart keeps every object and pod.

use std::collections::BTreeSet;

use crate::support::{eventually, Cluster, Registry};

fn deployment(image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: counter, labels: {{app: counter}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: counter}}}}
  template:
    metadata: {{labels: {{app: counter}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: counter
        image: {image}
        env: [{{name: INTERVAL_MS, value: '200'}}]
"
    )
}

/// Lines of `kubectl get` jsonpath output, one item per line.
fn lines(c: &Cluster, args: &[&str]) -> Vec<String> {
    c.ok(args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `name node image phase` of every counter pod that is not being deleted.
fn counter_pods(c: &Cluster) -> Vec<Vec<String>> {
    lines(
        c,
        &[
            "get",
            "pods",
            "-l",
            "app=counter",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}|{.spec.nodeName}|{.spec.containers[0].image}|{.status.phase}|{.metadata.deletionTimestamp}{"\n"}{end}"#,
        ],
    )
    .into_iter()
    .map(|l| l.split('|').map(str::to_string).collect::<Vec<_>>())
    .filter(|f| f.get(4).is_none_or(String::is_empty))
    .map(|mut f| {
        f.truncate(4);
        f
    })
    .collect()
}

/// Waits until exactly `n` live counter pods run `image`, all Running; returns them.
fn wait_running(c: &Cluster, n: usize, image: &str) -> Vec<Vec<String>> {
    eventually(120, &format!("{n} Running pods of {image}"), || {
        let pods = counter_pods(c);
        let all = pods
            .iter()
            .all(|p| p.len() == 4 && p[2] == image && p[3] == "Running");
        (pods.len() == n && all).then_some(pods)
    })
}

fn wait_nodes_ready(c: &Cluster, n: usize) -> Vec<String> {
    eventually(60, &format!("{n} Ready nodes"), || {
        let ready = lines(
            c,
            &[
                "get",
                "nodes",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
            ],
        );
        let names: Vec<String> = ready
            .iter()
            .filter(|l| l.ends_with(" True"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect();
        (names.len() == n).then_some(names)
    })
}

/// Entries under every node's `pods/` dir (one per pod that still has logs on disk).
fn pod_dirs(c: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    let nodes = c.dir.path().join("nodes");
    for node in std::fs::read_dir(&nodes).into_iter().flatten().flatten() {
        for pod in std::fs::read_dir(node.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(pod.path().display().to_string());
        }
    }
    found
}

/// Pod addresses still allocated on the nodes (each kubelet's IPAM record,
/// `nodes/<node>/network/ipam.json`: pod uid → address).
fn allocated_addresses(c: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    let nodes = c.dir.path().join("nodes");
    for node in std::fs::read_dir(&nodes).into_iter().flatten().flatten() {
        let record = node.path().join("network/ipam.json");
        let Ok(text) = std::fs::read_to_string(&record) else {
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(&text).expect("ipam.json is JSON");
        for (uid, ip) in json["pods"].as_object().into_iter().flatten() {
            found.push(format!("{uid} {ip}"));
        }
    }
    found
}

/// The whole lifecycle of a Deployment on a two-node cluster, through kubectl only.
fn deployment_lifecycle(c: &Cluster, registry: &Registry) {
    let v1 = registry.push_example("counter", "counter", "v1");
    let v2 = registry.push_example("counter", "counter", "v2");
    let nodes = wait_nodes_ready(c, 2);

    c.ok_in(&["apply", "-f", "-"], &deployment(&v1, 4));
    c.ok(&["rollout", "status", "deployment/counter", "--timeout=120s"]);
    let pods = wait_running(c, 4, &v1);
    assert_eq!(allocated_addresses(c).len(), 4, "one address per pod");
    let used: BTreeSet<&str> = pods.iter().map(|p| p[1].as_str()).collect();
    assert_eq!(
        used,
        nodes.iter().map(String::as_str).collect(),
        "pods spread over both nodes: {pods:?}"
    );
    // Logs come from each pod's own node (the apiserver proxies to its kubelet).
    for p in &pods {
        let name = &p[0];
        eventually(30, &format!("logs of {name}"), || {
            c.kubectl(&["logs", name])
                .status
                .success()
                .then(|| c.ok(&["logs", name]))
                .filter(|l| l.contains("count 0"))
        });
    }

    c.ok(&["scale", "deployment/counter", "--replicas=5"]);
    c.ok(&["rollout", "status", "deployment/counter", "--timeout=120s"]);
    wait_running(c, 5, &v1);

    c.ok(&[
        "set",
        "image",
        "deployment/counter",
        &format!("counter={v2}"),
    ]);
    c.ok(&["rollout", "status", "deployment/counter", "--timeout=120s"]);
    wait_running(c, 5, &v2);
    let history = c.ok(&["rollout", "history", "deployment/counter"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    // Back to the first template, then a restart (new pods, same template).
    c.ok(&["rollout", "undo", "deployment/counter"]);
    c.ok(&["rollout", "status", "deployment/counter", "--timeout=120s"]);
    let undone = wait_running(c, 5, &v1);
    c.ok(&["rollout", "restart", "deployment/counter"]);
    c.ok(&["rollout", "status", "deployment/counter", "--timeout=120s"]);
    eventually(120, "5 restarted pods of v1", || {
        let pods = wait_running(c, 5, &v1);
        pods.iter().all(|p| !undone.contains(p)).then_some(())
    });

    c.ok(&["delete", "deployment", "counter"]);
    eventually(120, "every counter pod and ReplicaSet gone", || {
        let pods = lines(c, &["get", "pods", "-l", "app=counter", "-o", "name"]);
        let sets = lines(
            c,
            &["get", "replicasets", "-l", "app=counter", "-o", "name"],
        );
        (pods.is_empty() && sets.is_empty()).then_some(())
    });
    eventually(30, "no pod dirs or addresses left on the nodes", || {
        (pod_dirs(c).is_empty() && allocated_addresses(c).is_empty()).then_some(())
    });
}

#[test]
fn two_nodes_run_a_deployment_from_a_registry_through_its_whole_lifecycle() {
    let registry = Registry::start();
    let c = Cluster::up_with(&["--nodes", "2"]);
    deployment_lifecycle(&c, &registry);
}

#[test]
fn two_nodes_on_etcd_run_a_deployment_through_its_whole_lifecycle() {
    let Some(bin) =
        crate::etcd::etcd_binary("two_nodes_on_etcd_run_a_deployment_through_its_whole_lifecycle")
    else {
        return;
    };
    let etcd = crate::etcd::Etcd::start(bin);
    let store = format!("etcd://{}", etcd.endpoint());
    let registry = Registry::start();
    let c = Cluster::up_with(&["--nodes", "2", "--store", &store]);
    deployment_lifecycle(&c, &registry);
}

#[test]
fn a_restarted_cluster_keeps_every_object_and_runs_its_pods_again() {
    let registry = Registry::start();
    let mut c = Cluster::start();
    let image = registry.push_example("counter", "counter", "v1");
    c.ok_in(&["apply", "-f", "-"], &deployment(&image, 2));
    c.ok(&["create", "configmap", "settings", "--from-literal=k=v"]);
    let before = wait_running(&c, 2, &image);
    let uids = |c: &Cluster| {
        lines(
            c,
            &[
                "get",
                "pods,replicasets,deployments,configmaps",
                "-o",
                r#"jsonpath={range .items[*]}{.kind}/{.metadata.name}/{.metadata.uid}{"\n"}{end}"#,
            ],
        )
    };
    let objects = uids(&c);

    assert!(c.stop().success(), "wasmkube up exits cleanly on SIGTERM");
    c.restart();

    // The same objects (same uids), nothing duplicated, and the pods run again.
    let after = wait_running(&c, 2, &image);
    let names = |pods: &[Vec<String>]| pods.iter().map(|p| p[0].clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before));
    eventually(60, "the same objects after the restart", || {
        (uids(&c) == objects).then_some(())
    });
    // A guest does not survive its process: each container was started again (a restart
    // counted, as upstream counts a container that a runtime restart brought back).
    for p in &after {
        let name = &p[0];
        eventually(
            30,
            &format!("{name} running again after the restart"),
            || {
                let state = c.ok(&[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}",
            ]);
                let (restarts, started) = state.trim().split_once(' ')?;
                (restarts.parse::<u32>().ok()? >= 1 && !started.is_empty()).then_some(())
            },
        );
        let logs = c.ok(&["logs", name]);
        assert!(logs.contains("count 0"), "{logs}");
    }
}

/// A second node as its own `wasmkube kubelet` process (so it can die alone), against an
/// `--insecure` cluster whose kubeconfig it borrows; killed when dropped.
struct Worker {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn start(c: &Cluster, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .arg("kubelet")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["--node-name", name, "--data-dir"])
            .arg(dir.path())
            // One host: the first node owns the ClusterIP listeners; no apiserver credential
            // to check on an insecure cluster.
            .args(["--proxy=false", "--anonymous-auth=true"])
            .env("WASMKUBE_LOG", "warn")
            .spawn()
            .expect("start wasmkube kubelet");
        Self { child, _dir: dir }
    }

    /// SIGKILL: the node stops renewing its Lease without a word.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn pods_of_a_killed_kubelet_come_back_running_on_the_other_node() {
    let registry = Registry::start();
    let c = Cluster::up_with(&["--insecure", "--node-monitor-grace-period", "15s"]);
    let image = registry.push_example("counter", "counter", "v1");
    let mut worker = Worker::start(&c, "worker");
    let nodes = wait_nodes_ready(&c, 2);
    let host = nodes
        .iter()
        .find(|n| n.as_str() != "worker")
        .expect("up's own node")
        .clone();
    // Unreachable/not-ready pods are evicted 2 s after the taint (upstream default: 300 s);
    // preferred anti-affinity puts one replica on each node.
    let manifest = deployment(&image, 2).replace(
        "      terminationGracePeriodSeconds: 1\n",
        "      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector: {matchLabels: {app: counter}}
              topologyKey: kubernetes.io/hostname
",
    );
    c.ok_in(&["apply", "-f", "-"], &manifest);
    let pods = wait_running(&c, 2, &image);
    assert!(
        pods.iter().any(|p| p[1] == "worker"),
        "one pod per node: {pods:?}"
    );

    worker.kill();
    // Lease expiry (15 s) → Ready=Unknown + unreachable taint → eviction after 2 s → the
    // ReplicaSet's replacement lands on the surviving node.
    eventually(120, "both replicas Running on the surviving node", || {
        let pods = counter_pods(&c);
        let moved = pods.len() == 2 && pods.iter().all(|p| p[1] == host && p[3] == "Running");
        moved.then_some(())
    });
    let taints = c.ok(&[
        "get",
        "node",
        "worker",
        "-o",
        "jsonpath={.spec.taints[*].key}",
    ]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "the dead node is tainted unreachable: {taints}"
    );
}
