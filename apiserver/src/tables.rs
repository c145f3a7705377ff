//! Server-side printing: the columns and cells of `meta.k8s.io/v1` `Table` responses, ported
//! from upstream `pkg/printers/internalversion/printers.go`.
//!
//! Upstream's apiserver always prints with `Wide: true`: every row carries the cells of every
//! column, and kubectl hides the `priority: 1` columns unless `-o wide` is asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling_v2, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use crate::resources::{ResourceDef, RESOURCES};

const LOAD_BALANCER_WIDTH: usize = 16;
const LABEL_NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_LABEL_ROLE: &str = "kubernetes.io/role";

/// Which upstream printer serves a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Printer {
    Pod,
    Namespace,
    Node,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
    PersistentVolumeClaim,
    PersistentVolume,
    Deployment,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    HorizontalPodAutoscaler,
    Lease,
    EndpointSlice,
    StorageClass,
    Default,
}

fn printer(def: &ResourceDef) -> Printer {
    match (def.group, def.kind) {
        ("", "Pod") => Printer::Pod,
        ("", "Namespace") => Printer::Namespace,
        ("", "Node") => Printer::Node,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "Event") | ("events.k8s.io", "Event") => Printer::Event,
        ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
        ("", "PersistentVolume") => Printer::PersistentVolume,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("autoscaling", "HorizontalPodAutoscaler") => Printer::HorizontalPodAutoscaler,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("storage.k8s.io", "StorageClass") => Printer::StorageClass,
        _ => Printer::Default,
    }
}

// ---------------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------------

/// columnDefinitions for a resource: `[{name, type, format, description, priority}]`;
/// priority 1 = only with `-o wide`.
pub fn columns(def: &ResourceDef) -> Vec<Value> {
    static CACHE: OnceLock<HashMap<Printer, Vec<Value>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mut m = HashMap::new();
        for d in RESOURCES {
            let p = printer(d);
            m.entry(p).or_insert_with(|| build_columns(p));
        }
        m.entry(Printer::Default)
            .or_insert_with(|| build_columns(Printer::Default));
        m
    });
    let p = printer(def);
    cache.get(&p).cloned().unwrap_or_else(|| build_columns(p))
}

/// The description of `field` in the OpenAPI schema of `T` (upstream's `SwaggerDoc()[field]`).
fn doc<T: schemars::JsonSchema>(field: &str) -> String {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    schema
        .as_value()
        .pointer(&format!("/properties/{field}/description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn col(name: &str, ty: &str, format: &str, description: impl Into<String>, priority: i64) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": format,
        "description": description.into(),
        "priority": priority,
    })
}

fn name_col() -> Value {
    col("Name", "string", "name", doc::<ObjectMeta>("name"), 0)
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        doc::<ObjectMeta>("creationTimestamp"),
        0,
    )
}

fn s0(name: &str, description: impl Into<String>) -> Value {
    col(name, "string", "", description, 0)
}

fn s1(name: &str, description: impl Into<String>) -> Value {
    col(name, "string", "", description, 1)
}

fn i0(name: &str, description: impl Into<String>) -> Value {
    col(name, "integer", "", description, 0)
}

const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

fn build_columns(p: Printer) -> Vec<Value> {
    match p {
        Printer::Pod => vec![
            name_col(),
            s0("Ready", "The aggregate readiness state of this pod for accepting traffic."),
            s0("Status", "The aggregate status of the containers in this pod."),
            s0("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age_col(),
            s1("IP", doc::<core::PodStatus>("podIP")),
            s1("Node", doc::<core::PodSpec>("nodeName")),
            s1("Nominated Node", doc::<core::PodStatus>("nominatedNodeName")),
            s1("Readiness Gates", doc::<core::PodSpec>("readinessGates")),
        ],
        Printer::Namespace => vec![
            name_col(),
            s0("Status", "The status of the namespace"),
            age_col(),
        ],
        Printer::Node => vec![
            name_col(),
            s0("Status", "The status of the node"),
            s0("Roles", "The roles of the node"),
            age_col(),
            s0("Version", doc::<core::NodeSystemInfo>("kubeletVersion")),
            s1("Internal-IP", doc::<core::NodeStatus>("addresses")),
            s1("External-IP", doc::<core::NodeStatus>("addresses")),
            s1("OS-Image", doc::<core::NodeSystemInfo>("osImage")),
            s1("Kernel-Version", doc::<core::NodeSystemInfo>("kernelVersion")),
            s1("Container-Runtime", doc::<core::NodeSystemInfo>("containerRuntimeVersion")),
        ],
        Printer::Service => vec![
            name_col(),
            s0("Type", doc::<core::ServiceSpec>("type")),
            s0("Cluster-IP", doc::<core::ServiceSpec>("clusterIP")),
            s0("External-IP", doc::<core::ServiceSpec>("externalIPs")),
            s0("Port(s)", doc::<core::ServiceSpec>("ports")),
            age_col(),
            s1("Selector", doc::<core::ServiceSpec>("selector")),
        ],
        Printer::Endpoints => vec![
            name_col(),
            s0("Endpoints", doc::<core::Endpoints>("subsets")),
            age_col(),
        ],
        Printer::ConfigMap => vec![
            name_col(),
            s0("Data", doc::<core::ConfigMap>("data")),
            age_col(),
        ],
        Printer::Secret => vec![
            name_col(),
            s0("Type", doc::<core::Secret>("type")),
            s0("Data", doc::<core::Secret>("data")),
            age_col(),
        ],
        Printer::ServiceAccount => vec![
            name_col(),
            s0("Secrets", doc::<core::ServiceAccount>("secrets")),
            age_col(),
        ],
        Printer::Event => vec![
            s0("Last Seen", doc::<core::Event>("lastTimestamp")),
            s0("Type", doc::<core::Event>("type")),
            s0("Reason", doc::<core::Event>("reason")),
            s0("Object", doc::<core::Event>("involvedObject")),
            s1("Subobject", doc::<core::ObjectReference>("fieldPath")),
            s1("Source", doc::<core::Event>("source")),
            s0("Message", doc::<core::Event>("message")),
            s1("First Seen", doc::<core::Event>("firstTimestamp")),
            s1("Count", doc::<core::Event>("count")),
            col("Name", "string", "name", doc::<ObjectMeta>("name"), 1),
        ],
        Printer::PersistentVolumeClaim => vec![
            name_col(),
            s0("Status", doc::<core::PersistentVolumeClaimStatus>("phase")),
            s0("Volume", doc::<core::PersistentVolumeClaimSpec>("volumeName")),
            s0("Capacity", doc::<core::PersistentVolumeClaimStatus>("capacity")),
            s0("Access Modes", doc::<core::PersistentVolumeClaimStatus>("accessModes")),
            s0("StorageClass", "StorageClass of the pvc"),
            s0("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
            age_col(),
            s1("VolumeMode", doc::<core::PersistentVolumeClaimSpec>("volumeMode")),
        ],
        Printer::PersistentVolume => vec![
            name_col(),
            s0("Capacity", doc::<core::PersistentVolumeSpec>("capacity")),
            s0("Access Modes", doc::<core::PersistentVolumeSpec>("accessModes")),
            s0("Reclaim Policy", doc::<core::PersistentVolumeSpec>("persistentVolumeReclaimPolicy")),
            s0("Status", doc::<core::PersistentVolumeStatus>("phase")),
            s0("Claim", doc::<core::PersistentVolumeSpec>("claimRef")),
            s0("StorageClass", "StorageClass of the pv"),
            s0("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
            s0("Reason", doc::<core::PersistentVolumeStatus>("reason")),
            age_col(),
            s1("VolumeMode", doc::<core::PersistentVolumeSpec>("volumeMode")),
        ],
        Printer::Deployment => vec![
            name_col(),
            s0("Ready", "Number of the pod with ready state"),
            s0("Up-to-date", doc::<apps::DeploymentStatus>("updatedReplicas")),
            s0("Available", doc::<apps::DeploymentStatus>("availableReplicas")),
            age_col(),
            s1("Containers", CONTAINERS_DOC),
            s1("Images", IMAGES_DOC),
            s1("Selector", doc::<apps::DeploymentSpec>("selector")),
        ],
        Printer::ReplicaSet => vec![
            name_col(),
            i0("Desired", doc::<apps::ReplicaSetSpec>("replicas")),
            i0("Current", doc::<apps::ReplicaSetStatus>("replicas")),
            i0("Ready", doc::<apps::ReplicaSetStatus>("readyReplicas")),
            age_col(),
            s1("Containers", CONTAINERS_DOC),
            s1("Images", IMAGES_DOC),
            s1("Selector", doc::<apps::ReplicaSetSpec>("selector")),
        ],
        Printer::DaemonSet => vec![
            name_col(),
            i0("Desired", doc::<apps::DaemonSetStatus>("desiredNumberScheduled")),
            i0("Current", doc::<apps::DaemonSetStatus>("currentNumberScheduled")),
            i0("Ready", doc::<apps::DaemonSetStatus>("numberReady")),
            i0("Up-to-date", doc::<apps::DaemonSetStatus>("updatedNumberScheduled")),
            i0("Available", doc::<apps::DaemonSetStatus>("numberAvailable")),
            s0("Node Selector", doc::<core::PodSpec>("nodeSelector")),
            age_col(),
            s1("Containers", CONTAINERS_DOC),
            s1("Images", IMAGES_DOC),
            s1("Selector", doc::<apps::DaemonSetSpec>("selector")),
        ],
        Printer::Job => vec![
            name_col(),
            s0("Status", "Status of the job."),
            s0("Completions", doc::<batch::JobStatus>("succeeded")),
            s0("Duration", "Time required to complete the job."),
            age_col(),
            s1("Containers", CONTAINERS_DOC),
            s1("Images", IMAGES_DOC),
            s1("Selector", doc::<batch::JobSpec>("selector")),
        ],
        Printer::CronJob => vec![
            name_col(),
            s0("Schedule", doc::<batch::CronJobSpec>("schedule")),
            s0("Timezone", doc::<batch::CronJobSpec>("timeZone")),
            col("Suspend", "boolean", "", doc::<batch::CronJobSpec>("suspend"), 0),
            i0("Active", doc::<batch::CronJobStatus>("active")),
            s0("Last Schedule", doc::<batch::CronJobStatus>("lastScheduleTime")),
            age_col(),
            s1("Containers", CONTAINERS_DOC),
            s1("Images", IMAGES_DOC),
            s1("Selector", doc::<batch::JobSpec>("selector")),
        ],
        Printer::HorizontalPodAutoscaler => vec![
            name_col(),
            s0("Reference", doc::<autoscaling_v2::HorizontalPodAutoscalerSpec>("scaleTargetRef")),
            s0("Targets", doc::<autoscaling_v2::HorizontalPodAutoscalerSpec>("metrics")),
            s0("MinPods", doc::<autoscaling_v2::HorizontalPodAutoscalerSpec>("minReplicas")),
            s0("MaxPods", doc::<autoscaling_v2::HorizontalPodAutoscalerSpec>("maxReplicas")),
            s0("Replicas", doc::<autoscaling_v2::HorizontalPodAutoscalerStatus>("currentReplicas")),
            age_col(),
        ],
        Printer::Lease => vec![
            name_col(),
            s0("Holder", doc::<coordination::LeaseSpec>("holderIdentity")),
            age_col(),
        ],
        Printer::EndpointSlice => vec![
            name_col(),
            s0("AddressType", doc::<discovery::EndpointSlice>("addressType")),
            s0("Ports", doc::<discovery::EndpointSlice>("ports")),
            s0("Endpoints", doc::<discovery::EndpointSlice>("endpoints")),
            age_col(),
        ],
        Printer::StorageClass => vec![
            name_col(),
            s0("Provisioner", doc::<storage::StorageClass>("provisioner")),
            s0("ReclaimPolicy", doc::<storage::StorageClass>("reclaimPolicy")),
            s0("VolumeBindingMode", doc::<storage::StorageClass>("volumeBindingMode")),
            s0("AllowVolumeExpansion", doc::<storage::StorageClass>("allowVolumeExpansion")),
            age_col(),
        ],
        Printer::Default => vec![name_col(), age_col()],
    }
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

/// The cells of one row for an object (same length as [`columns`]), `now` for ages.
pub fn cells(def: &ResourceDef, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(def) {
        Printer::Pod => pod_cells(obj, now),
        Printer::Namespace => vec![
            name(obj).into(),
            st(obj, "/status/phase").into(),
            age(obj, now).into(),
        ],
        Printer::Node => node_cells(obj, now),
        Printer::Service => service_cells(obj, now),
        Printer::Endpoints => vec![
            name(obj).into(),
            format_endpoints(obj).into(),
            age(obj, now).into(),
        ],
        Printer::ConfigMap => {
            let n = obj_len(obj, "/data") + obj_len(obj, "/binaryData");
            vec![name(obj).into(), json!(n), age(obj, now).into()]
        }
        Printer::Secret => {
            let ty = match st(obj, "/type") {
                "" => "Opaque",
                t => t,
            };
            vec![
                name(obj).into(),
                ty.into(),
                json!(obj_len(obj, "/data")),
                age(obj, now).into(),
            ]
        }
        Printer::ServiceAccount => vec![
            name(obj).into(),
            json!(arr(obj, "/secrets").len()),
            age(obj, now).into(),
        ],
        Printer::Event => event_cells(def, obj, now),
        Printer::PersistentVolumeClaim => pvc_cells(obj, now),
        Printer::PersistentVolume => pv_cells(obj, now),
        Printer::Deployment => deployment_cells(obj, now),
        Printer::ReplicaSet => {
            let (names, images) = layout_containers(obj.pointer("/spec/template/spec/containers"));
            vec![
                name(obj).into(),
                json!(int_or(obj, "/spec/replicas", 1)),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                age(obj, now).into(),
                names.into(),
                images.into(),
                format_label_selector(obj.pointer("/spec/selector")).into(),
            ]
        }
        Printer::DaemonSet => {
            let (names, images) = layout_containers(obj.pointer("/spec/template/spec/containers"));
            vec![
                name(obj).into(),
                json!(int(obj, "/status/desiredNumberScheduled")),
                json!(int(obj, "/status/currentNumberScheduled")),
                json!(int(obj, "/status/numberReady")),
                json!(int(obj, "/status/updatedNumberScheduled")),
                json!(int(obj, "/status/numberAvailable")),
                format_labels(obj.pointer("/spec/template/spec/nodeSelector")).into(),
                age(obj, now).into(),
                names.into(),
                images.into(),
                format_label_selector(obj.pointer("/spec/selector")).into(),
            ]
        }
        Printer::Job => job_cells(obj, now),
        Printer::CronJob => cronjob_cells(obj, now),
        Printer::HorizontalPodAutoscaler => hpa_cells(def, obj, now),
        Printer::Lease => vec![
            name(obj).into(),
            st(obj, "/spec/holderIdentity").into(),
            age(obj, now).into(),
        ],
        Printer::EndpointSlice => vec![
            name(obj).into(),
            st(obj, "/addressType").into(),
            format_discovery_ports(arr(obj, "/ports")).into(),
            format_discovery_endpoints(arr(obj, "/endpoints")).into(),
            age(obj, now).into(),
        ],
        Printer::StorageClass => storage_class_cells(obj, now),
        Printer::Default => vec![name(obj).into(), age(obj, now).into()],
    }
}

// ---------------------------------------------------------------------------------------------
// Ages and durations
// ---------------------------------------------------------------------------------------------

/// Upstream's `duration.HumanDuration` of `now - created` (`translateTimestampSince`):
/// "5s", "2m3s", "10m", "3h5m", "2d3h"; "<unknown>" when there is no (valid) timestamp.
pub fn human_age(created: Option<&str>, now: Timestamp) -> String {
    match created.and_then(parse_time) {
        Some(t) => human_duration_secs(now.duration_since(t).as_secs()),
        None => "<unknown>".to_string(),
    }
}

fn parse_time(s: &str) -> Option<Timestamp> {
    if s.is_empty() {
        return None;
    }
    s.parse::<Timestamp>().ok()
}

/// `duration.HumanDuration` for a duration given in whole seconds (truncated toward zero).
fn human_duration_secs(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value, now: Timestamp) -> String {
    human_age(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now,
    )
}

fn since(ts: &str, now: Timestamp) -> String {
    human_age(Some(ts), now)
}

// ---------------------------------------------------------------------------------------------
// Small accessors
// ---------------------------------------------------------------------------------------------

fn st<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn name(obj: &Value) -> &str {
    st(obj, "/metadata/name")
}

fn int(v: &Value, pointer: &str) -> i64 {
    int_or(v, pointer, 0)
}

fn int_or(v: &Value, pointer: &str, default: i64) -> i64 {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn obj_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn is_set(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).is_some_and(|x| !x.is_null())
}

/// A Quantity as text (kept as written: the store holds canonical forms already).
fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `labels.FormatLabels`: sorted `k=v` pairs, or `<none>`.
fn format_labels(map: Option<&Value>) -> String {
    let Some(m) = map.and_then(Value::as_object) else {
        return "<none>".to_string();
    };
    let sorted: BTreeMap<&str, &str> = m
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    let s = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: "" for a nil or empty selector.
fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let mut values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        let text = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".to_string(),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: like [`label_selector_string`] but `<none>` when empty.
fn format_label_selector(sel: Option<&Value>) -> String {
    let s = label_selector_string(sel);
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

/// `layoutContainerCells`: comma-joined container names and images.
fn layout_containers(containers: Option<&Value>) -> (String, String) {
    let list = containers
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names = list
        .iter()
        .map(|c| st(c, "/name"))
        .collect::<Vec<_>>()
        .join(",");
    let images = list
        .iter()
        .map(|c| st(c, "/image"))
        .collect::<Vec<_>>()
        .join(",");
    (names, images)
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

// ---------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn has_condition(conditions: &[Value], ty: &str) -> bool {
    conditions
        .iter()
        .any(|c| st(c, "/type") == ty && st(c, "/status") == "True")
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_specs = arr(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| st(c, "/name") == name && st(c, "/restartPolicy") == "Always")
    };

    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let total = arr(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| st(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;

    let phase = st(pod, "/status/phase");
    let mut reason = phase.to_string();
    if !st(pod, "/status/reason").is_empty() {
        reason = st(pod, "/status/reason").to_string();
    }
    let conditions = arr(pod, "/status/conditions");
    for c in conditions {
        if st(c, "/type") == "PodScheduled" && st(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let mut initializing = false;
    for (i, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = int(c, "/restartCount");
        restarts += count;
        let finished = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(parse_time);
        if is_set(c, "/lastState/terminated") {
            last_restart = later(last_restart, finished);
        }
        let is_restartable = restartable(st(c, "/name"));
        if is_restartable {
            restartable_restarts += count;
            if is_set(c, "/lastState/terminated") {
                last_restartable_restart = later(last_restartable_restart, finished);
            }
        }
        let terminated = is_set(c, "/state/terminated");
        let waiting_reason = st(c, "/state/waiting/reason");
        if terminated && int(c, "/state/terminated/exitCode") == 0 {
            continue;
        } else if is_restartable && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        } else if terminated {
            let r = st(c, "/state/terminated/reason");
            reason = if r.is_empty() {
                let signal = int(c, "/state/terminated/signal");
                if signal != 0 {
                    format!("Init:Signal:{signal}")
                } else {
                    format!("Init:ExitCode:{}", int(c, "/state/terminated/exitCode"))
                }
            } else {
                format!("Init:{r}")
            };
            initializing = true;
        } else if is_set(c, "/state/waiting")
            && !waiting_reason.is_empty()
            && waiting_reason != "PodInitializing"
        {
            reason = format!("Init:{waiting_reason}");
            initializing = true;
        } else {
            reason = format!("Init:{}/{}", i, init_specs.len());
            initializing = true;
        }
        break;
    }

    if !initializing || has_condition(conditions, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            if is_set(c, "/lastState/terminated") {
                let finished = c
                    .pointer("/lastState/terminated/finishedAt")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                last_restart = later(last_restart, finished);
            }
            let waiting_reason = st(c, "/state/waiting/reason");
            let terminated_reason = st(c, "/state/terminated/reason");
            if is_set(c, "/state/waiting") && !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if is_set(c, "/state/terminated") && !terminated_reason.is_empty() {
                reason = terminated_reason.to_string();
            } else if is_set(c, "/state/terminated") {
                let signal = int(c, "/state/terminated/signal");
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{}", int(c, "/state/terminated/exitCode"))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && is_set(c, "/state/running")
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = is_set(pod, "/metadata/deletionTimestamp");
    if deleting && st(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration_secs(now.duration_since(t).as_secs())
        ),
        _ => restarts.to_string(),
    };
    let mut pod_ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| st(p, "/ip"))
        .unwrap_or("");
    if pod_ip.is_empty() {
        pod_ip = st(pod, "/status/podIP");
    }
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let gates = arr(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = st(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| st(c, "/type") == ty)
                    .is_some_and(|c| st(c, "/status") == "True")
            })
            .count();
        format!("{}/{}", true_count, gates.len())
    };

    vec![
        name(pod).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_str.into(),
        age(pod, now).into(),
        or_none(pod_ip).into(),
        or_none(st(pod, "/spec/nodeName")).into(),
        or_none(st(pod, "/status/nominatedNodeName")).into(),
        readiness_gates.into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    // Last condition of a type wins, as upstream's map does.
    if let Some(c) = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| st(c, "/type") == "Ready")
    {
        if st(c, "/status") == "True" {
            status.push("Ready".to_string());
        } else {
            status.push("NotReady".to_string());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix(LABEL_NODE_ROLE_PREFIX) {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == NODE_LABEL_ROLE {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |ty: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| st(a, "/type") == ty)
            .map(|a| st(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let unknown = |s: &str| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        name(node).into(),
        status.join(",").into(),
        roles.into(),
        age(node, now).into(),
        st(node, "/status/nodeInfo/kubeletVersion").into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        unknown(st(node, "/status/nodeInfo/osImage")).into(),
        unknown(st(node, "/status/nodeInfo/kernelVersion")).into(),
        unknown(st(node, "/status/nodeInfo/containerRuntimeVersion")).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Services and endpoints
// ---------------------------------------------------------------------------------------------

fn load_balancer_status(svc: &Value, wide: bool) -> String {
    let mut result = BTreeSet::new();
    for ing in arr(svc, "/status/loadBalancer/ingress") {
        let ip = st(ing, "/ip");
        let host = st(ing, "/hostname");
        if !ip.is_empty() {
            result.insert(ip.to_string());
        } else if !host.is_empty() {
            result.insert(host.to_string());
        }
    }
    let r = result.into_iter().collect::<Vec<_>>().join(",");
    if !wide && r.len() > LOAD_BALANCER_WIDTH {
        let cut: String = r.chars().take(LOAD_BALANCER_WIDTH - 3).collect();
        return format!("{cut}...");
    }
    r
}

fn service_external_ip(svc: &Value, ty: &str, wide: bool) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match ty {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_status(svc, wide);
            if !external.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external.iter().copied());
                return results.join(",");
            }
            if !lb.is_empty() {
                return lb;
            }
            "<pending>".to_string()
        }
        "ExternalName" => st(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let s = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int(p, "/port");
            let protocol = match st(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            let node_port = int(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    }
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let ty = match st(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let mut cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("");
    if cluster_ip.is_empty() {
        cluster_ip = st(svc, "/spec/clusterIP");
    }
    let cluster_ip = if cluster_ip.is_empty() {
        "<none>"
    } else {
        cluster_ip
    };
    vec![
        name(svc).into(),
        ty.into(),
        cluster_ip.into(),
        service_external_ip(svc, ty, true).into(),
        service_ports(svc).into(),
        age(svc, now).into(),
        format_labels(svc.pointer("/spec/selector")).into(),
    ]
}

fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(st(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join_host_port(st(a, "/ip"), int(port, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    ret
}

fn format_discovery_ports(ports: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for p in ports {
        if list.len() < max {
            let num = if let Some(n) = p.get("port").and_then(Value::as_i64) {
                n.to_string()
            } else if let Some(n) = p.get("name").and_then(Value::as_str) {
                n.to_string()
            } else {
                "*".to_string()
            };
            list.push(num);
        } else if list.len() == max {
            more = true;
        }
        count += 1;
    }
    list_with_more(&list, more, count, max)
}

fn format_discovery_endpoints(endpoints: &[Value]) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for e in endpoints {
        for a in arr(e, "/addresses") {
            if list.len() < max {
                list.push(a.as_str().unwrap_or("").to_string());
            } else if list.len() == max {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, max)
}

// ---------------------------------------------------------------------------------------------
// Events (core/v1 and events.k8s.io/v1)
// ---------------------------------------------------------------------------------------------

fn event_cells(def: &ResourceDef, ev: &Value, now: Timestamp) -> Vec<Value> {
    // events.k8s.io/v1 fields map onto the core/v1 ones as upstream's conversion does.
    let new_api = def.group == "events.k8s.io";
    let (first_ts, last_ts, count_ptr, involved, message, source) = if new_api {
        (
            "/deprecatedFirstTimestamp",
            "/deprecatedLastTimestamp",
            "/deprecatedCount",
            "/regarding",
            "/note",
            "/deprecatedSource",
        )
    } else {
        (
            "/firstTimestamp",
            "/lastTimestamp",
            "/count",
            "/involvedObject",
            "/message",
            "/source",
        )
    };

    let first_timestamp = if st(ev, first_ts).is_empty() {
        human_age(ev.get("eventTime").and_then(Value::as_str), now)
    } else {
        since(st(ev, first_ts), now)
    };
    let mut last_timestamp = if st(ev, last_ts).is_empty() {
        first_timestamp.clone()
    } else {
        since(st(ev, last_ts), now)
    };
    let mut count = int(ev, count_ptr);
    if is_set(ev, "/series") {
        last_timestamp = human_age(
            ev.pointer("/series/lastObservedTime")
                .and_then(Value::as_str),
            now,
        );
        count = int(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }

    let kind = st(ev, &format!("{involved}/kind")).to_lowercase();
    let obj_name = st(ev, &format!("{involved}/name"));
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = first_non_empty(
        st(ev, &format!("{source}/component")),
        st(ev, "/reportingController"),
    );
    let instance = first_non_empty(
        st(ev, &format!("{source}/host")),
        st(ev, "/reportingInstance"),
    );
    let source_text = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };

    vec![
        last_timestamp.into(),
        st(ev, "/type").into(),
        st(ev, "/reason").into(),
        target.into(),
        st(ev, &format!("{involved}/fieldPath")).into(),
        source_text.into(),
        st(ev, message).trim().into(),
        first_timestamp.into(),
        json!(count),
        name(ev).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Volumes
// ---------------------------------------------------------------------------------------------

/// `helper.GetAccessModesAsString`.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|x| x.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

fn storage_class_of(obj: &Value) -> String {
    if let Some(c) = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_STORAGE_CLASS_ANNOTATION))
        .and_then(Value::as_str)
    {
        return c.to_string();
    }
    st(obj, "/spec/storageClassName").to_string()
}

fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = if is_set(pv, "/spec/claimRef") {
        format!(
            "{}/{}",
            st(pv, "/spec/claimRef/namespace"),
            st(pv, "/spec/claimRef/name")
        )
    } else {
        String::new()
    };
    let mut phase = st(pv, "/status/phase").to_string();
    if is_set(pv, "/metadata/deletionTimestamp") {
        phase = "Terminating".to_string();
    }
    let unset = |s: &str| {
        if s.is_empty() {
            "<unset>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        name(pv).into(),
        quantity(pv.pointer("/spec/capacity/storage")).into(),
        access_modes(arr(pv, "/spec/accessModes")).into(),
        st(pv, "/spec/persistentVolumeReclaimPolicy").into(),
        phase.into(),
        claim.into(),
        storage_class_of(pv).into(),
        unset(st(pv, "/spec/volumeAttributesClassName")).into(),
        st(pv, "/status/reason").into(),
        age(pv, now).into(),
        unset(st(pv, "/spec/volumeMode")).into(),
    ]
}

fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let mut phase = st(pvc, "/status/phase").to_string();
    if is_set(pvc, "/metadata/deletionTimestamp") {
        phase = "Terminating".to_string();
    }
    let volume_name = st(pvc, "/spec/volumeName");
    let (capacity, modes) = if volume_name.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(pvc.pointer("/status/capacity/storage")),
            access_modes(arr(pvc, "/status/accessModes")),
        )
    };
    let unset = |s: &str| {
        if s.is_empty() {
            "<unset>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        name(pvc).into(),
        phase.into(),
        volume_name.into(),
        capacity.into(),
        modes.into(),
        storage_class_of(pvc).into(),
        unset(st(pvc, "/spec/volumeAttributesClassName")).into(),
        age(pvc, now).into(),
        unset(st(pvc, "/spec/volumeMode")).into(),
    ]
}

fn storage_class_cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let annotations = sc.pointer("/metadata/annotations");
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(*k)).and_then(Value::as_str) == Some("true"));
    let mut n = name(sc).to_string();
    if is_default {
        n.push_str(" (default)");
    }
    let reclaim = match st(sc, "/reclaimPolicy") {
        "" => "Delete",
        r => r,
    };
    let binding = match st(sc, "/volumeBindingMode") {
        "" => "Immediate",
        b => b,
    };
    let expansion = sc
        .get("allowVolumeExpansion")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        n.into(),
        st(sc, "/provisioner").into(),
        reclaim.into(),
        binding.into(),
        expansion.into(),
        age(sc, now).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let desired = int_or(d, "/spec/replicas", 1);
    let (names, images) = layout_containers(d.pointer("/spec/template/spec/containers"));
    vec![
        name(d).into(),
        format!("{}/{}", int(d, "/status/readyReplicas"), desired).into(),
        json!(int(d, "/status/updatedReplicas")),
        json!(int(d, "/status/availableReplicas")),
        age(d, now).into(),
        names.into(),
        images.into(),
        label_selector_string(d.pointer("/spec/selector")).into(),
    ]
}

fn job_condition(job: &Value, ty: &str) -> bool {
    arr(job, "/status/conditions")
        .iter()
        .find(|c| st(c, "/type") == ty)
        .is_some_and(|c| st(c, "/status") == "True")
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(job, "/status/succeeded");
    let completions = if let Some(c) = job.pointer("/spec/completions").and_then(Value::as_i64) {
        format!("{succeeded}/{c}")
    } else {
        let parallelism = int(job, "/spec/parallelism");
        if parallelism > 1 {
            format!("{succeeded}/1 of {parallelism}")
        } else {
            format!("{succeeded}/1")
        }
    };
    let start = job
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let completion = job
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let duration = match (start, completion) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration_secs(now.duration_since(s).as_secs()),
        (Some(s), Some(c)) => human_duration_secs(c.duration_since(s).as_secs()),
    };
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if is_set(job, "/metadata/deletionTimestamp") {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = layout_containers(job.pointer("/spec/template/spec/containers"));
    vec![
        name(job).into(),
        status.into(),
        completions.into(),
        duration.into(),
        age(job, now).into(),
        names.into(),
        images.into(),
        format_label_selector(job.pointer("/spec/selector")).into(),
    ]
}

fn cronjob_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match cj
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
    {
        Some(t) => since(t, now),
        None => "<none>".to_string(),
    };
    let time_zone = cj
        .pointer("/spec/timeZone")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let suspend = match cj.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let (names, images) =
        layout_containers(cj.pointer("/spec/jobTemplate/spec/template/spec/containers"));
    vec![
        name(cj).into(),
        st(cj, "/spec/schedule").into(),
        time_zone.into(),
        suspend.into(),
        json!(arr(cj, "/status/active").len()),
        last_schedule.into(),
        age(cj, now).into(),
        names.into(),
        images.into(),
        format_label_selector(cj.pointer("/spec/jobTemplate/spec/selector")).into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscalers (autoscaling/v2 and v1)
// ---------------------------------------------------------------------------------------------

fn format_hpa_metrics_v2(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let max = 2;
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let status_part = |field: &str| status.and_then(|s| s.get(field)).filter(|v| !v.is_null());
        let text = match st(spec, "/type") {
            "External" | "Object" => {
                let field = if st(spec, "/type") == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = spec.get(field).and_then(|s| s.get("target"));
                let target_avg = target.and_then(|t| t.get("averageValue"));
                if target_avg.is_some() {
                    let current = status_part(field)
                        .and_then(|s| s.pointer("/current/averageValue"))
                        .map(|q| quantity(Some(q)))
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{current}/{} (avg)", quantity(target_avg))
                } else {
                    let current = status_part(field)
                        .map(|s| quantity(s.pointer("/current/value")))
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!(
                        "{current}/{}",
                        quantity(target.and_then(|t| t.get("value")))
                    )
                }
            }
            "Pods" => {
                let current = status_part("pods")
                    .map(|s| quantity(s.pointer("/current/averageValue")))
                    .unwrap_or_else(|| "<unknown>".to_string());
                format!(
                    "{current}/{}",
                    quantity(spec.pointer("/pods/target/averageValue"))
                )
            }
            "Resource" | "ContainerResource" => {
                let field = if st(spec, "/type") == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let res_name = st(spec, &format!("/{field}/name"));
                let target = spec.get(field).and_then(|s| s.get("target"));
                let target_avg = target.and_then(|t| t.get("averageValue"));
                if target_avg.is_some() {
                    let current = status_part(field)
                        .map(|s| quantity(s.pointer("/current/averageValue")))
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{res_name}: {current}/{}", quantity(target_avg))
                } else {
                    let current = status_part(field)
                        .and_then(|s| s.pointer("/current/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<unknown>".to_string());
                    let target = target
                        .and_then(|t| t.get("averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".to_string());
                    format!("{res_name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(text);
    }
    let count = list.len();
    if count > max {
        list.truncate(max);
        return format!("{} + {} more...", list.join(", "), count - max);
    }
    list.join(", ")
}

fn hpa_cells(def: &ResourceDef, hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        st(hpa, "/spec/scaleTargetRef/kind"),
        st(hpa, "/spec/scaleTargetRef/name")
    );
    let metrics = if def.version == "v1" {
        match hpa
            .pointer("/spec/targetCPUUtilizationPercentage")
            .and_then(Value::as_i64)
        {
            Some(target) => {
                let current = hpa
                    .pointer("/status/currentCPUUtilizationPercentage")
                    .and_then(Value::as_i64)
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(|| "<unknown>".to_string());
                format!("cpu: {current}/{target}%")
            }
            None => "<none>".to_string(),
        }
    } else {
        format_hpa_metrics_v2(
            arr(hpa, "/spec/metrics"),
            arr(hpa, "/status/currentMetrics"),
        )
    };
    let min_pods = hpa
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map(|m| m.to_string())
        .unwrap_or_else(|| "<unset>".to_string());
    vec![
        name(hpa).into(),
        reference.into(),
        metrics.into(),
        min_pods.into(),
        json!(int(hpa, "/spec/maxReplicas")),
        json!(int(hpa, "/status/currentReplicas")),
        age(hpa, now).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn now() -> Timestamp {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    fn names(cols: &[Value]) -> Vec<&str> {
        cols.iter().map(|c| c["name"].as_str().unwrap()).collect()
    }

    fn check_shape(def: &ResourceDef, obj: &Value) -> Vec<Value> {
        let cols = columns(def);
        let cells = cells(def, obj, now());
        assert_eq!(cols.len(), cells.len(), "{}", def.plural);
        cells
    }

    #[test]
    fn human_duration_matches_upstream() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (123, "2m3s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (51 * 3600, "2d3h"),
            (48 * 3600, "2d"),
            (10 * 24 * 3600, "10d"),
            (3 * 365 * 24 * 3600, "3y"),
            ((2 * 365 + 10) * 24 * 3600, "2y10d"),
            (9 * 365 * 24 * 3600, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration_secs(secs), want, "{secs}");
        }
        assert_eq!(human_age(None, now()), "<unknown>");
        assert_eq!(human_age(Some(""), now()), "<unknown>");
        assert_eq!(human_age(Some("2026-11-26T11:57:57Z"), now()), "2m3s");
    }

    #[test]
    fn every_resource_has_name_first_or_event_shape() {
        for d in RESOURCES {
            let cols = columns(d);
            let first = &cols[0];
            if d.kind == "Event" {
                assert_eq!(first["name"], "Last Seen");
                assert_eq!(cols.last().unwrap()["format"], "name");
            } else {
                assert_eq!(first["name"], "Name", "{}", d.plural);
                assert_eq!(first["format"], "name");
            }
            for c in &cols {
                for k in ["name", "type", "format", "description", "priority"] {
                    assert!(c.get(k).is_some(), "{} {k}", d.plural);
                }
            }
            let cells = cells(d, &json!({"metadata": {"name": "x"}}), now());
            assert_eq!(cells.len(), cols.len(), "{}", d.plural);
        }
    }

    #[test]
    fn pod_columns_and_running_pod() {
        let d = find("", "v1", "pods").unwrap();
        let cols = columns(d);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let prio: Vec<i64> = cols
            .iter()
            .map(|c| c["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prio, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert!(cols[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("Name must be unique"));

        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-11-26T11:59:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "nginx", "image": "nginx:1.27"}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-11-26T11:59:01Z"}}}]
            }
        });
        let c = check_shape(d, &pod);
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("60s"),
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_restarts_and_crashloop() {
        let d = find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "crash", "creationTimestamp": "2026-11-26T10:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-26T11:50:00Z"}}},
                    {"name": "b", "ready": false, "restartCount": 2,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-26T11:55:00Z"}}}
                ]
            }
        });
        let c = check_shape(d, &pod);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3 (5m ago)");
        assert_eq!(c[4], "120m");
    }

    #[test]
    fn pod_init_states() {
        let d = find("", "v1", "pods").unwrap();
        let mut pod = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending",
                "initContainerStatuses": [{"name": "init", "restartCount": 0, "state": {"running": {}}}],
                "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        });
        assert_eq!(cells(d, &pod, now())[2], "Init:0/1");
        assert_eq!(cells(d, &pod, now())[4], "<unknown>");
        pod["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        pod["status"]["initContainerStatuses"][0]["restartCount"] = json!(4);
        let c = cells(d, &pod, now());
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        assert_eq!(c[3], "4");
        pod["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(cells(d, &pod, now())[2], "Init:ExitCode:2");
        pod["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(cells(d, &pod, now())[2], "Init:Error");

        // A restartable (sidecar) init container counts towards READY.
        let sidecar = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "side", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
        });
        let c = cells(d, &sidecar, now());
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1");
    }

    #[test]
    fn pod_completed_terminating_unknown() {
        let d = find("", "v1", "pods").unwrap();
        let mut pod = json!({
            "metadata": {"name": "job-x"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Succeeded",
                "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        assert_eq!(cells(d, &pod, now())[2], "Completed");
        assert_eq!(cells(d, &pod, now())[1], "0/1");
        pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 137}});
        pod["status"]["phase"] = json!("Failed");
        assert_eq!(cells(d, &pod, now())[2], "ExitCode:137");
        pod["status"]["containerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 0, "signal": 9}});
        assert_eq!(cells(d, &pod, now())[2], "Signal:9");

        let mut running = json!({
            "metadata": {"name": "p", "deletionTimestamp": "2026-11-26T11:59:59Z"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running",
                "containerStatuses": [{"name": "c", "ready": true, "state": {"running": {}}}]}
        });
        assert_eq!(cells(d, &running, now())[2], "Terminating");
        running["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(d, &running, now())[2], "Unknown");
        // A finished pod being deleted keeps its phase.
        pod["metadata"]["deletionTimestamp"] = json!("2026-11-26T11:59:59Z");
        assert_eq!(cells(d, &pod, now())[2], "Signal:9");
    }

    #[test]
    fn pod_wide_cells_and_readiness_gates() {
        let d = find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}], "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
            "status": {"phase": "Pending", "nominatedNodeName": "n2", "podIPs": [{"ip": "fd00::1"}, {"ip": "10.1.1.1"}],
                "conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]}
        });
        let c = cells(d, &pod, now());
        assert_eq!(c[2], "Pending");
        assert_eq!(c[5], "fd00::1");
        assert_eq!(c[6], "<none>");
        assert_eq!(c[7], "n2");
        assert_eq!(c[8], "1/2");
    }

    #[test]
    fn pod_scheduling_gated() {
        let d = find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
        });
        assert_eq!(cells(d, &pod, now())[2], "SchedulingGated");
    }

    #[test]
    fn namespaces_nodes() {
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(names(&columns(ns)), ["Name", "Status", "Age"]);
        let c = check_shape(
            ns,
            &json!({"metadata": {"name": "default", "creationTimestamp": "2026-11-25T12:00:00Z"}, "status": {"phase": "Active"}}),
        );
        assert_eq!(c, vec![json!("default"), json!("Active"), json!("24h")]);

        let node = find("", "v1", "nodes").unwrap();
        assert_eq!(
            names(&columns(node)),
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        let n = json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2026-11-20T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-1"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "wasmkube", "kernelVersion": "6.1", "containerRuntimeVersion": "wasmtime://27.0"}
            }
        });
        let c = check_shape(node, &n);
        assert_eq!(
            c,
            vec![
                json!("node-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge,worker"),
                json!("6d"),
                json!("v1.32.4"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("wasmkube"),
                json!("6.1"),
                json!("wasmtime://27.0")
            ]
        );
        let not_ready = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(cells(node, &not_ready, now())[1], "NotReady");
        assert_eq!(cells(node, &not_ready, now())[7], "<unknown>");
        let none = json!({"metadata": {"name": "n"}});
        assert_eq!(cells(node, &none, now())[1], "Unknown");
        assert_eq!(cells(node, &none, now())[2], "<none>");
    }

    #[test]
    fn services() {
        let d = find("", "v1", "services").unwrap();
        assert_eq!(
            names(&columns(d)),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        let svc = json!({
            "metadata": {"name": "kubernetes", "creationTimestamp": "2026-11-26T11:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        });
        assert_eq!(
            check_shape(d, &svc),
            vec![
                json!("kubernetes"),
                json!("ClusterIP"),
                json!("10.96.0.1"),
                json!("<none>"),
                json!("443/TCP"),
                json!("60m"),
                json!("<none>")
            ]
        );
        let np = json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.3.4"], "selector": {"tier": "fe", "app": "web"},
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}
        });
        let c = cells(d, &np, now());
        assert_eq!(c[4], "80:30080/TCP,53/UDP");
        assert_eq!(c[6], "app=web,tier=fe");
        let lb = json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.3.5"], "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}
        });
        assert_eq!(cells(d, &lb, now())[3], "<pending>");
        let lb2 = json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}
        });
        assert_eq!(cells(d, &lb2, now())[3], "5.6.7.8,lb.example.com,1.2.3.4");
        assert_eq!(cells(d, &lb2, now())[2], "<none>");
        let ext = json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
        assert_eq!(cells(d, &ext, now())[3], "example.com");
        assert_eq!(cells(d, &ext, now())[4], "<none>");
    }

    #[test]
    fn endpoints_and_slices() {
        let d = find("", "v1", "endpoints").unwrap();
        assert_eq!(names(&columns(d)), ["Name", "Endpoints", "Age"]);
        let ep = json!({
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
                         "ports": [{"port": 80}, {"port": 443}]}]
        });
        assert_eq!(
            cells(d, &ep, now())[1],
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
        );
        assert_eq!(
            cells(d, &json!({"metadata": {"name": "x"}}), now())[1],
            "<none>"
        );

        let s = find("discovery.k8s.io", "v1", "endpointslices").unwrap();
        assert_eq!(
            names(&columns(s)),
            ["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let slice = json!({
            "metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]
        });
        let c = check_shape(s, &slice);
        assert_eq!(c[1], "IPv4");
        assert_eq!(c[2], "80,named,*");
        assert_eq!(c[3], "10.0.0.1,10.0.0.2");
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(cells(s, &empty, now())[2], "<unset>");
    }

    #[test]
    fn configmaps_secrets_serviceaccounts_leases() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert_eq!(names(&columns(cm)), ["Name", "Data", "Age"]);
        let c = check_shape(
            cm,
            &json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
        );
        assert_eq!(c[1], 3);
        let sec = find("", "v1", "secrets").unwrap();
        assert_eq!(names(&columns(sec)), ["Name", "Type", "Data", "Age"]);
        let c = check_shape(
            sec,
            &json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        );
        assert_eq!(c[1], "kubernetes.io/tls");
        assert_eq!(c[2], 2);
        let sa = find("", "v1", "serviceaccounts").unwrap();
        assert_eq!(names(&columns(sa)), ["Name", "Secrets", "Age"]);
        assert_eq!(
            check_shape(sa, &json!({"metadata": {"name": "default"}}))[1],
            0
        );
        let lease = find("coordination.k8s.io", "v1", "leases").unwrap();
        assert_eq!(names(&columns(lease)), ["Name", "Holder", "Age"]);
        let c = check_shape(
            lease,
            &json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}),
        );
        assert_eq!(c[1], "node-1");
    }

    #[test]
    fn events_both_versions() {
        let core_ev = find("", "v1", "events").unwrap();
        let cols = columns(core_ev);
        assert_eq!(
            names(&cols),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let prio: Vec<i64> = cols
            .iter()
            .map(|c| c["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prio, [0, 0, 0, 0, 1, 1, 0, 1, 1, 1]);
        let ev = json!({
            "metadata": {"name": "web.1234", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "fieldPath": "spec.containers{nginx}"},
            "reason": "Pulled", "message": "Successfully pulled image \"nginx\"\n", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-26T11:50:00Z", "lastTimestamp": "2026-11-26T11:58:00Z", "count": 3
        });
        assert_eq!(
            check_shape(core_ev, &ev),
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{nginx}"),
                json!("kubelet, node-1"),
                json!("Successfully pulled image \"nginx\""),
                json!("10m"),
                json!(3),
                json!("web.1234")
            ]
        );
        // A new-style event: eventTime only, reportingController, no count.
        let ev2 = json!({
            "metadata": {"name": "e2"},
            "involvedObject": {"kind": "Node"},
            "reason": "Starting", "type": "Normal", "eventTime": "2026-11-26T11:59:30.000000Z",
            "reportingComponent": "kubelet", "reportingController": "kubelet", "reportingInstance": ""
        });
        let c = cells(core_ev, &ev2, now());
        assert_eq!(c[0], "30s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "kubelet");
        assert_eq!(c[7], "30s");
        assert_eq!(c[8], 1);

        let new_ev = find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(names(&columns(new_ev)), names(&cols));
        let ev3 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e3"},
            "regarding": {"kind": "Deployment", "name": "app"},
            "note": "Scaled up replica set app-123 to 2", "reason": "ScalingReplicaSet", "type": "Normal",
            "eventTime": "2026-11-26T11:00:00.000000Z",
            "reportingController": "deployment-controller", "reportingInstance": "cm-1",
            "series": {"count": 4, "lastObservedTime": "2026-11-26T11:59:00.000000Z"}
        });
        let c = check_shape(new_ev, &ev3);
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "deployment/app");
        assert_eq!(c[5], "deployment-controller, cm-1");
        assert_eq!(c[6], "Scaled up replica set app-123 to 2");
        assert_eq!(c[7], "60m");
        assert_eq!(c[8], 4);
    }

    #[test]
    fn volumes_and_storage_classes() {
        let pvc = find("", "v1", "persistentvolumeclaims").unwrap();
        assert_eq!(
            names(&columns(pvc)),
            [
                "Name",
                "Status",
                "Volume",
                "Capacity",
                "Access Modes",
                "StorageClass",
                "VolumeAttributesClass",
                "Age",
                "VolumeMode"
            ]
        );
        let claim = json!({
            "metadata": {"name": "data"},
            "spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeMode": "Filesystem",
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "capacity": {"storage": "2Gi"}}
        });
        let c = check_shape(pvc, &claim);
        assert_eq!(
            &c[..7],
            &[
                json!("data"),
                json!("Bound"),
                json!("pv-1"),
                json!("2Gi"),
                json!("RWO,RWX"),
                json!("standard"),
                json!("<unset>")
            ]
        );
        assert_eq!(c[8], "Filesystem");
        let pending =
            json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        let c = cells(pvc, &pending, now());
        assert_eq!(c[3], "");
        assert_eq!(c[8], "<unset>");

        let pv = find("", "v1", "persistentvolumes").unwrap();
        assert_eq!(
            names(&columns(pv)),
            [
                "Name",
                "Capacity",
                "Access Modes",
                "Reclaim Policy",
                "Status",
                "Claim",
                "StorageClass",
                "VolumeAttributesClass",
                "Reason",
                "Age",
                "VolumeMode"
            ]
        );
        let vol = json!({
            "metadata": {"name": "pv-1", "annotations": {"volume.beta.kubernetes.io/storage-class": "slow"}},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOncePod"], "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "standard"},
            "status": {"phase": "Bound"}
        });
        let c = check_shape(pv, &vol);
        assert_eq!(
            &c[..9],
            &[
                json!("pv-1"),
                json!("2Gi"),
                json!("RWOP"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("slow"),
                json!("<unset>"),
                json!("")
            ]
        );

        let sc = find("storage.k8s.io", "v1", "storageclasses").unwrap();
        assert_eq!(
            names(&columns(sc)),
            [
                "Name",
                "Provisioner",
                "ReclaimPolicy",
                "VolumeBindingMode",
                "AllowVolumeExpansion",
                "Age"
            ]
        );
        let class = json!({
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "wasmkube.io/local"
        });
        let c = check_shape(sc, &class);
        assert_eq!(c[0], "standard (default)");
        assert_eq!(c[2], "Delete");
        assert_eq!(c[3], "Immediate");
        assert_eq!(c[4], false);
    }

    #[test]
    fn deployments_replicasets_daemonsets() {
        let d = find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            names(&columns(d)),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let dep = json!({
            "metadata": {"name": "app", "creationTimestamp": "2026-11-26T11:55:00Z"},
            "spec": {"replicas": 3,
                "selector": {"matchLabels": {"app": "app"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["web", "api"]},
                    {"key": "canary", "operator": "DoesNotExist"}]},
                "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}, {"name": "s", "image": "busybox"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            check_shape(d, &dep),
            vec![
                json!("app"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5m"),
                json!("c,s"),
                json!("nginx:1.27,busybox"),
                json!("app=app,!canary,tier in (api,web)")
            ]
        );
        let fresh =
            json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": []}}}});
        let c = cells(d, &fresh, now());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[7], "");

        let rs = find("apps", "v1", "replicasets").unwrap();
        assert_eq!(
            names(&columns(rs)),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let set = json!({
            "metadata": {"name": "app-5d4f"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app", "pod-template-hash": "5d4f"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        let c = check_shape(rs, &set);
        assert_eq!(&c[1..4], &[json!(2), json!(2), json!(1)]);
        assert_eq!(c[7], "app=app,pod-template-hash=5d4f");

        let ds = find("apps", "v1", "daemonsets").unwrap();
        assert_eq!(
            names(&columns(ds)),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let set = json!({
            "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "agent:1"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}
        });
        let c = check_shape(ds, &set);
        assert_eq!(
            &c[1..7],
            &[
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux")
            ]
        );
        assert_eq!(c[10], "app=agent");
    }

    #[test]
    fn jobs_and_cronjobs() {
        let d = find("batch", "v1", "jobs").unwrap();
        assert_eq!(
            names(&columns(d)),
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2026-11-26T11:00:00Z"},
            "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": "2026-11-26T11:00:00Z", "completionTime": "2026-11-26T11:00:42Z",
                "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            check_shape(d, &job),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("42s"),
                json!("60m"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=abc")
            ]
        );
        let running = json!({
            "metadata": {"name": "w"},
            "spec": {"parallelism": 3, "template": {"spec": {"containers": []}}},
            "status": {"succeeded": 1, "startTime": "2026-11-26T11:58:00Z"}
        });
        let c = cells(d, &running, now());
        assert_eq!(c[1], "Running");
        assert_eq!(c[2], "1/1 of 3");
        assert_eq!(c[3], "2m");
        let failed = json!({"metadata": {"name": "f"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(cells(d, &failed, now())[1], "Failed");
        assert_eq!(cells(d, &failed, now())[3], "");
        let suspended = json!({"metadata": {"name": "s"}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(cells(d, &suspended, now())[1], "Suspended");

        let cj = find("batch", "v1", "cronjobs").unwrap();
        assert_eq!(
            names(&columns(cj)),
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let cron = json!({
            "metadata": {"name": "hello"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "h", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2026-11-26T11:55:00Z"}
        });
        let c = check_shape(cj, &cron);
        assert_eq!(
            &c[..6],
            &[
                json!("hello"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m")
            ]
        );
        assert_eq!(c[9], "<none>");
    }

    #[test]
    fn hpas_both_versions() {
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let want = [
            "Name",
            "Reference",
            "Targets",
            "MinPods",
            "MaxPods",
            "Replicas",
            "Age",
        ];
        assert_eq!(names(&columns(v2)), want);
        assert_eq!(names(&columns(v1)), want);
        let hpa = json!({
            "metadata": {"name": "app"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}
                ]},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 23, "averageValue": "23m"}}}]}
        });
        assert_eq!(
            check_shape(v2, &hpa),
            vec![
                json!("app"),
                json!("Deployment/app"),
                json!("cpu: 23%/50%, memory: <unknown>/100Mi + 1 more..."),
                json!("1"),
                json!(10),
                json!(2),
                json!("<unknown>")
            ]
        );
        let none = json!({"metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}});
        assert_eq!(cells(v2, &none, now())[2], "<none>");
        assert_eq!(cells(v2, &none, now())[3], "<unset>");
        let old = json!({
            "metadata": {"name": "app"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "app"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
            "status": {"currentReplicas": 1}
        });
        let c = check_shape(v1, &old);
        assert_eq!(c[2], "cpu: <unknown>/80%");
    }

    #[test]
    fn default_printer_is_name_age() {
        let mut def = ResourceDef {
            ..*find("", "v1", "pods").unwrap()
        };
        def.kind = "Widget";
        def.group = "example.com";
        assert_eq!(names(&columns(&def)), ["Name", "Age"]);
        let c = cells(
            &def,
            &json!({"metadata": {"name": "w", "creationTimestamp": "2026-11-26T11:59:55Z"}}),
            now(),
        );
        assert_eq!(c, vec![json!("w"), json!("5s")]);
    }
}
