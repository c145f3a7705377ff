//! TaintToleration: a node's NoSchedule and NoExecute taints keep out pods that do not
//! tolerate them; PreferNoSchedule taints only lower the node's score.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    Rejection, ScorePlugin,
};
use crate::info::{NodeInfo, PodInfo};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(TaintToleration, ctx)
}

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd | ClusterEvent::NodeTaintChange
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(spec) = &node.spec else {
            return Ok(());
        };
        let untolerated = spec.taints.iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Ok(()),
            Some(taint) => Err(Rejection::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    /// The number of PreferNoSchedule taints the pod does not tolerate (fewer is better).
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Cache,
    ) -> Result<i64, Rejection> {
        let Some(spec) = &node.spec else { return Ok(0) };
        let n = spec
            .taints
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule")
            .filter(|taint| {
                !pod.tolerations.iter().any(|t| {
                    matches!(
                        t.effect.as_deref(),
                        None | Some("") | Some("PreferNoSchedule")
                    ) && tolerates(t, taint)
                })
            })
            .count();
        Ok(n as i64)
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        super::default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node_with, pod};
    use crate::plugins::testing::{cache_of, filter_all, score_all};
    use serde_json::json;

    fn tainted(name: &str, taints: serde_json::Value) -> NodeInfo {
        node_with(
            name,
            json!({}),
            json!({"taints": taints}),
            json!({"allocatable": {"cpu": "1"}}),
        )
    }

    #[test]
    fn tolerates_follows_upstream() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        let cases = [
            (
                json!({"key": "k", "value": "v", "effect": "NoSchedule"}),
                true,
            ),
            (json!({"key": "k", "operator": "Equal", "value": "v"}), true),
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (json!({"key": "k", "value": "w"}), false),
            (
                json!({"key": "k", "value": "v", "effect": "NoExecute"}),
                false,
            ),
            (json!({"key": "other", "operator": "Exists"}), false),
        ];
        for (t, want) in cases {
            assert_eq!(tolerates(&tol(t.clone()), &taint), want, "{t}");
        }
    }

    #[test]
    fn filter_table() {
        let cache = cache_of(
            vec![
                tainted("clean", json!([])),
                tainted(
                    "wasm",
                    json!([{"key": "wasm", "value": "true", "effect": "NoSchedule"}]),
                ),
                tainted("evict", json!([{"key": "gone", "effect": "NoExecute"}])),
                tainted(
                    "soft",
                    json!([{"key": "meh", "effect": "PreferNoSchedule"}]),
                ),
            ],
            vec![],
        );
        let plain = pod("plain", json!({}));
        let got = filter_all(&TaintToleration, &plain, &cache);
        assert!(got[0].is_ok() && got[3].is_ok());
        assert_eq!(
            got[1].as_ref().unwrap_err().reasons[0],
            "node(s) had untolerated taint {wasm: true}"
        );
        assert_eq!(
            got[2].as_ref().unwrap_err().reasons[0],
            "node(s) had untolerated taint {gone: }"
        );
        let wasm = pod(
            "wasm",
            json!({"tolerations": [{"key": "wasm", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}),
        );
        let ok: Vec<bool> = filter_all(&TaintToleration, &wasm, &cache)
            .iter()
            .map(|r| r.is_ok())
            .collect();
        assert_eq!(ok, vec![true, true, false, true]);
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let cache = cache_of(
            vec![
                tainted("clean", json!([])),
                tainted(
                    "soft",
                    json!([{"key": "meh", "effect": "PreferNoSchedule"}]),
                ),
                tainted(
                    "softer",
                    json!([{"key": "meh", "effect": "PreferNoSchedule"}, {"key": "x", "effect": "PreferNoSchedule"}]),
                ),
            ],
            vec![],
        );
        assert_eq!(
            score_all(&TaintToleration, &pod("p", json!({})), &cache),
            vec![100, 50, 0]
        );
        let tolerant = pod(
            "t",
            json!({"tolerations": [{"key": "meh", "operator": "Exists", "effect": "PreferNoSchedule"}]}),
        );
        assert_eq!(
            score_all(&TaintToleration, &tolerant, &cache),
            vec![100, 100, 0]
        );
    }
}
