//! NodeName: a pod that names its node (`spec.nodeName`) fits only there.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    PreFilterOutcome, PreFilterPlugin, Rejection,
};
use crate::info::{NodeInfo, PodInfo};

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(NodeName, ctx)
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd.into()
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodeName {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Cache,
    ) -> Result<PreFilterOutcome, Rejection> {
        if pod.node_name.is_empty() {
            Ok(PreFilterOutcome::Skip)
        } else {
            Ok(PreFilterOutcome::Nodes(BTreeSet::from([pod
                .node_name
                .clone()])))
        }
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        if pod.node_name.is_empty() || pod.node_name == node.name {
            Ok(())
        } else {
            Err(Rejection::unresolvable(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node, pod};
    use crate::plugins::testing::{cache_of, filter_all};
    use serde_json::json;

    #[test]
    fn table() {
        let cache = cache_of(vec![node("a", "1", "1Gi"), node("b", "1", "1Gi")], vec![]);
        let cases = [
            (pod("any", json!({})), vec![true, true]),
            (pod("named", json!({"nodeName": "b"})), vec![false, true]),
            (pod("missing", json!({"nodeName": "z"})), vec![false, false]),
        ];
        for (p, want) in cases {
            let got: Vec<bool> = filter_all(&NodeName, &p, &cache)
                .iter()
                .map(|r| r.is_ok())
                .collect();
            assert_eq!(got, want, "{}", p.name);
        }
    }
}
