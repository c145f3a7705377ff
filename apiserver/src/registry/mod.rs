//! Upstream's per-resource strategy rules: defaulting (`SetDefaults_*` of
//! `pkg/apis/*/v1/defaults.go`, plus the admission plugins every cluster runs) and validation
//! (`pkg/apis/core/validation`, `apps/validation`, `batch/validation`, apimachinery's
//! `ValidateObjectMeta`).
//!
//! Everything works on the JSON of the *storage* version (`ResourceDef::storage_def`), keyed by
//! its storage name (`def.storage`): callers convert first (autoscaling/v1 HPAs to v2,
//! events.k8s.io/v1 Events to core/v1). Given a non-storage def, only `metadata` is checked and
//! nothing is defaulted, so a wrongly shaped object is never "fixed" into another version.
//! Messages and field paths follow upstream's `field.Error`.

use serde_json::Value;

use crate::errors::FieldError;
use crate::resources::ResourceDef;

mod apps;
mod batch;
mod core_misc;
mod meta;
mod other;
mod pod;
mod quantity;
pub(crate) mod service;

/// Upstream's defaulting (SetDefaults_*), applied on create and update, before validation.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    if !def.is_storage_version {
        return;
    }
    match def.storage {
        "pods" => pod::default_pod(obj),
        "deployments" => apps::default_deployment(obj),
        "replicasets" => apps::default_replica_set(obj),
        "daemonsets" => apps::default_daemon_set(obj),
        "jobs" => batch::default_job(obj),
        "cronjobs" => batch::default_cron_job(obj),
        "services" => service::default_service(obj),
        "secrets" => core_misc::default_secret(obj),
        "namespaces" => core_misc::default_namespace(obj),
        "persistentvolumeclaims" => core_misc::default_pvc(obj),
        "persistentvolumes" => core_misc::default_pv(obj),
        "nodes" => core_misc::default_node(obj),
        "endpoints" => core_misc::default_endpoints(obj),
        "horizontalpodautoscalers" => other::default_hpa(obj),
        "endpointslices" => other::default_endpoint_slice(obj),
        "storageclasses" => other::default_storage_class(obj),
        _ => {}
    }
}

/// Validation of a new object (ObjectMeta + spec), empty = valid.
pub fn validate_create(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut out = meta::validate_object_meta(def, obj);
    out.extend(validate_kind(def, obj));
    out
}

/// Validation of an update: everything of create plus immutable fields against `old`.
pub fn validate_update(def: &ResourceDef, obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = validate_create(def, obj);
    out.extend(meta::validate_object_meta_update(obj, old));
    if !def.is_storage_version {
        return out;
    }
    out.extend(match def.storage {
        "pods" => pod::validate_pod_update(obj, old),
        "deployments" | "replicasets" | "daemonsets" => apps::validate_selector_update(obj, old),
        "jobs" => batch::validate_job_update(obj, old),
        "cronjobs" => vec![],
        "services" => service::validate_service_update(obj, old),
        "configmaps" => core_misc::validate_config_map_update(obj, old),
        "secrets" => core_misc::validate_secret_update(obj, old),
        "nodes" => core_misc::validate_node_update(obj, old),
        "persistentvolumeclaims" => core_misc::validate_pvc_update(obj, old),
        "endpointslices" => other::validate_endpoint_slice_update(obj, old),
        "storageclasses" => other::validate_storage_class_update(obj, old),
        _ => vec![],
    });
    out
}

/// Validation of a status-subresource update (usually light; may be empty for most kinds).
pub fn validate_status_update(def: &ResourceDef, obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = meta::validate_object_meta_update(obj, old);
    if !def.is_storage_version {
        return out;
    }
    out.extend(match def.storage {
        "pods" => pod::validate_pod_status_update(obj, old),
        "namespaces" => core_misc::validate_namespace_status(obj),
        "deployments" | "replicasets" => apps::validate_replicas_status(obj),
        "horizontalpodautoscalers" => other::validate_hpa_status(obj),
        _ => vec![],
    });
    out
}

/// The spec rules of one kind (everything but `metadata`).
fn validate_kind(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    if !def.is_storage_version {
        return vec![];
    }
    match def.storage {
        "pods" => pod::validate_pod(obj),
        "deployments" => apps::validate_deployment(obj),
        "replicasets" => apps::validate_replica_set(obj),
        "daemonsets" => apps::validate_daemon_set(obj),
        "jobs" => batch::validate_job(obj),
        "cronjobs" => batch::validate_cron_job(obj),
        "services" => service::validate_service(obj),
        "configmaps" => core_misc::validate_config_map(obj),
        "secrets" => core_misc::validate_secret(obj),
        "namespaces" => core_misc::validate_namespace(obj),
        "nodes" => core_misc::validate_node(obj),
        "events" => core_misc::validate_event(obj),
        "persistentvolumeclaims" => core_misc::validate_pvc(obj),
        "persistentvolumes" => core_misc::validate_pv(obj),
        "serviceaccounts" => core_misc::validate_service_account(obj),
        "endpoints" => core_misc::validate_endpoints(obj),
        "leases" => other::validate_lease(obj),
        "endpointslices" => other::validate_endpoint_slice(obj),
        "horizontalpodautoscalers" => other::validate_hpa(obj),
        "storageclasses" => other::validate_storage_class(obj),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};
    use serde_json::json;

    fn def(group: &str, version: &str, plural: &str) -> &'static ResourceDef {
        find(group, version, plural).expect("served resource")
    }

    #[test]
    fn every_storage_kind_accepts_a_minimal_valid_object() {
        let minimal = [
            (
                "",
                "pods",
                json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
            ),
            ("", "namespaces", json!({})),
            ("", "nodes", json!({})),
            ("", "services", json!({"spec": {"ports": [{"port": 80}]}})),
            ("", "endpoints", json!({})),
            ("", "configmaps", json!({"data": {"a": "b"}})),
            ("", "secrets", json!({"stringData": {"a": "b"}})),
            ("", "serviceaccounts", json!({})),
            (
                "",
                "events",
                json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R"}),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            ),
            (
                "",
                "persistentvolumes",
                json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}}),
            ),
            (
                "apps",
                "deployments",
                json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
            ),
            (
                "apps",
                "replicasets",
                json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
            ),
            (
                "apps",
                "daemonsets",
                json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
            ),
            (
                "batch",
                "jobs",
                json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
            ),
            (
                "batch",
                "cronjobs",
                json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
            ),
            (
                "autoscaling",
                "horizontalpodautoscalers",
                json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 3}}),
            ),
            (
                "coordination.k8s.io",
                "leases",
                json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}),
            ),
            (
                "storage.k8s.io",
                "storageclasses",
                json!({"provisioner": "example.com/disk"}),
            ),
        ];
        for (group, plural, mut o) in minimal {
            let d = RESOURCES
                .iter()
                .find(|d| d.group == group && d.plural == plural && d.is_storage_version)
                .expect("def");
            let mut meta = json!({"name": "x", "uid": "1234"});
            if d.namespaced {
                meta["namespace"] = json!("default");
            }
            o["metadata"] = meta;
            apply_defaults(d, &mut o);
            assert_eq!(validate_create(d, &o), vec![], "{plural}: {o}");
            assert_eq!(validate_update(d, &o, &o), vec![], "{plural} update");
            assert_eq!(validate_status_update(d, &o, &o), vec![], "{plural} status");
            let mut again = o.clone();
            apply_defaults(d, &mut again);
            assert_eq!(again, o, "{plural}: defaulting is idempotent");
        }
    }

    #[test]
    fn create_reports_meta_and_spec_errors_together() {
        let d = def("", "v1", "pods");
        let mut o =
            json!({"metadata": {"name": "Bad_Name", "namespace": "d"}, "spec": {"containers": []}});
        apply_defaults(d, &mut o);
        let errs: Vec<String> = validate_create(d, &o)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(errs, vec!["metadata.name", "spec.containers"]);
    }

    #[test]
    fn non_storage_versions_are_left_alone() {
        let v1 = def("autoscaling", "v1", "horizontalpodautoscalers");
        let mut o = json!({"metadata": {"name": "h", "namespace": "d"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}});
        let before = o.clone();
        apply_defaults(v1, &mut o);
        assert_eq!(o, before);
        assert!(validate_create(v1, &o).is_empty());
        o["metadata"]["name"] = json!("Bad");
        assert_eq!(validate_create(v1, &o)[0].field, "metadata.name");
    }

    #[test]
    fn update_checks_identity() {
        let d = def("", "v1", "configmaps");
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "1"}});
        let new = json!({"metadata": {"name": "b", "namespace": "d", "uid": "1"}});
        let errs = validate_update(d, &new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].display(),
            "metadata.name: Invalid value: \"b\": field is immutable"
        );
    }
}
