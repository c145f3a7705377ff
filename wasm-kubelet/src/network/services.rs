//! The Service table: Services, EndpointSlices and Nodes as watched through the kubelet's client,
//! reduced to what the node proxy and the pods' outgoing requests need: per Service port, its
//! ClusterIP, node port and ready endpoints. Every change publishes a new immutable
//! [`Snapshot`] (the watch events arrive as the apiserver commits, so the proxy and resolver see
//! an endpoint change well within a second); round-robin counters and session-affinity entries
//! live in per-port state that survives snapshots.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ServiceResolver;

/// The Node annotation where a kubelet announces its forwarding port (see [`super::proxy`]).
pub const PROXY_PORT_ANNOTATION: &str = "wasmkube.dev/proxy-port";
/// The EndpointSlice label naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// One ready endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's address and target port.
    pub addr: SocketAddr,
    /// The node forwarding port to go through when the pod runs on another node that announces
    /// one (its pod addresses may not be routable from here).
    pub via: Option<SocketAddr>,
}

/// A Service port as the proxy serves it.
#[derive(Debug)]
pub struct PortView {
    /// `namespace/name:port` (for logs).
    pub id: String,
    pub cluster_ip: Option<IpAddr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` timeout, when set.
    pub affinity: Option<Duration>,
    /// Ready endpoints, ordered by address.
    pub endpoints: Vec<Endpoint>,
    /// Balancing state, shared by the snapshots of this port.
    pub state: Arc<PortState>,
}

/// Round robin and session affinity of one Service port.
#[derive(Debug, Default)]
pub struct PortState {
    next: AtomicUsize,
    affinity: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl PortView {
    /// The order in which to try endpoints for a connection from `client`: the affine endpoint
    /// first (when affinity is on and its entry is fresh), else round robin.
    pub fn pick_order(&self, client: Option<IpAddr>) -> Vec<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let mut start = None;
        if let (Some(timeout), Some(ip)) = (self.affinity, client) {
            let map = self.state.affinity.lock().expect("affinity lock");
            if let Some((addr, at)) = map.get(&ip) {
                if at.elapsed() < timeout {
                    start = self.endpoints.iter().position(|e| e.addr == *addr);
                }
            }
        }
        let start = start.unwrap_or_else(|| self.state.next.fetch_add(1, Ordering::Relaxed) % n);
        (0..n).map(|i| &self.endpoints[(start + i) % n]).collect()
    }

    /// Records that `client` was served by `endpoint` (for session affinity).
    pub fn served(&self, client: Option<IpAddr>, endpoint: &Endpoint) {
        if let (Some(timeout), Some(ip)) = (self.affinity, client) {
            let mut map = self.state.affinity.lock().expect("affinity lock");
            map.retain(|_, (_, at)| at.elapsed() < timeout);
            map.insert(ip, (endpoint.addr, Instant::now()));
        }
    }
}

/// The Service table at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Service ports by `(namespace, name)`.
    pub services: BTreeMap<(String, String), Vec<Arc<PortView>>>,
    /// `ClusterIP -> (namespace, name)`.
    pub by_ip: HashMap<IpAddr, (String, String)>,
}

impl Snapshot {
    /// The Service a pod in `namespace` names by `host`: `name`, `name.ns`, `name.ns.svc`,
    /// `name.ns.svc.cluster.local` (a trailing dot allowed), or a ClusterIP literal.
    pub fn lookup(&self, namespace: &str, host: &str) -> Option<&[Arc<PortView>]> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .by_ip
                .get(&ip)
                .and_then(|k| self.services.get(k))
                .map(Vec::as_slice);
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let host = host.strip_suffix(".cluster.local").unwrap_or(host);
        let parts: Vec<&str> = host.split('.').collect();
        let (ns, name) = match parts.as_slice() {
            [name] => (namespace, *name),
            [name, ns] | [name, ns, "svc"] => (*ns, *name),
            _ => return None,
        };
        self.services
            .get(&(ns.to_string(), name.to_string()))
            .map(Vec::as_slice)
    }

    /// Every Service port, for the proxy.
    pub fn ports(&self) -> impl Iterator<Item = &Arc<PortView>> {
        self.services.values().flatten()
    }
}

/// The raw objects the table is built from.
#[derive(Default)]
struct Objects {
    services: BTreeMap<(String, String), Service>,
    slices: BTreeMap<(String, String), EndpointSlice>,
    nodes: BTreeMap<String, Node>,
    /// Per-port balancing state, kept while the port exists.
    states: HashMap<String, Arc<PortState>>,
}

/// The Service table of one node; implements [`ServiceResolver`] for its pods.
pub struct ServiceTable {
    node_name: String,
    objects: Mutex<Objects>,
    snapshot: watch::Sender<Arc<Snapshot>>,
}

impl std::fmt::Debug for ServiceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTable")
            .field("node_name", &self.node_name)
            .finish()
    }
}

/// One change from a watch.
enum Change<T> {
    /// The full set after a (re)list.
    Reset(Vec<T>),
    Apply(T),
    Delete(T),
}

fn changes<T>(
    stream: impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Change<T>> + Send
where
    T: Send + 'static,
{
    let mut listing: Vec<T> = Vec::new();
    stream.filter_map(move |e| {
        let out = match e {
            Ok(watcher::Event::Init) => {
                listing.clear();
                None
            }
            Ok(watcher::Event::InitApply(o)) => {
                listing.push(o);
                None
            }
            Ok(watcher::Event::InitDone) => Some(Change::Reset(std::mem::take(&mut listing))),
            Ok(watcher::Event::Apply(o)) => Some(Change::Apply(o)),
            Ok(watcher::Event::Delete(o)) => Some(Change::Delete(o)),
            Err(e) => {
                tracing::debug!("service table watch: {e}");
                None
            }
        };
        futures::future::ready(out)
    })
}

fn key<T: ResourceExt>(o: &T) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl ServiceTable {
    /// An empty table for node `node_name` (fed by [`Self::run`], or by tests).
    pub fn new(node_name: &str) -> Arc<Self> {
        Arc::new(Self {
            node_name: node_name.to_string(),
            objects: Mutex::new(Objects::default()),
            snapshot: watch::channel(Arc::new(Snapshot::default())).0,
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// Watches Services, EndpointSlices and Nodes through `client` until `stop`, rebuilding the
    /// snapshot on every change.
    pub async fn run(self: Arc<Self>, client: Client, stop: CancellationToken) {
        let cfg = watcher::Config::default();
        let services =
            changes(watcher(Api::<Service>::all(client.clone()), cfg.clone()).default_backoff());
        let slices = changes(
            watcher(Api::<EndpointSlice>::all(client.clone()), cfg.clone()).default_backoff(),
        );
        let nodes = changes(watcher(Api::<Node>::all(client), cfg).default_backoff());
        let (mut services, mut slices, mut nodes) =
            (services.boxed(), slices.boxed(), nodes.boxed());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(c) = services.next() => self.update(|o| apply(&mut o.services, c, key)),
                Some(c) = slices.next() => self.update(|o| apply(&mut o.slices, c, key)),
                Some(c) = nodes.next() => self.update(|o| apply(&mut o.nodes, c, |n: &Node| n.name_any())),
                else => return,
            }
        }
    }

    /// Applies a change to the objects and publishes the rebuilt snapshot.
    fn update(&self, change: impl FnOnce(&mut Objects)) {
        let snapshot = {
            let mut objects = self.objects.lock().expect("service table lock");
            change(&mut objects);
            build(&self.node_name, &mut objects)
        };
        self.snapshot.send_replace(Arc::new(snapshot));
    }

    /// Sets a Service (tests and callers without a watch).
    pub fn set_service(&self, svc: Service) {
        self.update(|o| {
            o.services.insert(key(&svc), svc);
        });
    }

    /// Removes a Service.
    pub fn remove_service(&self, namespace: &str, name: &str) {
        self.update(|o| {
            o.services
                .remove(&(namespace.to_string(), name.to_string()));
        });
    }

    /// Sets an EndpointSlice.
    pub fn set_slice(&self, slice: EndpointSlice) {
        self.update(|o| {
            o.slices.insert(key(&slice), slice);
        });
    }

    /// Sets a Node.
    pub fn set_node(&self, node: Node) {
        self.update(|o| {
            o.nodes.insert(node.name_any(), node);
        });
    }
}

fn apply<K: Ord, T>(map: &mut BTreeMap<K, T>, change: Change<T>, key: impl Fn(&T) -> K) {
    match change {
        Change::Reset(all) => {
            map.clear();
            for o in all {
                map.insert(key(&o), o);
            }
        }
        Change::Apply(o) => {
            map.insert(key(&o), o);
        }
        Change::Delete(o) => {
            map.remove(&key(&o));
        }
    }
}

/// Where a node forwards to its pods: its InternalIP and announced forwarding port.
fn forwarder(node: &Node) -> Option<SocketAddr> {
    let port: u16 = node
        .annotations()
        .get(PROXY_PORT_ANNOTATION)?
        .parse()
        .ok()?;
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    let ip: IpAddr = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

fn build(node_name: &str, objects: &mut Objects) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut live_states = HashMap::new();
    for ((ns, name), svc) in &objects.services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        if let Some(ip) = cluster_ip {
            snap.by_ip.insert(ip, (ns.clone(), name.clone()));
        }
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref()?.timeout_seconds)
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let slices: Vec<&EndpointSlice> = objects
            .slices
            .values()
            .filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str())
                    && s.labels().get(SERVICE_NAME_LABEL) == Some(name)
                    && s.address_type == "IPv4"
            })
            .collect();
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            if sp.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let port_name = sp.name.clone().unwrap_or_default();
            let id = format!("{ns}/{name}:{}", sp.port);
            let mut endpoints = Vec::new();
            for slice in &slices {
                // The endpoints controller names a slice port after its Service port; an
                // unnamed one matches the unnamed Service port.
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.clone().unwrap_or_default() == port_name)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    let via = ep
                        .node_name
                        .as_deref()
                        .filter(|n| *n != node_name)
                        .and_then(|n| objects.nodes.get(n))
                        .and_then(forwarder);
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            endpoints.push(Endpoint {
                                addr: SocketAddr::new(ip, target as u16),
                                via,
                            });
                        }
                    }
                }
            }
            endpoints.sort_by_key(|e| e.addr);
            endpoints.dedup_by_key(|e| e.addr);
            let state_key = format!("{}/{id}", svc.uid().unwrap_or_default());
            let state = objects.states.get(&state_key).cloned().unwrap_or_default();
            live_states.insert(state_key, state.clone());
            ports.push(Arc::new(PortView {
                id,
                cluster_ip,
                port: sp.port as u16,
                node_port: sp.node_port.map(|p| p as u16),
                affinity,
                endpoints,
                state,
            }));
        }
        snap.services.insert((ns.clone(), name.clone()), ports);
    }
    objects.states = live_states;
    snap
}

impl ServiceResolver for ServiceTable {
    fn resolve(&self, namespace: &str, host: &str, port: u16) -> Option<SocketAddr> {
        let snap = self.snapshot();
        let ports = snap.lookup(namespace, host)?;
        let view = ports.iter().find(|p| p.port == port)?;
        match view.pick_order(None).first() {
            // A pod on another node may not be routable from here: through the ClusterIP, the
            // node proxy forwards via its node.
            Some(ep) if ep.via.is_some() && view.cluster_ip.is_some() => {
                view.cluster_ip.map(|ip| SocketAddr::new(ip, port))
            }
            Some(ep) => Some(ep.addr),
            // A Service without ready endpoints: its ClusterIP, where the proxy rejects the
            // connection, as upstream does.
            None => view.cluster_ip.map(|ip| SocketAddr::new(ip, port)),
        }
    }

    fn cluster_ip(&self, namespace: &str, host: &str) -> Option<IpAddr> {
        let snap = self.snapshot();
        snap.lookup(namespace, host)?.first()?.cluster_ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": spec}),
        )
        .unwrap()
    }

    fn slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}))
        .unwrap()
    }

    #[test]
    fn names_resolve_relative_to_the_pods_namespace_and_balance_over_ready_endpoints() {
        let t = ServiceTable::new("n1");
        t.set_service(svc(json!({"clusterIP": "127.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]})));
        assert_eq!(
            t.resolve("shop", "web", 80),
            Some("127.96.0.10:80".parse().unwrap()),
            "no endpoints yet: the ClusterIP, which rejects"
        );
        t.set_slice(slice(
            "web-a",
            json!([
                {"addresses": ["127.128.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["127.128.0.3"], "conditions": {"ready": true}},
                {"addresses": ["127.128.0.4"], "conditions": {"ready": false}},
            ]),
        ));
        let mut seen = std::collections::BTreeSet::new();
        for host in [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local",
            "127.96.0.10",
        ] {
            for _ in 0..2 {
                seen.insert(t.resolve("shop", host, 80).unwrap().to_string());
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec!["127.128.0.2:8080", "127.128.0.3:8080"]
        );
        assert_eq!(
            t.resolve("other", "web", 80),
            None,
            "name is namespace-relative"
        );
        assert!(t.resolve("other", "web.shop", 80).is_some());
        assert_eq!(t.resolve("shop", "web", 81), None, "no such port");
        assert_eq!(t.resolve("shop", "web.shop.pod", 80), None);
        assert_eq!(
            t.cluster_ip("other", "web.shop.svc"),
            Some("127.96.0.10".parse().unwrap())
        );
        t.remove_service("shop", "web");
        assert_eq!(t.resolve("shop", "web", 80), None);
    }

    #[test]
    fn endpoints_on_other_nodes_go_through_their_forwarder() {
        let t = ServiceTable::new("n1");
        t.set_node(
            serde_json::from_value(json!({"metadata": {"name": "n2",
                "annotations": {PROXY_PORT_ANNOTATION: "10300"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.2"}]}}))
            .unwrap(),
        );
        t.set_service(svc(json!({"clusterIP": "127.96.0.10",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})));
        t.set_slice(slice(
            "web-a",
            json!([
                {"addresses": ["127.128.0.2"], "nodeName": "n1"},
                {"addresses": ["127.128.16.2"], "nodeName": "n2"},
            ]),
        ));
        let snap = t.snapshot();
        let eps = &snap.lookup("shop", "web").unwrap()[0].endpoints;
        assert_eq!(eps[0].via, None);
        assert_eq!(eps[1].via, Some("127.0.0.2:10300".parse().unwrap()));
        // Pods resolving the name reach the remote pod through the ClusterIP (the proxy).
        let answers: std::collections::BTreeSet<String> = (0..4)
            .map(|_| t.resolve("shop", "web", 80).unwrap().to_string())
            .collect();
        assert_eq!(
            answers.into_iter().collect::<Vec<_>>(),
            vec!["127.128.0.2:8080", "127.96.0.10:80"]
        );
    }
}
