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
    /// e.g. `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas`
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
/// `definition.field` (e.g. `io.k8s.api.core.v1.PodSpec`, `containers` -> `("merge", Some("name"))`).
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
    if let Some(ks) = cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
    {
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
    k == DIRECTIVE || k == RETAIN_KEYS || k.starts_with(SET_ORDER) || k.starts_with(DELETE_PRIMITIVE)
}

fn smp_map(mut original: Map<String, Value>, patch: &Map<String, Value>, ty: Ty) -> Result<Map<String, Value>, PatchError> {
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
            .ok_or_else(|| PatchError::InvalidPatch("$retainKeys must be a list of field names".into()))?;
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
        let Some(field) = k.strip_prefix(SET_ORDER) else { continue };
        let order = order.as_array().ok_or_else(|| {
            PatchError::InvalidPatch(format!("{k} must be a list"))
        })?;
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
        let server_ids: Vec<Option<Value>> = original_list
            .iter()
            .flatten()
            .map(id)
            .collect();
        let merged = match (original_list, patch_list) {
            (None, None) => continue,
            (Some(o), None) => o,
            (o, Some(p)) => smp_list(o.unwrap_or_default(), p, fty)?,
        };
        let order_ids: Vec<Value> = order.iter().filter_map(id).collect();
        let items = merged.into_iter().map(|v| (id(&v), v)).collect();
        original.insert(field.to_string(), Value::Array(order_items(items, &order_ids, &server_ids)));
    }

    for (k, pv) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS || k.starts_with(SET_ORDER) || ordered.contains(&k.as_str()) {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let delete = pv.as_array().ok_or_else(|| {
                PatchError::InvalidPatch(format!("{k} must be a list"))
            })?;
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
            (None, Value::Object(p)) if p.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") => {}
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
fn validate_set_order(patch_list: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<(), PatchError> {
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
fn order_items<I: PartialEq>(items: Vec<(Option<I>, Value)>, patch_order: &[I], server_order: &[Option<I>]) -> Vec<Value> {
    let pos_in_patch = |id: &Option<I>| id.as_ref().and_then(|i| patch_order.iter().position(|p| p == i));
    let pos_in_server = |id: &Option<I>| id.as_ref().and_then(|i| server_order.iter().position(|s| s.as_ref() == Some(i)));
    let (mut from_patch, mut server_only): (Vec<_>, Vec<_>) =
        items.into_iter().partition(|(id, _)| pos_in_patch(id).is_some());
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
            "k:" => Pe::Key(canonical(&serde_json::from_str(rest).ok()?)),
            "v:" => Pe::Value(canonical(&serde_json::from_str(rest).ok()?)),
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
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
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
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
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
    let Some((last, parent)) = path.split_last() else { return };
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
fn collect(v: &Value, ty: Ty, path: &mut Vec<Pe>, set: &mut FieldSet, added: bool, on_bad: OnBadKey) -> Result<(), PatchError> {
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
fn diff(old: Option<&Value>, new: Option<&Value>, ty: Ty, path: &mut Vec<Pe>, changed: &mut FieldSet, removed: &mut FieldSet) {
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
        (Some(o), Some(n)) if o == n => {}
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
                let keyed = |a: &'_ [Value]| -> Option<Vec<Pe>> { a.iter().map(|it| item_key(it, keys)).collect() };
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
        (&a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Some(obj) = obj.as_object_mut() else { return };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
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
pub fn apply(live: Option<&Value>, applied: &Value, manager: &str, force: bool, def: &ResourceDef, now: &str) -> Result<Value, PatchError> {
    let Some(cfg_map) = applied.as_object() else {
        return Err(PatchError::InvalidApply("the apply configuration must be an object".into()));
    };
    if let Some(mf) = cfg_map.get("metadata").and_then(|m| m.get("managedFields")) {
        if !(mf.is_null() || mf.as_array().is_some_and(Vec::is_empty)) {
            return Err(PatchError::InvalidApply("metadata.managedFields must be nil".into()));
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
    let live_plain = live.map(without_managed_fields).unwrap_or_else(|| Value::Object(Map::new()));
    let mut entries = decode_entries(live.and_then(managed_fields));
    if live.is_some() && entries.is_empty() {
        // As upstream: an object written without field tracking is owned by
        // "before-first-apply", so the first apply cannot silently take its fields.
        let mut set = FieldSet::default();
        let _ = collect(&live_plain, ty, &mut Vec::new(), &mut set, true, OnBadKey::Atomic);
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
    collect(&config, ty, &mut Vec::new(), &mut cfg_set, false, OnBadKey::Fail)?;
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
    diff(Some(&live_plain), Some(&merged), ty, &mut Vec::new(), &mut changed, &mut removed);

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
            .map(|(i, c)| (*i, allowed.as_ref().map_or_else(|| c.clone(), |a| c.difference(a))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !remaining.is_empty() {
            return Err(PatchError::Conflict(conflict_error(&entries, &remaining)));
        }
    }
    for (i, c) in &conflicts {
        entries[*i].set = entries[*i].set.difference(c);
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
    annotations.insert(LAST_APPLIED.into(), format!("{}\n", canonical(&last)).into());
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
                    let mut out = l.to_vec();
                    for v in c {
                        if !out.contains(v) {
                            out.push(v.clone());
                        }
                    }
                    let server: Vec<Option<Value>> = l.iter().cloned().map(Some).collect();
                    let items = out.into_iter().map(|v| (Some(v.clone()), v)).collect();
                    Ok(Value::Array(order_items(items, c, &server)))
                }
                ListType::Map(keys) => {
                    let ity = ty.items();
                    let mut out: Vec<(Option<Pe>, Value)> = l.iter().map(|it| (item_key(it, keys), it.clone())).collect();
                    let server: Vec<Option<Pe>> = out.iter().map(|(k, _)| k.clone()).collect();
                    let mut cfg_ids: Vec<Pe> = Vec::with_capacity(c.len());
                    for ci in c {
                        let pe = item_key(ci, keys).ok_or_else(|| bad_key(path, keys, ci))?;
                        if cfg_ids.contains(&pe) {
                            path.push(pe);
                            return Err(PatchError::InvalidApply(format!(
                                "{}: duplicate entries for key in associative list",
                                display_path(path)
                            )));
                        }
                        path.push(pe.clone());
                        match out.iter_mut().find(|(k, _)| k.as_ref() == Some(&pe)) {
                            Some((_, v)) => *v = ssa_merge(v, ci, ity, path)?,
                            None => out.push((Some(pe.clone()), ssa_merge(&Value::Null, ci, ity, path)?)),
                        }
                        path.pop();
                        cfg_ids.push(pe);
                    }
                    Ok(Value::Array(order_items(out, &cfg_ids, &server)))
                }
            }
        }
        _ => Ok(strip_nulls(cfg)),
    }
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
    diff(Some(&last), Some(live), ty, &mut Vec::new(), &mut changed, &mut removed);
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
            by_manager.entry(manager.clone()).or_default().push(field.clone());
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
        format!("Apply failed with {} conflicts: {}", list.len(), lines.join("\n"))
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
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, operation: &str, subresource: Option<&str>, now: &str) {
    if !new.is_object() {
        return;
    }
    let sent = managed_fields(new).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let source = if sent { managed_fields(new) } else { old.and_then(managed_fields) };
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
    diff(old, Some(new), ty, &mut Vec::new(), &mut changed, &mut removed);

    for e in &mut entries {
        e.set = e.set.difference(&changed);
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
        x.iter().filter(|(k, _)| !owned(k)).all(|(k, v)| y.get(k) == Some(v))
            && y.iter().filter(|(k, _)| !owned(k)).all(|(k, _)| x.contains_key(k))
    };
    let top_eq = |x: &Map<String, Value>, y: &Map<String, Value>| {
        x.iter()
            .filter(|(k, _)| *k != "metadata")
            .all(|(k, v)| y.get(k) == Some(v))
    };
    top_eq(a, b) && top_eq(b, a) && meta_eq(a.get("metadata"), b.get("metadata"))
}
