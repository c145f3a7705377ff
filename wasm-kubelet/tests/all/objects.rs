//! The kubelet's configMap/secret cache: one watch per object shared by the pods using it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use wasmkube_kubelet::objects::Objects;

use crate::cluster::connect;

/// `get` until `check` holds (the watch delivers changes asynchronously).
async fn until<T>(what: &str, mut get: impl AsyncFnMut() -> T, check: impl Fn(&T) -> bool) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = get().await;
        if check(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value(cm: &Option<std::sync::Arc<ConfigMap>>) -> Option<String> {
    cm.as_ref()?.data.as_ref()?.get("k").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_cache_follows_changes_and_stops_watching_released_objects() {
    let (client, _server, _dir) = connect().await;
    let objects = Objects::new(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cache = &objects.config_maps;

    // Missing: None (not an error), and the watch stays to see it appear.
    assert_eq!(cache.get("default", "cfg", "pod-a").await, Ok(None));
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"k": "v1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    until(
        "the create",
        async || cache.get("default", "cfg", "pod-a").await.unwrap(),
        |c| value(c).as_deref() == Some("v1"),
    )
    .await;

    // Updates and deletes arrive through the watch.
    let mut cm = cms.get("cfg").await.unwrap();
    cm.data = Some([("k".to_string(), "v2".to_string())].into());
    cms.replace("cfg", &PostParams::default(), &cm)
        .await
        .unwrap();
    until(
        "the update",
        async || cache.get("default", "cfg", "pod-a").await.unwrap(),
        |c| value(c).as_deref() == Some("v2"),
    )
    .await;

    // A second pod shares the watch; it stops only when both are released.
    assert_eq!(
        value(&cache.get("default", "cfg", "pod-b").await.unwrap()).as_deref(),
        Some("v2")
    );
    assert_eq!(cache.watched(), 1);
    objects.release("pod-a");
    assert_eq!(cache.watched(), 1);
    objects.release("pod-b");
    assert_eq!(cache.watched(), 0);

    cms.delete("cfg", &DeleteParams::default()).await.unwrap();
    until(
        "the delete",
        async || cache.get("default", "cfg", "pod-c").await.unwrap(),
        |c| c.is_none(),
    )
    .await;
    objects.release("pod-c");

    // Secrets too; an immutable one is read once and needs no watch afterwards.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "immutable": true, "stringData": {"k": "x"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let got = objects.secrets.get("default", "s", "pod-d").await.unwrap();
    let data = got.and_then(|s| s.data.clone()).unwrap_or_default();
    assert_eq!(data.get("k").map(|b| b.0.as_slice()), Some(&b"x"[..]));
    objects.release("pod-d");
    assert_eq!(objects.secrets.watched(), 0);
}
