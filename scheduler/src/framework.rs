//! The scheduling framework: plugin traits for each extension point (PreFilter, Filter,
//! PreScore, Score + NormalizeScore, Reserve, PreBind, Bind), a registry of plugins by name, profiles
//! built from configuration, and one scheduling cycle: filter the nodes in parallel, score the
//! feasible ones in parallel, pick the best.

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{BitOr, BitOrAssign};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;
use rayon::prelude::*;

use crate::cache::Cache;
use crate::config::{PluginList, Profile};
use crate::info::{NodeInfo, PodInfo};

/// The highest score a Score plugin may give (after normalization).
pub const MAX_NODE_SCORE: i64 = 100;

/// A profile that cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum FrameworkError {
    #[error("profile {profile:?}: no plugin named {name:?} is registered (known: {known})")]
    UnknownPlugin {
        profile: String,
        name: String,
        known: String,
    },
    #[error("profile {profile:?}: plugin {name} does not implement the {point} extension point")]
    NotAnExtension {
        profile: String,
        name: String,
        point: &'static str,
    },
    #[error("plugin {name}: invalid args: {message}")]
    InvalidArgs { name: String, message: String },
    #[error("profile {0:?} has no bind plugin")]
    NoBinder(String),
    #[error("profile {0:?}: weight of score plugin {1} must be positive")]
    BadWeight(String, String),
}

/// Something in the cluster that can make an unschedulable pod schedulable. Plugins register
/// the events that can undo their rejections; the queue only retries a pod on those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ClusterEvent {
    NodeAdd = 1,
    NodeLabelChange = 1 << 1,
    NodeTaintChange = 1 << 2,
    NodeAllocatableChange = 1 << 3,
    NodeSpecUnschedulableChange = 1 << 4,
    NodeImageChange = 1 << 5,
    NodeDelete = 1 << 6,
    AssignedPodAdd = 1 << 7,
    AssignedPodUpdate = 1 << 8,
    AssignedPodDelete = 1 << 9,
    PvcAdd = 1 << 10,
    PvcUpdate = 1 << 11,
    PvAdd = 1 << 12,
    PvUpdate = 1 << 13,
    StorageClassAdd = 1 << 14,
}

/// A set of cluster events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventMask(pub u32);

impl EventMask {
    pub const NONE: EventMask = EventMask(0);
    pub const ALL: EventMask = EventMask(u32::MAX);

    pub fn intersects(self, other: EventMask) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Events that grow a node's room or add nodes: what resource-like rejections wait for.
    pub fn node_or_pod_delete() -> EventMask {
        ClusterEvent::NodeAdd
            | ClusterEvent::NodeAllocatableChange
            | ClusterEvent::AssignedPodDelete
    }
}

impl From<ClusterEvent> for EventMask {
    fn from(e: ClusterEvent) -> Self {
        EventMask(e as u32)
    }
}

impl BitOr for ClusterEvent {
    type Output = EventMask;
    fn bitor(self, rhs: ClusterEvent) -> EventMask {
        EventMask(self as u32 | rhs as u32)
    }
}

impl BitOr<ClusterEvent> for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: ClusterEvent) -> EventMask {
        EventMask(self.0 | rhs as u32)
    }
}

impl BitOr for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: EventMask) -> EventMask {
        EventMask(self.0 | rhs.0)
    }
}

impl BitOrAssign<ClusterEvent> for EventMask {
    fn bitor_assign(&mut self, rhs: ClusterEvent) {
        self.0 |= rhs as u32;
    }
}

impl BitOrAssign for EventMask {
    fn bitor_assign(&mut self, rhs: EventMask) {
        self.0 |= rhs.0;
    }
}

/// How a plugin turned a pod (or a node for it) down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Could change when the cluster changes (resources free up, nodes appear).
    Unschedulable,
    /// Will not change by retrying on this node (wrong name, missing label).
    UnschedulableAndUnresolvable,
    /// The plugin failed; the pod is retried with backoff.
    Error,
}

/// A plugin's "no", with the reasons that end up in the pod's condition message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
    /// Filled in by the framework.
    pub plugin: &'static str,
}

impl Rejection {
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn error(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code: Code::Error,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }
}

/// Data plugins compute once per cycle (in PreFilter/PreScore) and read per node, keyed by
/// plugin name.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn Any + Send + Sync>>,
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key).and_then(|b| b.downcast_ref())
    }
}

/// What a PreFilter plugin decided for this pod.
#[derive(Debug, PartialEq, Eq)]
pub enum PreFilterOutcome {
    /// Run this plugin's Filter on every node.
    Continue,
    /// The pod has nothing this plugin checks: skip its Filter.
    Skip,
    /// Only these nodes can fit (e.g. `spec.nodeName`): filter just them.
    Nodes(BTreeSet<String>),
}

/// A plugin: a name, the events that can undo its rejections, and the extension points it
/// implements (each `as_*` returns `Some` for the points it has).
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// The cluster events that can make a pod this plugin rejected schedulable.
    fn events(&self) -> EventMask;
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    fn as_pre_bind(self: Arc<Self>) -> Option<Arc<dyn PreBindPlugin>> {
        None
    }
    fn as_bind(self: Arc<Self>) -> Option<Arc<dyn BindPlugin>> {
        None
    }
}

/// Runs once per pod before filtering; may narrow the nodes or skip its filter.
pub trait PreFilterPlugin: Send + Sync {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cache: &Cache,
    ) -> Result<PreFilterOutcome, Rejection>;
}

/// Whether the pod can run on this node. Called concurrently for many nodes.
pub trait FilterPlugin: Send + Sync {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection>;
}

/// Runs once per pod before scoring, with the feasible nodes. `Ok(false)` skips this plugin's
/// Score.
pub trait PreScorePlugin: Send + Sync {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        cache: &Cache,
    ) -> Result<bool, Rejection>;
}

/// Ranks a feasible node (called concurrently), then normalizes all nodes' scores to
/// `0..=MAX_NODE_SCORE`.
pub trait ScorePlugin: Send + Sync {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        cache: &Cache,
    ) -> Result<i64, Rejection>;
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) {}
}

/// Claims resources for the pod on the chosen node before binding; `unreserve` undoes it when
/// a later step fails.
pub trait ReservePlugin: Send + Sync {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Result<(), Rejection>;
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Runs after the node is chosen and before the pod is bound (e.g. to write the volume
/// decisions the binding depends on). An error fails this binding attempt: the pod is
/// unreserved and retried.
#[async_trait::async_trait]
pub trait PreBindPlugin: Send + Sync {
    async fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Result<(), String>;
}

/// What a bind plugin did.
#[derive(Debug, PartialEq, Eq)]
pub enum BindOutcome {
    Bound,
    /// Not this plugin's pod: ask the next one.
    Skip,
    Failed(String),
}

/// Writes the decision to the apiserver.
#[async_trait::async_trait]
pub trait BindPlugin: Send + Sync {
    async fn bind(&self, pod: &PodInfo, node: &str) -> BindOutcome;
}

/// What a plugin factory gets besides its args.
#[derive(Clone, Default)]
pub struct PluginContext {
    /// The client bind plugins write through (`None` in unit tests).
    pub client: Option<kube::Client>,
}

/// Plugins with their score weights, in order.
type Weighted = Vec<(Arc<dyn Plugin>, i64)>;
/// Instantiates (or reuses) a plugin by name.
type Instantiate<'a> = dyn FnMut(&str) -> Result<Arc<dyn Plugin>, FrameworkError> + 'a;

/// Builds a plugin from its (optional) `pluginConfig` args.
pub type Factory = fn(
    args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError>;

/// Plugins by name.
#[derive(Clone)]
pub struct Registry {
    factories: BTreeMap<&'static str, Factory>,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            factories: BTreeMap::new(),
        }
    }

    pub fn register(&mut self, name: &'static str, f: Factory) {
        self.factories.insert(name, f);
    }

    pub fn get(&self, name: &str) -> Option<Factory> {
        self.factories.get(name).copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }
}

impl Default for Registry {
    fn default() -> Self {
        crate::plugins::registry()
    }
}

/// A profile's plugins in order per extension point: one scheduler name's behaviour.
pub struct Framework {
    pub scheduler_name: String,
    pre_filters: Vec<Arc<dyn Plugin>>,
    filters: Vec<Arc<dyn Plugin>>,
    pre_scores: Vec<Arc<dyn Plugin>>,
    scores: Vec<(Arc<dyn Plugin>, i64)>,
    reserves: Vec<Arc<dyn Plugin>>,
    pre_binds: Vec<Arc<dyn PreBindPlugin>>,
    binders: Vec<Arc<dyn BindPlugin>>,
    events: HashMap<&'static str, EventMask>,
    /// 0 means upstream's adaptive default.
    percentage_of_nodes_to_score: u32,
    next_start: AtomicUsize,
}

/// Why no node was found, counted per reason as upstream reports it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub reasons: BTreeMap<String, usize>,
    pub unschedulable_plugins: BTreeSet<&'static str>,
    pub pre_filter_msg: Option<String>,
    /// Some plugin failed with an error rather than a rejection.
    pub error: Option<String>,
}

/// No node fits the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
}

impl std::fmt::Display for FitError {
    /// Upstream's message: `0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had
    /// untolerated taint {k: v}.` with the "N reason" strings sorted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.num_all_nodes == 0 && self.diagnosis.pre_filter_msg.is_none() {
            return write!(f, "no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(m) = &self.diagnosis.pre_filter_msg {
            return write!(f, " {m}.");
        }
        let mut parts: Vec<String> = self
            .diagnosis
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        write!(f, " {}.", parts.join(", "))
    }
}

/// The outcome of one scheduling attempt.
pub struct Decision {
    pub node: String,
    pub state: CycleState,
    pub evaluated: usize,
    pub feasible: usize,
}

impl Framework {
    /// Builds the profile's plugins from the registry and the configuration.
    pub fn new(
        profile: &Profile,
        registry: &Registry,
        ctx: &PluginContext,
        global_percentage: u32,
    ) -> Result<Self, FrameworkError> {
        let pname = profile.scheduler_name.clone();
        let args: HashMap<&str, &serde_json::Value> = profile
            .plugin_config
            .iter()
            .map(|pc| (pc.name.as_str(), &pc.args))
            .collect();
        let mut instances: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
        let mut instantiate = |name: &str| -> Result<Arc<dyn Plugin>, FrameworkError> {
            if let Some(p) = instances.get(name) {
                return Ok(p.clone());
            }
            let f = registry
                .get(name)
                .ok_or_else(|| FrameworkError::UnknownPlugin {
                    profile: pname.clone(),
                    name: name.to_string(),
                    known: registry.names().join(", "),
                })?;
            let p = f(args.get(name).copied(), ctx)?;
            instances.insert(name.to_string(), p.clone());
            Ok(p)
        };

        // multiPoint: the defaults, minus what is disabled, plus what is enabled.
        let mut multi: Vec<(String, Option<i64>)> = crate::plugins::DEFAULT_PLUGINS
            .iter()
            .map(|(n, w)| (n.to_string(), *w))
            .collect();
        apply_list(&mut multi, &profile.plugins.multi_point);
        let mut multi_plugins = Vec::new();
        for (name, w) in &multi {
            multi_plugins.push((instantiate(name)?, *w));
        }

        type Has = fn(&Arc<dyn Plugin>) -> bool;
        let point = |list: &PluginList,
                     has: Has,
                     point: &'static str,
                     inst: &mut Instantiate|
         -> Result<Weighted, FrameworkError> {
            let mut names: Vec<(String, Option<i64>)> = multi_plugins
                .iter()
                .filter(|(p, _)| has(p))
                .map(|(p, w)| (p.name().to_string(), *w))
                .collect();
            apply_list(&mut names, list);
            let mut out = Vec::new();
            for (name, w) in names {
                let p = inst(&name)?;
                if !has(&p) {
                    return Err(FrameworkError::NotAnExtension {
                        profile: profile.scheduler_name.clone(),
                        name,
                        point,
                    });
                }
                out.push((p, w.unwrap_or(1)));
            }
            Ok(out)
        };
        let strip =
            |v: Vec<(Arc<dyn Plugin>, i64)>| v.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        let pl = &profile.plugins;
        let pre_filters = strip(point(
            &pl.pre_filter,
            |p| p.as_pre_filter().is_some(),
            "preFilter",
            &mut instantiate,
        )?);
        let filters = strip(point(
            &pl.filter,
            |p| p.as_filter().is_some(),
            "filter",
            &mut instantiate,
        )?);
        let pre_scores = strip(point(
            &pl.pre_score,
            |p| p.as_pre_score().is_some(),
            "preScore",
            &mut instantiate,
        )?);
        let scores = point(
            &pl.score,
            |p| p.as_score().is_some(),
            "score",
            &mut instantiate,
        )?;
        for (p, w) in &scores {
            if *w <= 0 {
                return Err(FrameworkError::BadWeight(pname.clone(), p.name().into()));
            }
        }
        let reserves = strip(point(
            &pl.reserve,
            |p| p.as_reserve().is_some(),
            "reserve",
            &mut instantiate,
        )?);
        let pre_binds: Vec<Arc<dyn PreBindPlugin>> = strip(point(
            &pl.pre_bind,
            |p| p.clone().as_pre_bind().is_some(),
            "preBind",
            &mut instantiate,
        )?)
        .into_iter()
        .filter_map(|p| p.as_pre_bind())
        .collect();
        let binders: Vec<Arc<dyn BindPlugin>> = strip(point(
            &pl.bind,
            |p| p.clone().as_bind().is_some(),
            "bind",
            &mut instantiate,
        )?)
        .into_iter()
        .filter_map(|p| p.as_bind())
        .collect();
        if binders.is_empty() {
            return Err(FrameworkError::NoBinder(pname));
        }
        let events = instances.values().map(|p| (p.name(), p.events())).collect();
        Ok(Self {
            scheduler_name: profile.scheduler_name.clone(),
            pre_filters,
            filters,
            pre_scores,
            scores,
            reserves,
            pre_binds,
            binders,
            events,
            percentage_of_nodes_to_score: profile
                .percentage_of_nodes_to_score
                .unwrap_or(global_percentage),
            next_start: AtomicUsize::new(0),
        })
    }

    /// Names of the plugins at each point, for logs and tests.
    pub fn describe(&self) -> String {
        let names =
            |v: &[Arc<dyn Plugin>]| v.iter().map(|p| p.name()).collect::<Vec<_>>().join(",");
        format!(
            "preFilter=[{}] filter=[{}] preScore=[{}] score=[{}]",
            names(&self.pre_filters),
            names(&self.filters),
            names(&self.pre_scores),
            self.scores
                .iter()
                .map(|(p, w)| format!("{}:{w}", p.name()))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// Whether any plugin that rejected a pod registered for one of `events`. A pod rejected
    /// by no plugin in particular (an error) is retried on anything.
    pub fn events_can_help(&self, plugins: &BTreeSet<&'static str>, events: EventMask) -> bool {
        if plugins.is_empty() {
            return true;
        }
        plugins
            .iter()
            .any(|p| self.events.get(p).is_none_or(|m| m.intersects(events)))
    }

    /// How many feasible nodes to look for: upstream's `numFeasibleNodesToFind`.
    pub fn num_feasible_nodes_to_find(&self, all: usize) -> usize {
        const MIN_FEASIBLE: usize = 100;
        const MIN_PERCENTAGE: usize = 5;
        let pct = self.percentage_of_nodes_to_score as usize;
        if all < MIN_FEASIBLE || pct >= 100 {
            return all;
        }
        let pct = if pct == 0 {
            (50usize.saturating_sub(all / 125)).max(MIN_PERCENTAGE)
        } else {
            pct
        };
        (all * pct / 100).max(MIN_FEASIBLE)
    }

    /// One scheduling cycle for `pod` against the cache: PreFilter, Filter (parallel, stopping
    /// once enough feasible nodes are found), PreScore, Score (parallel), NormalizeScore, select.
    pub fn schedule(&self, pod: &PodInfo, cache: &Cache) -> Result<Decision, FitError> {
        let all = cache.node_count();
        let mut diagnosis = Diagnosis::default();
        if let Some(e) = &pod.parse_error {
            diagnosis.pre_filter_msg = Some(format!("pod has an unreadable field: {e}"));
            diagnosis.unschedulable_plugins.insert("PodInfo");
            return Err(FitError {
                num_all_nodes: all,
                diagnosis,
            });
        }
        if all == 0 {
            return Err(FitError {
                num_all_nodes: 0,
                diagnosis,
            });
        }
        let mut state = CycleState::default();
        let mut skip: Vec<&'static str> = Vec::new();
        let mut restrict: Option<BTreeSet<String>> = None;
        for p in &self.pre_filters {
            let Some(pf) = p.as_pre_filter() else {
                continue;
            };
            match pf.pre_filter(&mut state, pod, cache) {
                Ok(PreFilterOutcome::Continue) => {}
                Ok(PreFilterOutcome::Skip) => skip.push(p.name()),
                Ok(PreFilterOutcome::Nodes(names)) => {
                    restrict = Some(match restrict {
                        None => names,
                        Some(r) => r.intersection(&names).cloned().collect(),
                    });
                }
                Err(r) => {
                    if r.code == Code::Error {
                        diagnosis.error = Some(r.reasons.join(", "));
                    }
                    diagnosis.unschedulable_plugins.insert(p.name());
                    diagnosis.pre_filter_msg = Some(r.reasons.join(", "));
                    return Err(FitError {
                        num_all_nodes: all,
                        diagnosis,
                    });
                }
            }
        }
        let filters: Vec<(&'static str, &dyn FilterPlugin)> = self
            .filters
            .iter()
            .filter(|p| !skip.contains(&p.name()))
            .filter_map(|p| p.as_filter().map(|f| (p.name(), f)))
            .collect();

        let candidates: Vec<&NodeInfo> = match &restrict {
            Some(names) => names.iter().filter_map(|n| cache.node(n)).collect(),
            None => cache.nodes().iter().collect(),
        };
        let candidates: Vec<&NodeInfo> = candidates
            .into_iter()
            .filter(|n| n.spec.is_some())
            .collect();
        if candidates.is_empty() {
            diagnosis.pre_filter_msg =
                Some("node(s) didn't satisfy plugin(s) [NodeName NodeAffinity]".to_string());
            diagnosis.unschedulable_plugins.insert("NodeName");
            diagnosis.unschedulable_plugins.insert("NodeAffinity");
            return Err(FitError {
                num_all_nodes: all,
                diagnosis,
            });
        }
        let n = candidates.len();
        let want = self.num_feasible_nodes_to_find(n);
        let start = if restrict.is_some() {
            0
        } else {
            self.next_start.load(Ordering::Relaxed) % n
        };
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(n));
        let mut rejected: Vec<Rejection> = Vec::new();
        let mut processed = 0;
        while processed < n && feasible.len() < want {
            // Look at as many nodes as are still needed: with most nodes feasible, one
            // parallel pass covers the sample.
            let take = (want - feasible.len()).max(64).min(n - processed);
            let results: Vec<Option<Rejection>> = (processed..processed + take)
                .into_par_iter()
                .with_min_len(64)
                .map(|j| run_filters(&filters, &state, pod, candidates[(start + j) % n]))
                .collect();
            for (j, r) in results.into_iter().enumerate() {
                match r {
                    None if feasible.len() < want => {
                        feasible.push(candidates[(start + processed + j) % n])
                    }
                    None => {}
                    Some(r) => rejected.push(r),
                }
            }
            processed += take;
        }
        if restrict.is_none() {
            self.next_start
                .store((start + processed) % n, Ordering::Relaxed);
        }
        if feasible.is_empty() {
            for r in rejected {
                if r.code == Code::Error {
                    diagnosis.error.get_or_insert_with(|| r.reasons.join(", "));
                }
                diagnosis.unschedulable_plugins.insert(r.plugin);
                for reason in r.reasons {
                    *diagnosis.reasons.entry(reason.into_owned()).or_insert(0) += 1;
                }
            }
            return Err(FitError {
                num_all_nodes: all,
                diagnosis,
            });
        }
        let evaluated = processed;
        let feasible_count = feasible.len();
        if feasible.len() == 1 {
            return Ok(Decision {
                node: feasible[0].name.clone(),
                state,
                evaluated,
                feasible: 1,
            });
        }
        let node = match self.score(&mut state, pod, &feasible, cache) {
            Ok(best) => feasible[best].name.clone(),
            Err(r) => {
                diagnosis.error = Some(format!("{}: {}", r.plugin, r.reasons.join(", ")));
                return Err(FitError {
                    num_all_nodes: all,
                    diagnosis,
                });
            }
        };
        Ok(Decision {
            node,
            state,
            evaluated,
            feasible: feasible_count,
        })
    }

    /// Scores the feasible nodes; returns the index of the best (ties broken at random, as
    /// upstream's `selectHost`).
    fn score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        cache: &Cache,
    ) -> Result<usize, Rejection> {
        let mut skip: Vec<&'static str> = Vec::new();
        for p in &self.pre_scores {
            let Some(ps) = p.as_pre_score() else { continue };
            match ps.pre_score(state, pod, nodes, cache) {
                Ok(true) => {}
                Ok(false) => skip.push(p.name()),
                Err(mut r) => {
                    r.plugin = p.name();
                    return Err(r);
                }
            }
        }
        let scorers: Vec<(&'static str, &dyn ScorePlugin, i64)> = self
            .scores
            .iter()
            .filter(|(p, _)| !skip.contains(&p.name()))
            .filter_map(|(p, w)| p.as_score().map(|s| (p.name(), s, *w)))
            .collect();
        let k = scorers.len();
        let m = nodes.len();
        let mut totals = vec![0i64; m];
        if k > 0 {
            // Node-major: one parallel pass over nodes runs every plugin for that node.
            let mut buf = vec![0i64; m * k];
            let state_ref: &CycleState = state;
            buf.par_chunks_mut(k)
                .with_min_len(32)
                .zip(nodes.par_iter())
                .try_for_each(|(row, node)| {
                    for (j, (name, s, _)) in scorers.iter().enumerate() {
                        row[j] = s.score(state_ref, pod, node, cache).map_err(|mut r| {
                            r.plugin = name;
                            r
                        })?;
                    }
                    Ok::<(), Rejection>(())
                })?;
            let mut column = vec![0i64; m];
            for (j, (_, s, w)) in scorers.iter().enumerate() {
                for (i, c) in column.iter_mut().enumerate() {
                    *c = buf[i * k + j];
                }
                s.normalize(state_ref, pod, &mut column);
                for (t, c) in totals.iter_mut().zip(&column) {
                    *t += c * w;
                }
            }
        }
        let mut rng = rand::rng();
        let mut best = 0;
        let mut ties = 0u32;
        for (i, &t) in totals.iter().enumerate() {
            if t > totals[best] {
                best = i;
                ties = 1;
            } else if t == totals[best] {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(best)
    }

    /// Runs Reserve plugins in order; on a rejection unreserves the ones that ran, in reverse.
    pub fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
    ) -> Result<(), Rejection> {
        for (i, p) in self.reserves.iter().enumerate() {
            let Some(r) = p.as_reserve() else { continue };
            if let Err(mut rej) = r.reserve(state, pod, node) {
                rej.plugin = p.name();
                for q in self.reserves[..i].iter().rev() {
                    if let Some(r) = q.as_reserve() {
                        r.unreserve(state, pod, node);
                    }
                }
                return Err(rej);
            }
        }
        Ok(())
    }

    /// Undoes every Reserve (after a failed bind).
    pub fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for q in self.reserves.iter().rev() {
            if let Some(r) = q.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }

    /// The bind plugins in order (the first that does not skip binds).
    pub fn binders(&self) -> Vec<Arc<dyn BindPlugin>> {
        self.binders.clone()
    }

    /// The PreBind plugins in order (all run, before any binder).
    pub fn pre_binds(&self) -> Vec<Arc<dyn PreBindPlugin>> {
        self.pre_binds.clone()
    }
}

fn run_filters(
    filters: &[(&'static str, &dyn FilterPlugin)],
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Option<Rejection> {
    for (name, f) in filters {
        if let Err(mut r) = f.filter(state, pod, node) {
            r.plugin = name;
            return Some(r);
        }
    }
    None
}

/// Upstream's enable/disable semantics for one extension point: `disabled` removes (`*` all),
/// then `enabled` appends (or re-weights one already present).
fn apply_list(names: &mut Vec<(String, Option<i64>)>, list: &PluginList) {
    if list.disabled.iter().any(|p| p.name == "*") {
        names.clear();
    } else {
        names.retain(|(n, _)| !list.disabled.iter().any(|d| &d.name == n));
    }
    for e in &list.enabled {
        match names.iter_mut().find(|(n, _)| n == &e.name) {
            Some(slot) => {
                if e.weight.is_some() {
                    slot.1 = e.weight;
                }
            }
            None => names.push((e.name.clone(), e.weight)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_message_matches_upstream_format() {
        let mut d = Diagnosis::default();
        d.reasons.insert("Insufficient memory".into(), 3);
        d.reasons
            .insert("node(s) had untolerated taint {dedicated: wasm}".into(), 2);
        let e = FitError {
            num_all_nodes: 5,
            diagnosis: d,
        };
        assert_eq!(
            e.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: wasm}, 3 Insufficient memory."
        );
        let none = FitError {
            num_all_nodes: 0,
            diagnosis: Diagnosis::default(),
        };
        assert_eq!(none.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn adaptive_sampling_follows_upstream() {
        let profile = Profile::default();
        let f =
            Framework::new(&profile, &Registry::default(), &PluginContext::default(), 0).unwrap();
        assert_eq!(f.num_feasible_nodes_to_find(50), 50);
        assert_eq!(f.num_feasible_nodes_to_find(1000), 420);
        assert_eq!(f.num_feasible_nodes_to_find(5000), 500);
        assert_eq!(f.num_feasible_nodes_to_find(100_000), 5000);
        let all = Framework::new(
            &profile,
            &Registry::default(),
            &PluginContext::default(),
            100,
        )
        .unwrap();
        assert_eq!(all.num_feasible_nodes_to_find(5000), 5000);
    }
}
