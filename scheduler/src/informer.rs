//! Informers: kube-runtime watchers on pods, nodes and storage objects, whose objects are
//! parsed here (on the async runtime, off the scheduling thread) and handed to the scheduling
//! loop as [`Input`]s.
//! A relist ends with the set of names seen, so the loop can drop what vanished meanwhile.

use std::collections::HashSet;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;

use crate::info::{NodeSpec, PodInfo, PodKey};
use crate::scheduler::Input;
use crate::volumes::{VolumeKind, VolumeObject};

/// An informer whose loop could not hand events over (the scheduling loop ended).
#[derive(Debug, thiserror::Error)]
pub enum InformerError {
    #[error("the scheduling loop stopped")]
    LoopGone,
}

fn pod_key(p: &Pod) -> PodKey {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Watches all pods (finished ones are dropped by the loop).
pub async fn pods(
    client: kube::Client,
    tx: Sender<Input>,
    stop: CancellationToken,
) -> Result<(), InformerError> {
    // Upstream's informer selects `status.phase!=Succeeded,status.phase!=Failed`; the loop
    // drops finished pods instead, because a field-selected watch makes the apiserver decode
    // each modified pod's previous version to tell whether it left the selection.
    relay(
        Api::<Pod>::all(client),
        tx,
        stop,
        "pod",
        pod_key,
        |p| PodInfo::new(Arc::new(p)).map(|info| Input::PodApply(Arc::new(info))),
        Input::PodDelete,
        Input::PodsSynced,
    )
    .await
}

/// Watches nodes.
pub async fn nodes(
    client: kube::Client,
    tx: Sender<Input>,
    stop: CancellationToken,
) -> Result<(), InformerError> {
    relay(
        Api::<Node>::all(client),
        tx,
        stop,
        "node",
        |n: &Node| n.name_any(),
        |n| NodeSpec::new(Arc::new(n)).map(Input::NodeApply),
        Input::NodeDelete,
        Input::NodesSynced,
    )
    .await
}

/// Watches one kind of storage object (claims, volumes or classes) for the VolumeBinding
/// plugin; `wrap` tags each object with its kind.
pub async fn volumes<K>(
    client: kube::Client,
    tx: Sender<Input>,
    stop: CancellationToken,
    kind: VolumeKind,
    wrap: fn(Arc<K>) -> VolumeObject,
) -> Result<(), InformerError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    relay(
        Api::<K>::all(client),
        tx,
        stop,
        &format!("{kind:?}"),
        |o: &K| match o.namespace() {
            Some(ns) => crate::volumes::claim_key(&ns, &o.name_any()),
            None => o.name_any(),
        },
        |o| Ok::<_, std::convert::Infallible>(Input::VolumeApply(wrap(Arc::new(o)))),
        |key| Input::VolumeDelete(kind, key),
        |seen| Input::VolumesSynced(kind, seen),
    )
    .await
}

/// The loop every informer runs: watch `api` until `stop`, turn each object into an input with
/// `apply` (objects it refuses are logged and skipped), deletions into `delete(key)`, and each
/// relist into `synced(keys seen)`, and hand them to the scheduling loop.
#[allow(clippy::too_many_arguments)]
async fn relay<K, Key, E>(
    api: Api<K>,
    tx: Sender<Input>,
    stop: CancellationToken,
    what: &str,
    key: impl Fn(&K) -> Key,
    apply: impl Fn(K) -> Result<Input, E>,
    delete: impl Fn(Key) -> Input,
    synced: impl Fn(HashSet<Key>) -> Input,
) -> Result<(), InformerError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    Key: Eq + std::hash::Hash,
    E: std::fmt::Display,
{
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: Option<HashSet<Key>> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return Ok(()) };
        let input = match ev {
            Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
                if let Some(s) = seen.as_mut() {
                    s.insert(key(&o));
                }
                match apply(o) {
                    Ok(input) => input,
                    Err(e) => {
                        tracing::warn!("ignoring {what}: {e}");
                        continue;
                    }
                }
            }
            Ok(Event::Delete(o)) => delete(key(&o)),
            Ok(Event::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(Event::InitDone) => synced(seen.take().unwrap_or_default()),
            Err(e) => {
                tracing::warn!("{what} watch: {e}");
                continue;
            }
        };
        tx.send(input).map_err(|_| InformerError::LoopGone)?;
    }
}
