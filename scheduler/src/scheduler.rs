//! The scheduler: leader election around a scheduling loop. The loop runs on its own thread
//! and owns the cache and the queue; informers, bindings and the clock reach it through one
//! channel, so no lock is held while filtering and scoring (which fan out on a rayon pool).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::config::Config;
use crate::framework::{
    BindOutcome, BindPlugin, CycleState, EventMask, Framework, FrameworkError, PluginContext,
    PreBindPlugin, Registry,
};
use crate::info::{NodeSpec, PodInfo, PodKey};
use crate::leader::LeaderElector;
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::report::{Report, Reporter};
use crate::volumes::{VolumeKind, VolumeObject};

/// Why the scheduler stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{0}")]
    Framework(#[from] FrameworkError),
    #[error("building the worker pool: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
    #[error("starting the scheduling thread: {0}")]
    Thread(std::io::Error),
    #[error("the scheduling thread panicked")]
    Panicked,
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
}

/// What arrives at the scheduling loop.
pub enum Input {
    PodApply(Arc<PodInfo>),
    PodDelete(PodKey),
    /// A pod relist finished with these keys: others are gone.
    PodsSynced(HashSet<PodKey>),
    NodeApply(NodeSpec),
    NodeDelete(String),
    NodesSynced(HashSet<String>),
    VolumeApply(VolumeObject),
    VolumeDelete(VolumeKind, String),
    /// A storage relist finished with these keys.
    VolumesSynced(VolumeKind, HashSet<String>),
    BindDone(Box<BindDone>),
    Stop,
}

/// A binding attempt's result, with what is needed to undo it.
pub struct BindDone {
    qp: QueuedPod,
    node: String,
    state: CycleState,
    outcome: BindOutcome,
}

/// Counters and cycle latencies, readable while the scheduler runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Pods assumed on a node (decisions).
    pub scheduled: AtomicU64,
    /// Bindings the apiserver accepted.
    pub bound: AtomicU64,
    pub bind_failures: AtomicU64,
    /// Attempts that found no node.
    pub unschedulable: AtomicU64,
    /// Nodes in the cache.
    pub nodes: AtomicUsize,
    /// Both informers have listed once.
    pub synced: AtomicBool,
    /// Holding the Lease (or running without leader election).
    pub leading: AtomicBool,
    /// Nodes filtered per cycle, summed (to show what sampling saves).
    pub nodes_evaluated: AtomicU64,
    cycles_us: Mutex<Vec<u32>>,
}

impl Stats {
    fn record_cycle(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u32::MAX)) as u32;
        if let Ok(mut v) = self.cycles_us.lock() {
            v.push(us);
        }
    }

    /// Scheduling-cycle latency percentiles (`p` in 0..=1) so far.
    pub fn cycle_percentile(&self, p: f64) -> Duration {
        let Ok(v) = self.cycles_us.lock() else {
            return Duration::ZERO;
        };
        if v.is_empty() {
            return Duration::ZERO;
        }
        let mut v = v.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_micros(u64::from(v[i.min(v.len() - 1)]))
    }

    pub fn cycles(&self) -> usize {
        self.cycles_us.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// A configured scheduler, ready to run.
pub struct Scheduler {
    client: kube::Client,
    config: Config,
    registry: Registry,
    stats: Arc<Stats>,
    identity: String,
}

impl Scheduler {
    /// Checks the configuration (every profile builds) without starting anything.
    pub fn new(client: kube::Client, config: Config) -> Result<Self, SchedulerError> {
        Self::with_registry(client, config, Registry::default())
    }

    /// Like `new`, with out-of-tree plugins added to the registry.
    pub fn with_registry(
        client: kube::Client,
        config: Config,
        registry: Registry,
    ) -> Result<Self, SchedulerError> {
        let ctx = PluginContext {
            client: Some(client.clone()),
        };
        for p in &config.profiles {
            Framework::new(p, &registry, &ctx, config.percentage_of_nodes_to_score)?;
        }
        let identity = config.leader_election.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "wasmkube".into());
            format!("{host}_{}", rand::random::<u32>())
        });
        Ok(Self {
            client,
            config,
            registry,
            stats: Arc::new(Stats::default()),
            identity,
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs until `shutdown`: with leader election, waits to lead, schedules while leading,
    /// and campaigns again after losing the Lease; releases it on shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SchedulerError> {
        if !self.config.leader_election.leader_elect {
            self.stats.leading.store(true, Ordering::Relaxed);
            return self.lead(shutdown).await;
        }
        let elector = Arc::new(LeaderElector::new(
            self.client.clone(),
            self.config.leader_election.clone(),
            self.identity.clone(),
        ));
        loop {
            if !elector.acquire(&shutdown).await {
                return Ok(());
            }
            tracing::info!(identity = %self.identity, "leading: scheduling starts");
            self.stats.leading.store(true, Ordering::Relaxed);
            let lost = shutdown.child_token();
            let stop_renew = CancellationToken::new();
            let renew = tokio::spawn({
                let (e, l, s) = (elector.clone(), lost.clone(), stop_renew.clone());
                async move { e.keep(l, s).await }
            });
            let result = self.lead(lost.clone()).await;
            self.stats.leading.store(false, Ordering::Relaxed);
            stop_renew.cancel();
            let _ = renew.await;
            result?;
            if shutdown.is_cancelled() {
                // Every binding has finished (lead waits for them): hand over at once.
                elector.release().await;
                return Ok(());
            }
            tracing::warn!(identity = %self.identity, "lost the lease: scheduling stops");
            tokio::time::sleep(elector.retry_period()).await;
        }
    }

    /// Schedules until `stop`: starts informers and the loop, then waits for in-flight
    /// bindings so a successor's informers see them.
    async fn lead(&self, stop: CancellationToken) -> Result<(), SchedulerError> {
        let (tx, rx) = mpsc::channel::<Input>();
        let tracker = TaskTracker::new();
        let informer_stop = stop.child_token();
        tracker.spawn(crate::informer::pods(
            self.client.clone(),
            tx.clone(),
            informer_stop.clone(),
        ));
        tracker.spawn(crate::informer::nodes(
            self.client.clone(),
            tx.clone(),
            informer_stop.clone(),
        ));
        tracker.spawn(crate::informer::volumes(
            self.client.clone(),
            tx.clone(),
            informer_stop.clone(),
            VolumeKind::Claim,
            VolumeObject::Claim,
        ));
        tracker.spawn(crate::informer::volumes(
            self.client.clone(),
            tx.clone(),
            informer_stop.clone(),
            VolumeKind::Volume,
            VolumeObject::Volume,
        ));
        tracker.spawn(crate::informer::volumes(
            self.client.clone(),
            tx.clone(),
            informer_stop.clone(),
            VolumeKind::Class,
            VolumeObject::Class,
        ));
        let reporter = Reporter::spawn(
            self.client.clone(),
            self.config.profiles[0].scheduler_name.clone(),
            self.identity.clone(),
            &tracker,
        );
        let ctx = PluginContext {
            client: Some(self.client.clone()),
        };
        let mut profiles = HashMap::new();
        for p in &self.config.profiles {
            let fw = Framework::new(
                p,
                &self.registry,
                &ctx,
                self.config.percentage_of_nodes_to_score,
            )?;
            tracing::debug!(profile = %p.scheduler_name, "{}", fw.describe());
            profiles.insert(p.scheduler_name.clone(), Arc::new(fw));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.config.parallelism.max(1))
            .thread_name(|i| format!("sched-worker-{i}"))
            .build()?;
        let core = Core {
            profiles,
            cache: Cache::new(),
            queue: SchedulingQueue::new(
                self.config.initial_backoff(),
                self.config.max_backoff(),
                Duration::from_secs(self.config.pod_max_in_unschedulable_pods_seconds),
            ),
            pool,
            runtime: tokio::runtime::Handle::current(),
            tx: tx.clone(),
            stats: self.stats.clone(),
            bind_permits: Arc::new(Semaphore::new(self.config.bind_concurrency.max(1))),
            tracker: tracker.clone(),
            reporter,
            binding: HashMap::new(),
            nodes_synced: false,
            pods_synced: false,
            volumes_synced: HashSet::new(),
            scheduled_events: self.config.scheduled_events,
        };
        let thread = std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || core.run(rx))
            .map_err(SchedulerError::Thread)?;
        stop.cancelled().await;
        informer_stop.cancel();
        let _ = tx.send(Input::Stop);
        drop(tx);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        tracker.close();
        tracker.wait().await;
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => Err(SchedulerError::Panicked),
        }
    }
}

/// A pod-start trace event (`wasmkube::trace`, DEBUG; see `wasmkube trace pod`): `stage` of
/// `pod`, with the node it was placed on if any. Costs a filter check when the target is off.
fn trace_pod(pod: &PodInfo, stage: &'static str, node: &str) {
    tracing::debug!(
        target: "wasmkube::trace",
        stage,
        pod_uid = pod.uid.as_str(),
        pod = pod.key.as_str(),
        node,
    );
}

/// The binding cycle after Reserve: every PreBind plugin in order, then the first bind plugin
/// that does not skip the pod.
async fn run_binding(
    pre_binds: &[Arc<dyn PreBindPlugin>],
    binders: &[Arc<dyn BindPlugin>],
    state: &CycleState,
    pod: &PodInfo,
    node: &str,
) -> BindOutcome {
    for p in pre_binds {
        if let Err(e) = p.pre_bind(state, pod, node).await {
            return BindOutcome::Failed(format!("running PreBind plugin: {e}"));
        }
    }
    for b in binders {
        match b.bind(pod, node).await {
            BindOutcome::Skip => continue,
            other => return other,
        }
    }
    BindOutcome::Failed("no bind plugin bound the pod".into())
}

/// The scheduling loop's state, owned by its thread.
struct Core {
    profiles: HashMap<String, Arc<Framework>>,
    cache: Cache,
    queue: SchedulingQueue,
    pool: rayon::ThreadPool,
    runtime: tokio::runtime::Handle,
    tx: Sender<Input>,
    stats: Arc<Stats>,
    bind_permits: Arc<Semaphore>,
    tracker: TaskTracker,
    reporter: Reporter,
    /// Pods whose binding is in flight (uid), so a failure requeues only pods that still exist.
    binding: HashMap<PodKey, String>,
    nodes_synced: bool,
    pods_synced: bool,
    /// The storage informers that have listed once.
    volumes_synced: HashSet<VolumeKind>,
    scheduled_events: bool,
}

impl Core {
    fn run(mut self, rx: Receiver<Input>) {
        let mut stopping = false;
        loop {
            let ready = self.synced() && !stopping;
            // Sleep only when there is nothing to schedule; wake for the next backoff expiry.
            let timeout = if ready && self.queue_has_ready() {
                Duration::ZERO
            } else {
                self.queue
                    .next_wakeup()
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1))
            };
            match rx.recv_timeout(timeout) {
                Ok(input) => stopping |= self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Apply everything that arrived before deciding again.
            while let Ok(input) = rx.try_recv() {
                stopping |= self.handle(input);
            }
            if stopping {
                if self.binding.is_empty() {
                    return;
                }
                continue;
            }
            let now = Instant::now();
            self.queue.flush(now);
            if self.synced() {
                if let Some(qp) = self.queue.pop() {
                    self.schedule_one(qp);
                }
            }
        }
    }

    fn queue_has_ready(&mut self) -> bool {
        self.queue.has_active()
            || self
                .queue
                .next_wakeup()
                .is_some_and(|t| t <= Instant::now())
    }

    /// Applies one input; returns true on `Stop`.
    fn handle(&mut self, input: Input) -> bool {
        let now = Instant::now();
        match input {
            Input::PodApply(pod) => self.on_pod(pod, now),
            Input::PodDelete(key) => self.on_pod_delete(&key, now),
            Input::PodsSynced(seen) => {
                for key in self.cache.bound_pod_keys() {
                    if !seen.contains(&key) {
                        self.on_pod_delete(&key, now);
                    }
                }
                self.pods_synced = true;
                self.mark_synced();
            }
            Input::NodeApply(spec) => {
                let events = self.cache.set_node(spec);
                self.stats
                    .nodes
                    .store(self.cache.node_count(), Ordering::Relaxed);
                self.on_events(events, now);
            }
            Input::NodeDelete(name) => {
                let events = self.cache.remove_node(&name);
                self.stats
                    .nodes
                    .store(self.cache.node_count(), Ordering::Relaxed);
                self.on_events(events, now);
            }
            Input::NodesSynced(seen) => {
                for name in self.cache.node_names() {
                    if !seen.contains(&name) {
                        let ev = self.cache.remove_node(&name);
                        self.on_events(ev, now);
                    }
                }
                self.stats
                    .nodes
                    .store(self.cache.node_count(), Ordering::Relaxed);
                self.nodes_synced = true;
                self.mark_synced();
            }
            Input::VolumeApply(o) => {
                let events = self.cache.volumes_mut().apply(o);
                self.on_events(events, now);
            }
            Input::VolumeDelete(kind, key) => self.cache.volumes_mut().delete(kind, &key),
            Input::VolumesSynced(kind, seen) => {
                self.cache.volumes_mut().retain(kind, &seen);
                self.volumes_synced.insert(kind);
                self.mark_synced();
            }
            Input::BindDone(done) => self.on_bind_done(*done, now),
            Input::Stop => return true,
        }
        false
    }

    /// Every informer has listed once: decisions see the whole cluster.
    fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced && self.volumes_synced.len() == 3
    }

    fn mark_synced(&self) {
        if self.synced() {
            self.stats.synced.store(true, Ordering::Relaxed);
        }
    }

    fn on_pod(&mut self, pod: Arc<PodInfo>, now: Instant) {
        if pod.terminal {
            self.on_pod_delete(&pod.key, now);
            return;
        }
        if !pod.node_name.is_empty() {
            // Bound (by us or anyone): counted on its node, no longer pending.
            self.queue.delete(&pod.key);
            let events = self.cache.set_bound_pod(pod);
            self.on_events(events, now);
            return;
        }
        if self.cache.is_assumed(&pod.key) {
            // Our binding is in flight; this is an older version of the pod.
            return;
        }
        if !self.profiles.contains_key(&pod.scheduler_name) || pod.deleting || pod.gated {
            self.queue.delete(&pod.key);
            return;
        }
        trace_pod(&pod, "scheduler.queued", "");
        self.queue.update(pod, now);
    }

    fn on_pod_delete(&mut self, key: &str, now: Instant) {
        self.queue.delete(key);
        self.binding.remove(key);
        let events = self.cache.remove_pod(key);
        self.on_events(events, now);
    }

    fn on_events(&mut self, events: EventMask, now: Instant) {
        if events.is_empty() {
            return;
        }
        let profiles = &self.profiles;
        self.queue.on_event(events, now, |pod, plugins, ev| {
            profiles
                .get(&pod.scheduler_name)
                .is_some_and(|fw| fw.events_can_help(plugins, ev))
        });
    }

    fn schedule_one(&mut self, qp: QueuedPod) {
        let start = Instant::now();
        let pod = qp.info.clone();
        if self.cache.contains_pod(&pod.key) {
            // Bound or assumed meanwhile.
            self.queue.done(&pod.key);
            return;
        }
        let Some(fw) = self.profiles.get(&pod.scheduler_name).cloned() else {
            self.queue.done(&pod.key);
            return;
        };
        let cache = &self.cache;
        let result = self.pool.install(|| fw.schedule(&pod, cache));
        match result {
            Ok(mut decision) => {
                self.stats
                    .nodes_evaluated
                    .fetch_add(decision.evaluated as u64, Ordering::Relaxed);
                if let Err(r) = fw.reserve(&mut decision.state, &pod, &decision.node) {
                    tracing::warn!(pod = %pod.key, "reserve failed: {}", r.reasons.join(", "));
                    let _ = self
                        .queue
                        .requeue(&pod.key, [r.plugin].into(), true, Instant::now());
                    return;
                }
                if let Err(e) = self.cache.assume(pod.clone(), &decision.node) {
                    tracing::warn!(pod = %pod.key, "assume failed: {e}");
                    fw.unreserve(&mut decision.state, &pod, &decision.node);
                    let _ = self
                        .queue
                        .requeue(&pod.key, Default::default(), true, Instant::now());
                    return;
                }
                self.queue.done(&pod.key);
                self.stats.scheduled.fetch_add(1, Ordering::Relaxed);
                self.stats.record_cycle(start.elapsed());
                trace_pod(&pod, "scheduler.scheduled", &decision.node);
                self.binding.insert(pod.key.clone(), pod.uid.clone());
                self.spawn_bind(
                    fw.pre_binds(),
                    fw.binders(),
                    qp,
                    decision.node,
                    decision.state,
                );
            }
            Err(fit) => {
                self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                self.stats.record_cycle(start.elapsed());
                let error = fit.diagnosis.error.is_some();
                let message = match &fit.diagnosis.error {
                    Some(e) => format!("running the scheduling framework: {e}"),
                    None => fit.to_string(),
                };
                tracing::debug!(pod = %pod.key, "unschedulable: {message}");
                let _ = self.queue.requeue(
                    &pod.key,
                    fit.diagnosis.unschedulable_plugins.clone(),
                    error,
                    Instant::now(),
                );
                self.reporter.send(Report::Unschedulable { pod, message });
            }
        }
    }

    fn spawn_bind(
        &self,
        pre_binds: Vec<Arc<dyn PreBindPlugin>>,
        binders: Vec<Arc<dyn BindPlugin>>,
        qp: QueuedPod,
        node: String,
        state: CycleState,
    ) {
        let tx = self.tx.clone();
        let permits = self.bind_permits.clone();
        let stats = self.stats.clone();
        let fut = async move {
            let _permit = permits.acquire_owned().await;
            let outcome = run_binding(&pre_binds, &binders, &state, &qp.info, &node).await;
            // Counted here, not when the loop takes the result: a binding that completes
            // while the scheduler stops (its loop already gone) still happened.
            if matches!(outcome, BindOutcome::Bound) {
                stats.bound.fetch_add(1, Ordering::Relaxed);
                trace_pod(&qp.info, "scheduler.bound", &node);
            }
            let _ = tx.send(Input::BindDone(Box::new(BindDone {
                qp,
                node,
                state,
                outcome,
            })));
        };
        self.tracker.spawn_on(fut, &self.runtime);
    }

    fn on_bind_done(&mut self, done: BindDone, now: Instant) {
        let BindDone {
            qp,
            node,
            mut state,
            outcome,
        } = done;
        let key = qp.info.key.clone();
        let still_pending = self.binding.remove(&key).is_some();
        match outcome {
            BindOutcome::Bound => {
                if self.scheduled_events {
                    self.reporter.send(Report::Scheduled {
                        pod: qp.info.clone(),
                        node,
                    });
                }
            }
            BindOutcome::Skip | BindOutcome::Failed(_) => {
                self.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
                if let BindOutcome::Failed(e) = &outcome {
                    tracing::info!(pod = %key, node = %node, "binding failed, retrying: {e}");
                }
                self.cache.forget(&key);
                if let Some(fw) = self.profiles.get(&qp.info.scheduler_name) {
                    fw.unreserve(&mut state, &qp.info, &node);
                }
                // The node's room came back: others may fit now.
                self.on_events(
                    crate::framework::ClusterEvent::AssignedPodDelete.into(),
                    now,
                );
                if still_pending && !self.cache.contains_pod(&key) {
                    self.queue.requeue_after_bind_failure(qp, now);
                }
            }
        }
    }
}
