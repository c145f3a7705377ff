//! Subresources other than status: scale, binding, eviction, and the streaming ones wasm pods
//! answer with a clear refusal (exec, attach, portforward).

use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::codec;
use crate::errors::ApiError;
use crate::object;
use crate::patch;
use crate::rest::{self, respond, Ctx};
use crate::storage::StorageError;

pub async fn handle(
    ctx: &Ctx<'_>,
    method: &Method,
    sub: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let def = ctx.def();
    if !def.has_subresource(sub) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    match (sub, method.as_str()) {
        ("status", "GET") => rest::get(ctx).await,
        ("status", "PUT") => rest::update(ctx, body, Some("status")).await,
        ("status", "PATCH") => rest::patch(ctx, body, Some("status")).await,
        ("scale", "GET" | "PUT" | "PATCH") => scale(ctx, method, body).await,
        ("binding", "POST") => binding(ctx, body).await,
        ("eviction", "POST") => eviction(ctx, body).await,
        ("exec" | "attach", _) => Err(ApiError::bad_request(format!(
            "pod {:?} runs WebAssembly: wasm containers have no shell or process to {sub} into; use `kubectl logs` to see their output",
            ctx.target.name.as_deref().unwrap_or("")
        ))),
        ("portforward", _) => Err(ApiError::bad_request(
            "port-forward to wasm pods is not supported yet: reach the pod through a Service",
        )),
        ("log", "GET") => crate::podlog::pod_log(ctx).await,
        ("finalize", "PUT") => rest::update(ctx, body, None).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}/{sub}",
            def.plural
        ))),
    }
}

/// The `autoscaling/v1` Scale view of an object with `spec.replicas`.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": object::name(obj),
            "namespace": object::namespace(obj),
            "uid": object::meta_str(obj, "uid"),
            "resourceVersion": object::resource_version(obj),
            "creationTimestamp": object::meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// A label selector object as the string form (`a=b,c in (d)`) Scale carries.
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let vals: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", vals.join(",")),
            Some("NotIn") => format!("{key} notin ({})", vals.join(",")),
            Some("Exists") => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

async fn scale(ctx: &Ctx<'_>, method: &Method, body: &Bytes) -> Result<Response, ApiError> {
    let (group, plural, name) = (
        ctx.def().group,
        ctx.def().plural,
        ctx.target.name.clone().unwrap_or_default(),
    );
    let store = ctx.server.store.as_ref();
    let key = rest::key(ctx.def(), ctx.target.namespace.as_deref(), &name);
    loop {
        let kv = store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_storage(e, group, plural, &name))?
            .ok_or_else(|| ApiError::not_found(group, plural, &name))?;
        let mut obj = codec::from_stored(&kv, ctx.def().storage_def())?;
        let current = scale_of(&obj);
        if method == Method::GET {
            return Ok(respond(StatusCode::OK, &current, &[]));
        }
        let wanted = if method == Method::PUT {
            codec::parse_body(ctx.headers, body)?
        } else {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            match codec::content_type(ctx.headers)
                .split(';')
                .next()
                .unwrap_or("")
            {
                "application/json-patch+json" => patch::json_patch(&current, &p).map_err(|e| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string())
                })?,
                _ => patch::merge_patch(&current, &p),
            }
        };
        let rv = object::resource_version(&wanted);
        if method == Method::PUT && !rv.is_empty() && rv != kv.mod_revision.to_string() {
            return Err(ApiError::from_storage(
                StorageError::Conflict {
                    key: key.clone(),
                    expected: 0,
                    actual: 0,
                },
                group,
                plural,
                &name,
            ));
        }
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                &name,
                &[crate::errors::FieldError::invalid(
                    "spec.replicas",
                    &json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        if obj.pointer("/spec/replicas").and_then(Value::as_i64) == Some(replicas) {
            return Ok(respond(StatusCode::OK, &current, &[]));
        }
        obj["spec"]["replicas"] = json!(replicas);
        let g = obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        object::meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
        match store
            .update(&key, codec::to_stored(&mut obj), kv.mod_revision)
            .await
        {
            Ok(kv) => {
                codec::set_resource_version(&mut obj, kv.mod_revision);
                return Ok(respond(StatusCode::OK, &scale_of(&obj), &[]));
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_storage(e, group, plural, &name)),
        }
    }
}

fn success(code: StatusCode) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code.as_u16()})
}

/// `pods/binding`: sets `spec.nodeName` once, and the PodScheduled condition.
async fn binding(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response, ApiError> {
    let b = codec::parse_body(ctx.headers, body)?;
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = ctx.target.name.clone().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &name,
            &[crate::errors::FieldError::required("target.name")],
        ));
    }
    let store = ctx.server.store.as_ref();
    let key = rest::key(ctx.def(), ctx.target.namespace.as_deref(), &name);
    loop {
        let kv = store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_storage(e, "", "pods", &name))?
            .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
        let mut pod = codec::from_stored(&kv, ctx.def())?;
        if let Some(uid) = b.pointer("/metadata/uid").and_then(Value::as_str) {
            if uid != object::meta_str(&pod, "uid") {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    "the UID in the binding does not match the pod",
                ));
            }
        }
        if object::is_deleting(&pod) {
            return Err(ApiError::conflict(
                "",
                "pods",
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound.is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods",
                &name,
                &format!("pod {name} is already assigned to node {bound:?}"),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": object::now_rfc3339()});
        let conds = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(cond);
        pod["status"]["conditions"] = json!(conds);
        match store
            .update(&key, codec::to_stored(&mut pod), kv.mod_revision)
            .await
        {
            Ok(_) => {
                rest::trace_pod(&pod, "apiserver.bound");
                return Ok(respond(
                    StatusCode::CREATED,
                    &success(StatusCode::CREATED),
                    &[],
                ));
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_storage(e, "", "pods", &name)),
        }
    }
}

/// `pods/eviction`: deletes the pod with the eviction's DeleteOptions (no disruption budgets yet).
async fn eviction(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response, ApiError> {
    let b = codec::parse_body(ctx.headers, body)?;
    let opts_body = b
        .get("deleteOptions")
        .map(|o| Bytes::from(o.to_string()))
        .unwrap_or_default();
    let opts = rest::delete_options(ctx.params, &opts_body)?;
    rest::delete_object(ctx, &opts).await?;
    Ok(respond(
        StatusCode::CREATED,
        &success(StatusCode::CREATED),
        &[],
    ))
}
