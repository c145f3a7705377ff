//! Helpers shared by the controllers: informers, owner references, selectors and pod state.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{self, ObjectRef, Store};

use crate::expectations::Expectations;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;

/// A cache of every `K` in the cluster plus the stream of objects it saw change (for
/// `Controller::watches_stream`). `hook` sees each watch event *before* the cache applies it, so
/// it can tell an add (not yet in the store) from an update; `lag` delays every event (tests).
pub fn informer<K, F>(
    api: Api<K>,
    lag: Duration,
    mut hook: F,
) -> (Store<K>, BoxStream<'static, Result<K, watcher::Error>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(&watcher::Event<K>, &Store<K>) + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let events = delayed(
        watcher(api, watcher::Config::default()).default_backoff(),
        lag,
    );
    let seen = reader.clone();
    let events = events.inspect(move |ev| {
        if let Ok(ev) = ev {
            hook(ev, &seen);
        }
    });
    let touched = reflector::reflector(writer, events)
        .touched_objects()
        .boxed();
    (reader, touched)
}

/// Delivers each item of `stream` `lag` after it arrived (a fixed latency, not a throttle).
fn delayed<T: Send + 'static>(
    stream: impl Stream<Item = T> + Send + 'static,
    lag: Duration,
) -> BoxStream<'static, T> {
    if lag.is_zero() {
        return stream.boxed();
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send((tokio::time::Instant::now() + lag, item)).is_err() {
                return; // the consumer is gone
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let (at, item) = rx.recv().await?;
        tokio::time::sleep_until(at).await;
        Some((item, rx))
    })
    .boxed()
}

/// Lowers the expectations of the pod's controller (of kind `kind`) when its creation or
/// deletion reaches the cache. Called before the cache applies `event`, so a pod absent from
/// `cache` is an add.
pub fn observe_pod(
    expectations: &Expectations,
    kind: &str,
    event: &watcher::Event<Pod>,
    cache: &Store<Pod>,
) {
    let (pod, deleted) = match event {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
        watcher::Event::Delete(p) => (p, true),
        watcher::Event::Init | watcher::Event::InitDone => return,
    };
    let Some(owner) = controller_ref(&pod.metadata).filter(|r| r.kind == kind) else {
        return;
    };
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        owner.name
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    if !deleted && cache.get(&ObjectRef::from_obj(pod)).is_none() {
        expectations.creation_observed(&key);
    }
    if deleted || pod.metadata.deletion_timestamp.is_some() {
        expectations.deletion_observed(&key, &name);
    }
}

/// `namespace/name`, the key of expectations and logs.
pub fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The reference a controller puts on what it creates or adopts: `controller` and
/// `blockOwnerDeletion` set, as upstream, so foreground deletion of the owner waits for it.
pub fn controller_owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A label selector in matchable form. Upstream treats an empty selector as matching nothing for
/// workloads (validation forbids it anyway), so `None` means "matches nothing".
pub fn selector(ls: Option<&LabelSelector>) -> Result<Option<Selector>, String> {
    let Some(ls) = ls else { return Ok(None) };
    let empty = ls.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && ls.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return Ok(None);
    }
    Selector::try_from(ls.clone())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Whether `selector` selects objects labelled `labels`.
pub fn matches(selector: &Option<Selector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    selector
        .as_ref()
        .is_some_and(|s| s.matches(labels.unwrap_or(&EMPTY)))
}

/// A selector that also requires `key=value` (e.g. a Deployment's selector + pod-template-hash).
pub fn with_label(ls: &LabelSelector, key: &str, value: &str) -> LabelSelector {
    let mut ls = ls.clone();
    ls.match_labels
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value.to_string());
    ls
}

/// A pod from `template` in `namespace`, named `{prefix}-xxxxx` by the apiserver and owned by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    owner: OwnerReference,
) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.to_string()),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Pods that count toward replicas: not being deleted and not finished.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The time the pod's Ready condition became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (cond.status == "True").then(|| cond.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (upstream `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => {
            since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now
        }
    }
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Upstream's `ActivePods` order: the pods to delete first sort first — unscheduled before
/// scheduled, pending before running, not ready before ready, recently ready before long ready,
/// more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let ready_at = |p: &Pod| ready_since(p).flatten();
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| ready_at(b).cmp(&ready_at(a)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// What a controller does with a candidate it found: upstream's `ClaimObject`.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours and matching: keep it.
    Owned,
    /// Orphan that matches: take it (add our controller reference).
    Adopt,
    /// Ours but no longer matching: let it go (remove our reference).
    Release,
    /// Someone else's, or neither ours nor matching.
    Ignore,
}

/// Decides the claim of `owner_uid` (being deleted: `owner_deleting`) on an object.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &Option<Selector>,
    meta: &ObjectMeta,
) -> Claim {
    let matching = matches(selector, meta.labels.as_ref());
    match controller_ref(meta) {
        Some(r) if r.uid == owner_uid => {
            if matching || owner_deleting {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None if matching && !owner_deleting && meta.deletion_timestamp.is_none() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// Writes `refs` as the object's ownerReferences, only if it is still the object with `uid`
/// (a JSON patch `test`, so a recreated namesake is never touched).
pub async fn set_owner_refs<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    refs: Vec<OwnerReference>,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let ops = serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/metadata/ownerReferences", "value": refs},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    let patch: kube::api::Patch<()> = kube::api::Patch::Json(patch);
    api.patch(name, &kube::api::PatchParams::default(), &patch)
        .await
        .map(|_| ())
}

/// Adopts (`Claim::Adopt`) or releases (`Claim::Release`) `obj` for `owner`.
pub async fn apply_claim<K, O>(
    api: &Api<K>,
    obj: &K,
    owner: &O,
    claim: &Claim,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    O: Resource<DynamicType = ()>,
{
    let meta = obj.meta();
    let owner_uid = owner.meta().uid.clone().unwrap_or_default();
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    match claim {
        Claim::Adopt => refs.push(controller_owner_ref(owner)),
        Claim::Release => refs.retain(|r| r.uid != owner_uid),
        Claim::Owned | Claim::Ignore => return Ok(()),
    }
    let name = meta.name.as_deref().unwrap_or_default();
    let uid = meta.uid.as_deref().unwrap_or_default();
    set_owner_refs(api, name, uid, refs).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).expect("ts"))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deletion_prefers_unscheduled_then_not_ready_then_newest() {
        let mut pods = [
            pod("old-ready", Some("n"), "Running", true, 10),
            pod("new-ready", Some("n"), "Running", true, 20),
            pod("not-ready", Some("n"), "Running", false, 5),
            pod("pending", Some("n"), "Pending", false, 1),
            pod("unscheduled", None, "Pending", false, 1),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn empty_selector_matches_nothing() {
        let sel = selector(Some(&LabelSelector::default())).expect("valid");
        let labels: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        assert!(!matches(&sel, Some(&labels)));
        let ls = with_label(&LabelSelector::default(), "a", "b");
        assert!(matches(&selector(Some(&ls)).expect("valid"), Some(&labels)));
    }
}
