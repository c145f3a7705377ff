//! The verbs on objects: get, list, create, update, patch, delete, deletecollection.
//! Objects are stored as JSON in their storage version; see `codec` and `strategy`.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::codec;
use crate::convert::convert;
use crate::errors::ApiError;
use crate::object;
use crate::patch;
use crate::registry;
use crate::request::{wants_table, Params, Target};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::{KeyValue, ListOptions, Storage, StorageError};
use crate::strategy;
use crate::ApiServer;

/// The storage key of an object.
pub fn key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{}/{ns}/{name}", def.storage),
        _ => format!("{}/{name}", def.storage),
    }
}

/// The key prefix of a collection: one namespace, or all of them.
pub fn prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("{}/{ns}/", def.storage),
        _ => format!("{}/", def.storage),
    }
}

/// A JSON response with optional `Warning` headers.
pub fn respond(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, axum::Json(body)).into_response();
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    resp
}

/// The request a verb serves.
pub struct Ctx<'a> {
    pub server: &'a Arc<ApiServer>,
    pub target: &'a Target,
    pub params: &'a Params,
    pub headers: &'a HeaderMap,
}

impl Ctx<'_> {
    pub fn def(&self) -> &'static ResourceDef {
        self.target.def
    }
    fn store(&self) -> &dyn Storage {
        self.server.store.as_ref()
    }
    fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }
    fn key(&self) -> String {
        key(self.def(), self.target.namespace.as_deref(), self.name())
    }
    fn storage_err(&self, e: StorageError) -> ApiError {
        ApiError::from_storage(e, self.def().group, self.def().plural, self.name())
    }
    /// Reads the object in the storage version, with its resourceVersion.
    async fn read(&self) -> Result<(KeyValue, Value), ApiError> {
        let kv = self
            .store()
            .get(&self.key())
            .await
            .map_err(|e| self.storage_err(e))?
            .ok_or_else(|| ApiError::not_found(self.def().group, self.def().plural, self.name()))?;
        let obj = codec::from_stored(&kv, self.def().storage_def())?;
        Ok((kv, obj))
    }
    /// Converts a storage-version object to the request's version.
    fn out(&self, obj: Value) -> Value {
        convert(obj, self.def().storage_def(), self.def())
    }
    fn respond_object(&self, code: StatusCode, obj: Value, warnings: &[String]) -> Response {
        let obj = self.out(obj);
        if wants_table(self.headers) {
            return respond(
                code,
                &codec::table(self.def(), &[obj], None, None),
                warnings,
            );
        }
        respond(code, &obj, warnings)
    }
}

pub async fn get(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let (_, obj) = ctx.read().await?;
    Ok(ctx.respond_object(StatusCode::OK, obj, &[]))
}

/// The continue token: the revision of the first page and the last key returned, as upstream
/// encodes them (base64 JSON), so every page reads the same snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    start: String,
}

/// Reads one list (all pages up to `limit` matching items) with the request's selectors.
pub async fn list_items(ctx: &Ctx<'_>) -> Result<(Vec<Value>, u64, Option<String>), ApiError> {
    let def = ctx.def();
    let labels = LabelSelector::parse(ctx.params.str("labelSelector"))?;
    let fields = FieldSelector::parse(ctx.params.str("fieldSelector"), def)?;
    let limit = ctx.params.u64("limit")?.unwrap_or(0) as usize;
    let pfx = prefix(def, ctx.target.namespace.as_deref());
    let (mut start_after, mut revision) = (None, None);
    if let Some(token) = ctx.params.get("continue").filter(|c| !c.is_empty()) {
        let c: Continue = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        start_after = Some(format!("{pfx}{}", c.start));
        revision = Some(c.rv);
    } else if ctx.params.str("resourceVersionMatch") == "Exact" {
        revision = ctx.params.u64("resourceVersion")?;
    }
    // A field selector on metadata.name reads one key instead of the whole prefix.
    let only_key = fields.name().map(|n| format!("{pfx}{n}"));
    let mut items = Vec::new();
    loop {
        let page_limit = if limit == 0 {
            0
        } else {
            (limit - items.len()).max(1)
        };
        let page = ctx
            .store()
            .list(ListOptions {
                prefix: only_key.clone().unwrap_or_else(|| pfx.clone()),
                start_after: start_after.clone(),
                limit: Some(page_limit),
                revision,
            })
            .await
            .map_err(|e| ctx.storage_err(e))?;
        revision = Some(page.revision);
        for kv in &page.items {
            if only_key.as_deref().is_some_and(|k| k != kv.key) {
                continue;
            }
            start_after = Some(kv.key.clone());
            let obj = codec::from_stored(kv, def)?;
            if labels.matches(&object::labels(&obj)) && fields.matches(&obj) {
                items.push(obj);
            }
        }
        let rv = page.revision;
        if !page.more {
            return Ok((items, rv, None));
        }
        if limit != 0 && items.len() >= limit {
            let last = start_after.unwrap_or_default();
            let token = serde_json::to_vec(&Continue {
                rv,
                start: last.strip_prefix(&pfx).unwrap_or(&last).to_string(),
            })
            .expect("serializable");
            return Ok((
                items,
                rv,
                Some(base64::engine::general_purpose::STANDARD.encode(token)),
            ));
        }
    }
}

pub async fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let (items, rv, cont) = list_items(ctx).await?;
    let body = if wants_table(ctx.headers) {
        codec::table(ctx.def(), &items, Some(rv), cont)
    } else {
        codec::list(ctx.def(), items, rv, cont)
    };
    Ok(respond(StatusCode::OK, &body, &[]))
}

/// The alphabet upstream uses for generated name suffixes (no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_name(base: &str) -> String {
    let base: String = base.chars().take(63 - 5).collect();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rand_index(NAME_ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

fn rand_index(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n as u128) as usize
}

/// Decodes the body into the storage version, checking namespace and name against the URL.
fn decode_for_write(ctx: &Ctx<'_>, body: &Bytes) -> Result<(Value, Vec<String>), ApiError> {
    let def = ctx.def();
    let raw = codec::parse_body(ctx.headers, body)?;
    let (obj, warnings) = codec::decode_object(def, raw, ctx.params.field_validation()?)?;
    let mut obj = convert(obj, def, def.storage_def());
    check_namespace(ctx, &mut obj)?;
    Ok((obj, warnings))
}

fn check_namespace(ctx: &Ctx<'_>, obj: &mut Value) -> Result<(), ApiError> {
    let def = ctx.def();
    let meta = object::meta_mut(obj);
    if def.namespaced {
        let url_ns = ctx.target.namespace.as_deref().unwrap_or("");
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !body_ns.is_empty() && body_ns != url_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(url_ns));
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// NamespaceLifecycle admission: namespaced objects go only into live namespaces.
async fn check_namespace_accepts(ctx: &Ctx<'_>, ns: &str) -> Result<(), ApiError> {
    if ctx.server.namespaces.get(ns) == Some(false) {
        return Ok(());
    }
    // Not known live to the cache (new, deleting, or gone): ask the store.
    let kv = ctx
        .store()
        .get(&format!("namespaces/{ns}"))
        .await
        .map_err(|e| ctx.storage_err(e))?
        .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
    // Only the deletion timestamp matters: skip decoding the rest of the namespace.
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "deletionTimestamp")]
        deletion: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Ns {
        metadata: Meta,
    }
    let deleting =
        serde_json::from_slice::<Ns>(&kv.value).is_ok_and(|n| n.metadata.deletion.is_some());
    if deleting {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                ctx.def().qualified_plural(),
                ctx.name()
            ),
        )
        .with_details(json!({"name": ctx.name(), "group": ctx.def().group, "kind": ctx.def().plural,
            "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})));
    }
    Ok(())
}

/// StorageObjectInUseProtection admission: claims and volumes are created with the finalizer
/// that the pvc-/pv-protection controllers remove once nothing uses them, so deleting a claim
/// a pod still mounts (or a bound volume) leaves it `Terminating` instead of losing its data.
fn admit_storage_object_in_use_protection(def: &ResourceDef, obj: &mut Value) {
    let finalizer = match (def.group, def.storage) {
        ("", "persistentvolumeclaims") => "kubernetes.io/pvc-protection",
        ("", "persistentvolumes") => "kubernetes.io/pv-protection",
        _ => return,
    };
    let meta = object::meta_mut(obj);
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut() {
        if !list.iter().any(|f| f.as_str() == Some(finalizer)) {
            list.push(json!(finalizer));
        }
    }
}

/// DefaultStorageClass admission: a claim created without a class (no `spec.storageClassName`
/// and no beta `volume.beta.kubernetes.io/storage-class` annotation; an explicit `""` means "no
/// class") gets the default class. With several defaults the newest wins, then the first name,
/// as upstream 1.28+.
async fn admit_default_storage_class(ctx: &Ctx<'_>, obj: &mut Value) -> Result<(), ApiError> {
    const DEFAULT: &str = "storageclass.kubernetes.io/is-default-class";
    const BETA_DEFAULT: &str = "storageclass.beta.kubernetes.io/is-default-class";
    let has_class = obj
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null())
        || obj
            .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .is_some();
    if has_class {
        return Ok(());
    }
    let page = ctx
        .store()
        .list(ListOptions {
            prefix: "storageclasses/".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| ctx.storage_err(e))?;
    let mut defaults: Vec<(String, String)> = Vec::new();
    for kv in &page.items {
        let Ok(class) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let annotations = &class["metadata"]["annotations"];
        let is_default = [DEFAULT, BETA_DEFAULT]
            .iter()
            .any(|a| annotations[a].as_str() == Some("true"));
        if is_default {
            let created = object::meta_str(&class, "creationTimestamp").to_string();
            defaults.push((created, object::name(&class).to_string()));
        }
    }
    // Newest first (RFC 3339 in UTC sorts as text), then by name.
    defaults.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    if let Some((_, name)) = defaults.into_iter().next() {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("storageClassName".into(), json!(name));
        }
    }
    Ok(())
}

fn invalid(ctx: &Ctx<'_>, obj: &Value, errors: &[crate::errors::FieldError]) -> ApiError {
    ApiError::invalid(ctx.def().group, ctx.def().kind, object::name(obj), errors)
}

pub async fn create(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response, ApiError> {
    let (obj, warnings) = decode_for_write(ctx, body)?;
    let obj = create_object(ctx, obj, true).await?;
    Ok(ctx.respond_object(StatusCode::CREATED, obj, &warnings))
}

/// Creates `obj` (storage version): names, server fields, defaults, validation, admission, store.
/// `record`: whether this write records an `Update` managedFields entry (apply records its own).
async fn create_object(ctx: &Ctx<'_>, mut obj: Value, record: bool) -> Result<Value, ApiError> {
    let def = ctx.def().storage_def();
    let generate = object::meta_str(&obj, "generateName").to_string();
    let explicit = !object::name(&obj).is_empty();
    if !explicit && generate.is_empty() {
        return Err(invalid(
            ctx,
            &obj,
            &[crate::errors::FieldError::required_msg(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    let now = object::now_rfc3339();
    strategy::prepare_create(def, &mut obj, &uuid::Uuid::new_v4().to_string(), &now);
    registry::apply_defaults(def, &mut obj);
    if record {
        let manager = ctx.params.field_manager(ctx.headers);
        patch::record_update(None, &mut obj, &manager, "Update", None, &now);
    }
    if def.namespaced {
        check_namespace_accepts(ctx, object::namespace(&obj)).await?;
    }
    if def.storage == "persistentvolumeclaims" {
        admit_default_storage_class(ctx, &mut obj).await?;
    }
    admit_storage_object_in_use_protection(def, &mut obj);
    // A generated name that collides is generated again, as upstream retries.
    for attempt in 0..5 {
        if !explicit {
            object::meta_mut(&mut obj).insert("name".into(), json!(generate_name(&generate)));
        }
        let errors = registry::validate_create(def, &obj);
        if !errors.is_empty() {
            return Err(invalid(ctx, &obj, &errors));
        }
        let name = object::name(&obj).to_string();
        let key = key(def, Some(object::namespace(&obj)), &name);
        if ctx.params.dry_run()? {
            return Ok(obj);
        }
        // Services get their ClusterIP and node ports here (upstream's service REST).
        let taken = if def.storage == "services" {
            let store = ctx.store();
            ctx.server.services.allocate(store, &mut obj, None).await?
        } else {
            Vec::new()
        };
        let is_pod = def.storage == "pods";
        if is_pod {
            trace_pod(&obj, "apiserver.create");
        }
        let created = ctx.store().create(&key, codec::to_stored(&mut obj)).await;
        if created.is_err() {
            ctx.server.services.release(ctx.store(), &taken).await;
        }
        match created {
            Ok(kv) => {
                codec::set_resource_version(&mut obj, kv.mod_revision);
                if is_pod {
                    trace_pod(&obj, "apiserver.stored");
                }
                return Ok(obj);
            }
            Err(StorageError::AlreadyExists(_)) if !explicit && attempt < 4 => continue,
            Err(e) => {
                return Err(ApiError::from_storage(
                    e,
                    def.group,
                    ctx.def().plural,
                    &name,
                ))
            }
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// A pod-start trace event (`wasmkube::trace`, DEBUG; see `wasmkube trace pod`): `stage` of the
/// pod `obj`. Costs a filter check when the target is off.
pub(crate) fn trace_pod(obj: &Value, stage: &'static str) {
    tracing::debug!(
        target: "wasmkube::trace",
        stage,
        pod_uid = object::meta_str(obj, "uid"),
        pod = %format_args!("{}/{}", object::namespace(obj), object::name(obj)),
    );
}

/// What an update starts from: the stored object and its revision.
struct Current {
    kv: KeyValue,
    obj: Value,
}

/// Writes `new` (storage version, built from `cur`) with a compare-and-swap on `cur`'s revision.
/// Returns `Ok(None)` on a conflict the caller should retry by re-reading.
async fn write_update(
    ctx: &Ctx<'_>,
    cur: &Current,
    mut new: Value,
    sub: Option<&str>,
    record: bool,
) -> Result<Option<Value>, ApiError> {
    let def = ctx.def().storage_def();
    strategy::prepare_update(def, &cur.obj, &mut new, sub);
    registry::apply_defaults(def, &mut new);
    let errors = if sub == Some("status") {
        registry::validate_status_update(def, &new, &cur.obj)
    } else {
        registry::validate_update(def, &new, &cur.obj)
    };
    if !errors.is_empty() {
        return Err(invalid(ctx, &new, &errors));
    }
    if record {
        let now = object::now_rfc3339();
        let manager = ctx.params.field_manager(ctx.headers);
        patch::record_update(Some(&cur.obj), &mut new, &manager, "Update", sub, &now);
    }
    codec::set_resource_version(&mut new, cur.kv.mod_revision);
    if new == cur.obj {
        // A no-op update writes nothing and keeps the resourceVersion, as upstream.
        return Ok(Some(new));
    }
    if ctx.params.dry_run()? {
        return Ok(Some(new));
    }
    // Removing the last finalizer of an object being deleted completes the deletion, unless
    // it is still in its grace period (a terminating pod's status updates must not delete it):
    // upstream's `ShouldDeleteDuringUpdate`.
    let in_grace = cur
        .obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g > 0);
    let finished = object::is_deleting(&cur.obj)
        && !in_grace
        && object::finalizers(&new).is_empty()
        && !namespace_pending(&new);
    let services = def.storage == "services" && sub.is_none();
    let taken = if services && !finished {
        let store = ctx.store();
        ctx.server
            .services
            .allocate(store, &mut new, Some(&cur.obj))
            .await?
    } else {
        Vec::new()
    };
    let written = if finished {
        ctx.store()
            .delete(&cur.kv.key, Some(cur.kv.mod_revision))
            .await
    } else {
        let bytes = codec::to_stored(&mut new);
        ctx.store()
            .update(&cur.kv.key, bytes, cur.kv.mod_revision)
            .await
    };
    let allocator = &ctx.server.services;
    match &written {
        Ok(_) if def.storage == "services" => {
            let kept = (!finished).then_some(&new);
            allocator.release_dropped(ctx.store(), &cur.obj, kept).await;
        }
        Ok(_) => {}
        Err(_) => allocator.release(ctx.store(), &taken).await,
    }
    match written {
        Ok(kv) => {
            codec::set_resource_version(&mut new, kv.mod_revision);
            Ok(Some(new))
        }
        Err(StorageError::Conflict { .. }) => Ok(None),
        Err(e) => Err(ctx.storage_err(e)),
    }
}

/// A namespace keeps existing while `spec.finalizers` remain.
fn namespace_pending(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("Namespace")
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

async fn read_current(ctx: &Ctx<'_>) -> Result<Option<Current>, ApiError> {
    let kv = ctx
        .store()
        .get(&ctx.key())
        .await
        .map_err(|e| ctx.storage_err(e))?;
    match kv {
        None => Ok(None),
        Some(kv) => {
            let obj = codec::from_stored(&kv, ctx.def().storage_def())?;
            Ok(Some(Current { kv, obj }))
        }
    }
}

fn conflict(ctx: &Ctx<'_>) -> ApiError {
    ctx.storage_err(StorageError::Conflict {
        key: ctx.key(),
        expected: 0,
        actual: 0,
    })
}

/// PUT on an object or its status.
pub async fn update(ctx: &Ctx<'_>, body: &Bytes, sub: Option<&str>) -> Result<Response, ApiError> {
    let (obj, warnings) = decode_for_write(ctx, body)?;
    if object::name(&obj) != ctx.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            object::name(&obj),
            ctx.name()
        )));
    }
    let wanted_rv = object::resource_version(&obj).to_string();
    loop {
        let Some(cur) = read_current(ctx).await? else {
            if strategy::allow_create_on_update(ctx.def()) && sub.is_none() {
                let created = create_object(ctx, obj, true).await?;
                return Ok(ctx.respond_object(StatusCode::CREATED, created, &warnings));
            }
            return Err(ApiError::not_found(
                ctx.def().group,
                ctx.def().plural,
                ctx.name(),
            ));
        };
        if !wanted_rv.is_empty() && wanted_rv != cur.kv.mod_revision.to_string() {
            return Err(conflict(ctx));
        }
        if let Some(done) = write_update(ctx, &cur, obj.clone(), sub, true).await? {
            return Ok(ctx.respond_object(StatusCode::OK, done, &warnings));
        }
        if !wanted_rv.is_empty() {
            return Err(conflict(ctx));
        }
    }
}

/// PATCH on an object or its status: json, merge, strategic merge or apply.
pub async fn patch(ctx: &Ctx<'_>, body: &Bytes, sub: Option<&str>) -> Result<Response, ApiError> {
    let def = ctx.def();
    let ct = codec::content_type(ctx.headers).to_string();
    let kind = ct.split(';').next().unwrap_or("").trim().to_string();
    let patch_body: Value = match kind.as_str() {
        "application/apply-patch+yaml" => codec::parse_body(ctx.headers, body)?,
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let validation = ctx.params.field_validation()?;
    let manager = ctx.params.field_manager(ctx.headers);
    let is_apply = kind == "application/apply-patch+yaml";
    if is_apply && ctx.params.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    loop {
        let cur = read_current(ctx).await?;
        let Some(cur) = cur else {
            if is_apply && sub.is_none() {
                let now = object::now_rfc3339();
                let applied = patch::apply(
                    None,
                    &patch_body,
                    &manager,
                    ctx.params.flag("force"),
                    def,
                    &now,
                )
                .map_err(|e| patch_error(ctx, e))?;
                let (obj, warnings) = codec::decode_object(def, applied, validation)?;
                let mut obj = convert(obj, def, def.storage_def());
                check_namespace(ctx, &mut obj)?;
                if object::name(&obj).is_empty() {
                    object::meta_mut(&mut obj).insert("name".into(), json!(ctx.name()));
                }
                let created = create_object(ctx, obj, false).await?;
                return Ok(ctx.respond_object(StatusCode::CREATED, created, &warnings));
            }
            return Err(ApiError::not_found(def.group, def.plural, ctx.name()));
        };
        // Patches apply to the object in the request's version.
        let live = ctx.out(cur.obj.clone());
        let patched = match kind.as_str() {
            "application/json-patch+json" => patch::json_patch(&live, &patch_body),
            "application/merge-patch+json" => Ok(patch::merge_patch(&live, &patch_body)),
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge_patch(&live, &patch_body, def)
            }
            _ => patch::apply(
                Some(&live),
                &patch_body,
                &manager,
                ctx.params.flag("force"),
                def,
                &object::now_rfc3339(),
            ),
        }
        .map_err(|e| patch_error(ctx, e))?;
        let wanted_rv = object::resource_version(&patched).to_string();
        if !wanted_rv.is_empty() && wanted_rv != cur.kv.mod_revision.to_string() {
            return Err(conflict(ctx));
        }
        let (obj, warnings) = codec::decode_object(def, patched, validation)?;
        let mut obj = convert(obj, def, def.storage_def());
        check_namespace(ctx, &mut obj)?;
        if object::name(&obj) != ctx.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                object::name(&obj),
                ctx.name()
            )));
        }
        if let Some(done) = write_update(ctx, &cur, obj, sub, !is_apply).await? {
            return Ok(ctx.respond_object(StatusCode::OK, done, &warnings));
        }
    }
}

fn patch_error(ctx: &Ctx<'_>, e: patch::PatchError) -> ApiError {
    use patch::PatchError as P;
    let details = json!({"name": ctx.name(), "group": ctx.def().group, "kind": ctx.def().plural});
    match e {
        P::Conflict(c) => {
            let mut d = details;
            d["causes"] = json!(c.causes());
            ApiError::new(StatusCode::CONFLICT, "Conflict", c.message).with_details(d)
        }
        P::JsonPatchFailed(_) | P::InvalidApply(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
                .with_details(details)
        }
        P::InvalidPatch(_) | P::MissingMergeKey { .. } | P::BadDirective(_) => {
            ApiError::bad_request(e.to_string())
        }
    }
}

/// DeleteOptions from the body (or the query, which kubectl also uses).
#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

pub fn delete_options(params: &Params, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        grace_period: params.i64("gracePeriodSeconds")?,
        propagation: params.get("propagationPolicy").map(str::to_string),
        ..Default::default()
    };
    if params.get("orphanDependents") == Some("true") {
        o.propagation = Some("Orphan".into());
    }
    if !body.is_empty() {
        let b: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace_period = Some(g);
        }
        if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            o.propagation = Some("Orphan".into());
        }
        o.uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    match o.propagation.as_deref() {
        None | Some("Background" | "Foreground" | "Orphan") => Ok(o),
        Some(p) => Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            &[crate::errors::FieldError::not_supported(
                "propagationPolicy",
                &json!(p),
                &["Foreground", "Background", "Orphan"],
            )],
        )),
    }
}

/// The grace period a pod gets: what was asked, else its spec, else 30 s. Unbound and finished
/// pods go at once, as upstream (no kubelet has to stop them).
fn pod_grace(obj: &Value, asked: Option<i64>) -> i64 {
    let spec_grace = obj
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj.pointer("/status/phase").and_then(Value::as_str);
    if !bound || matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    asked.unwrap_or(spec_grace).max(0)
}

pub async fn delete(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response, ApiError> {
    let opts = delete_options(ctx.params, body)?;
    let obj = delete_object(ctx, &opts).await?;
    Ok(ctx.respond_object(StatusCode::OK, obj, &[]))
}

/// Deletes (or starts deleting) the target object; returns it as it was left.
pub async fn delete_object(ctx: &Ctx<'_>, opts: &DeleteOptions) -> Result<Value, ApiError> {
    let def = ctx.def().storage_def();
    loop {
        let Some(cur) = read_current(ctx).await? else {
            return Err(ApiError::not_found(
                ctx.def().group,
                ctx.def().plural,
                ctx.name(),
            ));
        };
        let mut obj = cur.obj.clone();
        if let Some(uid) = &opts.uid {
            let have = object::meta_str(&obj, "uid");
            if uid != have {
                return Err(ctx_conflict(
                    ctx,
                    &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            let have = object::resource_version(&obj);
            if rv != have {
                return Err(ctx_conflict(ctx, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                )));
            }
        }
        let grace = if def.storage == "pods" {
            pod_grace(&obj, opts.grace_period)
        } else {
            0
        };
        let mut finalizers = object::finalizers(&obj);
        match opts.propagation.as_deref() {
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            _ => {}
        }
        let ns_pending = namespace_pending(&obj);
        let already = object::is_deleting(&obj);
        if grace > 0 || !finalizers.is_empty() || ns_pending {
            let now = jiff::Timestamp::now();
            let shorter = grace
                < obj
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
            if already && !shorter && finalizers == object::finalizers(&obj) {
                return Ok(obj);
            }
            let at = now
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .unwrap_or(now)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let meta = object::meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), json!(at));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            meta.insert("finalizers".into(), json!(finalizers));
            if finalizers.is_empty() {
                meta.remove("finalizers");
            }
            if ns_pending {
                obj["status"]["phase"] = json!("Terminating");
            }
            if ctx.params.dry_run()? {
                return Ok(obj);
            }
            match ctx
                .store()
                .update(&cur.kv.key, codec::to_stored(&mut obj), cur.kv.mod_revision)
                .await
            {
                Ok(kv) => {
                    codec::set_resource_version(&mut obj, kv.mod_revision);
                    if ns_pending {
                        ctx.server.namespaces.mark_deleting(object::name(&obj));
                    }
                    return Ok(obj);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(ctx.storage_err(e)),
            }
        }
        if ctx.params.dry_run()? {
            return Ok(obj);
        }
        match ctx
            .store()
            .delete(&cur.kv.key, Some(cur.kv.mod_revision))
            .await
        {
            Ok(kv) => {
                if def.storage == "services" {
                    let allocator = &ctx.server.services;
                    allocator.release_dropped(ctx.store(), &obj, None).await;
                }
                codec::set_resource_version(&mut obj, kv.mod_revision);
                return Ok(obj);
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(StorageError::NotFound(_)) => {
                return Err(ApiError::not_found(
                    ctx.def().group,
                    ctx.def().plural,
                    ctx.name(),
                ))
            }
            Err(e) => return Err(ctx.storage_err(e)),
        }
    }
}

fn ctx_conflict(ctx: &Ctx<'_>, detail: &str) -> ApiError {
    ApiError::conflict(ctx.def().group, ctx.def().plural, ctx.name(), detail)
}

/// DELETE on a collection: deletes every object that matches the selectors.
pub async fn delete_collection(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response, ApiError> {
    let opts = delete_options(ctx.params, body)?;
    let (items, rv, _) = list_items(ctx).await?;
    let mut deleted = Vec::new();
    for item in items {
        let target = Target {
            def: ctx.def(),
            namespace: Some(object::namespace(&item).to_string()).filter(|s| !s.is_empty()),
            name: Some(object::name(&item).to_string()),
            subresource: None,
        };
        let one = Ctx {
            target: &target,
            ..*ctx
        };
        match delete_object(&one, &opts).await {
            Ok(o) => deleted.push(ctx.out(o)),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(respond(
        StatusCode::OK,
        &codec::list(ctx.def(), deleted, rv, None),
        &[],
    ))
}
