//! Pods land where upstream's default profile would put them; unschedulable pods get the
//! upstream condition and are scheduled once a node that fits appears.

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::{solo_config, start_scheduler, wait_for, Cluster};

async fn three_nodes(c: &Cluster) {
    c.node(
        "small",
        "2",
        "4Gi",
        json!({"zone": "a", "disk": "hdd"}),
        json!([]),
    )
    .await;
    c.node(
        "big",
        "16",
        "64Gi",
        json!({"zone": "b", "disk": "ssd"}),
        json!([]),
    )
    .await;
    c.node(
        "wasm",
        "16",
        "64Gi",
        json!({"zone": "c"}),
        json!([{"key": "wasm", "value": "true", "effect": "NoSchedule"}]),
    )
    .await;
}

fn tolerate_wasm() -> serde_json::Value {
    json!([{"key": "wasm", "operator": "Equal", "value": "true", "effect": "NoSchedule"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_where_upstream_puts_them() {
    let c = Cluster::start().await;
    three_nodes(&c).await;
    let s = start_scheduler(&c.client, solo_config());

    c.pod(
        "ssd",
        json!({}),
        "100m",
        json!({"nodeSelector": {"disk": "ssd"}}),
    )
    .await;
    c.pod(
        "wasm-only",
        json!({}),
        "100m",
        json!({"tolerations": tolerate_wasm(), "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]}]}}}}),
    )
    .await;
    // Too big for "small", and "wasm" is tainted: only "big" fits.
    c.pod("large", json!({}), "8", json!({})).await;
    // Preferred affinity for zone a (weight 100) outweighs the resource scores.
    c.pod(
        "prefers-a",
        json!({}),
        "100m",
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}),
    )
    .await;
    let got = c
        .wait_bound(&["ssd", "wasm-only", "large", "prefers-a"])
        .await;
    assert_eq!(got, vec!["big", "wasm", "big", "small"]);

    // Untolerating pods never land on the tainted node.
    let plain: Vec<String> = (0..6).map(|i| format!("plain-{i}")).collect();
    for p in &plain {
        c.pod(p, json!({}), "100m", json!({})).await;
    }
    let names: Vec<&str> = plain.iter().map(String::as_str).collect();
    let got = c.wait_bound(&names).await;
    assert!(got.iter().all(|n| n != "wasm"), "{got:?}");

    // A hard zone spread (tolerating the taint, so all three zones count) puts one per zone.
    let spread = json!({
        "tolerations": tolerate_wasm(),
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "spread"}}}]
    });
    for i in 0..3 {
        c.pod(
            &format!("spread-{i}"),
            json!({"app": "spread"}),
            "100m",
            spread.clone(),
        )
        .await;
    }
    let mut got = c.wait_bound(&["spread-0", "spread-1", "spread-2"]).await;
    got.sort();
    assert_eq!(got, vec!["big", "small", "wasm"]);

    // Required anti-affinity on hostname: two "solo" pods never share a node.
    let solo = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    c.pod("solo-0", json!({"app": "solo"}), "100m", solo.clone())
        .await;
    c.pod("solo-1", json!({"app": "solo"}), "100m", solo.clone())
        .await;
    let got = c.wait_bound(&["solo-0", "solo-1"]).await;
    assert_ne!(got[0], got[1]);
    // A third cannot go anywhere but the tainted node, which it does not tolerate.
    c.pod("solo-2", json!({"app": "solo"}), "100m", solo).await;
    let message = wait_for("solo-2 unschedulable", || async {
        let p = c.pods().get("solo-2").await.ok()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        (cond.status == "False").then_some(cond.message.unwrap_or_default())
    })
    .await;
    assert_eq!(
        message,
        "0/3 nodes are available: 1 node(s) had untolerated taint {wasm: true}, 2 node(s) didn't match pod anti-affinity rules."
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_gets_condition_and_event_then_fits_a_new_node() {
    let c = Cluster::start().await;
    three_nodes(&c).await;
    let s = start_scheduler(&c.client, solo_config());
    c.pod("huge", json!({}), "100", json!({})).await;
    let cond = wait_for("PodScheduled=False", || async {
        let p = c.pods().get("huge").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some("0/3 nodes are available: 1 node(s) had untolerated taint {wasm: true}, 2 Insufficient cpu.")
    );
    assert_eq!(c.node_of("huge").await, None);
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let ev = wait_for("FailedScheduling event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("huge")
        })
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.note, cond.message);

    // A node that fits arrives: the NodeAdd event moves the pod back and it is bound there.
    c.node("giant", "128", "256Gi", json!({}), json!([])).await;
    assert_eq!(c.wait_bound(&["huge"]).await, vec!["giant"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_for_other_schedulers_are_left_alone() {
    let c = Cluster::start().await;
    three_nodes(&c).await;
    let s = start_scheduler(&c.client, solo_config());
    c.pod(
        "theirs",
        json!({}),
        "100m",
        json!({"schedulerName": "someone-else"}),
    )
    .await;
    c.pod("ours", json!({}), "100m", json!({})).await;
    c.wait_bound(&["ours"]).await;
    // "ours" was created after "theirs" and is bound: "theirs" was seen and skipped.
    assert_eq!(c.node_of("theirs").await, None);
    s.shutdown().await;
}
