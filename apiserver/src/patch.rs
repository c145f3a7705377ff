//! PATCH bodies and field ownership: JSON patch (RFC 6902), merge patch (RFC 7386), strategic
//! merge patch and server-side apply with `metadata.managedFields`, following upstream's
//! `k8s.io/apimachinery/pkg/util/strategicpatch` and `sigs.k8s.io/structured-merge-diff`.
//!
//! Both strategic merge and apply need to know, for each list, how it merges. k8s-openapi's
//! schemas carry no `x-kubernetes-patch-*` or `x-kubernetes-list-*` extensions, so the table
//! below is transcribed from the Go struct tags of `k8s.io/api` (`patchStrategy`,
//! `patchMergeKey`, `+listType`, `+listMapKey`, `+structType=atomic`), keyed by schema definition
//! name and field. Walking an object alongside its kind's schema gives the definition name at each
//! path, so every field costs one table lookup.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::{Map, Value};

use crate::resources::ResourceDef;

/// Why a patch or an apply could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not of the form its content type demands (400).
    #[error("invalid patch: {0}")]
    InvalidPatch(String),
    /// A JSON patch operation failed: a `test` mismatch or a path that does not exist (422).
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(String),
    /// A list item in a strategic merge patch lacks the list's merge key (400).
    #[error("map: {item} does not contain declared merge key: {key}")]
    MissingMergeKey { key: String, item: String },
    /// An unknown or misplaced `$patch` (or other `$`) directive (400).
    #[error("invalid patch directive: {0}")]
    BadDirective(String),
    /// The apply configuration cannot be applied as given (400/422).
    #[error("invalid apply configuration: {0}")]
    InvalidApply(String),
    /// Server-side apply would change fields owned by other managers (409).
    #[error("{0}")]
    Conflict(ApplyConflicts),
}

/// The fields an apply would take from other managers, with upstream's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflicts {
    /// e.g. `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using
    /// apps/v1: .spec.replicas`
    pub message: String,
    pub conflicts: Vec<ApplyConflict>,
}

/// One conflicting field: becomes a `FieldManagerConflict` cause of the 409 Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The manager as upstream prints it: `"kubectl-client-side-apply" using apps/v1`.
    pub manager: String,
    /// The field path as upstream prints it: `.spec.template.spec.containers[name="c"].image`.
    pub field: String,
}

impl ApplyConflicts {
    /// `details.causes` of the Status: `{reason: FieldManagerConflict, message, field}`.
    pub fn causes(&self) -> Vec<Value> {
        self.conflicts
            .iter()
            .map(|c| {
                serde_json::json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.manager),
                    "field": c.field,
                })
            })
            .collect()
    }
}

impl std::fmt::Display for ApplyConflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Merge information of the built-in types.

/// How server-side apply treats a list (`x-kubernetes-list-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Items are scalars, each owned on its own.
    Set,
    /// Items are objects identified by these keys (`x-kubernetes-list-map-keys`).
    Map(&'static [&'static str]),
}

/// One list (or, for `retainKeys`, struct) field with upstream merge tags.
struct FieldMeta {
    definition: &'static str,
    field: &'static str,
    /// `patchStrategy`: "merge", "merge,retainKeys" or "retainKeys".
    strategy: Option<&'static str>,
    merge_key: Option<&'static str>,
    /// `+listType`; when absent, derived from the strategy (as structured-merge-diff does).
    list_type: Option<ListType>,
}

const CORE: &str = "io.k8s.api.core.v1.";
const APPS: &str = "io.k8s.api.apps.v1.";
const BATCH: &str = "io.k8s.api.batch.v1.";
const AUTOSCALING_V2: &str = "io.k8s.api.autoscaling.v2.";
const STORAGE: &str = "io.k8s.api.storage.v1.";
const DISCOVERY: &str = "io.k8s.api.discovery.v1.";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

const MERGE: Option<&str> = Some("merge");
const MERGE_RETAIN: Option<&str> = Some("merge,retainKeys");

/// (group prefix, type, field, strategy, merge key, list type)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<ListType>,
);

const fn keys(k: &'static [&'static str]) -> Option<ListType> {
    Some(ListType::Map(k))
}

/// Transcribed from `k8s.io/api` types.go and apimachinery's `meta/v1` (struct tags and
/// `+listType`/`+listMapKey` markers) for the groups this apiserver serves.
#[rustfmt::skip]
const TABLE: &[Row] = &[
    (META, "ObjectMeta", "finalizers", MERGE, None, Some(ListType::Set)),
    (META, "ObjectMeta", "ownerReferences", MERGE, Some("uid"), keys(&["uid"])),
    (CORE, "PodSpec", "volumes", MERGE_RETAIN, Some("name"), keys(&["name"])),
    (CORE, "PodSpec", "initContainers", MERGE, Some("name"), keys(&["name"])),
    (CORE, "PodSpec", "containers", MERGE, Some("name"), keys(&["name"])),
    (CORE, "PodSpec", "ephemeralContainers", MERGE, Some("name"), keys(&["name"])),
    (CORE, "PodSpec", "imagePullSecrets", MERGE, Some("name"), keys(&["name"])),
    (CORE, "PodSpec", "hostAliases", MERGE, Some("ip"), keys(&["ip"])),
    (CORE, "PodSpec", "topologySpreadConstraints", MERGE, Some("topologyKey"), keys(&["topologyKey", "whenUnsatisfiable"])),
    (CORE, "PodSpec", "schedulingGates", MERGE, Some("name"), keys(&["name"])),
    (CORE, "PodSpec", "resourceClaims", MERGE_RETAIN, Some("name"), keys(&["name"])),
    (CORE, "Container", "ports", MERGE, Some("containerPort"), keys(&["containerPort", "protocol"])),
    (CORE, "Container", "env", MERGE, Some("name"), keys(&["name"])),
    (CORE, "Container", "volumeMounts", MERGE, Some("mountPath"), keys(&["mountPath"])),
    (CORE, "Container", "volumeDevices", MERGE, Some("devicePath"), keys(&["devicePath"])),
    // EphemeralContainerCommon is inlined into EphemeralContainer.
    (CORE, "EphemeralContainer", "ports", MERGE, Some("containerPort"), keys(&["containerPort", "protocol"])),
    (CORE, "EphemeralContainer", "env", MERGE, Some("name"), keys(&["name"])),
    (CORE, "EphemeralContainer", "volumeMounts", MERGE, Some("mountPath"), keys(&["mountPath"])),
    (CORE, "EphemeralContainer", "volumeDevices", MERGE, Some("devicePath"), keys(&["devicePath"])),
    (CORE, "ResourceRequirements", "claims", None, None, keys(&["name"])),
    (CORE, "ContainerStatus", "volumeMounts", MERGE, Some("mountPath"), keys(&["mountPath"])),
    (CORE, "ContainerStatus", "allocatedResourcesStatus", MERGE, Some("name"), keys(&["name"])),
    (CORE, "ResourceStatus", "resources", None, None, keys(&["resourceID"])),
    (CORE, "PodStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (CORE, "PodStatus", "hostIPs", MERGE, Some("ip"), Some(ListType::Atomic)),
    (CORE, "PodStatus", "podIPs", MERGE, Some("ip"), keys(&["ip"])),
    (CORE, "PodStatus", "resourceClaimStatuses", MERGE_RETAIN, Some("name"), keys(&["name"])),
    (CORE, "ReplicationControllerStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (CORE, "ServiceSpec", "ports", MERGE, Some("port"), keys(&["port", "protocol"])),
    (CORE, "ServiceStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (CORE, "ServiceAccount", "secrets", MERGE, Some("name"), keys(&["name"])),
    (CORE, "NodeSpec", "podCIDRs", MERGE, None, Some(ListType::Set)),
    (CORE, "NodeStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (CORE, "NodeStatus", "addresses", MERGE, Some("type"), keys(&["type"])),
    (CORE, "NamespaceStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (CORE, "ComponentStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (CORE, "PersistentVolumeClaimStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (APPS, "DeploymentSpec", "strategy", Some("retainKeys"), None, None),
    (APPS, "DeploymentStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (APPS, "ReplicaSetStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (APPS, "DaemonSetStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (APPS, "StatefulSetStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (BATCH, "JobStatus", "conditions", MERGE, Some("type"), Some(ListType::Atomic)),
    (BATCH, "UncountedTerminatedPods", "succeeded", None, None, Some(ListType::Set)),
    (BATCH, "UncountedTerminatedPods", "failed", None, None, Some(ListType::Set)),
    (AUTOSCALING_V2, "HorizontalPodAutoscalerStatus", "conditions", MERGE, Some("type"), keys(&["type"])),
    (STORAGE, "CSINodeSpec", "drivers", MERGE, Some("name"), keys(&["name"])),
    (STORAGE, "CSIDriverSpec", "volumeLifecycleModes", None, None, Some(ListType::Set)),
    (DISCOVERY, "Endpoint", "addresses", None, None, Some(ListType::Set)),
];

/// Structs upstream marks `+structType=atomic`: owned and replaced as a whole by apply.
const ATOMIC_STRUCTS: &[(&str, &str)] = &[
    (META, "LabelSelector"),
    (CORE, "SecretReference"),
    (CORE, "FileKeySelector"),
    (CORE, "ObjectFieldSelector"),
    (CORE, "ResourceFieldSelector"),
    (CORE, "ConfigMapKeySelector"),
    (CORE, "SecretKeySelector"),
    (CORE, "NodeSelector"),
    (CORE, "NodeSelectorTerm"),
    (CORE, "TopologySelectorTerm"),
    (CORE, "EndpointAddress"),
    (CORE, "EndpointPort"),
    (CORE, "ObjectReference"),
    (CORE, "LocalObjectReference"),
    (CORE, "TypedLocalObjectReference"),
    (CORE, "ScopeSelector"),
    (DISCOVERY, "EndpointPort"),
    ("io.k8s.api.autoscaling.v1.", "CrossVersionObjectReference"),
    (AUTOSCALING_V2, "CrossVersionObjectReference"),
];

/// definition -> field -> meta, built once: lookups happen on every field of every write.
fn table() -> &'static HashMap<String, HashMap<&'static str, FieldMeta>> {
    static TABLE_INDEX: OnceLock<HashMap<String, HashMap<&'static str, FieldMeta>>> =
        OnceLock::new();
    TABLE_INDEX.get_or_init(|| {
        let mut out: HashMap<String, HashMap<&'static str, FieldMeta>> = HashMap::new();
        for &(group, ty, field, strategy, merge_key, list_type) in TABLE {
            let definition = format!("{group}{ty}");
            // The key string is leaked once so that `FieldMeta` can hand out `'static` names.
            let name: &'static str = Box::leak(definition.clone().into_boxed_str());
            out.entry(definition).or_default().insert(
                field,
                FieldMeta {
                    definition: name,
                    field,
                    strategy,
                    merge_key,
                    list_type,
                },
            );
        }
        out
    })
}

fn field_meta(definition: &str, field: &str) -> Option<&'static FieldMeta> {
    table().get(definition)?.get(field)
}

/// Upstream's `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key` of
/// `definition.field`: (`io.k8s.api.core.v1.PodSpec`, `containers`) -> `("merge", Some("name"))`.
/// `None` for fields without patch tags (lists are then replaced whole).
pub fn list_merge_info(
    definition: &str,
    field: &str,
) -> Option<(&'static str, Option<&'static str>)> {
    let m = field_meta(definition, field)?;
    Some((m.strategy?, m.merge_key))
}

/// Upstream's `x-kubernetes-list-type` (and map keys) of `definition.field`, where it is not
/// atomic or is explicitly tagged; `None` for untagged fields.
pub fn list_type(definition: &str, field: &str) -> Option<ListType> {
    field_meta(definition, field).map(FieldMeta::ssa_list_type)
}

/// Whether upstream marks the struct `+structType=atomic` (`x-kubernetes-map-type: atomic`).
pub fn is_atomic_struct(definition: &str) -> bool {
    ATOMIC_STRUCTS
        .iter()
        .any(|(g, t)| definition.strip_prefix(g) == Some(t))
}

impl FieldMeta {
    fn is_merge(&self) -> bool {
        self.strategy
            .is_some_and(|s| s.split(',').any(|p| p == "merge"))
    }

    /// structured-merge-diff derives the list type from the patch tags when `+listType` is
    /// absent: a merge key makes an associative list, a merge of scalars a set.
    fn ssa_list_type(&'static self) -> ListType {
        if let Some(t) = self.list_type {
            return t;
        }
        match &self.merge_key {
            Some(k) => ListType::Map(std::slice::from_ref(k)),
            None if self.is_merge() => ListType::Set,
            None => ListType::Atomic,
        }
    }
}

impl std::fmt::Debug for FieldMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.definition, self.field)
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas: the kind's schemars schema, walked alongside the value.

struct KindSchema {
    name: String,
    root: Value,
    defs: Map<String, Value>,
}

/// Generating a kind's schema walks dozens of definitions: do it once per kind.
fn kind_schema(def: &ResourceDef) -> Arc<KindSchema> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<KindSchema>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let name = (def.typed.schema_name)().into_owned();
    if let Some(ks) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&name) {
        return ks.clone();
    }
    let mut generator = schemars::SchemaGenerator::default();
    let root = (def.typed.schema)(&mut generator).to_value();
    let ks = Arc::new(KindSchema {
        name: name.clone(),
        root,
        defs: generator.definitions().clone(),
    });
    cache
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, ks.clone());
    ks
}

/// Where a value sits in its kind's schema: the definition (if the schema node is a named
/// definition), the schema node, and the merge tags of the field holding it.
#[derive(Clone, Copy)]
struct Ty<'a> {
    defs: Option<&'a Map<String, Value>>,
    name: Option<&'a str>,
    node: Option<&'a Value>,
    meta: Option<&'static FieldMeta>,
}

impl<'a> Ty<'a> {
    fn root(ks: &'a KindSchema) -> Self {
        Ty {
            defs: Some(&ks.defs),
            name: Some(&ks.name),
            node: Some(&ks.root),
            meta: None,
        }
    }

    /// A value outside any known schema: objects are treated as maps, lists as atomic.
    fn unknown() -> Self {
        Ty {
            defs: None,
            name: None,
            node: None,
            meta: None,
        }
    }

    fn resolve(&self, node: &'a Value, meta: Option<&'static FieldMeta>) -> Ty<'a> {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            return Ty {
                defs: self.defs,
                name: Some(name),
                node: self.defs.and_then(|d| d.get(name)),
                meta,
            };
        }
        Ty {
            defs: self.defs,
            name: None,
            node: Some(node),
            meta,
        }
    }

    fn properties(&self) -> Option<&'a Map<String, Value>> {
        self.node?.get("properties")?.as_object()
    }

    /// The schema of field (or map entry) `key` of this object.
    fn field(&self, key: &str) -> Ty<'a> {
        let meta = self.name.and_then(|n| field_meta(n, key));
        let child = match self.properties().and_then(|p| p.get(key)) {
            Some(c) => Some(c),
            None => self
                .node
                .and_then(|n| n.get("additionalProperties"))
                .filter(|a| a.is_object()),
        };
        match child {
            Some(c) => self.resolve(c, meta),
            None => Ty {
                meta,
                ..Ty::unknown()
            },
        }
    }

    fn items(&self) -> Ty<'a> {
        match self.node.and_then(|n| n.get("items")) {
            Some(i) => self.resolve(i, None),
            None => Ty::unknown(),
        }
    }

    /// A struct (named fields) rather than a map (arbitrary keys).
    fn is_struct(&self) -> bool {
        self.properties().is_some()
    }

    fn has_field(&self, key: &str) -> bool {
        self.properties().is_some_and(|p| p.contains_key(key))
    }

    fn is_atomic(&self) -> bool {
        self.name.is_some_and(is_atomic_struct)
    }

    fn list_type(&self) -> ListType {
        self.meta.map_or(ListType::Atomic, FieldMeta::ssa_list_type)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patch and merge patch.

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        PatchError::InvalidPatch(format!(
            "a JSON patch must be a list of operations ({{\"op\", \"path\", ...}}): {e}"
        ))
    })?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))?;
    Ok(out)
}

/// Applies an RFC 7386 merge patch (`application/merge-patch+json`): objects merge, `null`
/// deletes, everything else (lists included) replaces.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch.

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch (`application/strategic-merge-patch+json`) to `doc`, an
/// object of `def`'s kind, as upstream's `strategicpatch.StrategicMergePatch` does.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    def: &ResourceDef,
) -> Result<Value, PatchError> {
    let patch = patch.as_object().ok_or_else(|| {
        PatchError::InvalidPatch("a strategic merge patch must be a JSON object".into())
    })?;
    let ks = kind_schema(def);
    let original = doc.as_object().cloned().unwrap_or_default();
    Ok(Value::Object(smp_map(original, patch, Ty::root(&ks))?))
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ORDER)
        || k.starts_with(DELETE_PRIMITIVE)
}

fn smp_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Ty,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(d) = patch.get(DIRECTIVE) {
        match d.as_str() {
            // Merging into nothing drops the directive and any nulls or nested directives.
            Some("replace") => original = Map::new(),
            Some("delete") => return Ok(Map::new()),
            // Upstream rejects an explicit "merge" on maps; it is the default, so allow it.
            Some("merge") => {}
            _ => {
                return Err(PatchError::BadDirective(format!(
                    "unknown patch type {d} in map {}",
                    Value::Object(patch.clone())
                )))
            }
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = retain
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .ok_or_else(|| {
                PatchError::InvalidPatch("$retainKeys must be a list of field names".into())
            })?;
        // Every field the patch sets must be retained, or the patch contradicts itself.
        for (k, v) in patch {
            if !v.is_null() && !is_directive_key(k) && !keep.contains(&k.as_str()) {
                return Err(PatchError::InvalidPatch(format!(
                    "invalid patch format of retainKeys: {k:?} is set but not listed in $retainKeys"
                )));
            }
        }
        original.retain(|k, _| keep.contains(&k.as_str()));
    }

    // Lists with a `$setElementOrder` are merged and ordered here, then skipped below.
    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in patch {
        let Some(field) = k.strip_prefix(SET_ORDER) else {
            continue;
        };
        let order = order
            .as_array()
            .ok_or_else(|| PatchError::InvalidPatch(format!("{k} must be a list")))?;
        let fty = ty.field(field);
        let merge_key = fty.meta.and_then(|m| m.merge_key);
        let patch_list = patch.get(field).and_then(Value::as_array);
        if let Some(pl) = patch_list {
            validate_set_order(pl, order, merge_key)?;
            ordered.push(field);
        }
        let id = |v: &Value| item_id(v, merge_key);
        let original_list = match original.get_mut(field) {
            Some(Value::Array(a)) => Some(std::mem::take(a)),
            _ => None,
        };
        let server_ids: Vec<Option<Value>> = original_list.iter().flatten().map(id).collect();
        let merged = match (original_list, patch_list) {
            (None, None) => continue,
            (Some(o), None) => o,
            (o, Some(p)) => smp_list(o.unwrap_or_default(), p, fty)?,
        };
        let order_ids: Vec<Value> = order.iter().filter_map(id).collect();
        let items = merged.into_iter().map(|v| (id(&v), v)).collect();
        original.insert(
            field.to_string(),
            Value::Array(order_items(items, &order_ids, &server_ids)),
        );
    }

    for (k, pv) in patch {
        if k == DIRECTIVE
            || k == RETAIN_KEYS
            || k.starts_with(SET_ORDER)
            || ordered.contains(&k.as_str())
        {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let delete = pv
                .as_array()
                .ok_or_else(|| PatchError::InvalidPatch(format!("{k} must be a list")))?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !delete.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(PatchError::BadDirective(format!("unknown directive {k:?}")));
        }
        if pv.is_null() {
            original.shift_remove(k);
            continue;
        }
        let fty = ty.field(k);
        match (original.get_mut(k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                let taken = std::mem::take(o);
                *o = smp_map(taken, p, fty)?;
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let taken = std::mem::take(o);
                *o = smp_list(taken, p, fty)?;
            }
            (Some(slot), _) => *slot = smp_fresh(pv, fty)?,
            (None, Value::Object(p))
                if p.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") => {}
            (None, _) => {
                let fresh = smp_fresh(pv, fty)?;
                original.insert(k.clone(), fresh);
            }
        }
    }
    Ok(original)
}

/// A patch value for a field the original lacks: nulls and directives must not leak into the
/// result, so it is merged into an empty value of its kind.
fn smp_fresh(pv: &Value, ty: Ty) -> Result<Value, PatchError> {
    Ok(match pv {
        Value::Object(p) => Value::Object(smp_map(Map::new(), p, ty)?),
        Value::Array(p) => Value::Array(smp_list(Vec::new(), p, ty)?),
        other => other.clone(),
    })
}

/// The identity of a list item: its merge key's value, or the item itself for scalars.
fn item_id(v: &Value, merge_key: Option<&str>) -> Option<Value> {
    match merge_key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    }
}

fn smp_list(mut original: Vec<Value>, patch: &[Value], ty: Ty) -> Result<Vec<Value>, PatchError> {
    let Some(meta) = ty.meta.filter(|m| m.is_merge()) else {
        // Lists without a merge strategy are replaced.
        return Ok(patch.to_vec());
    };
    let Some(key) = meta.merge_key else {
        // Scalars with strategy merge: union, keeping the first occurrence of each value.
        let server_ids: Vec<Option<Value>> = original.iter().cloned().map(Some).collect();
        for p in patch {
            if !original.contains(p) {
                original.push(p.clone());
            }
        }
        let items = original.into_iter().map(|v| (Some(v.clone()), v)).collect();
        return Ok(order_items(items, patch, &server_ids));
    };

    let items_ty = ty.items();
    let mut replace = false;
    let mut plain: Vec<&Map<String, Value>> = Vec::new();
    for item in patch {
        let obj = item.as_object().ok_or_else(|| {
            PatchError::InvalidPatch(format!(
                "items of {} must be objects with merge key {key:?}, got {item}",
                meta.field
            ))
        })?;
        match obj.get(DIRECTIVE) {
            None => plain.push(obj),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let kv = obj.get(key).ok_or_else(|| missing_key(key, item))?;
                    original.retain(|o| o.get(key) != Some(kv));
                }
                Some("replace") => replace = true,
                Some("merge") => plain.push(obj),
                _ => {
                    return Err(PatchError::BadDirective(format!(
                        "unknown patch type {d} in list item {item}"
                    )))
                }
            },
        }
    }
    if replace {
        original.clear();
    }
    let server_ids: Vec<Option<Value>> = original.iter().map(|v| item_id(v, Some(key))).collect();
    let mut patch_ids = Vec::with_capacity(plain.len());
    for p in plain {
        let kv = p
            .get(key)
            .ok_or_else(|| missing_key(key, &Value::Object(p.clone())))?;
        patch_ids.push(kv.clone());
        match original.iter_mut().find(|o| o.get(key) == Some(kv)) {
            Some(Value::Object(o)) => {
                let taken = std::mem::take(o);
                *o = smp_map(taken, p, items_ty)?;
            }
            Some(other) => *other = Value::Object(smp_map(Map::new(), p, items_ty)?),
            None => original.push(Value::Object(smp_map(Map::new(), p, items_ty)?)),
        }
    }
    let items = original
        .into_iter()
        .map(|v| (item_id(&v, Some(key)), v))
        .collect();
    Ok(order_items(items, &patch_ids, &server_ids))
}

fn missing_key(key: &str, item: &Value) -> PatchError {
    PatchError::MissingMergeKey {
        key: key.to_string(),
        item: item.to_string(),
    }
}

/// Upstream's `validatePatchWithSetOrderList`: the patch list's items must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_set_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch_list
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut pi, mut si) = (0, 0);
    while pi < items.len() && si < order.len() {
        if item_id(items[pi], merge_key) == item_id(&order[si], merge_key) {
            pi += 1;
        }
        si += 1;
    }
    if pi < items.len() {
        return Err(PatchError::InvalidPatch(format!(
            "the order in patch list {} doesn't match $setElementOrder list {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

/// Upstream's `normalizeElementOrder`: items named by the patch follow the patch's order,
/// the others keep the live order, and the two are interleaved by their places in the live list.
fn order_items<I: PartialEq>(
    items: Vec<(Option<I>, Value)>,
    patch_order: &[I],
    server_order: &[Option<I>],
) -> Vec<Value> {
    let pos_in_patch = |id: &Option<I>| {
        id.as_ref()
            .and_then(|i| patch_order.iter().position(|p| p == i))
    };
    let pos_in_server = |id: &Option<I>| {
        id.as_ref()
            .and_then(|i| server_order.iter().position(|s| s.as_ref() == Some(i)))
    };
    let (mut from_patch, mut server_only): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(id, _)| pos_in_patch(id).is_some());
    from_patch.sort_by_key(|(id, _)| pos_in_patch(id));
    server_only.sort_by_key(|(id, _)| pos_in_server(id).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((l, _)), Some((r, _))) => match (pos_in_server(l), pos_in_server(r)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, v)) = next {
            out.push(v);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Field sets (structured-merge-diff's fieldpath.Set) and their FieldsV1 encoding.

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Pe {
    /// `f:name`
    Field(String),
    /// `k:{"name":"c"}`: an item of an associative list; the JSON of its keys, keys sorted.
    Key(String),
    /// `v:"a"`: an item of a set; its JSON.
    Value(String),
    /// `i:0`: an item of an atomic list (only ever read from stored entries).
    Index(usize),
}

impl Pe {
    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Pe> {
        let (kind, rest) = s.split_at_checked(2)?;
        Some(match kind {
            "f:" => Pe::Field(rest.to_string()),
            // Stored keys are taken as written: both upstream and `canonical` write compact JSON
            // with sorted keys, and parsing every key of every entry on every write is the
            // largest cost of update tracking.
            "k:" => Pe::Key(rest.to_string()),
            "v:" => Pe::Value(rest.to_string()),
            "i:" => Pe::Index(rest.parse().ok()?),
            _ => return None,
        })
    }
}

/// JSON with object keys sorted, so that equal keys encode equally whatever their order.
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// A path as upstream prints it in conflicts: `.spec.containers[name="c"].image`.
fn display_path(path: &[Pe]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Pe::Key(k) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![k.clone()],
                };
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::Value(v) => out.push_str(&format!("[={v}]")),
            Pe::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A set of field paths, as a tree: a node is a member, or has members below it, or both.
#[derive(Clone, Debug, Default, PartialEq)]
struct FieldSet {
    member: bool,
    children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    fn insert(&mut self, path: &[Pe]) {
        if path.is_empty() || never_owned(path) {
            return;
        }
        let mut node = self;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        node.member = true;
    }

    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The node at `path`: present when the path or something below it is a member.
    fn node(&self, path: &[Pe]) -> Option<&FieldSet> {
        let mut node = self;
        for pe in path {
            node = node.children.get(pe)?;
        }
        Some(node)
    }

    fn paths(&self) -> Vec<Vec<Pe>> {
        fn walk(s: &FieldSet, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
            if s.member && !prefix.is_empty() {
                out.push(prefix.clone());
            }
            for (pe, c) in &s.children {
                prefix.push(pe.clone());
                walk(c, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.subtract(other);
        out
    }

    /// Removes `other`'s members in place; walks only `other`, which is usually the small side
    /// (the fields one write changed).
    fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (pe, o) in &other.children {
            if let Some(c) = self.children.get_mut(pe) {
                c.subtract(o);
                if c.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, c) in &other.children {
            self.children.entry(pe.clone()).or_default().union(c);
        }
    }

    /// Drops every member path at or below the members of `removed`: the fields are gone.
    fn remove_subtrees(&mut self, removed: &FieldSet) {
        for (pe, r) in &removed.children {
            if r.member {
                self.children.remove(pe);
            } else if let Some(c) = self.children.get_mut(pe) {
                c.remove_subtrees(r);
                if c.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    /// FieldsV1: `{"f:spec":{"f:replicas":{}}}`, with `".": {}` on members that have children.
    fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, c) in &self.children {
            m.insert(pe.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    fn from_fields_v1(v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        let Some(m) = v.as_object() else { return out };
        for (k, c) in m {
            if k == "." {
                out.member = true;
            } else if let Some(pe) = Pe::decode(k) {
                let mut child = FieldSet::from_fields_v1(c);
                if child.children.is_empty() {
                    child.member = true;
                }
                out.children.insert(pe, child);
            }
        }
        out
    }
}

/// Upstream's strip set: fields no manager ever owns.
fn never_owned(path: &[Pe]) -> bool {
    match path {
        [Pe::Field(f)] => f == "apiVersion" || f == "kind" || f == "metadata",
        [Pe::Field(m), Pe::Field(f)] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "creationTimestamp"
                | "selfLink"
                | "uid"
                | "clusterName"
                | "generation"
                | "managedFields"
                | "resourceVersion"
        ),
        _ => false,
    }
}

fn root_or_metadata(path: &[Pe]) -> bool {
    match path {
        [] => true,
        [Pe::Field(f)] => f == "metadata",
        _ => false,
    }
}

/// Whether nothing below `path` can be owned (so walks need not descend).
fn skipped(path: &[Pe]) -> bool {
    path.len() <= 2 && never_owned(path) && path != [Pe::Field("metadata".into())]
}

fn key_default(field: &str) -> Option<Value> {
    // structured-merge-diff fills a missing map key from the schema's default; the only
    // defaulted key field among the built-in types is the port protocol.
    (field == "protocol").then(|| Value::String("TCP".into()))
}

/// The `k:` element of an associative list item, or None when a key field is missing.
fn item_key(item: &Value, keys: &[&str]) -> Option<Pe> {
    let obj = item.as_object()?;
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    let mut m = Map::new();
    for k in sorted {
        let v = match obj.get(k) {
            Some(v) if !v.is_null() => v.clone(),
            _ => key_default(k)?,
        };
        m.insert(k.to_string(), v);
    }
    Some(Pe::Key(Value::Object(m).to_string()))
}

/// Whether list `item` is the one `pe` names.
fn item_matches(item: &Value, pe: &Pe) -> bool {
    match pe {
        Pe::Key(k) => match serde_json::from_str::<Value>(k) {
            Ok(Value::Object(m)) => {
                let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                item_key(item, &keys).as_ref() == Some(pe)
            }
            _ => false,
        },
        Pe::Value(v) => canonical(item) == *v,
        _ => false,
    }
}

fn get_at<'v>(v: &'v Value, path: &[Pe]) -> Option<&'v Value> {
    let mut cur = v;
    for pe in path {
        cur = match pe {
            Pe::Field(f) => cur.get(f)?,
            Pe::Index(i) => cur.get(i)?,
            _ => cur.as_array()?.iter().find(|it| item_matches(it, pe))?,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Pe]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for pe in parent {
        let next = match pe {
            Pe::Field(f) => cur.get_mut(f),
            Pe::Index(i) => cur.get_mut(*i),
            _ => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|it| item_matches(it, pe))),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (Pe::Field(f), Value::Object(m)) => {
            m.shift_remove(f);
        }
        (Pe::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
        }
        (pe, Value::Array(a)) => a.retain(|it| !item_matches(it, pe)),
        _ => {}
    }
}

/// What to do with an associative list item that lacks its keys.
#[derive(Clone, Copy, PartialEq)]
enum OnBadKey {
    /// Reject: the apply configuration is invalid.
    Fail,
    /// Treat the list as atomic: stored objects are never rejected by bookkeeping.
    Atomic,
}

fn bad_key(path: &[Pe], keys: &[&str], item: &Value) -> PatchError {
    PatchError::InvalidApply(format!(
        "{}: associative list with keys {keys:?} has an element that omits key field(s): {item}",
        display_path(path)
    ))
}

/// Upstream's `ToFieldSet`: the leaves, map entries and list items `v` sets. With `added`, the
/// value is new, so maps and lists are owned themselves too (upstream's `Added` of a compare).
fn collect(
    v: &Value,
    ty: Ty,
    path: &mut Vec<Pe>,
    set: &mut FieldSet,
    added: bool,
    on_bad: OnBadKey,
) -> Result<(), PatchError> {
    if skipped(path) {
        return Ok(());
    }
    match v {
        Value::Null => {}
        Value::Object(m) => {
            if ty.is_atomic() || m.is_empty() {
                set.insert(path);
                return Ok(());
            }
            let is_struct = ty.is_struct();
            if added && !is_struct {
                set.insert(path);
            }
            for (k, c) in m {
                if c.is_null() {
                    continue;
                }
                path.push(Pe::Field(k.clone()));
                if !is_struct || !ty.has_field(k) {
                    set.insert(path);
                }
                collect(c, ty.field(k), path, set, added, on_bad)?;
                path.pop();
            }
        }
        Value::Array(items) => match ty.list_type() {
            ListType::Atomic => set.insert(path),
            _ if items.is_empty() => set.insert(path),
            ListType::Set => {
                if added {
                    set.insert(path);
                }
                for it in items {
                    path.push(Pe::Value(canonical(it)));
                    set.insert(path);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                let pes: Option<Vec<Pe>> = items.iter().map(|it| item_key(it, keys)).collect();
                let Some(pes) = pes else {
                    if on_bad == OnBadKey::Fail {
                        let item = items.iter().find(|it| item_key(it, keys).is_none());
                        return Err(bad_key(path, keys, item.unwrap_or(&Value::Null)));
                    }
                    set.insert(path);
                    return Ok(());
                };
                if added {
                    set.insert(path);
                }
                let ity = ty.items();
                for (pe, it) in pes.into_iter().zip(items) {
                    path.push(pe);
                    set.insert(path);
                    collect(it, ity, path, set, added, on_bad)?;
                    path.pop();
                }
            }
        },
        _ => set.insert(path),
    }
    Ok(())
}

/// Upstream's `Compare`: `changed` gets what `new` adds or modifies, `removed` what it drops.
fn diff(
    old: Option<&Value>,
    new: Option<&Value>,
    ty: Ty,
    path: &mut Vec<Pe>,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    if skipped(path) {
        return;
    }
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    match (old, new) {
        (None, None) => {}
        (Some(_), None) => removed.insert(path),
        (None, Some(n)) => {
            // Bookkeeping never fails a write: lists with keyless items count as atomic.
            let _ = collect(n, ty, path, changed, true, OnBadKey::Atomic);
        }
        // The root and metadata always differ (resourceVersion, managedFields): comparing them
        // whole would only cost a deep comparison of the object before descending anyway.
        (Some(o), Some(n)) if !root_or_metadata(path) && o == n => {}
        (Some(Value::Object(om)), Some(Value::Object(nm))) => {
            if ty.is_atomic() {
                changed.insert(path);
                return;
            }
            for (k, nv) in nm {
                path.push(Pe::Field(k.clone()));
                diff(om.get(k), Some(nv), ty.field(k), path, changed, removed);
                path.pop();
            }
            for (k, ov) in om {
                if !nm.contains_key(k) {
                    path.push(Pe::Field(k.clone()));
                    diff(Some(ov), None, ty.field(k), path, changed, removed);
                    path.pop();
                }
            }
        }
        (Some(Value::Array(oa)), Some(Value::Array(na))) => match ty.list_type() {
            ListType::Atomic => changed.insert(path),
            ListType::Set => {
                for v in na.iter().filter(|v| !oa.contains(v)) {
                    path.push(Pe::Value(canonical(v)));
                    changed.insert(path);
                    path.pop();
                }
                for v in oa.iter().filter(|v| !na.contains(v)) {
                    path.push(Pe::Value(canonical(v)));
                    removed.insert(path);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                let keyed = |a: &'_ [Value]| -> Option<Vec<Pe>> {
                    a.iter().map(|it| item_key(it, keys)).collect()
                };
                let (Some(ok), Some(nk)) = (keyed(oa), keyed(na)) else {
                    changed.insert(path);
                    return;
                };
                let ity = ty.items();
                for (pe, nv) in nk.iter().zip(na) {
                    let ov = ok.iter().position(|k| k == pe).map(|i| &oa[i]);
                    path.push(pe.clone());
                    if ov.is_none() {
                        changed.insert(path);
                    }
                    diff(ov, Some(nv), ity, path, changed, removed);
                    path.pop();
                }
                for pe in ok.iter().filter(|k| !nk.contains(k)) {
                    path.push(pe.clone());
                    removed.insert(path);
                    path.pop();
                }
            }
        },
        _ => changed.insert(path),
    }
}

// ---------------------------------------------------------------------------------------------
// managedFields entries.

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn decode(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: FieldSet::from_fields_v1(v.get("fieldsV1")?),
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.clone().into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone().into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), s.clone().into());
        }
        Value::Object(m)
    }

    /// Upstream's `printManager`, used in conflict messages.
    fn display(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(s) = &self.subresource {
            out.push_str(&format!(" with subresource {s:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

fn decode_entries(v: Option<&Value>) -> Vec<Entry> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::decode).collect())
        .unwrap_or_default()
}

/// Writes `entries` into `obj.metadata.managedFields`, dropping empty ones and sorting as
/// upstream does (operation, time, manager, apiVersion, subresource).
fn store_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

fn managed_fields(v: &Value) -> Option<&Value> {
    v.get("metadata")?.get("managedFields")
}

fn without_managed_fields(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    out
}

fn root_ty_for(obj: &Value) -> Option<Arc<KindSchema>> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    crate::resources::find_kind(api_version, kind).map(kind_schema)
}

// ---------------------------------------------------------------------------------------------
// Server-side apply.

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Server-side apply (`application/apply-patch+yaml`, already parsed): merges `applied` into
/// `live` (None: the object does not exist yet), with `manager` taking ownership of the fields
/// it sets, and returns the object to store, `metadata.managedFields` included.
///
/// Fields owned by another manager whose value would change are conflicts: an error unless
/// `force`, which takes them over. Fields `manager` applied before but no longer does are
/// removed unless another manager owns them. `status` of kinds with a status subresource is not
/// applied through the main resource, as upstream resets it.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    def: &ResourceDef,
    now: &str,
) -> Result<Value, PatchError> {
    let Some(cfg_map) = applied.as_object() else {
        return Err(PatchError::InvalidApply(
            "the apply configuration must be an object".into(),
        ));
    };
    if let Some(mf) = cfg_map.get("metadata").and_then(|m| m.get("managedFields")) {
        if !(mf.is_null() || mf.as_array().is_some_and(Vec::is_empty)) {
            return Err(PatchError::InvalidApply(
                "metadata.managedFields must be nil".into(),
            ));
        }
    }
    let ks = kind_schema(def);
    let ty = Ty::root(&ks);
    let api_version = def.api_version();

    let mut config = without_managed_fields(applied);
    if def.has_subresource("status") {
        if let Some(c) = config.as_object_mut() {
            c.shift_remove("status");
        }
    }
    let live_plain = live
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut entries = decode_entries(live.and_then(managed_fields));
    if live.is_some() && entries.is_empty() {
        // As upstream: an object written without field tracking is owned by
        // "before-first-apply", so the first apply cannot silently take its fields.
        let mut set = FieldSet::default();
        let _ = collect(
            &live_plain,
            ty,
            &mut Vec::new(),
            &mut set,
            true,
            OnBadKey::Atomic,
        );
        entries.push(Entry {
            manager: "before-first-apply".into(),
            operation: "Update".into(),
            api_version: api_version.clone(),
            time: Some(now.to_string()),
            subresource: None,
            set,
        });
    }

    let mut cfg_set = FieldSet::default();
    collect(
        &config,
        ty,
        &mut Vec::new(),
        &mut cfg_set,
        false,
        OnBadKey::Fail,
    )?;
    let mut merged = ssa_merge(&live_plain, &config, ty, &mut Vec::new())?;

    let own = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply" && e.subresource.is_none());
    let last_set = own.map(|i| entries[i].set.clone()).unwrap_or_default();

    // Prune what this manager applied last time and no longer does, unless someone owns it.
    for path in last_set.difference(&cfg_set).paths() {
        let owned = cfg_set.node(&path).is_some()
            || entries
                .iter()
                .enumerate()
                .any(|(i, e)| Some(i) != own && e.set.node(&path).is_some());
        if !owned {
            remove_at(&mut merged, &path);
        }
    }

    let (mut changed, mut removed) = (FieldSet::default(), FieldSet::default());
    diff(
        Some(&live_plain),
        Some(&merged),
        ty,
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );

    let conflicts: Vec<(usize, FieldSet)> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != own)
        .map(|(i, e)| (i, e.set.intersection(&changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        // kubectl's upgrade from client-side apply: fields whose live value is still what the
        // last-applied annotation says may be taken without --force-conflicts.
        let allowed = if manager == "kubectl" {
            allowed_from_last_applied(&live_plain, ty, &api_version)
        } else {
            None
        };
        let remaining: Vec<(usize, FieldSet)> = conflicts
            .iter()
            .map(|(i, c)| {
                (
                    *i,
                    allowed
                        .as_ref()
                        .map_or_else(|| c.clone(), |a| c.difference(a)),
                )
            })
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !remaining.is_empty() {
            return Err(PatchError::Conflict(conflict_error(&entries, &remaining)));
        }
    }
    for (i, c) in &conflicts {
        entries[*i].set.subtract(c);
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != own {
            e.set.remove_subtrees(&removed);
        }
    }

    let object_changed = merged != live_plain;
    match own {
        Some(i) => {
            let e = &mut entries[i];
            if object_changed || e.set != cfg_set || e.api_version != api_version {
                e.time = Some(now.to_string());
            }
            e.set = cfg_set;
            e.api_version = api_version;
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version,
            time: Some(now.to_string()),
            subresource: None,
            set: cfg_set,
        }),
    }
    if manager == "kubectl" {
        sync_last_applied(&mut merged, &config);
    }
    store_entries(&mut merged, entries);
    Ok(merged)
}

/// Upstream's `lastAppliedUpdater`: an apply by kubectl keeps an existing client-side apply
/// annotation in step with the configuration, so a later client-side apply diffs against it.
/// Like upstream, this write is not tracked in managedFields.
fn sync_last_applied(merged: &mut Value, config: &Value) {
    let Some(annotations) = merged
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if !annotations.contains_key(LAST_APPLIED) {
        return;
    }
    let mut last = config.clone();
    if let Some(a) = last
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        a.shift_remove(LAST_APPLIED);
    }
    // Go's encoder sorts map keys and ends the document with a newline.
    annotations.insert(
        LAST_APPLIED.into(),
        format!("{}\n", canonical(&last)).into(),
    );
}

/// structured-merge-diff's merge of a configuration into the live object.
fn ssa_merge(live: &Value, cfg: &Value, ty: Ty, path: &mut Vec<Pe>) -> Result<Value, PatchError> {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !ty.is_atomic() => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.shift_remove(k);
                    continue;
                }
                path.push(Pe::Field(k.clone()));
                let fty = ty.field(k);
                let v = match l.get(k) {
                    Some(lv) => ssa_merge(lv, cv, fty, path)?,
                    None => ssa_merge(&Value::Null, cv, fty, path)?,
                };
                path.pop();
                out.insert(k.clone(), v);
            }
            Ok(Value::Object(out))
        }
        (_, Value::Object(_)) if !ty.is_atomic() => {
            ssa_merge(&Value::Object(Map::new()), cfg, ty, path)
        }
        (_, Value::Array(c)) => {
            let l: &[Value] = live.as_array().map_or(&[], Vec::as_slice);
            match ty.list_type() {
                ListType::Atomic => Ok(strip_nulls(cfg)),
                ListType::Set => {
                    let lhs: Vec<(Option<Pe>, &Value)> = l
                        .iter()
                        .map(|v| (Some(Pe::Value(canonical(v))), v))
                        .collect();
                    let mut rhs: Vec<(Pe, &Value)> = Vec::with_capacity(c.len());
                    for v in c {
                        let pe = Pe::Value(canonical(v));
                        if !rhs.iter().any(|(r, _)| *r == pe) {
                            rhs.push((pe, v));
                        }
                    }
                    Ok(Value::Array(merge_list_items(&lhs, &rhs, |_, _, r| {
                        Ok(r.clone())
                    })?))
                }
                ListType::Map(keys) => {
                    let ity = ty.items();
                    let lhs: Vec<(Option<Pe>, &Value)> =
                        l.iter().map(|it| (item_key(it, keys), it)).collect();
                    let mut rhs: Vec<(Pe, &Value)> = Vec::with_capacity(c.len());
                    for ci in c {
                        let pe = item_key(ci, keys).ok_or_else(|| bad_key(path, keys, ci))?;
                        if rhs.iter().any(|(r, _)| *r == pe) {
                            path.push(pe);
                            return Err(PatchError::InvalidApply(format!(
                                "{}: duplicate entries for key in associative list",
                                display_path(path)
                            )));
                        }
                        rhs.push((pe, ci));
                    }
                    let merged = merge_list_items(&lhs, &rhs, |pe, lv, cv| {
                        path.push(pe.clone());
                        let out = ssa_merge(lv.unwrap_or(&Value::Null), cv, ity, path);
                        path.pop();
                        out
                    })?;
                    Ok(Value::Array(merged))
                }
            }
        }
        _ => Ok(strip_nulls(cfg)),
    }
}

/// structured-merge-diff's list merge order: live items the configuration does not name stay
/// where they are, items it names follow its order, and its new items come after the live
/// items before them.
fn merge_list_items(
    lhs: &[(Option<Pe>, &Value)],
    rhs: &[(Pe, &Value)],
    mut merge: impl FnMut(&Pe, Option<&Value>, &Value) -> Result<Value, PatchError>,
) -> Result<Vec<Value>, PatchError> {
    let in_rhs = |id: &Option<Pe>| id.as_ref().is_some_and(|i| rhs.iter().any(|(r, _)| r == i));
    let live_item = |id: &Pe| {
        lhs.iter()
            .find(|(l, _)| l.as_ref() == Some(id))
            .map(|(_, v)| *v)
    };
    // Items both lists have, in the configuration's order.
    let shared: Vec<&Pe> = rhs
        .iter()
        .map(|(r, _)| r)
        .filter(|r| live_item(r).is_some())
        .collect();
    let mut next_shared = 0;
    let mut emitted: Vec<&Pe> = Vec::new();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let (lid, lv) = &lhs[li];
            let (rid, rv) = &rhs[ri];
            if lid.as_ref() == Some(rid) {
                out.push(merge(rid, Some(lv), rv)?);
                emitted.push(rid);
                if shared.get(next_shared) == Some(&rid) {
                    next_shared += 1;
                }
                li += 1;
                ri += 1;
                continue;
            }
            // A shared item out of the configuration's order waits for its turn in it.
            if in_rhs(lid)
                && shared
                    .get(next_shared)
                    .is_some_and(|s| lid.as_ref() != Some(*s))
            {
                li += 1;
                continue;
            }
        }
        if let Some((lid, lv)) = lhs.get(li) {
            if !in_rhs(lid) {
                out.push((*lv).clone());
                li += 1;
                continue;
            }
            if emitted.iter().any(|e| lid.as_ref() == Some(*e)) {
                li += 1;
                continue;
            }
        }
        if let Some((rid, rv)) = rhs.get(ri) {
            out.push(merge(rid, live_item(rid), rv)?);
            emitted.push(rid);
            if shared.get(next_shared) == Some(&rid) {
                next_shared += 1;
            }
            ri += 1;
        }
    }
    Ok(out)
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Upstream's `allowedConflictsFromLastApplied`: fields of the last-applied annotation whose
/// value in the live object is unchanged.
fn allowed_from_last_applied(live: &Value, ty: Ty, api_version: &str) -> Option<FieldSet> {
    let text = live
        .get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion")?.as_str()? != api_version {
        return None;
    }
    let mut set = FieldSet::default();
    collect(&last, ty, &mut Vec::new(), &mut set, false, OnBadKey::Fail).ok()?;
    let (mut changed, mut removed) = (FieldSet::default(), FieldSet::default());
    diff(
        Some(&last),
        Some(live),
        ty,
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );
    let kept = set.difference(&changed).difference(&removed);
    // A path still in the annotation but with another live value is not ours to take.
    let paths = kept.paths();
    let mut out = FieldSet::default();
    for p in paths {
        if get_at(&last, &p) == get_at(live, &p) {
            out.insert(&p);
        }
    }
    Some(out)
}

/// Upstream's `NewConflictError` message.
fn conflict_error(entries: &[Entry], conflicts: &[(usize, FieldSet)]) -> ApplyConflicts {
    let mut list: Vec<ApplyConflict> = Vec::new();
    let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, set) in conflicts {
        let manager = entries[*i].display();
        for p in set.paths() {
            let field = display_path(&p);
            by_manager
                .entry(manager.clone())
                .or_default()
                .push(field.clone());
            list.push(ApplyConflict {
                manager: manager.clone(),
                field,
            });
        }
    }
    let message = if list.len() == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            list[0].manager, list[0].field
        )
    } else {
        let mut lines = Vec::new();
        for (manager, fields) in &by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(fields.iter().map(|f| format!("- {f}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            list.len(),
            lines.join("\n")
        )
    };
    ApplyConflicts {
        message,
        conflicts: list,
    }
}

// ---------------------------------------------------------------------------------------------
// Update tracking.

/// Records a non-apply write (create, update, patch) in `new.metadata.managedFields`, as
/// upstream's field manager does: `manager` (with `operation`, usually "Update", and the
/// subresource written, if any) takes the fields that changed between `old` (None on create)
/// and `new`, other managers lose them, and fields that were removed leave every manager.
///
/// Managed fields come from `new` when the client sent some, otherwise from `old`. Nothing is
/// recomputed when only server-owned metadata differs.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) {
    if !new.is_object() {
        return;
    }
    let sent = managed_fields(new)
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let source = if sent {
        managed_fields(new)
    } else {
        old.and_then(managed_fields)
    };
    if let Some(o) = old {
        if same_ignoring_server_fields(o, new) {
            if !sent {
                if let Some(mf) = source.cloned() {
                    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("managedFields".into(), mf);
                    }
                }
            }
            return;
        }
    }
    let mut entries = decode_entries(source);

    let ks = root_ty_for(new);
    let ty = ks.as_deref().map_or_else(Ty::unknown, Ty::root);
    let (mut changed, mut removed) = (FieldSet::default(), FieldSet::default());
    diff(
        old,
        Some(new),
        ty,
        &mut Vec::new(),
        &mut changed,
        &mut removed,
    );

    for e in &mut entries {
        e.set.subtract(&changed);
        e.set.remove_subtrees(&removed);
    }
    if !changed.is_empty() {
        let api_version = new
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mine = entries.iter_mut().find(|e| {
            e.manager == manager
                && e.operation == operation
                && e.subresource.as_deref() == subresource
                && (operation != "Update" || e.api_version == api_version)
        });
        match mine {
            Some(e) => {
                e.set.union(&changed);
                e.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version,
                time: Some(now.to_string()),
                subresource: subresource.map(str::to_string),
                set: changed,
            }),
        }
    }
    store_entries(new, entries);
}

/// Equality of two objects apart from the metadata the server owns (resourceVersion,
/// generation, managedFields, ...), without copying either.
fn same_ignoring_server_fields(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let owned = |k: &str| never_owned(&[Pe::Field("metadata".into()), Pe::Field(k.into())]);
    let meta_eq = |x: Option<&Value>, y: Option<&Value>| {
        let empty = Map::new();
        let x = x.and_then(Value::as_object).unwrap_or(&empty);
        let y = y.and_then(Value::as_object).unwrap_or(&empty);
        x.iter()
            .filter(|(k, _)| !owned(k))
            .all(|(k, v)| y.get(k) == Some(v))
            && y.iter()
                .filter(|(k, _)| !owned(k))
                .all(|(k, _)| x.contains_key(k))
    };
    let top_eq = |x: &Map<String, Value>, y: &Map<String, Value>| {
        x.iter()
            .filter(|(k, _)| *k != "metadata")
            .all(|(k, v)| y.get(k) == Some(v))
    };
    top_eq(a, b) && top_eq(b, a) && meta_eq(a.get("metadata"), b.get("metadata"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    const T0: &str = "2026-11-29T10:00:00Z";
    const T1: &str = "2026-11-29T11:00:00Z";

    fn deployments() -> &'static ResourceDef {
        find("apps", "v1", "deployments").expect("deployments are served")
    }

    fn pods() -> &'static ResourceDef {
        find("", "v1", "pods").expect("pods are served")
    }

    fn services() -> &'static ResourceDef {
        find("", "v1", "services").expect("services are served")
    }

    fn deployment(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "default", "labels": {"app": "app"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "app"}},
                "template": {
                    "metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [{"image": image, "name": "c"}]}
                }
            }
        })
    }

    fn smp(doc: &Value, patch: Value, def: &ResourceDef) -> Value {
        strategic_merge_patch(doc, &patch, def).expect("patch applies")
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect()
    }

    fn entry<'v>(obj: &'v Value, manager: &str) -> Option<&'v Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
    }

    fn owns(obj: &Value, manager: &str, pointer: &str) -> bool {
        entry(obj, manager)
            .and_then(|e| e["fieldsV1"].pointer(pointer))
            .is_some()
    }

    // --- merge tables ------------------------------------------------------------------------

    #[test]
    fn merge_info_matches_upstream_tags() {
        assert_eq!(
            list_merge_info("io.k8s.api.core.v1.PodSpec", "containers"),
            Some(("merge", Some("name")))
        );
        assert_eq!(
            list_merge_info("io.k8s.api.core.v1.Container", "ports"),
            Some(("merge", Some("containerPort")))
        );
        assert_eq!(
            list_merge_info("io.k8s.api.core.v1.PodSpec", "volumes"),
            Some(("merge,retainKeys", Some("name")))
        );
        assert_eq!(
            list_merge_info(
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "finalizers"
            ),
            Some(("merge", None))
        );
        assert_eq!(
            list_merge_info("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
            Some(("retainKeys", None))
        );
        assert_eq!(
            list_merge_info("io.k8s.api.core.v1.Container", "args"),
            None
        );
        assert_eq!(
            list_type("io.k8s.api.core.v1.ServiceSpec", "ports"),
            Some(ListType::Map(&["port", "protocol"]))
        );
        assert_eq!(
            list_type("io.k8s.api.core.v1.PodStatus", "conditions"),
            Some(ListType::Map(&["type"]))
        );
        assert_eq!(
            list_type("io.k8s.api.core.v1.PodStatus", "hostIPs"),
            Some(ListType::Atomic)
        );
        assert!(is_atomic_struct(
            "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
        ));
        assert!(!is_atomic_struct("io.k8s.api.core.v1.PodSpec"));
    }

    #[test]
    fn every_served_kind_has_a_walkable_schema() {
        for def in crate::resources::RESOURCES {
            let ks = kind_schema(def);
            let ty = Ty::root(&ks);
            assert!(ty.is_struct(), "{} root schema has properties", def.kind);
            assert_eq!(
                ty.field("metadata").name,
                Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "{}",
                def.kind
            );
        }
        let ks = kind_schema(deployments());
        let spec = Ty::root(&ks).field("spec").field("template").field("spec");
        assert_eq!(spec.name, Some("io.k8s.api.core.v1.PodSpec"));
        assert_eq!(
            spec.field("containers").list_type(),
            ListType::Map(&["name"])
        );
        assert_eq!(
            spec.field("containers").items().name,
            Some("io.k8s.api.core.v1.Container")
        );
    }

    // --- JSON patch and merge patch ----------------------------------------------------------

    #[test]
    fn json_patch_applies_operations() {
        let out = json_patch(
            &deployment("x:1"),
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
                {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "c"}
            ]),
        )
        .expect("patch applies");
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["metadata"]["labels"]["tier"], "web");
    }

    #[test]
    fn json_patch_reports_failed_test_and_bad_bodies() {
        let failed = json_patch(
            &deployment("x:1"),
            &json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
        );
        assert!(
            matches!(failed, Err(PatchError::JsonPatchFailed(_))),
            "{failed:?}"
        );
        let missing = json_patch(
            &deployment("x:1"),
            &json!([{"op": "remove", "path": "/spec/nope"}]),
        );
        assert!(matches!(missing, Err(PatchError::JsonPatchFailed(_))));
        let bad = json_patch(&deployment("x:1"), &json!({"spec": {}}));
        assert!(matches!(bad, Err(PatchError::InvalidPatch(_))));
    }

    #[test]
    fn merge_patch_is_rfc7386() {
        // kubectl scale's body.
        let out = merge_patch(&deployment("x:1"), &json!({"spec": {"replicas": 5}}));
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(containers(&out)[0]["image"], "x:1");
        let out = merge_patch(
            &out,
            &json!({"metadata": {"labels": null}, "spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}),
        );
        assert!(out["metadata"].get("labels").is_none());
        assert_eq!(containers(&out), &json!([{"name": "d"}]));
    }

    // --- strategic merge patch ---------------------------------------------------------------

    #[test]
    fn smp_kubectl_apply_body_updates_container_by_name() {
        let mut live = deployment("nginx:1.27");
        live["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "protocol": "TCP"}]);
        // The body of server-10-apply-change.log.
        let patch = json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}\n"}},"spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"image":"nginx:1.28","name":"c"}]}}}});
        let out = smp(&live, patch, deployments());
        assert_eq!(
            containers(&out),
            &json!([{"image": "nginx:1.28", "name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}])
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "app"}));
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{}\n"
        );
        assert!(
            !out.to_string().contains('$'),
            "no directive survives: {out}"
        );
    }

    #[test]
    fn smp_appends_new_keyed_items_and_merges_nested_keyed_lists() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
        let out = smp(
            &live,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
                {"name": "sidecar", "image": "s:1"}
            ]}}}}),
            deployments(),
        );
        assert_eq!(names(containers(&out)), ["c", "sidecar"]);
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(containers(&out)[0]["image"], "x:1");
    }

    #[test]
    fn smp_patch_delete_removes_the_keyed_item() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
        let out = smp(
            &live,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}],
                "containers": [{"$patch": "delete", "name": "a"}]
            }}}}),
            deployments(),
        );
        assert_eq!(containers(&out), &json!([{"name": "b", "image": "b"}]));
    }

    #[test]
    fn smp_patch_replace_in_list_replaces_the_list() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
        let out = smp(
            &live,
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "replace"}, {"name": "z", "image": "z"}
            ]}}}}),
            deployments(),
        );
        assert_eq!(containers(&out), &json!([{"name": "z", "image": "z"}]));
    }

    #[test]
    fn smp_patch_replace_and_delete_on_maps() {
        let live = deployment("x:1");
        let out = smp(
            &live,
            json!({"metadata": {"labels": {"$patch": "replace", "new": "1"}}}),
            deployments(),
        );
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));
        let out = smp(
            &live,
            json!({"spec": {"selector": {"$patch": "delete"}}}),
            deployments(),
        );
        assert_eq!(out["spec"]["selector"], json!({}));
        let out = smp(
            &live,
            json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
            deployments(),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "app", "b": "2"}));
        let bad = strategic_merge_patch(
            &live,
            &json!({"metadata": {"$patch": "explode"}}),
            deployments(),
        );
        assert!(matches!(bad, Err(PatchError::BadDirective(_))));
    }

    #[test]
    fn smp_retain_keys_drops_unlisted_fields() {
        let mut live = deployment("x:1");
        live["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
        // What kubectl apply sends when switching to Recreate.
        let out = smp(
            &live,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            deployments(),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let bad = strategic_merge_patch(
            &live,
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
            deployments(),
        );
        assert!(matches!(bad, Err(PatchError::InvalidPatch(_))), "{bad:?}");
    }

    #[test]
    fn smp_primitive_merge_lists_union_and_delete() {
        let mut live = deployment("x:1");
        live["metadata"]["finalizers"] = json!(["a", "b"]);
        let out = smp(
            &live,
            json!({"metadata": {"finalizers": ["b", "c"]}}),
            deployments(),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = smp(
            &out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "c"]}}),
            deployments(),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(
            &live,
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}}),
            deployments(),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b", "a"]));
    }

    #[test]
    fn smp_set_element_order_orders_the_merged_list() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
        let out = smp(
            &live,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                "containers": [{"name": "b", "image": "b:2"}]
            }}}}),
            deployments(),
        );
        assert_eq!(names(containers(&out)), ["c", "b", "a"]);
        assert_eq!(containers(&out)[1]["image"], "b:2");
        // Items the order list does not name keep their live place.
        let out = smp(
            &live,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            }}}}),
            deployments(),
        );
        assert_eq!(names(containers(&out)), ["b", "c", "a"]);
        let bad = strategic_merge_patch(
            &live,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b"}, {"name": "a"}]
            }}}}),
            deployments(),
        );
        assert!(matches!(bad, Err(PatchError::InvalidPatch(_))), "{bad:?}");
    }

    #[test]
    fn smp_replaces_lists_without_merge_info_and_deletes_nulls() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a", "b"]);
        live["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "k"}]);
        let out = smp(
            &live,
            json!({"metadata": {"labels": {"app": null, "x": "y"}}, "spec": {"template": {"spec": {
                "tolerations": [{"key": "j"}],
                "containers": [{"name": "c", "args": ["z"]}]
            }}}}),
            deployments(),
        );
        assert_eq!(containers(&out)[0]["args"], json!(["z"]));
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "j"}])
        );
        assert_eq!(out["metadata"]["labels"], json!({"x": "y"}));
    }

    #[test]
    fn smp_keys_by_each_lists_own_merge_key() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = smp(
            &svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            services(),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );

        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
                "ownerReferences": [{"uid": "1", "name": "a"}]},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}],
                "volumeMounts": [{"mountPath": "/a", "name": "v"}]}]}});
        let out = smp(
            &pod,
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81}],
                    "volumeMounts": [{"mountPath": "/a", "readOnly": true}]}]}}),
            pods(),
        );
        // As upstream's mergeSortedSlice: a patch naming only new items puts them first.
        assert_eq!(names(&out["metadata"]["ownerReferences"]), ["b", "a"]);
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 81}, {"containerPort": 80}])
        );
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"],
            json!([{"mountPath": "/a", "name": "v", "readOnly": true}])
        );
    }

    #[test]
    fn smp_rejects_items_without_merge_key() {
        let err = strategic_merge_patch(
            &deployment("x:1"),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            deployments(),
        )
        .expect_err("an item without its name cannot be merged");
        assert!(
            err.to_string()
                .contains("does not contain declared merge key: name"),
            "{err}"
        );
        let err = strategic_merge_patch(
            &deployment("x:1"),
            &json!({"spec": {"$bogus": 1}}),
            deployments(),
        );
        assert!(matches!(err, Err(PatchError::BadDirective(_))));
        let err = strategic_merge_patch(&deployment("x:1"), &json!([1]), deployments());
        assert!(matches!(err, Err(PatchError::InvalidPatch(_))));
    }

    #[test]
    fn smp_new_fields_carry_no_directives_or_nulls() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]
            .as_object_mut()
            .expect("object")
            .shift_remove("containers");
        let out = smp(
            &live,
            json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {"containers": [{"name": "a", "env": [{"$patch": "delete", "name": "X"}]}]}}}}),
            deployments(),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(containers(&out), &json!([{"name": "a", "env": []}]));
    }

    // --- server-side apply -------------------------------------------------------------------

    #[test]
    fn apply_creates_from_nothing_with_upstream_field_encoding() {
        let cfg = deployment("nginx:1.29");
        let out = apply(None, &cfg, "kubectl", false, deployments(), T0).expect("apply creates");
        let mut plain = out.clone();
        plain["metadata"]
            .as_object_mut()
            .expect("metadata")
            .shift_remove("managedFields");
        assert_eq!(plain, cfg);
        let e = entry(&out, "kubectl").expect("an entry for kubectl");
        assert_eq!(e["operation"], "Apply");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T0);
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert_eq!(
            e["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}
                    }
                }
            })
        );
    }

    #[test]
    fn apply_by_the_same_manager_updates_without_conflict() {
        let live = apply(
            None,
            &deployment("x:1"),
            "kubectl",
            false,
            deployments(),
            T0,
        )
        .expect("create");
        let out = apply(
            Some(&live),
            &deployment("x:2"),
            "kubectl",
            false,
            deployments(),
            T1,
        )
        .expect("update");
        assert_eq!(containers(&out)[0]["image"], "x:2");
        assert_eq!(entry(&out, "kubectl").expect("entry")["time"], T1);
        assert_eq!(
            out["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(1)
        );
        // A repeated identical apply changes nothing, not even the time.
        let again = apply(
            Some(&out),
            &deployment("x:2"),
            "kubectl",
            false,
            deployments(),
            "2026-11-29T12:00:00Z",
        )
        .expect("noop");
        assert_eq!(again, out);
    }

    fn created_by_client_side_apply(image: &str) -> Value {
        let mut obj = deployment(image);
        record_update(
            None,
            &mut obj,
            "kubectl-client-side-apply",
            "Update",
            None,
            T0,
        );
        obj
    }

    #[test]
    fn apply_conflicts_with_another_managers_changed_field() {
        let live = created_by_client_side_apply("x:1");
        let mut cfg = deployment("x:1");
        cfg["spec"]["replicas"] = json!(5);
        let err =
            apply(Some(&live), &cfg, "other", false, deployments(), T1).expect_err("conflict");
        let PatchError::Conflict(c) = &err else {
            panic!("want a conflict, got {err:?}")
        };
        assert_eq!(
            c.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            c.causes(),
            vec![
                json!({"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-client-side-apply\" using apps/v1", "field": ".spec.replicas"})
            ]
        );

        cfg = deployment("x:2");
        cfg["spec"]["replicas"] = json!(5);
        let err =
            apply(Some(&live), &cfg, "other", false, deployments(), T1).expect_err("conflicts");
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"c\"].image"
        );
    }

    #[test]
    fn apply_of_equal_values_shares_ownership() {
        let live = created_by_client_side_apply("x:1");
        let out = apply(
            Some(&live),
            &deployment("x:1"),
            "other",
            false,
            deployments(),
            T1,
        )
        .expect("no conflict");
        assert!(owns(&out, "other", "/f:spec/f:replicas"));
        assert!(owns(
            &out,
            "kubectl-client-side-apply",
            "/f:spec/f:replicas"
        ));
    }

    #[test]
    fn forced_apply_takes_ownership() {
        let live = created_by_client_side_apply("x:1");
        let mut cfg = deployment("x:1");
        cfg["spec"]["replicas"] = json!(5);
        let out = apply(Some(&live), &cfg, "other", true, deployments(), T1).expect("forced");
        assert_eq!(out["spec"]["replicas"], 5);
        assert!(owns(&out, "other", "/f:spec/f:replicas"));
        assert!(!owns(
            &out,
            "kubectl-client-side-apply",
            "/f:spec/f:replicas"
        ));
        assert!(owns(
            &out,
            "kubectl-client-side-apply",
            "/f:spec/f:selector"
        ));
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let mut cfg = deployment("x:1");
        cfg["metadata"]["labels"] = json!({"app": "app", "tier": "web", "team": "a"});
        cfg["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "c", "image": "x:1"}, {"name": "d", "image": "d:1"}]);
        let live = apply(None, &cfg, "mgr", false, deployments(), T0).expect("create");

        // Another writer co-owns "team" through an update.
        let mut updated = live.clone();
        updated["metadata"]["labels"]["team"] = json!("b");
        record_update(Some(&live), &mut updated, "editor", "Update", None, T0);

        let out = apply(
            Some(&updated),
            &deployment("x:1"),
            "mgr",
            false,
            deployments(),
            T1,
        )
        .expect("apply");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "app", "team": "b"})
        );
        assert_eq!(names(containers(&out)), ["c"]);
        assert!(!owns(&out, "mgr", "/f:metadata/f:labels/f:tier"));
    }

    #[test]
    fn kubectl_server_side_apply_upgrades_from_client_side_apply() {
        // `kubectl apply` then `kubectl apply --server-side` with a new image (server-11 log).
        let mut live = deployment("nginx:1.28");
        let last = canonical(&deployment("nginx:1.28"));
        live["metadata"]["annotations"] = json!({LAST_APPLIED: format!("{last}\n")});
        record_update(
            None,
            &mut live,
            "kubectl-client-side-apply",
            "Update",
            None,
            T0,
        );

        let cfg = deployment("nginx:1.29");
        let err = apply(Some(&live), &cfg, "someone-else", false, deployments(), T1);
        assert!(matches!(err, Err(PatchError::Conflict(_))));

        let out = apply(Some(&live), &cfg, "kubectl", false, deployments(), T1).expect("upgrade");
        assert_eq!(containers(&out)[0]["image"], "nginx:1.29");
        assert!(owns(
            &out,
            "kubectl",
            "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}/f:image"
        ));
        let synced: Value = serde_json::from_str(
            out["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .expect("annotation"),
        )
        .expect("json");
        assert_eq!(synced, cfg);

        // kubectl's follow-up: re-apply the annotation as kubectl-last-applied, no force.
        let annotation = out["metadata"]["annotations"][LAST_APPLIED].clone();
        let follow = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "default", "annotations": {LAST_APPLIED: annotation}}});
        let out = apply(
            Some(&out),
            &follow,
            "kubectl-last-applied",
            false,
            deployments(),
            T1,
        )
        .expect("co-own");
        assert!(owns(
            &out,
            "kubectl-last-applied",
            &format!(
                "/f:metadata/f:annotations/f:{}",
                LAST_APPLIED.replace('/', "~1")
            )
        ));
    }

    #[test]
    fn apply_keys_ports_with_the_defaulted_protocol() {
        let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}});
        let cfg = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "name": "http"}]}]}});
        let out = apply(Some(&live), &cfg, "mgr", true, pods(), T0).expect("apply");
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
        assert!(owns(
            &out,
            "mgr",
            "/f:spec/f:containers/k:{\"name\":\"c\"}/f:ports/k:{\"containerPort\":80,\"protocol\":\"TCP\"}/f:name"
        ));
    }

    #[test]
    fn apply_rejects_invalid_configurations() {
        let mut cfg = deployment("x:1");
        cfg["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
        let err = apply(None, &cfg, "mgr", false, deployments(), T0);
        assert!(matches!(err, Err(PatchError::InvalidApply(_))), "{err:?}");
        cfg["spec"]["template"]["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
        let err = apply(None, &cfg, "mgr", false, deployments(), T0);
        assert!(matches!(err, Err(PatchError::InvalidApply(_))), "{err:?}");
        let mut cfg = deployment("x:1");
        cfg["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        let err = apply(None, &cfg, "mgr", false, deployments(), T0);
        assert!(matches!(err, Err(PatchError::InvalidApply(_))), "{err:?}");
    }

    #[test]
    fn apply_leaves_status_to_the_status_subresource() {
        let mut live = deployment("x:1");
        live["status"] = json!({"replicas": 3});
        let mut cfg = deployment("x:1");
        cfg["status"] = json!({"replicas": 99});
        let out = apply(Some(&live), &cfg, "mgr", false, deployments(), T0).expect("apply");
        assert_eq!(out["status"], json!({"replicas": 3}));
        assert!(!owns(&out, "mgr", "/f:status"));
        // The object predates field tracking: before-first-apply owns what was there.
        assert!(owns(&out, "before-first-apply", "/f:status/f:replicas"));
    }

    #[test]
    fn conflicts_with_an_applier_name_it_without_version() {
        let live =
            apply(None, &deployment("x:1"), "helm", false, deployments(), T0).expect("create");
        let err = apply(
            Some(&live),
            &deployment("x:2"),
            "argo",
            false,
            deployments(),
            T1,
        )
        .expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"helm\": .spec.template.spec.containers[name=\"c\"].image"
        );
    }

    #[test]
    fn apply_owns_set_items_one_by_one() {
        let mut cfg = deployment("x:1");
        cfg["metadata"]["finalizers"] = json!(["a", "b"]);
        let live = apply(None, &cfg, "mgr", false, deployments(), T0).expect("create");
        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "default", "finalizers": ["c"]}});
        let live = apply(Some(&live), &other, "other", false, deployments(), T0).expect("union");
        assert_eq!(live["metadata"]["finalizers"], json!(["a", "b", "c"]));
        assert!(owns(&live, "other", "/f:metadata/f:finalizers/v:\"c\""));

        cfg["metadata"]["finalizers"] = json!(["a"]);
        let out = apply(Some(&live), &cfg, "mgr", false, deployments(), T1).expect("prune b");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));

        other["metadata"]["finalizers"] = json!([]);
        let out = apply(Some(&out), &other, "other", false, deployments(), T1).expect("empty");
        assert_eq!(out["metadata"]["finalizers"], json!(["a"]));
    }

    #[test]
    fn apply_orders_lists_as_structured_merge_diff() {
        let mut live = deployment("x:1");
        live["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
        let mut cfg = deployment("x:1");
        cfg["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "b", "image": "b:2"}, {"name": "d"}]);
        let out = apply(Some(&live), &cfg, "mgr", true, deployments(), T0).expect("apply");
        assert_eq!(names(containers(&out)), ["a", "b", "c", "d"]);
        assert_eq!(containers(&out)[1], json!({"name": "b", "image": "b:2"}));
        // Shared items follow the configuration's order.
        cfg["spec"]["template"]["spec"]["containers"] = json!([{"name": "c"}, {"name": "a"}]);
        let out = apply(Some(&live), &cfg, "mgr", true, deployments(), T0).expect("apply");
        assert_eq!(names(containers(&out)), ["b", "c", "a"]);
    }

    // --- update tracking ---------------------------------------------------------------------

    #[test]
    fn record_update_on_create_owns_everything_but_server_fields() {
        let mut obj = deployment("x:1");
        obj["metadata"]["resourceVersion"] = json!("5");
        obj["metadata"]["uid"] = json!("u");
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["creationTimestamp"] = json!(T0);
        obj["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "protocol": "TCP"}]);
        record_update(None, &mut obj, "kubectl-create", "Update", None, T0);
        let e = entry(&obj, "kubectl-create").expect("entry");
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["apiVersion"], "apps/v1");
        assert_eq!(e["time"], T0);
        let f = &e["fieldsV1"];
        assert_eq!(f["f:metadata"], json!({"f:labels": {".": {}, "f:app": {}}}));
        assert_eq!(f["f:spec"]["f:selector"], json!({}));
        assert_eq!(
            f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:ports"],
            json!({".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}})
        );
        assert!(f.get("f:apiVersion").is_none() && f.get("f:kind").is_none());
    }

    #[test]
    fn record_update_moves_changed_fields_to_the_writer() {
        let live = created_by_client_side_apply("x:1");
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        new["metadata"]["resourceVersion"] = json!("7");
        record_update(
            Some(&live),
            &mut new,
            "kubectl-scale",
            "Update",
            Some("scale"),
            T1,
        );
        let e = entry(&new, "kubectl-scale").expect("entry");
        assert_eq!(e["subresource"], "scale");
        assert_eq!(e["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(!owns(
            &new,
            "kubectl-client-side-apply",
            "/f:spec/f:replicas"
        ));
        assert_eq!(
            entry(&new, "kubectl-client-side-apply").expect("kept")["time"],
            T0
        );
        // Apply entries sort before updates, then by time.
        let order: Vec<&str> = new["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(order, ["kubectl-client-side-apply", "kubectl-scale"]);
    }

    #[test]
    fn record_update_skips_writes_that_change_nothing() {
        let live = created_by_client_side_apply("x:1");
        let mut new = live.clone();
        new["metadata"]["resourceVersion"] = json!("8");
        new["metadata"]
            .as_object_mut()
            .expect("metadata")
            .shift_remove("managedFields");
        record_update(Some(&live), &mut new, "other", "Update", None, T1);
        assert_eq!(
            new["metadata"]["managedFields"],
            live["metadata"]["managedFields"]
        );
    }

    #[test]
    fn record_update_drops_removed_fields_from_every_manager() {
        let live = created_by_client_side_apply("x:1");
        let mut new = live.clone();
        new["metadata"]
            .as_object_mut()
            .expect("metadata")
            .shift_remove("labels");
        new["spec"]["template"]["spec"]["containers"] = json!([{"name": "d", "image": "d"}]);
        record_update(Some(&live), &mut new, "editor", "Update", None, T1);
        assert!(!owns(
            &new,
            "kubectl-client-side-apply",
            "/f:metadata/f:labels"
        ));
        assert!(!owns(
            &new,
            "kubectl-client-side-apply",
            "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}"
        ));
        assert!(owns(
            &new,
            "editor",
            "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"d\"}/f:image"
        ));
    }

    #[test]
    fn record_update_uses_managed_fields_the_client_sent() {
        let live = created_by_client_side_apply("x:1");
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{"manager": "imported", "operation": "Update",
            "apiVersion": "apps/v1", "time": T0, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
        new["spec"]["paused"] = json!(true);
        record_update(Some(&live), &mut new, "editor", "Update", None, T1);
        assert!(owns(&new, "imported", "/f:spec/f:replicas"));
        assert!(owns(&new, "editor", "/f:spec/f:paused"));
        assert!(entry(&new, "kubectl-client-side-apply").is_none());
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}},
                "f:finalizers": {"v:\"a\"": {}}}});
        let set = FieldSet::from_fields_v1(&v);
        assert_eq!(set.to_fields_v1(), v);
        let paths: Vec<String> = set.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.containers[name=\"c\"]",
                ".spec.containers[name=\"c\"].image",
                ".spec.finalizers[=\"a\"]"
            ]
        );
    }
}
