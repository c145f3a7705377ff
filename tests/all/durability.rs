//! Nothing acknowledged is lost: SIGKILL the apiserver while clients write, restart it on the
//! same data dir, and find every acknowledged write; a watcher resumes from its last version.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use crate::support::Cluster;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": "v"},
    }))
    .expect("valid configmap")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::apiserver();
    let api: Api<ConfigMap> = Api::namespaced(c.client().await, "default");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));

    // A watcher notes the last resourceVersion it saw before the kill.
    let first = api
        .create(&PostParams::default(), &cm("start"))
        .await
        .expect("create");
    let start_rv = first.metadata.resource_version.clone().expect("rv");

    let mut writers = Vec::new();
    for w in 0..8 {
        let (api, acked) = (api.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match api.create(&PostParams::default(), &cm(&name)).await {
                    Ok(_) => {
                        acked.lock().expect("lock").insert(name);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes flow, then kill mid-stream.
    while acked.lock().expect("lock").len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    c.restart();

    let api: Api<ConfigMap> = Api::namespaced(c.client().await, "default");
    let present: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .expect("list after restart")
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );

    // A watch from the version seen before the kill replays what came after it (or says 410).
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start_rv)
        .await
        .expect("watch after restart")
        .boxed();
    let mut replayed = BTreeSet::new();
    while let Some(ev) = stream.next().await {
        match ev.expect("watch event") {
            WatchEvent::Added(m) => {
                replayed.insert(m.metadata.name.unwrap_or_default());
            }
            WatchEvent::Error(e) => {
                assert_eq!(
                    e.code, 410,
                    "only an expired version may end the watch: {e:?}"
                );
                return;
            }
            _ => {}
        }
        if acked.iter().all(|n| replayed.contains(n)) {
            break;
        }
    }
    let missed: Vec<_> = acked.difference(&replayed).collect();
    assert!(
        missed.is_empty(),
        "the resumed watch missed {} events, e.g. {:?}",
        missed.len(),
        missed.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_stops_cleanly_and_restart_keeps_objects() {
    let mut c = Cluster::apiserver();
    c.ok(&["create", "namespace", "keep"]);
    c.ok(&[
        "create",
        "configmap",
        "kept",
        "-n",
        "keep",
        "--from-literal=a=b",
    ]);
    let status = c.stop();
    assert!(status.success(), "wasmkube up exited with {status}");
    c.restart();
    assert!(c
        .ok(&["get", "cm", "kept", "-n", "keep", "-o", "name"])
        .contains("configmap/kept"));
}
