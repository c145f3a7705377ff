//! Node IPAM (upstream's range allocator): gives each Node without `spec.podCIDR` the next free
//! block of `--node-cidr-mask-size` from `--cluster-cidr` (`spec.podCIDR` and `spec.podCIDRs`),
//! rebuilds the set of taken blocks from the Nodes at every (re)list, and releases a Node's block
//! when it is deleted. When the cluster CIDR is exhausted the Node gets a `CIDRNotAvailable`
//! event and is retried as blocks free up.
//!
//! The set lives in memory: only the leader runs controllers, and the Nodes themselves record
//! what is taken, so a new leader rebuilds it from its first list, as upstream does.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::ControllerConfig;

/// The default `--cluster-cidr` (inside 127.0.0.0/8: needs no setup on one host).
pub const DEFAULT_CLUSTER_CIDR: &str = "127.128.0.0/9";
/// The default `--node-cidr-mask-size`.
pub const DEFAULT_NODE_CIDR_MASK: u8 = 20;

pub use wasmkube_net::Cidr;

/// The blocks of a cluster CIDR and which are taken.
#[derive(Debug)]
pub struct RangeAllocator {
    cluster: Cidr,
    mask: u8,
    /// Taken blocks by index, with the Node holding each.
    taken: BTreeMap<u32, String>,
}

impl RangeAllocator {
    /// Blocks of `/mask` within `cluster`; `mask` must be at least the cluster's prefix.
    pub fn new(cluster: Cidr, mask: u8) -> Result<Self, String> {
        if mask < cluster.prefix() || mask > 30 {
            return Err(format!(
                "--node-cidr-mask-size {mask} must lie between the cluster CIDR's prefix ({}) and 30",
                cluster.prefix()
            ));
        }
        Ok(Self {
            cluster,
            mask,
            taken: BTreeMap::new(),
        })
    }

    fn blocks(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix())
    }

    fn block(&self, i: u32) -> Cidr {
        self.cluster
            .subnet(self.mask, u64::from(i))
            .expect("a block index below blocks()")
    }

    fn index(&self, cidr: &str) -> Option<u32> {
        let c: Cidr = cidr.parse().ok()?;
        if c.prefix() != self.mask {
            return None;
        }
        self.cluster
            .subnet_index(&c)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Marks `cidr` taken by `node` (a block outside the cluster CIDR is ignored, as upstream).
    pub fn occupy(&mut self, cidr: &str, node: &str) {
        if let Some(i) = self.index(cidr) {
            self.taken.insert(i, node.to_string());
        }
    }

    /// The next free block for `node`, or `None` when every block is taken.
    pub fn allocate(&mut self, node: &str) -> Option<String> {
        let i = (0..self.blocks()).find(|i| !self.taken.contains_key(i))?;
        self.taken.insert(i, node.to_string());
        Some(self.block(i).to_string())
    }

    /// The block `node` holds, if any.
    pub fn held_by(&self, node: &str) -> Option<String> {
        let (i, _) = self.taken.iter().find(|(_, n)| *n == node)?;
        Some(self.block(*i).to_string())
    }

    /// Frees whatever `node` holds.
    pub fn release_node(&mut self, node: &str) {
        self.taken.retain(|_, n| n != node);
    }
}

fn pod_cidr(node: &Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .as_deref()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))
        .filter(|c| !c.is_empty())
}

/// Runs node IPAM until `stop` is cancelled. A bad `--cluster-cidr` or mask is logged and the
/// controller stays off (the flags are checked at startup by the CLI).
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let alloc = config
        .cluster_cidr
        .parse::<Cidr>()
        .map_err(|e| e.to_string())
        .and_then(|c| RangeAllocator::new(c, config.node_cidr_mask_size));
    let mut alloc = match alloc {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("node IPAM off: {e}");
            return;
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), "node-ipam-controller".into());
    let mut events = watcher(nodes.clone(), watcher::Config::default()).boxed();
    let mut listing: Vec<Node> = Vec::new();
    // Nodes still waiting for a block (exhausted, or the write failed): retried every second.
    let mut pending: BTreeMap<String, Node> = BTreeMap::new();
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            _ = retry.tick() => {
                let waiting = std::mem::take(&mut pending);
                for (_, node) in waiting {
                    assign(&nodes, &recorder, &mut alloc, &mut pending, node).await;
                }
                continue;
            }
            e = events.next() => e,
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::debug!("node IPAM watch: {e}"),
            Some(Ok(watcher::Event::Init)) => listing.clear(),
            Some(Ok(watcher::Event::InitApply(node))) => listing.push(node),
            Some(Ok(watcher::Event::InitDone)) => {
                // Rebuild from what the Nodes record, then serve the ones without a block.
                alloc.taken.clear();
                pending.clear();
                for node in &listing {
                    if let Some(c) = pod_cidr(node) {
                        alloc.occupy(c, &node.name_any());
                    }
                }
                for node in std::mem::take(&mut listing) {
                    assign(&nodes, &recorder, &mut alloc, &mut pending, node).await;
                }
            }
            Some(Ok(watcher::Event::Apply(node))) => {
                assign(&nodes, &recorder, &mut alloc, &mut pending, node).await;
            }
            Some(Ok(watcher::Event::Delete(node))) => {
                let name = node.name_any();
                pending.remove(&name);
                alloc.release_node(&name);
            }
        }
    }
}

/// Records a Node's block, or gives it one.
async fn assign(
    nodes: &Api<Node>,
    recorder: &Recorder,
    alloc: &mut RangeAllocator,
    pending: &mut BTreeMap<String, Node>,
    node: Node,
) {
    let name = node.name_any();
    if let Some(c) = pod_cidr(&node) {
        alloc.occupy(c, &name);
        return;
    }
    if node.metadata.deletion_timestamp.is_some() {
        return;
    }
    // A stale event (from before our patch landed) gets the block already given, not a second.
    let Some(cidr) = alloc.held_by(&name).or_else(|| alloc.allocate(&name)) else {
        tracing::warn!(node = %name, "no pod CIDR left in the cluster CIDR");
        let ev = Event {
            type_: EventType::Warning,
            reason: "CIDRNotAvailable".into(),
            note: Some(format!("Node {name} status is now: CIDRNotAvailable")),
            action: "Allocating".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &node.object_ref(&())).await {
            tracing::debug!(node = %name, "writing event CIDRNotAvailable: {e}");
        }
        pending.insert(name, node);
        return;
    };
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(node = %name, %cidr, "assigned pod CIDR"),
        Err(kube::Error::Api(e)) if e.code == 404 => alloc.release_node(&name),
        Err(e) => {
            tracing::warn!(node = %name, "assigning pod CIDR {cidr}: {e}");
            alloc.release_node(&name);
            pending.insert(name, node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_in_order_reused_after_release_and_run_out() {
        let mut a = RangeAllocator::new("127.128.0.0/9".parse().unwrap(), 20).unwrap();
        a.occupy("127.128.0.0/20", "a");
        assert_eq!(a.allocate("b").as_deref(), Some("127.128.16.0/20"));
        a.occupy("10.0.0.0/24", "elsewhere");
        assert_eq!(a.allocate("c").as_deref(), Some("127.128.32.0/20"));
        a.release_node("b");
        assert_eq!(a.allocate("d").as_deref(), Some("127.128.16.0/20"));
        let mut small = RangeAllocator::new("127.200.0.0/23".parse().unwrap(), 24).unwrap();
        assert_eq!(small.allocate("x").as_deref(), Some("127.200.0.0/24"));
        assert_eq!(small.allocate("y").as_deref(), Some("127.200.1.0/24"));
        assert_eq!(small.allocate("z"), None);
        assert!(RangeAllocator::new("127.128.0.0/9".parse().unwrap(), 8).is_err());
    }
}
