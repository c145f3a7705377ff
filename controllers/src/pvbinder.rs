//! PersistentVolume binder: upstream's PV controller, simplified. Two reconcilers share it:
//!
//! - claims: an unbound claim binds to the volume that names it in `claimRef` (provisioned or
//!   pre-bound) or, for an Immediate class (or no class), to the smallest Available volume of its
//!   class that fits (capacity, access modes, volume mode, selector). The volume is claimed first,
//!   with a compare-and-swap on its resourceVersion, so two claims racing for one volume cannot
//!   both win. A bound claim whose volume vanished is `Lost`.
//! - volumes: a volume whose claim is gone is `Released`, then deleted (reclaim policy
//!   `Delete`) or kept (`Retain`); a volume without a claim is `Available`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::localpath::{PROVISIONED_BY, PROVISIONER, SELECTED_NODE};
use crate::podutil;
use crate::ControllerConfig;

/// Claim annotation: the binder finished binding the claim.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Claim and volume annotation: the binder (not the user) set `volumeName` / `claimRef`.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The provisioner of classes whose volumes are only ever created by hand.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Upstream's event message for a claim waiting for its first pod to be scheduled.
const WAITING: &str = "waiting for first consumer to be created before binding";

/// Upstream's event message for a claim waiting for an external provisioner.
fn external(provisioner: &str) -> String {
    format!(
        "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
         or manually by the system administrator. If volume creation is delayed, please verify \
         that the provisioner is running and correctly registered."
    )
}

/// Upstream's controller name, which events report.
const CONTROLLER: &str = "persistentvolume-controller";
/// Upstream's resync period: state no watch event announces (a claim that vanished while
/// unbound) is caught up by then.
const RESYNC: Duration = Duration::from_secs(15);

/// Why a claim or volume could not be synced this time (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {key}: {what}: {source}")]
    Api {
        kind: &'static str,
        key: String,
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {key}: {what}: changed meanwhile, retrying")]
    Conflict {
        kind: &'static str,
        key: String,
        what: &'static str,
    },
}

/// What each reconcile gets: the client and the event recorder.
pub struct Ctx {
    client: Client,
    recorder: Recorder,
}

/// Runs both reconcilers until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), CONTROLLER.into()),
    });
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        |pv| {
            let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
            Some(ObjectRef::new(r.name.as_deref()?).within(r.namespace.as_deref()?))
        },
    )
    .with_config(Config::default().concurrency(config.concurrency))
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(reconcile_claim, claim_error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "claim binder reconcile failed");
        }
    });
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    // A deleted claim releases its volume: the bound one, or the one provisioned for it.
    .watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        |pvc| {
            let mut refs = vec![ObjectRef::new(&format!(
                "pvc-{}",
                pvc.uid().unwrap_or_default()
            ))];
            if let Some(v) = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
                refs.push(ObjectRef::new(v));
            }
            refs
        },
    )
    .with_config(Config::default().concurrency(config.concurrency))
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile_volume, volume_error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "volume binder reconcile failed");
        }
    });
    tokio::join!(claims, volumes);
}

fn claim_error_policy(_: Arc<PersistentVolumeClaim>, error: &Error, _: Arc<Ctx>) -> Action {
    log_error(error);
    Action::requeue(Duration::from_millis(500))
}

fn volume_error_policy(_: Arc<PersistentVolume>, error: &Error, _: Arc<Ctx>) -> Action {
    log_error(error);
    Action::requeue(Duration::from_millis(500))
}

fn log_error(error: &Error) {
    match error {
        Error::Conflict { .. } => tracing::debug!(%error, "pv binder"),
        Error::Api { .. } => tracing::warn!(%error, "pv binder"),
    }
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    podutil::key(&pvc.metadata)
}

/// Maps a write's error: a 409 is a lost race, retried soon.
fn write_err(
    kind: &'static str,
    key: &str,
    what: &'static str,
) -> impl FnOnce(kube::Error) -> Error {
    let key = key.to_string();
    move |source| match source {
        kube::Error::Api(s) if s.code == 409 => Error::Conflict { kind, key, what },
        source => Error::Api {
            kind,
            key,
            what,
            source,
        },
    }
}

fn phase_of_claim(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether `r` points at `pvc` (a reference without uid is a pre-binding by name).
fn refers_to(r: &ObjectReference, pvc: &PersistentVolumeClaim) -> bool {
    r.name.as_deref() == Some(pvc.name_any().as_str())
        && r.namespace.as_deref() == pvc.namespace().as_deref()
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == pvc.uid().as_deref())
}

/// A storage quantity in bytes (`Ki`/`Mi`/... and `k`/`M`/... suffixes, plain numbers).
pub fn bytes(q: &Quantity) -> Option<f64> {
    Some(wasmkube_quantity::parse_nano(&q.0).ok()? as f64 / 1e9)
}

fn storage(map: Option<&BTreeMap<String, Quantity>>) -> Option<f64> {
    map.and_then(|m| m.get("storage")).and_then(bytes)
}

/// Whether a label selector matches `labels` (matchLabels and matchExpressions).
/// An empty selector matches every volume, as upstream's `LabelSelectorAsSelector`.
fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    match podutil::selector(Some(sel)) {
        Ok(None) => true,
        Ok(s) => podutil::matches(&s, Some(labels)),
        Err(_) => false,
    }
}

/// Upstream's `FindMatchingVolume` for a claim without a pre-bound volume: among Available,
/// unclaimed volumes of the claim's class whose capacity, access modes, volume mode and labels
/// fit, the smallest.
pub fn best_match<'a>(
    pvc: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
) -> Option<&'a PersistentVolume> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let want = storage(spec.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0.0);
    let class = spec.storage_class_name.clone().unwrap_or_default();
    let mode = spec
        .volume_mode
        .clone()
        .unwrap_or_else(|| "Filesystem".into());
    let modes = spec.access_modes.clone().unwrap_or_default();
    volumes
        .iter()
        .filter(|pv| pv.metadata.deletion_timestamp.is_none())
        .filter(|pv| phase_of_volume(pv) == "Available")
        .filter_map(|pv| pv.spec.as_ref().map(|s| (pv, s)))
        .filter(|(_, s)| s.claim_ref.is_none())
        .filter(|(_, s)| s.storage_class_name.clone().unwrap_or_default() == class)
        .filter(|(_, s)| s.volume_mode.as_deref().unwrap_or("Filesystem") == mode)
        .filter(|(_, s)| {
            let have = s.access_modes.clone().unwrap_or_default();
            modes.iter().all(|m| have.contains(m))
        })
        .filter(|(pv, _)| {
            spec.selector
                .as_ref()
                .is_none_or(|sel| selector_matches(sel, pv.labels()))
        })
        .filter_map(|(pv, s)| {
            let cap = storage(s.capacity.as_ref())?;
            (cap >= want).then_some((pv, cap))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(pv, _)| pv)
}

impl Ctx {
    async fn event(&self, pvc: &PersistentVolumeClaim, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Binding".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pvc.object_ref(&())).await {
            tracing::debug!(claim = %claim_key(pvc), "writing event {reason}: {e}");
        }
    }

    fn claims(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }
}

async fn reconcile_claim(
    cached: Arc<PersistentVolumeClaim>,
    ctx: Arc<Ctx>,
) -> Result<Action, Error> {
    let key = claim_key(&cached);
    let ns = cached.namespace().unwrap_or_default();
    let err = |what| {
        let key = key.clone();
        move |source| Error::Api {
            kind: "claim",
            key,
            what,
            source,
        }
    };
    // Decide on the current claim, not the cache's copy.
    let Some(pvc) = ctx
        .claims(&ns)
        .get_opt(&cached.name_any())
        .await
        .map_err(err("reading the claim"))?
    else {
        return Ok(Action::await_change());
    };
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    match volume_name {
        Some(v) => sync_bound_claim(&ctx, &pvc, &v).await,
        None => sync_unbound_claim(&ctx, &pvc).await,
    }
}

async fn sync_unbound_claim(ctx: &Ctx, pvc: &PersistentVolumeClaim) -> Result<Action, Error> {
    let key = claim_key(pvc);
    let all = ctx
        .volumes()
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Api {
            kind: "claim",
            key: key.clone(),
            what: "listing volumes",
            source,
        })?
        .items;
    // A volume that already names this claim: provisioned for it, or pre-bound by the user.
    let named = all.iter().find(|pv| {
        pv.spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| refers_to(r, pvc))
            && pv.metadata.deletion_timestamp.is_none()
    });
    let pv = match named {
        Some(pv) => pv,
        None => {
            let class = pvc
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let mut provisioner = None;
            if !class.is_empty() {
                let classes: Api<StorageClass> = Api::all(ctx.client.clone());
                let sc = classes.get_opt(&class).await.map_err(|source| Error::Api {
                    kind: "claim",
                    key: key.clone(),
                    what: "reading its StorageClass",
                    source,
                })?;
                let delayed = sc.as_ref().and_then(|c| c.volume_binding_mode.as_deref())
                    == Some("WaitForFirstConsumer");
                provisioner = sc.map(|c| c.provisioner).filter(|p| p != NO_PROVISIONER);
                if delayed {
                    // The scheduler picks the node; the provisioner then makes the volume.
                    if !pvc.annotations().contains_key(SELECTED_NODE) {
                        ctx.event(pvc, EventType::Normal, "WaitForFirstConsumer", WAITING)
                            .await;
                    } else if let Some(p) = &provisioner {
                        ctx.event(pvc, EventType::Normal, "ExternalProvisioning", &external(p))
                            .await;
                    }
                    return Ok(Action::await_change());
                }
            }
            match best_match(pvc, &all) {
                Some(pv) => pv,
                // Waits for a volume to appear (watched) or a resync.
                None => {
                    if let Some(p) = &provisioner {
                        ctx.event(pvc, EventType::Normal, "ExternalProvisioning", &external(p))
                            .await;
                    }
                    return Ok(Action::requeue(RESYNC));
                }
            }
        }
    };
    bind(ctx, pvc, pv).await
}

/// Binds `pvc` to `pv`: the volume's claimRef first (the compare-and-swap that settles races),
/// then its phase, then the claim's volumeName and status.
async fn bind(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<Action, Error> {
    let key = claim_key(pvc);
    let pv_name = pv.name_any();
    let volumes = ctx.volumes();
    let cref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let claimed = cref.is_some_and(|r| r.uid.as_deref() == pvc.uid().as_deref());
    let pv = if claimed {
        pv.clone()
    } else {
        let mut new = pv.clone();
        if cref.is_none() {
            new.annotations_mut()
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        new.spec.get_or_insert_with(Default::default).claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: pvc.namespace(),
            name: Some(pvc.name_any()),
            uid: pvc.uid(),
            resource_version: pvc.resource_version(),
            ..Default::default()
        });
        // `replace` carries the resourceVersion read: a concurrent binder gets 409.
        volumes
            .replace(&pv_name, &PostParams::default(), &new)
            .await
            .map_err(write_err("claim", &key, "claiming its volume"))?
    };
    if phase_of_volume(&pv) != "Bound" {
        let status = json!({"status": {"phase": "Bound"}});
        volumes
            .patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map_err(write_err("claim", &key, "marking its volume Bound"))?;
    }
    let mut claim = pvc.clone();
    let mut changed = false;
    let spec = claim.spec.get_or_insert_with(Default::default);
    if spec.volume_name.as_deref() != Some(pv_name.as_str()) {
        spec.volume_name = Some(pv_name.clone());
        claim
            .annotations_mut()
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        changed = true;
    }
    if claim.annotations().get(BIND_COMPLETED).map(String::as_str) != Some("yes") {
        claim
            .annotations_mut()
            .insert(BIND_COMPLETED.into(), "yes".into());
        changed = true;
    }
    let ns = pvc.namespace().unwrap_or_default();
    let claims = ctx.claims(&ns);
    let claim = if changed {
        claims
            .replace(&pvc.name_any(), &PostParams::default(), &claim)
            .await
            .map_err(write_err("claim", &key, "setting its volumeName"))?
    } else {
        claim
    };
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let status = claim.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound")
        || status.access_modes != pv_spec.access_modes
        || status.capacity != pv_spec.capacity
    {
        let body = json!({"status": {
            "phase": "Bound",
            "accessModes": pv_spec.access_modes,
            "capacity": pv_spec.capacity,
        }});
        claims
            .patch_status(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(body),
            )
            .await
            .map_err(write_err("claim", &key, "marking it Bound"))?;
    }
    Ok(Action::await_change())
}

async fn sync_bound_claim(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    volume: &str,
) -> Result<Action, Error> {
    let key = claim_key(pvc);
    let pv = ctx
        .volumes()
        .get_opt(volume)
        .await
        .map_err(|source| Error::Api {
            kind: "claim",
            key: key.clone(),
            what: "reading its volume",
            source,
        })?;
    let lost = match &pv {
        None => Some("Bound claim has lost its PersistentVolume. Data on the volume is lost!"),
        Some(pv) => match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            // Pre-bound by the user's volumeName: claim the volume for it.
            None => None,
            Some(r) if refers_to(r, pvc) => None,
            Some(_) => {
                Some("Two claims are bound to the same volume, this one is bound incorrectly")
            }
        },
    };
    match (lost, pv) {
        (Some(note), _) => {
            if phase_of_claim(pvc) != "Lost" {
                let reason = if note.starts_with("Two") {
                    "ClaimMisbound"
                } else {
                    "ClaimLost"
                };
                ctx.event(pvc, EventType::Warning, reason, note).await;
                let body = json!({"status": {"phase": "Lost"}});
                ctx.claims(&pvc.namespace().unwrap_or_default())
                    .patch_status(
                        &pvc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(body),
                    )
                    .await
                    .map_err(write_err("claim", &key, "marking it Lost"))?;
            }
            Ok(Action::await_change())
        }
        (None, Some(pv)) => bind(ctx, pvc, &pv).await,
        (None, None) => Ok(Action::await_change()),
    }
}

async fn reconcile_volume(cached: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = cached.name_any();
    let err = |what| {
        let key = name.clone();
        move |source| Error::Api {
            kind: "volume",
            key,
            what,
            source,
        }
    };
    let volumes = ctx.volumes();
    let Some(pv) = volumes
        .get_opt(&name)
        .await
        .map_err(err("reading the volume"))?
    else {
        return Ok(Action::await_change());
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let phase = phase_of_volume(&pv);
    let set_phase = |phase: &'static str| {
        let volumes = volumes.clone();
        let name = name.clone();
        async move {
            let body = json!({"status": {"phase": phase}});
            volumes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
                .await
                .map_err(write_err("volume", &name, "setting its phase"))
        }
    };
    let Some(cref) = spec.claim_ref.clone() else {
        if phase != "Available" {
            set_phase("Available").await?;
        }
        return Ok(Action::await_change());
    };
    let uid = cref.uid.clone().filter(|u| !u.is_empty());
    let Some(uid) = uid else {
        // Pre-bound by name: waits for its claim, which binds it.
        if phase != "Available" {
            set_phase("Available").await?;
        }
        return Ok(Action::requeue(RESYNC));
    };
    let claim = ctx
        .claims(cref.namespace.as_deref().unwrap_or("default"))
        .get_opt(cref.name.as_deref().unwrap_or_default())
        .await
        .map_err(err("reading its claim"))?
        .filter(|c| c.uid().as_deref() == Some(uid.as_str()));
    if claim.is_some() {
        // Bound or being bound: the claim's reconciler finishes it.
        return Ok(Action::requeue(RESYNC));
    }
    // The claim is gone: release, then reclaim.
    if phase != "Released" && phase != "Failed" {
        set_phase("Released").await?;
    }
    let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
    match spec.persistent_volume_reclaim_policy.as_deref() {
        // Only a volume this cluster provisioned has a deleter (the kubelet removes its
        // directory); upstream fails the others the same way.
        Some("Delete") if !ours => {
            if phase != "Failed" {
                let message = format!(
                    "error getting deleter volume plugin for volume \"{name}\": no deletable \
                     volume plugin matched"
                );
                let body = json!({"status": {"phase": "Failed", "message": message}});
                volumes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
                    .await
                    .map_err(write_err("volume", &name, "marking it Failed"))?;
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "VolumeFailedDelete".into(),
                    note: Some(message),
                    action: "Deleting".into(),
                    secondary: None,
                };
                if let Err(e) = ctx.recorder.publish(&ev, &pv.object_ref(&())).await {
                    tracing::debug!(volume = %name, "writing event VolumeFailedDelete: {e}");
                }
            }
            Ok(Action::await_change())
        }
        Some("Delete") => {
            // Preconditioned on the uid read, so a recreated volume of the same name survives.
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: pv.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match volumes.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(write_err("volume", &name, "deleting it")(e)),
            }
            Ok(Action::await_change())
        }
        // Retain (and Recycle, which upstream removed): the data stays for an administrator.
        _ => Ok(Action::await_change()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(
        name: &str,
        class: &str,
        size: &str,
        modes: &[&str],
        labels: serde_json::Value,
    ) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"storageClassName": class, "capacity": {"storage": size},
                "accessModes": modes, "volumeMode": "Filesystem",
                "hostPath": {"path": "/tmp/x"}},
            "status": {"phase": "Available"},
        }))
        .expect("pv")
    }

    fn claim(
        class: &str,
        size: &str,
        modes: &[&str],
        selector: serde_json::Value,
    ) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "default", "uid": "u"},
            "spec": {"storageClassName": class, "accessModes": modes,
                "resources": {"requests": {"storage": size}}, "selector": selector},
        }))
        .expect("claim")
    }

    #[test]
    fn quantities_read_as_bytes() {
        assert_eq!(bytes(&Quantity("1Gi".into())), Some(1073741824.0));
        assert_eq!(bytes(&Quantity("500M".into())), Some(5e8));
        assert_eq!(bytes(&Quantity("1e3".into())), Some(1000.0));
        assert_eq!(bytes(&Quantity("12".into())), Some(12.0));
        assert_eq!(bytes(&Quantity("1Zi".into())), None);
    }

    #[test]
    fn the_smallest_fitting_volume_of_the_class_matches() {
        let vols = vec![
            pv("big", "manual", "10Gi", &["ReadWriteOnce"], json!({})),
            pv("small", "manual", "2Gi", &["ReadWriteOnce"], json!({})),
            pv("tiny", "manual", "500Mi", &["ReadWriteOnce"], json!({})),
            pv("other-class", "fast", "1Gi", &["ReadWriteOnce"], json!({})),
            pv("rox", "manual", "1Gi", &["ReadOnlyMany"], json!({})),
            pv(
                "labelled",
                "manual",
                "8Gi",
                &["ReadWriteOnce"],
                json!({"tier": "gold"}),
            ),
        ];
        let name = |p: Option<&PersistentVolume>| p.map(|p| p.name_any());
        let c = claim("manual", "1Gi", &["ReadWriteOnce"], serde_json::Value::Null);
        assert_eq!(name(best_match(&c, &vols)), Some("small".into()));
        let c = claim(
            "manual",
            "20Gi",
            &["ReadWriteOnce"],
            serde_json::Value::Null,
        );
        assert_eq!(name(best_match(&c, &vols)), None);
        let c = claim(
            "manual",
            "1Gi",
            &["ReadWriteOnce"],
            json!({"matchLabels": {"tier": "gold"}}),
        );
        assert_eq!(name(best_match(&c, &vols)), Some("labelled".into()));
        let c = claim(
            "manual",
            "1Gi",
            &["ReadWriteOnce", "ReadOnlyMany"],
            serde_json::Value::Null,
        );
        assert_eq!(
            name(best_match(&c, &vols)),
            None,
            "no volume has both modes"
        );
    }
}
