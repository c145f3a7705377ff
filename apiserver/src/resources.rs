//! The table of every resource the apiserver serves: names, scope, discovery data, and the
//! k8s-openapi type that decodes it.

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2,
    batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, storage::v1 as storage,
};
use k8s_openapi::{ListableResource, Resource};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// One resource (a group, version and plural) served by the apiserver.
#[derive(Debug)]
pub struct ResourceDef {
    /// API group ("" for core).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// Plural, lower case: the URL segment.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources: "status", "scale", "binding", "eviction", "log", ...
    pub subresources: &'static [&'static str],
    /// Verbs on the main resource, as in discovery.
    pub verbs: &'static [&'static str],
    /// Objects of one storage resource live under one key prefix in one storage version: two
    /// versions of one resource (events in core/v1 and events.k8s.io/v1, HPAs in autoscaling/v1
    /// and v2) share it and are converted on read and write.
    pub storage: &'static str,
    /// Whether this def is the version objects are stored in.
    pub is_storage_version: bool,
    /// The k8s-openapi type of this group/version/kind.
    pub typed: TypeOps,
}

/// Operations that need the concrete k8s-openapi type, as plain function pointers.
#[derive(Clone, Copy)]
pub struct TypeOps {
    /// Decodes through the typed struct and encodes again: what comes back has every field the
    /// type declares and none it does not (unknown fields are dropped).
    pub roundtrip: fn(&Value) -> Result<Value, serde_json::Error>,
    /// The OpenAPI schema of the type, registering referenced definitions in the generator.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The schema definition name, e.g. `io.k8s.api.core.v1.Pod`.
    pub schema_name: fn() -> std::borrow::Cow<'static, str>,
}

impl std::fmt::Debug for TypeOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypeOps")
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, serde_json::Error> {
    let typed = T::deserialize(v)?;
    serde_json::to_value(typed)
}

const fn ops<T: DeserializeOwned + Serialize + schemars::JsonSchema>() -> TypeOps {
    TypeOps {
        roundtrip: roundtrip::<T>,
        schema: T::json_schema,
        schema_name: T::schema_name,
    }
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

macro_rules! def {
    ($ty:ty, $singular:expr, namespaced: $ns:expr, short: $short:expr, categories: $cat:expr, sub: $sub:expr, storage: $storage:expr, storage_version: $sv:expr) => {
        ResourceDef {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            list_kind: <$ty as ListableResource>::LIST_KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            verbs: CRUD,
            storage: $storage,
            is_storage_version: $sv,
            typed: ops::<$ty>(),
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every resource served, in discovery order.
pub static RESOURCES: &[ResourceDef] = &[
    // core/v1
    def!(core::Namespace, "namespace", namespaced: false, short: &["ns"], categories: NONE, sub: &["status", "finalize"], storage: "namespaces", storage_version: true),
    def!(core::Pod, "pod", namespaced: true, short: &["po"], categories: ALL, sub: &["status", "binding", "eviction", "log", "exec", "attach", "portforward"], storage: "pods", storage_version: true),
    def!(core::Node, "node", namespaced: false, short: &["no"], categories: NONE, sub: &["status", "proxy"], storage: "nodes", storage_version: true),
    def!(core::Service, "service", namespaced: true, short: &["svc"], categories: ALL, sub: &["status", "proxy"], storage: "services", storage_version: true),
    def!(core::Endpoints, "endpoints", namespaced: true, short: &["ep"], categories: NONE, sub: NONE, storage: "endpoints", storage_version: true),
    def!(core::ConfigMap, "configmap", namespaced: true, short: &["cm"], categories: NONE, sub: NONE, storage: "configmaps", storage_version: true),
    def!(core::Secret, "secret", namespaced: true, short: NONE, categories: NONE, sub: NONE, storage: "secrets", storage_version: true),
    def!(core::ServiceAccount, "serviceaccount", namespaced: true, short: &["sa"], categories: NONE, sub: NONE, storage: "serviceaccounts", storage_version: true),
    def!(core::Event, "event", namespaced: true, short: &["ev"], categories: NONE, sub: NONE, storage: "events", storage_version: true),
    def!(core::PersistentVolumeClaim, "persistentvolumeclaim", namespaced: true, short: &["pvc"], categories: NONE, sub: &["status"], storage: "persistentvolumeclaims", storage_version: true),
    def!(core::PersistentVolume, "persistentvolume", namespaced: false, short: &["pv"], categories: NONE, sub: &["status"], storage: "persistentvolumes", storage_version: true),
    // apps/v1
    def!(apps::Deployment, "deployment", namespaced: true, short: &["deploy"], categories: ALL, sub: &["status", "scale"], storage: "deployments", storage_version: true),
    def!(apps::ReplicaSet, "replicaset", namespaced: true, short: &["rs"], categories: ALL, sub: &["status", "scale"], storage: "replicasets", storage_version: true),
    def!(apps::DaemonSet, "daemonset", namespaced: true, short: &["ds"], categories: ALL, sub: &["status"], storage: "daemonsets", storage_version: true),
    // batch/v1
    def!(batch::Job, "job", namespaced: true, short: NONE, categories: ALL, sub: &["status"], storage: "jobs", storage_version: true),
    def!(batch::CronJob, "cronjob", namespaced: true, short: &["cj"], categories: ALL, sub: &["status"], storage: "cronjobs", storage_version: true),
    // autoscaling
    def!(autoscaling_v2::HorizontalPodAutoscaler, "horizontalpodautoscaler", namespaced: true, short: &["hpa"], categories: ALL, sub: &["status"], storage: "horizontalpodautoscalers", storage_version: true),
    def!(autoscaling_v1::HorizontalPodAutoscaler, "horizontalpodautoscaler", namespaced: true, short: &["hpa"], categories: ALL, sub: &["status"], storage: "horizontalpodautoscalers", storage_version: false),
    // coordination, discovery, events, storage
    def!(coordination::Lease, "lease", namespaced: true, short: NONE, categories: NONE, sub: NONE, storage: "leases", storage_version: true),
    def!(discovery::EndpointSlice, "endpointslice", namespaced: true, short: NONE, categories: NONE, sub: NONE, storage: "endpointslices", storage_version: true),
    def!(events::Event, "event", namespaced: true, short: &["ev"], categories: NONE, sub: NONE, storage: "events", storage_version: false),
    def!(storage::StorageClass, "storageclass", namespaced: false, short: &["sc"], categories: NONE, sub: NONE, storage: "storageclasses", storage_version: true),
];

impl ResourceDef {
    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`: the name kubectl and Status details use.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The def objects of this resource are stored in.
    pub fn storage_def(&self) -> &'static ResourceDef {
        RESOURCES
            .iter()
            .find(|d| d.storage == self.storage && d.is_storage_version)
            .expect("every storage resource has a storage version")
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

/// The def serving `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// The def for an `apiVersion` + `kind` pair as found in objects.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|d| d.kind == kind && d.api_version() == api_version)
}

/// Groups in discovery order, each with its versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for d in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == d.group) {
            Some((_, versions)) => {
                if !versions.contains(&d.version) {
                    versions.push(d.version)
                }
            }
            None => out.push((d.group, vec![d.version])),
        }
    }
    // autoscaling: v2 is preferred, as upstream.
    for (_, versions) in &mut out {
        versions.sort_by(|a, b| b.cmp(a));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_storage_resource_has_exactly_one_storage_version() {
        for d in RESOURCES {
            let n = RESOURCES
                .iter()
                .filter(|o| o.storage == d.storage && o.is_storage_version)
                .count();
            assert_eq!(n, 1, "{}", d.storage);
        }
    }

    #[test]
    fn roundtrip_drops_unknown_fields_and_keeps_known_ones() {
        let pod = serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},
            "spec":{"containers":[{"name":"c","image":"i","bogus":1}]}});
        let d = find("", "v1", "pods").unwrap();
        let out = (d.typed.roundtrip)(&pod).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "i");
        assert!(out["spec"]["containers"][0].get("bogus").is_none());
    }
}
