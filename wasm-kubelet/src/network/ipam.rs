//! Pod addresses: one IPv4 address per pod from the node's `podCIDR`, as upstream's
//! `host-local` IPAM plugin hands them out (the network address and the gateway `.1` are
//! skipped, and so is the broadcast address). Allocations are keyed by pod UID and persisted
//! under the data dir, so a kubelet restart gives every pod back the address it had.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors of address management.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR {0:?}: expected an IPv4 a.b.c.d/n with n between 8 and 30")]
    Cidr(String),
    #[error("pod CIDR {0} is exhausted: every address is allocated")]
    Exhausted(Cidr),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub use wasmkube_net::Cidr;

/// A pod network (`--cluster-cidr`, `--service-cidr`, a podCIDR): an IPv4 CIDR with a prefix
/// of 8 to 30 bits.
pub fn parse_cidr(s: &str) -> Result<Cidr, IpamError> {
    let cidr: Cidr = s.parse().map_err(|_| IpamError::Cidr(s.to_string()))?;
    if !(8..=30).contains(&cidr.prefix()) {
        return Err(IpamError::Cidr(s.to_string()));
    }
    Ok(cidr)
}

/// A node's `podCIDR` derived from the node name when no controller assigned one: the subnet
/// of `mask` bits inside `cluster` picked by a stable hash of the name.
pub fn derive_pod_cidr(cluster: &Cidr, mask: u8, node_name: &str) -> Option<Cidr> {
    let count = 1u64 << mask.checked_sub(cluster.prefix())?;
    // FNV-1a: stable across builds and platforms (the std hasher is not guaranteed to be).
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    node_name.hash(&mut hasher);
    cluster.subnet(mask, hasher.finish() % count)
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// How long the kubelet waits for the node-IPAM controller to set `spec.podCIDR` on a new
/// Node before it derives one itself.
pub const POD_CIDR_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The node's podCIDR: `configured` (`--pod-cidr`) if set; else the Node's `spec.podCIDR`
/// (waiting up to [`POD_CIDR_WAIT`] for the node-IPAM controller); else a `/mask` of `cluster`
/// derived from the node name (logged).
pub async fn node_pod_cidr(
    client: &kube::Client,
    node_name: &str,
    configured: Option<&str>,
    cluster: &Cidr,
    mask: u8,
) -> Result<Cidr, IpamError> {
    if let Some(c) = configured {
        return parse_cidr(c);
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    loop {
        let assigned = nodes
            .get_opt(node_name)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.spec?.pod_cidr);
        if let Some(c) = assigned {
            match parse_cidr(&c) {
                Ok(cidr) => return Ok(cidr),
                Err(e) => {
                    tracing::warn!(node = %node_name, "spec.podCIDR: {e}");
                    break;
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let derived = derive_pod_cidr(cluster, mask, node_name)
        .ok_or_else(|| IpamError::Cidr(format!("{cluster} with node mask /{mask}")))?;
    tracing::info!(
        node = %node_name,
        pod_cidr = %derived,
        "no spec.podCIDR assigned and no --pod-cidr: using a podCIDR derived from the node name"
    );
    Ok(derived)
}

/// The pod address allocator of one node.
#[derive(Debug)]
pub struct Ipam {
    cidr: Cidr,
    path: PathBuf,
    /// Pod UID → address.
    pods: Mutex<BTreeMap<String, Ipv4Addr>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    cidr: String,
    pods: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    /// The allocator for `cidr`, with the allocations persisted in `dir/ipam.json` (those
    /// outside `cidr`, left from another podCIDR, are dropped).
    pub fn open(dir: &Path, cidr: Cidr) -> Result<Self, IpamError> {
        std::fs::create_dir_all(dir).map_err(|source| IpamError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("ipam.json");
        let mut pods = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok())
            .map(|p| p.pods)
            .unwrap_or_default();
        pods.retain(|_, ip| cidr.contains(*ip));
        Ok(Self {
            cidr,
            path,
            pods: Mutex::new(pods),
        })
    }

    /// The network addresses are allocated from.
    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The address of pod `uid`, if it has one.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.lock().get(uid).copied()
    }

    /// The address of pod `uid`: the one it has, else `preferred` (the pod's `status.podIP`
    /// from before a restart) when inside the CIDR and free, else the lowest free address.
    pub fn allocate(&self, uid: &str, preferred: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let mut pods = self.lock();
        if let Some(ip) = pods.get(uid) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = pods.values().copied().collect();
        let usable = |ip: &Ipv4Addr| self.usable(*ip) && !used.contains(ip);
        let ip = match preferred.filter(usable) {
            Some(ip) => ip,
            None => {
                let base = u32::from(self.cidr.base());
                // .0 is the network, .1 the gateway, the last the broadcast address.
                (2..self.cidr.size().saturating_sub(1))
                    .filter_map(|i| u32::try_from(i).ok())
                    .map(|i| Ipv4Addr::from(base + i))
                    .find(|ip| !used.contains(ip))
                    .ok_or(IpamError::Exhausted(self.cidr))?
            }
        };
        pods.insert(uid.to_string(), ip);
        self.save(&pods)?;
        Ok(ip)
    }

    /// Frees the address of pod `uid`.
    pub fn release(&self, uid: &str) -> Result<(), IpamError> {
        let mut pods = self.lock();
        if pods.remove(uid).is_some() {
            self.save(&pods)?;
        }
        Ok(())
    }

    /// Frees the addresses of pods for which `keep` is false (pods gone while the kubelet
    /// was down).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<(), IpamError> {
        let mut pods = self.lock();
        let before = pods.len();
        pods.retain(|uid, _| keep(uid));
        if pods.len() != before {
            self.save(&pods)?;
        }
        Ok(())
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        let offset = u64::from(u32::from(ip).wrapping_sub(u32::from(self.cidr.base())));
        self.cidr.contains(ip) && offset >= 2 && offset < self.cidr.size() - 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ipv4Addr>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, pods: &BTreeMap<String, Ipv4Addr>) -> Result<(), IpamError> {
        let io = |source| IpamError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(&Persisted {
            cidr: self.cidr.to_string(),
            pods: pods.clone(),
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let c = cidr("127.128.17.5/20");
        assert_eq!(c.to_string(), "127.128.16.0/20");
        assert!(c.contains("127.128.31.255".parse().unwrap()));
        assert!(!c.contains("127.128.32.0".parse().unwrap()));
        assert!(parse_cidr("127.0.0.1").is_err());
        assert!(parse_cidr("127.0.0.0/31").is_err());
        assert!(parse_cidr("::1/64").is_err());
    }

    #[test]
    fn derived_pod_cidrs_are_stable_subnets_of_the_cluster_cidr() {
        let cluster = cidr(super::super::CLUSTER_CIDR);
        let a = derive_pod_cidr(&cluster, 20, "node-a").unwrap();
        assert_eq!(a, derive_pod_cidr(&cluster, 20, "node-a").unwrap());
        assert_eq!(a.prefix(), 20);
        assert!(cluster.contains(a.base()));
        assert_ne!(a, derive_pod_cidr(&cluster, 20, "node-b").unwrap());
    }

    #[test]
    fn pods_get_distinct_addresses_skipping_network_and_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), cidr("127.128.0.0/24")).unwrap();
        let a = ipam.allocate("a", None).unwrap();
        let b = ipam.allocate("b", None).unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 128, 0, 2));
        assert_eq!(b, Ipv4Addr::new(127, 128, 0, 3));
        assert_eq!(ipam.allocate("a", None).unwrap(), a, "idempotent per pod");
        ipam.release("a").unwrap();
        assert_eq!(ipam.get("a"), None);
        assert_eq!(
            ipam.allocate("c", None).unwrap(),
            a,
            "released address reused"
        );
    }

    #[test]
    fn a_full_cidr_is_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        // /30: network, gateway, one pod address, broadcast.
        let ipam = Ipam::open(dir.path(), cidr("127.128.0.0/30")).unwrap();
        assert_eq!(
            ipam.allocate("a", None).unwrap(),
            Ipv4Addr::new(127, 128, 0, 2)
        );
        assert!(matches!(
            ipam.allocate("b", None),
            Err(IpamError::Exhausted(_))
        ));
        ipam.release("a").unwrap();
        assert!(ipam.allocate("b", None).is_ok());
    }

    #[test]
    fn allocations_survive_a_restart_and_preferred_addresses_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("127.128.0.0/24");
        {
            let ipam = Ipam::open(dir.path(), c).unwrap();
            ipam.allocate("a", None).unwrap();
            ipam.allocate("b", None).unwrap();
        }
        let ipam = Ipam::open(dir.path(), c).unwrap();
        assert_eq!(ipam.get("b"), Some(Ipv4Addr::new(127, 128, 0, 3)));
        let preferred = Ipv4Addr::new(127, 128, 0, 77);
        assert_eq!(ipam.allocate("c", Some(preferred)).unwrap(), preferred);
        // A preferred address that is taken, or outside the CIDR, is not handed out twice.
        let d = ipam.allocate("d", Some(preferred)).unwrap();
        assert_ne!(d, preferred);
        let e = ipam
            .allocate("e", Some(Ipv4Addr::new(127, 0, 0, 9)))
            .unwrap();
        assert!(c.contains(e));
        ipam.retain(|uid| uid != "a").unwrap();
        let reopened = Ipam::open(dir.path(), c).unwrap();
        assert_eq!(reopened.get("a"), None);
        assert_eq!(reopened.get("c"), Some(preferred));
    }
}
