use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use wasmkube_controllers::ControllerConfig;

use crate::common::*;

fn replicaset(name: &str, app: &str, replicas: i32) -> anyhow::Result<ReplicaSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": template(app, "example.com/hello:1"),
        },
    }))?)
}

/// Names of every pod ever created in `default` (seen by a watch from the start).
fn record_created(client: &kube::Client) -> Arc<Mutex<HashSet<String>>> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = seen.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        while let Some(Ok(pod)) = events.next().await {
            names.lock().expect("lock").insert(pod.name_any());
        }
    });
    seen
}

#[tokio::test]
async fn replicaset_creates_pods_reports_status_and_converges_after_deletions() -> anyhow::Result<()>
{
    let c = cluster().await?;
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("web", "web", 3)?)
        .await?;

    let created = wait_for("3 pods", || async {
        let p = pods(&c.client, "default", "app=web").await?;
        Ok((p.len() == 3).then_some(p))
    })
    .await?;
    for pod in &created {
        let owner = pod
            .owner_references()
            .first()
            .cloned()
            .expect("owner reference");
        assert_eq!(owner.kind, "ReplicaSet");
        assert_eq!(owner.name, "web");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert!(pod.name_any().starts_with("web-"));
        set_ready(&c.client, pod, true).await?;
    }
    wait_for("status ready=3", || async {
        let rs = api.get("web").await?;
        let s = rs.status.clone().unwrap_or_default();
        Ok((s.replicas == 3
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == rs.metadata.generation)
            .then_some(()))
    })
    .await?;

    // Deleted pods are replaced.
    let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for pod in created.iter().take(2) {
        pod_api
            .delete(&pod.name_any(), &DeleteParams::default())
            .await?;
    }
    let old: HashSet<String> = created.iter().map(|p| p.name_any()).collect();
    wait_for("2 replacement pods", || async {
        let p = pods(&c.client, "default", "app=web").await?;
        let new = p.iter().filter(|p| !old.contains(&p.name_any())).count();
        Ok((p.len() == 3 && new == 2).then_some(()))
    })
    .await?;
    wait_for("status ready=1 after deletions", || async {
        let s = api.get("web").await?.status.unwrap_or_default();
        Ok((s.replicas == 3 && s.ready_replicas == Some(1)).then_some(()))
    })
    .await?;

    // Scaling down through the scale subresource deletes the not-ready pods first.
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await?;
    let left = wait_for("1 pod", || async {
        let p = pods(&c.client, "default", "app=web").await?;
        Ok((p.len() == 1).then_some(p))
    })
    .await?;
    assert!(old.contains(&left[0].name_any()), "the ready pod survives");
    Ok(())
}

#[tokio::test]
async fn replicaset_never_over_creates_while_its_cache_lags() -> anyhow::Result<()> {
    let c = cluster_with(ControllerConfig {
        pod_cache_lag: Duration::from_millis(700),
        ..Default::default()
    })
    .await?;
    let seen = record_created(&c.client);
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("lag", "lag", 5)?)
        .await?;
    // Provoke reconciles while the cache still lags (each spec change is a new event).
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let patch = json!({"metadata": {"annotations": {"poke": i.to_string()}}});
        api.patch("lag", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    wait_for("status replicas=5", || async {
        let s = api.get("lag").await?.status.unwrap_or_default();
        Ok((s.replicas == 5).then_some(()))
    })
    .await?;
    let pods_now = pods(&c.client, "default", "app=lag").await?;
    assert_eq!(pods_now.len(), 5);

    let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for pod in pods_now.iter().take(2) {
        pod_api
            .delete(&pod.name_any(), &DeleteParams::default())
            .await?;
    }
    for i in 5..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let patch = json!({"metadata": {"annotations": {"poke": i.to_string()}}});
        api.patch("lag", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    wait_for("5 pods again", || async {
        let p = pods(&c.client, "default", "app=lag").await?;
        Ok((p.len() == 5).then_some(()))
    })
    .await?;
    // Give a buggy controller the time to over-create: two cache lags.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pods(&c.client, "default", "app=lag").await?.len(), 5);
    let total = seen.lock().expect("lock").len();
    assert_eq!(total, 7, "5 pods plus 2 replacements, never more");
    Ok(())
}

#[tokio::test]
async fn replicaset_adopts_orphans_and_releases_pods_that_stop_matching() -> anyhow::Result<()> {
    let c = cluster().await?;
    let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "main", "image": "example.com/hello:1"}]},
    }))?;
    pod_api.create(&PostParams::default(), &orphan).await?;
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs = api
        .create(&PostParams::default(), &replicaset("adopt", "adopt", 2)?)
        .await?;
    let rs_uid = rs.uid().expect("uid");

    wait_for("orphan adopted and one pod created", || async {
        let p = pods(&c.client, "default", "app=adopt").await?;
        let owned = p
            .iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|r| r.uid == rs_uid && r.controller == Some(true))
            })
            .count();
        let has_orphan = p.iter().any(|p| p.name_any() == "orphan");
        Ok((p.len() == 2 && owned == 2 && has_orphan).then_some(()))
    })
    .await?;

    // Relabelled out of the selector: released and replaced.
    let patch = json!({"metadata": {"labels": {"app": "elsewhere"}}});
    pod_api
        .patch("orphan", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    wait_for("orphan released and replaced", || async {
        let released = pod_api.get("orphan").await?;
        let p = pods(&c.client, "default", "app=adopt").await?;
        Ok((released.owner_references().is_empty() && p.len() == 2).then_some(()))
    })
    .await?;
    Ok(())
}
