//! Deployment controller: rolls a Deployment's pod template out through ReplicaSets (one per
//! template, named and labelled by `pod-template-hash`), with the RollingUpdate and Recreate
//! strategies, revision annotations and history, scaling, pause/resume and status conditions —
//! what `kubectl rollout status|history|undo|restart|pause|resume` read and write.
//!
//! The algorithms follow upstream's `pkg/controller/deployment` (sync.go, rolling.go,
//! recreate.go, progress.go) step for step; where this file differs it says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::podutil::{self, Claim};
use crate::ControllerConfig;

/// Label on ReplicaSets and their pods naming the template they run.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and, mirrored, of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Deployment annotations never copied onto its ReplicaSets (upstream `skipCopyAnnotation`).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deployment {key}: invalid selector: {message}")]
    Selector { key: String, message: String },
    #[error("deployment {key}: {what}: {source}")]
    Api {
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "deployment {key}: replicaset {name} exists with another template; collision count raised"
    )]
    HashCollision { key: String, name: String },
}

/// What a reconcile needs besides the Deployment.
pub struct Ctx {
    client: Client,
    sets: Store<ReplicaSet>,
}

/// Runs the Deployment controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    let (sets, set_events) = podutil::informer(
        Api::<ReplicaSet>::all(client.clone()),
        Duration::ZERO,
        |_, _| {},
    );
    let ctx = Arc::new(Ctx { client, sets });
    controller
        .watches_stream(set_events, move |rs| owners_of(&deployments, &rs))
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
}

/// The Deployments a ReplicaSet event concerns: its controller, or for an orphan every
/// Deployment whose selector matches.
fn owners_of(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace().unwrap_or_default();
    if let Some(owner) = podutil::controller_ref(&rs.metadata) {
        if owner.kind != "Deployment" {
            return Vec::new();
        }
        return vec![ObjectRef::new(&owner.name).within(&ns)];
    }
    deployments
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
        .filter(|d| {
            let sel = podutil::selector(d.spec.as_ref().map(|s| &s.selector)).unwrap_or(None);
            podutil::matches(&sel, rs.metadata.labels.as_ref())
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn error_policy(_d: Arc<Deployment>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "deployment");
    Action::requeue(Duration::from_secs(1))
}

/// One reconcile's view: the Deployment, its ReplicaSets (kept current as this reconcile
/// changes them) and the API handles.
struct Sync {
    key: String,
    d: Deployment,
    new_rs: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
    sets_api: Api<ReplicaSet>,
    api: Api<Deployment>,
}

impl Sync {
    fn err(&self, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let key = self.key.clone();
        let what = what.into();
        move |source| Error::Api { key, what, source }
    }

    fn replicas(&self) -> i32 {
        self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.new_rs.iter().chain(self.old.iter())
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&d.metadata);
    let ns = d.namespace().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let selector = podutil::selector(Some(&spec.selector)).map_err(|message| Error::Selector {
        key: key.clone(),
        message,
    })?;
    if selector.is_none() {
        // Upstream refuses to act on a selector selecting everything.
        return Ok(Action::await_change());
    }
    let sets_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = d.uid().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();

    // Claim ReplicaSets: adopt matching orphans, release ours that stopped matching.
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in ctx.sets.state() {
        if rs.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let claim = podutil::claim(&uid, deleting, &selector, &rs.metadata);
        match claim {
            Claim::Owned => owned.push(rs.as_ref().clone()),
            Claim::Ignore => {}
            Claim::Adopt | Claim::Release => {
                match podutil::apply_claim(&sets_api, rs.as_ref(), d.as_ref(), &claim).await {
                    Ok(()) if claim == Claim::Adopt => owned.push(rs.as_ref().clone()),
                    Ok(()) => {}
                    Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
                    Err(source) => {
                        return Err(Error::Api {
                            key,
                            what: format!("claiming replicaset {}", rs.name_any()),
                            source,
                        })
                    }
                }
            }
        }
    }

    let template = spec.template.clone();
    let (new_rs, old) = split_new_and_old(&template, owned);
    let mut s = Sync {
        key,
        d: d.as_ref().clone(),
        new_rs,
        old,
        sets_api,
        api: Api::namespaced(ctx.client.clone(), &ns),
    };

    if deleting {
        sync_status(&mut s).await?;
        return Ok(Action::await_change());
    }
    check_paused_conditions(&mut s).await?;
    if spec.paused == Some(true) || is_scaling_event(&s) {
        return sync_scale(&mut s).await;
    }
    let recreate = spec.strategy.as_ref().and_then(|st| st.type_.as_deref()) == Some("Recreate");
    if recreate {
        rollout_recreate(&mut s).await
    } else {
        rollout_rolling(&mut s).await
    }
}

/// The ReplicaSet running `template` (oldest first if several, as upstream) and the others.
fn split_new_and_old(
    template: &PodTemplateSpec,
    mut owned: Vec<ReplicaSet>,
) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    owned.sort_by(by_creation);
    let position = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, template))
    });
    let new_rs = position.map(|i| owned.remove(i));
    (new_rs, owned)
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    let t = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// Templates equal but for the pod-template-hash label (upstream `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

fn without_hash(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(POD_TEMPLATE_HASH);
        }
        if meta.labels.as_ref().is_some_and(|l| l.is_empty()) {
            meta.labels = None;
        }
    }
    serde_json::to_value(&t).unwrap_or(Value::Null)
}

/// The pod-template-hash of a template: FNV-32a over the template (upstream hashes Go's `spew`
/// dump of the struct; we hash its canonical JSON, so values differ from upstream's but keep the
/// same properties) plus the collision count, in upstream's safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(without_hash(template).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Pods of `rs` that count as available for scale-down decisions. Its status lags behind a
/// scale-down we just made, so never count more than it is now asked to run: counting pods we
/// already asked to delete would let a rollout fall below `maxUnavailable`.
fn available_bounded(rs: &ReplicaSet) -> i32 {
    available(rs).min(spec_replicas(rs))
}

/// Resolves `maxSurge` and `maxUnavailable` against `replicas` (upstream `ResolveFenceposts`:
/// surge rounds up, unavailable rounds down, and both zero means one unavailable).
pub fn fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let resolve = |v: Option<&IntOrString>, default_pct: i32, round_up: bool| -> i32 {
        match v {
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(s)) => {
                let pct = s.trim_end_matches('%').parse::<i64>().unwrap_or(0);
                let scaled = pct * i64::from(replicas);
                let value = if round_up {
                    (scaled + 99).div_euclid(100)
                } else {
                    scaled.div_euclid(100)
                };
                i32::try_from(value).unwrap_or(0)
            }
            None => {
                let scaled = i64::from(default_pct) * i64::from(replicas);
                let value = if round_up {
                    (scaled + 99).div_euclid(100)
                } else {
                    scaled.div_euclid(100)
                };
                i32::try_from(value).unwrap_or(0)
            }
        }
    };
    let surge = resolve(max_surge, 25, true).max(0);
    let mut unavailable = resolve(max_unavailable, 25, false).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone());
    if spec.strategy_type().is_some_and(|t| t == "Recreate") {
        return (0, 0);
    }
    fenceposts(
        rolling.as_ref().and_then(|r| r.max_surge.as_ref()),
        rolling.as_ref().and_then(|r| r.max_unavailable.as_ref()),
        replicas,
    )
}

trait StrategyType {
    fn strategy_type(&self) -> Option<&str>;
}

impl StrategyType for k8s_openapi::api::apps::v1::DeploymentSpec {
    fn strategy_type(&self) -> Option<&str> {
        self.strategy.as_ref().and_then(|s| s.type_.as_deref())
    }
}

/// Writes `replicas` (and the desired/max annotations) to a ReplicaSet, updating `rs` in place.
async fn scale_rs(s: &Sync, rs: &mut ReplicaSet, replicas: i32) -> Result<bool, Error> {
    let desired = s.replicas().to_string();
    let max = (s.replicas() + surge_and_unavailable(&s.d).0).to_string();
    let annotations = rs.annotations();
    let unchanged = spec_replicas(rs) == replicas
        && annotations.get(DESIRED_REPLICAS) == Some(&desired)
        && annotations.get(MAX_REPLICAS) == Some(&max);
    if unchanged {
        return Ok(false);
    }
    let name = rs.name_any();
    let patch = json!({
        "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
        "spec": {"replicas": replicas},
    });
    let updated = s
        .sets_api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(s.err(format!("scaling replicaset {name} to {replicas}")))?;
    let scaled = spec_replicas(rs) != replicas;
    *rs = updated;
    Ok(scaled)
}

/// Finds or (with `create`) makes the ReplicaSet for the current template, giving it the next
/// revision; upstream `getNewReplicaSet`.
async fn ensure_new_rs(s: &mut Sync, create: bool) -> Result<(), Error> {
    let max_old_revision = s
        .old
        .iter()
        .map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0);
    let new_revision = (max_old_revision + 1).to_string();
    let min_ready = s.d.spec.as_ref().and_then(|sp| sp.min_ready_seconds);

    if let Some(rs) = s.new_rs.clone() {
        // Bring the existing new ReplicaSet's annotations (revision, copied annotations) and
        // minReadySeconds up to date: an undo makes an old ReplicaSet the newest revision.
        let mut annotations = copied_annotations(&s.d);
        if revision(&rs.metadata) < max_old_revision + 1 {
            annotations.insert(REVISION.to_string(), new_revision.clone());
        }
        let current = rs.annotations();
        let stale_annotations = annotations.iter().any(|(k, v)| current.get(k) != Some(v));
        let stale_min_ready = rs.spec.as_ref().and_then(|sp| sp.min_ready_seconds) != min_ready;
        let mut rs = rs;
        if stale_annotations || stale_min_ready {
            let name = rs.name_any();
            let patch = json!({
                "metadata": {"annotations": annotations},
                "spec": {"minReadySeconds": min_ready},
            });
            rs = s
                .sets_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(s.err(format!("updating replicaset {name}")))?;
        }
        let rev = rs.annotations().get(REVISION).cloned();
        s.new_rs = Some(rs.clone());
        if let Some(rev) = rev {
            set_deployment_revision(s, &rev).await?;
        }
        if has_progress_deadline(&s.d) && condition(&s.d, "Progressing").is_none() {
            let msg = format!("Found new replica set \"{}\"", rs.name_any());
            let mut status = s.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition("Progressing", "True", "FoundNewReplicaSet", &msg),
            );
            write_status(s, status).await?;
        }
        return Ok(());
    }
    if !create {
        return Ok(());
    }

    let spec = s.d.spec.clone().unwrap_or_default();
    let collision_count = s.d.status.as_ref().and_then(|st| st.collision_count);
    let hash = template_hash(&spec.template, collision_count);
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.to_string(), hash.clone());
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    let mut annotations = copied_annotations(&s.d);
    annotations.insert(REVISION.to_string(), new_revision.clone());
    annotations.insert(DESIRED_REPLICAS.to_string(), s.replicas().to_string());
    annotations.insert(
        MAX_REPLICAS.to_string(),
        (s.replicas() + surge_and_unavailable(&s.d).0).to_string(),
    );
    let name = format!("{}-{}", s.d.name_any(), hash);
    let replicas = new_rs_replicas(s, 0);
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: s.d.namespace(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![podutil::controller_owner_ref(&s.d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: min_ready,
            selector: podutil::with_label(&spec.selector, POD_TEMPLATE_HASH, &hash),
            template: Some(template),
        }),
        status: None,
    };
    let created = match s.sets_api.create(&PostParams::default(), &rs).await {
        Ok(created) => created,
        Err(kube::Error::Api(st)) if st.code == 409 => {
            // Our cache may simply not have it yet: if it is ours with our template, use it.
            let existing = s
                .sets_api
                .get(&name)
                .await
                .map_err(s.err(format!("reading replicaset {name}")))?;
            let ours = podutil::controller_ref(&existing.metadata)
                .is_some_and(|r| Some(&r.uid) == s.d.metadata.uid.as_ref());
            let same = existing
                .spec
                .as_ref()
                .and_then(|sp| sp.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &spec.template));
            if ours && same {
                existing
            } else {
                // A true hash collision: bump the count so the next hash differs.
                let mut status = s.d.status.clone().unwrap_or_default();
                status.collision_count = Some(collision_count.unwrap_or(0) + 1);
                write_status(s, status).await?;
                return Err(Error::HashCollision {
                    key: s.key.clone(),
                    name,
                });
            }
        }
        Err(source) => {
            return Err(Error::Api {
                key: s.key.clone(),
                what: format!("creating replicaset {name}"),
                source,
            })
        }
    };
    set_deployment_revision(s, &new_revision).await?;
    if has_progress_deadline(&s.d) {
        let msg = format!("Created new replica set \"{}\"", created.name_any());
        let mut status = s.d.status.clone().unwrap_or_default();
        set_condition(
            &mut status,
            new_condition("Progressing", "True", "NewReplicaSetCreated", &msg),
        );
        write_status(s, status).await?;
    }
    s.new_rs = Some(created);
    Ok(())
}

/// The Deployment's annotations that its ReplicaSets carry too (e.g. `kubernetes.io/change-cause`,
/// which `kubectl rollout history` shows).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn set_deployment_revision(s: &mut Sync, rev: &str) -> Result<(), Error> {
    if s.d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
    let name = s.d.name_any();
    let updated = s
        .api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(s.err("setting the revision annotation"))?;
    // Keep our status view: the patch response carries the stored status, which may be newer.
    s.d.metadata = updated.metadata;
    Ok(())
}

/// Replicas the new ReplicaSet may have now under RollingUpdate (upstream `NewRSNewReplicas`).
fn new_rs_replicas(s: &Sync, current_new: i32) -> i32 {
    let replicas = s.replicas();
    let recreate = s.d.spec.as_ref().and_then(|sp| sp.strategy_type()) == Some("Recreate");
    if recreate {
        return replicas;
    }
    let (surge, _) = surge_and_unavailable(&s.d);
    let current_total: i32 = s.all().map(spec_replicas).sum();
    let max_total = replicas + surge;
    if current_total >= max_total {
        return current_new;
    }
    let scale_up = (max_total - current_total).min(replicas - current_new);
    current_new + scale_up.max(0)
}

async fn rollout_rolling(s: &mut Sync) -> Result<Action, Error> {
    ensure_new_rs(s, true).await?;
    if reconcile_new_rs(s).await? {
        return sync_rollout_status(s).await;
    }
    if reconcile_old_rs(s).await? {
        return sync_rollout_status(s).await;
    }
    if deployment_complete(&s.d, &calculate_status(s)) {
        cleanup_history(s).await?;
    }
    sync_rollout_status(s).await
}

/// Scales the new ReplicaSet toward `replicas` within `maxSurge` (upstream
/// `reconcileNewReplicaSet`).
async fn reconcile_new_rs(s: &mut Sync) -> Result<bool, Error> {
    let Some(mut rs) = s.new_rs.clone() else {
        return Ok(false);
    };
    let replicas = s.replicas();
    let current = spec_replicas(&rs);
    if current == replicas {
        return Ok(false);
    }
    let target = if current > replicas {
        replicas
    } else {
        new_rs_replicas(s, current)
    };
    let scaled = scale_rs(s, &mut rs, target).await?;
    s.new_rs = Some(rs);
    Ok(scaled)
}

/// Scales old ReplicaSets down within `maxUnavailable`: first their unavailable pods, then
/// available ones (upstream `reconcileOldReplicaSets`).
async fn reconcile_old_rs(s: &mut Sync) -> Result<bool, Error> {
    let old_pods: i32 = s.old.iter().map(spec_replicas).sum();
    if old_pods == 0 {
        return Ok(false);
    }
    let all_pods: i32 = s.all().map(spec_replicas).sum();
    let (_, max_unavailable) = surge_and_unavailable(&s.d);
    let min_available = s.replicas() - max_unavailable;
    let new_unavailable = s
        .new_rs
        .as_ref()
        .map(|rs| spec_replicas(rs) - available(rs).min(spec_replicas(rs)))
        .unwrap_or(0);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(false);
    }

    // Unhealthy replicas first: removing them costs no availability.
    let mut old = std::mem::take(&mut s.old);
    old.sort_by(by_creation);
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let want = spec_replicas(rs);
        let unhealthy = want - available(rs).min(want);
        if want == 0 || unhealthy <= 0 {
            continue;
        }
        let n = unhealthy.min(max_scaled_down - cleaned);
        scale_rs(s, rs, want - n).await?;
        cleaned += n;
    }

    // Then available ones, as far as minAvailable allows.
    let available_now: i32 = old
        .iter()
        .chain(s.new_rs.iter())
        .map(available_bounded)
        .sum();
    let mut scaled = 0;
    if available_now > min_available {
        let total = available_now - min_available;
        for rs in old.iter_mut() {
            if scaled >= total {
                break;
            }
            let want = spec_replicas(rs);
            if want == 0 {
                continue;
            }
            let n = want.min(total - scaled);
            scale_rs(s, rs, want - n).await?;
            scaled += n;
        }
    }
    s.old = old;
    Ok(cleaned + scaled > 0)
}

async fn rollout_recreate(s: &mut Sync) -> Result<Action, Error> {
    ensure_new_rs(s, false).await?;
    // Stop every old pod before starting any new one.
    let mut old = std::mem::take(&mut s.old);
    let mut scaled_down = false;
    for rs in old.iter_mut() {
        if spec_replicas(rs) > 0 {
            scaled_down |= scale_rs(s, rs, 0).await?;
        }
    }
    s.old = old;
    if scaled_down {
        return sync_rollout_status(s).await;
    }
    // Old pods still running: the ReplicaSets' status says so until the last one is gone.
    // (Upstream also checks terminating pods through a pod cache; a pod being deleted no
    // longer counts in a ReplicaSet's status here.)
    let old_running = s
        .old
        .iter()
        .any(|rs| rs.status.as_ref().is_some_and(|st| st.replicas > 0));
    if old_running {
        return sync_rollout_status(s).await;
    }
    if s.new_rs.is_none() {
        ensure_new_rs(s, true).await?;
    }
    if let Some(mut rs) = s.new_rs.clone() {
        scale_rs(s, &mut rs, s.replicas()).await?;
        s.new_rs = Some(rs);
    }
    if deployment_complete(&s.d, &calculate_status(s)) {
        cleanup_history(s).await?;
    }
    sync_rollout_status(s).await
}

/// Whether the ReplicaSets were last sized for a different `replicas` than the Deployment's.
fn is_scaling_event(s: &Sync) -> bool {
    let desired = s.replicas().to_string();
    s.all().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
        rs.annotations()
            .get(DESIRED_REPLICAS)
            .is_some_and(|v| *v != desired)
    })
}

/// Sync for a paused Deployment or a scaling event: resize without rolling out (upstream `sync`).
async fn sync_scale(s: &mut Sync) -> Result<Action, Error> {
    ensure_new_rs(s, false).await?;
    scale(s).await?;
    if s.d.spec.as_ref().and_then(|sp| sp.paused) == Some(true) {
        cleanup_history(s).await?;
    }
    sync_status(s).await?;
    Ok(Action::await_change())
}

/// Proportional scaling (upstream `scale`): one active ReplicaSet takes the whole change; a
/// saturated new one means the old go to zero; otherwise the change is spread over the active
/// ReplicaSets in proportion to their size, largest first.
async fn scale(s: &mut Sync) -> Result<(), Error> {
    let replicas = s.replicas();
    let active: Vec<bool> = s.all().map(|rs| spec_replicas(rs) > 0).collect();
    let active_count = active.iter().filter(|a| **a).count();
    if active_count <= 1 {
        // The one active ReplicaSet (or the newest one) takes all replicas.
        if let Some(mut rs) = s
            .new_rs
            .clone()
            .filter(|rs| spec_replicas(rs) > 0 || active_count == 0)
        {
            scale_rs(s, &mut rs, replicas).await?;
            s.new_rs = Some(rs);
            return Ok(());
        }
        let mut old = std::mem::take(&mut s.old);
        let target = old
            .iter()
            .position(|rs| spec_replicas(rs) > 0)
            .or_else(|| (!old.is_empty()).then(|| old.len() - 1));
        if let Some(i) = target {
            scale_rs(s, &mut old[i], replicas).await?;
        }
        s.old = old;
        return Ok(());
    }
    let saturated = s
        .new_rs
        .as_ref()
        .is_some_and(|rs| spec_replicas(rs) == replicas && available(rs) == replicas);
    if saturated {
        let mut old = std::mem::take(&mut s.old);
        for rs in old.iter_mut() {
            scale_rs(s, rs, 0).await?;
        }
        s.old = old;
        return Ok(());
    }
    let (surge, _) = surge_and_unavailable(&s.d);
    let allowed = replicas + surge;
    let current: i32 = s.all().map(spec_replicas).sum();
    let mut to_add = allowed - current;
    if to_add == 0 {
        return Ok(());
    }
    let has_new = s.new_rs.is_some();
    let mut sets: Vec<ReplicaSet> = s.new_rs.take().into_iter().chain(s.old.drain(..)).collect();
    // Largest first when adding, smallest first when removing.
    let mut order: Vec<usize> = (0..sets.len()).collect();
    order.sort_by_key(|i| {
        let n = spec_replicas(&sets[*i]);
        if to_add > 0 {
            -n
        } else {
            n
        }
    });
    let total = current.max(1);
    let mut targets: Vec<i32> = sets.iter().map(spec_replicas).collect();
    let planned = to_add;
    for i in &order {
        if to_add == 0 {
            break;
        }
        let share =
            (i64::from(spec_replicas(&sets[*i])) * i64::from(planned) / i64::from(total)) as i32;
        let share = if planned > 0 {
            share.min(to_add)
        } else {
            share.max(to_add).max(-targets[*i])
        };
        targets[*i] += share;
        to_add -= share;
    }
    // Rounding leftovers go to the first in order.
    if to_add != 0 {
        if let Some(i) = order.first() {
            targets[*i] = (targets[*i] + to_add).max(0);
        }
    }
    for (rs, target) in sets.iter_mut().zip(targets) {
        scale_rs(s, rs, target).await?;
    }
    let mut it = sets.into_iter();
    if has_new {
        s.new_rs = it.next();
    }
    s.old = it.collect();
    Ok(())
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
async fn cleanup_history(s: &mut Sync) -> Result<(), Error> {
    let Some(limit) = s.d.spec.as_ref().and_then(|sp| sp.revision_history_limit) else {
        return Ok(());
    };
    let mut cleanable: Vec<&ReplicaSet> = s
        .old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = i64::try_from(cleanable.len()).unwrap_or(0) - i64::from(limit);
    if excess <= 0 {
        return Ok(());
    }
    cleanable.sort_by(|a, b| {
        revision(&a.metadata)
            .cmp(&revision(&b.metadata))
            .then_with(|| by_creation(a, b))
    });
    let mut deleted = Vec::new();
    for rs in cleanable
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(0))
    {
        let st = rs.status.clone().unwrap_or_default();
        let busy = st.replicas != 0
            || spec_replicas(rs) != 0
            || rs.metadata.generation > st.observed_generation;
        if busy {
            continue;
        }
        let name = rs.name_any();
        match s.sets_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 => deleted.push(name),
            Err(source) => {
                return Err(Error::Api {
                    key: s.key.clone(),
                    what: format!("deleting old replicaset {name}"),
                    source,
                })
            }
        }
    }
    s.old.retain(|rs| !deleted.contains(&rs.name_any()));
    Ok(())
}

fn condition<'a>(d: &'a Deployment, type_: &str) -> Option<&'a DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: &str) -> DeploymentCondition {
    let now = Time(jiff::Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Upstream `SetDeploymentCondition`: same status and reason → unchanged; same status →
/// keeps the transition time.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conds) = status.conditions.as_mut() {
        conds.retain(|c| c.type_ != type_);
    }
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|p| p != i32::MAX)
}

/// Status from the ReplicaSets (upstream `calculateStatus`), with the Available condition.
fn calculate_status(s: &Sync) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| -> i32 { s.all().map(f).sum() };
    let replicas = s.replicas();
    let available_replicas = sum(&available);
    let (_, max_unavailable) = surge_and_unavailable(&s.d);
    let mut status = s.d.status.clone().unwrap_or_default();
    status.observed_generation = s.d.metadata.generation;
    status.replicas = Some(sum(&|rs| rs.status.as_ref().map_or(0, |st| st.replicas)));
    status.updated_replicas = Some(
        s.new_rs
            .as_ref()
            .and_then(|rs| rs.status.as_ref())
            .map_or(0, |st| st.replicas),
    );
    status.ready_replicas = Some(sum(&|rs| {
        rs.status
            .as_ref()
            .and_then(|st| st.ready_replicas)
            .unwrap_or(0)
    }));
    status.available_replicas = Some(available_replicas);
    status.unavailable_replicas = Some((replicas - available_replicas).max(0));
    if available_replicas >= replicas - max_unavailable {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
        );
    }
    status
}

/// `DeploymentComplete`: every replica updated and available, and the spec observed.
fn deployment_complete(d: &Deployment, st: &DeploymentStatus) -> bool {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    st.updated_replicas == Some(replicas)
        && st.replicas == Some(replicas)
        && st.available_replicas == Some(replicas)
        && st.observed_generation >= d.metadata.generation
}

/// `DeploymentProgressing`: more updated, fewer old, more ready or more available pods than
/// the last recorded status.
fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// How long until the Progressing condition's deadline passes; `None` once it has.
fn until_deadline(d: &Deployment) -> Option<Duration> {
    let deadline = d.spec.as_ref()?.progress_deadline_seconds?;
    let cond = condition(d, "Progressing")?;
    let from = cond.last_update_time.as_ref()?.0;
    let at = from + jiff::SignedDuration::from_secs(i64::from(deadline));
    let left = at.duration_since(jiff::Timestamp::now());
    (left.is_positive()).then(|| left.unsigned_abs())
}

/// Status plus the Progressing condition (upstream `syncRolloutStatus`); requeues for the
/// progress deadline while a rollout is underway.
async fn sync_rollout_status(s: &mut Sync) -> Result<Action, Error> {
    let mut status = calculate_status(s);
    let mut requeue = None;
    if !has_progress_deadline(&s.d) {
        remove_condition(&mut status, "Progressing");
    } else {
        let current = condition(&s.d, "Progressing").cloned();
        let complete_already = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        let rs_name = s.new_rs.as_ref().map(|rs| rs.name_any());
        if !complete_already {
            if deployment_complete(&s.d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                    None => "Deployment has successfully progressed.".to_string(),
                };
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", "NewReplicaSetAvailable", &msg),
                );
            } else if deployment_progressing(&s.d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                    None => format!("Deployment \"{}\" is progressing.", s.d.name_any()),
                };
                let mut cond = new_condition("Progressing", "True", "ReplicaSetUpdated", &msg);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, cond);
            } else if timed_out(&s.d) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => format!(
                        "Deployment \"{}\" has timed out progressing.",
                        s.d.name_any()
                    ),
                };
                set_condition(
                    &mut status,
                    new_condition("Progressing", "False", "ProgressDeadlineExceeded", &msg),
                );
            } else {
                requeue = until_deadline(&s.d);
            }
        }
    }
    // ReplicaFailure from the new ReplicaSet surfaces on the Deployment.
    let failure = s
        .new_rs
        .as_ref()
        .and_then(|rs| rs.status.as_ref())
        .and_then(|st| st.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure"))
        .cloned();
    match failure {
        Some(f) => set_condition(
            &mut status,
            new_condition(
                "ReplicaFailure",
                &f.status,
                f.reason.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
            ),
        ),
        None => remove_condition(&mut status, "ReplicaFailure"),
    }
    write_status(s, status).await?;
    // A rollout that is neither done nor progressing times out by time alone: look again then.
    Ok(match requeue {
        Some(after) => Action::requeue(after + Duration::from_secs(1)),
        None => Action::await_change(),
    })
}

fn timed_out(d: &Deployment) -> bool {
    let Some(cond) = condition(d, "Progressing") else {
        return false;
    };
    match cond.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => until_deadline(d).is_none() && cond.last_update_time.is_some(),
    }
}

/// Status without touching the Progressing condition (paused, scaling, deleting).
async fn sync_status(s: &mut Sync) -> Result<(), Error> {
    let status = calculate_status(s);
    write_status(s, status).await
}

/// Progressing=Unknown with DeploymentPaused / DeploymentResumed when pausing or resuming.
async fn check_paused_conditions(s: &mut Sync) -> Result<(), Error> {
    if !has_progress_deadline(&s.d) {
        return Ok(());
    }
    let cond = condition(&s.d, "Progressing");
    if cond.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Ok(());
    }
    let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"));
    let paused = s.d.spec.as_ref().and_then(|sp| sp.paused) == Some(true);
    let mut status = s.d.status.clone().unwrap_or_default();
    if paused && !paused_cond {
        set_condition(
            &mut status,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
            ),
        );
    } else if !paused && paused_cond {
        set_condition(
            &mut status,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
            ),
        );
    } else {
        return Ok(());
    }
    write_status(s, status).await
}

/// Writes `status` if it differs from what the Deployment has; keeps `s.d` current.
async fn write_status(s: &mut Sync, status: DeploymentStatus) -> Result<(), Error> {
    if s.d.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body = serde_json::to_value(&status).map_err(|e| Error::Api {
        key: s.key.clone(),
        what: "encoding status".into(),
        source: kube::Error::SerdeError(e),
    })?;
    let name = s.d.name_any();
    let updated = s
        .api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await
        .map_err(s.err("updating status"))?;
    s.d.status = updated.status;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| Some(IntOrString::String(s.into()));
        assert_eq!(fenceposts(None, None, 10), (3, 2));
        assert_eq!(
            fenceposts(pct("25%").as_ref(), pct("25%").as_ref(), 4),
            (1, 1)
        );
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 3),
            (0, 1)
        );
        assert_eq!(
            fenceposts(Some(&IntOrString::Int(2)), pct("50%").as_ref(), 3),
            (2, 1)
        );
    }

    #[test]
    fn template_hash_ignores_the_hash_label_and_changes_with_collisions() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let mut t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            spec: None,
        };
        let h = template_hash(&t, None);
        assert!(!h.is_empty());
        assert!(h
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        t.metadata = Some(ObjectMeta {
            labels: Some(labels(&[("app", "web"), (POD_TEMPLATE_HASH, &h)])),
            ..Default::default()
        });
        assert_eq!(template_hash(&t, None), h);
        assert_ne!(template_hash(&t, Some(1)), h);
    }
}
