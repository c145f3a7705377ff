//! NodeAffinity: `nodeSelector` and required node affinity must match the node's labels;
//! preferred node affinity terms add their weights to the score.

use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    PreFilterOutcome, PreFilterPlugin, PreScorePlugin, Rejection, ScorePlugin,
};
use crate::info::{NodeInfo, PodInfo};
use crate::labels::any_term_matches;

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(NodeAffinity, ctx)
}

/// Whether the node satisfies the pod's `nodeSelector` and required node affinity.
pub fn required_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    let labels = node.labels();
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    match &pod.required_node_terms {
        None => true,
        Some(terms) => any_term_matches(terms, &node.name, labels),
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd | ClusterEvent::NodeLabelChange
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

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Cache,
    ) -> Result<PreFilterOutcome, Rejection> {
        Ok(
            if pod.node_selector.is_empty() && pod.required_node_terms.is_none() {
                PreFilterOutcome::Skip
            } else {
                PreFilterOutcome::Continue
            },
        )
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        if required_matches(pod, node) {
            Ok(())
        } else {
            Err(Rejection::unresolvable(REASON))
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        _: &Cache,
    ) -> Result<bool, Rejection> {
        Ok(!pod.preferred_node_terms.is_empty())
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Cache,
    ) -> Result<i64, Rejection> {
        Ok(pod
            .preferred_node_terms
            .iter()
            .filter(|(_, t)| t.matches(&node.name, node.labels()))
            .map(|(w, _)| i64::from(*w))
            .sum())
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        super::default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node_with, pod};
    use crate::plugins::testing::{cache_of, filter_all, score_all};
    use serde_json::json;

    fn labelled(name: &str, labels: serde_json::Value) -> NodeInfo {
        node_with(
            name,
            labels,
            json!({}),
            json!({"allocatable": {"cpu": "1"}}),
        )
    }

    #[test]
    fn filter_table() {
        let cache = cache_of(
            vec![
                labelled("a", json!({"zone": "a", "disk": "ssd"})),
                labelled("b", json!({"zone": "b"})),
                labelled("c", json!({})),
            ],
            vec![],
        );
        let required = |exprs: serde_json::Value| {
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}})
        };
        let cases = [
            (pod("free", json!({})), vec![true, true, true]),
            (
                pod("selector", json!({"nodeSelector": {"disk": "ssd"}})),
                vec![true, false, false],
            ),
            (
                pod(
                    "in",
                    required(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}])),
                ),
                vec![true, true, false],
            ),
            (
                pod(
                    "notin",
                    required(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
                ),
                vec![false, true, true],
            ),
            (
                pod(
                    "exists",
                    required(json!([{"key": "zone", "operator": "Exists"}])),
                ),
                vec![true, true, false],
            ),
        ];
        for (p, want) in cases {
            let got: Vec<bool> = filter_all(&NodeAffinity, &p, &cache)
                .iter()
                .map(|r| r.is_ok())
                .collect();
            assert_eq!(got, want, "{}", p.name);
        }
        let r = filter_all(
            &NodeAffinity,
            &pod("s", json!({"nodeSelector": {"disk": "ssd"}})),
            &cache,
        );
        assert_eq!(r[1].as_ref().unwrap_err().reasons[0], REASON);
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let cache = cache_of(
            vec![
                labelled("a", json!({"zone": "a"})),
                labelled("b", json!({"zone": "b", "disk": "ssd"})),
                labelled("c", json!({})),
            ],
            vec![],
        );
        let p = pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}),
        );
        assert_eq!(score_all(&NodeAffinity, &p, &cache), vec![33, 100, 0]);
    }
}
