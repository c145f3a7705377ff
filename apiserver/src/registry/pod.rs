//! Pods and `PodSpec` (shared with every pod template): upstream's `SetDefaults_Pod*`,
//! `SetDefaults_Container`, `ValidatePodSpec`, `ValidatePodUpdate`, plus the defaults of the
//! DefaultTolerationSeconds and Priority admission plugins.

use serde_json::{json, Map, Value};

use super::meta::{
    arr, child_mut, default_field, default_str, immutable, int, invalid_each, is_config_map_key,
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_true, is_valid_label_value,
    is_valid_port_name, ix, key, nonnegative, not_found, obj, p, port_num_or_name, s, sv,
    validate_annotations, validate_labels, NEGATIVE, PORT_RANGE,
};
use super::quantity;
use crate::errors::FieldError;

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_Pod` + `SetDefaults_PodSpec` and the defaults admission adds to pods.
pub fn default_pod(pod: &mut Value) {
    let Some(spec) = child_mut(pod, "spec") else {
        return;
    };
    default_pod_spec(spec);
    default_field(spec, "enableServiceLinks", Value::Bool(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(requests_from_limits);
        }
    }
    // Priority admission: the built-in classes' values, else the default priority 0
    // (other classes are resolved by whoever knows the PriorityClass objects).
    match s(spec, "priorityClassName").unwrap_or_default() {
        "" => default_field(spec, "priority", json!(0)),
        "system-node-critical" => default_field(spec, "priority", json!(2_000_001_000)),
        "system-cluster-critical" => default_field(spec, "priority", json!(2_000_000_000)),
        _ => {}
    }
    default_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    default_toleration_seconds(spec);
}

/// Defaults of a `PodTemplateSpec` (`spec.template` of workloads).
pub fn default_pod_template(template: &mut Value) {
    if let Some(spec) = child_mut(template, "spec") {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and the defaults of everything nested in it.
pub fn default_pod_spec(spec: &mut Value) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    let host_network = is_true(spec, "hostNetwork");
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                default_container(c, host_network);
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vols.iter_mut().for_each(default_volume);
    }
}

/// Upstream's `PullAlways` for `:latest` or no tag, `IfNotPresent` otherwise (digests too).
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        None if !digest => "Always",
        _ => "IfNotPresent",
    }
}

fn default_container(c: &mut Value, host_network: bool) {
    if s(c, "imagePullPolicy").is_none_or(str::is_empty) {
        let policy = default_pull_policy(s(c, "image").unwrap_or_default());
        default_str(c, "imagePullPolicy", policy);
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default_str(port, "protocol", "TCP");
            if host_network {
                if let Some(cp) = port.get("containerPort").cloned() {
                    if int(port, "hostPort").unwrap_or(0) == 0 {
                        port["hostPort"] = cp;
                    }
                }
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
                default_str(fr, "apiVersion", "v1");
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = c.get_mut(probe).filter(|v| v.is_object()) {
            default_probe(pr);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook).and_then(|h| h.get_mut("httpGet")) {
                default_http_get(h);
            }
        }
    }
}

fn default_probe(pr: &mut Value) {
    default_field(pr, "timeoutSeconds", json!(1));
    default_field(pr, "periodSeconds", json!(10));
    default_field(pr, "successThreshold", json!(1));
    default_field(pr, "failureThreshold", json!(3));
    if let Some(h) = pr.get_mut("httpGet") {
        default_http_get(h);
    }
}

fn default_http_get(h: &mut Value) {
    default_str(h, "path", "/");
    default_str(h, "scheme", "HTTP");
}

/// `SetDefaults_Volume` (no source means emptyDir) and the modes of projected sources.
fn default_volume(v: &mut Value) {
    let has_source = v
        .as_object()
        .is_some_and(|m| m.keys().any(|k| VOLUME_SOURCES.contains(&k.as_str())));
    if !has_source {
        default_field(v, "emptyDir", json!({}));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(x) = v.get_mut(src).filter(|x| x.is_object()) {
            default_field(x, "defaultMode", json!(420));
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|x| x.is_object()) {
        default_field(h, "type", json!(""));
    }
}

/// `SetDefaults_Pod`: a limit without a request makes the request equal to the limit.
fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let Some(res) = child_mut(c, "resources") else {
        return;
    };
    let Some(requests) = child_mut(res, "requests").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// The DefaultTolerationSeconds admission plugin: tolerate not-ready/unreachable for 300s.
fn default_toleration_seconds(spec: &mut Value) {
    let mut add = Vec::new();
    for taint in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = arr(spec, "tolerations").iter().any(|t| {
            let k = s(t, "key").unwrap_or_default();
            let op = s(t, "operator").unwrap_or("Equal");
            let effect = s(t, "effect").unwrap_or_default();
            let key_ok = (k.is_empty() && op == "Exists") || k == taint;
            key_ok && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            add.push(
                json!({"key": taint, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}),
            );
        }
    }
    if add.is_empty() {
        return;
    }
    if let Some(m) = spec.as_object_mut() {
        let list = m
            .entry("tolerations")
            .or_insert_with(|| Value::Array(vec![]));
        if !list.is_array() {
            *list = Value::Array(vec![]);
        }
        if let Some(a) = list.as_array_mut() {
            a.extend(add);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

pub const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// `ValidatePodCreate` minus metadata: the pod's spec.
pub fn validate_pod(pod: &Value) -> Vec<FieldError> {
    let empty = json!({});
    validate_pod_spec(pod.get("spec").unwrap_or(&empty), "spec")
}

/// `ValidatePodTemplateSpec`: template labels/annotations and its spec.
pub fn validate_pod_template(template: &Value, path: &str) -> Vec<FieldError> {
    let meta = template.get("metadata").cloned().unwrap_or(json!({}));
    let mp = p(path, "metadata");
    let mut out = validate_labels(meta.get("labels"), &p(&mp, "labels"));
    out.extend(validate_annotations(
        meta.get("annotations"),
        &p(&mp, "annotations"),
    ));
    let empty = json!({});
    let spec = template.get("spec").unwrap_or(&empty);
    out.extend(validate_pod_spec(spec, &p(path, "spec")));
    if !arr(spec, "ephemeralContainers").is_empty() {
        out.push(FieldError::forbidden(
            p(&p(path, "spec"), "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    out
}

/// `ValidatePodSpec`.
pub fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let volumes = validate_volumes(spec, &p(path, "volumes"), &mut out);

    let containers = arr(spec, "containers");
    if containers.is_empty() {
        out.push(FieldError::required(p(path, "containers")));
    }
    let mut names: Vec<String> = Vec::new();
    for (list, init) in [("containers", false), ("initContainers", true)] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            let cp = ix(&p(path, list), i);
            out.extend(validate_container(c, &cp, &volumes, &mut names, init));
        }
    }

    out.extend(validate_enum(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
    ));
    out.extend(validate_enum(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    ));
    out.extend(validate_labels(
        spec.get("nodeSelector"),
        &p(path, "nodeSelector"),
    ));
    for (k, f) in [
        (
            "serviceAccountName",
            is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
    ] {
        if let Some(v) = s(spec, k).filter(|v| !v.is_empty()) {
            out.extend(invalid_each(&p(path, k), v, f(v)));
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            out.push(FieldError::invalid(
                p(path, "activeDeadlineSeconds"),
                &Value::from(ads),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    out.extend(nonnegative(spec, "terminationGracePeriodSeconds", path));
    out.extend(validate_tolerations(
        arr(spec, "tolerations"),
        &p(path, "tolerations"),
    ));
    out.extend(validate_host_network_ports(spec, path));
    out.extend(validate_dns_config(spec, path));
    if let Some(pc) = s(spec, "priorityClassName").filter(|v| !v.is_empty()) {
        out.extend(invalid_each(
            &p(path, "priorityClassName"),
            pc,
            is_dns1123_subdomain(pc),
        ));
    }
    out.extend(validate_optional_enum(
        spec,
        "preemptionPolicy",
        path,
        &["PreemptLowerPriority", "Never"],
    ));
    for (i, alias) in arr(spec, "hostAliases").iter().enumerate() {
        let ap = ix(&p(path, "hostAliases"), i);
        let ip = s(alias, "ip").unwrap_or_default();
        if ip.parse::<std::net::IpAddr>().is_err() {
            out.push(FieldError::invalid(p(&ap, "ip"), &sv(ip), IP_MSG));
        }
        for (j, h) in arr(alias, "hostnames").iter().enumerate() {
            let h = h.as_str().unwrap_or_default();
            out.extend(invalid_each(
                &ix(&p(&ap, "hostnames"), j),
                h,
                is_dns1123_subdomain(h),
            ));
        }
    }
    let mut gates: Vec<&str> = Vec::new();
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let gp = ix(&p(path, "schedulingGates"), i);
        let name = s(g, "name").unwrap_or_default();
        out.extend(invalid_each(&gp, name, is_qualified_name(name)));
        if gates.contains(&name) {
            out.push(FieldError::duplicate(&gp, &sv(name)));
        }
        gates.push(name);
    }
    out
}

pub const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// `validatePodHostNetworkDeps`: with hostNetwork, hostPort (when set) equals containerPort.
fn validate_host_network_ports(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if !is_true(spec, "hostNetwork") {
        return out;
    }
    for (i, c) in arr(spec, "containers").iter().enumerate() {
        let pp = p(&ix(&p(path, "containers"), i), "ports");
        for (j, port) in arr(c, "ports").iter().enumerate() {
            let hp = int(port, "hostPort").unwrap_or(0);
            if hp != 0 && Some(hp) != int(port, "containerPort") {
                out.push(FieldError::invalid(
                    p(&ix(&pp, j), "hostPort"),
                    &Value::from(hp),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
    out
}

/// `validatePodDNSConfig`.
fn validate_dns_config(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let dp = p(path, "dnsConfig");
    let cfg = spec.get("dnsConfig").filter(|v| !v.is_null());
    let none = s(spec, "dnsPolicy") == Some("None");
    let Some(cfg) = cfg else {
        if none {
            out.push(FieldError::required_msg(
                dp,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
        return out;
    };
    let nameservers = arr(cfg, "nameservers");
    if none && nameservers.is_empty() {
        out.push(FieldError::required_msg(
            p(&dp, "nameservers"),
            "must provide at least one DNS nameserver when `dnsPolicy` is None",
        ));
        return out;
    }
    if nameservers.len() > 3 {
        out.push(FieldError::invalid(
            p(&dp, "nameservers"),
            &Value::Array(nameservers.to_vec()),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        let ns = ns.as_str().unwrap_or_default();
        if ns.parse::<std::net::IpAddr>().is_err() {
            out.push(FieldError::invalid(
                ix(&p(&dp, "nameservers"), i),
                &sv(ns),
                IP_MSG,
            ));
        }
    }
    for (i, search) in arr(cfg, "searches").iter().enumerate() {
        let search = search.as_str().unwrap_or_default();
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        out.extend(invalid_each(
            &ix(&p(&dp, "searches"), i),
            trimmed,
            is_dns1123_subdomain(trimmed),
        ));
    }
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if s(o, "name").unwrap_or_default().is_empty() {
            out.push(FieldError::required_msg(
                ix(&p(&dp, "options"), i),
                "must not be empty",
            ));
        }
    }
    out
}

/// A required enum field: `Required` when empty, `NotSupported` when unknown.
pub fn validate_enum(v: &Value, k: &str, path: &str, allowed: &[&str]) -> Option<FieldError> {
    match s(v, k).unwrap_or_default() {
        "" => Some(FieldError::required(p(path, k))),
        x if allowed.contains(&x) => None,
        x => Some(FieldError::not_supported(p(path, k), &sv(x), allowed)),
    }
}

/// An optional enum field: only `NotSupported` when set to an unknown value.
pub fn validate_optional_enum(
    v: &Value,
    k: &str,
    path: &str,
    allowed: &[&str],
) -> Option<FieldError> {
    match s(v, k) {
        None | Some("") => None,
        Some(x) if allowed.contains(&x) => None,
        Some(x) => Some(FieldError::not_supported(p(path, k), &sv(x), allowed)),
    }
}

/// `ValidateVolumes`: returns the names of the volumes, for volumeMounts.
fn validate_volumes(spec: &Value, path: &str, out: &mut Vec<FieldError>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, vol) in arr(spec, "volumes").iter().enumerate() {
        let vp = ix(path, i);
        let name = s(vol, "name").unwrap_or_default();
        if name.is_empty() {
            out.push(FieldError::required(p(&vp, "name")));
        } else {
            out.extend(invalid_each(&p(&vp, "name"), name, is_dns1123_label(name)));
        }
        if names.iter().any(|n| n == name) {
            out.push(FieldError::duplicate(p(&vp, "name"), &sv(name)));
        } else {
            names.push(name.to_string());
        }
        out.extend(validate_volume_source(vol, &vp));
    }
    names
}

/// Exactly one volume source, and the rules of the common ones.
fn validate_volume_source(vol: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let sources: Vec<&str> = VOLUME_SOURCES
        .iter()
        .copied()
        .filter(|k| vol.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match sources.as_slice() {
        [] => out.push(FieldError::required_msg(path, "must specify a volume type")),
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                out.push(FieldError::forbidden(
                    p(path, k),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(h) = vol.get("hostPath") {
        let hp = p(path, "hostPath");
        match s(h, "path").unwrap_or_default() {
            "" => out.push(FieldError::required(p(&hp, "path"))),
            x => out.extend(no_backsteps(x, &p(&hp, "path"))),
        }
        out.extend(validate_optional_enum(
            h,
            "type",
            &hp,
            &[
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ],
        ));
    }
    if let Some(e) = vol.get("emptyDir") {
        if let Some(q) = e.get("sizeLimit") {
            out.extend(validate_quantity(q, &p(&p(path, "emptyDir"), "sizeLimit")));
        }
    }
    for (src, name_key) in [("configMap", "name"), ("secret", "secretName")] {
        if let Some(x) = vol.get(src) {
            let xp = p(path, src);
            if s(x, name_key).unwrap_or_default().is_empty() {
                out.push(FieldError::required(p(&xp, name_key)));
            }
            out.extend(validate_mode(x, "defaultMode", &xp));
            for (j, item) in arr(x, "items").iter().enumerate() {
                out.extend(validate_key_to_path(item, &ix(&p(&xp, "items"), j)));
            }
        }
    }
    if let Some(x) = vol.get("persistentVolumeClaim") {
        if s(x, "claimName").unwrap_or_default().is_empty() {
            out.push(FieldError::required(p(
                &p(path, "persistentVolumeClaim"),
                "claimName",
            )));
        }
    }
    if let Some(x) = vol.get("downwardAPI") {
        let xp = p(path, "downwardAPI");
        out.extend(validate_mode(x, "defaultMode", &xp));
        for (j, item) in arr(x, "items").iter().enumerate() {
            let ip = ix(&p(&xp, "items"), j);
            match s(item, "path").unwrap_or_default() {
                "" => out.push(FieldError::required(p(&ip, "path"))),
                x => out.extend(local_non_reserved_path(x, &p(&ip, "path"))),
            }
            out.extend(validate_mode(item, "mode", &ip));
        }
    }
    if let Some(x) = vol.get("projected") {
        let xp = p(path, "projected");
        out.extend(validate_mode(x, "defaultMode", &xp));
        for (j, source) in arr(x, "sources").iter().enumerate() {
            let sp = ix(&p(&xp, "sources"), j);
            for kind in ["secret", "configMap"] {
                for (k, item) in source
                    .get(kind)
                    .map(|v| arr(v, "items"))
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    out.extend(validate_key_to_path(
                        item,
                        &ix(&p(&p(&sp, kind), "items"), k),
                    ));
                }
            }
        }
    }
    if let Some(x) = vol.get("nfs") {
        let xp = p(path, "nfs");
        if s(x, "server").unwrap_or_default().is_empty() {
            out.push(FieldError::required(p(&xp, "server")));
        }
        match s(x, "path").unwrap_or_default() {
            "" => out.push(FieldError::required(p(&xp, "path"))),
            v if !v.starts_with('/') => out.push(FieldError::invalid(
                p(&xp, "path"),
                &sv(v),
                "must be an absolute path",
            )),
            _ => {}
        }
    }
    out
}

fn validate_mode(v: &Value, k: &str, path: &str) -> Option<FieldError> {
    let m = int(v, k)?;
    (!(0..=0o777).contains(&m))
        .then(|| FieldError::invalid(p(path, k), &Value::from(m), FILE_MODE_MSG))
}

/// `validateKeyToPath`: ConfigMap/Secret `items[]`.
fn validate_key_to_path(item: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if s(item, "key").unwrap_or_default().is_empty() {
        out.push(FieldError::required(p(path, "key")));
    }
    let target = s(item, "path").unwrap_or_default();
    if target.is_empty() {
        out.push(FieldError::required(p(path, "path")));
    }
    out.extend(local_non_reserved_path(target, &p(path, "path")));
    out.extend(validate_mode(item, "mode", path));
    out
}

fn no_backsteps(target: &str, path: &str) -> Option<FieldError> {
    target
        .split('/')
        .any(|part| part == "..")
        .then(|| FieldError::invalid(path, &sv(target), "must not contain '..'"))
}

/// `validateLocalDescendingPath`: relative, without `..` elements.
pub fn local_descending_path(target: &str, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if target.starts_with('/') {
        out.push(FieldError::invalid(
            path,
            &sv(target),
            "must be a relative path",
        ));
    }
    out.extend(no_backsteps(target, path));
    out
}

/// `ValidateLocalNonReservedPath`: descending, and not starting with `..`.
fn local_non_reserved_path(target: &str, path: &str) -> Vec<FieldError> {
    let mut out = local_descending_path(target, path);
    if target.starts_with("..") {
        out.push(FieldError::invalid(
            path,
            &sv(target),
            "must not start with '..'",
        ));
    }
    out
}

/// One container (regular or init); `names` collects names to detect duplicates.
fn validate_container(
    c: &Value,
    path: &str,
    volumes: &[String],
    names: &mut Vec<String>,
    init: bool,
) -> Vec<FieldError> {
    let mut out = Vec::new();
    let name = s(c, "name").unwrap_or_default();
    let np = p(path, "name");
    if name.is_empty() {
        out.push(FieldError::required(&np));
    } else {
        out.extend(invalid_each(&np, name, is_dns1123_label(name)));
    }
    if names.iter().any(|n| n == name) {
        out.push(FieldError::duplicate(&np, &sv(name)));
    } else {
        names.push(name.to_string());
    }
    let image = s(c, "image").unwrap_or_default();
    if image.is_empty() {
        out.push(FieldError::required(p(path, "image")));
    } else if image.trim() != image {
        out.push(FieldError::invalid(
            p(path, "image"),
            &sv(image),
            "must not have leading or trailing whitespace",
        ));
    }
    out.extend(validate_container_ports(arr(c, "ports"), &p(path, "ports")));
    out.extend(validate_env(arr(c, "env"), &p(path, "env")));
    out.extend(validate_volume_mounts(
        arr(c, "volumeMounts"),
        &p(path, "volumeMounts"),
        volumes,
    ));
    if let Some(r) = c.get("resources") {
        out.extend(validate_resources(r, &p(path, "resources")));
    }
    let sidecar = init && s(c, "restartPolicy") == Some("Always");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(pr) = c.get(probe).filter(|v| v.is_object()) else {
            continue;
        };
        let pp = p(path, probe);
        if init && !sidecar {
            out.push(FieldError::forbidden(
                &pp,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        out.extend(validate_probe(pr, &pp));
        if probe != "readinessProbe" {
            if let Some(st) = int(pr, "successThreshold").filter(|n| *n != 1) {
                out.push(FieldError::invalid(
                    p(&pp, "successThreshold"),
                    &Value::from(st),
                    "must be 1",
                ));
            }
        }
    }
    if let Some(lc) = c.get("lifecycle").filter(|v| !v.is_null()) {
        if init && !sidecar {
            out.push(FieldError::forbidden(
                p(path, "lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
        }
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get(hook) {
                out.extend(validate_handler(h, &p(&p(path, "lifecycle"), hook), true));
            }
        }
    }
    out.extend(validate_enum(
        c,
        "imagePullPolicy",
        path,
        &["Always", "IfNotPresent", "Never"],
    ));
    out.extend(validate_enum(
        c,
        "terminationMessagePolicy",
        path,
        &["File", "FallbackToLogsOnError"],
    ));
    if init {
        out.extend(validate_optional_enum(
            c,
            "restartPolicy",
            path,
            &["Always"],
        ));
    } else if c.get("restartPolicy").is_some_and(|v| !v.is_null()) {
        out.push(FieldError::forbidden(
            p(path, "restartPolicy"),
            "may not be set for non-init containers",
        ));
    }
    out
}

fn validate_container_ports(ports: &[Value], path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = ix(path, i);
        if let Some(name) = s(port, "name").filter(|n| !n.is_empty()) {
            out.extend(invalid_each(
                &p(&pp, "name"),
                name,
                is_valid_port_name(name),
            ));
            if names.contains(&name) {
                out.push(FieldError::duplicate(p(&pp, "name"), &sv(name)));
            } else {
                names.push(name);
            }
        }
        match port.get("containerPort") {
            None | Some(Value::Null) => out.push(FieldError::required(p(&pp, "containerPort"))),
            Some(v) if v.as_i64() == Some(0) => {
                out.push(FieldError::required(p(&pp, "containerPort")))
            }
            Some(v) => out.extend(port_number(v, &p(&pp, "containerPort"))),
        }
        if let Some(hp) = port
            .get("hostPort")
            .filter(|v| v.as_i64() != Some(0) && !v.is_null())
        {
            out.extend(port_number(hp, &p(&pp, "hostPort")));
        }
        out.extend(validate_enum(
            port,
            "protocol",
            &pp,
            &["SCTP", "TCP", "UDP"],
        ));
    }
    out
}

/// `IsValidPortNum`.
pub fn port_number(v: &Value, path: &str) -> Option<FieldError> {
    match v.as_i64() {
        Some(n) if (1..=65535).contains(&n) => None,
        _ => Some(FieldError::invalid(path, v, PORT_RANGE)),
    }
}

const ENV_NAME_MSG: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";

/// `IsEnvVarName` as relaxed by RelaxedEnvironmentVariableValidation (on by default).
fn env_name_errors(name: &str) -> Vec<String> {
    let ok = name.bytes().all(|c| (32..=126).contains(&c) && c != b'=');
    if ok {
        vec![]
    } else {
        vec![ENV_NAME_MSG.to_string()]
    }
}

fn validate_env(env: &[Value], path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, e) in env.iter().enumerate() {
        let ep = ix(path, i);
        match s(e, "name").unwrap_or_default() {
            "" => out.push(FieldError::required(p(&ep, "name"))),
            name => out.extend(invalid_each(&p(&ep, "name"), name, env_name_errors(name))),
        }
        if let Some(from) = e.get("valueFrom").filter(|v| !v.is_null()) {
            out.extend(validate_env_value_from(e, from, &p(&ep, "valueFrom")));
        }
    }
    out
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn validate_env_value_from(e: &Value, from: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let kinds = [
        "fieldRef",
        "resourceFieldRef",
        "configMapKeyRef",
        "secretKeyRef",
        "fileKeyRef",
    ];
    let n = kinds
        .iter()
        .filter(|k| from.get(**k).is_some_and(|v| !v.is_null()))
        .count();
    if n == 0 {
        out.push(FieldError::invalid(
            path,
            &sv(""),
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if !s(e, "value").unwrap_or_default().is_empty() {
        out.push(FieldError::invalid(
            path,
            &sv(""),
            "may not be specified when `value` is not empty",
        ));
    } else if n > 1 {
        out.push(FieldError::invalid(
            path,
            &sv(""),
            "may not have more than one field specified at a time",
        ));
    }
    for k in ["configMapKeyRef", "secretKeyRef"] {
        if let Some(r) = from.get(k).filter(|v| !v.is_null()) {
            let rp = p(path, k);
            if s(r, "name").unwrap_or_default().is_empty() {
                out.push(FieldError::required(p(&rp, "name")));
            }
            match s(r, "key").unwrap_or_default() {
                "" => out.push(FieldError::required(p(&rp, "key"))),
                x => out.extend(invalid_each(&p(&rp, "key"), x, is_config_map_key(x))),
            }
        }
    }
    if let Some(r) = from.get("fieldRef").filter(|v| !v.is_null()) {
        let fp = p(&p(path, "fieldRef"), "fieldPath");
        match s(r, "fieldPath").unwrap_or_default() {
            "" => out.push(FieldError::required(fp)),
            x if x.starts_with("metadata.labels[") || x.starts_with("metadata.annotations[") => {}
            x if x == "metadata.labels" || x == "metadata.annotations" => {
                out.push(FieldError::not_supported(fp, &sv(x), &ENV_FIELD_PATHS[2..]))
            }
            x if ENV_FIELD_PATHS.contains(&x) => {}
            x => out.push(FieldError::not_supported(fp, &sv(x), ENV_FIELD_PATHS)),
        }
    }
    if let Some(r) = from.get("resourceFieldRef").filter(|v| !v.is_null()) {
        if s(r, "resource").unwrap_or_default().is_empty() {
            out.push(FieldError::required(p(
                &p(path, "resourceFieldRef"),
                "resource",
            )));
        }
    }
    out
}

fn validate_volume_mounts(mounts: &[Value], path: &str, volumes: &[String]) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut mount_points: Vec<&str> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let mp = ix(path, i);
        let name = s(m, "name").unwrap_or_default();
        if name.is_empty() {
            out.push(FieldError::required(p(&mp, "name")));
        } else if !volumes.iter().any(|v| v == name) {
            out.push(not_found(p(&mp, "name"), &sv(name)));
        }
        let mount_path = s(m, "mountPath").unwrap_or_default();
        if mount_path.is_empty() {
            out.push(FieldError::required(p(&mp, "mountPath")));
        } else if mount_points.contains(&mount_path) {
            out.push(FieldError::invalid(
                p(&mp, "mountPath"),
                &sv(mount_path),
                "must be unique",
            ));
        } else {
            mount_points.push(mount_path);
        }
        let sub = s(m, "subPath").unwrap_or_default();
        if !sub.is_empty() {
            // Upstream reports subPath errors on the list path (no index).
            out.extend(local_descending_path(sub, &p(path, "subPath")));
            if !s(m, "subPathExpr").unwrap_or_default().is_empty() {
                out.push(FieldError::invalid(
                    p(&mp, "subPathExpr"),
                    &sv(s(m, "subPathExpr").unwrap_or_default()),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
        }
        out.extend(validate_optional_enum(
            m,
            "mountPropagation",
            &mp,
            &["Bidirectional", "HostToContainer", "None"],
        ));
    }
    out
}

/// A quantity that parses and is not negative (`ValidateResourceQuantityValue`).
pub fn validate_quantity(q: &Value, path: &str) -> Option<FieldError> {
    match quantity::parse(q) {
        None => Some(FieldError::invalid(path, q, quantity::QUANTITY_FORMAT_MSG)),
        Some(n) if n < 0.0 => Some(FieldError::invalid(path, &sv(&quantity::show(q)), NEGATIVE)),
        Some(_) => None,
    }
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// `ValidateResourceQuantityValue`: non-negative, and whole for extended resources.
fn validate_resource_quantity(name: &str, q: &Value, path: &str) -> Option<FieldError> {
    if let Some(e) = validate_quantity(q, path) {
        return Some(e);
    }
    let extended = name.contains('/') && !name.contains("kubernetes.io/");
    let whole = quantity::parse(q).is_some_and(|n| (n * 1000.0).round() % 1000.0 == 0.0);
    (extended && !whole).then(|| FieldError::invalid(path, q, "must be an integer"))
}

/// `IsOvercommitAllowed`: native resources other than hugepages may request less than limits.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

/// `validateContainerResourceName`.
fn validate_container_resource_name(name: &str, path: &str) -> Vec<FieldError> {
    let mut out = invalid_each(path, name, is_qualified_name(name));
    if !name.contains('/') && !is_standard_container_resource(name) {
        out.push(FieldError::invalid(
            path,
            &sv(name),
            "must be a standard resource for containers",
        ));
    }
    out
}

/// `ValidateResourceRequirements`: names, quantities and requests <= limits.
fn validate_resources(res: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = Map::new();
    let limits = obj(res, "limits").unwrap_or(&empty);
    let requests = obj(res, "requests").unwrap_or(&empty);
    let (lp, rp) = (p(path, "limits"), p(path, "requests"));
    for (name, q) in limits {
        let kp = key(&lp, name);
        out.extend(validate_container_resource_name(name, &kp));
        out.extend(validate_resource_quantity(name, q, &kp));
    }
    for (name, q) in requests {
        let kp = key(&rp, name);
        out.extend(validate_container_resource_name(name, &kp));
        out.extend(validate_resource_quantity(name, q, &kp));
        let Some(limit) = limits.get(name) else {
            if !overcommit_allowed(name) {
                out.push(FieldError::required_msg(
                    &lp,
                    "Limit must be set for non overcommitable resources",
                ));
            }
            continue;
        };
        if let (Some(r), Some(l)) = (quantity::parse(q), quantity::parse(limit)) {
            if r != l && !overcommit_allowed(name) {
                out.push(FieldError::invalid(
                    &rp,
                    &sv(&quantity::show(q)),
                    &format!("must be equal to {name} limit of {}", quantity::show(limit)),
                ));
            } else if r > l {
                out.push(FieldError::invalid(
                    &rp,
                    &sv(&quantity::show(q)),
                    &format!(
                        "must be less than or equal to {name} limit of {}",
                        quantity::show(limit)
                    ),
                ));
            }
        }
    }
    out
}

fn validate_probe(pr: &Value, path: &str) -> Vec<FieldError> {
    let mut out = validate_handler(pr, path, false);
    for k in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        out.extend(nonnegative(pr, k, path));
    }
    if let Some(t) = int(pr, "terminationGracePeriodSeconds").filter(|t| *t <= 0) {
        out.push(FieldError::invalid(
            p(path, "terminationGracePeriodSeconds"),
            &Value::from(t),
            "must be greater than 0",
        ));
    }
    out
}

/// Exactly one handler (exec, httpGet, tcpSocket, grpc; sleep for lifecycle hooks).
fn validate_handler(h: &Value, path: &str, lifecycle: bool) -> Vec<FieldError> {
    let mut out = Vec::new();
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let set: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| h.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match set.as_slice() {
        [] => out.push(FieldError::required_msg(
            path,
            "must specify a handler type",
        )),
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                out.push(FieldError::forbidden(
                    p(path, k),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
    if let Some(e) = h.get("exec").filter(|v| !v.is_null()) {
        if arr(e, "command").is_empty() {
            out.push(FieldError::required(p(&p(path, "exec"), "command")));
        }
    }
    if let Some(g) = h.get("httpGet").filter(|v| !v.is_null()) {
        let gp = p(path, "httpGet");
        if s(g, "path").unwrap_or_default().is_empty() {
            out.push(FieldError::required(p(&gp, "path")));
        }
        out.extend(port_num_or_name(
            g.get("port").unwrap_or(&sv("")),
            &p(&gp, "port"),
        ));
        out.extend(validate_optional_enum(g, "scheme", &gp, &["HTTP", "HTTPS"]));
    }
    if let Some(t) = h.get("tcpSocket").filter(|v| !v.is_null()) {
        let port = t.get("port").unwrap_or(&Value::Null);
        out.extend(port_num_or_name(port, &p(&p(path, "tcpSocket"), "port")));
    }
    if let Some(g) = h.get("grpc").filter(|v| !v.is_null()) {
        out.extend(port_number(
            g.get("port").unwrap_or(&Value::Null),
            &p(&p(path, "grpc"), "port"),
        ));
    }
    out
}

/// `validateTolerations`.
pub fn validate_tolerations(tolerations: &[Value], path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let tp = ix(path, i);
        let k = s(t, "key").unwrap_or_default();
        if !k.is_empty() {
            out.extend(invalid_each(&p(&tp, "key"), k, is_qualified_name(k)));
        }
        let op = s(t, "operator").unwrap_or_default();
        if k.is_empty() && op != "Exists" {
            out.push(FieldError::invalid(
                p(&tp, "operator"),
                &sv(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = s(t, "effect").unwrap_or_default();
        if t.get("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
            out.push(FieldError::invalid(
                p(&tp, "effect"),
                &sv(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        let value = s(t, "value").unwrap_or_default();
        match op {
            // Upstream reports bad values on `operator`, messages joined by ';'.
            "" | "Equal" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    out.push(FieldError::invalid(
                        p(&tp, "operator"),
                        &sv(value),
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => out.push(FieldError::invalid(
                p(&tp, "operator"),
                t,
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => out.push(FieldError::not_supported(
                p(&tp, "operator"),
                &sv(other),
                &["Equal", "Exists"],
            )),
        }
        out.extend(validate_optional_enum(
            t,
            "effect",
            &tp,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Updates
// ---------------------------------------------------------------------------------------------

pub const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate` (spec part): only the mutable fields may change.
pub fn validate_pod_update(pod: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let spec = pod.get("spec").unwrap_or(&empty);
    let old_spec = old.get("spec").unwrap_or(&empty);
    out.extend(validate_active_deadline_update(spec, old_spec));
    out.extend(validate_only_added_tolerations(spec, old_spec));

    let mut munged = spec.clone();
    for list in ["containers", "initContainers"] {
        let old_list = arr(old_spec, list);
        if let Some(cs) = munged.get_mut(list).and_then(Value::as_array_mut) {
            if cs.len() == old_list.len() {
                for (c, oc) in cs.iter_mut().zip(old_list) {
                    if let (Some(m), Some(img)) = (c.as_object_mut(), oc.get("image")) {
                        m.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    if let Some(m) = munged.as_object_mut() {
        for k in ["activeDeadlineSeconds", "tolerations"] {
            match old_spec.get(k) {
                Some(v) => m.insert(k.to_string(), v.clone()),
                None => m.remove(k),
            };
        }
        let old_grace = int(old_spec, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0) && int(spec, "terminationGracePeriodSeconds") == Some(1)
        {
            m.insert(
                "terminationGracePeriodSeconds".into(),
                Value::from(old_grace.unwrap_or_default()),
            );
        }
    }
    if &munged != old_spec {
        out.push(FieldError::forbidden("spec", POD_UPDATE_MSG));
    }
    out
}

fn validate_active_deadline_update(spec: &Value, old_spec: &Value) -> Option<FieldError> {
    let path = "spec.activeDeadlineSeconds";
    match (
        int(spec, "activeDeadlineSeconds"),
        int(old_spec, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => Some(FieldError::invalid(
            path,
            &Value::from(n),
            "must be between 0 and 2147483647, inclusive",
        )),
        (Some(n), Some(o)) if o < n => Some(FieldError::invalid(
            path,
            &Value::from(n),
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => Some(FieldError::invalid(
            path,
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => None,
    }
}

/// Every existing toleration must still be there (its tolerationSeconds may change).
fn validate_only_added_tolerations(spec: &Value, old_spec: &Value) -> Option<FieldError> {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    let new: Vec<Value> = arr(spec, "tolerations").iter().map(strip).collect();
    let all_kept = arr(old_spec, "tolerations")
        .iter()
        .all(|o| new.contains(&strip(o)));
    (!all_kept).then(|| {
        FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        )
    })
}

/// Pod status updates: identity is checked by the caller; nodeName may not change.
pub fn validate_pod_status_update(pod: &Value, old: &Value) -> Vec<FieldError> {
    let new = pod
        .pointer("/spec/nodeName")
        .filter(|v| v.as_str() != Some(""));
    let prev = old
        .pointer("/spec/nodeName")
        .filter(|v| v.as_str() != Some(""));
    immutable(new, prev, "spec.nodeName").into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": spec})
    }

    fn defaulted(spec: Value) -> Value {
        let mut p = pod(spec);
        default_pod(&mut p);
        p
    }

    fn errors(spec: Value) -> Vec<(String, String)> {
        validate_pod(&defaulted(spec))
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn pull_policy() {
        for (img, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(img), want, "{img}");
        }
    }

    #[test]
    fn pod_defaults() {
        let p = defaulted(json!({"containers": [{"name": "c", "image": "nginx",
            "ports": [{"containerPort": 80}],
            "resources": {"limits": {"cpu": "1"}},
            "livenessProbe": {"httpGet": {"port": 80}}}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}));
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
        let tol = arr(spec, "tolerations");
        assert_eq!(tol.len(), 2);
        assert_eq!(
            tol[0],
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300})
        );
        assert!(validate_pod(&p).is_empty(), "{:?}", validate_pod(&p));
        // Idempotent.
        let mut again = p.clone();
        default_pod(&mut again);
        assert_eq!(again, p);
    }

    #[test]
    fn builtin_priority_classes() {
        let p = defaulted(json!({"priorityClassName": "system-node-critical",
            "containers": [{"name": "c", "image": "x"}]}));
        assert_eq!(p["spec"]["priority"], 2_000_001_000);
        let p = defaulted(json!({"priorityClassName": "custom",
            "containers": [{"name": "c", "image": "x"}]}));
        assert!(p["spec"].get("priority").is_none());
    }

    #[test]
    fn defaults_keep_user_values() {
        let p = defaulted(json!({"restartPolicy": "Never", "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 5, "enableServiceLinks": false,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never",
                "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}}]}));
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "Default");
        assert_eq!(spec["terminationGracePeriodSeconds"], 5);
        assert_eq!(spec["enableServiceLinks"], false);
        assert_eq!(arr(spec, "tolerations").len(), 1);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(spec["containers"][0]["resources"]["requests"]["cpu"], "1");
    }

    #[test]
    fn pod_spec_rules() {
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "nginx"});
            if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            c
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"containers": []}), "spec.containers", "Required value"),
            (json!({"containers": [{"name": "c"}]}), "spec.containers[0].image", "Required value"),
            (json!({"containers": [c(json!({"name": "Web"}))]}), "spec.containers[0].name",
                "Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            (json!({"containers": [c(json!({})), c(json!({}))]}), "spec.containers[1].name", "Duplicate value: \"c\""),
            (json!({"containers": [c(json!({"ports": [{"containerPort": 70000}]}))]}),
                "spec.containers[0].ports[0].containerPort", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
            (json!({"containers": [c(json!({"ports": [{"containerPort": 80, "protocol": "HTTP"}]}))]}),
                "spec.containers[0].ports[0].protocol", "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            (json!({"containers": [c(json!({"env": [{"name": "A=B"}]}))]}),
                "spec.containers[0].env[0].name", "Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"),
            (json!({"containers": [c(json!({"volumeMounts": [{"name": "missing", "mountPath": "/x"}]}))]}),
                "spec.containers[0].volumeMounts[0].name", "Not found: \"missing\""),
            (json!({"volumes": [{"name": "v"}], "containers": [c(json!({"volumeMounts": [{"name": "v"}]}))]}),
                "spec.containers[0].volumeMounts[0].mountPath", "Required value"),
            (json!({"volumes": [{"name": "v"}], "containers": [c(json!({"volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "a/../b"}]}))]}),
                "spec.containers[0].volumeMounts.subPath", "Invalid value: \"a/../b\": must not contain '..'"),
            (json!({"volumes": [{"name": "v"}], "containers": [c(json!({"volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "/abs"}]}))]}),
                "spec.containers[0].volumeMounts.subPath", "Invalid value: \"/abs\": must be a relative path"),
            (json!({"volumes": [{"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": "a/../x"}]}}], "containers": [c(json!({}))]}),
                "spec.volumes[0].configMap.items[0].path", "Invalid value: \"a/../x\": must not contain '..'"),
            (json!({"volumes": [{"name": "v", "secret": {"secretName": "s", "items": [{"key": "k", "path": "/etc/x"}]}}], "containers": [c(json!({}))]}),
                "spec.volumes[0].secret.items[0].path", "Invalid value: \"/etc/x\": must be a relative path"),
            (json!({"volumes": [{"name": "v"}, {"name": "v"}], "containers": [c(json!({}))]}),
                "spec.volumes[1].name", "Duplicate value: \"v\""),
            (json!({"volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}], "containers": [c(json!({}))]}),
                "spec.volumes[0].hostPath", "Forbidden: may not specify more than 1 volume type"),
            (json!({"volumes": [{"name": "v", "secret": {}}], "containers": [c(json!({}))]}),
                "spec.volumes[0].secret.secretName", "Required value"),
            (json!({"restartPolicy": "Sometimes", "containers": [c(json!({}))]}),
                "spec.restartPolicy", "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""),
            (json!({"dnsPolicy": "Bogus", "containers": [c(json!({}))]}),
                "spec.dnsPolicy", "Unsupported value: \"Bogus\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""),
            (json!({"containers": [c(json!({"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}}))]}),
                "spec.containers[0].resources.requests", "Invalid value: \"2\": must be less than or equal to cpu limit of 1"),
            (json!({"containers": [c(json!({"resources": {"requests": {"memory": "lots"}}}))]}),
                "spec.containers[0].resources.requests[memory]", "Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
            (json!({"containers": [c(json!({"resources": {"limits": {"example.com/gpu": "2"}, "requests": {"example.com/gpu": "1"}}}))]}),
                "spec.containers[0].resources.requests", "Invalid value: \"1\": must be equal to example.com/gpu limit of 2"),
            (json!({"containers": [c(json!({"resources": {"requests": {"gpu": "1"}}}))]}),
                "spec.containers[0].resources.requests[gpu]", "Invalid value: \"gpu\": must be a standard resource for containers"),
            (json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "a b"}], "containers": [c(json!({}))]}),
                "spec.tolerations[0].operator", "Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            (json!({"tolerations": [{"key": "k", "operator": "Maybe"}], "containers": [c(json!({}))]}),
                "spec.tolerations[0].operator", "Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\""),
            (json!({"tolerations": [{"key": "k", "operator": "Exists", "effect": "Never"}], "containers": [c(json!({}))]}),
                "spec.tolerations[0].effect", "Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""),
            (json!({"nodeSelector": {"bad key!": "x"}, "containers": [c(json!({}))]}),
                "spec.nodeSelector", "Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
            (json!({"dnsPolicy": "None", "containers": [c(json!({}))]}),
                "spec.dnsConfig", "Required value: must provide `dnsConfig` when `dnsPolicy` is None"),
            (json!({"hostNetwork": true, "containers": [c(json!({"ports": [{"containerPort": 80, "hostPort": 81}]}))]}),
                "spec.containers[0].ports[0].hostPort", "Invalid value: 81: must match `containerPort` when `hostNetwork` is true"),
            (json!({"preemptionPolicy": "Always", "containers": [c(json!({}))]}),
                "spec.preemptionPolicy", "Unsupported value: \"Always\": supported values: \"PreemptLowerPriority\", \"Never\""),
            (json!({"activeDeadlineSeconds": 0, "containers": [c(json!({}))]}),
                "spec.activeDeadlineSeconds", "Invalid value: 0: must be between 1 and 2147483647, inclusive"),
            (json!({"terminationGracePeriodSeconds": -1, "containers": [c(json!({}))]}),
                "spec.terminationGracePeriodSeconds", "Invalid value: -1: must be greater than or equal to 0"),
            (json!({"containers": [c(json!({"livenessProbe": {"periodSeconds": 5}}))]}),
                "spec.containers[0].livenessProbe", "Required value: must specify a handler type"),
            (json!({"containers": [c(json!({"livenessProbe": {"exec": {"command": ["x"]}, "successThreshold": 2}}))]}),
                "spec.containers[0].livenessProbe.successThreshold", "Invalid value: 2: must be 1"),
            (json!({"containers": [c(json!({"readinessProbe": {"httpGet": {"port": 0}}}))]}),
                "spec.containers[0].readinessProbe.httpGet.port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ];
        for (spec, field, msg) in cases {
            let errs = errors(spec.clone());
            assert_eq!(errs, vec![(field.to_string(), msg.to_string())], "{spec}");
        }
    }

    #[test]
    fn pod_updates() {
        let old = defaulted(json!({"containers": [{"name": "c", "image": "nginx:1"}]}));
        assert!(validate_pod_update(&old, &old).is_empty());
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(60);
        let mut tol = arr(&new["spec"], "tolerations").to_vec();
        tol.push(json!({"key": "k", "operator": "Exists"}));
        new["spec"]["tolerations"] = Value::Array(tol);
        assert!(
            validate_pod_update(&new, &old).is_empty(),
            "{:?}",
            validate_pod_update(&new, &old)
        );

        let mut new = old.clone();
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        let errs = validate_pod_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        assert_eq!(errs[0].message, format!("Forbidden: {POD_UPDATE_MSG}"));

        let mut new = old.clone();
        new["spec"]["tolerations"] = json!([]);
        let errs = validate_pod_update(&new, &old);
        assert_eq!(errs[0].field, "spec.tolerations");

        let mut with_deadline = old.clone();
        with_deadline["spec"]["activeDeadlineSeconds"] = json!(30);
        let mut longer = with_deadline.clone();
        longer["spec"]["activeDeadlineSeconds"] = json!(60);
        let errs = validate_pod_update(&longer, &with_deadline);
        assert_eq!(
            errs[0].display(),
            "spec.activeDeadlineSeconds: Invalid value: 60: must be less than or equal to previous value"
        );
    }

    #[test]
    fn templates_get_spec_defaults_only() {
        let mut t = json!({"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        default_pod_template(&mut t);
        assert!(t["spec"].get("enableServiceLinks").is_none());
        assert!(t["spec"].get("tolerations").is_none());
        assert_eq!(
            t["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(validate_pod_template(&t, "spec.template").is_empty());
    }
}
