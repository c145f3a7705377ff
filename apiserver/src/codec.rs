//! Decoding request bodies (JSON or YAML, unknown fields per `fieldValidation`) and encoding
//! stored objects for responses (resourceVersion, version conversion, Tables).

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::convert::convert;
use crate::errors::ApiError;
use crate::request::FieldValidation;
use crate::resources::ResourceDef;
use crate::storage::KeyValue;
use crate::tables;

/// Parses a body as JSON, or YAML when the content type says so.
pub fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    if ct.starts_with(crate::protobuf::CONTENT_TYPE) {
        // kubectl's typed commands (`create namespace`, `create configmap`, ...) send protobuf.
        return crate::protobuf::decode(body).map_err(|e| ApiError::bad_request(e.to_string()));
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
        serde_yaml::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

/// Checks `apiVersion`/`kind` against the resource and decodes through the typed struct.
/// Unknown fields fail (Strict), become warnings (Warn) or are dropped (Ignore), as upstream's
/// decoder does for built-in types. Returns the object and the warnings.
pub fn decode_object(
    def: &ResourceDef,
    obj: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    // A body without kind/apiVersion takes them from the endpoint, as upstream's decoder does
    // with its default GVK (the Python client's models leave them out).
    let expected = def.api_version();
    let kind = if kind.is_empty() { def.kind } else { kind };
    if kind != def.kind || (!api_version.is_empty() && api_version != expected) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected})"
        ))
        .with_kind_message(def, kind, api_version));
    }
    let mut input = obj;
    input["apiVersion"] = Value::String(expected.clone());
    input["kind"] = Value::String(def.kind.to_string());
    let typed = (def.typed.roundtrip)(&input).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(&input, &typed, "", &mut unknown);
    if unknown.is_empty() {
        return Ok((typed, Vec::new()));
    }
    let described: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match validation {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            def.kind,
            def.version,
            def.kind,
            described.join(", ")
        ))),
        FieldValidation::Warn => Ok((typed, described)),
        FieldValidation::Ignore => Ok((typed, Vec::new())),
    }
}

trait KindMessage {
    fn with_kind_message(self, def: &ResourceDef, kind: &str, api_version: &str) -> Self;
}

impl KindMessage for ApiError {
    /// A body of another kind gets upstream's "cannot be handled as" message.
    fn with_kind_message(mut self, def: &ResourceDef, kind: &str, api_version: &str) -> Self {
        if kind != def.kind {
            self.message = format!(
                "{kind} in version \"{}\" cannot be handled as a {}: no kind \"{kind}\" is registered for version \"{}\"",
                api_version.rsplit('/').next().unwrap_or(""),
                def.kind,
                api_version
            );
        }
        self
    }
}

/// Paths present (and not null) in `input` but missing from the typed roundtrip `typed`.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(bv) => unknown_fields(v, bv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes a stored value, sets `metadata.resourceVersion` and converts it to `def`'s version.
pub fn from_stored(kv: &KeyValue, def: &ResourceDef) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(convert(obj, def.storage_def(), def))
}

pub fn set_resource_version(obj: &mut Value, rv: u64) {
    crate::object::meta_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

/// The bytes stored for an object: without `resourceVersion`, which is the store's revision (it
/// is removed from `obj`; callers set the new one from the write's revision).
pub fn to_stored(obj: &mut Value) -> Bytes {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(obj).expect("a Value always serializes"))
}

/// A `List` of objects in `def`'s version.
pub fn list(def: &ResourceDef, items: Vec<Value>, rv: u64, cont: Option<String>) -> Value {
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    if let Some(c) = cont {
        meta.insert("continue".into(), Value::String(c));
    }
    json!({
        "kind": def.list_kind,
        "apiVersion": def.api_version(),
        "metadata": meta,
        "items": items,
    })
}

/// A `meta.k8s.io/v1` Table of objects with upstream's columns.
pub fn table(def: &ResourceDef, items: &[Value], rv: Option<u64>, cont: Option<String>) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": tables::cells(def, o, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                },
            })
        })
        .collect();
    let mut meta = Map::new();
    if let Some(rv) = rv {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    if let Some(c) = cont {
        meta.insert("continue".into(), Value::String(c));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": tables::columns(def),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn pod(extra: Value) -> Value {
        let mut p = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","creationTimestamp":null},
            "spec":{"containers":[{"name":"c","image":"i"}]},"status":{}});
        if let (Some(m), Value::Object(e)) = (p["spec"].as_object_mut(), extra) {
            m.extend(e);
        }
        p
    }

    #[test]
    fn strict_rejects_unknown_fields_with_their_paths() {
        let def = find("", "v1", "pods").unwrap();
        let err =
            decode_object(def, pod(json!({"bogus": 1})), FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, http::StatusCode::BAD_REQUEST);
        assert!(
            err.message
                .contains(r#"strict decoding error: unknown field "spec.bogus""#),
            "{}",
            err.message
        );
    }

    #[test]
    fn warn_keeps_going_and_ignore_drops_silently() {
        let def = find("", "v1", "pods").unwrap();
        let (obj, warnings) =
            decode_object(def, pod(json!({"bogus": 1})), FieldValidation::Warn).unwrap();
        assert_eq!(warnings, vec![r#"unknown field "spec.bogus""#.to_string()]);
        assert!(obj["spec"].get("bogus").is_none());
        let (_, warnings) =
            decode_object(def, pod(json!({"bogus": 1})), FieldValidation::Ignore).unwrap();
        assert!(warnings.is_empty());
    }

    #[test]
    fn nulls_are_not_unknown_fields() {
        let def = find("", "v1", "pods").unwrap();
        let (_, w) = decode_object(def, pod(json!({})), FieldValidation::Strict).unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn wrong_kind_is_a_bad_request() {
        let def = find("", "v1", "pods").unwrap();
        let err = decode_object(
            def,
            json!({"apiVersion":"v1","kind":"Service"}),
            FieldValidation::Strict,
        )
        .unwrap_err();
        assert!(
            err.message.contains("cannot be handled as a Pod"),
            "{}",
            err.message
        );
    }
}
