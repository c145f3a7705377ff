//! NodeResourcesFit: the pod's requests (cpu, memory, ephemeral storage, extended resources,
//! one pod slot) must fit in the node's allocatable minus what its pods (bound and assumed)
//! request. Scores with LeastAllocated (spread, the default) or MostAllocated (pack).

use std::sync::Arc;

use serde::Deserialize;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    Rejection, ScorePlugin, MAX_NODE_SCORE,
};
use crate::info::{NodeInfo, PodInfo};
use crate::resources::{CPU, MEMORY};

pub const NAME: &str = "NodeResourcesFit";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Strategy {
    #[default]
    LeastAllocated,
    MostAllocated,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceWeight {
    pub name: String,
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoringStrategy {
    #[serde(rename = "type", default)]
    pub kind: Strategy,
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourceWeight>,
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        Self {
            kind: Strategy::LeastAllocated,
            resources: default_resources(),
        }
    }
}

pub(crate) fn default_resources() -> Vec<ResourceWeight> {
    vec![
        ResourceWeight {
            name: CPU.into(),
            weight: 1,
        },
        ResourceWeight {
            name: MEMORY.into(),
            weight: 1,
        },
    ]
}

/// `NodeResourcesFitArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Args {
    pub scoring_strategy: ScoringStrategy,
}

pub struct NodeResourcesFit {
    strategy: ScoringStrategy,
}

impl NodeResourcesFit {
    pub fn with_strategy(kind: Strategy) -> Self {
        Self {
            strategy: ScoringStrategy {
                kind,
                resources: default_resources(),
            },
        }
    }
}

pub fn new(
    args: Option<&serde_json::Value>,
    _ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    let a: Args = super::parse_args(NAME, args)?;
    if a.scoring_strategy.resources.iter().any(|r| r.weight <= 0) {
        return Err(FrameworkError::InvalidArgs {
            name: NAME.into(),
            message: "resource weights must be positive".into(),
        });
    }
    Ok(Arc::new(NodeResourcesFit {
        strategy: a.scoring_strategy,
    }))
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        EventMask::node_or_pod_delete() | ClusterEvent::AssignedPodUpdate
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(spec) = &node.spec else {
            return Ok(());
        };
        let alloc = &spec.allocatable;
        let used = &node.requested;
        let want = &pod.requests;
        let mut reasons = Vec::new();
        if used.pods + 1 > alloc.pods {
            reasons.push("Too many pods".into());
        }
        if want.milli_cpu > 0 && alloc.milli_cpu < want.milli_cpu + used.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && alloc.memory < want.memory + used.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0
            && alloc.ephemeral_storage < want.ephemeral_storage + used.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, &v) in &want.scalar {
            if v > 0 && alloc.get(name) < v + used.get(name) {
                reasons.push(format!("Insufficient {name}").into());
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Rejection {
                code: crate::framework::Code::Unschedulable,
                reasons,
                plugin: "",
            })
        }
    }
}

/// What a node would have requested of `resource` with the pod on it, and its allocatable;
/// cpu and memory count best-effort containers at upstream's defaults.
pub(crate) fn requested_and_allocatable(
    pod: &PodInfo,
    node: &NodeInfo,
    resource: &str,
    non_zero: bool,
) -> (i64, i64) {
    let alloc = node
        .spec
        .as_ref()
        .map(|s| s.allocatable.get(resource))
        .unwrap_or(0);
    let requested = match resource {
        CPU if non_zero => node.non_zero_cpu + pod.non_zero_cpu,
        MEMORY if non_zero => node.non_zero_memory + pod.non_zero_memory,
        other => node.requested.get(other) + pod.requests.get(other),
    };
    (requested, alloc)
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for NodeResourcesFit {
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Cache,
    ) -> Result<i64, Rejection> {
        let (mut total, mut weights) = (0, 0);
        for r in &self.strategy.resources {
            let (req, alloc) = requested_and_allocatable(pod, node, &r.name, true);
            if alloc == 0 {
                // Upstream skips resources the node does not have.
                continue;
            }
            let s = match self.strategy.kind {
                Strategy::LeastAllocated => least_requested(req, alloc),
                Strategy::MostAllocated => most_requested(req, alloc),
            };
            total += s * r.weight;
            weights += r.weight;
        }
        Ok(if weights == 0 { 0 } else { total / weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node, node_with, pod, pod_req};
    use crate::plugins::testing::{cache_of, filter_all, score_all};
    use serde_json::json;

    #[test]
    fn filter_table() {
        let tiny_pods = node_with(
            "one-pod",
            json!({}),
            json!({}),
            json!({"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "1"}}),
        );
        let cache = cache_of(
            vec![
                node("small", "1", "1Gi"),
                node("big", "8", "32Gi"),
                tiny_pods,
            ],
            vec![
                (pod_req("existing", "500m", "512Mi"), "small"),
                (pod_req("other", "1m", "1Mi"), "one-pod"),
            ],
        );
        type Expected = Vec<Result<(), Vec<&'static str>>>;
        let cases: Vec<(Arc<PodInfo>, Expected)> = vec![
            (
                pod_req("fits", "500m", "512Mi"),
                vec![Ok(()), Ok(()), Err(vec!["Too many pods"])],
            ),
            (
                pod_req("cpu", "600m", "1Mi"),
                vec![
                    Err(vec!["Insufficient cpu"]),
                    Ok(()),
                    Err(vec!["Too many pods"]),
                ],
            ),
            (
                pod_req("both", "2", "2Gi"),
                vec![
                    Err(vec!["Insufficient cpu", "Insufficient memory"]),
                    Ok(()),
                    Err(vec!["Too many pods"]),
                ],
            ),
            (
                pod("besteffort", json!({})),
                vec![Ok(()), Ok(()), Err(vec!["Too many pods"])],
            ),
            (
                pod(
                    "gpu",
                    json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"example.com/gpu": "1"}}}]}),
                ),
                vec![
                    Err(vec!["Insufficient example.com/gpu"]),
                    Err(vec!["Insufficient example.com/gpu"]),
                    Err(vec!["Too many pods", "Insufficient example.com/gpu"]),
                ],
            ),
        ];
        let plugin = NodeResourcesFit::with_strategy(Strategy::LeastAllocated);
        for (p, want) in cases {
            let got: Vec<Result<(), Vec<String>>> = filter_all(&plugin, &p, &cache)
                .into_iter()
                .map(|r| r.map_err(|e| e.reasons.into_iter().map(|s| s.into_owned()).collect()))
                .collect();
            let want: Vec<Result<(), Vec<String>>> = want
                .into_iter()
                .map(|r| r.map_err(|v| v.into_iter().map(String::from).collect()))
                .collect();
            assert_eq!(got, want, "{}", p.name);
        }
    }

    #[test]
    fn least_allocated_spreads_most_allocated_packs() {
        let cache = cache_of(
            vec![node("empty", "4", "8Gi"), node("half", "4", "8Gi")],
            vec![(pod_req("x", "2", "4Gi"), "half")],
        );
        let p = pod_req("p", "1", "2Gi");
        // empty: cpu (4-1)/4=75, mem 75 → 75; half: (4-3)/4=25 → 25.
        assert_eq!(
            score_all(
                &NodeResourcesFit::with_strategy(Strategy::LeastAllocated),
                &p,
                &cache
            ),
            vec![75, 25]
        );
        assert_eq!(
            score_all(
                &NodeResourcesFit::with_strategy(Strategy::MostAllocated),
                &p,
                &cache
            ),
            vec![25, 75]
        );
    }

    #[test]
    fn args_select_the_strategy() {
        let p = new(
            Some(&json!({"scoringStrategy": {"type": "MostAllocated"}})),
            &PluginContext::default(),
        )
        .unwrap();
        assert_eq!(p.name(), NAME);
        assert!(new(
            Some(&json!({"scoringStrategy": {"type": "Nope"}})),
            &PluginContext::default()
        )
        .is_err());
    }
}
