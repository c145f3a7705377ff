//! ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, adopting
//! orphans and releasing pods that stopped matching, and reports status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::expectations::Expectations;
use crate::podutil::{self, Claim};
use crate::ControllerConfig;

/// Most pods one reconcile creates or deletes (upstream `BurstReplicas`).
const BURST: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replicaset {key}: invalid selector: {message}")]
    Selector { key: String, message: String },
    #[error("replicaset {key}: creating pods: {source}")]
    CreatePod {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("replicaset {key}: deleting pod {pod}: {source}")]
    DeletePod {
        key: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("replicaset {key}: claiming pod {pod}: {source}")]
    ClaimPod {
        key: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("replicaset {key}: updating status: {source}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

/// What a reconcile needs besides the ReplicaSet.
pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
}

/// Runs the ReplicaSet controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let expectations = Arc::new(Expectations::default());
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    let observed = expectations.clone();
    let (pods, pod_events) = podutil::informer(
        Api::<Pod>::all(client.clone()),
        config.pod_cache_lag,
        move |event, cache| podutil::observe_pod(&observed, "ReplicaSet", event, cache),
    );
    let ctx = Arc::new(Ctx {
        client,
        pods,
        expectations,
    });
    controller
        .watches_stream(pod_events, move |pod| owners_of(&sets, &pod))
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "replicaset reconcile failed");
            }
        })
        .await;
}

/// The ReplicaSets a pod event concerns: its controller, or for an orphan every set whose
/// selector matches (one of them may adopt it).
fn owners_of(sets: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(owner) = podutil::controller_ref(&pod.metadata) {
        if owner.kind != "ReplicaSet" {
            return Vec::new();
        }
        return vec![ObjectRef::new(&owner.name).within(&ns)];
    }
    sets.state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| {
            let sel = podutil::selector(rs.spec.as_ref().map(|s| &s.selector)).unwrap_or(None);
            podutil::matches(&sel, pod.metadata.labels.as_ref())
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(_rs: Arc<ReplicaSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "replicaset");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&rs.metadata);
    let ns = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = podutil::selector(Some(&spec.selector)).map_err(|message| Error::Selector {
        key: key.clone(),
        message,
    })?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) || !podutil::is_active(&pod) {
            continue;
        }
        let claim = podutil::claim(&uid, deleting, &selector, &pod.metadata);
        match claim {
            Claim::Owned => owned.push(pod),
            Claim::Ignore => {}
            Claim::Adopt | Claim::Release => {
                match podutil::apply_claim(&pods_api, pod.as_ref(), rs.as_ref(), &claim).await {
                    Ok(()) if claim == Claim::Adopt => owned.push(pod),
                    Ok(()) => {}
                    // Gone, or changed under us: the next event brings the truth.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 || s.code == 422 => {
                    }
                    Err(source) => {
                        return Err(Error::ClaimPod {
                            key,
                            pod: pod.name_any(),
                            source,
                        })
                    }
                }
            }
        }
    }

    let replicas = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let manage_result = if !deleting && ctx.expectations.satisfied(&key) {
        manage(&ctx, &rs, &key, &pods_api, &owned, replicas).await
    } else {
        Ok(())
    };

    let now = jiff::Timestamp::now();
    let status = compute_status(&rs, &owned, manage_result.as_ref().err(), now);
    if rs.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &rs, &status)
            .await
            .map_err(|source| Error::Status {
                key: key.clone(),
                source,
            })?;
    }
    manage_result?;

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && status.ready_replicas != status.available_replicas {
        // Pods become available by time passing alone: look again then.
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(min_ready).unwrap_or(1),
        )));
    }
    Ok(Action::await_change())
}

/// Creates or deletes pods so that `owned` reaches `replicas`.
async fn manage(
    ctx: &Ctx,
    rs: &ReplicaSet,
    key: &str,
    api: &Api<Pod>,
    owned: &[Arc<Pod>],
    replicas: usize,
) -> Result<(), Error> {
    if owned.len() < replicas {
        let want = (replicas - owned.len()).min(BURST);
        create_pods(ctx, rs, key, api, want).await
    } else if owned.len() > replicas {
        let excess = (owned.len() - replicas).min(BURST);
        let mut ranked: Vec<&Arc<Pod>> = owned.iter().collect();
        ranked.sort_by(|a, b| podutil::deletion_order(a, b));
        let victims: Vec<String> = ranked.iter().take(excess).map(|p| p.name_any()).collect();
        ctx.expectations
            .expect_deletions(key, victims.iter().cloned());
        let results =
            futures::future::join_all(victims.iter().map(|name| async move {
                (name, api.delete(name, &DeleteParams::default()).await)
            }))
            .await;
        let mut first_error = None;
        for (name, result) in results {
            match result {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    ctx.expectations.deletion_observed(key, name);
                }
                Err(source) => {
                    // This deletion will never be observed.
                    ctx.expectations.deletion_observed(key, name);
                    first_error.get_or_insert(Error::DeletePod {
                        key: key.to_string(),
                        pod: name.clone(),
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    } else {
        Ok(())
    }
}

/// Creates `count` pods in batches of 1, 2, 4, ... (upstream's slow start), stopping at the
/// first failing batch so a quota or admission error costs one request, not hundreds.
async fn create_pods(
    ctx: &Ctx,
    rs: &ReplicaSet,
    key: &str,
    api: &Api<Pod>,
    count: usize,
) -> Result<(), Error> {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let pod = podutil::pod_from_template(
        &template,
        &ns,
        &rs.name_any(),
        podutil::controller_owner_ref(rs),
    );
    ctx.expectations.expect_creations(key, count);
    let params = PostParams::default();
    let mut remaining = count;
    let mut batch = 1;
    while remaining > 0 {
        let size = batch.min(remaining);
        let results = futures::future::join_all((0..size).map(|_| api.create(&params, &pod))).await;
        remaining -= size;
        let mut first_error = None;
        for result in results {
            if let Err(source) = result {
                ctx.expectations.creation_observed(key);
                first_error.get_or_insert(source);
            }
        }
        if let Some(source) = first_error {
            // The batches never sent will never be observed either.
            for _ in 0..remaining {
                ctx.expectations.creation_observed(key);
            }
            return Err(Error::CreatePod {
                key: key.to_string(),
                source,
            });
        }
        batch *= 2;
    }
    Ok(())
}

/// Status from the pods owned now (upstream `calculateStatus`).
fn compute_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    manage_error: Option<&Error>,
    now: jiff::Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    });
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old.conditions.clone().unwrap_or_default();
    match manage_error {
        Some(e @ (Error::CreatePod { .. } | Error::DeletePod { .. })) => {
            let reason = if matches!(e, Error::CreatePod { .. }) {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            if !conditions.iter().any(|c| c.type_ == "ReplicaFailure") {
                conditions.push(ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(e.to_string()),
                    last_transition_time: Some(Time(now)),
                });
            }
        }
        Some(_) => {}
        None => conditions.retain(|c| c.type_ != "ReplicaFailure"),
    }
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&podutil::is_ready)),
        available_replicas: Some(count(&|p| podutil::is_available(p, min_ready, now))),
        terminating_replicas: old.terminating_replicas,
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
    }
}

async fn write_status(
    client: &Client,
    rs: &ReplicaSet,
    status: &ReplicaSetStatus,
) -> Result<(), kube::Error> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &rs.namespace().unwrap_or_default());
    let mut body = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    if status.conditions.is_none() {
        // A merge patch keeps fields it does not mention; say explicitly that conditions went.
        body["conditions"] = serde_json::Value::Null;
    }
    api.patch_status(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await
    .map(|_| ())
}
