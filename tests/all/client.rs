//! kube-rs, a real client library, against the apiserver: typed CRUD and a watcher.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};

use crate::support::Cluster;

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "spec": {"containers": [{"name": "c", "image": "example/hello:1"}]},
    }))
    .expect("valid pod")
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_typed_crud_and_watcher() {
    let c = Cluster::apiserver();
    let client = c.client().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");

    // A watcher started first must see every change below, in order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = pods.clone();
    let watch_task = tokio::spawn(async move {
        let mut s = watcher::watcher(w, watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = s.try_next().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    // Wait for the watcher's initial list to finish before changing anything.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(Event::InitDone)) => break,
            Ok(Some(_)) => {}
            other => panic!("watcher did not start: {other:?}"),
        }
    }

    let created = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .expect("create");
    assert_eq!(created.metadata.name.as_deref(), Some("a"));
    assert!(created.metadata.uid.is_some());
    let got = pods.get("a").await.expect("get");
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    pods.create(&PostParams::default(), &pod("b"))
        .await
        .expect("create b");
    let list = pods
        .list(&ListParams::default().labels("app=kube-rs"))
        .await
        .expect("list");
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);

    let patched = pods
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"patched": "yes"}}})),
        )
        .await
        .expect("patch");
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("patched"))
            .map(String::as_str),
        Some("yes")
    );
    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(matches!(pods.get("a").await, Err(kube::Error::Api(e)) if e.code == 404));

    // The watcher saw: a applied, b applied, a patched, a deleted.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("watcher missed events; saw {seen:?}"))
            .expect("watcher running");
        match ev {
            Event::Apply(p) => {
                let patched = p
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("patched"));
                seen.push(format!(
                    "apply {}{}",
                    p.metadata.name.unwrap_or_default(),
                    if patched { " patched" } else { "" }
                ));
            }
            Event::Delete(p) => {
                seen.push(format!("delete {}", p.metadata.name.unwrap_or_default()))
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["apply a", "apply b", "apply a patched", "delete a"]);
    watch_task.abort();
}
