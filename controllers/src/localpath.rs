//! Local-path provisioner (like k3s's): a claim of a class whose provisioner is
//! `wasmkube.dev/local-path` gets a PersistentVolume that is a directory on the node the
//! scheduler picked for its first pod (`volume.kubernetes.io/selected-node`), pinned to that node
//! by `nodeAffinity`. The kubelet creates the directory on first mount and removes it once the
//! PersistentVolume is gone. Binding the claim to the volume is the binder's job (`pvbinder`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LocalVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::ControllerConfig;

/// The provisioner name in StorageClasses and on the volumes it creates.
pub const PROVISIONER: &str = "wasmkube.dev/local-path";
/// The StorageClass the controller-manager creates at startup.
pub const CLASS: &str = "local-path";
/// Node annotation: the absolute directory under which the node keeps local-path volumes.
pub const DIR_ANNOTATION: &str = "wasmkube.dev/local-path-dir";
/// Claim annotation the scheduler sets to the node of the claim's first pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Claim annotation naming the provisioner in charge.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta form of [`STORAGE_PROVISIONER`], which upstream still sets too.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Volume annotation naming the provisioner that created it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// StorageClass annotation marking the default class.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The node label volumes are pinned by.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// How soon a claim that could not be provisioned is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Why a claim could not be provisioned this time (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("claim {key}: {what}: {source}")]
    Api {
        key: String,
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("creating StorageClass {CLASS}: {0}")]
    Bootstrap(#[source] kube::Error),
}

/// What each reconcile gets: the client and the event recorder.
pub struct Ctx {
    client: Client,
    recorder: Recorder,
}

/// The StorageClass `local-path` as k3s ships it: the default class, WaitForFirstConsumer.
pub fn default_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            annotations: Some(BTreeMap::from([(DEFAULT_CLASS.into(), "true".into())])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// Creates the `local-path` StorageClass unless one exists (a user's edits are kept).
pub async fn ensure_class(client: &Client) -> Result<(), Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    match api.create(&PostParams::default(), &default_class()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::Bootstrap(e)),
    }
}

/// Runs the provisioner until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    if let Err(e) = ensure_class(&client).await {
        tracing::warn!("{e}");
    }
    let recorder = Recorder::new(client.clone(), PROVISIONER.into());
    let controller = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let claims = controller.store();
    controller
        // A node that gets its local-path directory annotation unblocks the claims waiting for
        // it; they are retried on a timer too, so this only shortens the wait.
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |node| {
                let name = node.name_any();
                claims
                    .state()
                    .iter()
                    .filter(|c| c.spec.as_ref().is_some_and(|s| s.volume_name.is_none()))
                    .filter(|c| c.annotations().get(SELECTED_NODE) == Some(&name))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(Ctx { client, recorder }))
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "local-path reconcile failed");
            }
        })
        .await;
}

fn error_policy(_pvc: Arc<PersistentVolumeClaim>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "local-path provisioner");
    Action::requeue(RETRY)
}

fn key(pvc: &PersistentVolumeClaim) -> String {
    format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any())
}

/// The volume name for a claim, as upstream's provisioners name them.
pub fn volume_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.uid().unwrap_or_default())
}

/// Why a claim cannot get a local-path volume (the `ProvisioningFailed` event's message).
fn check_access_modes(pvc: &PersistentVolumeClaim) -> Result<(), String> {
    let modes = pvc
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    match modes
        .iter()
        .find(|m| !matches!(m.as_str(), "ReadWriteOnce" | "ReadWriteOncePod"))
    {
        Some(m) => Err(format!(
            "access mode {m} is not supported: a local-path volume is a directory on one node, \
             so only ReadWriteOnce and ReadWriteOncePod are"
        )),
        None => Ok(()),
    }
}

/// The volume for `pvc` in `dir` on `node`.
pub fn build_volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    dir: &str,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let name = volume_name(pvc);
    let ns = pvc.namespace().unwrap_or_default();
    let path = format!(
        "{}/{name}_{ns}_{}",
        dir.trim_end_matches('/'),
        pvc.name_any()
    );
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.into(),
                PROVISIONER.into(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: spec.resources.as_ref().and_then(|r| r.requests.clone()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns),
                name: Some(pvc.name_any()),
                uid: pvc.uid(),
                ..Default::default()
            }),
            local: Some(LocalVolumeSource {
                path,
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: spec.volume_mode.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

impl Ctx {
    async fn event(
        &self,
        pvc: &PersistentVolumeClaim,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Provisioning".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pvc.object_ref(&())).await {
            tracing::debug!(claim = %key(pvc), "writing event {reason}: {e}");
        }
    }

    async fn failed(&self, pvc: &PersistentVolumeClaim, class: &str, why: String) -> Action {
        let note = format!("failed to provision volume with StorageClass \"{class}\": {why}");
        self.event(pvc, EventType::Warning, "ProvisioningFailed", note)
            .await;
        Action::requeue(RETRY)
    }
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let pending = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    if pvc.metadata.deletion_timestamp.is_some()
        || !pending
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
    {
        return Ok(Action::await_change());
    }
    let Some(class_name) = spec.storage_class_name.filter(|c| !c.is_empty()) else {
        return Ok(Action::await_change());
    };
    let k = key(&pvc);
    let api_err = |what| {
        let k = k.clone();
        move |source| Error::Api {
            key: k,
            what,
            source,
        }
    };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let Some(class) = classes
        .get_opt(&class_name)
        .await
        .map_err(api_err("reading its StorageClass"))?
    else {
        return Ok(Action::await_change());
    };
    if class.provisioner != PROVISIONER {
        return Ok(Action::await_change());
    }
    let annotations = pvc.annotations();
    let Some(node) = annotations.get(SELECTED_NODE).cloned() else {
        if class.volume_binding_mode.as_deref() != Some("WaitForFirstConsumer") {
            return Ok(ctx
                .failed(
                    &pvc,
                    &class_name,
                    "configuration error, no node was specified: a local-path class needs \
                     volumeBindingMode WaitForFirstConsumer"
                        .into(),
                )
                .await);
        }
        // Waits for the scheduler to pick its first pod's node.
        return Ok(Action::await_change());
    };
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    if annotations.get(STORAGE_PROVISIONER).map(String::as_str) != Some(PROVISIONER)
        || annotations
            .get(BETA_STORAGE_PROVISIONER)
            .map(String::as_str)
            != Some(PROVISIONER)
    {
        let patch = json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: PROVISIONER,
            BETA_STORAGE_PROVISIONER: PROVISIONER,
        }}});
        claims
            .patch(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(api_err("annotating the provisioner"))?;
    }
    if let Err(why) = check_access_modes(&pvc) {
        return Ok(ctx.failed(&pvc, &class_name, why).await);
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = volume_name(&pvc);
    if volumes
        .get_opt(&name)
        .await
        .map_err(api_err("reading its volume"))?
        .is_some()
    {
        return Ok(Action::await_change());
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let Some(n) = nodes
        .get_opt(&node)
        .await
        .map_err(api_err("reading the selected node"))?
    else {
        let why = format!("selected node {node:?} does not exist");
        return Ok(ctx.failed(&pvc, &class_name, why).await);
    };
    let Some(dir) = n
        .annotations()
        .get(DIR_ANNOTATION)
        .filter(|d| d.starts_with('/'))
        .cloned()
    else {
        let why = format!(
            "node {node:?} has no {DIR_ANNOTATION} annotation (an absolute directory): its \
             kubelet does not offer local-path volumes yet"
        );
        return Ok(ctx.failed(&pvc, &class_name, why).await);
    };
    let pv = build_volume(&pvc, &class, &node, &dir);
    match volumes.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            let note = format!("Successfully provisioned volume {name}");
            ctx.event(&pvc, EventType::Normal, "ProvisioningSucceeded", note)
                .await;
        }
        // Created by an earlier attempt whose answer was lost.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(api_err("creating its volume")(e)),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "web", "uid": "u-1"},
            "spec": {"accessModes": modes, "volumeMode": "Filesystem",
                "resources": {"requests": {"storage": "2Gi"}}},
        }))
        .expect("claim")
    }

    #[test]
    fn volume_is_a_dir_on_the_selected_node_for_the_claim() {
        let pv = build_volume(
            &claim(&["ReadWriteOnce"]),
            &default_class(),
            "n1",
            "/var/lp/",
        );
        let spec = pv.spec.expect("spec");
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        assert_eq!(spec.local.expect("local").path, "/var/lp/pvc-u-1_web_data");
        let term = &spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms[0];
        let req = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (req.key.as_str(), req.operator.as_str()),
            (HOSTNAME_LABEL, "In")
        );
        assert_eq!(req.values.as_deref(), Some(&["n1".to_string()][..]));
        assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
        let cref = spec.claim_ref.unwrap();
        assert_eq!(cref.uid.as_deref(), Some("u-1"));
        assert_eq!(cref.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some(CLASS));
    }

    #[test]
    fn only_single_node_access_modes_are_provisioned() {
        assert!(check_access_modes(&claim(&["ReadWriteOnce"])).is_ok());
        assert!(check_access_modes(&claim(&["ReadWriteOncePod"])).is_ok());
        let err = check_access_modes(&claim(&["ReadWriteMany"])).unwrap_err();
        assert!(err.contains("ReadWriteMany is not supported"), "{err}");
    }
}
