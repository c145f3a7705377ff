//! NodePorts: a pod's host ports must be free on the node.

use std::sync::Arc;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FilterPlugin, FrameworkError, Plugin, PluginContext,
    PreFilterOutcome, PreFilterPlugin, Rejection,
};
use crate::info::{NodeInfo, PodInfo};

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    super::plain(NodePorts, ctx)
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd | ClusterEvent::AssignedPodDelete
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Cache,
    ) -> Result<PreFilterOutcome, Rejection> {
        Ok(if pod.host_ports.is_empty() {
            PreFilterOutcome::Skip
        } else {
            PreFilterOutcome::Continue
        })
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let conflict = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            Err(Rejection::unschedulable(REASON))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node, pod};
    use crate::plugins::testing::{cache_of, filter_all};
    use serde_json::json;

    fn with_port(name: &str, port: i32, ip: Option<&str>, proto: &str) -> Arc<PodInfo> {
        let mut p = json!({"containerPort": 80, "hostPort": port, "protocol": proto});
        if let Some(ip) = ip {
            p["hostIP"] = json!(ip);
        }
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "i", "ports": [p]}]}),
        )
    }

    #[test]
    fn table() {
        let cache = cache_of(
            vec![node("a", "1", "1Gi"), node("b", "1", "1Gi")],
            vec![(with_port("used", 8080, Some("127.0.0.1"), "TCP"), "a")],
        );
        let cases = [
            (pod("none", json!({})), vec![true, true]),
            (
                with_port("same", 8080, Some("127.0.0.1"), "TCP"),
                vec![false, true],
            ),
            (with_port("wildcard", 8080, None, "TCP"), vec![false, true]),
            (
                with_port("other-ip", 8080, Some("127.0.0.2"), "TCP"),
                vec![true, true],
            ),
            (with_port("udp", 8080, None, "UDP"), vec![true, true]),
            (with_port("other-port", 9090, None, "TCP"), vec![true, true]),
        ];
        for (p, want) in cases {
            let got: Vec<bool> = filter_all(&NodePorts, &p, &cache)
                .iter()
                .map(|r| r.is_ok())
                .collect();
            assert_eq!(got, want, "{}", p.name);
        }
    }
}
