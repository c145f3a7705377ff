//! Volumes through the real kubectl: configMap files and their updates, read-only mounts,
//! traversal rejected by the apiserver, and a PVC's data across pods (local-path provisioner).

use crate::support::{eventually, example_guest, Cluster};

/// Imports example guest `name` as `wasmkube.local/<name>:v1` into the cluster's node(s).
fn import(c: &Cluster, name: &str) -> String {
    let reference = format!("wasmkube.local/{name}:v1");
    c.import(&example_guest(name), &reference);
    reference
}

/// The example manifest `file` with its image set to the imported `reference`.
fn manifest(file: &str, registry_image: &str, reference: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/manifests")
        .join(file);
    std::fs::read_to_string(path).unwrap().replace(
        &format!("image: {registry_image}"),
        &format!("image: {reference}\n    imagePullPolicy: Never"),
    )
}

#[test]
fn a_config_map_is_visible_via_kubectl_logs_and_its_update_reaches_the_running_pod() {
    let c = Cluster::start();
    let image = import(&c, "cat-files");
    let yaml = manifest(
        "configmap-pod.yaml",
        "localhost:5000/wasmkube/cat-files:v1",
        &image,
    );
    c.ok_in(&["apply", "-f", "-"], &yaml);
    eventually(60, "the configMap files in the logs", || {
        let logs = c.kubectl(&["logs", "configmap-reader"]);
        let text = String::from_utf8_lossy(&logs.stdout).to_string();
        (text.contains("==> /etc/app/greeting <==\nhello from a configMap")
            && text.contains("==> /etc/app/color <==\nblue"))
        .then_some(())
    });
    c.ok(&[
        "patch",
        "configmap",
        "app-config",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    // The kubelet re-projects every 10 s: well within upstream's "about a minute".
    eventually(60, "the update in the logs", || {
        let logs = c.kubectl(&["logs", "configmap-reader"]);
        String::from_utf8_lossy(&logs.stdout)
            .contains("==> /etc/app/color (changed) <==\ngreen")
            .then_some(())
    });
    c.ok(&[
        "delete",
        "pod",
        "configmap-reader",
        "--grace-period=0",
        "--force",
    ]);
}

#[test]
fn read_only_mounts_refuse_writes_and_traversal_is_rejected_by_the_apiserver() {
    let c = Cluster::start();
    let image = import(&c, "emptydir");
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ro}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: data, emptyDir: {{}}}}
  containers:
  - name: c
    image: {image}
    imagePullPolicy: Never
    args: ["/data", "x.txt", "nope", "--expect-fail"]
    volumeMounts:
    - {{name: data, mountPath: /data, readOnly: true}}
"#
    );
    c.ok_in(&["apply", "-f", "-"], &pod);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/ro",
        "--timeout=60s",
    ]);
    let logs = c.ok(&["logs", "ro"]);
    assert!(logs.starts_with("write /data/x.txt: "), "{logs}");
    assert!(!logs.contains("unexpectedly"), "{logs}");

    let items = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: traversal-items}}
spec:
  volumes:
  - name: cfg
    configMap:
      name: whatever
      items: [{{key: k, path: ../../etc/passwd}}]
  containers:
  - {{name: c, image: {image}}}
"#
    );
    let err = c.err_in(&["apply", "-f", "-"], &items);
    assert!(
        err.contains("spec.volumes[0].configMap.items[0].path")
            && err.contains("must not contain '..'"),
        "{err}"
    );
    let sub = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: traversal-subpath}}
spec:
  volumes:
  - {{name: data, emptyDir: {{}}}}
  containers:
  - name: c
    image: {image}
    volumeMounts: [{{name: data, mountPath: /data, subPath: ..}}]
"#
    );
    let err = c.err_in(&["apply", "-f", "-"], &sub);
    assert!(err.contains("must not contain '..'"), "{err}");
}

#[test]
fn a_pvc_keeps_its_data_across_two_pods() {
    let c = Cluster::start();
    let image = import(&c, "pvc-append");
    let yaml = manifest(
        "pvc-pod.yaml",
        "localhost:5000/wasmkube/pvc-append:v1",
        &image,
    );
    c.ok_in(&["apply", "-f", "-"], &yaml);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/pvc-writer",
        "--timeout=90s",
    ]);
    assert_eq!(c.ok(&["logs", "pvc-writer"]), "written by pvc-writer\n");
    let bound = c.ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(bound, "Bound");
    c.ok(&["delete", "pod", "pvc-writer"]);
    // The same manifest again: a new pod of the same name, on the same claim.
    c.ok_in(&["apply", "-f", "-"], &yaml);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/pvc-writer",
        "--timeout=90s",
    ]);
    assert_eq!(
        c.ok(&["logs", "pvc-writer"]),
        "written by pvc-writer\nwritten by pvc-writer\n"
    );

    // Deleting the claim while a pod still holds it leaves it Terminating (pvc-protection);
    // once the pod is gone the claim goes, and its provisioned volume with it.
    let volume = c.ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    c.ok(&["delete", "pvc", "data", "--wait=false"]);
    let table = c.ok(&["get", "pvc", "data", "--no-headers"]);
    assert!(table.contains("Terminating"), "{table}");
    assert_eq!(
        c.ok(&["get", "pv", &volume, "-o", "jsonpath={.status.phase}"]),
        "Bound"
    );
    c.ok(&["delete", "pod", "pvc-writer"]);
    c.ok(&["wait", "--for=delete", "pvc/data", "--timeout=60s"]);
    c.ok(&[
        "wait",
        "--for=delete",
        &format!("pv/{volume}"),
        "--timeout=60s",
    ]);
}

#[test]
fn secrets_are_visible_host_paths_are_confined_and_empty_dirs_go_with_their_pod() {
    let host = tempfile::tempdir().unwrap();
    let allowed = host.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(allowed.join("motd"), "from the host").unwrap();
    let prefix = allowed.to_string_lossy().to_string();
    let c = Cluster::up_with(&["--allowed-host-path-prefix", &prefix]);
    let cat = import(&c, "cat-files");
    let writer = import(&c, "emptydir");
    c.ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=password=s3cr3t",
    ]);
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: sec, secret: {{secretName: app-secret}}}}
  - {{name: host, hostPath: {{path: {prefix}, type: Directory}}}}
  containers:
  - name: c
    image: {cat}
    imagePullPolicy: Never
    args: ["/etc/sec/password", "/host/motd"]
    volumeMounts:
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: host, mountPath: /host, readOnly: true}}
"#
    );
    c.ok_in(&["apply", "-f", "-"], &pod);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/reader",
        "--timeout=60s",
    ]);
    let logs = c.ok(&["logs", "reader"]);
    assert!(
        logs.contains("==> /etc/sec/password <==\ns3cr3t\n")
            && logs.contains("==> /host/motd <==\nfrom the host\n"),
        "{logs}"
    );

    // Outside the allowed prefix: the pod fails with the reason, and a FailedMount event.
    let outside = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: outside}}
spec:
  volumes:
  - {{name: host, hostPath: {{path: /etc}}}}
  containers:
  - name: c
    image: {cat}
    imagePullPolicy: Never
    args: ["/host/passwd"]
    volumeMounts: [{{name: host, mountPath: /host}}]
"#
    );
    c.ok_in(&["apply", "-f", "-"], &outside);
    c.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/outside",
        "--timeout=60s",
    ]);
    let reason = c.ok(&[
        "get",
        "pod",
        "outside",
        "-o",
        "jsonpath={.status.reason}: {.status.message}",
    ]);
    assert!(
        reason.starts_with("VolumeRefused: ") && reason.contains("is not under an allowed prefix"),
        "{reason}"
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.name=outside,reason=FailedMount",
    ]);
    assert!(events.contains("FailedMount"), "{events}");

    // An emptyDir lives while its pod does.
    let scratch = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: scratch}}
spec:
  volumes:
  - {{name: data, emptyDir: {{}}}}
  containers:
  - name: c
    image: {writer}
    imagePullPolicy: Never
    args: ["/data", "x.txt", "kept", "--write-only", "--sleep", "600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
"#
    );
    c.ok_in(&["apply", "-f", "-"], &scratch);
    eventually(60, "the emptyDir written", || {
        let logs = c.kubectl(&["logs", "scratch"]);
        String::from_utf8_lossy(&logs.stdout)
            .contains("wrote /data/x.txt")
            .then_some(())
    });
    let uid = c.ok(&["get", "pod", "scratch", "-o", "jsonpath={.metadata.uid}"]);
    let node = c.ok(&["get", "pod", "scratch", "-o", "jsonpath={.spec.nodeName}"]);
    let dir = c
        .dir
        .path()
        .join("nodes")
        .join(node.trim())
        .join("volumes")
        .join(uid.trim());
    assert!(
        dir.join("kubernetes.io~empty-dir/data/x.txt").exists(),
        "{}",
        dir.display()
    );
    c.ok(&["delete", "pod", "scratch", "--grace-period=1"]);
    eventually(30, "the emptyDir removed with its pod", || {
        (!dir.exists()).then_some(())
    });
}
