//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's and the
//! existing pods' anti-affinity towards it), and preferred terms as scores.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, Code, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    PreFilterOutcome, PreFilterPlugin, PreScorePlugin, Rejection, ScorePlugin, MAX_NODE_SCORE,
};
use crate::info::{NodeInfo, PodInfo};

pub const NAME: &str = "InterPodAffinity";
pub const REASON_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI: &str = "node(s) didn't match pod anti-affinity rules";

/// Weight of an existing pod's *required* affinity towards the incoming pod when scoring.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub struct InterPodAffinity;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(InterPodAffinity, ctx)
}

type TopologyCounts = HashMap<(String, String), i64>;

#[derive(Default)]
struct FilterState {
    /// Domains where an existing pod's required anti-affinity selects the incoming pod.
    existing_anti: TopologyCounts,
    /// Domains holding pods that match all of the incoming pod's required affinity terms.
    affinity: TopologyCounts,
    /// Domains holding pods that match one of the incoming pod's anti-affinity terms.
    anti: TopologyCounts,
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd
            | ClusterEvent::NodeLabelChange
            | ClusterEvent::AssignedPodAdd
            | ClusterEvent::AssignedPodUpdate
            | ClusterEvent::AssignedPodDelete
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cache: &Cache,
    ) -> Result<PreFilterOutcome, Rejection> {
        let has_own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !has_own && cache.anti_affinity_pods() == 0 {
            return Ok(PreFilterOutcome::Skip);
        }
        let mut s = FilterState::default();
        for node in cache.nodes() {
            let labels = node.labels();
            if node.pods_with_required_anti_affinity > 0 {
                for existing in &node.pods {
                    for term in &existing.required_anti_affinity {
                        if term.matches(pod) {
                            if let Some(v) = labels.get(&term.topology_key) {
                                *s.existing_anti
                                    .entry((term.topology_key.clone(), v.clone()))
                                    .or_insert(0) += 1;
                            }
                        }
                    }
                }
            }
            if !has_own {
                continue;
            }
            for existing in &node.pods {
                if !pod.required_affinity.is_empty()
                    && pod.required_affinity.iter().all(|t| t.matches(existing))
                {
                    for t in &pod.required_affinity {
                        if let Some(v) = labels.get(&t.topology_key) {
                            *s.affinity
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_insert(0) += 1;
                        }
                    }
                }
                for t in &pod.required_anti_affinity {
                    if t.matches(existing) {
                        if let Some(v) = labels.get(&t.topology_key) {
                            *s.anti
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_insert(0) += 1;
                        }
                    }
                }
            }
        }
        state.write(NAME, s);
        Ok(PreFilterOutcome::Continue)
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(s) = state.read::<FilterState>(NAME) else {
            return Ok(());
        };
        let labels = node.labels();
        let in_domain = |counts: &TopologyCounts, key: &str| {
            labels.get(key).is_some_and(|v| {
                counts
                    .get(&(key.to_string(), v.clone()))
                    .is_some_and(|n| *n > 0)
            })
        };
        // Upstream's order: the pod's affinity, its anti-affinity, then existing pods'.
        if !pod.required_affinity.is_empty() {
            let all = pod
                .required_affinity
                .iter()
                .all(|t| in_domain(&s.affinity, &t.topology_key));
            // The first pod of a group that selects itself may go anywhere with the keys,
            // or it could never be scheduled.
            let first_of_its_kind = s.affinity.is_empty()
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(pod) && labels.contains_key(&t.topology_key));
            if !all && !first_of_its_kind {
                return Err(Rejection {
                    code: Code::UnschedulableAndUnresolvable,
                    reasons: vec![REASON_AFFINITY.into()],
                    plugin: "",
                });
            }
        }
        if pod
            .required_anti_affinity
            .iter()
            .any(|t| in_domain(&s.anti, &t.topology_key))
        {
            return Err(Rejection::unschedulable(REASON_ANTI));
        }
        if s.existing_anti
            .keys()
            .any(|(k, v)| labels.get(k) == Some(v))
        {
            return Err(Rejection::unschedulable(REASON_EXISTING_ANTI));
        }
        Ok(())
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        cache: &Cache,
    ) -> Result<bool, Rejection> {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && cache.affinity_pods() == 0 {
            return Ok(false);
        }
        let mut scores: TopologyCounts = HashMap::new();
        let mut add = |key: &str, labels: &std::collections::BTreeMap<String, String>, w: i64| {
            if let Some(v) = labels.get(key) {
                *scores.entry((key.to_string(), v.clone())).or_insert(0) += w;
            }
        };
        for node in cache.nodes() {
            if !has_preferred && node.pods_with_affinity == 0 {
                continue;
            }
            let labels = node.labels();
            for existing in &node.pods {
                for t in &pod.preferred_affinity {
                    if t.term.matches(existing) {
                        add(&t.term.topology_key, labels, i64::from(t.weight));
                    }
                }
                for t in &pod.preferred_anti_affinity {
                    if t.term.matches(existing) {
                        add(&t.term.topology_key, labels, -i64::from(t.weight));
                    }
                }
                for t in &existing.required_affinity {
                    if t.matches(pod) {
                        add(&t.topology_key, labels, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for t in &existing.preferred_affinity {
                    if t.term.matches(pod) {
                        add(&t.term.topology_key, labels, i64::from(t.weight));
                    }
                }
                for t in &existing.preferred_anti_affinity {
                    if t.term.matches(pod) {
                        add(&t.term.topology_key, labels, -i64::from(t.weight));
                    }
                }
            }
        }
        if scores.is_empty() {
            return Ok(false);
        }
        state.write(NAME, ScoreState(scores));
        Ok(true)
    }
}

struct ScoreState(TopologyCounts);

impl ScorePlugin for InterPodAffinity {
    fn score(
        &self,
        state: &CycleState,
        _: &PodInfo,
        node: &NodeInfo,
        _: &Cache,
    ) -> Result<i64, Rejection> {
        let Some(ScoreState(s)) = state.read::<ScoreState>(NAME) else {
            return Ok(0);
        };
        let labels = node.labels();
        Ok(s.iter()
            .filter(|((k, v), _)| labels.get(k) == Some(v))
            .map(|(_, w)| *w)
            .sum())
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                MAX_NODE_SCORE * (*s - min) / diff
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node_with, pod_with};
    use crate::plugins::testing::{cache_of, filter_all, score_all};
    use serde_json::json;

    fn zoned(name: &str, zone: &str) -> NodeInfo {
        node_with(
            name,
            json!({"zone": zone, "kubernetes.io/hostname": name}),
            json!({}),
            json!({"allocatable": {"cpu": "8"}}),
        )
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn ok(results: Vec<Result<(), Rejection>>) -> Vec<bool> {
        results.iter().map(|r| r.is_ok()).collect()
    }

    #[test]
    fn required_anti_affinity_keeps_pods_apart() {
        let db = pod_with("db1", json!({"app": "db"}), json!({}));
        let cache = cache_of(
            vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")],
            vec![(db, "a1")],
        );
        let by_host = pod_with(
            "db2",
            json!({"app": "db"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "kubernetes.io/hostname")]}}}),
        );
        assert_eq!(
            ok(filter_all(&InterPodAffinity, &by_host, &cache)),
            vec![false, true, true]
        );
        let by_zone = pod_with(
            "db3",
            json!({"app": "db"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}}),
        );
        let r = filter_all(&InterPodAffinity, &by_zone, &cache);
        assert_eq!(ok(r.clone()), vec![false, false, true]);
        assert_eq!(r[0].as_ref().unwrap_err().reasons[0], REASON_ANTI);
    }

    #[test]
    fn existing_pods_anti_affinity_is_respected() {
        let loner = pod_with(
            "loner",
            json!({"app": "loner"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}}),
        );
        let cache = cache_of(
            vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")],
            vec![(loner, "a1")],
        );
        let web = pod_with("web", json!({"app": "web"}), json!({}));
        let r = filter_all(&InterPodAffinity, &web, &cache);
        assert_eq!(ok(r.clone()), vec![false, false, true]);
        assert_eq!(r[1].as_ref().unwrap_err().reasons[0], REASON_EXISTING_ANTI);
        let other = pod_with("api", json!({"app": "api"}), json!({}));
        assert_eq!(
            ok(filter_all(&InterPodAffinity, &other, &cache)),
            vec![true, true, true]
        );
    }

    #[test]
    fn required_affinity_follows_its_target_or_seeds_itself() {
        let cache = cache_of(
            vec![zoned("a1", "a"), zoned("b1", "b")],
            vec![(pod_with("c", json!({"app": "cache"}), json!({})), "b1")],
        );
        let near_cache = pod_with(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}}),
        );
        assert_eq!(
            ok(filter_all(&InterPodAffinity, &near_cache, &cache)),
            vec![false, true]
        );
        let needs_missing = pod_with(
            "x",
            json!({"app": "x"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("nothing", "zone")]}}}),
        );
        assert_eq!(
            ok(filter_all(&InterPodAffinity, &needs_missing, &cache)),
            vec![false, false]
        );
        let self_affine = pod_with(
            "g1",
            json!({"app": "group"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("group", "zone")]}}}),
        );
        assert_eq!(
            ok(filter_all(&InterPodAffinity, &self_affine, &cache)),
            vec![true, true]
        );
    }

    #[test]
    fn preferred_affinity_scores() {
        let cache = cache_of(
            vec![zoned("a1", "a"), zoned("b1", "b"), zoned("c1", "c")],
            vec![(pod_with("c", json!({"app": "cache"}), json!({})), "b1")],
        );
        let p = pod_with(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": term("cache", "zone")}]}}}),
        );
        assert_eq!(score_all(&InterPodAffinity, &p, &cache), vec![0, 100, 0]);
        let anti = pod_with(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": term("cache", "zone")}]}}}),
        );
        assert_eq!(
            score_all(&InterPodAffinity, &anti, &cache),
            vec![100, 0, 100]
        );
    }
}
