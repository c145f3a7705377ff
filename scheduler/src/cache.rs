//! The scheduler cache: every node with the pods counted on it, bound ones (from the informer)
//! and **assumed** ones (decided and being bound, not yet confirmed by the informer), so the
//! next cycle sees a node's capacity as already taken.

use std::collections::HashMap;
use std::sync::Arc;

use crate::framework::{ClusterEvent, EventMask};
use crate::info::{NodeInfo, NodeSpec, PodInfo, PodKey};
use crate::volumes::VolumeStore;

/// A cache operation that contradicts what the cache holds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("pod {0} is already in the cache")]
    AlreadyCached(PodKey),
    #[error("node {0} is not in the cache")]
    NoSuchNode(String),
}

#[derive(Debug)]
struct PodState {
    node: String,
    assumed: bool,
}

/// Node infos plus where every known pod is counted.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<PodKey, PodState>,
    /// How many nodes hold each image: ImageLocality scales a node's score by the spread.
    image_nodes: HashMap<String, usize>,
    real_nodes: usize,
    /// Pods (bound or assumed) with required anti-affinity / any affinity: lets the
    /// InterPodAffinity plugin skip its scan when there are none.
    anti_affinity_pods: usize,
    affinity_pods: usize,
    /// Claims, volumes and classes, for the VolumeBinding plugin.
    volumes: VolumeStore,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every node info, including deleted nodes that still have pods (`spec` is `None`).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Nodes that exist (what "0/N nodes are available" counts).
    pub fn node_count(&self) -> usize {
        self.real_nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// The storage objects pods' volumes refer to.
    pub fn volumes(&self) -> &VolumeStore {
        &self.volumes
    }

    /// The storage objects, for the informers' updates.
    pub fn volumes_mut(&mut self) -> &mut VolumeStore {
        &mut self.volumes
    }

    /// Number of existing nodes that hold `image`.
    pub fn image_spread(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Counted pods that carry required anti-affinity terms.
    pub fn anti_affinity_pods(&self) -> usize {
        self.anti_affinity_pods
    }

    /// Counted pods that carry any (anti-)affinity terms.
    pub fn affinity_pods(&self) -> usize {
        self.affinity_pods
    }

    fn count(&mut self, pod: &PodInfo, delta: isize) {
        if !pod.required_anti_affinity.is_empty() {
            self.anti_affinity_pods = self.anti_affinity_pods.saturating_add_signed(delta);
        }
        if pod.has_affinity() {
            self.affinity_pods = self.affinity_pods.saturating_add_signed(delta);
        }
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    pub fn contains_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.nodes.push(NodeInfo::new(name.to_string()));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// Adds or replaces a node; returns the cluster events this change amounts to.
    pub fn set_node(&mut self, spec: NodeSpec) -> EventMask {
        let spec = Arc::new(spec);
        let name = spec.name.clone();
        let (old, events) = {
            let slot = self.slot(&name);
            let old = slot.spec.replace(spec.clone());
            let events = match &old {
                None => EventMask::from(ClusterEvent::NodeAdd),
                Some(o) => node_change(o, &spec),
            };
            (old, events)
        };
        if old.is_none() {
            self.real_nodes += 1;
        }
        if let Some(o) = &old {
            for img in o.images.keys() {
                if let Some(n) = self.image_nodes.get_mut(img) {
                    *n -= 1;
                }
            }
        }
        for img in spec.images.keys() {
            *self.image_nodes.entry(img.clone()).or_insert(0) += 1;
        }
        events
    }

    /// Removes a node; its pods stay counted until they are deleted.
    pub fn remove_node(&mut self, name: &str) -> EventMask {
        let Some(&i) = self.index.get(name) else {
            return EventMask::NONE;
        };
        let Some(old) = self.nodes[i].spec.take() else {
            return EventMask::NONE;
        };
        self.real_nodes -= 1;
        for img in old.images.keys() {
            if let Some(n) = self.image_nodes.get_mut(img) {
                *n -= 1;
            }
        }
        self.drop_if_empty(name);
        ClusterEvent::NodeDelete.into()
    }

    fn drop_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].spec.is_some() || !self.nodes[i].pods.is_empty() {
            return;
        }
        self.index.remove(name);
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    /// Counts `pod` on `node` before the binding is confirmed.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        if self.pods.contains_key(&pod.key) {
            return Err(CacheError::AlreadyCached(pod.key.clone()));
        }
        if !self.index.contains_key(node) {
            return Err(CacheError::NoSuchNode(node.to_string()));
        }
        self.pods.insert(
            pod.key.clone(),
            PodState {
                node: node.to_string(),
                assumed: true,
            },
        );
        self.count(&pod, 1);
        self.slot(node).add_pod(pod);
        Ok(())
    }

    /// Undoes `assume` after a failed binding. A pod the informer already confirmed stays.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_pod(key);
        }
    }

    /// Adds or updates a pod bound to a node (from the informer): confirms an assumed pod.
    /// Returns the event it amounts to.
    pub fn set_bound_pod(&mut self, pod: Arc<PodInfo>) -> EventMask {
        let event = if self.pods.contains_key(&pod.key) {
            self.remove_pod_inner(&pod.key);
            ClusterEvent::AssignedPodUpdate
        } else {
            ClusterEvent::AssignedPodAdd
        };
        let node = pod.node_name.clone();
        self.pods.insert(
            pod.key.clone(),
            PodState {
                node: node.clone(),
                assumed: false,
            },
        );
        self.count(&pod, 1);
        self.slot(&node).add_pod(pod);
        event.into()
    }

    /// Removes a pod (deleted, finished, or a forgotten assumption).
    pub fn remove_pod(&mut self, key: &str) -> EventMask {
        if self.remove_pod_inner(key) {
            ClusterEvent::AssignedPodDelete.into()
        } else {
            EventMask::NONE
        }
    }

    fn remove_pod_inner(&mut self, key: &str) -> bool {
        let Some(state) = self.pods.remove(key) else {
            return false;
        };
        if let Some(&i) = self.index.get(&state.node) {
            if let Some(pod) = self.nodes[i].remove_pod(key) {
                self.count(&pod, -1);
            }
            self.drop_if_empty(&state.node);
        }
        true
    }

    /// Forgets every node and pod (before a relist replaces them).
    pub fn clear_pods(&mut self) {
        let keys: Vec<PodKey> = self.pods.keys().cloned().collect();
        for k in keys {
            self.remove_pod_inner(&k);
        }
    }

    /// Names of existing nodes, for relist reconciliation.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.spec.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Keys of bound (not assumed) pods, for relist reconciliation.
    pub fn bound_pod_keys(&self) -> Vec<PodKey> {
        self.pods
            .iter()
            .filter(|(_, s)| !s.assumed)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Which kinds of node change happened, so only the pods they can help are retried.
fn node_change(old: &NodeSpec, new: &NodeSpec) -> EventMask {
    let mut m = EventMask::NONE;
    if old.labels != new.labels {
        m |= ClusterEvent::NodeLabelChange;
    }
    if old.taints != new.taints {
        m |= ClusterEvent::NodeTaintChange;
    }
    if old.allocatable != new.allocatable {
        m |= ClusterEvent::NodeAllocatableChange;
    }
    if old.unschedulable != new.unschedulable {
        m |= ClusterEvent::NodeSpecUnschedulableChange;
    }
    if old.images != new.images {
        m |= ClusterEvent::NodeImageChange;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node, pod_req};

    fn spec_of(n: NodeInfo) -> NodeSpec {
        let s = n.spec.expect("spec");
        Arc::try_unwrap(s).expect("unique")
    }

    #[test]
    fn assumed_pods_count_until_forgotten_or_confirmed() {
        let mut c = Cache::new();
        assert_eq!(
            c.set_node(spec_of(node("n1", "4", "8Gi"))),
            ClusterEvent::NodeAdd.into()
        );
        let p = pod_req("p", "1", "1Gi");
        c.assume(p.clone(), "n1").unwrap();
        assert!(c.is_assumed("default/p"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert_eq!(
            c.assume(p.clone(), "n1"),
            Err(CacheError::AlreadyCached("default/p".into()))
        );
        c.forget("default/p");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);
        assert_eq!(c.node("n1").unwrap().requested.pods, 0);

        c.assume(p.clone(), "n1").unwrap();
        // The informer confirms the binding: counted once, no longer assumed.
        let mut bound = (*p.pod).clone();
        bound.spec.as_mut().unwrap().node_name = Some("n1".into());
        let bound = Arc::new(PodInfo::new(Arc::new(bound)).unwrap());
        c.set_bound_pod(bound);
        assert!(!c.is_assumed("default/p"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("n1").unwrap().pods.len(), 1);
        c.forget("default/p");
        assert_eq!(
            c.node("n1").unwrap().pods.len(),
            1,
            "forget keeps a confirmed pod"
        );
    }

    #[test]
    fn deleted_node_with_pods_lingers_until_pods_go() {
        let mut c = Cache::new();
        c.set_node(spec_of(node("n1", "4", "8Gi")));
        c.set_node(spec_of(node("n2", "4", "8Gi")));
        c.assume(pod_req("p", "1", "1Gi"), "n1").unwrap();
        c.remove_node("n1");
        assert_eq!(c.node_count(), 1);
        assert!(c.node("n1").is_some_and(|n| n.spec.is_none()));
        c.remove_pod("default/p");
        assert!(c.node("n1").is_none());
        assert!(c.node("n2").is_some());
    }

    #[test]
    fn node_updates_report_what_changed() {
        let mut c = Cache::new();
        c.set_node(spec_of(node("n1", "4", "8Gi")));
        assert_eq!(c.set_node(spec_of(node("n1", "4", "8Gi"))), EventMask::NONE);
        assert_eq!(
            c.set_node(spec_of(node("n1", "8", "8Gi"))),
            ClusterEvent::NodeAllocatableChange.into()
        );
    }
}
