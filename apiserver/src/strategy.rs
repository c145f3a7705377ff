//! Per-resource write semantics (upstream's `rest.RESTCreateStrategy` / `RESTUpdateStrategy`):
//! which fields the server owns, how status and spec are kept apart, when generation bumps.

use serde_json::{json, Value};

use crate::object;
use crate::resources::ResourceDef;

/// Resources whose `metadata.generation` counts spec changes (upstream sets it in their strategy).
fn tracks_generation(def: &ResourceDef) -> bool {
    matches!(
        (def.group, def.storage),
        ("apps", _)
            | ("batch", _)
            | ("autoscaling", _)
            | ("", "services")
            | ("", "persistentvolumeclaims")
            | ("storage.k8s.io", _)
    )
}

/// Whether the main resource ignores `status` (it has a status subresource).
fn has_status(def: &ResourceDef) -> bool {
    def.has_subresource("status")
}

/// Whether a PUT on a missing object creates it (upstream's `AllowCreateOnUpdate`).
pub fn allow_create_on_update(def: &ResourceDef) -> bool {
    matches!(
        def.storage,
        "endpoints" | "events" | "leases" | "endpointslices"
    )
}

/// Server-owned fields and status of a new object. `uid` and time come from the caller.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value, uid: &str, now: &str) {
    {
        let meta = object::meta_mut(obj);
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now));
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
        if tracks_generation(def) {
            meta.insert("generation".into(), json!(1));
        }
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    // Upstream's Go types hold `spec` by value, so it is always there (`{}` at least): JSON
    // patches that add under /spec rely on it.
    if !matches!(
        def.storage,
        "configmaps"
            | "secrets"
            | "endpoints"
            | "events"
            | "endpointslices"
            | "serviceaccounts"
            | "storageclasses"
    ) {
        map.entry("spec").or_insert_with(|| json!({}));
    }
    // Status is written through the status subresource; a create starts it afresh, except where
    // upstream keeps what the creator sent (nodes register with their status).
    match def.storage {
        "pods" => {
            let qos = qos_class(map.get("spec").unwrap_or(&Value::Null));
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        "persistentvolumeclaims" | "persistentvolumes" => {
            map.insert("status".into(), json!({"phase": "Pending"}));
        }
        "nodes" | "namespaces" => {}
        _ if has_status(def) => {
            map.remove("status");
        }
        _ => {}
    }
}

/// Builds the object to store from the old one and the request's, for an update of the main
/// resource (`sub` None) or of a subresource (`status`).
pub fn prepare_update(def: &ResourceDef, old: &Value, new: &mut Value, sub: Option<&str>) {
    if sub == Some("status") {
        // Only status changes; spec and metadata stay as they were (labels and annotations
        // may change too, as upstream allows).
        let status = new.get("status").cloned();
        let labels = new.pointer("/metadata/labels").cloned();
        let annotations = new.pointer("/metadata/annotations").cloned();
        let managed = new.pointer("/metadata/managedFields").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        let meta = object::meta_mut(new);
        for (k, v) in [
            ("labels", labels),
            ("annotations", annotations),
            ("managedFields", managed),
        ] {
            match v {
                Some(v) => meta.insert(k.into(), v),
                None => meta.remove(k),
            };
        }
        return;
    }
    if has_status(def) && !matches!(def.storage, "namespaces") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if def.storage == "services" {
        keep_allocations(old, new);
    }
    // The server owns these: a client cannot change them with an update.
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let spec_changed = !object::spec_equal(old, new);
    let meta = object::meta_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    if tracks_generation(def) && spec_changed {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta.insert("generation".into(), json!(g + 1));
    }
}

/// A service update that leaves out its cluster IPs or node ports keeps the allocated ones while
/// the new type still needs them, as upstream's `patchAllocatedValues` (kubectl apply never sends
/// them); a type change that no longer needs them drops the unchanged ones
/// (`dropTypeDependentFields`), so the REST layer releases them.
fn keep_allocations(old: &Value, new: &mut Value) {
    use crate::allocator::{needs_cluster_ip, needs_node_ports};
    let (ip_before, ip_after) = (needs_cluster_ip(old), needs_cluster_ip(new));
    let (np_before, np_after) = (needs_node_ports(old), needs_node_ports(new));
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for f in ["clusterIP", "clusterIPs"] {
        let empty = spec
            .get(f)
            .is_none_or(|v| v.is_null() || v == "" || v == &json!([]));
        let old_v = old.pointer(&format!("/spec/{f}"));
        if let (true, true, true, Some(v)) = (ip_before, ip_after, empty, old_v) {
            spec.insert(f.into(), v.clone());
        }
        if ip_before && !ip_after && spec.get(f) == old_v {
            spec.remove(f);
        }
    }
    if ip_before && !ip_after {
        for f in ["ipFamilies", "ipFamilyPolicy"] {
            if spec.get(f) == old.pointer(&format!("/spec/{f}")) {
                spec.remove(f);
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    let set = |n: Option<&Value>| n.is_some_and(|n| !n.is_null() && n != 0);
    let used: Vec<Value> = ports
        .iter()
        .filter_map(|p| p.get("nodePort").filter(|n| set(Some(n))).cloned())
        .collect();
    for p in ports {
        if np_before && !np_after {
            let unchanged = old_ports
                .iter()
                .any(|o| set(o.get("nodePort")) && o.get("nodePort") == p.get("nodePort"));
            if unchanged {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
            continue;
        }
        if !(np_before && np_after) || set(p.get("nodePort")) {
            continue;
        }
        // Matched by name, as upstream (the user may have changed the port's number).
        let same = old_ports.iter().find(|o| {
            o.get("name").and_then(Value::as_str).unwrap_or("")
                == p.get("name").and_then(Value::as_str).unwrap_or("")
        });
        if let Some(n) = same
            .and_then(|o| o.get("nodePort"))
            .filter(|n| !used.contains(n))
        {
            p["nodePort"] = n.clone();
        }
    }
}

/// Upstream's QoS class: Guaranteed when every container has equal cpu and memory requests and
/// limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(f).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests");
        let lim = c.pointer("/resources/limits");
        let has = |v: Option<&Value>, k: &str| v.and_then(|m| m.get(k)).is_some();
        if ["cpu", "memory"].iter().any(|k| has(req, k) || has(lim, k)) {
            any = true;
        }
        for k in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(k));
            let r = req.and_then(|m| m.get(k)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn create_resets_status_and_sets_generation() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut o = json!({"metadata":{"name":"d","resourceVersion":"9"},"spec":{},"status":{"replicas":3}});
        prepare_create(d, &mut o, "u", "2026-01-01T00:00:00Z");
        assert!(o.get("status").is_none());
        assert_eq!(o["metadata"]["generation"], 1);
        assert!(o["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn spec_update_bumps_generation_and_keeps_status() {
        let d = find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata":{"name":"d","uid":"u","generation":1},"spec":{"replicas":1},"status":{"replicas":1}});
        let mut new =
            json!({"metadata":{"name":"d"},"spec":{"replicas":2},"status":{"replicas":9}});
        prepare_update(d, &old, &mut new, None);
        assert_eq!(new["metadata"]["generation"], 2);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["status"]["replicas"], 1);

        let mut same = json!({"metadata":{"name":"d","labels":{"a":"b"}},"spec":{"replicas":1}});
        prepare_update(d, &old, &mut same, None);
        assert_eq!(same["metadata"]["generation"], 1);
    }

    #[test]
    fn status_update_changes_only_status() {
        let d = find("", "v1", "pods").unwrap();
        let old =
            json!({"metadata":{"name":"p"},"spec":{"nodeName":"a"},"status":{"phase":"Pending"}});
        let mut new =
            json!({"metadata":{"name":"p"},"spec":{"nodeName":"b"},"status":{"phase":"Running"}});
        prepare_update(d, &old, &mut new, Some("status"));
        assert_eq!(new["spec"]["nodeName"], "a");
        assert_eq!(new["status"]["phase"], "Running");
    }

    #[test]
    fn qos_classes() {
        let c = |res: Value| json!({"containers":[{"name":"c","resources":res}]});
        assert_eq!(qos_class(&c(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&c(json!({"limits":{"cpu":"1","memory":"1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(qos_class(&c(json!({"requests":{"cpu":"1"}}))), "Burstable");
    }
}
