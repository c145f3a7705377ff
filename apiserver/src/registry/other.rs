//! Leases, EndpointSlices, HorizontalPodAutoscalers (autoscaling/v2 storage) and StorageClasses.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::meta::{
    arr, child_mut, default_field, default_str, immutable, int, invalid_each, is_dns1123_label,
    is_dns1123_subdomain, is_qualified_name, ix, p, s, sv, NEGATIVE,
};
use super::pod::{port_number, validate_enum};
use super::quantity;
use crate::errors::FieldError;

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

/// `ValidateLeaseSpec`.
pub fn validate_lease(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    if let Some(d) = int(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        out.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &Value::from(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = int(spec, "leaseTransitions").filter(|t| *t < 0) {
        out.push(FieldError::invalid(
            "spec.leaseTransitions",
            &Value::from(t),
            NEGATIVE,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// EndpointSlices
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_EndpointPort` (discovery/v1): name "" and protocol TCP.
pub fn default_endpoint_slice(o: &mut Value) {
    if let Some(ports) = o.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default_field(port, "name", json!(""));
            default_field(port, "protocol", json!("TCP"));
        }
    }
}

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

fn address_errors(address_type: &str, address: &str) -> Vec<String> {
    match address_type {
        "IPv4" => match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => vec![],
            _ => vec!["must be a valid IPv4 address".to_string()],
        },
        "IPv6" => match address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => vec![],
            _ => vec!["must be a valid IPv6 address".to_string()],
        },
        "FQDN" => {
            let name = address.strip_suffix('.').unwrap_or(address);
            if name.contains('.') {
                is_dns1123_subdomain(name)
            } else {
                vec!["should be a domain with at least two segments separated by dots".to_string()]
            }
        }
        _ => vec![],
    }
}

/// `ValidateEndpointSlice` (everything but metadata).
pub fn validate_endpoint_slice(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let address_type = s(o, "addressType").unwrap_or_default();
    if address_type.is_empty() {
        out.push(FieldError::required("addressType"));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        out.push(FieldError::not_supported(
            "addressType",
            &sv(address_type),
            ADDRESS_TYPES,
        ));
    }
    for (i, e) in arr(o, "endpoints").iter().enumerate() {
        let ep = ix("endpoints", i);
        let ap = p(&ep, "addresses");
        let addresses = arr(e, "addresses");
        if addresses.is_empty() {
            out.push(FieldError::required_msg(
                &ap,
                "must contain at least 1 address",
            ));
        } else if addresses.len() > 100 {
            out.push(FieldError {
                reason: "FieldValueTooMany",
                field: ap.clone(),
                message: format!("Too many: {}: must have at most 100 items", addresses.len()),
            });
        }
        for (j, a) in addresses.iter().enumerate() {
            let addr = a.as_str().unwrap_or_default();
            out.extend(invalid_each(
                &ix(&ap, j),
                addr,
                address_errors(address_type, addr),
            ));
        }
        if let Some(n) = s(e, "nodeName").filter(|n| !n.is_empty()) {
            out.extend(invalid_each(
                &p(&ep, "nodeName"),
                n,
                is_dns1123_subdomain(n),
            ));
        }
        if let Some(h) = s(e, "hostname").filter(|h| !h.is_empty()) {
            out.extend(invalid_each(&p(&ep, "hostname"), h, is_dns1123_label(h)));
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in arr(o, "ports").iter().enumerate() {
        let pp = ix("ports", i);
        let name = s(port, "name").unwrap_or_default();
        if !name.is_empty() {
            out.extend(invalid_each(&p(&pp, "name"), name, is_dns1123_label(name)));
        }
        if names.contains(&name) {
            out.push(FieldError::duplicate(p(&pp, "name"), &sv(name)));
        } else {
            names.push(name);
        }
        out.extend(validate_enum(
            port,
            "protocol",
            &pp,
            &["SCTP", "TCP", "UDP"],
        ));
        if let Some(n) = port.get("port").filter(|v| !v.is_null()) {
            out.extend(port_number(n, &p(&pp, "port")));
        }
    }
    out
}

pub fn validate_endpoint_slice_update(o: &Value, old: &Value) -> Vec<FieldError> {
    immutable(o.get("addressType"), old.get("addressType"), "addressType")
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscalers (autoscaling/v2)
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_HorizontalPodAutoscaler` (v2): minReplicas 1, 80% CPU, behavior rules.
pub fn default_hpa(o: &mut Value) {
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    default_field(spec, "minReplicas", json!(1));
    if arr(spec, "metrics").is_empty() {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    let Some(behavior) = spec.get_mut("behavior").filter(|b| b.is_object()) else {
        return;
    };
    if let Some(up) = child_mut(behavior, "scaleUp") {
        default_field(up, "stabilizationWindowSeconds", json!(0));
        default_field(up, "selectPolicy", json!("Max"));
        default_field(
            up,
            "policies",
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
    if let Some(down) = child_mut(behavior, "scaleDown") {
        default_field(down, "selectPolicy", json!("Max"));
        default_field(
            down,
            "policies",
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

/// `IsValidPathSegmentName`.
fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// `ValidateCrossVersionObjectReference`.
fn validate_object_ref(r: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    for k in ["kind", "name"] {
        match s(r, k).unwrap_or_default() {
            "" => out.push(FieldError::required(p(path, k))),
            v => out.extend(invalid_each(&p(path, k), v, path_segment_errors(v))),
        }
    }
    out
}

/// `validateHorizontalPodAutoscalerSpec`.
pub fn validate_hpa(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let min = int(spec, "minReplicas");
    let max = int(spec, "maxReplicas").unwrap_or(0);
    if let Some(m) = min.filter(|m| *m < 1) {
        out.push(FieldError::invalid(
            "spec.minReplicas",
            &Value::from(m),
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        out.push(FieldError::invalid(
            "spec.maxReplicas",
            &Value::from(max),
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        out.push(FieldError::invalid(
            "spec.maxReplicas",
            &Value::from(max),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    out.extend(validate_object_ref(
        spec.get("scaleTargetRef").unwrap_or(&empty),
        "spec.scaleTargetRef",
    ));
    for (i, m) in arr(spec, "metrics").iter().enumerate() {
        out.extend(validate_metric(m, &ix("spec.metrics", i)));
    }
    if let Some(b) = spec.get("behavior").filter(|b| b.is_object()) {
        for rules in ["scaleUp", "scaleDown"] {
            if let Some(r) = b.get(rules).filter(|r| r.is_object()) {
                out.extend(validate_scaling_rules(r, &format!("spec.behavior.{rules}")));
            }
        }
    }
    out
}

/// `ValidateHorizontalPodAutoscalerStatusUpdate`.
pub fn validate_hpa_status(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let status = o.get("status").unwrap_or(&empty);
    ["currentReplicas", "desiredReplicas"]
        .iter()
        .filter_map(|k| {
            let n = int(status, k)?;
            (n < 0).then(|| FieldError::invalid(format!("status.{k}"), &Value::from(n), NEGATIVE))
        })
        .collect()
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

fn validate_metric(m: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let t = s(m, "type").unwrap_or_default();
    if t.is_empty() {
        out.push(FieldError::required_msg(
            p(path, "type"),
            "must specify a metric source type",
        ));
    }
    let expected = match t {
        "Object" => "object",
        "Pods" => "pods",
        "Resource" => "resource",
        "External" => "external",
        "ContainerResource" => "containerResource",
        _ => {
            out.push(FieldError::not_supported(
                p(path, "type"),
                &sv(t),
                METRIC_TYPES,
            ));
            ""
        }
    };
    let present: Vec<&str> = [
        "object",
        "external",
        "pods",
        "resource",
        "containerResource",
    ]
    .into_iter()
    .filter(|k| m.get(*k).is_some_and(|v| !v.is_null()))
    .collect();
    if let Some(first) = present.first() {
        let src = &m[*first];
        let sp = p(path, first);
        out.extend(validate_metric_source(first, src, &sp));
    }
    if !expected.is_empty() && !present.contains(&expected) {
        out.push(FieldError::required_msg(
            p(path, expected),
            "must populate information for the given metric source",
        ));
    }
    if present.len() > 1 {
        for k in present.iter().filter(|k| **k != expected) {
            out.push(FieldError::forbidden(
                p(path, k),
                "must populate the given metric source only",
            ));
        }
    }
    out
}

fn validate_metric_source(kind: &str, src: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let target = src.get("target").unwrap_or(&empty);
    let tp = p(path, "target");
    if kind == "object" {
        out.extend(validate_object_ref(
            src.get("describedObject").unwrap_or(&empty),
            &p(path, "describedObject"),
        ));
    }
    if matches!(kind, "object" | "external" | "pods") {
        let mp = p(&p(path, "metric"), "name");
        match src
            .pointer("/metric/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "" => out.push(FieldError::required_msg(mp, "must specify a metric name")),
            n => out.extend(invalid_each(&mp, n, path_segment_errors(n))),
        }
    }
    if matches!(kind, "resource" | "containerResource")
        && s(src, "name").unwrap_or_default().is_empty()
    {
        out.push(FieldError::required_msg(
            p(path, "name"),
            "must specify a resource name",
        ));
    }
    if kind == "containerResource" {
        match s(src, "container").unwrap_or_default() {
            "" => out.push(FieldError::required_msg(
                p(path, "container"),
                "must specify a container",
            )),
            c => out.extend(invalid_each(&p(path, "container"), c, is_dns1123_label(c))),
        }
    }
    out.extend(validate_metric_target(target, &tp));
    let has = |k: &str| target.get(k).is_some_and(|v| !v.is_null());
    match kind {
        "resource" | "containerResource" => {
            if !has("averageUtilization") && !has("averageValue") {
                out.push(FieldError::required_msg(
                    p(&tp, "averageUtilization"),
                    "must set either a target raw value or a target utilization",
                ));
            }
            if has("averageUtilization") && has("averageValue") {
                out.push(FieldError::forbidden(
                    p(&tp, "averageValue"),
                    "may not set both a target raw value and a target utilization",
                ));
            }
        }
        "pods" if !has("averageValue") => out.push(FieldError::required_msg(
            p(&tp, "averageValue"),
            "must specify a positive target averageValue",
        )),
        "object" if !has("value") && !has("averageValue") => out.push(FieldError::required_msg(
            p(&tp, "averageValue"),
            "must set either a target value or averageValue",
        )),
        "external" if !has("value") && !has("averageValue") => out.push(FieldError::required_msg(
            p(&tp, "averageValue"),
            "must set either a target value for metric or a per-pod target",
        )),
        _ => {}
    }
    out
}

/// `validateMetricTarget`.
fn validate_metric_target(t: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let ty = s(t, "type").unwrap_or_default();
    if ty.is_empty() {
        out.push(FieldError::required_msg(
            p(path, "type"),
            "must specify a metric target type",
        ));
    }
    if !matches!(ty, "Utilization" | "Value" | "AverageValue") {
        out.push(FieldError::invalid(
            p(path, "type"),
            &sv(ty),
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for k in ["value", "averageValue"] {
        if let Some(q) = t.get(k).filter(|v| !v.is_null()) {
            if quantity::parse(q).is_none_or(|n| n <= 0.0) {
                out.push(FieldError::invalid(
                    p(path, k),
                    &sv(&quantity::show(q)),
                    "must be positive",
                ));
            }
        }
    }
    if let Some(u) = int(t, "averageUtilization").filter(|u| *u < 1) {
        out.push(FieldError::invalid(
            p(path, "averageUtilization"),
            &Value::from(u),
            "must be greater than 0",
        ));
    }
    out
}

/// `validateScalingRules` of `spec.behavior`.
fn validate_scaling_rules(r: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(w) = int(r, "stabilizationWindowSeconds") {
        let msg = if w < 0 {
            Some("must be greater than or equal to zero")
        } else if w > 3600 {
            Some("must be less than or equal to 3600")
        } else {
            None
        };
        if let Some(msg) = msg {
            out.push(FieldError::invalid(
                p(path, "stabilizationWindowSeconds"),
                &Value::from(w),
                msg,
            ));
        }
    }
    if let Some(sp) = s(r, "selectPolicy").filter(|x| !matches!(*x, "Disabled" | "Max" | "Min")) {
        out.push(FieldError::not_supported(
            p(path, "selectPolicy"),
            &sv(sp),
            &["Disabled", "Max", "Min"],
        ));
    }
    let pp = p(path, "policies");
    let policies = arr(r, "policies");
    if policies.is_empty() {
        out.push(FieldError::required_msg(
            &pp,
            "must specify at least one Policy",
        ));
    }
    for (i, pol) in policies.iter().enumerate() {
        let ip = ix(&pp, i);
        let ty = s(pol, "type").unwrap_or_default();
        if ty != "Pods" && ty != "Percent" {
            out.push(FieldError::not_supported(
                p(&ip, "type"),
                &sv(ty),
                &["Percent", "Pods"],
            ));
        }
        let value = int(pol, "value").unwrap_or(0);
        if value <= 0 {
            out.push(FieldError::invalid(
                p(&ip, "value"),
                &Value::from(value),
                "must be greater than zero",
            ));
        }
        let period = int(pol, "periodSeconds").unwrap_or(0);
        if period <= 0 {
            out.push(FieldError::invalid(
                p(&ip, "periodSeconds"),
                &Value::from(period),
                "must be greater than zero",
            ));
        } else if period > 1800 {
            out.push(FieldError::invalid(
                p(&ip, "periodSeconds"),
                &Value::from(period),
                "must be less than or equal to 1800",
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// StorageClasses
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_StorageClass`: reclaimPolicy Delete, volumeBindingMode Immediate.
pub fn default_storage_class(o: &mut Value) {
    default_str(o, "reclaimPolicy", "Delete");
    default_str(o, "volumeBindingMode", "Immediate");
}

/// `ValidateStorageClass`.
pub fn validate_storage_class(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    match s(o, "provisioner").unwrap_or_default() {
        "" => out.push(FieldError::required("provisioner")),
        prov => out.extend(invalid_each(
            "provisioner",
            prov,
            is_qualified_name(&prov.to_lowercase()),
        )),
    }
    if let Some(rp) = s(o, "reclaimPolicy").filter(|r| !r.is_empty()) {
        if rp != "Delete" && rp != "Retain" {
            out.push(FieldError::not_supported(
                "reclaimPolicy",
                &sv(rp),
                &["Delete", "Retain"],
            ));
        }
    }
    match s(o, "volumeBindingMode") {
        None => out.push(FieldError::required("volumeBindingMode")),
        Some("Immediate" | "WaitForFirstConsumer") => {}
        Some(m) => out.push(FieldError::not_supported(
            "volumeBindingMode",
            &sv(m),
            &["Immediate", "WaitForFirstConsumer"],
        )),
    }
    out
}

/// `ValidateStorageClassUpdate`: parameters, provisioner, reclaim and binding modes are fixed.
pub fn validate_storage_class_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let params = |v: &Value| {
        v.get("parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    if params(o) != params(old) {
        out.push(FieldError::forbidden(
            "parameters",
            "updates to parameters are forbidden.",
        ));
    }
    if s(o, "provisioner") != s(old, "provisioner") {
        out.push(FieldError::forbidden(
            "provisioner",
            "updates to provisioner are forbidden.",
        ));
    }
    if s(o, "reclaimPolicy") != s(old, "reclaimPolicy") {
        out.push(FieldError::forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    out.extend(immutable(
        o.get("volumeBindingMode"),
        old.get("volumeBindingMode"),
        "volumeBindingMode",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases() {
        assert!(validate_lease(
            &json!({"spec": {"leaseDurationSeconds": 15, "leaseTransitions": 0}})
        )
        .is_empty());
        let errs: Vec<String> =
            validate_lease(&json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}}))
                .iter()
                .map(FieldError::display)
                .collect();
        assert_eq!(
            errs,
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    #[test]
    fn endpoint_slices() {
        let mut es = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]});
        default_endpoint_slice(&mut es);
        assert_eq!(
            es["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        assert!(validate_endpoint_slice(&es).is_empty());
        let cases = [
            (json!({"addressType": "IPv5"}), "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
            (json!({"addressType": "IPv4", "endpoints": [{"addresses": []}]}), "endpoints[0].addresses: Required value: must contain at least 1 address"),
            (json!({"addressType": "IPv4", "endpoints": [{"addresses": ["::1"]}]}), "endpoints[0].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address"),
            (json!({"addressType": "IPv4", "ports": [{"name": "", "protocol": "TCP", "port": 0}]}), "ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        ];
        for (o, want) in cases {
            let errs: Vec<String> = validate_endpoint_slice(&o)
                .iter()
                .map(FieldError::display)
                .collect();
            assert_eq!(errs, vec![want.to_string()]);
        }
        let mut changed = es.clone();
        changed["addressType"] = json!("IPv6");
        assert_eq!(
            validate_endpoint_slice_update(&changed, &es)[0].display(),
            "addressType: Invalid value: \"IPv6\": field is immutable"
        );
    }

    fn hpa(spec: Value) -> Value {
        let mut o = json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}});
        if let (Some(m), Some(e)) = (o["spec"].as_object_mut(), spec.as_object()) {
            m.extend(e.clone());
        }
        default_hpa(&mut o);
        o
    }

    #[test]
    fn hpa_defaults() {
        let o = hpa(json!({}));
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(o["spec"].get("behavior").is_none());
        assert!(validate_hpa(&o).is_empty());
        let o = hpa(
            json!({"minReplicas": 2, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}),
        );
        assert_eq!(o["spec"]["minReplicas"], 2);
        let b = &o["spec"]["behavior"];
        assert_eq!(b["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(b["scaleDown"]["policies"][0]["type"], "Percent");
        assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(b["scaleUp"]["policies"].as_array().map(Vec::len), Some(2));
        assert!(validate_hpa(&o).is_empty(), "{:?}", validate_hpa(&o));
    }

    #[test]
    fn hpa_rules() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"minReplicas": 3, "maxReplicas": 2}), "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"),
            (json!({"minReplicas": 0}), "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1"),
            (json!({"scaleTargetRef": {"kind": "Deployment"}}), "spec.scaleTargetRef.name: Required value"),
            (json!({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}]}),
                "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0"),
            (json!({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]}),
                "spec.metrics[0].resource.target.averageUtilization: Required value: must set either a target raw value or a target utilization"),
            (json!({"metrics": [{"type": "Pods"}]}), "spec.metrics[0].pods: Required value: must populate information for the given metric source"),
            (json!({"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}}}),
                "spec.behavior.scaleUp.policies[0].value: Invalid value: 0: must be greater than zero"),
        ];
        for (spec, want) in cases {
            let errs: Vec<String> = validate_hpa(&hpa(spec.clone()))
                .iter()
                .map(FieldError::display)
                .collect();
            assert_eq!(errs, vec![want.to_string()], "{spec}");
        }
    }

    #[test]
    fn storage_classes() {
        let mut sc = json!({"provisioner": "example.com/disk", "parameters": {"type": "ssd"}});
        default_storage_class(&mut sc);
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
        assert!(validate_storage_class(&sc).is_empty());
        let mut bad = sc.clone();
        bad["reclaimPolicy"] = json!("Recycle");
        assert_eq!(validate_storage_class(&bad)[0].field, "reclaimPolicy");
        let mut changed = sc.clone();
        changed["parameters"] = json!({"type": "hdd"});
        assert_eq!(
            validate_storage_class_update(&changed, &sc)[0].display(),
            "parameters: Forbidden: updates to parameters are forbidden."
        );
    }
}
