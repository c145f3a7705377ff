use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::common::*;

fn replicaset(name: &str, replicas: i32) -> anyhow::Result<ReplicaSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, "example.com/hello:1"),
        },
    }))?)
}

async fn pod_names(c: &Cluster, app: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(pods(&c.client, "default", &format!("app={app}"))
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect())
}

#[tokio::test]
async fn background_deletion_removes_dependents_after_their_owner() -> anyhow::Result<()> {
    let c = cluster().await?;
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("bg", 3)?)
        .await?;
    wait_for("3 pods", || async {
        Ok((pod_names(&c, "bg").await?.len() == 3).then_some(()))
    })
    .await?;

    api.delete("bg", &DeleteParams::background()).await?;
    wait_for("pods collected", || async {
        let all: Api<Pod> = Api::namespaced(c.client.clone(), "default");
        let left = all
            .list(&ListParams::default().labels("app=bg"))
            .await?
            .items
            .len();
        Ok((left == 0).then_some(()))
    })
    .await?;

    // Any kind works: a ConfigMap owned by a ConfigMap.
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let dependent: ConfigMap = serde_json::from_value(json!({"metadata": {
        "name": "dependent",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid()}],
    }}))?;
    cms.create(&PostParams::default(), &dependent).await?;
    cms.delete("owner", &DeleteParams::default()).await?;
    wait_for("dependent configmap collected", || async {
        Ok(cms.get_opt("dependent").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn foreground_deletion_removes_dependents_before_their_owner() -> anyhow::Result<()> {
    let c = cluster().await?;
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "fg", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "fg"}},
            "template": template("fg", "example.com/hello:1"),
        },
    }))?;
    api.create(&PostParams::default(), &d).await?;
    wait_for("2 pods", || async {
        Ok((pod_names(&c, "fg").await?.len() == 2).then_some(()))
    })
    .await?;

    api.delete("fg", &DeleteParams::foreground()).await?;
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let all_pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    wait_for("deployment gone", || async {
        let d = api.get_opt("fg").await?;
        let rs_left = sets
            .list(&ListParams::default().labels("app=fg"))
            .await?
            .items
            .len();
        let pods_left = all_pods
            .list(&ListParams::default().labels("app=fg"))
            .await?
            .items
            .len();
        match d {
            // While it exists it waits for its dependents, marked for deletion.
            Some(d) => {
                anyhow::ensure!(d.metadata.deletion_timestamp.is_some(), "deletion started");
                Ok(None)
            }
            None => {
                anyhow::ensure!(
                    rs_left == 0 && pods_left == 0,
                    "owner went before its dependents: {rs_left} replicasets, {pods_left} pods left"
                );
                Ok(Some(()))
            }
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_owner_reference() -> anyhow::Result<()> {
    let c = cluster().await?;
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &replicaset("orphan", 2)?)
        .await?;
    let before = wait_for("2 pods", || async {
        let names = pod_names(&c, "orphan").await?;
        Ok((names.len() == 2).then_some(names))
    })
    .await?;

    api.delete("orphan", &DeleteParams::orphan()).await?;
    wait_for("replicaset gone", || async {
        Ok(api.get_opt("orphan").await?.is_none().then_some(()))
    })
    .await?;
    let after = pods(&c.client, "default", "app=orphan").await?;
    let names: BTreeSet<String> = after.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, before, "the pods survive");
    for pod in &after {
        assert!(
            pod.owner_references().is_empty(),
            "{} still owned",
            pod.name_any()
        );
    }
    Ok(())
}
