use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use wasmkube_controllers::ControllerConfig;

use crate::common::*;

const TRACKING: &str = "batch.kubernetes.io/job-tracking";

fn job(name: &str, spec: serde_json::Value) -> anyhow::Result<Job> {
    let mut spec = spec;
    spec["template"] = json!({
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example.com/task:1"}]},
    });
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))?)
}

/// Plays the kubelet for a Job: every pod that has not run yet finishes with `phase`.
fn finish_pods(client: &Client, job: &str, phase: &'static str) -> FakeKubelet {
    let (client, selector) = (
        client.clone(),
        format!("batch.kubernetes.io/job-name={job}"),
    );
    FakeKubelet::spawn(async move {
        loop {
            if let Ok(pods) = pods(&client, "default", &selector).await {
                for pod in pods {
                    let ran = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    if matches!(ran, None | Some("Pending")) {
                        let _ = set_phase(&client, &pod, phase).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Every pod of `job` ever seen (by uid), and the most running at once.
struct PodLog {
    seen: Arc<Mutex<BTreeMap<String, Pod>>>,
    max_running: Arc<Mutex<usize>>,
}

fn watch_pods(client: &Client, job: &str) -> PodLog {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let max_running = Arc::new(Mutex::new(0));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cfg = watcher::Config::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let (out, max) = (seen.clone(), max_running.clone());
    tokio::spawn(async move {
        let mut running: BTreeMap<String, bool> = BTreeMap::new();
        let mut events = std::pin::pin!(watcher(api, cfg));
        while let Some(Ok(ev)) = events.next().await {
            let (pod, gone) = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                _ => continue,
            };
            let uid = pod.uid().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            let active = !gone
                && pod.metadata.deletion_timestamp.is_none()
                && !matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
            running.insert(uid.clone(), active);
            let now = running.values().filter(|a| **a).count();
            let mut m = max.lock().expect("lock");
            *m = (*m).max(now);
            out.lock().expect("lock").insert(uid, pod);
        }
    });
    PodLog { seen, max_running }
}

async fn finished(api: &Api<Job>, name: &str, condition: &str) -> anyhow::Result<Job> {
    wait_for(&format!("job {name} {condition}"), || async {
        let j = api.get(name).await?;
        let done = j
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == condition && c.status == "True");
        Ok(done.then_some(j))
    })
    .await
}

#[tokio::test]
async fn job_with_five_completions_and_parallelism_two_succeeds_exactly_five_times(
) -> anyhow::Result<()> {
    let c = cluster().await?;
    let log = watch_pods(&c.client, "five");
    let _kubelet = finish_pods(&c.client, "five", "Succeeded");
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &job("five", json!({"completions": 5, "parallelism": 2}))?,
    )
    .await?;
    let j = finished(&api, "five", "Complete").await?;
    let status = j.status.clone().unwrap_or_default();
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.failed.unwrap_or(0), 0);
    assert!(status.completion_time.is_some());
    // Every pod released from tracking, five pods in all, never more than two at once.
    let uid = j.uid().unwrap_or_default();
    wait_for("finalizers removed", || async {
        let all: Api<Pod> = Api::namespaced(c.client.clone(), "default");
        let pods = all
            .list(&ListParams::default().labels("job-name=five"))
            .await?
            .items;
        Ok(pods
            .iter()
            .all(|p| !p.finalizers().iter().any(|f| f == TRACKING))
            .then_some(()))
    })
    .await?;
    let seen = log.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "exactly five pods created");
    assert!(*log.max_running.lock().expect("lock") <= 2);
    for pod in seen.values() {
        let labels = pod.labels();
        assert_eq!(labels.get("job-name").map(String::as_str), Some("five"));
        assert_eq!(
            labels
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str),
            Some("five")
        );
        assert_eq!(labels.get("controller-uid"), Some(&uid));
        assert_eq!(labels.get("batch.kubernetes.io/controller-uid"), Some(&uid));
    }
    // It stays at five: nothing counts twice later.
    let again = api.get("five").await?;
    assert_eq!(again.status.and_then(|s| s.succeeded), Some(5));
    Ok(())
}

#[tokio::test]
async fn failing_job_stops_after_its_backoff_limit() -> anyhow::Result<()> {
    let c = cluster_with(ControllerConfig {
        job_backoff_base: Duration::from_millis(50),
        ..Default::default()
    })
    .await?;
    let log = watch_pods(&c.client, "flaky");
    let _kubelet = finish_pods(&c.client, "flaky", "Failed");
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &job("flaky", json!({"completions": 1, "backoffLimit": 2}))?,
    )
    .await?;
    let j = finished(&api, "flaky", "Failed").await?;
    let status = j.status.clone().unwrap_or_default();
    assert_eq!(status.failed, Some(3), "backoffLimit 2 allows two retries");
    let reason = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(log.seen.lock().expect("lock").len(), 3);
    Ok(())
}

#[tokio::test]
async fn indexed_job_runs_each_index_once() -> anyhow::Result<()> {
    let c = cluster().await?;
    let log = watch_pods(&c.client, "indexed");
    let _kubelet = finish_pods(&c.client, "indexed", "Succeeded");
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"});
    api.create(&PostParams::default(), &job("indexed", spec)?)
        .await?;
    let j = finished(&api, "indexed", "Complete").await?;
    let status = j.status.unwrap_or_default();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    let seen = log.seen.lock().expect("lock").clone();
    let indexes: BTreeSet<String> = seen
        .values()
        .filter_map(|p| {
            p.annotations()
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
        })
        .collect();
    assert_eq!(
        indexes,
        BTreeSet::from(["0".into(), "1".into(), "2".into()])
    );
    for pod in seen.values() {
        let index = pod
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
            .cloned();
        let host = pod.spec.as_ref().and_then(|s| s.hostname.clone());
        assert_eq!(host, index.map(|i| format!("indexed-{i}")));
    }
    Ok(())
}

#[tokio::test]
async fn job_past_its_active_deadline_fails_and_stops_its_pods() -> anyhow::Result<()> {
    let c = cluster().await?;
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let spec = json!({"completions": 2, "parallelism": 2, "activeDeadlineSeconds": 1});
    api.create(&PostParams::default(), &job("slow", spec)?)
        .await?;
    // No kubelet: the pods never finish.
    let j = finished(&api, "slow", "Failed").await?;
    let reason = j
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("DeadlineExceeded"));
    wait_for("pods stopped", || async {
        Ok(pods(&c.client, "default", "job-name=slow")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn finished_job_is_deleted_after_its_ttl() -> anyhow::Result<()> {
    let c = cluster().await?;
    let _kubelet = finish_pods(&c.client, "ttl", "Succeeded");
    let api: Api<Job> = Api::namespaced(c.client.clone(), "default");
    let spec = json!({"completions": 1, "ttlSecondsAfterFinished": 0});
    api.create(&PostParams::default(), &job("ttl", spec)?)
        .await?;
    wait_for("job deleted", || async {
        Ok(api.get_opt("ttl").await?.is_none().then_some(()))
    })
    .await?;
    // Its pods go with it (the garbage collector, once the finalizer is off).
    wait_for("pods collected", || async {
        let all: Api<Pod> = Api::namespaced(c.client.clone(), "default");
        let left = all
            .list(&ListParams::default().labels("job-name=ttl"))
            .await?
            .items;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}
