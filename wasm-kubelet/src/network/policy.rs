//! What a pod's sockets may reach: the rules behind wasmtime's socket address check for p2
//! components and behind the wasi-http outgoing hook.
//!
//! - bind / listen: only the pod's own address. An explicit TCP bind to `0.0.0.0` never gets
//!   here: `runtime::sockets` rewrites it to the pod's address first (a server "listening on
//!   all interfaces" listens on its pod IP). The implicit bind of a `connect` (`0.0.0.0:0`)
//!   is allowed: the host picks the source address; listening on such a socket is not. Other
//!   unspecified binds (`[::]`, UDP `0.0.0.0:port`) are denied: use the pod IP (downward API
//!   `status.podIP`).
//! - connect / send: cluster addresses only: the cluster (pod) CIDR, the service CIDR and the
//!   node's addresses, all inside 127.0.0.0/8 by default; anything else is denied.
//! - accept / receive: allowed (the peer already passed its own check).
//!
//! p1 modules get no sockets at all (wasi preview 1 has no socket creation).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::ipam::Cidr;
use super::ServiceResolver;

/// What a socket operation does with an address (mirrors `wasmtime_wasi::SocketAddrUse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Binding a local address (TCP or UDP).
    Bind,
    /// Listening on a bound TCP address.
    Listen,
    /// Accepting a connection / receiving a datagram from a peer.
    Accept,
    /// Connecting to a peer / sending a datagram.
    Connect,
}

impl Use {
    /// The wasmtime use, mapped.
    pub fn of(u: wasmtime_wasi::sockets::SocketAddrUse) -> Self {
        use wasmtime_wasi::sockets::SocketAddrUse as S;
        match u {
            S::TcpBind | S::UdpBind => Self::Bind,
            S::TcpListen => Self::Listen,
            S::TcpAccept | S::UdpReceive => Self::Accept,
            S::TcpConnect | S::UdpSend => Self::Connect,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Listen => "listen",
            Self::Accept => "accept",
            Self::Connect => "connect",
        }
    }
}

/// Why an address was refused (logged by the kubelet; the guest sees `access-denied`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{use_} {addr} denied: {why}")]
pub struct Denied {
    /// The operation.
    pub use_: &'static str,
    /// The address the guest asked for.
    pub addr: SocketAddr,
    /// The rule that refused it.
    pub why: String,
}

/// The socket policy of one pod.
#[derive(Clone, Debug)]
pub struct SocketPolicy {
    /// The pod's own address: the only one it may bind.
    pub pod_ip: IpAddr,
    /// The cluster (pod) CIDR.
    pub cluster_cidr: Cidr,
    /// The service CIDR.
    pub service_cidr: Cidr,
    /// The node's addresses (its InternalIP and 127.0.0.1).
    pub node_addresses: Vec<IpAddr>,
}

impl SocketPolicy {
    /// Whether the pod may use `addr` for `use_`.
    pub fn check(&self, addr: SocketAddr, use_: Use) -> Result<(), Denied> {
        let deny = |why: String| {
            Err(Denied {
                use_: use_.as_str(),
                addr,
                why,
            })
        };
        match use_ {
            Use::Accept => Ok(()),
            Use::Bind | Use::Listen => {
                let ip = canonical(addr.ip());
                let ephemeral = ip.is_unspecified() && addr.port() == 0 && use_ == Use::Bind;
                if ip == self.pod_ip || ephemeral {
                    Ok(())
                } else if ip.is_unspecified() {
                    deny(format!(
                        "a pod binds its own address: use {}:{} (the pod IP, downward API \
                         status.podIP) instead of the unspecified address",
                        self.pod_ip,
                        addr.port()
                    ))
                } else {
                    deny(format!(
                        "a pod may bind only its own address {}",
                        self.pod_ip
                    ))
                }
            }
            Use::Connect => {
                if self.is_cluster_address(addr.ip()) {
                    Ok(())
                } else {
                    deny(format!(
                        "not a cluster address (pod CIDR {}, service CIDR {}, node addresses)",
                        self.cluster_cidr, self.service_cidr
                    ))
                }
            }
        }
    }

    /// Whether `ip` is a pod, Service or node address.
    pub fn is_cluster_address(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.node_addresses.contains(&ip) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => self.cluster_cidr.contains(v4) || self.service_cidr.contains(v4),
            IpAddr::V6(_) => false,
        }
    }
}

/// What the network plugin grants one pod: its address, its socket policy and the Service
/// table for names.
pub struct PodNetwork {
    /// `namespace/name` of the pod (for logs).
    pub pod: String,
    /// The pod's namespace (Service names resolve relative to it).
    pub namespace: String,
    /// The socket policy.
    pub policy: SocketPolicy,
    /// The Service table, when the node proxy runs.
    pub resolver: Option<Arc<dyn ServiceResolver>>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("pod", &self.pod)
            .field("policy", &self.policy)
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl PodNetwork {
    /// The socket address check; a denial is also logged by the kubelet (pod, address, use).
    pub fn check(&self, addr: SocketAddr, use_: Use) -> Result<(), Denied> {
        self.policy.check(addr, use_).inspect_err(|denied| {
            tracing::warn!(pod = %self.pod, address = %addr, use_ = denied.use_, "socket {denied}");
        })
    }
}

/// The network plugin's state on one node: pod addresses, the address plan, the Service
/// table.
pub struct NodeNetwork {
    /// Pod addresses from the node's podCIDR.
    pub ipam: super::ipam::Ipam,
    /// The cluster (pod) CIDR.
    pub cluster_cidr: Cidr,
    /// The service CIDR.
    pub service_cidr: Cidr,
    /// The node's addresses (its InternalIP and 127.0.0.1).
    pub node_addresses: Vec<IpAddr>,
    /// The Service table, when the node proxy runs.
    pub resolver: Option<Arc<dyn ServiceResolver>>,
}

impl NodeNetwork {
    /// The grants of pod `namespace/name` with address `pod_ip`.
    pub fn pod(&self, namespace: &str, name: &str, pod_ip: IpAddr) -> PodNetwork {
        PodNetwork {
            pod: format!("{namespace}/{name}"),
            namespace: namespace.to_string(),
            policy: SocketPolicy {
                pod_ip,
                cluster_cidr: self.cluster_cidr,
                service_cidr: self.service_cidr,
                node_addresses: self.node_addresses.clone(),
            },
            resolver: self.resolver.clone(),
        }
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SocketPolicy {
        SocketPolicy {
            pod_ip: "127.128.0.2".parse().unwrap(),
            cluster_cidr: super::super::CLUSTER_CIDR.parse().unwrap(),
            service_cidr: super::super::SERVICE_CIDR.parse().unwrap(),
            node_addresses: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_pod_binds_only_its_own_address() {
        let p = policy();
        assert!(p.check(addr("127.128.0.2:8080"), Use::Bind).is_ok());
        assert!(p.check(addr("127.128.0.2:8080"), Use::Listen).is_ok());
        assert!(
            p.check(addr("0.0.0.0:0"), Use::Bind).is_ok(),
            "connect's implicit bind"
        );
        let other = p.check(addr("127.128.0.3:8080"), Use::Bind).unwrap_err();
        assert!(
            other.why.contains("only its own address 127.128.0.2"),
            "{other}"
        );
        let any = p.check(addr("0.0.0.0:8080"), Use::Bind).unwrap_err();
        assert!(any.why.contains("127.128.0.2:8080"), "{any}");
        assert!(p.check(addr("127.0.0.1:80"), Use::Bind).is_err());
        assert!(p.check(addr("[::ffff:127.128.0.2]:80"), Use::Bind).is_ok());
        assert!(
            p.check(addr("0.0.0.0:0"), Use::Listen).is_err(),
            "implicit wildcard listen"
        );
    }

    #[test]
    fn a_pod_connects_only_to_cluster_addresses() {
        let p = policy();
        assert!(
            p.check(addr("127.128.5.9:80"), Use::Connect).is_ok(),
            "a pod"
        );
        assert!(
            p.check(addr("127.96.0.10:80"), Use::Connect).is_ok(),
            "a service"
        );
        assert!(
            p.check(addr("127.0.0.1:6443"), Use::Connect).is_ok(),
            "the node"
        );
        let e = p.check(addr("127.0.0.2:80"), Use::Connect).unwrap_err();
        assert!(
            e.to_string().starts_with("connect 127.0.0.2:80 denied"),
            "{e}"
        );
        assert!(p.check(addr("[::1]:80"), Use::Connect).is_err());
        assert!(p.check(addr("127.0.0.2:80"), Use::Accept).is_ok());
    }
}
