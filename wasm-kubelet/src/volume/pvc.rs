//! `persistentVolumeClaim` volumes and the kubelet side of the local-path provisioner.
//!
//! The claim must be bound (`spec.volumeName` and `status.phase: Bound`); its PV's directory is
//! `spec.local.path` or `spec.hostPath.path`. A PV under this node's local-path dir is created
//! when missing; any other PV path must exist, and a hostPath PV outside the local-path dir is
//! subject to the allowed hostPath prefixes. Data survives the pod. Directories of PVs the
//! local-path provisioner made for this node are removed by [`sweep`] once their PV is gone.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
};
use kube::api::ListParams;
use kube::{Api, Client};

use super::{host_path, io_err, paths, Context, Mounted, VolumeError, VolumePlugin};
use crate::KubeletConfig;

/// The Node annotation announcing the node's local-path root.
pub const LOCAL_PATH_DIR_ANNOTATION: &str = "wasmkube.dev/local-path-dir";
/// The PV annotation upstream provisioners set.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The local-path provisioner's name.
pub const LOCAL_PATH_PROVISIONER: &str = "wasmkube.dev/local-path";

/// A `persistentVolumeClaim` volume.
pub struct ClaimVolume {
    source: PersistentVolumeClaimVolumeSource,
}

impl ClaimVolume {
    /// The plugin for volume `_name` with `source`.
    pub fn new(_name: String, source: &PersistentVolumeClaimVolumeSource) -> Self {
        Self {
            source: source.clone(),
        }
    }
}

impl VolumePlugin for ClaimVolume {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~local-volume"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            let claim = &self.source.claim_name;
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), ctx.namespace());
            let pvc = claims
                .get_opt(claim)
                .await
                .map_err(|e| VolumeError::Waiting(format!("persistentvolumeclaim {claim:?}: {e}")))?
                .ok_or_else(|| {
                    VolumeError::Waiting(format!("persistentvolumeclaim {claim:?} not found"))
                })?;
            if pvc.metadata.deletion_timestamp.is_some() {
                // As upstream's volume manager: a pod must not start on a claim being deleted
                // (it would hold the claim, and its data, from going).
                return Err(VolumeError::Waiting(format!(
                    "can't start pod because PVC {}/{claim} is being deleted",
                    ctx.namespace()
                )));
            }
            let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
            let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            let Some(volume_name) = volume_name.filter(|v| !v.is_empty() && bound) else {
                return Err(VolumeError::Waiting(format!(
                    "persistentvolumeclaim {claim:?} is not bound"
                )));
            };
            let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
            let pv = pvs
                .get_opt(&volume_name)
                .await
                .map_err(|e| {
                    VolumeError::Waiting(format!("persistentvolume {volume_name:?}: {e}"))
                })?
                .ok_or_else(|| {
                    VolumeError::Waiting(format!("persistentvolume {volume_name:?} not found"))
                })?;
            let host = resolve_pv(ctx.config, &pv)?;
            record_provisioned(ctx.config, &pv);
            Ok(Mounted {
                host,
                read_only: self.source.read_only.unwrap_or(false),
            })
        })
    }
}

/// The directory of a PV on this node, created when it lies under the local-path dir.
pub fn resolve_pv(config: &KubeletConfig, pv: &PersistentVolume) -> Result<PathBuf, VolumeError> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv.spec.as_ref();
    let local = spec.and_then(|s| s.local.as_ref()).map(|l| l.path.clone());
    let host = spec
        .and_then(|s| s.host_path.as_ref())
        .map(|h| h.path.clone());
    let Some(path) = local.clone().or(host) else {
        return Err(VolumeError::Refused(format!(
            "persistentvolume {name:?}: only local and hostPath volumes can be mounted on a wasm \
             node"
        )));
    };
    let path = PathBuf::from(path);
    let root = &config.local_path_dir;
    if path.starts_with(root) && path != *root {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let rel = path
            .strip_prefix(root)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        let real = paths::resolve_within(root, &rel, true).map_err(|e| match e {
            VolumeError::Refused(why) => VolumeError::Refused(format!(
                "persistentvolume {name:?}: {why} (local-path dir {})",
                root.display()
            )),
            other => other,
        })?;
        return dir_or_refuse(name, real);
    }
    if local.is_some() {
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(VolumeError::Refused(format!(
                "persistentvolume {name:?}: path {} must not contain '..'",
                path.display()
            )));
        }
        let real = std::fs::canonicalize(&path).map_err(|_| {
            VolumeError::Waiting(format!(
                "persistentvolume {name:?}: path {} does not exist on this node",
                path.display()
            ))
        })?;
        return dir_or_refuse(name, real);
    }
    host_path::resolve(&path, "Directory", &config.host_path_prefixes).map_err(|e| match e {
        VolumeError::Refused(why) => {
            VolumeError::Refused(format!("persistentvolume {name:?}: {why}"))
        }
        other => other,
    })
}

fn dir_or_refuse(name: &str, real: PathBuf) -> Result<PathBuf, VolumeError> {
    if real.is_dir() {
        Ok(real)
    } else {
        Err(VolumeError::Refused(format!(
            "persistentvolume {name:?}: {} is not a directory",
            real.display()
        )))
    }
}

/// Where the kubelet remembers the local-path PVs it has seen: one file per PV holding its path.
fn records_dir(config: &KubeletConfig) -> PathBuf {
    config.data_dir.join("local-path-pvs")
}

fn provisioned_path(config: &KubeletConfig, pv: &PersistentVolume) -> Option<PathBuf> {
    let by = pv.metadata.annotations.as_ref()?.get(PROVISIONED_BY)?;
    if by != LOCAL_PATH_PROVISIONER {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    let path = spec
        .local
        .as_ref()
        .map(|l| l.path.clone())
        .or_else(|| spec.host_path.as_ref().map(|h| h.path.clone()))?;
    let path = PathBuf::from(path);
    (path.starts_with(&config.local_path_dir) && path != config.local_path_dir).then_some(path)
}

/// Remembers a provisioned PV's directory so it can be removed after the PV is deleted.
fn record_provisioned(config: &KubeletConfig, pv: &PersistentVolume) {
    let (Some(name), Some(path)) = (pv.metadata.name.as_deref(), provisioned_path(config, pv))
    else {
        return;
    };
    let dir = records_dir(config);
    let record = dir.join(paths::escape_name(name));
    if record.exists() {
        return;
    }
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&record, path.to_string_lossy().as_bytes()));
    if let Err(e) = written {
        tracing::warn!(pv = name, "recording local-path volume: {e}");
    }
}

/// One pass of the kubelet's storage housekeeping: removes the directories of local-path PVs
/// that no longer exist (reclaimPolicy Delete: the provisioner deletes the PV, the node its
/// data) and the volumes dirs of pods no longer bound to this node.
pub async fn sweep(client: &Client, config: &KubeletConfig) -> Result<(), kube::Error> {
    let started = std::time::SystemTime::now();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let list = pvs.list(&ListParams::default()).await?;
    let mut names = std::collections::HashSet::new();
    for pv in &list.items {
        record_provisioned(config, pv);
        if let Some(n) = &pv.metadata.name {
            names.insert(paths::escape_name(n));
        }
    }
    let records = records_dir(config);
    for entry in std::fs::read_dir(&records).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if names.contains(&file) {
            continue;
        }
        let Ok(path) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        remove_local_path_dir(config, Path::new(path.trim()));
        let _ = std::fs::remove_file(entry.path());
    }

    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", config.node_name);
    let on_node = pods.list(&ListParams::default().fields(&selector)).await?;
    let uids: std::collections::HashSet<String> = on_node
        .items
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let volumes = config.data_dir.join("volumes");
    for entry in std::fs::read_dir(&volumes).into_iter().flatten().flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        // A dir made after the list started may belong to a pod the list did not show yet.
        let older = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < started);
        if !uids.contains(&uid) && older {
            if let Err(e) = super::tear_down_dir(&entry.path()) {
                tracing::warn!("removing orphaned pod volumes: {e}");
            }
        }
    }
    Ok(())
}

/// Removes a provisioned PV's directory, only if it is (still) strictly inside the local-path
/// dir once symlinks are resolved.
fn remove_local_path_dir(config: &KubeletConfig, path: &Path) {
    let (Ok(root), Ok(real)) = (
        std::fs::canonicalize(&config.local_path_dir),
        std::fs::canonicalize(path),
    ) else {
        return;
    };
    if real.starts_with(&root) && real != root {
        match std::fs::remove_dir_all(&real) {
            Ok(()) => tracing::info!(path = %real.display(), "removed local-path volume"),
            Err(e) => tracing::warn!(path = %real.display(), "removing local-path volume: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(json: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn local_path_pvs_are_created_and_symlinks_out_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = KubeletConfig::new("n", dir.path().join("node"));
        let root = config.local_path_dir.clone();
        let made = resolve_pv(
            &config,
            &pv(serde_json::json!({"metadata": {"name": "a"},
                "spec": {"local": {"path": root.join("pvc-a")}}})),
        )
        .unwrap();
        assert!(made.is_dir());

        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        let e = resolve_pv(
            &config,
            &pv(serde_json::json!({"metadata": {"name": "e"},
                "spec": {"local": {"path": root.join("evil")}}})),
        )
        .unwrap_err();
        assert!(e.is_refusal(), "{e}");

        // hostPath PVs elsewhere follow the hostPath rules; local PVs elsewhere must exist.
        let e = resolve_pv(
            &config,
            &pv(serde_json::json!({"metadata": {"name": "h"},
                "spec": {"hostPath": {"path": outside}}})),
        )
        .unwrap_err();
        assert!(
            e.is_refusal() && e.to_string().contains("allowed prefix"),
            "{e}"
        );
        let e = resolve_pv(
            &config,
            &pv(serde_json::json!({"metadata": {"name": "l"},
                "spec": {"local": {"path": dir.path().join("missing")}}})),
        )
        .unwrap_err();
        assert!(!e.is_refusal(), "{e}");
    }

    #[test]
    fn only_provisioned_pvs_under_the_local_path_dir_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let config = KubeletConfig::new("n", dir.path().join("node"));
        let root = config.local_path_dir.clone();
        let ours = pv(serde_json::json!({"metadata": {"name": "p",
            "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER}},
            "spec": {"local": {"path": root.join("pvc-1")}}}));
        assert_eq!(provisioned_path(&config, &ours), Some(root.join("pvc-1")));
        let manual = pv(serde_json::json!({"metadata": {"name": "m"},
            "spec": {"local": {"path": root.join("pvc-2")}}}));
        assert_eq!(provisioned_path(&config, &manual), None);
        let elsewhere = pv(serde_json::json!({"metadata": {"name": "x",
            "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER}},
            "spec": {"local": {"path": "/etc"}}}));
        assert_eq!(provisioned_path(&config, &elsewhere), None);

        std::fs::create_dir_all(root.join("pvc-1")).unwrap();
        record_provisioned(&config, &ours);
        remove_local_path_dir(&config, &root.join("pvc-1"));
        assert!(!root.join("pvc-1").exists());
        remove_local_path_dir(&config, &root);
        assert!(root.exists(), "the root itself is never removed");
    }
}
