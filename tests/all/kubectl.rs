//! The real kubectl against the apiserver: every command of the foundation's acceptance, with
//! assertions on what kubectl prints.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::Cluster;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/manifests");

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn deployment(image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels: {{app: app}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: app}}
  template:
    metadata:
      labels: {{app: app}}
    spec:
      containers:
      - name: c
        image: {image}
"#
    )
}

#[test]
fn version_discovery_and_namespaces() {
    let c = Cluster::apiserver();
    let v = c.ok(&["version"]);
    assert!(v.contains("Server Version: v1.32"), "{v}");
    let res = c.ok(&["api-resources"]);
    for line in [
        "pods                                po",
        "deployments                         deploy",
        "horizontalpodautoscalers            hpa",
    ] {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            res.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{res}"
        );
    }
    assert!(res.contains("metrics.k8s.io/v1beta1"), "{res}");
    let ns = c.ok(&["get", "ns"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.lines()
                .any(|l| l.starts_with(name) && l.contains("Active")),
            "{ns}"
        );
    }
    assert!(ns.starts_with("NAME"), "{ns}");
}

#[test]
fn create_get_formats_and_errors() {
    let c = Cluster::apiserver();
    let pod = format!("{EXAMPLES}/hello-pod.yaml");
    assert_eq!(c.ok(&["create", "-f", &pod]).trim(), "pod/hello created");

    // Duplicate → AlreadyExists.
    let e = c.err(&["create", "-f", &pod]);
    assert!(
        e.contains("Error from server (AlreadyExists)")
            && e.contains(r#"pods "hello" already exists"#),
        "{e}"
    );

    // Table output with upstream's columns.
    let table = c.ok(&["get", "pods"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("hello") && table.contains("0/1") && table.contains("Pending"),
        "{table}"
    );
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or("").contains("IP") && wide.contains("NODE"),
        "{wide}"
    );

    let y = c.ok(&["get", "pod", "hello", "-o", "yaml"]);
    assert!(
        y.contains("restartPolicy: Never") && y.contains("uid:"),
        "{y}"
    );
    let j = json(&c.ok(&["get", "pod", "hello", "-o", "json"]));
    assert_eq!(j["spec"]["containers"][0]["name"], "hello");
    assert_eq!(j["status"]["phase"], "Pending");
    assert_eq!(
        j["spec"]["dnsPolicy"], "ClusterFirst",
        "defaults are applied"
    );
    assert!(j["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty()));

    // Not found.
    let e = c.err(&["get", "pod", "nope"]);
    assert!(
        e.contains(r#"Error from server (NotFound): pods "nope" not found"#),
        "{e}"
    );

    // Invalid: no containers, bad name → Invalid listing the fields.
    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers: []\n";
    let e = c.err_in(&["create", "-f", "-"], bad);
    assert!(e.contains("is invalid"), "{e}");
    assert!(
        e.contains("metadata.name") && e.contains("spec.containers"),
        "{e}"
    );

    // Unknown fields are rejected under kubectl's fieldValidation=Strict.
    let unknown = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: u\nspec:\n  containers:\n  - name: c\n    image: i\n    bogus: 1\n";
    let e = c.err_in(&["create", "-f", "-"], unknown);
    assert!(e.contains("unknown field") && e.contains("bogus"), "{e}");
}

#[test]
fn stale_update_conflicts() {
    let c = Cluster::apiserver();
    c.ok(&["create", "configmap", "cfg", "--from-literal=a=1"]);
    let old = c.ok(&["get", "cm", "cfg", "-o", "json"]);
    c.ok(&["patch", "cm", "cfg", "-p", r#"{"data":{"a":"2"}}"#]);
    let e = c.err_in(&["replace", "-f", "-"], &old);
    assert!(
        e.contains("Error from server (Conflict)") && e.contains("the object has been modified"),
        "{e}"
    );
}

#[test]
fn apply_twice_bumps_generation_once_and_server_side_apply_works() {
    let c = Cluster::apiserver();
    assert_eq!(
        c.ok_in(&["apply", "-f", "-"], &deployment("wasm:1", 2))
            .trim(),
        "deployment.apps/app created"
    );
    let d = json(&c.ok(&["get", "deploy", "app", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert_eq!(
        c.ok_in(&["apply", "-f", "-"], &deployment("wasm:2", 2))
            .trim(),
        "deployment.apps/app configured"
    );
    let d = json(&c.ok(&["get", "deploy", "app", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "wasm:2"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        c.ok_in(&["apply", "-f", "-"], &deployment("wasm:2", 2))
            .trim(),
        "deployment.apps/app unchanged"
    );
    let d = json(&c.ok(&["get", "deploy", "app", "-o", "json"]));
    assert_eq!(d["metadata"]["generation"], 2);

    // Server-side apply: creates, then changes a field it owns.
    let ssa = deployment("wasm:3", 1).replace("name: app\n", "name: ssa\n");
    assert!(c
        .ok_in(&["apply", "--server-side", "-f", "-"], &ssa)
        .contains("deployment.apps/ssa serverside-applied"));
    let ssa4 = ssa.replace("wasm:3", "wasm:4");
    c.ok_in(&["apply", "--server-side", "-f", "-"], &ssa4);
    let d = json(&c.ok(&[
        "get",
        "deploy",
        "ssa",
        "-o",
        "json",
        "--show-managed-fields",
    ]));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "wasm:4"
    );
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // What `kubectl get -o yaml` prints for several objects is a `kind: List`; applying it back
    // works (kubectl validates Lists against /openapi/v2), and a bad item is still refused by
    // the server's validation.
    let list = c.ok(&["get", "deploy", "-o", "yaml"]);
    assert!(list.contains("kind: List"), "{list}");
    let out = c.ok_in(&["apply", "-f", "-"], &list);
    assert!(out.contains("deployment.apps/app"), "{out}");
    let bad = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok-cm"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad-cm"}, "bogus": 1}]}"#;
    let out = c.kubectl_in(&["apply", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bogus"), "{err}");
    c.ok(&["get", "configmap", "ok-cm"]);
}

#[test]
fn label_annotate_patch_scale_and_get_all() {
    let c = Cluster::apiserver();
    c.ok_in(&["apply", "-f", "-"], &deployment("wasm:1", 2));
    c.ok(&["create", "-f", &format!("{EXAMPLES}/hello-pod.yaml")]);
    assert_eq!(
        c.ok(&["label", "pod", "hello", "tier=front"]).trim(),
        "pod/hello labeled"
    );
    assert_eq!(
        c.ok(&["annotate", "pod", "hello", "note=hi"]).trim(),
        "pod/hello annotated"
    );
    let p = json(&c.ok(&["get", "pod", "hello", "-o", "json"]));
    assert_eq!(p["metadata"]["labels"]["tier"], "front");
    assert_eq!(p["metadata"]["annotations"]["note"], "hi");
    assert!(c
        .ok(&["get", "pods", "-l", "tier=front", "-o", "name"])
        .contains("pod/hello"));
    assert!(c
        .ok(&["get", "pods", "-l", "tier=back", "-o", "name"])
        .trim()
        .is_empty());

    // The three patch types.
    c.ok(&[
        "patch",
        "deploy",
        "app",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"wasm:9"}]}}}}"#,
    ]);
    c.ok(&[
        "patch",
        "deploy",
        "app",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ]);
    c.ok(&[
        "patch",
        "deploy",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ]);
    let d = json(&c.ok(&["get", "deploy", "app", "-o", "json"]));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "wasm:9"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "strategic merge keeps the list merged by name"
    );
    assert_eq!(d["metadata"]["labels"]["m"], "1");
    assert_eq!(d["spec"]["replicas"], 3);

    assert_eq!(
        c.ok(&["scale", "deployment", "app", "--replicas=5"]).trim(),
        "deployment.apps/app scaled"
    );
    let d = json(&c.ok(&["get", "deploy", "app", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 5);

    let all = c.ok(&["get", "all"]);
    assert!(all.contains("pod/hello"), "{all}");
    assert!(all.contains("deployment.apps/app"), "{all}");
    let deploys = c.ok(&["get", "deploy"]);
    let header: Vec<&str> = deploys
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploys}"
    );
}

#[test]
fn delete_with_and_without_wait_and_describe() {
    let c = Cluster::apiserver();
    c.ok(&["create", "-f", &format!("{EXAMPLES}/hello-pod.yaml")]);
    let d = c.ok(&["describe", "pod", "hello"]);
    for want in [
        "Name:",
        "hello",
        "Namespace:",
        "default",
        "Status:",
        "Pending",
        "Containers:",
        "Image:",
    ] {
        assert!(d.contains(want), "describe lacks {want}:\n{d}");
    }
    assert_eq!(
        c.ok(&["delete", "pod", "hello"]).trim(),
        r#"pod "hello" deleted"#
    );
    assert!(c.err(&["get", "pod", "hello"]).contains("NotFound"));

    c.ok(&["create", "configmap", "x", "--from-literal=a=b"]);
    assert_eq!(
        c.ok(&["delete", "configmap", "x", "--wait=false"]).trim(),
        r#"configmap "x" deleted"#
    );
    assert!(c.err(&["get", "cm", "x"]).contains("NotFound"));

    // A namespace takes its content with it.
    c.ok(&["create", "namespace", "tmp"]);
    c.ok(&[
        "create",
        "configmap",
        "y",
        "-n",
        "tmp",
        "--from-literal=a=b",
    ]);
    c.ok(&["delete", "namespace", "tmp"]);
    assert!(c.err(&["get", "ns", "tmp"]).contains("NotFound"));
    assert!(c
        .ok(&["get", "cm", "-A", "-o", "name"])
        .lines()
        .all(|l| l != "configmap/y"));
}

#[test]
fn get_pods_watch_sees_added_modified_deleted() {
    let c = Cluster::apiserver();
    c.ok(&["create", "-f", &format!("{EXAMPLES}/hello-pod.yaml")]);
    let mut watch = c
        .kubectl_cmd(&["get", "pods", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_event = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {want} event from kubectl get -w"));
            if line.split_whitespace().next() == Some(want) {
                assert!(line.contains("hello"), "{line}");
                return;
            }
        }
    };
    // The initial list arrives as ADDED; each change after it as its own event.
    next_event("ADDED");
    c.ok(&["label", "pod", "hello", "x=y"]);
    next_event("MODIFIED");
    c.ok(&["delete", "pod", "hello", "--wait=false"]);
    next_event("DELETED");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn local_path_is_the_default_storage_class_and_claims_without_a_class_get_it() {
    let c = Cluster::start();
    let table = crate::support::eventually(30, "the local-path StorageClass", || {
        let out = c.kubectl(&["get", "sc"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("local-path (default)").then_some(text)
    });
    let row = table
        .lines()
        .find(|l| l.starts_with("local-path (default)"))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[2..5],
        ["wasmkube.dev/local-path", "Delete", "WaitForFirstConsumer"],
        "{table}"
    );
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n";
    c.ok_in(&["create", "-f", "-"], claim);
    assert_eq!(
        c.ok(&[
            "get",
            "pvc",
            "data",
            "-o",
            "jsonpath={.spec.storageClassName}"
        ]),
        "local-path"
    );
}
