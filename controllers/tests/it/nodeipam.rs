//! Node IPAM: each Node gets a free `podCIDR` block, blocks already recorded on Nodes are kept
//! at start, a deleted Node's block is reused, and exhaustion is reported as `CIDRNotAvailable`.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::json;
use wasmkube_controllers::ControllerConfig;

use crate::common::*;

async fn create_node(client: &Client, name: &str, cidr: Option<&str>) -> anyhow::Result<()> {
    let spec = match cidr {
        Some(c) => json!({"podCIDR": c, "podCIDRs": [c]}),
        None => json!({}),
    };
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    Ok(())
}

async fn cidr_of(client: &Client, name: &str) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(&format!("a podCIDR on {name}"), || async {
        let node = nodes.get(name).await?;
        let spec = node.spec.unwrap_or_default();
        let cidr = spec.pod_cidr.filter(|c| !c.is_empty());
        if let Some(c) = &cidr {
            assert_eq!(spec.pod_cidrs.as_ref(), Some(&vec![c.clone()]));
        }
        Ok(cidr)
    })
    .await
}

#[tokio::test]
async fn nodes_get_free_blocks_kept_across_restarts_and_reused_after_delete() -> anyhow::Result<()>
{
    let c = apiserver().await?;
    // Recorded before the controller starts: it must not hand this block out again.
    create_node(&c.client, "old", Some("127.200.0.0/24")).await?;
    let config = ControllerConfig {
        leader_election: false,
        cluster_cidr: "127.200.0.0/23".into(),
        node_cidr_mask_size: 24,
        ..ControllerConfig::default()
    };
    tokio::spawn(wasmkube_controllers::run(
        c.client.clone(),
        config,
        c.stop.clone(),
    ));

    create_node(&c.client, "a", None).await?;
    assert_eq!(cidr_of(&c.client, "a").await?, "127.200.1.0/24");

    // The range is full: b waits with a CIDRNotAvailable event.
    create_node(&c.client, "b", None).await?;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    wait_for("a CIDRNotAvailable event for b", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("CIDRNotAvailable")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("b")
            })
            .map(|_| ()))
    })
    .await?;

    // Deleting a node frees its block for the waiting one.
    Api::<Node>::all(c.client.clone())
        .delete("old", &DeleteParams::default())
        .await?;
    assert_eq!(cidr_of(&c.client, "b").await?, "127.200.0.0/24");
    Ok(())
}
