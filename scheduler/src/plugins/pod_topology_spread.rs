//! PodTopologySpread: `topologySpreadConstraints`. DoNotSchedule constraints filter nodes
//! whose domain would exceed `maxSkew` over the least loaded domain; ScheduleAnyway
//! constraints score nodes in emptier domains higher.
//!
//! Deviation: upstream's system default constraints (for pods owned by Services, ReplicaSets,
//! StatefulSets) are not applied; only the pod's own constraints count.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    PreFilterOutcome, PreFilterPlugin, PreScorePlugin, Rejection, ScorePlugin, MAX_NODE_SCORE,
};
use crate::info::{NodeInfo, PodInfo};
use crate::labels::{Requirement, Selector};
use crate::plugins::node_affinity::required_matches;
use crate::plugins::taint_toleration::tolerates;

pub const NAME: &str = "PodTopologySpread";
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub struct PodTopologySpread;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(PodTopologySpread, ctx)
}

/// One parsed constraint.
#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: Selector,
    min_domains: Option<i64>,
    honor_affinity: bool,
    honor_taints: bool,
    self_match: i64,
}

fn constraints(pod: &PodInfo, hard: bool) -> Result<Vec<Constraint>, Rejection> {
    let Some(spec) = &pod.pod.spec else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for c in spec.topology_spread_constraints.iter().flatten() {
        if (c.when_unsatisfiable == "DoNotSchedule") != hard {
            continue;
        }
        let mut selector = match &c.label_selector {
            Some(s) => Selector::from_label_selector(s)
                .map_err(|e| Rejection::unresolvable(e.to_string()))?,
            // No selector selects no pods.
            None => Selector {
                requirements: vec![Requirement::In(String::new(), vec![])],
            },
        };
        for key in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod.labels.get(key) {
                selector
                    .requirements
                    .push(Requirement::In(key.clone(), vec![v.clone()]));
            }
        }
        let self_match = i64::from(selector.matches(&pod.labels));
        out.push(Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.map(i64::from),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            self_match,
        });
    }
    Ok(out)
}

/// Whether a node counts for the constraints: it passes the policies and has every key.
fn node_counts(pod: &PodInfo, node: &NodeInfo, cs: &[Constraint]) -> bool {
    let Some(spec) = &node.spec else { return false };
    if cs.iter().any(|c| c.honor_affinity) && !required_matches(pod, node) {
        return false;
    }
    if cs.iter().any(|c| c.honor_taints)
        && spec.taints.iter().any(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !pod.tolerations.iter().any(|tol| tolerates(tol, t))
        })
    {
        return false;
    }
    cs.iter().all(|c| spec.labels.contains_key(&c.topology_key))
}

fn matching_pods(pod: &PodInfo, node: &NodeInfo, c: &Constraint) -> i64 {
    node.pods
        .iter()
        .filter(|p| p.namespace == pod.namespace && !p.deleting && c.selector.matches(&p.labels))
        .count() as i64
}

/// Pods matching each constraint per domain.
fn count_domains<'a>(
    pod: &PodInfo,
    nodes: impl Iterator<Item = &'a NodeInfo>,
    cs: &[Constraint],
) -> Vec<HashMap<String, i64>> {
    let mut counts = vec![HashMap::new(); cs.len()];
    for node in nodes {
        if !node_counts(pod, node, cs) {
            continue;
        }
        let labels = node.labels();
        for (i, c) in cs.iter().enumerate() {
            let Some(v) = labels.get(&c.topology_key) else {
                continue;
            };
            *counts[i].entry(v.clone()).or_insert(0) += matching_pods(pod, node, c);
        }
    }
    counts
}

struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    min: Vec<i64>,
}

struct ScoreState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd
            | ClusterEvent::NodeLabelChange
            | ClusterEvent::NodeTaintChange
            | ClusterEvent::NodeDelete
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

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cache: &Cache,
    ) -> Result<PreFilterOutcome, Rejection> {
        let cs = constraints(pod, true)?;
        if cs.is_empty() {
            return Ok(PreFilterOutcome::Skip);
        }
        let counts = count_domains(pod, cache.nodes().iter(), &cs);
        let min = cs
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                let domains = m.len() as i64;
                if c.min_domains.is_some_and(|d| domains < d) {
                    0
                } else {
                    m.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        state.write(
            NAME,
            FilterState {
                constraints: cs,
                counts,
                min,
            },
        );
        Ok(PreFilterOutcome::Continue)
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(s) = state.read::<FilterState>(NAME) else {
            return Ok(());
        };
        let labels = node.labels();
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = labels.get(&c.topology_key) else {
                return Err(Rejection::unresolvable(REASON_MISSING_LABEL));
            };
            let count = s.counts[i].get(v).copied().unwrap_or(0);
            if count + c.self_match - s.min[i] > c.max_skew {
                return Err(Rejection::unschedulable(REASON));
            }
        }
        Ok(())
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        cache: &Cache,
    ) -> Result<bool, Rejection> {
        let cs = constraints(pod, false)?;
        if cs.is_empty() {
            return Ok(false);
        }
        let counts = count_domains(pod, cache.nodes().iter(), &cs);
        // Weigh each constraint by how many domains the feasible nodes span, as upstream
        // (`topologyNormalizingWeight`), so a hostname constraint does not drown a zone one.
        let weights = cs
            .iter()
            .map(|c| {
                let mut values: Vec<&String> = nodes
                    .iter()
                    .filter_map(|n| n.labels().get(&c.topology_key))
                    .collect();
                values.sort();
                values.dedup();
                ((values.len() + 2) as f64).ln()
            })
            .collect();
        state.write(
            NAME,
            ScoreState {
                constraints: cs,
                counts,
                weights,
            },
        );
        Ok(true)
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Cache,
    ) -> Result<i64, Rejection> {
        let Some(s) = state.read::<ScoreState>(NAME) else {
            return Ok(0);
        };
        if !node_counts(pod, node, &s.constraints) {
            // Ignored node: scored 0 after normalization.
            return Ok(-1);
        }
        let labels = node.labels();
        let mut score = 0f64;
        for (i, c) in s.constraints.iter().enumerate() {
            let v = &labels[&c.topology_key];
            let count = s.counts[i].get(v).copied().unwrap_or(0);
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = valid.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
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
            json!({"allocatable": {"cpu": "8", "pods": "110"}}),
        )
    }

    fn web(name: &str) -> Arc<PodInfo> {
        pod_with(name, json!({"app": "web"}), json!({}))
    }

    fn spread(name: &str, key: &str, when: &str, skew: i32) -> Arc<PodInfo> {
        pod_with(
            name,
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [{"maxSkew": skew, "topologyKey": key,
                "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    }

    #[test]
    fn hard_constraint_filters_the_fuller_zone() {
        // zone a: 2 web pods, zone b: 0.
        let cache = cache_of(
            vec![
                zoned("a1", "a"),
                zoned("a2", "a"),
                zoned("b1", "b"),
                node_with(
                    "bare",
                    json!({}),
                    json!({}),
                    json!({"allocatable": {"cpu": "1"}}),
                ),
            ],
            vec![(web("w1"), "a1"), (web("w2"), "a2")],
        );
        let got = filter_all(
            &PodTopologySpread,
            &spread("p", "zone", "DoNotSchedule", 1),
            &cache,
        );
        let ok: Vec<bool> = got.iter().map(|r| r.is_ok()).collect();
        assert_eq!(ok, vec![false, false, true, false]);
        assert_eq!(got[0].as_ref().unwrap_err().reasons[0], REASON);
        assert_eq!(
            got[3].as_ref().unwrap_err().reasons[0],
            REASON_MISSING_LABEL
        );
        // maxSkew 3 allows it: 2 + 1 - 0 = 3.
        let ok: Vec<bool> = filter_all(
            &PodTopologySpread,
            &spread("p", "zone", "DoNotSchedule", 3),
            &cache,
        )
        .iter()
        .map(|r| r.is_ok())
        .collect();
        assert_eq!(ok, vec![true, true, true, false]);
        // Other namespaces' or unselected pods don't count; no constraints → skip.
        let ok: Vec<bool> = filter_all(&PodTopologySpread, &web("plain"), &cache)
            .iter()
            .map(|r| r.is_ok())
            .collect();
        assert_eq!(ok, vec![true; 4]);
    }

    #[test]
    fn soft_constraint_prefers_emptier_domains() {
        let cache = cache_of(
            vec![zoned("a1", "a"), zoned("b1", "b"), zoned("c1", "c")],
            vec![(web("w1"), "a1"), (web("w2"), "a1"), (web("w3"), "b1")],
        );
        let scores = score_all(
            &PodTopologySpread,
            &spread("p", "zone", "ScheduleAnyway", 1),
            &cache,
        );
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[2], MAX_NODE_SCORE);
    }
}
