//! The smaller core/v1 kinds: ConfigMaps, Secrets, Namespaces, Nodes, Events, PVCs, PVs,
//! ServiceAccounts and Endpoints.

use std::net::IpAddr;

use base64::Engine;
use serde_json::{json, Value};

use super::meta::{
    arr, child_mut, default_field, default_str, immutable, int, invalid_each, is_config_map_key,
    is_dns1123_label, is_qualified_name, ix, key, kube_finalizer_name, obj, p, s, sv,
};
use super::pod::{
    port_number, validate_enum, validate_optional_enum, validate_quantity, VOLUME_SOURCES,
};
use super::quantity;
use crate::errors::FieldError;

const MAX_DATA_SIZE: usize = 1024 * 1024;
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

// ---------------------------------------------------------------------------------------------
// ConfigMaps and Secrets
// ---------------------------------------------------------------------------------------------

/// Keys of `data` (and `binaryData`) must be config keys; returns the total size in bytes
/// (`binaryData` counted decoded, as upstream counts `[]byte`).
fn validate_data_keys(o: &Value, field: &str, out: &mut Vec<FieldError>) -> usize {
    let mut total = 0;
    let base64 = field == "binaryData";
    if let Some(m) = obj(o, field) {
        for (k, v) in m {
            out.extend(invalid_each(&key(field, k), k, is_config_map_key(k)));
            let text = v.as_str().unwrap_or_default();
            total += if base64 {
                text.len() / 4 * 3
            } else {
                text.len()
            };
        }
    }
    total
}

/// `ValidateConfigMap` (data part).
pub fn validate_config_map(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut total = validate_data_keys(o, "data", &mut out);
    total += validate_data_keys(o, "binaryData", &mut out);
    if let (Some(data), Some(bin)) = (obj(o, "data"), obj(o, "binaryData")) {
        for k in bin.keys().filter(|k| data.contains_key(*k)) {
            out.push(FieldError::invalid(
                key("binaryData", k),
                &sv(k),
                "duplicate of key present in data",
            ));
        }
    }
    if total > MAX_DATA_SIZE {
        out.push(FieldError::too_long("", MAX_DATA_SIZE));
    }
    out
}

/// `immutable: true` freezes `data`/`binaryData` and itself.
fn validate_immutable_data(o: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    let mut out = Vec::new();
    if !old
        .get("immutable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return out;
    }
    if o.get("immutable").and_then(Value::as_bool) != Some(true) {
        out.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
    }
    let norm = |v: &Value, k: &str| obj(v, k).cloned().unwrap_or_default();
    for f in fields {
        if norm(o, f) != norm(old, f) {
            out.push(FieldError::forbidden(*f, IMMUTABLE_SET));
        }
    }
    out
}

pub fn validate_config_map_update(o: &Value, old: &Value) -> Vec<FieldError> {
    validate_immutable_data(o, old, &["data", "binaryData"])
}

/// `SetDefaults_Secret` (type Opaque) and the conversion that folds `stringData` into `data`.
pub fn default_secret(o: &mut Value) {
    default_str(o, "type", "Opaque");
    let Some(string_data) = o
        .as_object_mut()
        .and_then(|m| m.remove("stringData"))
        .and_then(|v| v.as_object().cloned())
    else {
        return;
    };
    if let Some(data) = child_mut(o, "data").and_then(Value::as_object_mut) {
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(k, Value::String(encoded));
        }
    }
}

/// The decoded bytes of `data[k]` (Secret data is base64 in JSON), if the key is present.
fn secret_data(o: &Value, k: &str) -> Option<Vec<u8>> {
    let v = o.get("data")?.get(k)?;
    let text = v.as_str().unwrap_or_default();
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|_| text.as_bytes().to_vec()),
    )
}

/// Docker config secrets must hold a JSON object.
fn docker_config(o: &Value, k: &str, out: &mut Vec<FieldError>) {
    let field = key("data", k);
    match secret_data(o, k) {
        None => out.push(FieldError::required(field)),
        Some(bytes) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes) {
                out.push(FieldError::invalid(
                    field,
                    &sv("<secret contents redacted>"),
                    &e.to_string(),
                ));
            }
        }
    }
}

/// `ValidateSecret` (data and type rules).
pub fn validate_secret(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    validate_data_keys(o, "data", &mut out);
    let total: usize = obj(o, "data")
        .map(|m| {
            m.keys()
                .filter_map(|k| secret_data(o, k))
                .map(|b| b.len())
                .sum()
        })
        .unwrap_or(0);
    let present = |k: &str| secret_data(o, k).is_some();
    match s(o, "type").unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let ann = o
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ann.is_empty() {
                out.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        "kubernetes.io/dockercfg" => docker_config(o, ".dockercfg", &mut out),
        "kubernetes.io/dockerconfigjson" => docker_config(o, ".dockerconfigjson", &mut out),
        "kubernetes.io/basic-auth" if !present("username") && !present("password") => {
            out.push(FieldError::required("data[username]"));
            out.push(FieldError::required("data[password]"));
        }
        "kubernetes.io/ssh-auth"
            if secret_data(o, "ssh-privatekey").is_none_or(|b| b.is_empty()) =>
        {
            out.push(FieldError::required("data[ssh-privatekey]"));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !present(k) {
                    out.push(FieldError::required(key("data", k)));
                }
            }
        }
        _ => {}
    }
    if total > MAX_DATA_SIZE {
        out.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    out
}

/// `ValidateSecretUpdate`: the type is immutable; so is the data of immutable secrets.
pub fn validate_secret_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = immutable(o.get("type"), old.get("type"), "type")
        .into_iter()
        .collect();
    out.extend(validate_immutable_data(o, old, &["data"]));
    out
}

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_Namespace` + `SetDefaults_NamespaceStatus` + the name label.
pub fn default_namespace(o: &mut Value) {
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !name.is_empty() {
        if let Some(labels) = child_mut(o, "metadata")
            .and_then(|m| child_mut(m, "labels"))
            .and_then(Value::as_object_mut)
        {
            labels.insert("kubernetes.io/metadata.name".into(), sv(&name));
        }
    }
    if let Some(spec) = child_mut(o, "spec") {
        default_field(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child_mut(o, "status") {
        default_str(status, "phase", "Active");
    }
}

/// `ValidateNamespace` (finalizers).
pub fn validate_namespace(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    for (i, f) in arr(o.get("spec").unwrap_or(&empty), "finalizers")
        .iter()
        .enumerate()
    {
        let name = f.as_str().unwrap_or_default();
        let fp = ix("spec.finalizers", i);
        out.extend(invalid_each(&fp, name, is_qualified_name(name)));
        out.extend(kube_finalizer_name(name, &fp));
    }
    out
}

/// `ValidateNamespaceStatusUpdate`: Active unless being deleted, then Terminating.
pub fn validate_namespace_status(o: &Value) -> Vec<FieldError> {
    let phase = o
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let deleting = o
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let (want, msg) = if deleting {
        (
            "Terminating",
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        )
    } else {
        (
            "Active",
            "may only be 'Active' if `deletionTimestamp` is empty",
        )
    };
    if phase == want {
        vec![]
    } else {
        // Upstream's path really is `status.Phase`.
        vec![FieldError::invalid("status.Phase", &sv(phase), msg)]
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_Node` (nothing in spec) and `SetDefaults_NodeStatus` (allocatable = capacity).
pub fn default_node(o: &mut Value) {
    let Some(capacity) = o.pointer("/status/capacity").cloned() else {
        return;
    };
    if let Some(status) = child_mut(o, "status") {
        default_field(status, "allocatable", capacity);
    }
}

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `ValidateNode` (spec part): taints and pod CIDRs.
pub fn validate_node(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let tp = ix("spec.taints", i);
        let k = s(t, "key").unwrap_or_default();
        out.extend(invalid_each(&p(&tp, "key"), k, is_qualified_name(k)));
        let v = s(t, "value").unwrap_or_default();
        out.extend(invalid_each(
            &p(&tp, "value"),
            v,
            super::meta::is_valid_label_value(v),
        ));
        out.extend(validate_enum(t, "effect", &tp, TAINT_EFFECTS));
        let effect = s(t, "effect").unwrap_or_default();
        if seen.contains(&(k, effect)) {
            out.push(FieldError::duplicate(&tp, t));
        } else {
            seen.push((k, effect));
        }
    }
    for (i, c) in arr(spec, "podCIDRs").iter().enumerate() {
        let cidr = c.as_str().unwrap_or_default();
        if !is_cidr(cidr) {
            out.push(FieldError::invalid(
                ix("spec.podCIDRs", i),
                &sv(cidr),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    out
}

fn is_cidr(v: &str) -> bool {
    let Some((ip, bits)) = v.split_once('/') else {
        return false;
    };
    match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
        (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
        _ => false,
    }
}

/// `ValidateNodeUpdate`: podCIDR(s) and providerID may only be set once.
pub fn validate_node_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let old_cidrs = arr(&old["spec"], "podCIDRs");
    if !old_cidrs.is_empty() && arr(&o["spec"], "podCIDRs") != old_cidrs {
        out.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let old_pid = s(&old["spec"], "providerID").unwrap_or_default();
    if !old_pid.is_empty() && s(&o["spec"], "providerID").unwrap_or_default() != old_pid {
        out.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// `legacyValidateEvent`: the rules of core/v1 events (the storage version of both event APIs).
pub fn validate_event(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let ns = o
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ins = o
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mismatch = |out: &mut Vec<FieldError>| {
        out.push(FieldError::invalid(
            "involvedObject.namespace",
            &sv(ins),
            "does not match event.namespace",
        ))
    };
    let event_time = o.get("eventTime").is_some_and(|v| !v.is_null());
    if !event_time {
        // Old-style events: the namespaces must agree ("default" for old clients).
        if (ins.is_empty() && !ns.is_empty() && ns != "default") || (!ins.is_empty() && ins != ns) {
            mismatch(&mut out);
        }
    } else {
        // New-style events (events.k8s.io) carry their reporter, action and reason.
        if ins.is_empty() && ns != "default" && ns != "kube-system" {
            mismatch(&mut out);
        }
        let controller = s(o, "reportingComponent").unwrap_or_default();
        if controller.is_empty() {
            out.push(FieldError::required("reportingComponent"));
        }
        out.extend(invalid_each(
            "reportingComponent",
            controller,
            is_qualified_name(controller),
        ));
        for (k, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = s(o, k).unwrap_or_default();
            if v.is_empty() {
                out.push(FieldError::required(k));
            }
            if v.len() > limit {
                out.push(FieldError::invalid(
                    k,
                    &sv(""),
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if s(o, "message").unwrap_or_default().len() > 1024 {
            out.push(FieldError::invalid(
                "message",
                &sv(""),
                "can have at most 1024 characters",
            ));
        }
    }
    if let Some(c) = int(o, "count").filter(|c| *c < 0) {
        out.push(FieldError::invalid(
            "count",
            &Value::from(c),
            super::meta::NEGATIVE,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// PersistentVolumeClaims and PersistentVolumes
// ---------------------------------------------------------------------------------------------

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// `SetDefaults_PersistentVolumeClaimSpec` and the claim's initial phase.
pub fn default_pvc(o: &mut Value) {
    if let Some(spec) = child_mut(o, "spec") {
        default_str(spec, "volumeMode", "Filesystem");
    }
    if let Some(status) = child_mut(o, "status") {
        default_str(status, "phase", "Pending");
    }
}

/// `ValidatePositiveQuantityValue`.
fn positive_quantity(q: &Value, path: &str) -> Option<FieldError> {
    match quantity::parse(q) {
        None => validate_quantity(q, path),
        Some(n) if n <= 0.0 => Some(FieldError::invalid(
            path,
            &sv(&quantity::show(q)),
            "must be greater than zero",
        )),
        Some(_) => None,
    }
}

/// Access modes: required (`empty_detail` is the claim's "at least 1 ..." message).
fn validate_access_modes(spec: &Value, path: &str, empty_detail: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let modes = arr(spec, "accessModes");
    let mp = p(path, "accessModes");
    if modes.is_empty() {
        out.push(FieldError::required_msg(&mp, empty_detail));
    }
    for m in modes {
        let mode = m.as_str().unwrap_or_default();
        if !ACCESS_MODES.contains(&mode) {
            out.push(FieldError::not_supported(&mp, &sv(mode), ACCESS_MODES));
        }
    }
    if modes.iter().any(|m| m.as_str() == Some("ReadWriteOncePod")) && modes.len() > 1 {
        out.push(FieldError::forbidden(
            &mp,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    out
}

/// `ValidatePersistentVolumeClaimSpec`.
pub fn validate_pvc(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut out = validate_access_modes(spec, "spec", "at least 1 access mode is required");
    match spec.pointer("/resources/requests/storage") {
        None => out.push(FieldError::required("spec.resources[storage]")),
        Some(q) => out.extend(positive_quantity(q, "spec.resources[storage]")),
    }
    out.extend(validate_optional_enum(
        spec,
        "volumeMode",
        "spec",
        &["Block", "Filesystem"],
    ));
    if let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) {
        out.extend(super::meta::validate_label_selector(sel, "spec.selector"));
    }
    out
}

/// `ValidatePersistentVolumeClaimUpdate`: the spec is immutable except requests and binding.
pub fn validate_pvc_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let strip = |v: &Value| {
        let mut spec = v.get("spec").cloned().unwrap_or(json!({}));
        if let Some(m) = spec.as_object_mut() {
            m.remove("volumeAttributesClassName");
            if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                r.remove("requests");
            }
        }
        spec
    };
    let (mut new, old_spec) = (strip(o), strip(old));
    // Binding sets volumeName once.
    if s(&old_spec, "volumeName").unwrap_or_default().is_empty() {
        if let Some(m) = new.as_object_mut() {
            match old_spec.get("volumeName") {
                Some(v) => m.insert("volumeName".into(), v.clone()),
                None => m.remove("volumeName"),
            };
        }
    }
    if new == old_spec {
        return vec![];
    }
    vec![FieldError::forbidden(
        "spec",
        "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
    )]
}

/// `SetDefaults_PersistentVolume` and its initial phase.
pub fn default_pv(o: &mut Value) {
    if let Some(spec) = child_mut(o, "spec") {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_str(spec, "volumeMode", "Filesystem");
    }
    if let Some(status) = child_mut(o, "status") {
        default_str(status, "phase", "Pending");
    }
}

/// `ValidatePersistentVolumeSpec`.
pub fn validate_pv(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut out = validate_access_modes(spec, "spec", "");
    let capacity = obj(spec, "capacity");
    if capacity.is_none_or(|c| c.is_empty()) {
        out.push(FieldError::required("spec.capacity"));
    }
    if capacity.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        out.push(FieldError::not_supported(
            "spec.capacity",
            &spec.get("capacity").cloned().unwrap_or(json!({})),
            &["storage"],
        ));
    }
    for (k, q) in capacity.into_iter().flatten() {
        out.extend(positive_quantity(q, &key("spec.capacity", k)));
    }
    let sources = VOLUME_SOURCES
        .iter()
        .chain(["local"].iter())
        .filter(|k| spec.get(**k).is_some_and(|v| !v.is_null()))
        .count();
    if sources == 0 {
        out.push(FieldError::required_msg(
            "spec",
            "must specify a volume type",
        ));
    } else if sources > 1 {
        out.push(FieldError::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        ));
    }
    out.extend(validate_optional_enum(
        spec,
        "persistentVolumeReclaimPolicy",
        "spec",
        &["Delete", "Recycle", "Retain"],
    ));
    out.extend(validate_optional_enum(
        spec,
        "volumeMode",
        "spec",
        &["Block", "Filesystem"],
    ));
    if let Some(path) = spec.pointer("/hostPath/path").and_then(Value::as_str) {
        if path.is_empty() {
            out.push(FieldError::required("spec.hostPath.path"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ServiceAccounts and Endpoints
// ---------------------------------------------------------------------------------------------

/// `ValidateServiceAccount`: secret references need names.
pub fn validate_service_account(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (list, path) in [
        ("secrets", "secrets"),
        ("imagePullSecrets", "imagePullSecrets"),
    ] {
        for (i, r) in arr(o, list).iter().enumerate() {
            if s(r, "name").unwrap_or_default().is_empty() && list == "imagePullSecrets" {
                out.push(FieldError::required(p(&ix(path, i), "name")));
            }
        }
    }
    out
}

/// `SetDefaults_EndpointPort`: protocol TCP.
pub fn default_endpoints(o: &mut Value) {
    if let Some(subsets) = o.get_mut("subsets").and_then(Value::as_array_mut) {
        for subset in subsets {
            if let Some(ports) = subset.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    default_str(port, "protocol", "TCP");
                }
            }
        }
    }
}

/// `ValidateEndpoints`: addresses are IPs, ports valid and named when several.
pub fn validate_endpoints(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, subset) in arr(o, "subsets").iter().enumerate() {
        let sp = ix("subsets", i);
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(subset, list).iter().enumerate() {
                let ap = ix(&p(&sp, list), j);
                let ip = s(a, "ip").unwrap_or_default();
                if ip.parse::<IpAddr>().is_err() {
                    out.push(FieldError::invalid(
                        p(&ap, "ip"),
                        &sv(ip),
                        "must be a valid IP address",
                    ));
                }
                if let Some(h) = s(a, "hostname").filter(|h| !h.is_empty()) {
                    out.extend(invalid_each(&p(&ap, "hostname"), h, is_dns1123_label(h)));
                }
            }
        }
        let ports = arr(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = ix(&p(&sp, "ports"), j);
            match s(port, "name").unwrap_or_default() {
                "" if ports.len() > 1 => out.push(FieldError::required(p(&pp, "name"))),
                "" => {}
                name => out.extend(invalid_each(&p(&pp, "name"), name, is_dns1123_label(name))),
            }
            out.extend(port_number(
                port.get("port").unwrap_or(&Value::Null),
                &p(&pp, "port"),
            ));
            out.extend(validate_enum(
                port,
                "protocol",
                &pp,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps() {
        let ok = json!({"data": {"a.b": "x", "C_D": "y"}, "binaryData": {"bin": "AA=="}});
        assert!(validate_config_map(&ok).is_empty());
        let errs = validate_config_map(&json!({"data": {"a b": "x"}}));
        assert_eq!(errs[0].display(), "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
        let errs = validate_config_map(&json!({"data": {"k": "x"}, "binaryData": {"k": "AA=="}}));
        assert_eq!(errs[0].field, "binaryData[k]");

        let old = json!({"immutable": true, "data": {"a": "1"}});
        assert!(validate_config_map_update(&old, &old).is_empty());
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(
            validate_config_map_update(&new, &old)[0].display(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
        let new = json!({"data": {"a": "1"}});
        assert_eq!(validate_config_map_update(&new, &old)[0].field, "immutable");
        let mutable = json!({"data": {"a": "1"}});
        assert!(validate_config_map_update(&new, &mutable).is_empty());
    }

    #[test]
    fn secrets() {
        let mut sec = json!({"stringData": {"user": "admin"}, "data": {"x": "eA=="}});
        default_secret(&mut sec);
        assert_eq!(
            sec,
            json!({"type": "Opaque", "data": {"x": "eA==", "user": "YWRtaW4="}})
        );
        let mut kept = json!({"type": "kubernetes.io/tls", "data": {}});
        default_secret(&mut kept);
        assert_eq!(kept["type"], "kubernetes.io/tls");
        let errs: Vec<String> = validate_secret(&kept)
            .iter()
            .map(FieldError::display)
            .collect();
        assert_eq!(
            errs,
            vec![
                "data[tls.crt]: Required value",
                "data[tls.key]: Required value"
            ]
        );
        assert!(validate_secret(&sec).is_empty());

        let docker = json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "bm9wZQ=="}});
        let errs = validate_secret(&docker);
        assert_eq!(errs[0].field, "data[.dockerconfigjson]");
        assert!(errs[0]
            .message
            .starts_with("Invalid value: \"<secret contents redacted>\": "));

        let mut changed = sec.clone();
        changed["type"] = json!("kubernetes.io/basic-auth");
        assert_eq!(
            validate_secret_update(&changed, &sec)[0].display(),
            "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
        );
    }

    #[test]
    fn namespaces() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        default_namespace(&mut ns);
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert!(validate_namespace(&ns).is_empty());
        assert!(validate_namespace_status(&ns).is_empty());
        ns["status"]["phase"] = json!("Terminating");
        assert_eq!(
            validate_namespace_status(&ns)[0].display(),
            "status.Phase: Invalid value: \"Terminating\": may only be 'Active' if `deletionTimestamp` is empty"
        );
        let bad = json!({"spec": {"finalizers": ["foo"]}});
        assert_eq!(
            validate_namespace(&bad)[0].display(),
            "spec.finalizers[0]: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }

    #[test]
    fn nodes() {
        let n = json!({"spec": {"podCIDRs": ["10.244.0.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert!(validate_node(&n).is_empty());
        let bad = json!({"spec": {"podCIDRs": ["10.244.0.0"], "taints": [{"key": "k", "effect": "Sometimes"}]}});
        let fields: Vec<String> = validate_node(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["spec.taints[0].effect", "spec.podCIDRs[0]"]);
        let changed = json!({"spec": {"podCIDRs": ["10.244.1.0/24"]}});
        assert_eq!(validate_node_update(&changed, &n)[0].field, "spec.podCIDRs");
        assert!(validate_node_update(&n, &json!({"spec": {}})).is_empty());
        let mut with_status = json!({"status": {"capacity": {"cpu": "4"}}});
        default_node(&mut with_status);
        assert_eq!(with_status["status"]["allocatable"], json!({"cpu": "4"}));
    }

    #[test]
    fn events() {
        let ok = json!({"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"namespace": "d"}});
        assert!(validate_event(&ok).is_empty());
        let new_style = json!({"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"namespace": "d"},
            "eventTime": "2024-01-01T00:00:00.000000Z", "reportingComponent": "kubelet",
            "reportingInstance": "node-1", "action": "Pulling", "reason": "Pulling"});
        assert!(validate_event(&new_style).is_empty());
        let mut missing = new_style.clone();
        missing.as_object_mut().unwrap().remove("action");
        assert_eq!(
            validate_event(&missing)[0].display(),
            "action: Required value"
        );
        let bad = json!({"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"namespace": "x"}});
        assert_eq!(
            validate_event(&bad)[0].display(),
            "involvedObject.namespace: Invalid value: \"x\": does not match event.namespace"
        );
    }

    #[test]
    fn pvcs() {
        let mut pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        default_pvc(&mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert!(validate_pvc(&pvc).is_empty());
        let errs: Vec<String> = validate_pvc(&json!({"spec": {}}))
            .iter()
            .map(FieldError::display)
            .collect();
        assert_eq!(
            errs,
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
        let bad = json!({"spec": {"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(validate_pvc(&bad)[0].reason, "FieldValueNotSupported");

        let mut bigger = pvc.clone();
        bigger["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        bigger["spec"]["volumeName"] = json!("pv-1");
        assert!(validate_pvc_update(&bigger, &pvc).is_empty());
        let mut other = pvc.clone();
        other["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(validate_pvc_update(&other, &pvc)[0].field, "spec");
    }

    #[test]
    fn pvs_and_endpoints() {
        let mut pv = json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "nfs": {"server": "s", "path": "/x"}}});
        default_pv(&mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert!(validate_pv(&pv).is_empty());
        let bad =
            json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            validate_pv(&bad)[0].display(),
            "spec: Required value: must specify a volume type"
        );

        let mut ep =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
        default_endpoints(&mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert!(validate_endpoints(&ep).is_empty());
        let bad = json!({"subsets": [{"addresses": [{"ip": "nope"}], "ports": [{"port": 80, "protocol": "TCP"}]}]});
        assert_eq!(
            validate_endpoints(&bad)[0].field,
            "subsets[0].addresses[0].ip"
        );
    }
}
