//! The storage plugin against the in-process apiserver: volumes become WASI preopens, and what
//! the guests print shows what they were given.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster::{image, phase, waiting_reason, Cluster};
use crate::guests::Target;
use crate::kubelet::{node_port, reqwest_get};

const GUESTS: [&str; 3] = ["cat-files", "emptydir", "pvc-append"];

/// A cluster whose kubelet re-projects volumes every 300 ms, with the storage guests imported.
async fn start(tune: impl FnOnce(&mut wasmkube_kubelet::KubeletConfig)) -> Cluster {
    let c = Cluster::start_with(|cfg| {
        cfg.volume_sync_interval = Duration::from_millis(300);
        tune(cfg);
    })
    .await;
    for name in GUESTS {
        for target in [Target::P1, Target::P2] {
            wasmkube_kubelet::import(
                &c.data_dir,
                &crate::guests::path(name, target),
                &image(name, target),
            )
            .expect("import");
        }
    }
    c
}

async fn logs(c: &Cluster, pod: &str, container: &str) -> String {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    if !nodes
        .get_opt(crate::cluster::NODE)
        .await
        .is_ok_and(|n| n.is_some())
    {
        return String::new();
    }
    let port = node_port(c).await;
    reqwest_get(&format!(
        "http://127.0.0.1:{port}/containerLogs/default/{pod}/{container}"
    ))
    .await
}

/// Waits until the logs of `pod`/`container` satisfy `cond`; returns them.
async fn wait_logs(c: &Cluster, pod: &str, container: &str, cond: impl Fn(&str) -> bool) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let text = logs(c, pod, container).await;
            if cond(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match found {
        Ok(text) => text,
        Err(_) => panic!(
            "logs of {pod}/{container} never matched; now:\n{}",
            logs(c, pod, container).await
        ),
    }
}

/// Waits for an event about `pod` with `reason` whose note contains `text`.
async fn wait_event(c: &Cluster, pod: &str, reason: &str, text: &str) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(c.client.clone(), "default");
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let list = events.list(&Default::default()).await.unwrap();
            let note = list.items.iter().find_map(|e| {
                let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod);
                let note = e.note.clone().unwrap_or_default();
                (about && e.reason.as_deref() == Some(reason) && note.contains(text))
                    .then_some(note)
            });
            if let Some(note) = note {
                return note;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {reason} event about {pod} containing {text:?}"))
}

fn status_reason(p: &Pod) -> (String, String) {
    let s = p.status.clone().unwrap_or_default();
    (s.reason.unwrap_or_default(), s.message.unwrap_or_default())
}

fn waiting_message(p: &Pod, name: &str) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default()
}

async fn create<K>(c: &Cluster, obj: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(c.client.clone(), "default");
    let obj: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("created")
}

/// Waits until `path` no longer exists (pod-owned volumes go when the pod finishes).
async fn wait_gone(path: &Path) {
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        while path.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "{} still exists", path.display());
}

fn pod_uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_secret_downward_api_and_projected_files_are_visible_to_the_guest() {
    let c = start(|_| {}).await;
    create::<ConfigMap>(
        &c,
        json!({"metadata": {"name": "app-config"},
               "data": {"greeting": "hello from a configMap", "other": "not listed"}}),
    )
    .await;
    create::<Secret>(
        &c,
        json!({"metadata": {"name": "app-secret"}, "stringData": {"password": "s3cr3t"}}),
    )
    .await;
    for (name, target) in [("files-p1", Target::P1), ("files-p2", Target::P2)] {
        c.create_pod(
            name,
            json!({
                "restartPolicy": "Never",
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 0o400,
                        "items": [{"key": "greeting", "path": "nested/greeting.txt"}]}},
                    {"name": "sec", "secret": {"secretName": "app-secret"}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                    {"name": "all", "projected": {"sources": [
                        {"configMap": {"name": "app-config"}},
                        {"secret": {"name": "app-secret", "items": [{"key": "password", "path": "pw"}]}},
                        {"serviceAccountToken": {"path": "token"}},
                    ]}},
                ],
                "containers": [{
                    "name": "cat", "image": image("cat-files", target),
                    "args": ["/etc/cfg/nested/greeting.txt", "/etc/cfg/other", "/etc/sec/password",
                             "/etc/info/name", "/etc/all/other", "/etc/all/pw"],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                        {"name": "sec", "mountPath": "/etc/sec"},
                        {"name": "info", "mountPath": "/etc/info"},
                        {"name": "all", "mountPath": "/etc/all"},
                    ],
                }],
            }),
        )
        .await;
        // `other` is not in the items list: cat-files exits 1 for it.
        let pod = c.wait_pod(name, 60, |p| phase(p) == "Failed").await;
        let text = logs(&c, name, "cat").await;
        for expected in [
            "==> /etc/cfg/nested/greeting.txt <==\nhello from a configMap\n",
            "==> /etc/sec/password <==\ns3cr3t\n",
            &format!("==> /etc/info/name <==\n{name}\n"),
            "==> /etc/all/other <==\nnot listed\n",
            "==> /etc/all/pw <==\ns3cr3t\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(text.contains("==> /etc/cfg/other: "), "{text}");
        let cfg = c
            .data_dir
            .join("volumes")
            .join(pod_uid(&pod))
            .join("kubernetes.io~configmap/cfg");
        wait_gone(&cfg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_update_reaches_a_running_pod() {
    let c = start(|_| {}).await;
    create::<ConfigMap>(
        &c,
        json!({"metadata": {"name": "live"}, "data": {"color": "blue"}}),
    )
    .await;
    let pod = c
        .create_pod(
            "watcher",
            json!({
                "volumes": [{"name": "cfg", "configMap": {"name": "live"}}],
                "containers": [{
                    "name": "cat", "image": image("cat-files", Target::P1),
                    "args": ["--watch", "120", "/cfg/color"],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
                }],
            }),
        )
        .await;
    wait_logs(&c, "watcher", "cat", |t| {
        t.contains("==> /cfg/color <==\nblue\n")
    })
    .await;
    let dir = c
        .data_dir
        .join("volumes")
        .join(pod_uid(&pod))
        .join("kubernetes.io~configmap/cfg");
    let before = std::fs::read_link(dir.join("..data")).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    cms.patch(
        "live",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "green"}})),
    )
    .await
    .unwrap();
    wait_logs(&c, "watcher", "cat", |t| {
        t.contains("==> /cfg/color (changed) <==\ngreen\n")
    })
    .await;
    let after = std::fs::read_link(dir.join("..data")).unwrap();
    assert_ne!(before, after, "the update swapped ..data");
    assert_eq!(
        std::fs::read_link(dir.join("color")).unwrap(),
        Path::new("..data/color")
    );
    assert!(!dir.join(&before).exists(), "the old content is gone");
    c.delete_pod("watcher", Some(0)).await;
    c.wait_gone("watcher", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_dirs_are_writable_unless_read_only_and_go_with_the_pod() {
    let c = start(|_| {}).await;
    let pod = c
        .create_pod(
            "scratch",
            json!({
                "restartPolicy": "Never",
                "volumes": [{"name": "data", "emptyDir": {}}],
                "initContainers": [{
                    "name": "writer", "image": image("emptydir", Target::P2),
                    "args": ["/data", "note.txt", "written once"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "containers": [
                    {"name": "ro", "image": image("emptydir", Target::P1),
                     "args": ["/data", "other.txt", "x", "--expect-fail"],
                     "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]},
                    {"name": "reader", "image": image("cat-files", Target::P1),
                     "args": ["/data/note.txt"],
                     "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]},
                    {"name": "sub", "image": image("emptydir", Target::P1),
                     "args": ["/sub", "deep.txt", "in a subPath", "--write-only", "--sleep", "300"],
                     "volumeMounts": [{"name": "data", "mountPath": "/sub", "subPath": "a/b"}]},
                ],
            }),
        )
        .await;
    wait_logs(&c, "scratch", "writer", |t| {
        t.contains("read /data/note.txt: written once")
    })
    .await;
    let ro = wait_logs(&c, "scratch", "ro", |t| t.contains("write /data/other.txt")).await;
    assert!(!ro.contains("unexpectedly"), "{ro}");
    wait_logs(&c, "scratch", "reader", |t| {
        t.contains("==> /data/note.txt <==\nwritten once")
    })
    .await;
    wait_logs(&c, "scratch", "sub", |t| t.contains("wrote /sub/deep.txt")).await;
    let dir = c
        .data_dir
        .join("volumes")
        .join(pod_uid(&pod))
        .join("kubernetes.io~empty-dir/data");
    assert_eq!(
        std::fs::read_to_string(dir.join("a/b/deep.txt")).unwrap(),
        "in a subPath",
        "subPath created inside the volume"
    );
    assert!(!dir.join("other.txt").exists());
    c.delete_pod("scratch", Some(0)).await;
    c.wait_gone("scratch", 30).await;
    // Deleted with grace 0 the object goes at once; the kubelet then stops the pod and
    // removes its volumes.
    wait_gone(&dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dir_over_its_size_limit_gets_the_pod_evicted() {
    let c = start(|_| {}).await;
    c.create_pod(
        "hog",
        json!({
            "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Ki"}}],
            "containers": [{
                "name": "c", "image": image("emptydir", Target::P1),
                "args": ["/data", "big.txt", "x".repeat(2000), "--write-only", "--sleep", "300"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
        }),
    )
    .await;
    let pod = c.wait_pod("hog", 60, |p| phase(p) == "Failed").await;
    assert_eq!(
        status_reason(&pod),
        (
            "Evicted".to_string(),
            "Usage of EmptyDir volume \"data\" exceeds the limit \"1Ki\".".to_string()
        )
    );
    wait_event(&c, "hog", "Evicted", "exceeds the limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_map_waits_with_failed_mount_then_starts_once_created() {
    let c = start(|_| {}).await;
    c.create_pod(
        "early",
        json!({
            "restartPolicy": "Never",
            "volumes": [{"name": "cfg", "configMap": {"name": "late-cm"}}],
            "containers": [{
                "name": "cat", "image": image("cat-files", Target::P1), "args": ["/cfg/k"],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
            }],
        }),
    )
    .await;
    let pod = c
        .wait_pod("early", 60, |p| !waiting_message(p, "cat").is_empty())
        .await;
    assert_eq!(
        waiting_reason(&pod, "cat").as_deref(),
        Some("ContainerCreating")
    );
    assert!(
        waiting_message(&pod, "cat").contains("configmap \"late-cm\" not found"),
        "{}",
        waiting_message(&pod, "cat")
    );
    assert_eq!(phase(&pod), "Pending");
    wait_event(
        &c,
        "early",
        "FailedMount",
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"late-cm\" not found",
    )
    .await;
    create::<ConfigMap>(
        &c,
        json!({"metadata": {"name": "late-cm"}, "data": {"k": "v"}}),
    )
    .await;
    c.wait_pod("early", 60, |p| phase(p) == "Succeeded").await;
    assert!(logs(&c, "early", "cat")
        .await
        .contains("==> /cfg/k <==\nv\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_only_under_allowed_prefixes_and_no_symlink_escapes() {
    let outer = tempfile::tempdir().unwrap();
    let allowed = outer.path().join("allowed");
    let outside = outer.path().join("outside");
    std::fs::create_dir_all(allowed.join("shared")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("shared/hello.txt"), "from the host").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("shared/escape")).unwrap();
    let prefix = allowed.clone();
    let c = start(move |cfg| cfg.host_path_prefixes = vec![prefix]).await;

    let host_pod = |name: &str, path: &Path, sub: Option<&str>, args: serde_json::Value| {
        let mut mount = json!({"name": "host", "mountPath": "/host"});
        if let Some(sub) = sub {
            mount["subPath"] = json!(sub);
        }
        (
            name.to_string(),
            json!({
                "restartPolicy": "Never",
                "volumes": [{"name": "host", "hostPath": {"path": path, "type": "Directory"}}],
                "containers": [{"name": "c", "image": image("emptydir", Target::P1),
                                "args": args, "volumeMounts": [mount]}],
            }),
        )
    };
    // Allowed: the guest reads and writes the host directory.
    let (name, spec) = host_pod(
        "allowed",
        &allowed.join("shared"),
        None,
        json!(["/host", "out.txt", "from the guest"]),
    );
    c.create_pod(&name, spec).await;
    c.wait_pod("allowed", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(
        std::fs::read_to_string(allowed.join("shared/out.txt")).unwrap(),
        "from the guest"
    );

    let refused = [
        host_pod("etc", Path::new("/etc"), None, json!(["/host"])),
        host_pod("link", &allowed.join("escape"), None, json!(["/host"])),
        host_pod(
            "sub-link",
            &allowed.join("shared"),
            Some("escape"),
            json!(["/host"]),
        ),
        host_pod(
            "sub-file",
            &allowed.join("shared"),
            Some("hello.txt"),
            json!(["/host"]),
        ),
    ];
    for (name, spec) in refused {
        c.create_pod(&name, spec).await;
        let pod = c.wait_pod(&name, 60, |p| phase(p) == "Failed").await;
        let (reason, message) = status_reason(&pod);
        assert_eq!(reason, "VolumeRefused", "{name}: {message}");
        let expected = match name.as_str() {
            "etc" => "is not under an allowed prefix",
            "sub-file" => "WASI preopens are directories",
            _ => "outside the volume",
        };
        assert!(message.contains(expected), "{name}: {message}");
        wait_event(&c, &name, "FailedMount", expected).await;
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvc_keeps_its_data_across_two_pods_and_waits_until_bound() {
    let c = start(|_| {}).await;
    let root = c.data_dir.join("storage");
    let pv_dir = root.join("pvc-data");
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "pv-data"},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": "data"},
            "local": {"path": pv_dir},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [crate::cluster::NODE]}]}]}},
        },
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    create::<PersistentVolumeClaim>(
        &c,
        json!({"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-data",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let pod = || {
        json!({
            "restartPolicy": "Never",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            "containers": [{
                "name": "c", "image": image("pvc-append", Target::P2), "args": ["/data"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
        })
    };
    c.create_pod("first", pod()).await;
    let waiting = c
        .wait_pod("first", 60, |p| !waiting_message(p, "c").is_empty())
        .await;
    assert!(
        waiting_message(&waiting, "c").contains("persistentvolumeclaim \"data\" is not bound"),
        "{}",
        waiting_message(&waiting, "c")
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    claims
        .patch_status(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .unwrap();
    c.wait_pod("first", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(logs(&c, "first", "c").await, "written by first\n");
    c.delete_pod("first", Some(0)).await;
    c.wait_gone("first", 30).await;

    c.create_pod("second", pod()).await;
    c.wait_pod("second", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(
        logs(&c, "second", "c").await,
        "written by first\nwritten by second\n"
    );
    assert!(pv_dir.join("log.txt").exists(), "data stays after the pods");

    // A read-only claim: the append fails inside the guest and the data is unchanged.
    let mut ro = pod();
    ro["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
    c.create_pod("reader", ro).await;
    c.wait_pod("reader", 60, |p| phase(p) == "Failed").await;
    let text = logs(&c, "reader", "c").await;
    assert!(text.starts_with("append /data/log.txt: "), "{text}");
    assert_eq!(
        std::fs::read_to_string(pv_dir.join("log.txt")).unwrap(),
        "written by first\nwritten by second\n"
    );

    // The node announces its local-path dir for the provisioner.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    let node = nodes.get(crate::cluster::NODE).await.unwrap();
    let annotations = node.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("wasmkube.dev/local-path-dir")
            .map(String::as_str),
        Some(root.to_string_lossy().as_ref())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pv_whose_directory_is_a_symlink_out_is_refused_and_provisioned_dirs_go_with_their_pv() {
    let c = start(|_| {}).await;
    let root = c.data_dir.join("storage");
    let outside = c.data_dir.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    for (name, path, provisioned) in [
        ("pv-evil", root.join("evil"), false),
        ("pv-prov", root.join("pvc-prov"), true),
    ] {
        let mut pv = json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "claimRef": {"namespace": "default", "name": name},
                     "local": {"path": path}},
        });
        if provisioned {
            pv["metadata"]["annotations"] =
                json!({"pv.kubernetes.io/provisioned-by": "wasmkube.dev/local-path"});
        }
        pvs.create(&PostParams::default(), &serde_json::from_value(pv).unwrap())
            .await
            .unwrap();
        create::<PersistentVolumeClaim>(
            &c,
            json!({"metadata": {"name": name},
                   "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": name,
                            "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
        claims
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await
            .unwrap();
        c.create_pod(
            name,
            json!({
                "restartPolicy": "Never",
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}],
                "containers": [{"name": "c", "image": image("pvc-append", Target::P1),
                                "args": ["/data"],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            }),
        )
        .await;
    }
    let pod = c.wait_pod("pv-evil", 60, |p| phase(p) == "Failed").await;
    let (reason, message) = status_reason(&pod);
    assert_eq!(reason, "VolumeRefused");
    assert!(message.contains("outside the volume"), "{message}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    c.wait_pod("pv-prov", 60, |p| phase(p) == "Succeeded").await;
    assert!(root.join("pvc-prov/log.txt").exists());
    // reclaimPolicy Delete: the provisioner deletes the PV, the node removes its directory.
    // (No controllers run here: drop the pv-protection finalizer as its controller would.)
    pvs.delete("pv-prov", &Default::default()).await.unwrap();
    pvs.patch(
        "pv-prov",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while root.join("pvc-prov").exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("provisioned directory removed after its PV");
    assert!(
        root.join("evil").exists() && outside.exists(),
        "nothing else removed"
    );
}
