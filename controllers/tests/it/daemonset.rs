use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::common::*;

async fn node(client: &Client, name: &str, taints: serde_json::Value) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"role": "worker"}},
        "spec": {"taints": taints}}),
    )?;
    nodes.create(&PostParams::default(), &n).await?;
    Ok(())
}

fn target(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .first()?
        .match_fields
        .as_ref()?
        .first()?
        .values
        .as_ref()?
        .first()
        .cloned()
}

async fn nodes_with_pods(c: &Cluster) -> anyhow::Result<(BTreeSet<String>, usize)> {
    let p = pods(&c.client, "default", "app=agent").await?;
    Ok((p.iter().filter_map(target).collect(), p.len()))
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_eligible_node_and_rolls_updates() -> anyhow::Result<()> {
    let c = cluster().await?;
    node(&c.client, "a", json!([])).await?;
    node(
        &c.client,
        "tainted",
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    )
    .await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=agent");
    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": template("agent", "example.com/agent:1")},
    }))?;
    api.create(&PostParams::default(), &ds).await?;
    wait_for("a pod on node a only", || async {
        let (nodes, n) = nodes_with_pods(&c).await?;
        Ok((n == 1 && nodes == BTreeSet::from(["a".to_string()])).then_some(()))
    })
    .await?;

    // A new node gets its pod.
    node(&c.client, "b", json!([])).await?;
    wait_for("pods on a and b", || async {
        let (nodes, n) = nodes_with_pods(&c).await?;
        Ok((n == 2 && nodes == BTreeSet::from(["a".to_string(), "b".to_string()])).then_some(()))
    })
    .await?;
    wait_for("status 2/2 ready", || async {
        let s = api.get("agent").await?.status.unwrap_or_default();
        Ok((s.desired_number_scheduled == 2 && s.number_ready == 2).then_some(()))
    })
    .await?;

    // A template change replaces the pods, one node at a time.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "example.com/agent:2"}]}}}});
    api.patch("agent", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    wait_for("both pods updated and ready", || async {
        let p = pods(&c.client, "default", "app=agent").await?;
        let updated = p
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref())
                    == Some("example.com/agent:2")
            })
            .count();
        let s = api.get("agent").await?.status.unwrap_or_default();
        Ok((p.len() == 2
            && updated == 2
            && s.updated_number_scheduled == Some(2)
            && s.number_available == Some(2))
        .then_some(()))
    })
    .await?;
    Ok(())
}
