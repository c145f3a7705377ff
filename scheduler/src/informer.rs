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
    let api: Api<Pod> = Api::all(client);
    // Upstream's informer selects `status.phase!=Succeeded,status.phase!=Failed`; the loop
    // drops finished pods instead, because a field-selected watch makes the apiserver decode
    // each modified pod's previous version to tell whether it left the selection.
    let cfg = watcher::Config::default();
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut seen: Option<HashSet<PodKey>> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return Ok(()) };
        let input = match ev {
            Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                if let Some(s) = seen.as_mut() {
                    s.insert(pod_key(&p));
                }
                match PodInfo::new(Arc::new(p)) {
                    Ok(info) => Input::PodApply(Arc::new(info)),
                    Err(e) => {
                        tracing::warn!("ignoring pod: {e}");
                        continue;
                    }
                }
            }
            Ok(Event::Delete(p)) => Input::PodDelete(pod_key(&p)),
            Ok(Event::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(Event::InitDone) => Input::PodsSynced(seen.take().unwrap_or_default()),
            Err(e) => {
                tracing::warn!("pod watch: {e}");
                continue;
            }
        };
        tx.send(input).map_err(|_| InformerError::LoopGone)?;
    }
}

/// Watches nodes.
pub async fn nodes(
    client: kube::Client,
    tx: Sender<Input>,
    stop: CancellationToken,
) -> Result<(), InformerError> {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: Option<HashSet<String>> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return Ok(()) };
        let input = match ev {
            Ok(Event::Apply(n)) | Ok(Event::InitApply(n)) => {
                if let Some(s) = seen.as_mut() {
                    s.insert(n.name_any());
                }
                match NodeSpec::new(Arc::new(n)) {
                    Ok(spec) => Input::NodeApply(spec),
                    Err(e) => {
                        tracing::warn!("ignoring node: {e}");
                        continue;
                    }
                }
            }
            Ok(Event::Delete(n)) => Input::NodeDelete(n.name_any()),
            Ok(Event::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(Event::InitDone) => Input::NodesSynced(seen.take().unwrap_or_default()),
            Err(e) => {
                tracing::warn!("node watch: {e}");
                continue;
            }
        };
        tx.send(input).map_err(|_| InformerError::LoopGone)?;
    }
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
    let api: Api<K> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let key = |o: &K| match o.namespace() {
        Some(ns) => crate::volumes::claim_key(&ns, &o.name_any()),
        None => o.name_any(),
    };
    let mut seen: Option<HashSet<String>> = None;
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
                Input::VolumeApply(wrap(Arc::new(o)))
            }
            Ok(Event::Delete(o)) => Input::VolumeDelete(kind, key(&o)),
            Ok(Event::Init) => {
                seen = Some(HashSet::new());
                continue;
            }
            Ok(Event::InitDone) => Input::VolumesSynced(kind, seen.take().unwrap_or_default()),
            Err(e) => {
                tracing::warn!("{kind:?} watch: {e}");
                continue;
            }
        };
        tx.send(input).map_err(|_| InformerError::LoopGone)?;
    }
}
