//! The Node: registration (capacity, labels, addresses, endpoints, node info), conditions, and
//! the Lease heartbeat in `kube-node-lease`.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use crate::KubeletConfig;

/// Namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease is valid without renewal (upstream: 40 s).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Free memory below which `MemoryPressure` is reported (upstream's hard eviction default).
const MEMORY_PRESSURE_BELOW: u64 = 100 << 20;
/// Free share of the data dir's filesystem below which `DiskPressure` is reported
/// (upstream's `nodefs.available<10%`).
const DISK_PRESSURE_BELOW: f64 = 0.10;

/// The free share of the filesystem holding `dir`, if it can be read.
fn disk_free_share(dir: &std::path::Path) -> Option<f64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    (st.f_blocks > 0).then(|| st.f_bavail as f64 / st.f_blocks as f64)
}

/// Errors of node registration and heartbeats.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {node}: {action}: {source}")]
    Api {
        node: String,
        action: &'static str,
        source: kube::Error,
    },
}

fn api_err<'a>(node: &'a str, action: &'static str) -> impl FnOnce(kube::Error) -> NodeError + 'a {
    move |source| NodeError::Api {
        node: node.to_string(),
        action,
        source,
    }
}

/// The machine's resources, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub boot_id: String,
    pub machine_id: String,
    pub kernel: String,
}

impl Machine {
    /// Reads `/proc` and `/etc/machine-id` (missing files give neutral values).
    pub fn detect() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: meminfo("MemTotal").unwrap_or(0),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            machine_id: read("/etc/machine-id"),
            kernel: read("/proc/sys/kernel/osrelease"),
        }
    }
}

/// A `/proc/meminfo` field in bytes.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// The Node object this kubelet registers (spec + metadata; status is patched separately).
pub fn node_object(config: &KubeletConfig) -> Value {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/arch".to_string(), "wasm32-wasi".to_string()),
        ("kubernetes.io/os".to_string(), "wasi".to_string()),
        (
            "kubernetes.io/hostname".to_string(),
            config.node_name.clone(),
        ),
        ("beta.kubernetes.io/arch".into(), "wasm32-wasi".into()),
        ("beta.kubernetes.io/os".into(), "wasi".into()),
    ]);
    labels.extend(config.labels.clone());
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": labels,
            // Where the local-path provisioner puts this node's PersistentVolumes.
            "annotations": {
                crate::volume::pvc::LOCAL_PATH_DIR_ANNOTATION:
                    config.local_path_dir.to_string_lossy(),
            },
        },
        "spec": {},
    });
    if !config.taints.is_empty() {
        node["spec"]["taints"] = json!(config
            .taints
            .iter()
            .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
            .collect::<Vec<_>>());
    }
    node
}

fn condition(kind: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    })
}

/// The Node status: capacity/allocatable, conditions, addresses, endpoints and node info.
pub fn node_status(config: &KubeletConfig, machine: &Machine, kubelet_port: u16) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cpu = config
        .cpu
        .clone()
        .unwrap_or_else(|| machine.cpus.to_string());
    let memory = config
        .memory
        .clone()
        .unwrap_or_else(|| format!("{}Ki", machine.memory_bytes / 1024));
    let resources = json!({
        "cpu": cpu,
        "memory": memory,
        "pods": config.max_pods.to_string(),
    });
    let available = meminfo("MemAvailable");
    let memory_pressure = available.is_some_and(|a| a < MEMORY_PRESSURE_BELOW);
    let disk_pressure = disk_free_share(&config.data_dir).is_some_and(|f| f < DISK_PRESSURE_BELOW);
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition(
                "MemoryPressure",
                memory_pressure,
                if memory_pressure { "KubeletHasInsufficientMemory" } else { "KubeletHasSufficientMemory" },
                if memory_pressure { "kubelet has insufficient memory available" } else { "kubelet has sufficient memory available" },
                &now,
            ),
            condition(
                "DiskPressure",
                disk_pressure,
                if disk_pressure { "KubeletHasDiskPressure" } else { "KubeletHasNoDiskPressure" },
                if disk_pressure { "kubelet has disk pressure" } else { "kubelet has no disk pressure" },
                &now,
            ),
            // Wasm containers are not processes: they cannot exhaust PIDs.
            condition("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available", &now),
            condition("Ready", true, "KubeletReady", "kubelet is posting ready status", &now),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.address.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": machine.machine_id,
            "systemUUID": machine.machine_id,
            "bootID": machine.boot_id,
            "kernelVersion": machine.kernel,
            "osImage": "wasmkube (WebAssembly, WASI p1/p2)",
            "containerRuntimeVersion": format!("wasmtime://{}", crate::WASMTIME_VERSION),
            "kubeletVersion": crate::KUBELET_VERSION,
            "kubeProxyVersion": crate::KUBELET_VERSION,
            "operatingSystem": "wasi",
            "architecture": "wasm32",
        },
    })
}

/// Creates the Node (or adopts an existing one: labels and taints are re-applied) and writes
/// its status.
pub async fn register(
    client: &Client,
    config: &KubeletConfig,
    machine: &Machine,
    kubelet_port: u16,
) -> Result<(), NodeError> {
    let name = config.node_name.as_str();
    let nodes: Api<Node> = Api::all(client.clone());
    let object = node_object(config);
    let node: Node = serde_json::from_value(object.clone()).map_err(|e| NodeError::Api {
        node: name.to_string(),
        action: "building the Node",
        source: kube::Error::SerdeError(e),
    })?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": object["metadata"]["labels"],
                                            "annotations": object["metadata"]["annotations"]},
                               "spec": {"taints": object["spec"].get("taints")}});
            nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(name, "updating the existing Node"))?;
        }
        Err(e) => return Err(api_err(name, "creating the Node")(e)),
    }
    update_status(client, config, machine, kubelet_port).await
}

/// Patches `nodes/status` with fresh conditions and heartbeat times.
pub async fn update_status(
    client: &Client,
    config: &KubeletConfig,
    machine: &Machine,
    kubelet_port: u16,
) -> Result<(), NodeError> {
    let name = config.node_name.as_str();
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": node_status(config, machine, kubelet_port)});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(name, "patching nodes/status"))?;
    Ok(())
}

/// Creates or renews this node's Lease (`renewTime` = now).
pub async fn renew_lease(client: &Client, config: &KubeletConfig) -> Result<(), NodeError> {
    let name = config.node_name.as_str();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let patch = json!({"spec": {"renewTime": now}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": now,
                },
            }))
            .map_err(|e| NodeError::Api {
                node: name.to_string(),
                action: "building the Lease",
                source: kube::Error::SerdeError(e),
            })?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(api_err(name, "creating the Lease"))?;
            Ok(())
        }
        Err(e) => Err(api_err(name, "renewing the Lease")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_carries_wasm_labels_capacity_and_endpoints() {
        let config = KubeletConfig::new("n1", "/tmp/x".into());
        let node = node_object(&config);
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/arch"],
            "wasm32-wasi"
        );
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "wasi");
        assert!(
            node["spec"].get("taints").is_none(),
            "no taints unless configured"
        );
        let machine = Machine {
            cpus: 2,
            memory_bytes: 4 << 30,
            boot_id: "b".into(),
            machine_id: "m".into(),
            kernel: "6".into(),
        };
        let status = node_status(&config, &machine, 10250);
        assert_eq!(status["capacity"]["cpu"], "2");
        assert_eq!(status["capacity"]["memory"], "4194304Ki");
        assert_eq!(status["capacity"]["pods"], "1000");
        assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(status["addresses"][0]["address"], "127.0.0.1");
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
    }
}
