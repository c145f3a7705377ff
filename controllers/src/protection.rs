//! Storage object in-use protection: upstream's pvc-protection and pv-protection controllers.
//!
//! A claim carries `kubernetes.io/pvc-protection` (added at create by the apiserver's
//! StorageObjectInUseProtection admission, or here for claims created before it) until it is
//! being deleted and no scheduled pod references it; a volume carries
//! `kubernetes.io/pv-protection` until it is being deleted and no longer `Bound`. Deleting a
//! claim that a running pod writes to therefore leaves it `Terminating` until the pod is gone,
//! and its volume (reclaim policy `Delete`) is never removed under the pod.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::{finalizers, ControllerConfig};

/// The finalizer that keeps a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

#[derive(Debug, thiserror::Error)]
#[error("{kind} {key}: {what}: {source}")]
pub struct Error {
    kind: &'static str,
    key: String,
    what: &'static str,
    #[source]
    source: kube::Error,
}

pub struct Ctx {
    client: Client,
}

/// Runs both controllers until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    // A pod that goes away (or is created) may be the last (or a new) user of its claims.
    .watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod| {
            let ns = pod.namespace().unwrap_or_default();
            claims_of(&pod)
                .map(|c| ObjectRef::<PersistentVolumeClaim>::new(c).within(&ns))
                .collect::<Vec<_>>()
        },
    )
    .with_config(Config::default().concurrency(config.concurrency))
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(reconcile_claim, error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "pvc-protection reconcile failed");
        }
    });
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(config.concurrency))
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile_volume, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "pv-protection reconcile failed");
        }
    });
    tokio::join!(claims, volumes);
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "storage object protection");
    Action::requeue(Duration::from_secs(2))
}

/// The claims pod `pod` mounts.
fn claims_of(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// Upstream's `podUsesPVC`: a scheduled pod that names the claim (whatever its phase: its
/// node may still be writing). An unscheduled pod cannot start with a claim being deleted, as
/// the scheduler refuses it.
fn uses(pod: &Pod, claim: &str) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    scheduled && claims_of(pod).any(|c| c == claim)
}

async fn reconcile_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let err = |what, source| Error {
        kind: "persistentvolumeclaim",
        key: format!("{ns}/{name}"),
        what,
        source,
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    if pvc.metadata.deletion_timestamp.is_none() {
        // Claims created before the admission existed get it here.
        return match finalizers::add(&api, pvc.as_ref(), PVC_PROTECTION).await {
            Err(e) if !finalizers::changed(&e) => Err(err("adding its finalizer", e)),
            _ => Ok(Action::await_change()),
        };
    }
    if !finalizers::has(pvc.as_ref(), PVC_PROTECTION) {
        return Ok(Action::await_change());
    }
    // Asked live, not from a cache: a pod bound a moment ago must count (as upstream asks the
    // apiserver before it lets a claim go).
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| err("listing pods", e))?;
    if let Some(pod) = list.items.iter().find(|p| uses(p, &name)) {
        tracing::debug!(claim = %format!("{ns}/{name}"), pod = %pod.name_any(), "claim still in use");
        // That pod's deletion brings the claim back here.
        return Ok(Action::await_change());
    }
    match finalizers::remove(&api, pvc.as_ref(), PVC_PROTECTION).await {
        Err(e) if !finalizers::changed(&e) => Err(err("removing its finalizer", e)),
        _ => Ok(Action::await_change()),
    }
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let err = |what, source| Error {
        kind: "persistentvolume",
        key: pv.name_any(),
        what,
        source,
    };
    let result = if pv.metadata.deletion_timestamp.is_none() {
        finalizers::add(&api, pv.as_ref(), PV_PROTECTION)
            .await
            .map_err(|e| ("adding its finalizer", e))
    } else {
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound {
            // The binder releases it once its claim is gone; that update comes back here.
            return Ok(Action::await_change());
        }
        finalizers::remove(&api, pv.as_ref(), PV_PROTECTION)
            .await
            .map_err(|e| ("removing its finalizer", e))
    };
    match result {
        Err((what, e)) if !finalizers::changed(&e) => Err(err(what, e)),
        _ => Ok(Action::await_change()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: Option<&str>, claim: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": node, "containers": [{"name": "c"}],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}},
                                 {"name": "e", "emptyDir": {}}]}
        }))
        .unwrap()
    }

    #[test]
    fn only_scheduled_pods_naming_the_claim_use_it() {
        assert!(uses(&pod(Some("n1"), "data"), "data"));
        assert!(!uses(&pod(Some("n1"), "other"), "data"));
        assert!(!uses(&pod(None, "data"), "data"));
        assert!(!uses(&pod(Some(""), "data"), "data"));
        assert_eq!(
            claims_of(&pod(None, "data")).collect::<Vec<_>>(),
            vec!["data"]
        );
    }
}
