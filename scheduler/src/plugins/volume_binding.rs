//! VolumeBinding: a pod's PersistentVolumeClaims decide where it can run.
//!
//! - PreFilter: every claim must exist and not be lost or being deleted; an unbound claim of an
//!   Immediate class (or of no class) waits for the PV controller to bind it.
//! - Filter: a bound claim's volume must be reachable from the node (`nodeAffinity.required`).
//!   An unbound WaitForFirstConsumer claim needs, on the node, either an Available volume that
//!   fits it (class, size, access and volume modes, selector, node affinity; the smallest wins
//!   and one volume serves one claim) or a class that can provision one; a claim whose node was
//!   already selected fits only that node, as upstream.
//! - PreBind: a matched volume gets the claim in its `claimRef` (a compare-and-swap on its
//!   resourceVersion; the PV controller completes the binding); a claim to provision gets
//!   `volume.kubernetes.io/selected-node`, so its provisioner creates the volume on the pod's
//!   node. Unlike upstream, the pod is bound without waiting for the volume: the kubelet waits
//!   for the claim to be bound before starting it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    PreBindPlugin, PreFilterOutcome, PreFilterPlugin, Rejection,
};
use crate::info::{NodeInfo, PodInfo};
use crate::labels::{any_term_matches, NodeTerm, Selector};
use crate::resources;
use crate::volumes::VolumeStore;

/// The plugin's name in profiles.
pub const NAME: &str = "VolumeBinding";
/// A bound claim's volume cannot be reached from the node.
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// An unbound claim cannot get a volume on the node (its node was already selected elsewhere).
pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// A bound claim names a volume that does not exist.
pub const REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// Some claim waits for the PV controller to bind it.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// The claim annotation naming the node chosen for its first pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The volume annotation saying the binding was made by the system, not the user.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// The plugin; its client writes the PreBind decisions.
pub struct VolumeBinding {
    client: Option<kube::Client>,
}

/// Builds the plugin (it takes no args).
pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    Ok(Arc::new(VolumeBinding {
        client: ctx.client.clone(),
    }))
}

/// What PreFilter learned about the pod's claims.
#[derive(Debug, Default)]
struct State {
    /// The `nodeAffinity.required` terms of each bound claim's volume (any term must match).
    bound_terms: Vec<Vec<NodeTerm>>,
    /// Some bound claim's volume does not exist.
    missing_volume: bool,
    /// Unbound WaitForFirstConsumer claims.
    delayed: Vec<Delayed>,
    /// What Filter decided for each feasible node, for PreBind to carry out.
    decisions: Mutex<HashMap<String, Vec<Decision>>>,
}

/// An unbound WaitForFirstConsumer claim and the volumes that could serve it.
#[derive(Debug)]
struct Delayed {
    name: String,
    uid: String,
    /// The node chosen for it earlier (`volume.kubernetes.io/selected-node`).
    selected: Option<String>,
    /// Available volumes that fit it, smallest first.
    candidates: Vec<Candidate>,
    /// Its class names a provisioner.
    can_provision: bool,
}

/// A volume that fits a claim, with its node affinity parsed (`None`: reachable anywhere).
#[derive(Debug)]
struct Candidate {
    pv: Arc<PersistentVolume>,
    terms: Option<Vec<NodeTerm>>,
}

/// How one claim gets its volume on the chosen node.
#[derive(Debug, Clone)]
enum Decision {
    /// Claim this existing volume (its name and the version read).
    Static {
        claim: String,
        uid: String,
        pv: Arc<PersistentVolume>,
    },
    /// Ask the provisioner for a volume on the node.
    Provision {
        claim: String,
        selected: Option<String>,
    },
}

impl State {
    /// Upstream's `FindPodVolumes` for the unbound claims on one node: a matching volume per
    /// claim (never one volume for two claims), else provisioning; `None` if some claim can get
    /// neither.
    fn decide(&self, node: &str, labels: &BTreeMap<String, String>) -> Option<Vec<Decision>> {
        let mut taken: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        for d in &self.delayed {
            if let Some(selected) = &d.selected {
                if selected != node {
                    return None;
                }
                out.push(Decision::Provision {
                    claim: d.name.clone(),
                    selected: Some(selected.clone()),
                });
                continue;
            }
            let found = d.candidates.iter().find(|c| {
                let name = c.pv.metadata.name.as_deref().unwrap_or_default();
                !taken.contains(&name)
                    && c.terms
                        .as_ref()
                        .is_none_or(|t| any_term_matches(t, node, labels))
            });
            match found {
                Some(c) => {
                    taken.push(c.pv.metadata.name.as_deref().unwrap_or_default());
                    out.push(Decision::Static {
                        claim: d.name.clone(),
                        uid: d.uid.clone(),
                        pv: c.pv.clone(),
                    });
                }
                None if d.can_provision => out.push(Decision::Provision {
                    claim: d.name.clone(),
                    selected: None,
                }),
                None => return None,
            }
        }
        Some(out)
    }
}

/// The provisioner of classes whose volumes are only ever created by hand.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Available volumes that fit `claim` (upstream's `FindMatchingVolume` without the node), the
/// smallest first.
fn candidates(
    claim: &PersistentVolumeClaim,
    class: &str,
    volumes: &VolumeStore,
) -> Result<Vec<Candidate>, String> {
    let spec = claim.spec.clone().unwrap_or_default();
    let storage = |m: Option<&BTreeMap<String, Quantity>>| {
        m.and_then(|m| m.get("storage"))
            .map(|q| resources::value(q).unwrap_or(i64::MAX))
    };
    let want = storage(spec.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0);
    let modes = spec.access_modes.clone().unwrap_or_default();
    let mode = spec.volume_mode.as_deref().unwrap_or("Filesystem");
    let selector = match &spec.selector {
        Some(s) => Some(Selector::from_label_selector(s).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut out = Vec::new();
    for pv in volumes.volumes() {
        let Some(s) = &pv.spec else { continue };
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        let fits = pv.metadata.deletion_timestamp.is_none()
            && phase == Some("Available")
            && s.claim_ref.is_none()
            && s.storage_class_name.as_deref().unwrap_or_default() == class
            && s.volume_mode.as_deref().unwrap_or("Filesystem") == mode
            && modes
                .iter()
                .all(|m| s.access_modes.iter().flatten().any(|h| h == m))
            && selector.as_ref().is_none_or(|sel| sel.matches(pv.labels()))
            && storage(s.capacity.as_ref()).is_some_and(|c| c >= want);
        if !fits {
            continue;
        }
        let terms = match s.node_affinity.as_ref().and_then(|a| a.required.as_ref()) {
            None => None,
            Some(r) => Some(
                r.node_selector_terms
                    .iter()
                    .map(NodeTerm::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!(
                            "persistentvolume {:?} has an invalid node affinity: {e}",
                            pv.name_any()
                        )
                    })?,
            ),
        };
        out.push((
            storage(s.capacity.as_ref()).unwrap_or(0),
            pv.name_any(),
            Candidate {
                pv: pv.clone(),
                terms,
            },
        ));
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(out.into_iter().map(|(_, _, c)| c).collect())
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::PvcAdd
            | ClusterEvent::PvcUpdate
            | ClusterEvent::PvAdd
            | ClusterEvent::PvUpdate
            | ClusterEvent::StorageClassAdd
            | ClusterEvent::NodeAdd
            | ClusterEvent::NodeLabelChange
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_bind(self: Arc<Self>) -> Option<Arc<dyn PreBindPlugin>> {
        Some(self)
    }
}

/// The claims a pod uses: `persistentVolumeClaim` volumes and generic ephemeral volumes (whose
/// claim is `<pod>-<volume>`), with whether each is ephemeral.
fn claim_names(pod: &PodInfo) -> Vec<(String, bool)> {
    let volumes = pod.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some((c.claim_name.clone(), false))
            } else if v.ephemeral.is_some() {
                Some((format!("{}-{}", pod.name, v.name), true))
            } else {
                None
            }
        })
        .collect()
}

/// The claim's class: `spec.storageClassName`, or the beta annotation upstream still honours.
fn class_of(claim: &PersistentVolumeClaim) -> String {
    claim
        .annotations()
        .get("volume.beta.kubernetes.io/storage-class")
        .cloned()
        .or_else(|| claim.spec.as_ref()?.storage_class_name.clone())
        .unwrap_or_default()
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cache: &Cache,
    ) -> Result<PreFilterOutcome, Rejection> {
        let names = claim_names(pod);
        if names.is_empty() {
            return Ok(PreFilterOutcome::Skip);
        }
        let store = cache.volumes();
        let mut s = State::default();
        let mut unbound_immediate = false;
        for (name, ephemeral) in names {
            let Some(claim) = store.claim(&pod.namespace, &name) else {
                return Err(Rejection::unresolvable(if ephemeral {
                    format!(
                        "waiting for ephemeral volume controller to create the persistentvolumeclaim {name:?}"
                    )
                } else {
                    format!("persistentvolumeclaim {name:?} not found")
                }));
            };
            let volume = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Lost") {
                return Err(Rejection::unresolvable(format!(
                    "persistentvolumeclaim {name:?} bound to non-existent persistentvolume {volume:?}"
                )));
            }
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(Rejection::unresolvable(format!(
                    "persistentvolumeclaim {name:?} is being deleted"
                )));
            }
            if !volume.is_empty() {
                let Some(pv) = store.volume(&volume) else {
                    s.missing_volume = true;
                    continue;
                };
                let required = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref());
                if let Some(required) = required {
                    let terms = required
                        .node_selector_terms
                        .iter()
                        .map(NodeTerm::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| {
                            Rejection::unresolvable(format!(
                                "persistentvolume {volume:?} has an invalid node affinity: {e}"
                            ))
                        })?;
                    s.bound_terms.push(terms);
                }
                continue;
            }
            let class = class_of(claim);
            if class.is_empty() {
                unbound_immediate = true;
                continue;
            }
            let Some(sc) = store.class(&class) else {
                return Err(Rejection::unresolvable(format!(
                    "storageclass.storage.k8s.io {class:?} not found"
                )));
            };
            if sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") {
                let selected = claim.annotations().get(SELECTED_NODE).cloned();
                let candidates = if selected.is_some() {
                    Vec::new()
                } else {
                    candidates(claim, &class, store).map_err(Rejection::unresolvable)?
                };
                s.delayed.push(Delayed {
                    uid: claim.metadata.uid.clone().unwrap_or_default(),
                    name,
                    selected,
                    candidates,
                    can_provision: !sc.provisioner.is_empty() && sc.provisioner != NO_PROVISIONER,
                });
            } else {
                unbound_immediate = true;
            }
        }
        if unbound_immediate {
            return Err(Rejection::unresolvable(UNBOUND_IMMEDIATE));
        }
        state.write(NAME, s);
        Ok(PreFilterOutcome::Continue)
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(s) = state.read::<State>(NAME) else {
            return Ok(());
        };
        if s.missing_volume {
            return Err(Rejection::unresolvable(REASON_PV_NOT_EXIST));
        }
        let labels = node.labels();
        if s.bound_terms
            .iter()
            .any(|terms| !any_term_matches(terms, &node.name, labels))
        {
            return Err(Rejection::unresolvable(REASON_NODE_CONFLICT));
        }
        if s.delayed.is_empty() {
            return Ok(());
        }
        let Some(decisions) = s.decide(&node.name, labels) else {
            return Err(Rejection::unresolvable(REASON_BIND_CONFLICT));
        };
        if let Ok(mut d) = s.decisions.lock() {
            d.insert(node.name.clone(), decisions);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl PreBindPlugin for VolumeBinding {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Result<(), String> {
        let Some(s) = state.read::<State>(NAME) else {
            return Ok(());
        };
        let decisions = s
            .decisions
            .lock()
            .map(|d| d.get(node).cloned().unwrap_or_default())
            .unwrap_or_default();
        let pending: Vec<Decision> = decisions
            .into_iter()
            .filter(|d| match d {
                Decision::Provision { selected, .. } => selected.as_deref() != Some(node),
                Decision::Static { .. } => true,
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let Some(client) = &self.client else {
            return Err("no apiserver client configured".into());
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &pod.namespace);
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let ns = &pod.namespace;
        for d in pending {
            match d {
                Decision::Provision { claim, .. } => {
                    let patch =
                        serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
                    claims
                        .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| {
                            format!("setting {SELECTED_NODE} on persistentvolumeclaim {ns}/{claim}: {e}")
                        })?;
                }
                Decision::Static { claim, uid, pv } => {
                    let mut new = (*pv).clone();
                    new.annotations_mut()
                        .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
                    new.spec.get_or_insert_with(Default::default).claim_ref =
                        Some(ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("PersistentVolumeClaim".into()),
                            namespace: Some(ns.clone()),
                            name: Some(claim.clone()),
                            uid: Some(uid),
                            ..Default::default()
                        });
                    // The resourceVersion read makes a volume taken meanwhile a conflict.
                    volumes
                        .replace(&pv.name_any(), &PostParams::default(), &new)
                        .await
                        .map_err(|e| {
                            format!(
                                "binding persistentvolume {} to persistentvolumeclaim {ns}/{claim}: {e}",
                                pv.name_any()
                            )
                        })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::info::testing::{node, node_with, pod};
    use crate::plugins::testing::{cache_of, filter_all};
    use crate::volumes::VolumeObject;
    use serde_json::{json, Value};

    /// One node's filter result: fits, or the rejection's code and reasons.
    type Outcome = Result<(), (Code, String)>;

    /// A JSON merge patch: objects merge key by key, anything else replaces.
    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn claim(name: &str, class: Option<&str>, volume: Option<&str>, extra: Value) -> VolumeObject {
        let mut c = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": if volume.is_some() { "Bound" } else { "Pending" }},
        });
        if let Some(cl) = class {
            c["spec"]["storageClassName"] = json!(cl);
        }
        if let Some(v) = volume {
            c["spec"]["volumeName"] = json!(v);
        }
        merge(&mut c, extra);
        VolumeObject::Claim(Arc::new(serde_json::from_value(c).expect("claim")))
    }

    fn volume_on(name: &str, node: &str) -> VolumeObject {
        available(name, node, "local-path", "1Gi")
    }

    /// An Available local volume of `class` on `node`.
    fn available(name: &str, node: &str, class: &str, size: &str) -> VolumeObject {
        VolumeObject::Volume(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": class, "local": {"path": "/data"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
                "status": {"phase": "Available"},
            }))
            .expect("volume"),
        ))
    }

    fn class(name: &str, mode: &str) -> VolumeObject {
        class_by(name, mode, "wasmkube.dev/local-path")
    }

    fn class_by(name: &str, mode: &str, provisioner: &str) -> VolumeObject {
        VolumeObject::Class(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "provisioner": provisioner, "volumeBindingMode": mode}))
            .expect("class"),
        ))
    }

    fn sized(name: &str, class: &str, size: &str) -> VolumeObject {
        claim(
            name,
            Some(class),
            None,
            json!({"spec": {"resources": {"requests": {"storage": size}}}}),
        )
    }

    fn using(claims: &[&str]) -> Arc<PodInfo> {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod("p", json!({"volumes": volumes}))
    }

    #[test]
    fn table() {
        let mut cache = cache_of(
            vec![
                node("a", "1", "1Gi"),
                node_with(
                    "b",
                    json!({"kubernetes.io/hostname": "b"}),
                    json!({}),
                    json!({"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}),
                ),
            ],
            vec![],
        );
        let store = cache.volumes_mut();
        for o in [
            class("local-path", "WaitForFirstConsumer"),
            class("fast", "Immediate"),
            claim("wffc", Some("local-path"), None, json!({})),
            claim(
                "wffc-on-b",
                Some("local-path"),
                None,
                json!({"metadata": {"annotations": {SELECTED_NODE: "b"}}}),
            ),
            claim("immediate", Some("fast"), None, json!({})),
            claim("classless", None, None, json!({})),
            claim("on-b", Some("local-path"), Some("pv-b"), json!({})),
            claim("dangling", Some("local-path"), Some("pv-gone"), json!({})),
            claim(
                "lost",
                Some("local-path"),
                Some("pv-x"),
                json!({"status": {"phase": "Lost"}}),
            ),
            claim(
                "deleting",
                Some("local-path"),
                None,
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            claim("no-class-object", Some("missing"), None, json!({})),
            volume_on("pv-b", "b"),
            // Hand-made local volumes: only a matching one makes a node feasible.
            class_by(
                "manual",
                "WaitForFirstConsumer",
                "kubernetes.io/no-provisioner",
            ),
            available("local-a", "a", "manual", "5Gi"),
            available("local-b", "b", "manual", "2Gi"),
            available("local-a-1g", "a", "manual", "1Gi"),
            sized("small", "manual", "1Gi"),
            sized("big", "manual", "4Gi"),
            sized("big-2", "manual", "4Gi"),
            sized("huge", "manual", "10Gi"),
        ] {
            store.apply(o);
        }
        let unresolvable = |m: &str| Err((Code::UnschedulableAndUnresolvable, m.to_string()));
        let cases: Vec<(&[&str], Vec<Outcome>)> = vec![
            (&[], vec![Ok(()), Ok(())]),
            (&["wffc"], vec![Ok(()), Ok(())]),
            (&["small"], vec![Ok(()), Ok(())]),
            (&["big"], vec![Ok(()), unresolvable(REASON_BIND_CONFLICT)]),
            (
                &["big", "big-2"],
                vec![unresolvable(REASON_BIND_CONFLICT); 2],
            ),
            (
                &["small", "big"],
                vec![Ok(()), unresolvable(REASON_BIND_CONFLICT)],
            ),
            (&["huge"], vec![unresolvable(REASON_BIND_CONFLICT); 2]),
            (&["on-b"], vec![unresolvable(REASON_NODE_CONFLICT), Ok(())]),
            (
                &["wffc-on-b"],
                vec![unresolvable(REASON_BIND_CONFLICT), Ok(())],
            ),
            (
                &["on-b", "wffc"],
                vec![unresolvable(REASON_NODE_CONFLICT), Ok(())],
            ),
            (
                &["missing"],
                vec![unresolvable(r#"persistentvolumeclaim "missing" not found"#); 2],
            ),
            (&["immediate"], vec![unresolvable(UNBOUND_IMMEDIATE); 2]),
            (
                &["wffc", "classless"],
                vec![unresolvable(UNBOUND_IMMEDIATE); 2],
            ),
            (&["dangling"], vec![unresolvable(REASON_PV_NOT_EXIST); 2]),
            (
                &["lost"],
                vec![
                    unresolvable(
                        r#"persistentvolumeclaim "lost" bound to non-existent persistentvolume "pv-x""#
                    );
                    2
                ],
            ),
            (
                &["deleting"],
                vec![unresolvable(r#"persistentvolumeclaim "deleting" is being deleted"#); 2],
            ),
            (
                &["no-class-object"],
                vec![unresolvable(r#"storageclass.storage.k8s.io "missing" not found"#); 2],
            ),
        ];
        let plugin = VolumeBinding { client: None };
        for (claims, want) in cases {
            let got: Vec<Outcome> = filter_all(&plugin, &using(claims), &cache)
                .into_iter()
                .map(|r| r.map_err(|r| (r.code, r.reasons.join(", "))))
                .collect();
            assert_eq!(got, want, "{claims:?}");
        }
    }

    #[test]
    fn ephemeral_volumes_wait_for_their_claim() {
        let cache = cache_of(vec![node("a", "1", "1Gi")], vec![]);
        let p = pod(
            "p",
            json!({"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate":
            {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]}),
        );
        let got = filter_all(&VolumeBinding { client: None }, &p, &cache);
        assert_eq!(
            got[0].as_ref().unwrap_err().reasons[0],
            r#"waiting for ephemeral volume controller to create the persistentvolumeclaim "p-scratch""#
        );
    }

    #[tokio::test]
    async fn pre_bind_carries_out_the_chosen_nodes_decisions() {
        let mut cache = cache_of(vec![node("a", "1", "1Gi"), node("b", "1", "1Gi")], vec![]);
        for o in [
            class("local-path", "WaitForFirstConsumer"),
            class_by(
                "manual",
                "WaitForFirstConsumer",
                "kubernetes.io/no-provisioner",
            ),
            claim(
                "selected",
                Some("local-path"),
                None,
                json!({"metadata": {"annotations": {SELECTED_NODE: "a"}}}),
            ),
            claim("fresh", Some("local-path"), None, json!({})),
            sized("small", "manual", "1Gi"),
            available("roomy", "a", "manual", "8Gi"),
            available("snug", "a", "manual", "2Gi"),
        ] {
            cache.volumes_mut().apply(o);
        }
        let plugin = VolumeBinding { client: None };
        let decided = |claims: &[&str], node: &str| {
            let p = using(claims);
            let mut state = CycleState::default();
            plugin
                .pre_filter(&mut state, &p, &cache)
                .expect("prefilter");
            let info = cache.node(node).expect("node");
            plugin.filter(&state, &p, info).expect("filter");
            (p, state)
        };
        // Already selected for this node: nothing to write, so no client is needed.
        let (p, state) = decided(&["selected"], "a");
        assert_eq!(plugin.pre_bind(&state, &p, "a").await, Ok(()));
        // A claim to provision needs the annotation written.
        let (p, state) = decided(&["fresh"], "a");
        assert_eq!(
            plugin.pre_bind(&state, &p, "a").await,
            Err("no apiserver client configured".to_string())
        );
        // A static match takes the smallest volume that fits.
        let (_, state) = decided(&["small"], "a");
        let s = state.read::<State>(NAME).expect("state");
        let decisions = s.decisions.lock().unwrap()["a"].clone();
        match &decisions[..] {
            [Decision::Static { claim, pv, .. }] => {
                assert_eq!((claim.as_str(), pv.name_any().as_str()), ("small", "snug"))
            }
            other => panic!("{other:?}"),
        }
    }
}
