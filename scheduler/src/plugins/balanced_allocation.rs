//! NodeResourcesBalancedAllocation: prefers nodes where cpu and memory would be used in equal
//! fractions, so neither runs out while the other idles.

use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FrameworkError, Plugin, PluginContext, PreScorePlugin,
    Rejection, ScorePlugin, MAX_NODE_SCORE,
};
use crate::info::{NodeInfo, PodInfo};
use crate::plugins::node_resources_fit::requested_and_allocatable;
use crate::resources::{CPU, MEMORY};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(BalancedAllocation, ctx)
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        EventMask::node_or_pod_delete() | ClusterEvent::AssignedPodUpdate
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for BalancedAllocation {
    /// A pod that requests neither cpu nor memory changes no node's balance: skip, as upstream.
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        _: &Cache,
    ) -> Result<bool, Rejection> {
        Ok(pod.requests.milli_cpu > 0 || pod.requests.memory > 0)
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Cache,
    ) -> Result<i64, Rejection> {
        let mut fractions = [0f64; 2];
        let mut n = 0;
        for r in [CPU, MEMORY] {
            let (req, alloc) = requested_and_allocatable(pod, node, r, false);
            if alloc == 0 {
                continue;
            }
            fractions[n] = (req as f64 / alloc as f64).min(1.0);
            n += 1;
        }
        // With two resources the standard deviation is half their difference.
        let std = if n == 2 {
            (fractions[0] - fractions[1]).abs() / 2.0
        } else {
            0.0
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node, pod_req};
    use crate::plugins::testing::{cache_of, score_all};

    #[test]
    fn table() {
        let cache = cache_of(
            vec![node("cpu-heavy", "4", "8Gi"), node("even", "4", "8Gi")],
            vec![
                (pod_req("x", "3", "1Gi"), "cpu-heavy"),
                (pod_req("y", "1", "2Gi"), "even"),
            ],
        );
        // cpu-heavy: cpu 4/4=1.0, mem 2/8=.25 → std .375 → 62; even: 2/4=.5, 3/8=.375 → 93.
        assert_eq!(
            score_all(&BalancedAllocation, &pod_req("p", "1", "1Gi"), &cache),
            vec![62, 93]
        );
        assert_eq!(
            score_all(
                &BalancedAllocation,
                &crate::info::testing::pod("be", serde_json::json!({})),
                &cache
            ),
            vec![0, 0],
            "best-effort pods skip"
        );
    }
}
