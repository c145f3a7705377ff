//! TEMPORARY bridge to modules being written in parallel (patch, registry, tables, openapi).
//! Replaced by direct calls when they land; nothing here ships.
#![allow(dead_code, unused_variables)]
use serde_json::{json, Value};

use crate::errors::FieldError;
use crate::resources::ResourceDef;

pub fn columns(def: &ResourceDef) -> Vec<Value> {
    vec![
        json!({"name":"Name","type":"string","format":"name","description":"","priority":0}),
        json!({"name":"Age","type":"string","format":"","description":"","priority":0}),
    ]
}
pub fn cells(def: &ResourceDef, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![json!(crate::object::name(obj)), json!("0s")]
}
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {}
pub fn validate_create(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    vec![]
}
pub fn validate_update(def: &ResourceDef, obj: &Value, old: &Value) -> Vec<FieldError> {
    vec![]
}
pub fn validate_status_update(def: &ResourceDef, obj: &Value, old: &Value) -> Vec<FieldError> {
    vec![]
}
#[derive(Debug)]
pub struct PatchError(pub String);
impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError(e.to_string()))?;
    let mut d = doc.clone();
    json_patch::patch(&mut d, &p).map_err(|e| PatchError(e.to_string()))?;
    Ok(d)
}
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut d = doc.clone();
    json_patch::merge(&mut d, patch);
    d
}
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    def: &ResourceDef,
) -> Result<Value, PatchError> {
    Ok(merge_patch(doc, patch))
}
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    def: &ResourceDef,
    now: &str,
) -> Result<Value, PatchError> {
    Ok(match live {
        Some(l) => merge_patch(l, applied),
        None => applied.clone(),
    })
}
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) {
}
pub fn openapi_index() -> Value {
    json!({"paths": {}})
}
pub fn openapi_document(path: &str) -> Option<Value> {
    None
}
