//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods that tolerate the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    Rejection,
};
use crate::info::{NodeInfo, PodInfo};
use crate::plugins::taint_toleration::tolerates;

pub const NAME: &str = "NodeUnschedulable";
pub const REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(NodeUnschedulable, ctx)
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd
            | ClusterEvent::NodeSpecUnschedulableChange
            | ClusterEvent::NodeTaintChange
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let Some(spec) = &node.spec else {
            return Err(Rejection::unresolvable("node(s) had unknown conditions"));
        };
        if !spec.unschedulable {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Ok(())
        } else {
            Err(Rejection::unresolvable(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node, node_with, pod};
    use crate::plugins::testing::{cache_of, filter_all};
    use serde_json::json;

    #[test]
    fn table() {
        let cordoned = node_with(
            "c",
            json!({}),
            json!({"unschedulable": true}),
            json!({"allocatable": {"cpu": "1"}}),
        );
        let cache = cache_of(vec![node("ok", "1", "1Gi"), cordoned], vec![]);
        let cases = [
            (pod("plain", json!({})), vec![true, false]),
            (
                pod(
                    "tolerant",
                    json!({"tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}),
                ),
                vec![true, true],
            ),
            (
                pod("wildcard", json!({"tolerations": [{"operator": "Exists"}]})),
                vec![true, true],
            ),
        ];
        for (p, want) in cases {
            let got: Vec<bool> = filter_all(&NodeUnschedulable, &p, &cache)
                .iter()
                .map(|r| r.is_ok())
                .collect();
            assert_eq!(got, want, "{}", p.name);
        }
    }
}
