//! Pods and nodes as the scheduler sees them: parsed once when the informer delivers them
//! (quantities, selectors, ports), so that a scheduling cycle only compares numbers and strings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, Toleration};

use crate::labels::{NodeTerm, Selector, SelectorError};
use crate::resources::{self, QuantityError, Resources};

/// Something in an object that the scheduler could not read.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("object has no name")]
    NoName,
    #[error("{0}")]
    Quantity(#[from] QuantityError),
    #[error("{0}")]
    Selector(#[from] SelectorError),
}

/// `namespace/name`
pub type PodKey = String;

/// A host port a container asks for; `0.0.0.0` conflicts with every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's `HostPortInfo.CheckConflict`: same port and protocol, and the same address or
    /// either one the wildcard.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod (anti-)affinity term, parsed.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub selector: Selector,
    /// Namespaces the term looks at; `None` means all (an empty `namespaceSelector`).
    pub namespaces: Option<BTreeSet<String>>,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(t: &PodAffinityTerm, own_namespace: &str) -> Result<Self, SelectorError> {
        let selector = match &t.label_selector {
            Some(s) => Selector::from_label_selector(s)?,
            // A term without a selector matches no pods, as upstream.
            None => Selector {
                requirements: vec![crate::labels::Requirement::In(String::new(), vec![])],
            },
        };
        let mut namespaces: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let all = t
            .namespace_selector
            .as_ref()
            .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none());
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(own_namespace.to_string());
        }
        Ok(Self {
            selector,
            namespaces: if all { None } else { Some(namespaces) },
            topology_key: t.topology_key.clone(),
        })
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|ns| ns.contains(&pod.namespace))
            && self.selector.matches(&pod.labels)
    }
}

/// A weighted preferred pod (anti-)affinity term.
#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    pub weight: i32,
    pub term: AffinityTerm,
}

/// A parsed pod.
#[derive(Debug)]
pub struct PodInfo {
    pub key: PodKey,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub pod: Arc<Pod>,
    pub labels: BTreeMap<String, String>,
    pub node_name: String,
    pub scheduler_name: String,
    pub priority: i32,
    pub requests: Resources,
    /// cpu and memory with upstream's defaults for containers that request none (scoring only).
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub node_selector: BTreeMap<String, String>,
    pub required_node_terms: Option<Vec<NodeTerm>>,
    pub preferred_node_terms: Vec<(i32, NodeTerm)>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    pub images: Vec<String>,
    pub gated: bool,
    pub terminal: bool,
    pub deleting: bool,
    /// Why part of the pod could not be read: the pod is reported unschedulable with it.
    pub parse_error: Option<String>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Result<Self, InfoError> {
        let name = pod.metadata.name.clone().ok_or(InfoError::NoName)?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let default_spec = k8s_openapi::api::core::v1::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let mut bad = Vec::new();
        let requests = resources::pod_requests(&pod, &mut bad);
        let (non_zero_cpu, non_zero_memory) = non_zero_requests(&pod);
        let mut host_ports = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                let port = p.host_port.unwrap_or(0);
                if port <= 0 {
                    continue;
                }
                host_ports.push(HostPort {
                    ip: p
                        .host_ip
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port,
                });
            }
        }
        let mut parse_error = bad.first().map(|e| e.to_string());
        let mut note = |e: SelectorError| {
            parse_error.get_or_insert_with(|| e.to_string());
        };
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_affinity = affinity.node_affinity.unwrap_or_default();
        let required_node_terms = node_affinity
            .required_during_scheduling_ignored_during_execution
            .map(|ns| {
                ns.node_selector_terms
                    .iter()
                    .filter_map(|t| NodeTerm::parse(t).map_err(&mut note).ok())
                    .collect()
            });
        let preferred_node_terms = node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                NodeTerm::parse(&p.preference)
                    .map_err(&mut note)
                    .ok()
                    .map(|t| (p.weight, t))
            })
            .collect();
        let mut terms = |ts: Option<Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            ts.unwrap_or_default()
                .iter()
                .filter_map(|t| AffinityTerm::parse(t, &namespace).map_err(&mut note).ok())
                .collect()
        };
        let pa = affinity.pod_affinity.unwrap_or_default();
        let paa = affinity.pod_anti_affinity.unwrap_or_default();
        let required_affinity = terms(pa.required_during_scheduling_ignored_during_execution);
        let required_anti_affinity = terms(paa.required_during_scheduling_ignored_during_execution);
        let mut weighted =
            |ts: Option<Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                ts.unwrap_or_default()
                    .iter()
                    .filter_map(|w| {
                        AffinityTerm::parse(&w.pod_affinity_term, &namespace)
                            .map_err(&mut note)
                            .ok()
                            .map(|term| WeightedAffinityTerm {
                                weight: w.weight,
                                term,
                            })
                    })
                    .collect::<Vec<_>>()
            };
        let preferred_affinity = weighted(pa.preferred_during_scheduling_ignored_during_execution);
        let preferred_anti_affinity =
            weighted(paa.preferred_during_scheduling_ignored_during_execution);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        Ok(Self {
            key: format!("{namespace}/{name}"),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| crate::config::DEFAULT_SCHEDULER_NAME.into()),
            priority: spec.priority.unwrap_or(0),
            requests,
            non_zero_cpu,
            non_zero_memory,
            host_ports,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_terms,
            preferred_node_terms,
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            images: spec
                .containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect(),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            terminal: matches!(phase, Some("Succeeded") | Some("Failed")),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            parse_error,
            namespace,
            name,
            pod,
        })
    }

    /// Whether the pod carries any (anti-)affinity that existing pods must be checked against.
    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }
}

fn non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = &pod.spec else {
        return (0, 0);
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |n: &str| req.and_then(|r| r.get(n));
        cpu += get(resources::CPU)
            .and_then(|q| resources::milli_value(q).ok())
            .unwrap_or(resources::DEFAULT_MILLI_CPU_REQUEST);
        mem += get(resources::MEMORY)
            .and_then(|q| resources::value(q).ok())
            .unwrap_or(resources::DEFAULT_MEMORY_REQUEST);
    }
    (cpu, mem)
}

/// A parsed node: everything plugins read from the Node object.
#[derive(Debug)]
pub struct NodeSpec {
    pub name: String,
    pub node: Arc<Node>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// Image (module) names present on the node, each with its size in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeSpec {
    pub fn new(node: Arc<Node>) -> Result<Self, InfoError> {
        let name = node.metadata.name.clone().ok_or(InfoError::NoName)?;
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let mut bad = Vec::new();
        // Nodes without allocatable report capacity only; upstream falls back the same way.
        let list = status.allocatable.or(status.capacity).unwrap_or_default();
        let allocatable = Resources::from_list(&list, &mut bad);
        if let Some(e) = bad.into_iter().next() {
            tracing::warn!(node = %name, "ignoring unreadable allocatable: {e}");
        }
        let mut images = HashMap::new();
        for img in status.images.iter().flatten() {
            for n in img.names.iter().flatten() {
                images.insert(n.clone(), img.size_bytes.unwrap_or(0));
            }
        }
        Ok(Self {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.taints.unwrap_or_default(),
            unschedulable: spec.unschedulable.unwrap_or(false),
            allocatable,
            images,
            name,
            node,
        })
    }
}

/// A node with the pods the scheduler counts on it (bound and assumed).
#[derive(Debug)]
pub struct NodeInfo {
    pub name: String,
    /// `None` once the node is deleted while pods still point at it.
    pub spec: Option<Arc<NodeSpec>>,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resources,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub used_ports: Vec<HostPort>,
    /// Pods on the node with any required anti-affinity term (the incoming pod must respect them).
    pub pods_with_required_anti_affinity: usize,
    pub pods_with_affinity: usize,
}

impl NodeInfo {
    pub fn new(name: String) -> Self {
        Self {
            name,
            spec: None,
            pods: Vec::new(),
            requested: Resources::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            used_ports: Vec::new(),
            pods_with_required_anti_affinity: 0,
            pods_with_affinity: 0,
        }
    }

    /// For plugin tests: a node with these specs and no pods.
    pub fn from_spec(spec: NodeSpec) -> Self {
        let mut n = Self::new(spec.name.clone());
        n.spec = Some(Arc::new(spec));
        n
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.spec.as_ref().map(|s| &s.labels).unwrap_or(&EMPTY)
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.requested.pods += 1;
        self.non_zero_cpu += pod.non_zero_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Removes the pod with this key; returns it if it was there.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.requested.pods -= 1;
        self.non_zero_cpu -= pod.non_zero_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        Some(pod)
    }
}

#[cfg(test)]
pub mod testing {
    //! Builders for plugin table tests.
    use super::*;
    use serde_json::{json, Value};

    /// A pod from JSON `spec` (and optional labels), e.g. `pod("p", json!({"containers": [...]}))`.
    pub fn pod_with(name: &str, labels: Value, spec: Value) -> Arc<PodInfo> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "img"}]);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
            "spec": spec,
        }))
        .expect("test pod");
        Arc::new(PodInfo::new(Arc::new(pod)).expect("test pod info"))
    }

    pub fn pod(name: &str, spec: Value) -> Arc<PodInfo> {
        pod_with(name, json!({}), spec)
    }

    /// A pod requesting `cpu` and `memory` in one container.
    pub fn pod_req(name: &str, cpu: &str, memory: &str) -> Arc<PodInfo> {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "img",
                "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}),
        )
    }

    /// A node from JSON labels, spec and status.
    pub fn node_with(name: &str, labels: Value, spec: Value, status: Value) -> NodeInfo {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": status,
        }))
        .expect("test node");
        NodeInfo::from_spec(NodeSpec::new(Arc::new(node)).expect("test node spec"))
    }

    /// A node with this much allocatable cpu and memory (and 110 pods).
    pub fn node(name: &str, cpu: &str, memory: &str) -> NodeInfo {
        node_with(
            name,
            json!({"kubernetes.io/hostname": name}),
            json!({}),
            json!({"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}),
        )
    }
}
