//! Job controller: runs pods until `completions` succeed (NonIndexed or Indexed), at most
//! `parallelism` at once, failing the Job past `backoffLimit` or `activeDeadlineSeconds`, and
//! deleting it `ttlSecondsAfterFinished` after it finished (upstream's TTL-after-finished
//! controller, folded in here).
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer. A finished pod is first recorded
//! by uid in `status.uncountedTerminatedPods`, then its finalizer is removed, and only then is it
//! moved into the `succeeded`/`failed` counters: the uid list is the durable record that makes a
//! success count exactly once, whatever crashes or cache lag happen in between.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::finalizers;
use crate::podutil;
use crate::ControllerConfig;

/// Finalizer on every Job pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Longest wait before recreating failed pods (upstream `MaxJobBackOff`).
const MAX_BACKOFF: Duration = Duration::from_secs(360);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job {key}: {what}: {source}")]
    Api {
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// What a reconcile needs besides the Job.
pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
    backoff_base: Duration,
    /// Per Job: failures seen and when the last one was counted (for the recreate backoff).
    failures: Mutex<HashMap<String, (i32, Instant)>>,
    /// Per Job: the resourceVersion of our last status write. A reconcile whose cached Job is
    /// older waits for the cache, so no decision is ever taken from a status we already changed.
    written: Mutex<HashMap<String, u64>>,
}

/// Runs the Job controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let expectations = Arc::new(Expectations::default());
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let jobs = controller.store();
    let observed = expectations.clone();
    let (pods, pod_events) = podutil::informer(
        Api::<Pod>::all(client.clone()),
        config.pod_cache_lag,
        move |event, cache| podutil::observe_pod(&observed, "Job", event, cache),
    );
    // Pods whose Job is gone still hold the tracking finalizer: free them apart.
    let (orphans_tx, orphans_rx) = mpsc::unbounded_channel();
    tokio::spawn(release_orphans(client.clone(), orphans_rx, stop.clone()));
    let ctx = Arc::new(Ctx {
        client,
        pods,
        expectations,
        backoff_base: config.job_backoff_base,
        failures: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
    });
    controller
        .watches_stream(pod_events, move |pod| {
            let owner = podutil::controller_ref(&pod.metadata).filter(|r| r.kind == "Job")?;
            let r = ObjectRef::new(&owner.name).within(&pod.namespace().unwrap_or_default());
            let known = jobs
                .get(&r)
                .is_some_and(|j| j.metadata.uid.as_deref() == Some(owner.uid.as_str()));
            if !known && pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER) {
                let _ = orphans_tx.send(pod);
            }
            Some(r)
        })
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "job reconcile failed");
            }
        })
        .await;
}

/// Removes the tracking finalizer from pods whose Job no longer exists (checked live: the
/// Job cache may simply not have caught up).
async fn release_orphans(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Pod>,
    stop: CancellationToken,
) {
    loop {
        let pod = tokio::select! {
            _ = stop.cancelled() => return,
            pod = rx.recv() => match pod { Some(p) => p, None => return },
        };
        let ns = pod.namespace().unwrap_or_default();
        let Some(owner) = podutil::controller_ref(&pod.metadata).cloned() else {
            continue;
        };
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let gone = match jobs.get_opt(&owner.name).await {
            Ok(None) => true,
            Ok(Some(j)) => j.metadata.uid.as_deref() != Some(owner.uid.as_str()),
            Err(e) => {
                tracing::debug!(error = %e, "checking a job pod's owner");
                false
            }
        };
        if gone {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if let Err(e) = remove_tracking_finalizer(&pods, &pod).await {
                tracing::debug!(error = %e, "releasing an orphaned job pod");
            }
        }
    }
}

fn error_policy(_job: Arc<Job>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "job");
    Action::requeue(Duration::from_secs(1))
}

fn has_finalizer(pod: &Pod) -> bool {
    finalizers::has(pod, TRACKING_FINALIZER)
}

/// Removes the tracking finalizer (other finalizers are never lost). Ok when it is already
/// gone; a list that changed since the cache saw it is retried once from the live object.
async fn remove_tracking_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    match finalizers::remove(api, pod, TRACKING_FINALIZER).await {
        Err(e) if finalizers::changed(&e) => match api.get_opt(&pod.name_any()).await? {
            Some(live) if live.uid() == pod.uid() => {
                finalizers::remove(api, &live, TRACKING_FINALIZER).await
            }
            _ => Ok(()),
        },
        other => other,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// How a finished pod counts: `Some(true)` succeeded, `Some(false)` failed (also a pod deleted
/// before it succeeded, as upstream), `None` still running.
fn outcome(pod: &Pod) -> Option<bool> {
    match phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if pod.metadata.deletion_timestamp.is_some() => Some(false),
        _ => None,
    }
}

fn completion_index(pod: &Pod) -> Option<i32> {
    pod.annotations().get(COMPLETION_INDEX)?.parse().ok()
}

/// Parses `completedIndexes` ("1,3-5").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as `completedIndexes` does: ascending, runs collapsed ("1,3-5").
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn finished(job: &Job) -> Option<(&str, Option<jiff::Timestamp>)> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            (
                c.type_.as_str(),
                c.last_transition_time.as_ref().map(|t| t.0),
            )
        })
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&job.metadata);
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let api_err = |what: &str| {
        let key = key.clone();
        let what = what.to_string();
        move |source| Error::Api { key, what, source }
    };
    let cached_rv = job.resource_version().and_then(|rv| rv.parse::<u64>().ok());
    let last_written = ctx
        .written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .copied();
    if let (Some(cached), Some(written)) = (cached_rv, last_written) {
        if cached < written {
            // Our own last write has not reached the cache yet; its event brings us back.
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    let mut current: Job = job.as_ref().clone();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| podutil::controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect();

    if job.metadata.deletion_timestamp.is_some() {
        for pod in pods.iter().filter(|p| has_finalizer(p)) {
            remove_tracking_finalizer(&pods_api, pod)
                .await
                .map_err(api_err("releasing pods"))?;
        }
        return Ok(Action::await_change());
    }
    if let Some((_, at)) = finished(&job) {
        // Counting is over: free whatever still carries the finalizer.
        for pod in pods.iter().filter(|p| has_finalizer(p)) {
            remove_tracking_finalizer(&pods_api, pod)
                .await
                .map_err(api_err("releasing pods"))?;
        }
        return expire_after_ttl(&ctx, &job, at).await;
    }

    let spec = job.spec.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let now = jiff::Timestamp::now();
    let old_status = job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    if status.start_time.is_none() && spec.suspend != Some(true) {
        status.start_time = Some(Time(now));
    }

    // 1. Record newly finished pods by uid before touching them.
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut succ: Vec<String> = uncounted.succeeded.take().unwrap_or_default();
    let mut fail: Vec<String> = uncounted.failed.take().unwrap_or_default();
    let mut recorded = false;
    for pod in pods.iter().filter(|p| has_finalizer(p)) {
        let Some(pod_uid) = pod.uid() else { continue };
        if succ.contains(&pod_uid) || fail.contains(&pod_uid) {
            continue;
        }
        match outcome(pod) {
            Some(true) => succ.push(pod_uid),
            Some(false) => fail.push(pod_uid),
            None => continue,
        }
        recorded = true;
    }
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(succ.clone()),
        failed: Some(fail.clone()),
    });
    if recorded {
        write_status(&ctx, &mut current, &status)
            .await
            .map_err(api_err("recording finished pods"))?;
    }

    // 2. Release them; 3. count the released ones.
    let by_uid: HashMap<String, &Arc<Pod>> = pods
        .iter()
        .filter_map(|p| p.uid().map(|u| (u, p)))
        .collect();
    let mut released: HashSet<String> = HashSet::new();
    for pod_uid in succ.iter().chain(fail.iter()) {
        match by_uid.get(pod_uid) {
            Some(pod) if has_finalizer(pod) => {
                remove_tracking_finalizer(&pods_api, pod)
                    .await
                    .map_err(api_err("releasing a finished pod"))?;
                released.insert(pod_uid.clone());
            }
            // Already released (or gone): counted now.
            _ => {
                released.insert(pod_uid.clone());
            }
        }
    }
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut new_failures = 0;
    for pod_uid in succ.iter().filter(|u| released.contains(*u)) {
        if indexed {
            if let Some(i) = by_uid.get(pod_uid).and_then(|p| completion_index(p)) {
                completed.insert(i);
            }
        } else {
            status.succeeded = Some(status.succeeded.unwrap_or(0) + 1);
        }
    }
    for _ in fail.iter().filter(|u| released.contains(*u)) {
        status.failed = Some(status.failed.unwrap_or(0) + 1);
        new_failures += 1;
    }
    succ.retain(|u| !released.contains(u));
    fail.retain(|u| !released.contains(u));
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(succ),
        failed: Some(fail),
    });
    if indexed {
        status.succeeded = Some(i32::try_from(completed.len()).unwrap_or(i32::MAX));
        status.completed_indexes = Some(format_indexes(&completed));
    }
    if new_failures > 0 {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
        *entry = (entry.0 + new_failures, Instant::now());
    }

    // 4. Decide: finished, or how many pods should run.
    let active: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && outcome(p).is_none())
        .collect();
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline_at = spec.active_deadline_seconds.and_then(|s| {
        status
            .start_time
            .as_ref()
            .map(|t| t.0 + jiff::SignedDuration::from_secs(s))
    });
    let failure = if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline_at.is_some_and(|at| at <= now) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    let complete = match completions {
        Some(c) => succeeded >= c,
        // A work queue: done once one pod succeeded and none is left running.
        None => succeeded > 0 && active.is_empty(),
    };
    if failure.is_some() || complete {
        // Stop what still runs; these pods are not counted.
        for pod in &active {
            remove_tracking_finalizer(&pods_api, pod)
                .await
                .map_err(api_err("releasing a pod"))?;
            match pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(api_err("deleting a pod")(source)),
            }
        }
        let mut conds = status.conditions.clone().unwrap_or_default();
        let cond = |type_: &str, reason: &str, message: &str| JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        };
        match failure {
            Some((reason, message)) => {
                conds.push(cond("FailureTarget", reason, message));
                conds.push(cond("Failed", reason, message));
            }
            None => {
                conds.push(cond(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
                conds.push(cond(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
                status.completion_time = Some(Time(now));
            }
        }
        status.conditions = Some(conds);
        status.active = Some(0);
        status.ready = Some(0);
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        write_status(&ctx, &mut current, &status)
            .await
            .map_err(api_err("finishing"))?;
        return Ok(match spec.ttl_seconds_after_finished {
            Some(ttl) => Action::requeue(Duration::from_secs(u64::try_from(ttl).unwrap_or(0))),
            None => Action::await_change(),
        });
    }

    let parallelism = if spec.suspend == Some(true) {
        0
    } else {
        spec.parallelism.unwrap_or(1).max(0)
    };
    let pending_succ = status
        .uncounted_terminated_pods
        .as_ref()
        .and_then(|u| u.succeeded.as_ref())
        .map_or(0, Vec::len);
    let pending_succ = i32::try_from(pending_succ).unwrap_or(0);
    let active_count = i32::try_from(active.len()).unwrap_or(i32::MAX);
    // Indexes to run: neither completed nor held by an active pod.
    let running: BTreeSet<i32> = active.iter().filter_map(|p| completion_index(p)).collect();
    let todo: Vec<i32> = match (indexed, completions) {
        (true, Some(c)) => (0..c)
            .filter(|i| !completed.contains(i) && !running.contains(i))
            .collect(),
        _ => Vec::new(),
    };
    let want = match (indexed, completions) {
        (true, _) => (active_count + i32::try_from(todo.len()).unwrap_or(0)).min(parallelism),
        (false, Some(c)) => (c - succeeded - pending_succ).clamp(0, parallelism),
        (false, None) if succeeded + pending_succ > 0 => 0,
        (false, None) => parallelism,
    };

    let mut requeue = deadline_at.map(|at| {
        let left = at.duration_since(now);
        left.unsigned_abs() + Duration::from_millis(100)
    });
    if ctx.expectations.satisfied(&key) {
        if active_count < want {
            match backoff_left(&ctx, &key) {
                Some(left) => requeue = Some(requeue.map_or(left, |r| r.min(left))),
                None => {
                    let n = usize::try_from(want - active_count).unwrap_or(0);
                    create_pods(&ctx, &job, &key, &pods_api, n, indexed.then_some(&todo[..]))
                        .await?;
                }
            }
        } else if active_count > want {
            let mut ranked = active.clone();
            ranked.sort_by(|a, b| podutil::deletion_order(a, b));
            let excess = usize::try_from(active_count - want).unwrap_or(0);
            let victims: Vec<&&Arc<Pod>> = ranked.iter().take(excess).collect();
            ctx.expectations
                .expect_deletions(&key, victims.iter().map(|p| p.name_any()));
            for pod in victims {
                if let Err(source) = pods_api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                {
                    ctx.expectations.deletion_observed(&key, &pod.name_any());
                    if !matches!(&source, kube::Error::Api(s) if s.code == 404) {
                        return Err(api_err("deleting a pod")(source));
                    }
                }
            }
        }
    }

    status.active = Some(active_count);
    status.ready =
        Some(i32::try_from(active.iter().filter(|p| podutil::is_ready(p)).count()).unwrap_or(0));
    if status != old_status {
        write_status(&ctx, &mut current, &status)
            .await
            .map_err(api_err("updating status"))?;
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Time left before failed pods may be replaced: `base * 2^(failures-1)` after the last failure,
/// capped at six minutes (upstream's pod failure backoff).
fn backoff_left(ctx: &Ctx, key: &str) -> Option<Duration> {
    let failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let (count, last) = failures.get(key)?;
    let exp = u32::try_from((*count - 1).clamp(0, 16)).unwrap_or(0);
    let delay = ctx.backoff_base.saturating_mul(1 << exp).min(MAX_BACKOFF);
    delay.checked_sub(last.elapsed()).filter(|d| !d.is_zero())
}

/// Creates `count` pods (for Indexed Jobs, one per index of `indexes`, lowest first).
async fn create_pods(
    ctx: &Ctx,
    job: &Job,
    key: &str,
    api: &Api<Pod>,
    count: usize,
    indexes: Option<&[i32]>,
) -> Result<(), Error> {
    let spec = job.spec.clone().unwrap_or_default();
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_default();
    let mut pods = Vec::new();
    for n in 0..count {
        let index = indexes.and_then(|ix| ix.get(n).copied());
        let prefix = match index {
            Some(i) => format!("{name}-{i}"),
            None => name.clone(),
        };
        let mut pod = podutil::pod_from_template(
            &spec.template,
            &ns,
            &prefix,
            podutil::controller_owner_ref(job),
        );
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.to_string());
        if let Some(i) = index {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(ps) = pod.spec.as_mut() {
                ps.hostname = Some(format!("{name}-{i}"));
                for c in ps.containers.iter_mut() {
                    c.env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                            }),
                            ..Default::default()
                        }),
                    });
                }
            }
        }
        pods.push(pod);
    }
    ctx.expectations.expect_creations(key, pods.len());
    let params = PostParams::default();
    let results = futures::future::join_all(pods.iter().map(|p| api.create(&params, p))).await;
    let mut first_error = None;
    for result in results {
        if let Err(source) = result {
            ctx.expectations.creation_observed(key);
            first_error.get_or_insert(source);
        }
    }
    match first_error {
        None => Ok(()),
        Some(source) => Err(Error::Api {
            key: key.to_string(),
            what: "creating pods".into(),
            source,
        }),
    }
}

/// Deletes a finished Job once its `ttlSecondsAfterFinished` has passed.
async fn expire_after_ttl(
    ctx: &Ctx,
    job: &Job,
    finished_at: Option<jiff::Timestamp>,
) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let at = finished_at.unwrap_or_else(jiff::Timestamp::now)
        + jiff::SignedDuration::from_secs(i64::from(ttl));
    let left = at.duration_since(jiff::Timestamp::now());
    if left.is_positive() {
        return Ok(Action::requeue(left.unsigned_abs()));
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(kube::api::Preconditions {
            uid: job.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(source) => Err(Error::Api {
            key: podutil::key(&job.metadata),
            what: "deleting after ttlSecondsAfterFinished".into(),
            source,
        }),
    }
}

/// Replaces the status, conditional on `job`'s resourceVersion: a status computed from a stale
/// Job fails with a conflict instead of overwriting counts (then the reconcile retries).
async fn write_status(ctx: &Ctx, job: &mut Job, status: &JobStatus) -> Result<(), kube::Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    job.status = Some(status.clone());
    let updated = api
        .replace_status(&job.name_any(), &PostParams::default(), &*job)
        .await?;
    if let Some(rv) = updated
        .resource_version()
        .and_then(|rv| rv.parse::<u64>().ok())
    {
        ctx.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(podutil::key(&job.metadata), rv);
    }
    *job = updated;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert!(parse_indexes("").is_empty());
    }
}
