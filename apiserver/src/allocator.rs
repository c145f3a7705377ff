//! Service ClusterIP and NodePort allocation: upstream's service REST allocators.
//!
//! Every allocation is one key in the store, created with the store's create-if-absent:
//! `serviceallocations/clusterips/<ip>` and `serviceallocations/nodeports/<port>`, holding the
//! owning Service's uid and name (upstream's `IPAddress` objects of KEP-1880 work the same way).
//! The store decides who wins, so concurrent creates, restarts and several apiservers on one
//! etcd agree with no in-memory state to rebuild or keep in sync. A write that fails after
//! allocating releases what it took; allocations whose Service is gone without the REST layer
//! seeing it (a crash between allocating and storing, a namespace deletion) are released by
//! [`run_repair`], as upstream's repair controllers do; it also re-creates keys missing for
//! stored Services.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::errors::{ApiError, FieldError};
use crate::object;
use crate::registry::service::NODE_PORT_RANGE;
use crate::resources;
use crate::storage::{ListOptions, Storage, StorageError};

/// The default `--service-cluster-ip-range` (inside 127.0.0.0/8: needs no setup on one host).
pub const DEFAULT_SERVICE_CIDR: &str = "127.96.0.0/12";

const IP_PREFIX: &str = "serviceallocations/clusterips/";
const PORT_PREFIX: &str = "serviceallocations/nodeports/";

/// How long an allocation without its Service is kept before the repair loop releases it: a
/// create in flight (on this or another apiserver) stores its Service well within this.
const LEAK_GRACE: Duration = Duration::from_secs(60);

pub use wasmkube_net::Cidr;

/// A `--service-cluster-ip-range`: an IPv4 CIDR with a prefix of 1 to 30 bits (room for the
/// `kubernetes` Service and at least one more).
pub fn service_cidr(s: &str) -> Result<Cidr, String> {
    let cidr: Cidr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 CIDR (like {DEFAULT_SERVICE_CIDR})"))?;
    if !(1..=30).contains(&cidr.prefix()) {
        return Err(format!("{s:?}: the prefix length must be between 1 and 30"));
    }
    Ok(cidr)
}

/// The apiserver's allocation ranges (`--service-cluster-ip-range`, the node port range).
#[derive(Clone, Copy, Debug)]
pub struct ServiceAllocator {
    /// ClusterIPs come from here; its first address is the `kubernetes` Service's.
    pub service_cidr: Cidr,
}

impl Default for ServiceAllocator {
    fn default() -> Self {
        Self {
            service_cidr: service_cidr(DEFAULT_SERVICE_CIDR).expect("a valid default"),
        }
    }
}

fn spec_str<'a>(svc: &'a Value, f: &str) -> &'a str {
    svc.pointer(&format!("/spec/{f}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn svc_type(svc: &Value) -> &str {
    match spec_str(svc, "type") {
        "" => "ClusterIP",
        t => t,
    }
}

/// Upstream's `needsClusterIP`: every type but ExternalName.
pub fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

/// Upstream's `needsNodePort`: NodePort, and LoadBalancer unless it opts out.
pub fn needs_node_ports(svc: &Value) -> bool {
    match svc_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

/// The requested ClusterIP: `clusterIPs[0]`, else `clusterIP` (empty when none).
fn requested_ip(svc: &Value) -> &str {
    svc.pointer("/spec/clusterIPs/0")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| spec_str(svc, "clusterIP"))
}

fn ports(svc: &Value) -> &[Value] {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn ip_key(ip: &str) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: i64) -> String {
    format!("{PORT_PREFIX}{port}")
}

/// The allocation keys a stored Service holds.
fn held(svc: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if needs_cluster_ip(svc) {
        let ip = requested_ip(svc);
        if ip.parse::<Ipv4Addr>().is_ok() {
            keys.insert(ip_key(ip));
        }
    }
    for p in ports(svc) {
        if let Some(n) = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            keys.insert(port_key(n));
        }
    }
    keys
}

fn owner(svc: &Value) -> bytes::Bytes {
    let v = json!({
        "uid": object::meta_str(svc, "uid"),
        "service": format!("{}/{}", object::namespace(svc), object::name(svc)),
        "time": object::now_rfc3339(),
    });
    bytes::Bytes::from(v.to_string())
}

fn invalid(svc: &Value, field: String, value: Value, detail: String) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        object::name(svc),
        &[FieldError::invalid(field, &value, &detail)],
    )
}

fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

/// Every key under `prefix`.
async fn list_keys(
    store: &dyn Storage,
    prefix: &str,
) -> Result<Vec<crate::storage::KeyValue>, StorageError> {
    let mut out = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .list(ListOptions {
                prefix: prefix.into(),
                start_after: start_after.clone(),
                limit: Some(1000),
                revision: None,
            })
            .await?;
        start_after = page.items.last().map(|kv| kv.key.clone());
        out.extend(page.items);
        if !page.more {
            return Ok(out);
        }
    }
}

fn storage(e: StorageError) -> ApiError {
    ApiError::from_storage(e, "", "services", "")
}

impl ServiceAllocator {
    /// Allocates what `svc` needs and `old` (the stored version, on update) does not hold:
    /// a ClusterIP (the requested one if free and in range), and node ports. Fills the spec in
    /// and returns the keys taken, for [`Self::release`] if the write then fails.
    pub async fn allocate(
        &self,
        store: &dyn Storage,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let mut taken = Vec::new();
        match self.allocate_into(store, svc, old, &mut taken).await {
            Ok(()) => Ok(taken),
            Err(e) => {
                self.release(store, &taken).await;
                Err(e)
            }
        }
    }

    async fn allocate_into(
        &self,
        store: &dyn Storage,
        svc: &mut Value,
        old: Option<&Value>,
        taken: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let mine = old.map(held).unwrap_or_default();
        let value = owner(svc);
        if needs_cluster_ip(svc) {
            match requested_ip(svc).to_string() {
                ip if ip == "None" => {}
                ip if ip.is_empty() => {
                    let ip = self.pick_ip(store, &value).await?;
                    taken.push(ip_key(&ip));
                    svc["spec"]["clusterIP"] = json!(ip);
                    svc["spec"]["clusterIPs"] = json!([ip]);
                    svc["spec"]["ipFamilies"] = json!(["IPv4"]);
                    if spec_str(svc, "ipFamilyPolicy").is_empty() {
                        svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
                    }
                }
                ip if mine.contains(&ip_key(&ip)) => {}
                ip => {
                    let shown = json!([ip]);
                    let in_range = ip
                        .parse::<Ipv4Addr>()
                        .is_ok_and(|a| self.service_cidr.contains_usable(a));
                    if !in_range {
                        return Err(invalid(svc, "spec.clusterIPs".into(), shown, format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                            self.service_cidr
                        )));
                    }
                    match store.create(&ip_key(&ip), value.clone()).await {
                        Ok(_) => taken.push(ip_key(&ip)),
                        Err(StorageError::AlreadyExists(_)) => {
                            return Err(invalid(
                                svc,
                                "spec.clusterIPs".into(),
                                shown,
                                format!(
                                    "failed to allocate IP {ip}: provided IP is already allocated"
                                ),
                            ))
                        }
                        Err(e) => return Err(storage(e)),
                    }
                    if svc.pointer("/spec/clusterIPs/0").is_none() {
                        svc["spec"]["clusterIPs"] = json!([ip]);
                    }
                    svc["spec"]["clusterIP"] = json!(ip);
                }
            }
        }
        if !needs_node_ports(svc) {
            return Ok(());
        }
        let count = ports(svc).len();
        for i in 0..count {
            let asked = svc["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if asked == 0 {
                let port = self.pick_port(store, &value).await?;
                taken.push(port_key(port));
                svc["spec"]["ports"][i]["nodePort"] = json!(port);
                continue;
            }
            let key = port_key(asked);
            if mine.contains(&key) || taken.contains(&key) {
                continue;
            }
            match store.create(&key, value.clone()).await {
                Ok(_) => taken.push(key),
                Err(StorageError::AlreadyExists(_)) => {
                    return Err(invalid(
                        svc,
                        format!("spec.ports[{i}].nodePort"),
                        json!(asked),
                        "provided port is already allocated".into(),
                    ))
                }
                Err(e) => return Err(storage(e)),
            }
        }
        Ok(())
    }

    /// A free ClusterIP: random picks first (the range is mostly empty), then a scan of what is
    /// allocated when those collide.
    async fn pick_ip(&self, store: &dyn Storage, value: &bytes::Bytes) -> Result<String, ApiError> {
        let usable = self.service_cidr.size() - 2;
        let candidates = (0..8).map(|_| 1 + random_below(usable));
        let full = || ApiError::internal("failed to allocate a serviceIP: range is full");
        let pick = |n: u64| self.service_cidr.nth(n).to_string();
        for n in candidates {
            match store.create(&ip_key(&pick(n)), value.clone()).await {
                Ok(_) => return Ok(pick(n)),
                Err(StorageError::AlreadyExists(_)) => {}
                Err(e) => return Err(storage(e)),
            }
        }
        let used: HashSet<String> = list_keys(store, IP_PREFIX)
            .await
            .map_err(storage)?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let start = random_below(usable);
        for i in 0..usable {
            let n = 1 + (start + i) % usable;
            let key = ip_key(&pick(n));
            if used.contains(&key) {
                continue;
            }
            match store.create(&key, value.clone()).await {
                Ok(_) => return Ok(pick(n)),
                Err(StorageError::AlreadyExists(_)) => {}
                Err(e) => return Err(storage(e)),
            }
        }
        Err(full())
    }

    /// A free node port, the same way as [`Self::pick_ip`].
    async fn pick_port(&self, store: &dyn Storage, value: &bytes::Bytes) -> Result<i64, ApiError> {
        let (lo, hi) = NODE_PORT_RANGE;
        let size = (hi - lo + 1) as u64;
        for _ in 0..8 {
            let port = lo + random_below(size) as i64;
            match store.create(&port_key(port), value.clone()).await {
                Ok(_) => return Ok(port),
                Err(StorageError::AlreadyExists(_)) => {}
                Err(e) => return Err(storage(e)),
            }
        }
        let used: HashSet<String> = list_keys(store, PORT_PREFIX)
            .await
            .map_err(storage)?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let start = random_below(size);
        for i in 0..size {
            let port = lo + ((start + i) % size) as i64;
            if used.contains(&port_key(port)) {
                continue;
            }
            match store.create(&port_key(port), value.clone()).await {
                Ok(_) => return Ok(port),
                Err(StorageError::AlreadyExists(_)) => {}
                Err(e) => return Err(storage(e)),
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: range is full",
        ))
    }

    /// Releases allocation keys (after a failed write). Errors are logged: the repair loop
    /// releases what is left.
    pub async fn release(&self, store: &dyn Storage, keys: &[String]) {
        for key in keys {
            match store.delete(key, None).await {
                Ok(_) | Err(StorageError::NotFound(_)) => {}
                Err(e) => tracing::warn!(%key, "releasing a service allocation: {e}"),
            }
        }
    }

    /// After `old` was replaced by `new` (None: deleted), releases what `old` held and `new`
    /// does not.
    pub async fn release_dropped(&self, store: &dyn Storage, old: &Value, new: Option<&Value>) {
        let keep = new.map(held).unwrap_or_default();
        let gone: Vec<String> = held(old).difference(&keep).cloned().collect();
        self.release(store, &gone).await;
    }

    /// One repair pass: releases allocations whose Service no longer holds them (older than a
    /// grace period, so creates in flight keep theirs) and records allocations of stored
    /// Services that have no key.
    pub async fn repair(&self, store: &dyn Storage) -> Result<(), StorageError> {
        let def = resources::find("", "v1", "services").expect("services are served");
        let mut owners: BTreeMap<String, Value> = BTreeMap::new();
        for kv in list_keys(store, "services/").await? {
            let Ok(svc) = codec::from_stored(&kv, def) else {
                continue;
            };
            for key in held(&svc) {
                owners.insert(key, svc.clone());
            }
        }
        let now = jiff::Timestamp::now();
        let mut present = HashSet::new();
        for prefix in [IP_PREFIX, PORT_PREFIX] {
            for kv in list_keys(store, prefix).await? {
                present.insert(kv.key.clone());
                let record: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                let uid = record.get("uid").and_then(Value::as_str).unwrap_or("");
                if owners
                    .get(&kv.key)
                    .is_some_and(|svc| object::meta_str(svc, "uid") == uid)
                {
                    continue;
                }
                let age = record
                    .get("time")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| now.duration_since(t).unsigned_abs())
                    .unwrap_or(Duration::MAX);
                if age > LEAK_GRACE {
                    tracing::info!(key = %kv.key, "releasing a leaked service allocation");
                    match store.delete(&kv.key, Some(kv.mod_revision)).await {
                        Ok(_) | Err(StorageError::NotFound(_) | StorageError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    present.remove(&kv.key);
                }
            }
        }
        for (key, svc) in &owners {
            if !present.contains(key) {
                match store.create(key, owner(svc)).await {
                    Ok(_) | Err(StorageError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl ServiceAllocator {
    /// Upstream's bootstrap controller: the `default/kubernetes` Service (ClusterIP = the first
    /// address of the range, port 443 `https`) and its EndpointSlice and Endpoints naming the
    /// apiserver at `addr`. An existing Service is kept; the endpoints follow `addr`.
    pub async fn ensure_kubernetes_service(
        &self,
        store: &dyn Storage,
        addr: std::net::SocketAddr,
    ) -> Result<(), ApiError> {
        let now = object::now_rfc3339();
        let def = resources::find("", "v1", "services").expect("services are served");
        let key = "services/default/kubernetes";
        if store.get(key).await.map_err(storage)?.is_none() {
            let mut svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": self.service_cidr.nth(1).to_string(),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                        "targetPort": addr.port()}]},
            });
            crate::strategy::prepare_create(def, &mut svc, &uuid::Uuid::new_v4().to_string(), &now);
            crate::registry::apply_defaults(def, &mut svc);
            let taken = match self.allocate(store, &mut svc, None).await {
                Ok(t) => t,
                Err(_) => {
                    // Someone holds the first address: take any.
                    let spec = &mut svc["spec"];
                    spec["clusterIP"] = json!("");
                    spec["clusterIPs"] = json!([]);
                    self.allocate(store, &mut svc, None).await?
                }
            };
            match store.create(key, codec::to_stored(&mut svc)).await {
                Ok(_) => {}
                Err(e) => {
                    self.release(store, &taken).await;
                    if !matches!(e, StorageError::AlreadyExists(_)) {
                        return Err(storage(e));
                    }
                }
            }
        }
        let ip = addr.ip().to_string();
        let labels = json!({"kubernetes.io/service-name": "kubernetes"});
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}],
        });
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip}],
                "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}],
        });
        for (key, obj) in [
            ("endpointslices/default/kubernetes", slice),
            ("endpoints/default/kubernetes", endpoints),
        ] {
            put_owned(store, key, obj, &now).await?;
        }
        Ok(())
    }
}

/// Creates `obj` at `key`, or replaces what is there when its content differs.
async fn put_owned(
    store: &dyn Storage,
    key: &str,
    mut obj: Value,
    now: &str,
) -> Result<(), ApiError> {
    let fields =
        |v: &Value| -> Value { json!([v.get("subsets"), v.get("endpoints"), v.get("ports")]) };
    match store.get(key).await.map_err(storage)? {
        Some(kv) => {
            let old: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            if fields(&old) == fields(&obj) {
                return Ok(());
            }
            obj["metadata"] = old["metadata"].clone();
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            match store
                .update(key, codec::to_stored(&mut obj), kv.mod_revision)
                .await
            {
                Ok(_) | Err(StorageError::Conflict { .. }) => Ok(()),
                Err(e) => Err(storage(e)),
            }
        }
        None => {
            obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
            obj["metadata"]["creationTimestamp"] = json!(now);
            match store.create(key, codec::to_stored(&mut obj)).await {
                Ok(_) | Err(StorageError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(storage(e)),
            }
        }
    }
}

/// Runs [`ServiceAllocator::repair`] now and every minute until `shutdown`.
pub async fn run_repair(
    allocator: ServiceAllocator,
    store: Arc<dyn Storage>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = allocator.repair(store.as_ref()).await {
                    tracing::warn!("service allocation repair: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_bounds() {
        let c = service_cidr("127.96.0.0/12").unwrap();
        assert!(c.contains_usable("127.96.0.1".parse().unwrap()));
        assert!(c.contains_usable("127.111.255.254".parse().unwrap()));
        assert!(!c.contains_usable("127.96.0.0".parse().unwrap()));
        assert!(!c.contains_usable("127.111.255.255".parse().unwrap()));
        assert!(!c.contains_usable("127.112.0.1".parse().unwrap()));
        assert_eq!(c.nth(1).to_string(), "127.96.0.1");
        assert_eq!(c.to_string(), "127.96.0.0/12");
        assert!(service_cidr("127.0.0.1").is_err());
        assert!(service_cidr("127.0.0.0/31").is_err());
    }
}
