//! Services: `SetDefaults_Service`, the registry's IP-family defaults and `ValidateService`.
//! (ClusterIP and NodePort allocation belong to the service REST layer, not here.)

use std::net::IpAddr;

use serde_json::{json, Value};

use super::meta::{
    arr, child_mut, default_field, default_str, int, invalid_each, is_dns1123_label,
    is_dns1123_subdomain, ix, p, port_num_or_name, s, sv, validate_labels,
};
use super::pod::{port_number, validate_enum, validate_optional_enum};
use crate::errors::FieldError;

pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

fn svc_type(spec: &Value) -> &str {
    s(spec, "type")
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP")
}

fn is_headless(spec: &Value) -> bool {
    s(spec, "clusterIP") == Some("None")
}

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_Service` plus the single-stack IPv4 families the registry fills in.
pub fn default_service(o: &mut Value) {
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    if s(spec, "sessionAffinity") == Some("ClientIP") {
        if let Some(cfg) =
            child_mut(spec, "sessionAffinityConfig").and_then(|c| child_mut(c, "clientIP"))
        {
            default_field(cfg, "timeoutSeconds", json!(10800));
        }
    }
    default_str(spec, "type", "ClusterIP");
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            default_str(port, "protocol", "TCP");
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(x)) => x.is_empty(),
                _ => false,
            };
            if unset {
                if let Some(pn) = port.get("port").cloned() {
                    port["targetPort"] = pn;
                }
            }
        }
    }
    let t = svc_type(spec).to_string();
    if t == "NodePort" || t == "LoadBalancer" {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if t == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if t != "ExternalName" {
        default_str(spec, "internalTrafficPolicy", "Cluster");
        default_str(spec, "ipFamilyPolicy", "SingleStack");
        let families_unset = arr(spec, "ipFamilies").is_empty();
        if families_unset {
            let family = match s(spec, "clusterIP").and_then(|ip| ip.parse::<IpAddr>().ok()) {
                Some(IpAddr::V6(_)) => "IPv6",
                _ => "IPv4",
            };
            spec["ipFamilies"] = json!([family]);
        }
        if let Some(ip) = s(spec, "clusterIP").filter(|ip| !ip.is_empty()) {
            if arr(spec, "clusterIPs").is_empty() {
                spec["clusterIPs"] = json!([ip]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// `ValidateService` (spec part).
pub fn validate_service(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let t = s(spec, "type").unwrap_or_default();
    let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if t.is_empty() {
        out.push(FieldError::required("spec.type"));
    } else if !types.contains(&t) {
        out.push(FieldError::not_supported("spec.type", &sv(t), &types));
    }
    let ports = arr(spec, "ports");
    if ports.is_empty() && !is_headless(spec) && t != "ExternalName" {
        out.push(FieldError::required("spec.ports"));
    }
    if t == "ExternalName" {
        match s(spec, "externalName").unwrap_or_default() {
            "" => out.push(FieldError::required("spec.externalName")),
            name => {
                let trimmed = name.strip_suffix('.').unwrap_or(name);
                out.extend(invalid_each(
                    "spec.externalName",
                    name,
                    is_dns1123_subdomain(trimmed),
                ));
            }
        }
    }
    out.extend(validate_ports(spec, ports));
    out.extend(validate_cluster_ips(spec));
    out.extend(validate_labels(spec.get("selector"), "spec.selector"));
    out.extend(validate_enum(
        spec,
        "sessionAffinity",
        "spec",
        &["ClientIP", "None"],
    ));
    if s(spec, "sessionAffinity") == Some("None")
        && spec
            .get("sessionAffinityConfig")
            .is_some_and(|v| !v.is_null())
    {
        out.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        ));
    }
    if s(spec, "sessionAffinity") == Some("ClientIP") {
        if let Some(ts) = spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .and_then(Value::as_i64)
        {
            if !(1..=86400).contains(&ts) {
                out.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    &Value::from(ts),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
    }
    if let Some(etp) = s(spec, "externalTrafficPolicy").filter(|x| !x.is_empty()) {
        let external = t == "NodePort"
            || t == "LoadBalancer"
            || (t == "ClusterIP" && !arr(spec, "externalIPs").is_empty());
        if !external {
            out.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                &sv(etp),
                "may only be set for externally-accessible services",
            ));
        } else {
            out.extend(validate_optional_enum(
                spec,
                "externalTrafficPolicy",
                "spec",
                &["Cluster", "Local"],
            ));
        }
    }
    out.extend(validate_optional_enum(
        spec,
        "internalTrafficPolicy",
        "spec",
        &["Cluster", "Local"],
    ));
    out.extend(validate_optional_enum(
        spec,
        "ipFamilyPolicy",
        "spec",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
    ));
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let fam = f.as_str().unwrap_or_default();
        if fam != "IPv4" && fam != "IPv6" {
            out.push(FieldError::not_supported(
                ix("spec.ipFamilies", i),
                &sv(fam),
                &["IPv4", "IPv6"],
            ));
        } else if arr(spec, "ipFamilies")[..i].contains(f) {
            out.push(FieldError::duplicate(ix("spec.ipFamilies", i), f));
        }
    }
    out
}

fn validate_ports(spec: &Value, ports: &[Value]) -> Vec<FieldError> {
    let mut out = Vec::new();
    let t = s(spec, "type").unwrap_or_default();
    let require_name = ports.len() > 1;
    let mut names: Vec<&str> = Vec::new();
    let mut node_ports: Vec<(i64, &str)> = Vec::new();
    let mut port_keys: Vec<(i64, &str)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = ix("spec.ports", i);
        let name = s(port, "name").unwrap_or_default();
        if name.is_empty() {
            if require_name {
                out.push(FieldError::required(p(&pp, "name")));
            }
        } else {
            out.extend(invalid_each(&p(&pp, "name"), name, is_dns1123_label(name)));
            if names.contains(&name) {
                out.push(FieldError::duplicate(p(&pp, "name"), &sv(name)));
            } else {
                names.push(name);
            }
        }
        out.extend(port_number(
            port.get("port").unwrap_or(&Value::Null),
            &p(&pp, "port"),
        ));
        let proto = s(port, "protocol").unwrap_or_default();
        let protocols = ["SCTP", "TCP", "UDP"];
        if proto.is_empty() {
            out.push(FieldError::required(p(&pp, "protocol")));
        } else if !protocols.contains(&proto) {
            out.push(FieldError::not_supported(
                p(&pp, "protocol"),
                &sv(proto),
                &protocols,
            ));
        }
        let key = (int(port, "port").unwrap_or(0), proto);
        if port_keys.contains(&key) {
            out.push(FieldError::duplicate(
                &pp,
                &json!({"port": key.0, "protocol": proto}),
            ));
        } else {
            port_keys.push(key);
        }
        if let Some(tp) = port.get("targetPort").filter(|v| !v.is_null()) {
            out.extend(port_num_or_name(tp, &p(&pp, "targetPort")));
        }
        let node_port = int(port, "nodePort").unwrap_or(0);
        if node_port != 0 {
            let np = p(&pp, "nodePort");
            if t == "ClusterIP" || t == "ExternalName" {
                out.push(FieldError::forbidden(
                    np,
                    &format!("may not be used when `type` is '{t}'"),
                ));
            } else if !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&node_port) {
                out.push(FieldError::invalid(
                    np,
                    &Value::from(node_port),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                    ),
                ));
            } else if node_ports.contains(&(node_port, proto)) {
                out.push(FieldError::duplicate(np, &Value::from(node_port)));
            } else {
                node_ports.push((node_port, proto));
            }
        }
    }
    out
}

fn validate_cluster_ips(spec: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let t = s(spec, "type").unwrap_or_default();
    let cluster_ip = s(spec, "clusterIP").unwrap_or_default();
    let ips = arr(spec, "clusterIPs");
    if t == "ExternalName" {
        if !cluster_ip.is_empty() {
            out.push(FieldError::forbidden(
                "spec.clusterIPs",
                "may not be set for ExternalName services",
            ));
        }
        return out;
    }
    let first_ip = ips.first().and_then(Value::as_str).unwrap_or(cluster_ip);
    if first_ip == "None" && (t == "NodePort" || t == "LoadBalancer") {
        out.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &sv(first_ip),
            &format!("may not be set to 'None' for {t} services"),
        ));
    }
    if let Some(first) = ips.first().and_then(Value::as_str) {
        if !cluster_ip.is_empty() && first != cluster_ip {
            out.push(FieldError::invalid(
                "spec.clusterIPs",
                &Value::Array(ips.to_vec()),
                "first value must match `clusterIP`",
            ));
        }
    }
    let all: Vec<&str> = if ips.is_empty() {
        vec![cluster_ip]
    } else {
        ips.iter().map(|v| v.as_str().unwrap_or_default()).collect()
    };
    for (i, ip) in all.iter().enumerate() {
        if ip.is_empty() || *ip == "None" {
            if *ip == "None" && all.len() > 1 {
                out.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &Value::Array(ips.to_vec()),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if ip.parse::<IpAddr>().is_err() {
            out.push(FieldError::invalid(
                ix("spec.clusterIPs", i),
                &sv(ip),
                IP_MSG,
            ));
        }
    }
    out
}

/// `ValidateServiceUpdate`: a set cluster IP may not change (while both need one).
pub fn validate_service_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let (spec, old_spec) = (
        o.get("spec").unwrap_or(&empty),
        old.get("spec").unwrap_or(&empty),
    );
    let needs_ip = |sp: &Value| svc_type(sp) != "ExternalName";
    if !(needs_ip(spec) && needs_ip(old_spec)) {
        return out;
    }
    let old_ip = s(old_spec, "clusterIP").unwrap_or_default();
    let new_ip = s(spec, "clusterIP").unwrap_or_default();
    // An empty clusterIP means "keep what was allocated" (the REST layer copies it over).
    if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
        let shown = match arr(spec, "clusterIPs") {
            [] => json!([new_ip]),
            ips => Value::Array(ips.to_vec()),
        };
        out.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &shown,
            "may not change once set",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        let mut o = json!({"metadata": {"name": "s", "namespace": "n"}, "spec": spec});
        default_service(&mut o);
        o
    }

    fn errs(spec: Value) -> Vec<(String, String)> {
        validate_service(&svc(spec))
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn defaults() {
        let o = svc(json!({"selector": {"app": "a"}, "ports": [{"port": 80}]}));
        assert_eq!(
            o["spec"],
            json!({"selector": {"app": "a"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "sessionAffinity": "None", "type": "ClusterIP", "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]})
        );
        let o = svc(
            json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http", "protocol": "UDP"}]}),
        );
        assert_eq!(o["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(o["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(o["spec"]["ports"][0]["protocol"], "UDP");
        let o = svc(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(o["spec"].get("ipFamilies").is_none());
        assert!(validate_service(&o).is_empty());
        let o = svc(json!({"clusterIP": "None"}));
        assert!(validate_service(&o).is_empty(), "headless needs no ports");
    }

    #[test]
    fn rules() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({}), "spec.ports", "Required value"),
            (json!({"type": "Bogus", "ports": [{"port": 80}]}), "spec.type",
                "Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            (json!({"ports": [{"port": 70000, "targetPort": 80}]}), "spec.ports[0].port", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
            (json!({"ports": [{"port": 80, "name": "a"}, {"port": 81}]}), "spec.ports[1].name", "Required value"),
            (json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}), "spec.ports[1].name", "Duplicate value: \"a\""),
            (json!({"ports": [{"port": 80, "protocol": "HTTP"}]}), "spec.ports[0].protocol",
                "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            (json!({"ports": [{"port": 80, "nodePort": 30080}]}), "spec.ports[0].nodePort",
                "Forbidden: may not be used when `type` is 'ClusterIP'"),
            (json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}), "spec.ports[0].nodePort",
                "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
            (json!({"ports": [{"port": 80, "targetPort": "my_port"}]}), "spec.ports[0].targetPort",
                "Invalid value: \"my_port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
            (json!({"type": "ExternalName"}), "spec.externalName", "Required value"),
            (json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}), "spec.ports[1]",
                "Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"),
            (json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}), "spec.clusterIPs[0]",
                "Invalid value: \"None\": may not be set to 'None' for NodePort services"),
            (json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}), "spec.externalTrafficPolicy",
                "Invalid value: \"Local\": may only be set for externally-accessible services"),
            (json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}), "spec.clusterIPs[0]",
                "Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            (json!({"sessionAffinity": "Sticky", "ports": [{"port": 80}]}), "spec.sessionAffinity",
                "Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\""),
        ];
        for (spec, field, msg) in cases {
            assert_eq!(
                errs(spec.clone()),
                vec![(field.to_string(), msg.to_string())],
                "{spec}"
            );
        }
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = svc(json!({"clusterIP": "10.0.0.10", "ports": [{"port": 80}]}));
        assert!(validate_service_update(&old, &old).is_empty());
        let mut unset = old.clone();
        unset["spec"].as_object_mut().unwrap().remove("clusterIP");
        assert!(validate_service_update(&unset, &old).is_empty());
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("None");
        new["spec"]["clusterIPs"] = json!(["None"]);
        assert_eq!(
            validate_service_update(&new, &old)[0].display(),
            "spec.clusterIPs[0]: Invalid value: [\"None\"]: may not change once set"
        );
    }
}
