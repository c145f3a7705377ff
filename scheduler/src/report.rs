//! What the scheduler tells users: the `PodScheduled=False, reason Unschedulable` condition
//! and `FailedScheduling` / `Scheduled` Events (`events.k8s.io/v1`), written off the
//! scheduling thread. Conditions are never dropped; Events are best effort and dropped when
//! too many are queued, as upstream's broadcaster does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::task::TaskTracker;

use crate::info::PodInfo;

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("pod {pod}: updating PodScheduled: {source}")]
    Condition { pod: String, source: kube::Error },
    #[error("pod {pod}: writing event {reason}: {source}")]
    Event {
        pod: String,
        reason: &'static str,
        source: kube::Error,
    },
}

/// Something to tell about a pod.
#[derive(Debug)]
pub enum Report {
    Unschedulable { pod: Arc<PodInfo>, message: String },
    Scheduled { pod: Arc<PodInfo>, node: String },
}

/// Sends reports to the writer task.
#[derive(Clone)]
pub struct Reporter {
    conditions: mpsc::UnboundedSender<Report>,
    events: mpsc::Sender<Report>,
}

const EVENT_QUEUE: usize = 1000;
const WRITERS: usize = 8;

impl Reporter {
    /// Starts the writers; they stop when every `Reporter` clone is dropped.
    pub fn spawn(
        client: kube::Client,
        controller: String,
        instance: String,
        tracker: &TaskTracker,
    ) -> Self {
        let (ctx, crx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::channel(EVENT_QUEUE);
        let w = Arc::new(Writer {
            client,
            controller,
            instance,
            seq: AtomicU64::new(0),
        });
        tracker.spawn(writer_loop(w, crx, erx, tracker.clone()));
        Self {
            conditions: ctx,
            events: etx,
        }
    }

    pub fn send(&self, r: Report) {
        match r {
            Report::Unschedulable { .. } => {
                let _ = self.conditions.send(r);
            }
            Report::Scheduled { .. } => {
                // Dropped when the writers are behind: the binding itself is what matters.
                let _ = self.events.try_send(r);
            }
        }
    }
}

struct Writer {
    client: kube::Client,
    controller: String,
    instance: String,
    seq: AtomicU64,
}

async fn writer_loop(
    w: Arc<Writer>,
    mut conditions: mpsc::UnboundedReceiver<Report>,
    mut events: mpsc::Receiver<Report>,
    tracker: TaskTracker,
) {
    let sem = Arc::new(Semaphore::new(WRITERS));
    loop {
        let r = tokio::select! {
            biased;
            r = conditions.recv() => r,
            r = events.recv() => r,
        };
        let Some(r) = r else {
            // One side closed: drain the other.
            let rest = match conditions.recv().await {
                Some(r) => Some(r),
                None => events.recv().await,
            };
            let Some(r) = rest else { return };
            write(&w, r).await;
            continue;
        };
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        let w = w.clone();
        tracker.spawn(async move {
            write(&w, r).await;
            drop(permit);
        });
    }
}

async fn write(w: &Writer, r: Report) {
    let result = match &r {
        Report::Unschedulable { pod, message } => {
            let cond = set_condition(w, pod, message).await;
            let ev = w
                .event(pod, "Warning", "FailedScheduling", "Scheduling", message)
                .await;
            cond.and(ev)
        }
        Report::Scheduled { pod, node } => {
            let note = format!("Successfully assigned {} to {node}", pod.key);
            w.event(pod, "Normal", "Scheduled", "Binding", &note).await
        }
    };
    if let Err(e) = result {
        // A pod deleted meanwhile is not worth a warning.
        tracing::debug!("{e}");
    }
}

/// Whether the pod already shows this exact condition (upstream skips the write then).
fn has_condition(pod: &Pod, message: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message)
            })
        })
}

async fn set_condition(w: &Writer, pod: &PodInfo, message: &str) -> Result<(), ReportError> {
    if has_condition(&pod.pod, message) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(w.client.clone(), &pod.namespace);
    // Strategic merge: conditions merge by type, so other conditions stay.
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(|_| ())
        .map_err(|source| ReportError::Condition {
            pod: pod.key.clone(),
            source,
        })
}

impl Writer {
    async fn event(
        &self,
        pod: &PodInfo,
        type_: &str,
        reason: &'static str,
        action: &str,
        note: &str,
    ) -> Result<(), ReportError> {
        let now = Timestamp::now();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}{:x}",
                    pod.name,
                    now.as_nanosecond() as u64,
                    seq
                )),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1024).collect()),
            type_: Some(type_.into()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            }),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        api.create(&PostParams::default(), &ev)
            .await
            .map(|_| ())
            .map_err(|source| ReportError::Event {
                pod: pod.key.clone(),
                reason,
                source,
            })
    }
}
