//! The storage plugin: every pod volume becomes a host directory, and every `volumeMount` a
//! WASI preopened directory at its `mountPath` (read-only when the mount, the claim or the
//! volume kind says so). One [`VolumePlugin`] per volume kind prepares the directory;
//! [`PodVolumes`] holds a pod's volumes from the first start to the pod's end.
//!
//! Layout: pod-owned volumes live in `<data_dir>/volumes/<pod uid>/<plugin>/<volume>` (upstream's
//! `kubernetes.io~empty-dir` style names) and are removed with the pod; `hostPath` and
//! `persistentVolumeClaim` volumes point elsewhere and keep their data.
//!
//! A file cannot be a WASI preopen, so a `subPath` (or `hostPath`) naming a file is refused with
//! a clear reason instead of exposing its parent directory (which would show the guest more than
//! the pod asked for).

pub mod atomic;
pub mod config_map;
pub mod downward_api;
pub mod empty_dir;
pub mod host_path;
pub mod paths;
pub mod projected;
pub mod pvc;
pub mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use kube::Client;

use crate::objects::Objects;
pub use crate::runtime::sandbox::Preopen;
use crate::KubeletConfig;

/// Why a volume cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Something it needs is missing or not ready yet (a configMap, an unbound claim): the
    /// container waits in `ContainerCreating` and the mount is retried.
    #[error("{0}")]
    Waiting(String),
    /// Refused for safety or unsupported (a path escaping its root, a hostPath outside the
    /// allowed prefixes, a file where a directory is needed): the pod fails.
    #[error("{0}")]
    Refused(String),
    /// A file-system operation failed (retried like [`VolumeError::Waiting`]).
    #[error("{path}: {source}")]
    Io {
        /// The path the operation was about.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl VolumeError {
    /// Whether retrying cannot help: the pod fails instead of waiting.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// An `Io` error builder for `map_err`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a plugin may use while it sets a volume up.
pub struct Context<'a> {
    /// The kubelet's client (its node credential).
    pub client: &'a Client,
    /// The kubelet's configuration (hostPath prefixes, local-path dir).
    pub config: &'a KubeletConfig,
    /// The configMaps and secrets of the node's pods (watched; no request per read).
    pub objects: &'a Objects,
    /// The pod (its latest version: downwardAPI projects its labels and annotations).
    pub pod: &'a Pod,
    /// The directory reserved for this volume under the pod's volumes dir (not created yet).
    pub dir: &'a Path,
}

impl Context<'_> {
    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The pod's uid (whose references keep objects watched).
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// A set-up volume: the host directory the guest sees and whether it is read-only as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounted {
    /// The volume's directory on the host.
    pub host: PathBuf,
    /// Every mount of it is read-only (configMap, secret, ...; a read-only claim).
    pub read_only: bool,
}

/// One kind of volume (emptyDir, configMap, ...).
pub trait VolumePlugin: Send + Sync {
    /// Upstream's plugin directory name (`kubernetes.io~empty-dir`), which holds such volumes
    /// under a pod's volumes dir.
    fn plugin_dir(&self) -> &'static str;

    /// Prepares the volume (idempotent: called again on every resync when [`Self::refreshes`])
    /// and returns what the guest sees.
    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>>;

    /// Whether the content follows API objects and is re-projected periodically.
    fn refreshes(&self) -> bool {
        false
    }

    /// The eviction message when the volume uses more than it may (emptyDir `sizeLimit`).
    fn over_limit(&self, _dir: &Path) -> Option<String> {
        None
    }
}

/// The plugin for a pod volume, by the source it names.
pub fn plugin_for(volume: &Volume) -> Result<Box<dyn VolumePlugin>, VolumeError> {
    let name = volume.name.clone();
    if let Some(s) = &volume.empty_dir {
        return Ok(Box::new(empty_dir::EmptyDir::new(name, s)));
    }
    if let Some(s) = &volume.config_map {
        return Ok(Box::new(config_map::ConfigMapVolume::new(name, s)));
    }
    if let Some(s) = &volume.secret {
        return Ok(Box::new(secret::SecretVolume::new(name, s)));
    }
    if let Some(s) = &volume.downward_api {
        return Ok(Box::new(downward_api::DownwardApiVolume::new(name, s)));
    }
    if let Some(s) = &volume.projected {
        return Ok(Box::new(projected::ProjectedVolume::new(name, s)));
    }
    if let Some(s) = &volume.host_path {
        return Ok(Box::new(host_path::HostPath::new(name, s)));
    }
    if let Some(s) = &volume.persistent_volume_claim {
        return Ok(Box::new(pvc::ClaimVolume::new(name, s)));
    }
    Err(VolumeError::Refused(format!(
        "volume {:?}: unsupported volume type (a wasm node supports emptyDir, configMap, secret, \
         downwardAPI, projected, hostPath and persistentVolumeClaim)",
        volume.name
    )))
}

/// Where a pod's own volumes live: `<data_dir>/volumes/<uid>`.
pub fn pod_volumes_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("volumes").join(uid)
}

struct Entry {
    plugin: Box<dyn VolumePlugin>,
    dir: PathBuf,
    mounted: Option<Mounted>,
}

/// A pod's volumes: set up once before its first container starts, re-projected while it runs,
/// removed when it ends.
pub struct PodVolumes {
    client: Client,
    config: KubeletConfig,
    objects: Arc<Objects>,
    root: PathBuf,
    entries: tokio::sync::Mutex<BTreeMap<String, Entry>>,
    /// A volume whose source is unsupported (reported at set-up).
    invalid: Option<VolumeError>,
}

impl PodVolumes {
    /// The volumes of `pod` (nothing touches the disk yet).
    pub fn new(client: Client, config: KubeletConfig, objects: Arc<Objects>, pod: &Pod) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let root = pod_volumes_dir(&config.data_dir, &uid);
        let mut entries = BTreeMap::new();
        let mut invalid = None;
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone());
        for v in volumes.into_iter().flatten() {
            match plugin_for(&v) {
                Ok(plugin) => {
                    let dir = root
                        .join(plugin.plugin_dir())
                        .join(paths::escape_name(&v.name));
                    entries.insert(
                        v.name.clone(),
                        Entry {
                            plugin,
                            dir,
                            mounted: None,
                        },
                    );
                }
                Err(e) => invalid = invalid.or(Some(e)),
            }
        }
        Self {
            client,
            config,
            objects,
            root,
            entries: tokio::sync::Mutex::new(entries),
            invalid,
        }
    }

    /// Sets up every volume not set up yet (in name order, stopping at the first failure).
    /// Errors name the volume as upstream's `MountVolume.SetUp failed for volume "x" : ...`.
    pub async fn set_up(&self, pod: &Pod) -> Result<(), VolumeError> {
        if let Some(e) = &self.invalid {
            return Err(VolumeError::Refused(e.to_string()));
        }
        let mut entries = self.entries.lock().await;
        for (name, e) in entries.iter_mut().filter(|(_, e)| e.mounted.is_none()) {
            let ctx = Context {
                client: &self.client,
                config: &self.config,
                objects: &self.objects,
                pod,
                dir: &e.dir,
            };
            let mounted = e
                .plugin
                .set_up(&ctx)
                .await
                .map_err(|err| named(name, err))?;
            e.mounted = Some(mounted);
        }
        Ok(())
    }

    /// Re-projects the volumes that follow API objects (configMap, secret, downwardAPI,
    /// projected). A failure keeps the previous content (as upstream does) and is logged.
    pub async fn refresh(&self, pod: &Pod) {
        let entries = self.entries.lock().await;
        for (name, e) in entries.iter() {
            if e.mounted.is_none() || !e.plugin.refreshes() {
                continue;
            }
            let ctx = Context {
                client: &self.client,
                config: &self.config,
                objects: &self.objects,
                pod,
                dir: &e.dir,
            };
            if let Err(err) = e.plugin.set_up(&ctx).await {
                tracing::warn!(volume = %name, "refreshing volume: {err}");
            }
        }
    }

    /// The eviction message if a volume uses more than its limit.
    pub async fn over_limit(&self) -> Option<String> {
        let entries = self.entries.lock().await;
        entries
            .values()
            .filter(|e| e.mounted.is_some())
            .find_map(|e| e.plugin.over_limit(&e.dir))
    }

    /// The preopens of container `def`: one per volumeMount, `subPath` (or `subPathExpr`
    /// expanded with `env`) resolved inside the volume. Call after [`Self::set_up`].
    pub async fn preopens(
        &self,
        def: &Container,
        env: &[(String, String)],
    ) -> Result<Vec<Preopen>, VolumeError> {
        let entries = self.entries.lock().await;
        let mut out = Vec::new();
        for m in def.volume_mounts.iter().flatten() {
            let Some(mounted) = entries.get(&m.name).and_then(|e| e.mounted.as_ref()) else {
                return Err(VolumeError::Refused(format!(
                    "volumeMount {:?} of container {:?}: the pod has no volume of that name",
                    m.name, def.name
                )));
            };
            let read_only = mounted.read_only || m.read_only.unwrap_or(false);
            let sub = match (&m.sub_path, &m.sub_path_expr) {
                (Some(p), _) if !p.is_empty() => p.clone(),
                (_, Some(expr)) if !expr.is_empty() => crate::supervisor::expand(expr, env),
                _ => String::new(),
            };
            let host = if sub.is_empty() {
                paths::resolve_within(&mounted.host, "", false)
            } else {
                paths::resolve_within(&mounted.host, &sub, !read_only)
            }
            .map_err(|e| {
                VolumeError::Refused(format!(
                    "volumeMount {:?} (subPath {sub:?}) of container {:?}: {e}",
                    m.name, def.name
                ))
            })?;
            if !host.is_dir() {
                return Err(VolumeError::Refused(format!(
                    "volumeMount {:?} (subPath {sub:?}) of container {:?}: {} is not a directory; \
                     WASI preopens are directories, so mount the volume (or a sub-directory) and \
                     read the file inside it",
                    m.name,
                    def.name,
                    host.display()
                )));
            }
            out.push(Preopen {
                host,
                guest: m.mount_path.clone(),
                read_only,
            });
        }
        Ok(out)
    }

    /// Removes the pod's own volumes (emptyDir and projections). hostPath and PVC data live
    /// outside this directory and stay. Symlinks inside are removed, never followed.
    pub fn tear_down(&self) -> Result<(), VolumeError> {
        tear_down_dir(&self.root)
    }
}

/// Removes a pod volumes dir (no error when it does not exist).
pub fn tear_down_dir(root: &Path) -> Result<(), VolumeError> {
    match std::fs::remove_dir_all(root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(root)(e)),
        _ => Ok(()),
    }
}

/// Prefixes an error with the volume name, as upstream's FailedMount events do.
fn named(volume: &str, e: VolumeError) -> VolumeError {
    let text = format!("MountVolume.SetUp failed for volume {volume:?} : {e}");
    match e {
        VolumeError::Refused(_) => VolumeError::Refused(text),
        _ => VolumeError::Waiting(text),
    }
}

/// The kubelet's storage housekeeping until `shutdown`: every `volume_sync_interval`, removes
/// the data of deleted local-path PVs and the volumes of pods gone while it was not looking.
pub async fn housekeeping(
    client: Client,
    config: KubeletConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(config.volume_sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pvc::sweep(&client, &config).await {
            tracing::debug!("storage housekeeping: {e}");
        }
    }
}
