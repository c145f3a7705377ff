//! Node lifecycle controller (auto-repair): a node whose kubelet stopped renewing its Lease in
//! `kube-node-lease` for the grace period gets `Ready=Unknown` and the
//! `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute); a node reporting
//! `Ready=False` gets `node.kubernetes.io/not-ready`. The NoExecute taint manager then evicts
//! the node's pods that do not tolerate the taint, each after its `tolerationSeconds` (300 s by
//! the apiserver's DefaultTolerationSeconds), so their controllers recreate them elsewhere.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::ControllerConfig;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {what}: {source}")]
    Api {
        node: String,
        what: String,
        #[source]
        source: kube::Error,
    },
}

pub struct Ctx {
    client: Client,
    grace: Duration,
}

/// Runs the node lifecycle controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
        .watches(leases, watcher::Config::default(), |lease| {
            Some(ObjectRef::<Node>::new(&lease.name_any()))
        })
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client,
                grace: config.node_monitor_grace_period,
            }),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "node lifecycle reconcile failed");
            }
        })
        .await;
}

fn error_policy(_node: Arc<Node>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "node lifecycle");
    Action::requeue(Duration::from_secs(1))
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The taint (key) the node should carry for its readiness, if any.
fn wanted_taint(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        // Ready, or not reported yet (within the grace period: see `reconcile`).
        _ => None,
    }
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    let api_err = |what: &str| {
        let node = name.clone();
        let what = what.to_string();
        move |source| Error::Api { node, what, source }
    };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE);
    let now = jiff::Timestamp::now();

    // When the kubelet was last heard of: its Lease, its Ready heartbeat, or the node's birth.
    let lease = leases
        .get_opt(&name)
        .await
        .map_err(api_err("reading the lease"))?;
    let heard = [
        lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)),
        ready_condition(&node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0)),
        node.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(now);
    let grace = jiff::SignedDuration::try_from(ctx.grace).unwrap_or(jiff::SignedDuration::ZERO);
    let silent = now.duration_since(heard) > grace;
    let mut requeue = (!silent).then(|| (heard + grace).duration_since(now).unsigned_abs());

    // 1. A silent kubelet: every condition becomes Unknown (upstream's NodeStatusUnknown).
    let mut node = node.as_ref().clone();
    let ready_status = ready_condition(&node).map(|c| c.status.clone());
    if silent && ready_status.as_deref() != Some("Unknown") {
        let status = node.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        if !conds.iter().any(|c| c.type_ == "Ready") {
            conds.push(NodeCondition {
                type_: "Ready".into(),
                ..Default::default()
            });
        }
        for c in conds.iter_mut() {
            if c.status != "Unknown" {
                c.last_transition_time = Some(Time(now));
            }
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
        }
        node = nodes
            .replace_status(&name, &PostParams::default(), &node)
            .await
            .map_err(api_err("marking the node Unknown"))?;
        mark_pods_not_ready(&ctx, &name)
            .await
            .map_err(api_err("marking pods not ready"))?;
    }

    // 2. Taints follow readiness.
    let ready = ready_condition(&node).map(|c| c.status.clone());
    let wanted = wanted_taint(ready.as_deref());
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut next: Vec<Taint> = taints
        .iter()
        .filter(|t| {
            let ours = t.key == UNREACHABLE || t.key == NOT_READY;
            !ours || Some(t.key.as_str()) == wanted
        })
        .cloned()
        .collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            if !next.iter().any(|t| t.key == key && t.effect == effect) {
                next.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    if next != taints {
        // An update carrying the resourceVersion we saw: others' concurrent changes win.
        node.spec.get_or_insert_with(Default::default).taints = (!next.is_empty()).then_some(next);
        node = nodes
            .replace(&name, &PostParams::default(), &node)
            .await
            .map_err(api_err("updating taints"))?;
    }

    // 3. The NoExecute taint manager: evict what does not tolerate the node's taints.
    let no_execute: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    if !no_execute.is_empty() {
        if let Some(after) = evict(&ctx, &name, &no_execute, now)
            .await
            .map_err(api_err("evicting pods"))?
        {
            requeue = Some(requeue.map_or(after, |r| r.min(after)));
        }
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match toleration.key.as_deref() {
        None | Some("") => toleration.operator.as_deref() == Some("Exists"),
        Some(k) => k == taint.key,
    };
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

/// When the pod must leave a node with these NoExecute taints: `None` never, else the instant
/// (upstream: the shortest tolerationSeconds among the matching tolerations, from when the
/// taint was added; an untolerated taint evicts at once).
fn eviction_time(pod: &Pod, taints: &[Taint], now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut at: Option<jiff::Timestamp> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue; // tolerated forever
        };
        let since = taint.time_added.as_ref().map_or(now, |t| t.0);
        let when = since + jiff::SignedDuration::from_secs(seconds.max(0));
        at = Some(at.map_or(when, |a| a.min(when)));
    }
    at
}

/// Deletes the node's pods whose eviction time has come; returns how long until the next one.
async fn evict(
    ctx: &Ctx,
    node: &str,
    taints: &[Taint],
    now: jiff::Timestamp,
) -> Result<Option<Duration>, kube::Error> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut next: Option<Duration> = None;
    for pod in on_node.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = eviction_time(&pod, taints, now) else {
            continue;
        };
        if at > now {
            let left = at.duration_since(now).unsigned_abs();
            next = Some(next.map_or(left, |n| n.min(left)));
            continue;
        }
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        tracing::info!(pod = %pod.name_any(), node, "evicting pod from tainted node");
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(next)
}

/// Upstream `MarkPodsNotReady`: a silent node's pods stop being Ready, so Services stop
/// sending them traffic before they are evicted.
async fn mark_pods_not_ready(ctx: &Ctx, node: &str) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let now = jiff::Timestamp::now();
    for mut pod in on_node.items {
        let Some(conds) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
            continue;
        };
        let mut changed = false;
        for c in conds
            .iter_mut()
            .filter(|c| c.type_ == "Ready" && c.status != "False")
        {
            c.status = "False".into();
            c.last_transition_time = Some(Time(now));
            changed = true;
        }
        if !changed {
            continue;
        }
        let api: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        match api
            .replace_status(&pod.name_any(), &PostParams::default(), &pod)
            .await
        {
            // Changed or gone meanwhile: the kubelet or a controller has newer news.
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(jiff::Timestamp::from_second(added).expect("ts"))),
            value: None,
        }
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
            .expect("pod")
    }

    #[test]
    fn eviction_waits_for_the_shortest_matching_toleration() {
        let now = jiff::Timestamp::from_second(1_000).expect("ts");
        let taints = [taint(UNREACHABLE, 900)];
        let p = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            eviction_time(&p, &taints, now),
            Some(jiff::Timestamp::from_second(1_200).expect("ts"))
        );
        assert_eq!(eviction_time(&pod(json!([])), &taints, now), Some(now));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &taints, now), None);
    }
}
