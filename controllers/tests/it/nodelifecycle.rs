use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use wasmkube_controllers::ControllerConfig;

use crate::common::*;

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

async fn register_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    nodes.create(&PostParams::default(), &node).await?;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    renew_lease(client, name).await
}

/// Plays a kubelet's heartbeat: creates or renews the node's Lease.
async fn renew_lease(client: &Client, name: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()}});
    leases
        .patch(
            name,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

#[tokio::test]
async fn pods_leave_a_node_whose_lease_expired_and_come_back_on_a_healthy_one() -> anyhow::Result<()>
{
    let c = cluster_with(ControllerConfig {
        node_monitor_grace_period: Duration::from_secs(1),
        ..Default::default()
    })
    .await?;
    register_node(&c.client, "n1").await?;
    register_node(&c.client, "n2").await?;
    // n2's kubelet keeps beating; n1's is dead.
    let _n2 = FakeKubelet::spawn({
        let client = c.client.clone();
        async move {
            loop {
                let _ = renew_lease(&client, "n2").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    // Plays the scheduler: binds unbound pods to `target`.
    let target = Arc::new(Mutex::new("n1".to_string()));
    let _scheduler = FakeKubelet::spawn({
        let (client, target) = (c.client.clone(), target.clone());
        async move {
            let api: Api<Pod> = Api::namespaced(client.clone(), "default");
            loop {
                for pod in pods(&client, "default", "app=evict")
                    .await
                    .unwrap_or_default()
                {
                    if node_of(&pod).is_none() {
                        let node = target.lock().expect("lock").clone();
                        let binding = json!({"apiVersion": "v1", "kind": "Binding",
                            "metadata": {"name": pod.name_any()},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                        let _ = api
                            .create_subresource::<_, serde_json::Value>(
                                "binding",
                                &pod.name_any(),
                                &PostParams::default(),
                                &binding,
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let _kubelet = fake_kubelet(&c.client, "default", "app=evict");

    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let mut tmpl = template("evict", "example.com/hello:1");
    tmpl["spec"]["tolerations"] = json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
    ]);
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "evict"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "evict"}}, "template": tmpl},
    }))?;
    sets.create(&PostParams::default(), &rs).await?;
    wait_for("2 pods on n1", || async {
        let p = pods(&c.client, "default", "app=evict").await?;
        Ok((p.len() == 2 && p.iter().all(|p| node_of(p).as_deref() == Some("n1"))).then_some(()))
    })
    .await?;
    *target.lock().expect("lock") = "n2".to_string();

    let nodes: Api<Node> = Api::all(c.client.clone());
    wait_for("n1 unknown and tainted unreachable", || async {
        let n1 = nodes.get("n1").await?;
        let unknown = n1
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Ready" && c.status == "Unknown");
        let taints: Vec<(String, String)> = n1
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect();
        let tainted = ["NoSchedule", "NoExecute"].iter().all(|e| {
            taints.contains(&("node.kubernetes.io/unreachable".to_string(), e.to_string()))
        });
        Ok((unknown && tainted).then_some(()))
    })
    .await?;
    wait_for("both pods recreated on n2", || async {
        let p = pods(&c.client, "default", "app=evict").await?;
        Ok((p.len() == 2 && p.iter().all(|p| node_of(p).as_deref() == Some("n2"))).then_some(()))
    })
    .await?;
    let n2 = nodes.get("n2").await?;
    assert!(
        n2.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .is_empty(),
        "n2 stays healthy"
    );
    Ok(())
}
