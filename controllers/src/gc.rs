//! Garbage collector: deletes objects whose owners are gone (background propagation), deletes an
//! owner's dependents before the owner (foreground: the `foregroundDeletion` finalizer), and
//! frees dependents of an owner deleted with `orphan` propagation.
//!
//! As upstream, it watches every resource the apiserver serves (found through discovery) and keeps
//! a graph of ownerReferences. Each resource type runs a kube-runtime Controller whose reconcile
//! looks at one object in both its roles: as an owner being deleted, and as a dependent whose
//! owners may be gone. Graph changes re-queue the objects they concern in their own type's
//! controller.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{finalizers, ControllerConfig};

const FOREGROUND: &str = "foregroundDeletion";
/// How long an owner deleted with `orphan` propagation waits before its dependents are freed:
/// the graph learns of new dependents through watches, and one created just before the owner's
/// deletion may not have arrived yet (it would otherwise lose its owner and be collected).
const ORPHAN_SETTLE: Duration = Duration::from_millis(500);
const ORPHAN: &str = "orphan";

/// Resources the collector does not watch: upstream ignores events too (many, never owners).
const IGNORED: &[&str] = &["events"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("{kind} {key}: {what}: {source}")]
    Api {
        kind: String,
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("waiting for the caches to fill")]
    NotSynced,
}

/// One object of the graph.
#[derive(Clone, Debug)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

/// Every watched object by uid, and who depends on whom.
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Records `node`; returns the uids whose reconcile this change may unblock.
    fn apply(&mut self, uid: &str, node: Node) -> Vec<String> {
        let mut touched = Vec::new();
        let new_owners: HashSet<String> = node.owners.iter().map(|o| o.uid.clone()).collect();
        if let Some(old) = self.nodes.get(uid) {
            for o in &old.owners {
                if !new_owners.contains(&o.uid) {
                    if let Some(d) = self.dependents.get_mut(&o.uid) {
                        d.remove(uid);
                    }
                    // A dependent let go of its owner: a foreground deletion may now finish.
                    touched.push(o.uid.clone());
                }
            }
        }
        for o in &new_owners {
            self.dependents
                .entry(o.clone())
                .or_default()
                .insert(uid.to_string());
        }
        if node.deleting {
            // A dependent being deleted may be the last one an owner waits for.
            touched.extend(new_owners.iter().cloned());
        }
        self.nodes.insert(uid.to_string(), node);
        touched
    }

    /// Forgets `uid`; returns its dependents (their owner is gone) and owners (a dependent is gone).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(old) = self.nodes.remove(uid) {
            for o in old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() && !self.nodes.contains_key(&o.uid) {
                        self.dependents.remove(&o.uid);
                    }
                }
                touched.push(o.uid);
            }
        }
        touched
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }
}

/// The collector's shared state.
struct Gc {
    client: Client,
    resources: Vec<(ApiResource, Scope)>,
    /// (group, kind) → index in `resources`, to resolve ownerReferences of any version.
    by_kind: HashMap<(String, String), usize>,
    graph: Mutex<Graph>,
    queues: Vec<mpsc::UnboundedSender<ObjectRef<DynamicObject>>>,
    /// How many resource types finished their first list; the collector acts only when all
    /// have, so it never orphans or deletes from a half-filled graph.
    synced: AtomicUsize,
    /// When each owner being orphaned was first seen deleting (see [`ORPHAN_SETTLE`]).
    orphaning: Mutex<HashMap<String, std::time::Instant>>,
}

impl Gc {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-queues the objects with these uids in their types' controllers.
    fn enqueue(&self, uids: impl IntoIterator<Item = String>) {
        let graph = self.graph();
        for uid in uids {
            if let Some(n) = graph.nodes.get(&uid) {
                let ar = &self.resources[n.kind].0;
                let mut r = ObjectRef::new_with(&n.name, ar.clone());
                if let Some(ns) = &n.namespace {
                    r = r.within(ns);
                }
                let _ = self.queues[n.kind].send(r);
            }
        }
    }

    fn api(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let (ar, scope) = &self.resources[kind];
        match (scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }
}

/// Per-type reconcile context.
struct Ctx {
    gc: Arc<Gc>,
    kind: usize,
}

/// Runs the garbage collector until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let resources = loop {
        let found = tokio::select! {
            _ = stop.cancelled() => return,
            found = discover(&client) => found,
        };
        match found {
            Ok(r) => break r,
            Err(e) => tracing::warn!(error = %e, "garbage collector"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    tracing::debug!(resources = resources.len(), "garbage collector watching");
    let by_kind = resources
        .iter()
        .enumerate()
        .map(|(i, (ar, _))| ((ar.group.clone(), ar.kind.clone()), i))
        .collect();
    let mut receivers = Vec::new();
    let mut queues = Vec::new();
    for _ in &resources {
        let (tx, rx) = mpsc::unbounded_channel();
        queues.push(tx);
        receivers.push(rx);
    }
    let gc = Arc::new(Gc {
        client: client.clone(),
        resources: resources.clone(),
        by_kind,
        graph: Mutex::new(Graph::default()),
        queues,
        synced: AtomicUsize::new(0),
        orphaning: Mutex::new(HashMap::new()),
    });

    let controllers =
        resources
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(kind, ((ar, _), rx))| {
                let gc = gc.clone();
                let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
                let reader = writer.as_reader();
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let observer = gc.clone();
                let mut listed = false;
                let events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .inspect(move |ev| {
                        if let Ok(ev) = ev {
                            observe(&observer, kind, ev, &mut listed);
                        }
                    });
                let objects = reflector::reflector(writer, events).touched_objects();
                let requeued = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|r| (r, rx))
                });
                Controller::for_stream_with(objects, reader, ar)
                    .reconcile_on(requeued)
                    .with_config(Config::default().concurrency(config.concurrency))
                    .graceful_shutdown_on(stop.clone().cancelled_owned())
                    .run(reconcile, error_policy, Arc::new(Ctx { gc, kind }))
                    .for_each(|res| async move {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "garbage collector reconcile failed");
                        }
                    })
            });
    futures::future::join_all(controllers).await;
}

/// Every resource that can be listed, watched, patched and deleted.
async fn discover(client: &Client) -> Result<Vec<(ApiResource, Scope)>, Error> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(Error::Discovery)?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE, verbs::PATCH]
                .iter()
                .all(|v| caps.supports_operation(v));
            if usable && !IGNORED.contains(&ar.plural.as_str()) {
                out.push((ar, caps.scope.clone()));
            }
        }
    }
    Ok(out)
}

/// Keeps the graph current and re-queues the objects a change concerns.
fn observe(gc: &Gc, kind: usize, event: &watcher::Event<DynamicObject>, listed: &mut bool) {
    let touched = match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            let Some(uid) = o.uid() else { return };
            let node = Node {
                kind,
                namespace: o.namespace(),
                name: o.name_any(),
                owners: o.owner_references().to_vec(),
                deleting: o.metadata.deletion_timestamp.is_some(),
                finalizers: o.finalizers().to_vec(),
            };
            gc.graph().apply(&uid, node)
        }
        watcher::Event::Delete(o) => {
            let Some(uid) = o.uid() else { return };
            gc.graph().remove(&uid)
        }
        watcher::Event::Init => return,
        watcher::Event::InitDone => {
            if !*listed {
                *listed = true;
                gc.synced.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    };
    gc.enqueue(touched);
}

fn error_policy(_obj: Arc<DynamicObject>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    if !matches!(error, Error::NotSynced) {
        tracing::warn!(%error, "garbage collector");
    }
    Action::requeue(Duration::from_millis(500))
}

/// How an owner reference stands (upstream's solid / dangling / waitingForDependentsDeletion).
#[derive(Debug, PartialEq)]
enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Gone (or replaced by a namesake with another uid).
    Dangling,
    /// Being deleted in the foreground: its dependents must go first.
    Waiting,
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let gc = &ctx.gc;
    if gc.synced.load(Ordering::SeqCst) < gc.resources.len() {
        return Err(Error::NotSynced);
    }
    let uid = obj.uid().unwrap_or_default();
    let finalizers = obj.finalizers();
    if obj.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == ORPHAN) {
            let first_seen = *gc
                .orphaning
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(uid.clone())
                .or_insert_with(std::time::Instant::now);
            if let Some(left) = ORPHAN_SETTLE.checked_sub(first_seen.elapsed()) {
                return Ok(Action::requeue(left));
            }
            orphan_dependents(&ctx, &obj, &uid).await?;
            remove_finalizer(&ctx, &obj, ORPHAN).await?;
            gc.orphaning
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            delete_dependents_first(&ctx, &obj, &uid).await?;
        }
        // Already being deleted: nothing to do for it as a dependent.
        return Ok(Action::await_change());
    }
    if obj.owner_references().is_empty() {
        return Ok(Action::await_change());
    }

    let mut solid = Vec::new();
    let mut gone = Vec::new();
    let mut waiting = false;
    for owner in obj.owner_references() {
        match owner_state(&ctx, &obj, owner).await? {
            OwnerState::Solid => solid.push(owner.clone()),
            OwnerState::Dangling => gone.push(owner.uid.clone()),
            OwnerState::Waiting => {
                waiting = true;
                gone.push(owner.uid.clone());
            }
        }
    }
    if !solid.is_empty() {
        if !gone.is_empty() {
            // Another owner keeps it alive; just drop the references to the ones leaving.
            let api = gc.api(ctx.kind, obj.namespace().as_deref());
            match crate::podutil::set_owner_refs(&api, &obj.name_any(), &uid, solid).await {
                Ok(()) | Err(kube::Error::Api(_)) => {}
                Err(source) => {
                    return Err(api_error(&ctx, &obj, "dropping owner references", source))
                }
            }
        }
        return Ok(Action::await_change());
    }

    // Every owner is gone or going: delete it, cascading as its owner asked.
    let has_dependents = !gc.graph().dependents_of(&uid).is_empty();
    let policy = if waiting && has_dependents {
        PropagationPolicy::Foreground
    } else if finalizers.iter().any(|f| f == ORPHAN) {
        PropagationPolicy::Orphan
    } else if finalizers.iter().any(|f| f == FOREGROUND) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    let params = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let api = gc.api(ctx.kind, obj.namespace().as_deref());
    match api.delete(&obj.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        // Gone already, or a namesake with another uid now.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(source) => Err(api_error(&ctx, &obj, "deleting", source)),
    }
}

fn api_error(ctx: &Ctx, obj: &DynamicObject, what: &str, source: kube::Error) -> Error {
    Error::Api {
        kind: ctx.gc.resources[ctx.kind].0.kind.clone(),
        key: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        what: what.to_string(),
        source,
    }
}

/// Whether `owner` still exists: the graph first, then the apiserver (the graph may lag, and a
/// dependent must never be deleted because a cache had not seen its owner yet).
async fn owner_state(
    ctx: &Ctx,
    obj: &DynamicObject,
    owner: &OwnerReference,
) -> Result<OwnerState, Error> {
    let gc = &ctx.gc;
    let state_of = |deleting: bool, finalizers: &[String]| {
        if deleting && finalizers.iter().any(|f| f == FOREGROUND) {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        }
    };
    if let Some(n) = gc.graph().nodes.get(&owner.uid) {
        return Ok(state_of(n.deleting, &n.finalizers));
    }
    let group = owner
        .api_version
        .split_once('/')
        .map(|(g, _)| g.to_string())
        .unwrap_or_default();
    let Some(&kind) = gc.by_kind.get(&(group, owner.kind.clone())) else {
        // A kind we cannot look up: never delete on a guess.
        return Ok(OwnerState::Solid);
    };
    let namespace = match gc.resources[kind].1 {
        Scope::Namespaced => obj.namespace(),
        Scope::Cluster => None,
    };
    let api = gc.api(kind, namespace.as_deref());
    match api.get_opt(&owner.name).await {
        Ok(None) => Ok(OwnerState::Dangling),
        Ok(Some(o)) if o.uid().as_deref() != Some(owner.uid.as_str()) => Ok(OwnerState::Dangling),
        Ok(Some(o)) => Ok(state_of(
            o.metadata.deletion_timestamp.is_some(),
            o.finalizers(),
        )),
        Err(source) => Err(api_error(ctx, obj, "looking up an owner", source)),
    }
}

/// Orphan propagation: removes the owner's reference from every dependent.
async fn orphan_dependents(ctx: &Ctx, obj: &DynamicObject, uid: &str) -> Result<(), Error> {
    let dependents = ctx.gc.graph().dependents_of(uid);
    for (dep_uid, dep) in dependents {
        let refs: Vec<OwnerReference> = dep
            .owners
            .iter()
            .filter(|o| o.uid != uid)
            .cloned()
            .collect();
        let api = ctx.gc.api(dep.kind, dep.namespace.as_deref());
        match crate::podutil::set_owner_refs(&api, &dep.name, &dep_uid, refs).await {
            Ok(()) => {}
            // Gone, or replaced: nothing to orphan.
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
            Err(source) => return Err(api_error(ctx, obj, "orphaning dependents", source)),
        }
    }
    Ok(())
}

/// Foreground propagation: deletes the dependents, and removes the finalizer once none that
/// blocks the owner's deletion is left.
async fn delete_dependents_first(ctx: &Ctx, obj: &DynamicObject, uid: &str) -> Result<(), Error> {
    let dependents = ctx.gc.graph().dependents_of(uid);
    let blocking = dependents.iter().any(|(_, d)| {
        d.owners
            .iter()
            .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
    });
    // Each dependent's own reconcile sees this owner waiting and deletes it (or drops the
    // reference when another owner keeps it).
    ctx.gc.enqueue(
        dependents
            .into_iter()
            .filter(|(_, d)| !d.deleting)
            .map(|(u, _)| u),
    );
    if !blocking {
        remove_finalizer(ctx, obj, FOREGROUND).await?;
    }
    Ok(())
}

/// Removes one finalizer, only from the exact list we saw, so finalizers others add or remove
/// meanwhile are never lost.
async fn remove_finalizer(ctx: &Ctx, obj: &DynamicObject, finalizer: &str) -> Result<(), Error> {
    let api = ctx.gc.api(ctx.kind, obj.namespace().as_deref());
    match finalizers::remove(&api, obj, finalizer).await {
        // Changed since we looked: the next event brings it back here.
        Err(e) if finalizers::changed(&e) => Ok(()),
        Err(source) => Err(api_error(ctx, obj, "removing a finalizer", source)),
        Ok(()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(owners: &[&str], deleting: bool) -> Node {
        Node {
            kind: 0,
            namespace: Some("ns".into()),
            name: "n".into(),
            owners: owners
                .iter()
                .map(|u| OwnerReference {
                    uid: u.to_string(),
                    ..Default::default()
                })
                .collect(),
            deleting,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn graph_tracks_dependents_and_reports_who_a_change_concerns() {
        let mut g = Graph::default();
        g.apply("owner", node(&[], false));
        assert!(g.apply("dep", node(&["owner"], false)).is_empty());
        assert_eq!(g.dependents_of("owner").len(), 1);
        // Dropping the reference concerns the owner (a foreground deletion may finish).
        assert_eq!(g.apply("dep", node(&[], false)), vec!["owner".to_string()]);
        assert!(g.dependents_of("owner").is_empty());
        g.apply("dep", node(&["owner"], false));
        // The owner's removal concerns its dependent.
        assert_eq!(g.remove("owner"), vec!["dep".to_string()]);
        assert_eq!(g.remove("dep"), vec!["owner".to_string()]);
        assert!(g.nodes.is_empty());
    }
}
