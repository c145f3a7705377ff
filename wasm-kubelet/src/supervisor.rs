//! Drives [`crate::pod::step`] for every pod bound to this node: one task per pod turns pod
//! updates, container exits and timers into events, executes the actions (pull, create, run,
//! stop) and writes the status through `pods/status`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use oci_client::secrets::RegistryAuth;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::image::{self, Images, PullPolicy};
use crate::network::policy::NodeNetwork;
use crate::objects::Objects;
use crate::pod::{self, step, Action, ContainerState, Event, Phase, PodState, Slot, Termination};
use crate::runtime::logs::{LogFile, Stream};
use crate::runtime::probe;
use crate::runtime::{ContainerSpec, Runtime};
use crate::server::{ContainerStat, LiveLogs, PodRef, PodStats};
use crate::volume::{PodVolumes, VolumeError};
use crate::KubeletConfig;

/// What every pod supervisor shares.
pub(crate) struct Kubelet {
    pub client: Client,
    pub config: KubeletConfig,
    pub runtime: Runtime,
    pub images: Images,
    pub live: LiveLogs,
    pub stats: PodStats,
    pub recorder: Recorder,
    /// The network plugin: pod addresses, socket policy, Service names.
    pub network: Arc<NodeNetwork>,
    /// The configMaps and secrets the pods use, watched (volumes and env read them here).
    pub objects: Arc<Objects>,
}

impl Kubelet {
    /// Records an Event about `pod` (in the background: a start never waits on it).
    fn event(&self, pod: &Pod, warning: bool, reason: &str, action: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = pod.object_ref(&());
        let event = RecordedEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!("event {}: {e}", event.reason);
            }
        });
    }
}

struct Supervised {
    pod: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

/// A pod-start trace event (`wasmkube::trace`, DEBUG; see `wasmkube trace pod`): a stage of
/// `$pod` with any extra fields. The fields are evaluated only when the target is on.
macro_rules! trace_pod {
    ($pod:expr, $stage:expr $(, $($field:tt)+)?) => {
        tracing::debug!(
            target: "wasmkube::trace",
            stage = $stage,
            pod_uid = $pod.metadata.uid.as_deref().unwrap_or(""),
            pod = %format_args!(
                "{}/{}",
                $pod.metadata.namespace.as_deref().unwrap_or(""),
                $pod.metadata.name.as_deref().unwrap_or("")
            ),
            $($($field)+)?
        )
    };
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Watches the pods bound to this node and keeps one supervisor per pod until `shutdown`.
pub(crate) async fn watch_pods(k: Arc<Kubelet>, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(k.client.clone());
    let selector = format!("spec.nodeName={}", k.config.node_name);
    let mut events =
        Box::pin(watcher(api, watcher::Config::default().fields(&selector)).default_backoff());
    let mut pods: HashMap<String, Supervised> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = events.try_next() => e,
        };
        match event {
            Ok(Some(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                listed.insert(uid_of(&p));
                dispatch(&k, &mut pods, p);
            }
            Ok(Some(watcher::Event::Delete(p))) => {
                if let Some(s) = pods.remove(&uid_of(&p)) {
                    forget(&k, uid_of(&p), s);
                }
            }
            Ok(Some(watcher::Event::Init)) => listed.clear(),
            Ok(Some(watcher::Event::InitDone)) => {
                // A re-list: pods that vanished meanwhile are stopped.
                let gone: Vec<String> = pods
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some(s) = pods.remove(&uid) {
                        forget(&k, uid, s);
                    }
                }
                // Dirs of pods deleted while the kubelet was down.
                sweep_pod_dirs(&k.config, &listed);
                // Addresses of pods deleted while the kubelet was down.
                if let Err(e) = k.network.ipam.retain(|uid| listed.contains(uid)) {
                    tracing::warn!("releasing pod addresses: {e}");
                }
            }
            Ok(None) => break,
            Err(e) => tracing::warn!("watching pods: {e}"),
        }
    }
    for (_, s) in pods.drain() {
        s.pod.send_replace(None);
        let _ = tokio::time::timeout(Duration::from_secs(5), s.task).await;
    }
}

/// Stops the supervisor of a pod whose object is gone and, once it has stopped, removes the
/// pod's directory (logs) as upstream's kubelet does.
fn forget(k: &Arc<Kubelet>, uid: String, s: Supervised) {
    s.pod.send_replace(None);
    let pods_dir = crate::pods_dir(&k.config.data_dir);
    let network = k.network.clone();
    tokio::spawn(async move {
        let _ = s.task.await;
        remove_pod_dirs(&pods_dir, |dir_uid| dir_uid == uid);
        if let Err(e) = network.ipam.release(&uid) {
            tracing::warn!("releasing the address of pod {uid}: {e}");
        }
    });
}

/// Removes the directories under `pods/` of pods that are not in `live` (by uid).
fn sweep_pod_dirs(config: &KubeletConfig, live: &HashSet<String>) {
    let pods_dir = crate::pods_dir(&config.data_dir);
    remove_pod_dirs(&pods_dir, |uid| !live.contains(uid));
}

/// Removes `pods/<ns>_<name>_<uid>` dirs whose uid `doomed` picks.
fn remove_pod_dirs(pods_dir: &std::path::Path, doomed: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(uid) = name.to_str().and_then(|n| n.rsplit('_').next()) else {
            continue;
        };
        if doomed(uid) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!("removing {}: {e}", entry.path().display());
            }
        }
    }
}

fn dispatch(k: &Arc<Kubelet>, pods: &mut HashMap<String, Supervised>, pod: Pod) {
    let uid = uid_of(&pod);
    if uid.is_empty() {
        return;
    }
    if let Some(s) = pods.get(&uid) {
        s.pod.send_replace(Some(pod));
        return;
    }
    trace_pod!(pod, "kubelet.seen", node = k.config.node_name.as_str());
    let (tx, rx) = watch::channel(Some(pod));
    let task = tokio::spawn(supervise(k.clone(), rx));
    pods.insert(uid, Supervised { pod: tx, task });
}

fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The log file of a container run.
pub(crate) fn log_path(
    config: &KubeletConfig,
    pod: &Pod,
    container: &str,
    restart: u32,
) -> PathBuf {
    crate::pods_dir(&config.data_dir)
        .join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or(""),
            uid_of(pod)
        ))
        .join(container)
        .join(format!("{restart}.log"))
}

/// The status conditions with stable transition times.
#[derive(Default)]
struct Conditions {
    since: BTreeMap<&'static str, (bool, String)>,
}

impl Conditions {
    fn set(&mut self, kind: &'static str, status: bool, now: &str) -> Value {
        let entry = self
            .since
            .entry(kind)
            .or_insert_with(|| (status, now.to_string()));
        if entry.0 != status {
            *entry = (status, now.to_string());
        }
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastTransitionTime": entry.1,
        })
    }
}

fn state_json(state: &ContainerState) -> Value {
    match state {
        ContainerState::Waiting {
            reason, message, ..
        } => json!({"waiting": {"reason": reason, "message": message}}),
        ContainerState::Running { started_at } => {
            json!({"running": {"startedAt": ts(*started_at)}})
        }
        ContainerState::Terminated(t) => terminated_json(t),
    }
}

fn terminated_json(t: &Termination) -> Value {
    json!({"terminated": {
        "exitCode": t.exit_code,
        "reason": t.reason,
        "message": t.message,
        "startedAt": ts(t.started_at),
        "finishedAt": ts(t.finished_at),
    }})
}

fn container_status(c: &pod::Container, def: &Container, (ready, started): (bool, bool)) -> Value {
    json!({
        "name": c.name,
        "image": def.image.clone().unwrap_or_default(),
        "imageID": c.image_id.clone().unwrap_or_default(),
        "restartCount": c.restart_count,
        // Without a readiness (or startup) probe a running container is ready.
        "ready": c.is_running() && ready,
        "started": c.is_running() && started,
        "state": state_json(&c.state),
        "lastState": c.last_termination.as_ref().map(terminated_json).unwrap_or(json!({})),
    })
}

/// The network plugin's view of one pod in its status: its address and what the readiness
/// (and startup) probes of the current container runs say.
#[derive(Default)]
struct ProbeStates {
    pod_ip: Option<std::net::IpAddr>,
    /// The current run of each started container (probe reports of older runs are dropped).
    runs: HashMap<Slot, u64>,
    /// Containers whose readiness probes decide `ready`, with their current verdict.
    gated: HashMap<Slot, bool>,
    /// Containers whose startup probe has not passed yet.
    unstarted: HashSet<Slot>,
}

impl ProbeStates {
    /// Whether the probes let container `slot` be ready (true without probes).
    fn ready(&self, slot: Slot) -> bool {
        self.gated.get(&slot).copied().unwrap_or(true)
    }

    /// Whether container `slot` has started (its startup probe, if any, passed).
    fn started(&self, slot: Slot) -> bool {
        !self.unstarted.contains(&slot)
    }

    /// A new run of `slot` starts: its readiness starts false when probes decide it.
    fn start(&mut self, slot: Slot, def: &Container) -> u64 {
        let run = self.runs.entry(slot).or_default();
        *run += 1;
        if def.startup_probe.is_some() {
            self.unstarted.insert(slot);
        } else {
            self.unstarted.remove(&slot);
        }
        if def.readiness_probe.is_some() || def.startup_probe.is_some() {
            self.gated.insert(slot, false);
        } else {
            self.gated.remove(&slot);
        }
        *run
    }
}

/// What a container run's probes report to its pod's supervisor.
pub(crate) struct ProbeReport {
    slot: Slot,
    run: u64,
    report: probe::Report,
}

/// How a container run is tied to its pod's supervisor beyond start/exit events.
pub(crate) struct RunLink {
    /// Cancelled when the pod is being deleted (an HTTP container drains).
    drain: CancellationToken,
    /// This run's number (see [`ProbeStates`]).
    run: u64,
    probes: mpsc::UnboundedSender<ProbeReport>,
}

/// The pod status for the current state.
fn status_json(
    k: &Kubelet,
    state: &PodState,
    spec_init: &[Container],
    spec_main: &[Container],
    start_time: &str,
    conditions: &mut Conditions,
    probes: &ProbeStates,
) -> Value {
    let now = ts(Timestamp::now());
    let phase = state.phase();
    let running = !matches!(phase, Phase::Succeeded | Phase::Failed);
    let probed_ready = (0..state.main.len()).all(|i| probes.ready(Slot::Main(i)));
    let ready = state.containers_ready() && running && probed_ready;
    let host_ip = k.config.address.to_string();
    let mut status = json!({
        "phase": phase.as_str(),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            conditions.set("PodScheduled", true, &now),
            conditions.set("Initialized", state.initialized(), &now),
            conditions.set("ContainersReady", ready, &now),
            conditions.set("Ready", ready, &now),
        ],
        "containerStatuses": state.main.iter().zip(spec_main)
            .enumerate()
            .map(|(i, (c, d))| {
                let slot = Slot::Main(i);
                container_status(c, d, (probes.ready(slot), probes.started(slot)))
            })
            .collect::<Vec<_>>(),
    });
    if let Some(ip) = probes.pod_ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    if state.deadline_exceeded {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    if let Some((reason, message)) = &state.failure {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    if !spec_init.is_empty() {
        status["initContainerStatuses"] = json!(state
            .init
            .iter()
            .zip(spec_init)
            .map(|(c, d)| container_status(c, d, (true, true)))
            .collect::<Vec<_>>());
    }
    status
}

/// Resumes counts after a kubelet restart: a container that had started runs again as a
/// restart.
fn restore(state: &mut PodState, pod: &Pod) {
    let Some(status) = &pod.status else { return };
    let seed =
        |cs: &mut [pod::Container],
         statuses: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
            for s in statuses.iter().flatten() {
                if let Some(c) = cs.iter_mut().find(|c| c.name == s.name) {
                    let ran = s
                        .state
                        .as_ref()
                        .is_some_and(|st| st.running.is_some() || st.terminated.is_some());
                    c.restart_count = u32::try_from(s.restart_count).unwrap_or(0);
                    c.restart_pending = ran;
                }
            }
        };
    seed(&mut state.main, &status.container_statuses);
    seed(&mut state.init, &status.init_container_statuses);
}

async fn supervise(k: Arc<Kubelet>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(first) = updates.borrow_and_update().clone() else {
        return;
    };
    let ns = first.metadata.namespace.clone().unwrap_or_default();
    let name = first.metadata.name.clone().unwrap_or_default();
    let uid = uid_of(&first);
    let pods: Api<Pod> = Api::namespaced(k.client.clone(), &ns);
    let finished_phase = first
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if finished_phase {
        // Already ran to its end (before a kubelet restart): nothing to run again.
        let dir = crate::volume::pod_volumes_dir(&k.config.data_dir, &uid);
        if let Err(e) = crate::volume::tear_down_dir(&dir) {
            tracing::warn!(pod = %format!("{ns}/{name}"), "removing volumes: {e}");
        }
        return;
    }
    let spec = first.spec.clone().unwrap_or_default();
    let init_defs = spec.init_containers.clone().unwrap_or_default();
    let main_defs = spec.containers.clone();
    let names = |v: &[Container]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let mut state = PodState::new(
        pod::RestartPolicy::parse(spec.restart_policy.as_deref()),
        &names(&init_defs),
        &names(&main_defs),
        k.config.crash_backoff,
    );
    restore(&mut state, &first);
    let start_time = first
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| ts(t.0))
        .unwrap_or_else(|| ts(Timestamp::now()));
    // activeDeadlineSeconds counts from the pod's start on a node.
    let mut deadline = spec.active_deadline_seconds.map(|secs| {
        let started: Timestamp = start_time.parse().unwrap_or_else(|_| Timestamp::now());
        let elapsed: Duration = started
            .duration_until(Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        let limit = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        tokio::time::Instant::now() + limit.saturating_sub(elapsed)
    });
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut stops: HashMap<Slot, CancellationToken> = HashMap::new();
    let mut conditions = Conditions::default();
    // The pod's address: the one it had (kept across kubelet restarts), else a free one.
    let mut probe_states = ProbeStates::default();
    let preferred = first
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    if host_network(&first) {
        trace_pod!(first, "kubelet.network_ready", ip = %k.config.address);
        probe_states.pod_ip = Some(k.config.address);
    } else {
        match k.network.ipam.allocate(&uid, preferred) {
            Ok(ip) => {
                trace_pod!(first, "kubelet.network_ready", ip = %ip);
                probe_states.pod_ip = Some(std::net::IpAddr::V4(ip));
            }
            Err(e) => {
                let note = format!("Failed to create pod sandbox: assigning a pod address: {e}");
                k.event(&first, true, "FailedCreatePodSandBox", "Creating", note);
            }
        }
    }
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<ProbeReport>();
    let mut drains: HashMap<Slot, CancellationToken> = HashMap::new();
    let mut published: Option<Value> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut republish_at: Option<tokio::time::Instant> = None;
    let volumes = Arc::new(PodVolumes::new(
        k.client.clone(),
        k.config.clone(),
        k.objects.clone(),
        &first,
    ));
    // However the pod's task ends, the configMap/secret watches only it used stop.
    let _release = ReleaseObjects(k.objects.clone(), uid.clone());
    let volume_sync = tokio::spawn(sync_volumes(
        k.clone(),
        volumes.clone(),
        updates.clone(),
        events_tx.clone(),
    ));
    let mut pod = Arc::new(first);
    let mut gone = false;
    let initial = if pod.metadata.deletion_timestamp.is_some() {
        Event::Delete
    } else {
        Event::Tick
    };
    let mut actions = step(&mut state, initial, Timestamp::now());
    loop {
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Start(slot) => {
                    let def = match slot {
                        Slot::Init(i) => init_defs.get(i),
                        Slot::Main(i) => main_defs.get(i),
                    };
                    let (Some(def), Some(c)) = (def, state.container(slot)) else {
                        continue;
                    };
                    let stop = CancellationToken::new();
                    stops.insert(slot, stop.clone());
                    let link = RunLink {
                        drain: CancellationToken::new(),
                        run: probe_states.start(slot, def),
                        probes: probe_tx.clone(),
                    };
                    drains.insert(slot, link.drain.clone());
                    tokio::spawn(run_container(
                        k.clone(),
                        pod.clone(),
                        volumes.clone(),
                        slot,
                        def.clone(),
                        c.restart_count,
                        events_tx.clone(),
                        stop,
                        link,
                    ));
                }
                Action::StopAll => {
                    // HTTP containers stop accepting and finish in-flight requests.
                    drains.values().for_each(CancellationToken::cancel);
                    for c in state
                        .init
                        .iter()
                        .chain(&state.main)
                        .filter(|c| c.is_running())
                    {
                        let note = format!("Stopping container {}", c.name);
                        k.event(&pod, false, "Killing", "Killing", note);
                    }
                    // Command guests stop at once on the drain signal (see `Runtime::run`);
                    // HTTP containers get the grace period for their in-flight requests, then
                    // epoch interruption stops whatever still runs.
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .or(spec.termination_grace_period_seconds)
                        .unwrap_or(30)
                        .max(0);
                    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
                    kill_at = Some(tokio::time::Instant::now() + grace);
                    // An eviction stops at once, as upstream's local-storage eviction does.
                    if grace.is_zero() || gone || state.failure.is_some() {
                        stops.values().for_each(CancellationToken::cancel);
                    }
                }
            }
        }
        // Coalesce: events that are already queued (a cached start reports Started within the
        // same tick) go into this status write instead of the next one.
        tokio::task::yield_now().await;
        while let Ok(event) = events.try_recv() {
            actions.extend(step(&mut state, event, Timestamp::now()));
        }
        if !actions.is_empty() {
            continue;
        }
        if !gone {
            let status = status_json(
                &k,
                &state,
                &init_defs,
                &main_defs,
                &start_time,
                &mut conditions,
                &probe_states,
            );
            if published.as_ref() != Some(&status) {
                let patch = json!({"status": status});
                match pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        let phase = status["phase"].as_str();
                        if phase != published.as_ref().and_then(|p| p["phase"].as_str()) {
                            trace_pod!(pod, status_stage(phase));
                        }
                        published = Some(status);
                        republish_at = None;
                    }
                    Err(e) => {
                        // Retried until it lands: a status must not stay stale after a blip.
                        tracing::warn!(pod = %format!("{ns}/{name}"), "status: {e}");
                        republish_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
        if state.finished() {
            // A pod that ran to its end frees its address. A gone pod's is freed by `forget`
            // once this task ends; on a kubelet shutdown it is kept for the restart.
            if !gone {
                if let Err(e) = k.network.ipam.release(&uid) {
                    tracing::warn!(pod = %format!("{ns}/{name}"), "releasing the pod address: {e}");
                }
            }
            volume_sync.abort();
            // Pod-owned volumes (emptyDir, projections) go with the pod, before the object (as
            // upstream: a pod is deleted once its resources are reclaimed); PVC data stays.
            if let Err(e) = volumes.tear_down() {
                tracing::warn!(pod = %format!("{ns}/{name}"), "removing volumes: {e}");
            }
            if state.stage == pod::Stage::Terminated && !gone {
                // Containers are stopped: the object can go (upstream's final delete).
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                if let Err(e) = pods.delete(&name, &params).await {
                    tracing::debug!(pod = %format!("{ns}/{name}"), "final delete: {e}");
                }
            }
            return;
        }
        let wake = state.next_wakeup().map(|at| {
            let wait = Timestamp::now()
                .duration_until(at)
                .try_into()
                .unwrap_or(Duration::ZERO);
            tokio::time::Instant::now() + wait
        });
        tokio::select! {
            Some(event) = events.recv() => {
                let exited = match &event {
                    Event::Exited { slot, .. } => Some(*slot),
                    _ => None,
                };
                actions = step(&mut state, event, Timestamp::now());
                if let Some(c) = exited.and_then(|s| state.container(s)) {
                    if matches!(&c.state, ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff") {
                        let note = format!("Back-off restarting failed container {} in pod {name}", c.name);
                        k.event(&pod, true, "BackOff", "Restarting", note);
                    }
                }
            }
            changed = updates.changed(), if !gone => {
                let next = if changed.is_ok() { updates.borrow_and_update().clone() } else { None };
                match next {
                    Some(p) => {
                        let deleting = p.metadata.deletion_timestamp.is_some();
                        pod = Arc::new(p);
                        if deleting {
                            actions = step(&mut state, Event::Delete, Timestamp::now());
                        }
                    }
                    None => {
                        // The object is gone (or the kubelet stops): stop everything now.
                        gone = true;
                        stops.values().for_each(CancellationToken::cancel);
                        actions = step(&mut state, Event::Delete, Timestamp::now());
                    }
                }
            }
            () = sleep_until(wake), if wake.is_some() => {
                actions = step(&mut state, Event::Tick, Timestamp::now());
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                let note = "Pod was active on the node longer than the specified deadline";
                k.event(&pod, true, "DeadlineExceeded", "Killing", note.into());
                actions = step(&mut state, Event::DeadlineExceeded, Timestamp::now());
            }
            Some(r) = probe_rx.recv() => {
                if probe_states.runs.get(&r.slot) == Some(&r.run) {
                    let cname = state.container(r.slot).map(|c| c.name.clone()).unwrap_or_default();
                    match r.report {
                        probe::Report::Started => {
                            probe_states.unstarted.remove(&r.slot);
                        }
                        probe::Report::Ready(ready) => {
                            if let Some(v) = probe_states.gated.get_mut(&r.slot) {
                                *v = ready;
                            }
                        }
                        probe::Report::Unhealthy { kind, output } => {
                            let note = format!("{} probe failed: {output}", kind.as_str());
                            k.event(&pod, true, "Unhealthy", "Probing", note);
                        }
                        probe::Report::Restart { kind } => {
                            let note = format!(
                                "Container {cname} failed {} probe, will be restarted",
                                kind.as_str().to_lowercase()
                            );
                            k.event(&pod, false, "Killing", "Killing", note);
                            if let Some(stop) = stops.get(&r.slot) {
                                stop.cancel();
                            }
                        }
                    }
                }
            }
            () = sleep_until(republish_at), if republish_at.is_some() => {
                republish_at = None;
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                kill_at = None;
                stops.values().for_each(CancellationToken::cancel);
            }
        }
    }
}

/// Releases a pod's configMap/secret references when dropped.
struct ReleaseObjects(Arc<Objects>, String);

impl Drop for ReleaseObjects {
    fn drop(&mut self) {
        self.0.release(&self.1);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Re-projects a pod's configMap/secret/downwardAPI volumes every `volume_sync_interval` and
/// evicts the pod when an emptyDir exceeds its `sizeLimit`.
async fn sync_volumes(
    k: Arc<Kubelet>,
    volumes: Arc<PodVolumes>,
    updates: watch::Receiver<Option<Pod>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut tick = tokio::time::interval(k.config.volume_sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pod) = updates.borrow().clone() else {
            return;
        };
        volumes.refresh(&pod).await;
        if let Some(message) = volumes.over_limit().await {
            k.event(&pod, true, "Evicted", "Evicting", message.clone());
            let _ = events.send(Event::Fail {
                reason: "Evicted".into(),
                message,
            });
            return;
        }
    }
}

/// Reports a volume that could not be set up: a `FailedMount` warning, then the container waits
/// in `ContainerCreating` (retried), or, for a refusal, the pod fails with `VolumeRefused`.
fn mount_failed(
    k: &Kubelet,
    pod: &Pod,
    slot: Slot,
    events: &mpsc::UnboundedSender<Event>,
    e: VolumeError,
) {
    let message = e.to_string();
    k.event(pod, true, "FailedMount", "Mounting", message.clone());
    if e.is_refusal() {
        let _ = events.send(Event::Fail {
            reason: "VolumeRefused".into(),
            message: message.clone(),
        });
    }
    let reason = if e.is_refusal() {
        "CreateContainerConfigError"
    } else {
        "ContainerCreating"
    };
    let _ = events.send(Event::StartFailed {
        slot,
        reason: reason.into(),
        message,
    });
}

/// Pulls, creates and runs one container, reporting Started/StartFailed and Exited.
#[allow(clippy::too_many_arguments)]
async fn run_container(
    k: Arc<Kubelet>,
    pod: Arc<Pod>,
    volumes: Arc<PodVolumes>,
    slot: Slot,
    def: Container,
    restart: u32,
    events: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
    link: RunLink,
) {
    let fail = |reason: &str, message: String| {
        let _ = events.send(Event::StartFailed {
            slot,
            reason: reason.to_string(),
            message,
        });
    };
    // Volumes first, as upstream: a pod whose volumes are not ready pulls nothing.
    if let Err(e) = volumes.set_up(&pod).await {
        return mount_failed(&k, &pod, slot, &events, e);
    }
    trace_pod!(pod, "kubelet.volumes_ready", container = def.name.as_str());
    let Some(image) = def.image.as_deref().filter(|i| !i.is_empty()) else {
        return fail("InvalidImageName", "container has no image".into());
    };
    let policy = PullPolicy::resolve(def.image_pull_policy.as_deref(), image);
    let present = image::parse_reference(image)
        .ok()
        .and_then(|r| k.images.store().lookup(&r.whole()))
        .is_some();
    let pulls = policy == PullPolicy::Always || (!present && policy == PullPolicy::IfNotPresent);
    if pulls {
        k.event(
            &pod,
            false,
            "Pulling",
            "Pulling",
            format!("Pulling image {image:?}"),
        );
    }
    let auth = pull_auth(&k.client, &pod, image).await;
    let (record, wasm) = match k.images.ensure(image, policy, &auth).await {
        Ok(found) => found,
        Err(e) => {
            let note = format!("Failed to pull image {image:?}: {e}");
            k.event(&pod, true, "Failed", "Pulling", note);
            return fail(e.reason(), e.to_string());
        }
    };
    trace_pod!(
        pod,
        "kubelet.image_ready",
        container = def.name.as_str(),
        cached = !pulls
    );
    let pulled = if pulls {
        format!("Successfully pulled image {image:?}")
    } else {
        format!("Container image {image:?} already present on machine")
    };
    k.event(&pod, false, "Pulled", "Pulling", pulled);
    let program = match k.runtime.load(&record.wasm_digest, &wasm).await {
        Ok(p) => p,
        Err(e) => {
            k.event(&pod, true, "Failed", "Creating", format!("Error: {e}"));
            return fail("CreateContainerError", e.to_string());
        }
    };
    trace_pod!(pod, "kubelet.module_ready", container = def.name.as_str());
    let env = match resolve_env(&k, &pod, &def).await {
        Ok(env) => env,
        Err(message) => {
            k.event(
                &pod,
                true,
                "Failed",
                "Creating",
                format!("Error: {message}"),
            );
            return fail("CreateContainerConfigError", message);
        }
    };
    let preopens = match volumes.preopens(&def, &env).await {
        Ok(p) => p,
        Err(e) => return mount_failed(&k, &pod, slot, &events, e),
    };
    let spec = ContainerSpec {
        argv: argv(&def, &env),
        preopens,
        env,
        memory_limit: limit_bytes(&def, "memory"),
        cpu_millis: def
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("cpu"))
            .and_then(|q| millicores(&q.0)),
        usage: Default::default(),
        network: None,
        listen: Vec::new(),
        drain: link.drain.clone(),
    };
    let Some(pod_ip) = pod_ip(&k, &pod) else {
        return fail(
            "CreateContainerError",
            "the pod has no address (see the FailedCreatePodSandBox event)".into(),
        );
    };
    let (spec, probes) = network_grants(&k, &pod, &def, pod_ip, spec);
    let pod_ref = PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid_of(&pod),
    };
    let path = log_path(&k.config, &pod, &def.name, restart);
    let log = match LogFile::create(&path, k.config.max_log_bytes) {
        Ok(l) => l,
        Err(e) => return fail("CreateContainerError", format!("{}: {e}", path.display())),
    };
    if stop.is_cancelled() {
        return fail("ContainerCreating", "the pod is being deleted".into());
    }
    trace_pod!(pod, "kubelet.started", container = def.name.as_str());
    let _ = events.send(Event::Started {
        slot,
        image_id: record.image_id,
    });
    k.event(
        &pod,
        false,
        "Created",
        "Creating",
        format!("Created container {}", def.name),
    );
    k.event(
        &pod,
        false,
        "Started",
        "Starting",
        format!("Started container {}", def.name),
    );
    let started_at = Timestamp::now();
    k.live.insert(&path);
    let stat = ContainerStat {
        started: ts(started_at),
        usage: spec.usage.clone(),
        cpu: Default::default(),
    };
    k.stats.insert(pod_ref.clone(), &def.name, stat);
    let probing = stop.child_token();
    {
        let RunLink {
            run, probes: tx, ..
        } = link;
        let report = move |report| {
            let _ = tx.send(ProbeReport { slot, run, report });
        };
        tokio::spawn(probes.run(pod_ip, report, probing.clone()));
    }
    let exit = k.runtime.run(&program, &spec, &log, &stop).await;
    probing.cancel();
    k.stats.remove(&pod_ref, &def.name);
    if let Some(message) = &exit.message {
        log.note(Stream::Stderr, message);
    }
    k.live.remove(&path);
    let _ = events.send(Event::Exited {
        slot,
        termination: Termination {
            exit_code: exit.exit_code,
            reason: exit.reason.to_string(),
            message: exit.message,
            started_at,
            finished_at: Timestamp::now(),
        },
    });
}

/// The trace stage of a status write that changed the pod's phase.
fn status_stage(phase: Option<&str>) -> &'static str {
    match phase {
        Some("Pending") => "kubelet.status_pending",
        Some("Running") => "kubelet.status_running",
        Some("Succeeded") => "kubelet.status_succeeded",
        Some("Failed") => "kubelet.status_failed",
        _ => "kubelet.status_unknown",
    }
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// The pod's address: the node's for `hostNetwork` pods, else the one IPAM gave it.
fn pod_ip(k: &Kubelet, pod: &Pod) -> Option<std::net::IpAddr> {
    if host_network(pod) {
        return Some(k.config.address);
    }
    k.network
        .ipam
        .get(pod.metadata.uid.as_deref().unwrap_or_default())
        .map(std::net::IpAddr::V4)
}

/// The network part of a container's sandbox: its socket policy and Service names, where an
/// HTTP component is served (podIP:containerPort, TCP), and its probes (a probe that cannot
/// run is reported as an `Unhealthy` event and left out).
fn network_grants(
    k: &Kubelet,
    pod: &Pod,
    def: &Container,
    pod_ip: std::net::IpAddr,
    mut spec: ContainerSpec,
) -> (ContainerSpec, probe::Probes) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    spec.network = Some(Arc::new(k.network.pod(ns, name, pod_ip)));
    spec.listen = def
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .map(|port| std::net::SocketAddr::new(pod_ip, port))
        .collect();
    let mut probes = probe::Probes::default();
    for (kind, p) in [
        (probe::Kind::Startup, &def.startup_probe),
        (probe::Kind::Readiness, &def.readiness_probe),
        (probe::Kind::Liveness, &def.liveness_probe),
    ] {
        let Some(p) = p else { continue };
        match probe::Probe::from_spec(kind, p, def) {
            Ok(p) => match kind {
                probe::Kind::Startup => probes.startup = Some(p),
                probe::Kind::Readiness => probes.readiness = Some(p),
                probe::Kind::Liveness => probes.liveness = Some(p),
            },
            Err(why) => {
                let note = format!("{} probe errored: {why}", kind.as_str());
                k.event(pod, true, "Unhealthy", "Probing", note);
            }
        }
    }
    (spec, probes)
}

/// Credentials for `image` from the pod's `imagePullSecrets` (anonymous when none match).
async fn pull_auth(client: &Client, pod: &Pod, image: &str) -> RegistryAuth {
    let Ok(reference) = image::parse_reference(image) else {
        return RegistryAuth::Anonymous;
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for name in names.iter().map(|r| r.name.as_str()) {
        let Ok(secret) = secrets.get(name).await else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        if let Some(json) = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"))
        {
            if let Some(auth) = image::auth_from_dockerconfig(&json.0, reference.registry()) {
                return auth;
            }
        }
    }
    RegistryAuth::Anonymous
}

/// argv: `command` + `args` with `$(VAR)` expanded from the container's env; without a
/// command, argv[0] is the container name.
fn argv(def: &Container, env: &[(String, String)]) -> Vec<String> {
    let mut argv: Vec<String> = match &def.command {
        Some(cmd) if !cmd.is_empty() => cmd.iter().map(|a| expand(a, env)).collect(),
        _ => vec![def.name.clone()],
    };
    argv.extend(def.args.iter().flatten().map(|a| expand(a, env)));
    argv
}

/// Kubernetes `$(VAR)` expansion (`$$` escapes; unknown references stay as written).
pub(crate) fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A resource limit (`memory`, `cpu`) in bytes or millicores.
fn limit_bytes(def: &Container, resource: &str) -> Option<u64> {
    let q = def.resources.as_ref()?.limits.as_ref()?.get(resource)?;
    parse_quantity(&q.0)
}

/// Whole units of a quantity (bytes for memory), rounded up; None if it does not parse or
/// is negative.
pub(crate) fn parse_quantity(q: &str) -> Option<u64> {
    u64::try_from(wasmkube_quantity::units(q).ok()?).ok()
}

/// A CPU quantity in millicores (`100m` → 100, `0.5` → 500, `2` → 2000), rounded up.
pub(crate) fn millicores(q: &str) -> Option<u64> {
    u64::try_from(wasmkube_quantity::milli(q).ok()?).ok()
}

/// The container's env: `envFrom` first, then `env` (with `$(VAR)` expansion and the downward
/// API). Nothing from the host.
async fn resolve_env(
    k: &Kubelet,
    pod: &Pod,
    def: &Container,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let (config_maps, secrets) = (&k.objects.config_maps, &k.objects.secrets);
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    };
    for from in def.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match config_maps.get(ns, &r.name, uid).await {
                Ok(Some(cm)) => {
                    for (key, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{key}"), v.clone());
                    }
                }
                Ok(None) if !optional => {
                    return Err(format!("configmap {:?} not found", r.name));
                }
                Err(e) if !optional => return Err(e),
                Ok(None) | Err(_) => {}
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match secrets.get(ns, &r.name, uid).await {
                Ok(Some(s)) => {
                    for (key, v) in s.data.iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{key}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                Ok(None) if !optional => return Err(format!("secret {:?} not found", r.name)),
                Err(e) if !optional => return Err(e),
                Ok(None) | Err(_) => {}
            }
        }
    }
    for var in def.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            expand(v, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_value(k, pod, &f.field_path).ok_or_else(|| {
                    format!("env {}: unsupported fieldRef {:?}", var.name, f.field_path)
                })?
            } else if let Some(r) = &from.resource_field_ref {
                crate::volume::downward_api::resource_value(def, r)
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match config_maps
                    .get(ns, &r.name, uid)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|cm| cm.data.as_ref()?.get(&r.key).cloned())
                {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "env {}: key {:?} of configmap {:?} not found",
                            var.name, r.key, r.name
                        ))
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match secrets
                    .get(ns, &r.name, uid)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.data.as_ref()?.get(&r.key).cloned())
                {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(format!(
                            "env {}: key {:?} of secret {:?} not found",
                            var.name, r.key, r.name
                        ))
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// A downward API `fieldRef` value for env: the node- and status-side fields here, the
/// `metadata.*` ones as the downwardAPI volume writes them.
fn field_value(k: &Kubelet, pod: &Pod, path: &str) -> Option<String> {
    Some(match path {
        "spec.nodeName" => k.config.node_name.clone(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => k.config.address.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip(k, pod)?.to_string(),
        _ => return crate::volume::downward_api::field(pod, path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_bytes() {
        assert_eq!(parse_quantity("64Mi"), Some(64 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("128974848"), Some(128_974_848));
        assert_eq!(parse_quantity("129e6"), Some(129_000_000));
        assert_eq!(parse_quantity("0.5Gi"), Some(512 << 20));
        assert_eq!(parse_quantity("12X"), None);
    }

    #[test]
    fn cpu_quantities_parse_to_millicores() {
        assert_eq!(millicores("100m"), Some(100));
        assert_eq!(millicores("0.5"), Some(500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("x"), None);
    }

    #[test]
    fn args_expand_env_references() {
        let env = vec![("WHO".to_string(), "kube".to_string())];
        assert_eq!(expand("hi $(WHO)", &env), "hi kube");
        assert_eq!(expand("$$(WHO) $(NOPE)", &env), "$(WHO) $(NOPE)");
        let def = Container {
            name: "c".into(),
            args: Some(vec!["$(WHO)".into()]),
            ..Default::default()
        };
        assert_eq!(argv(&def, &env), vec!["c", "kube"]);
    }
}
