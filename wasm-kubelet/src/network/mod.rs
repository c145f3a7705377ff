//! The network plugin: pod addresses (`ipam`), what a pod's sockets may reach (`policy`),
//! wasi-http serving and outgoing requests (`http`), and the kube-proxy role: the Service table
//! (`services`, from Services + EndpointSlices) and the node proxy (`proxy`, ClusterIP and
//! NodePort listeners balancing over ready endpoints).
//!
//! Default address plan (no setup on one host: all of 127.0.0.0/8 is loopback on Linux):
//! - node addresses: 127.0.0.1 (and what `--address` says);
//! - cluster (pod) CIDR `127.128.0.0/9`, one `/20` `podCIDR` per node (4094 pods per node);
//! - service CIDR `127.96.0.0/12` (ClusterIPs, allocated by the apiserver).

use std::net::{IpAddr, SocketAddr};

pub mod http;
pub mod ipam;
pub mod policy;
pub mod proxy;
pub mod services;

/// The default cluster (pod) CIDR.
pub const CLUSTER_CIDR: &str = "127.128.0.0/9";
/// The default prefix length of a node's `podCIDR` within [`CLUSTER_CIDR`].
pub const NODE_CIDR_MASK: u8 = 20;
/// The default service CIDR.
pub const SERVICE_CIDR: &str = "127.96.0.0/12";

/// How a pod's outgoing requests and name lookups find Services: implemented by the Service
/// table (`services`), used by the runtime's wasi-http and ip-name-lookup hooks.
pub trait ServiceResolver: Send + Sync + 'static {
    /// `host` as the guest wrote it (`name`, `name.ns`, `name.ns.svc`,
    /// `name.ns.svc.cluster.local`, or a ClusterIP) with `port`, for a pod in `namespace`: a
    /// ready endpoint's address (balanced), or `None` when `host` names no Service.
    fn resolve(&self, namespace: &str, host: &str, port: u16) -> Option<SocketAddr>;
    /// The ClusterIP of the Service `host` names (for ip-name-lookup), if any.
    fn cluster_ip(&self, namespace: &str, host: &str) -> Option<IpAddr>;
}
