//! DaemonSet controller: one pod per eligible node (nodeSelector matches, NoSchedule/NoExecute
//! taints tolerated), pinned to its node by required node affinity on `metadata.name` as
//! upstream (the scheduler binds it), replaced by RollingUpdate within `maxUnavailable`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::podutil;
use crate::ControllerConfig;

/// Label on daemon pods naming their template (upstream takes it from a ControllerRevision).
pub const REVISION_HASH: &str = "controller-revision-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("daemonset {key}: {what}: {source}")]
    Api {
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
}

pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    expectations: Arc<Expectations>,
}

/// Runs the DaemonSet controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let expectations = Arc::new(Expectations::default());
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    let observed = expectations.clone();
    let (pods, pod_events) = podutil::informer(
        Api::<Pod>::all(client.clone()),
        config.pod_cache_lag,
        move |event, cache| podutil::observe_pod(&observed, "DaemonSet", event, cache),
    );
    let (nodes, node_events) =
        podutil::informer(Api::<Node>::all(client.clone()), Duration::ZERO, |_, _| {});
    let ctx = Arc::new(Ctx {
        client,
        pods,
        nodes,
        expectations,
    });
    controller
        .watches_stream(pod_events, |pod| {
            let owner = podutil::controller_ref(&pod.metadata).filter(|r| r.kind == "DaemonSet")?;
            Some(ObjectRef::new(&owner.name).within(&pod.namespace().unwrap_or_default()))
        })
        // Any node change may add or remove a daemon pod.
        .watches_stream(node_events, move |_node| {
            sets.state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "daemonset reconcile failed");
            }
        })
        .await;
}

fn error_policy(_ds: Arc<DaemonSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "daemonset");
    Action::requeue(Duration::from_secs(1))
}

/// Tolerations every daemon pod gets (upstream `AddOrUpdateDaemonPodTolerations`): it stays on
/// not-ready, unreachable, pressured and unschedulable nodes.
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = t.operator.as_deref() == Some("Exists")
            || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
        effect_ok && key_ok && value_ok
    })
}

/// Whether a daemon pod of `ds` should run on `node` (nodeSelector and taints).
fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let pod_spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let labels = node.labels();
    let selected = pod_spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut tolerations = pod_spec.tolerations.unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    let taints_ok = node
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(&tolerations, t));
    selected && taints_ok && node.metadata.deletion_timestamp.is_none()
}

/// The node a daemon pod is for: its binding, else its `metadata.name` affinity.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.clone().unwrap_or_default();
    let mut pod = podutil::pod_from_template(
        &spec.template,
        &ds.namespace().unwrap_or_default(),
        &ds.name_any(),
        podutil::controller_owner_ref(ds),
    );
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(REVISION_HASH.into(), hash.into());
    let ps = pod.spec.get_or_insert_with(Default::default);
    let tolerations = ps.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    // Pinned to the node through required affinity, as upstream; the scheduler binds it.
    ps.affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity = Some(NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.to_string()]),
                }]),
                match_expressions: None,
            }],
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    });
    pod
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&ds.metadata);
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let api_err = |what: &str| {
        let key = key.clone();
        let what = what.to_string();
        move |source| Error::Api { key, what, source }
    };
    let hash = crate::deployment::template_hash(
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();

    // Active pods by node.
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut failed = Vec::new();
    for pod in ctx.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str())
            || podutil::controller_ref(&pod.metadata).is_none_or(|r| r.uid != uid)
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
            failed.push(pod);
            continue;
        }
        if let Some(node) = target_node(&pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    let nodes = ctx.nodes.state();
    let eligible: Vec<String> = nodes
        .iter()
        .filter(|n| should_run(&ds, n))
        .map(|n| n.name_any())
        .collect();

    let mut to_create: Vec<String> = Vec::new();
    let mut to_delete: Vec<Arc<Pod>> = failed;
    for node in &eligible {
        match by_node.get_mut(node) {
            None => to_create.push(node.clone()),
            Some(pods) if pods.len() > 1 => {
                // Keep the oldest; the rest are surplus.
                pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                to_delete.extend(pods.drain(1..));
            }
            Some(_) => {}
        }
    }
    for (node, pods) in &by_node {
        if !eligible.contains(node) {
            to_delete.extend(pods.iter().cloned());
        }
    }

    // RollingUpdate: replace old-template pods while at most maxUnavailable are unavailable.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling && to_create.is_empty() && to_delete.is_empty() {
        let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
        let max_unavailable = match spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
        {
            Some(IntOrString::Int(n)) => n,
            Some(IntOrString::String(p)) => {
                let pct: i32 = p.trim_end_matches('%').parse().unwrap_or(0);
                (pct * desired) / 100
            }
            None => 1,
        }
        .max(1);
        let mut unavailable = eligible
            .iter()
            .filter(|n| {
                by_node
                    .get(*n)
                    .and_then(|p| p.first())
                    .is_none_or(|p| !podutil::is_available(p, min_ready, now))
            })
            .count() as i32;
        // Unavailable old pods go first: replacing them costs nothing.
        let mut old: Vec<&Arc<Pod>> = eligible
            .iter()
            .filter_map(|n| by_node.get(n)?.first())
            .filter(|p| p.labels().get(REVISION_HASH) != Some(&hash))
            .collect();
        old.sort_by_key(|p| podutil::is_available(p, min_ready, now));
        for pod in old {
            if podutil::is_available(pod, min_ready, now) {
                if unavailable >= max_unavailable {
                    break;
                }
                unavailable += 1;
            }
            to_delete.push(pod.clone());
        }
    }

    if ctx.expectations.satisfied(&key) {
        if !to_create.is_empty() {
            ctx.expectations.expect_creations(&key, to_create.len());
            let params = PostParams::default();
            let pods: Vec<Pod> = to_create
                .iter()
                .map(|n| daemon_pod(&ds, n, &hash))
                .collect();
            let results =
                futures::future::join_all(pods.iter().map(|p| pods_api.create(&params, p))).await;
            let mut first = None;
            for r in results {
                if let Err(e) = r {
                    ctx.expectations.creation_observed(&key);
                    first.get_or_insert(e);
                }
            }
            if let Some(e) = first {
                return Err(api_err("creating daemon pods")(e));
            }
        }
        if !to_delete.is_empty() {
            ctx.expectations
                .expect_deletions(&key, to_delete.iter().map(|p| p.name_any()));
            for pod in &to_delete {
                if let Err(e) = pods_api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                {
                    ctx.expectations.deletion_observed(&key, &pod.name_any());
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        return Err(api_err("deleting a daemon pod")(e));
                    }
                }
            }
        }
    }

    // Status (upstream `updateDaemonSetStatus`).
    let count = |f: &dyn Fn(&str, &Pod) -> bool| -> i32 {
        let n = by_node
            .iter()
            .filter_map(|(node, pods)| pods.first().map(|p| (node, p)))
            .filter(|(node, p)| f(node, p))
            .count();
        i32::try_from(n).unwrap_or(i32::MAX)
    };
    let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
    let scheduled = count(&|n, _| eligible.iter().any(|e| e == n));
    let available =
        count(&|n, p| eligible.iter().any(|e| e == n) && podutil::is_available(p, min_ready, now));
    let old = ds.status.clone().unwrap_or_default();
    let status = DaemonSetStatus {
        current_number_scheduled: scheduled,
        desired_number_scheduled: desired,
        number_misscheduled: count(&|n, _| !eligible.iter().any(|e| e == n)),
        number_ready: count(&|n, p| eligible.iter().any(|e| e == n) && podutil::is_ready(p)),
        number_available: Some(available),
        number_unavailable: Some((desired - available).max(0)),
        updated_number_scheduled: Some(count(&|n, p| {
            eligible.iter().any(|e| e == n) && p.labels().get(REVISION_HASH) == Some(&hash)
        })),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if Some(&status) != ds.status.as_ref() {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        let body = serde_json::to_value(&status)
            .map_err(|e| api_err("encoding status")(kube::Error::SerdeError(e)))?;
        api.patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await
        .map_err(api_err("updating status"))?;
    }
    if min_ready > 0 && status.number_ready != available {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(min_ready).unwrap_or(1),
        )));
    }
    Ok(Action::await_change())
}
