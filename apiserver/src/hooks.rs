//! TEMPORARY bridge to modules being written in parallel (patch, registry, tables, openapi).
//! Replaced by direct calls when they land; nothing here ships.
#![allow(dead_code, unused_variables)]
use serde_json::Value;

use crate::errors::FieldError;
use crate::resources::ResourceDef;

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
