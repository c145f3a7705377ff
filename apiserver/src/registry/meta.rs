//! Names, labels, annotations, selectors and `ObjectMeta`: apimachinery's `validation` package
//! (`IsDNS1123Subdomain`, `IsQualifiedName`, ...) and `ValidateObjectMeta`, plus small JSON
//! accessors shared by the other files.

use serde_json::{Map, Value};

use crate::errors::FieldError;
use crate::resources::ResourceDef;

// ---------------------------------------------------------------------------------------------
// JSON accessors and paths
// ---------------------------------------------------------------------------------------------

/// `obj[key]` as a string, if it is one.
pub fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `obj[key]` as an integer, if it is one.
pub fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// `obj[key]` as an array (empty when absent or not an array).
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `obj[key]` as an object, if it is one.
pub fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

pub fn is_true(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool) == Some(true)
}

/// `obj[key]`, created as `{}` when absent or not an object; `None` when `v` is not an object.
pub fn child_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = v.as_object_mut()?;
    let entry = m.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    Some(entry)
}

/// Sets `obj[key] = value` unless the key is present and not null.
pub fn default_field(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut() {
        match m.get(key) {
            Some(Value::Null) | None => {
                m.insert(key.to_string(), value);
            }
            Some(_) => {}
        }
    }
}

/// Like [`default_field`], but an empty string also counts as unset (Go's zero value).
pub fn default_str(v: &mut Value, key: &str, value: &str) {
    if s(v, key).is_none_or(str::is_empty) {
        if let Some(m) = v.as_object_mut() {
            m.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

/// `a.b`
pub fn p(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// `a[3]`
pub fn ix(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `a[key]`
pub fn key(parent: &str, k: &str) -> String {
    format!("{parent}[{k}]")
}

pub fn sv(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Upstream's `FieldValueNotFound` (no constructor in `errors.rs`).
pub fn not_found(field: impl Into<String>, value: &Value) -> FieldError {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    FieldError {
        reason: "FieldValueNotFound",
        field: field.into(),
        message: format!("Not found: {shown}"),
    }
}

/// One `Invalid` per message, as upstream's `for _, msg := range IsX(v)` loops.
pub fn invalid_each(field: &str, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter()
        .map(|m| FieldError::invalid(field, &sv(value), &m))
        .collect()
}

pub const IMMUTABLE: &str = "field is immutable";
pub const NEGATIVE: &str = "must be greater than or equal to 0";

/// `ValidateNonnegativeField`.
pub fn nonnegative(v: &Value, k: &str, path: &str) -> Option<FieldError> {
    let n = int(v, k)?;
    (n < 0).then(|| FieldError::invalid(p(path, k), &Value::from(n), NEGATIVE))
}

/// `ValidateImmutableField`: `Invalid(path, new, "field is immutable")` when they differ.
pub fn immutable(new: Option<&Value>, old: Option<&Value>, path: &str) -> Option<FieldError> {
    let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    let (n, o) = (norm(new), norm(old));
    (n != o).then(|| FieldError::invalid(path, &n.unwrap_or(Value::Null), IMMUTABLE))
}

/// Go's `%#v` of a `map[string]string`, as upstream prints label maps in messages.
pub fn go_string_map(m: Option<&Map<String, Value>>) -> String {
    let Some(m) = m else {
        return "map[string]string(nil)".to_string();
    };
    let mut pairs: Vec<(&String, String)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
        .collect();
    pairs.sort();
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Name formats (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------------------------

pub const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
pub const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
pub const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
pub const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
pub const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
pub const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// Upstream's `RegexError`: `msg (e.g. 'a',  or 'b', regex used for validation is 'fmt')`.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let ex: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
    format!(
        "{msg} (e.g. {}, regex used for validation is '{fmt}')",
        ex.join(",  or ")
    )
}

pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns1123_label(v: &str) -> bool {
    let b = v.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            lower_alnum(f) && lower_alnum(l) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

pub fn is_dns1123_label(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 63 {
        out.push(max_len_error(63));
    }
    if !matches_dns1123_label(v) {
        out.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    out
}

pub fn dns1123_subdomain_msg() -> String {
    regex_error(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        DNS1123_SUBDOMAIN_FMT,
        &["example.com"],
    )
}

pub fn is_dns1123_subdomain(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 253 {
        out.push(max_len_error(253));
    }
    if !v.split('.').all(matches_dns1123_label) {
        out.push(dns1123_subdomain_msg());
    }
    out
}

pub fn is_dns1035_label(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 63 {
        out.push(max_len_error(63));
    }
    let ok = matches_dns1123_label(v) && v.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        out.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    out
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: also the label value format when non-empty.
fn matches_qualified_part(v: &str) -> bool {
    let b = v.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

pub fn is_qualified_name(v: &str) -> Vec<String> {
    let qualified_msg = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let mut out = Vec::new();
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    out.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            out.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"],
                )
            ));
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_part(name) {
        out.push(regex_error(
            qualified_msg,
            QUALIFIED_NAME_FMT,
            &["MyName", "my.name", "123-abc"],
        ));
    }
    out
}

pub fn is_valid_label_value(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 63 {
        out.push(max_len_error(63));
    }
    if !v.is_empty() && !matches_qualified_part(v) {
        out.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    out
}

/// `IsConfigMapKey`: keys of ConfigMaps and Secrets.
pub fn is_config_map_key(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 253 {
        out.push(max_len_error(253));
    }
    let ok = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        out.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if v == "." {
        out.push("must not be '.'".to_string());
    } else if v == ".." {
        out.push("must not be '..'".to_string());
    } else if v.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

/// `IsValidPortName` (IANA_SVC_NAME).
pub fn is_valid_port_name(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 15 {
        out.push(max_len_error(15));
    }
    if !v
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        out.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !v.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".to_string());
    }
    if v.contains("--") {
        out.push("must not contain consecutive hyphens".to_string());
    }
    if v.starts_with('-') || v.ends_with('-') {
        out.push("must not begin or end with a hyphen".to_string());
    }
    out
}

pub const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// `ValidatePortNumOrName` for an `IntOrString` field.
pub fn port_num_or_name(v: &Value, path: &str) -> Vec<FieldError> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(port) if (1..=65535).contains(&port) => vec![],
            _ => vec![FieldError::invalid(path, v, PORT_RANGE)],
        },
        Value::String(name) if name.is_empty() => vec![FieldError::required(path)],
        Value::String(name) => invalid_each(path, name, is_valid_port_name(name)),
        _ => vec![FieldError::invalid(path, v, "must be an int or a string")],
    }
}

// ---------------------------------------------------------------------------------------------
// Labels, annotations, selectors
// ---------------------------------------------------------------------------------------------

/// `ValidateLabels`: every error is reported on the map's path, as upstream.
pub fn validate_labels(labels: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(m) = labels.and_then(Value::as_object) else {
        return out;
    };
    for (k, v) in m {
        out.extend(invalid_each(path, k, is_qualified_name(k)));
        match v.as_str() {
            Some(val) => out.extend(invalid_each(path, val, is_valid_label_value(val))),
            None => out.push(FieldError::invalid(path, v, "must be a string")),
        }
    }
    out
}

pub const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

/// `ValidateAnnotations`: keys are qualified names (checked lower-cased), 256 KiB in total.
pub fn validate_annotations(annotations: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(m) = annotations.and_then(Value::as_object) else {
        return out;
    };
    let mut total = 0usize;
    for (k, v) in m {
        out.extend(invalid_each(path, k, is_qualified_name(&k.to_lowercase())));
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        out.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE));
    }
    out
}

/// `ValidateLabelSelector` (metav1).
pub fn validate_label_selector(sel: &Value, path: &str) -> Vec<FieldError> {
    let mut out = validate_labels(sel.get("matchLabels"), &p(path, "matchLabels"));
    let exprs_path = p(path, "matchExpressions");
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let ep = ix(&exprs_path, i);
        let values = arr(e, "values");
        match s(e, "operator").unwrap_or_default() {
            "In" | "NotIn" if values.is_empty() => out.push(FieldError::required_msg(
                p(&ep, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "In" | "NotIn" => {}
            "Exists" | "DoesNotExist" if !values.is_empty() => out.push(FieldError::forbidden(
                p(&ep, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "Exists" | "DoesNotExist" => {}
            op => out.push(FieldError::invalid(
                p(&ep, "operator"),
                &sv(op),
                "not a valid selector operator",
            )),
        }
        let k = s(e, "key").unwrap_or_default();
        out.extend(invalid_each(&p(&ep, "key"), k, is_qualified_name(k)));
    }
    out
}

/// Whether a selector selects nothing-specific (no matchLabels, no matchExpressions).
pub fn selector_is_empty(sel: &Value) -> bool {
    obj(sel, "matchLabels").is_none_or(Map::is_empty) && arr(sel, "matchExpressions").is_empty()
}

/// Whether `labels` satisfy the `LabelSelector`.
pub fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let labels_ok = obj(sel, "matchLabels").is_none_or(|m| {
        m.iter()
            .all(|(k, v)| get(k).is_some() && get(k) == v.as_str())
    });
    let exprs_ok = arr(sel, "matchExpressions").iter().all(|e| {
        let k = s(e, "key").unwrap_or_default();
        let in_values = |val: &str| arr(e, "values").iter().any(|x| x.as_str() == Some(val));
        match s(e, "operator").unwrap_or_default() {
            "In" => get(k).is_some_and(in_values),
            "NotIn" => get(k).is_none_or(|v| !in_values(v)),
            "Exists" => get(k).is_some(),
            "DoesNotExist" => get(k).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

// ---------------------------------------------------------------------------------------------
// ObjectMeta
// ---------------------------------------------------------------------------------------------

/// How a resource's `metadata.name` is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
}

/// The name rule of a resource (by its storage plural), as upstream's `Validate*Name`.
pub fn name_rule(def: &ResourceDef) -> NameRule {
    match def.storage {
        "namespaces" => NameRule::Dns1123Label,
        "services" => NameRule::Dns1035Label,
        _ => NameRule::Dns1123Subdomain,
    }
}

pub fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
        NameRule::Dns1123Label => is_dns1123_label(name),
        NameRule::Dns1035Label => is_dns1035_label(name),
    }
}

/// `ValidateObjectMeta` for a new object.
pub fn validate_object_meta(def: &ResourceDef, o: &Value) -> Vec<FieldError> {
    let empty = Value::Object(Map::new());
    let meta = o.get("metadata").unwrap_or(&empty);
    let mut out = Vec::new();
    match s(meta, "name").unwrap_or_default() {
        "" => out.push(FieldError::required_msg(
            "metadata.name",
            "name or generateName is required",
        )),
        name => out.extend(invalid_each(
            "metadata.name",
            name,
            name_errors(name_rule(def), name),
        )),
    }
    let ns = s(meta, "namespace").unwrap_or_default();
    if def.namespaced {
        if ns.is_empty() {
            out.push(FieldError::required("metadata.namespace"));
        } else {
            out.extend(invalid_each("metadata.namespace", ns, is_dns1123_label(ns)));
        }
    } else if !ns.is_empty() {
        out.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(g) = int(meta, "generation") {
        if g < 0 {
            out.push(FieldError::invalid(
                "metadata.generation",
                &Value::from(g),
                NEGATIVE,
            ));
        }
    }
    out.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    out.extend(validate_annotations(
        meta.get("annotations"),
        "metadata.annotations",
    ));
    out.extend(validate_owner_references(meta));
    for (i, f) in arr(meta, "finalizers").iter().enumerate() {
        let name = f.as_str().unwrap_or_default();
        // apimachinery reports on the list, the core check on the item.
        out.extend(invalid_each(
            "metadata.finalizers",
            name,
            is_qualified_name(name),
        ));
        out.extend(kube_finalizer_name(name, &ix("metadata.finalizers", i)));
    }
    out
}

/// `validateKubeFinalizerName`: unqualified finalizers must be standard ones.
pub fn kube_finalizer_name(name: &str, path: &str) -> Option<FieldError> {
    let standard = ["kubernetes", "orphan", "foregroundDeletion"];
    (!name.contains('/') && !standard.contains(&name)).then(|| {
        FieldError::invalid(
            path,
            &sv(name),
            "name is neither a standard finalizer name nor is it fully qualified",
        )
    })
}

fn validate_owner_references(meta: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut controllers: Vec<String> = Vec::new();
    for (i, r) in arr(meta, "ownerReferences").iter().enumerate() {
        let rp = ix("metadata.ownerReferences", i);
        for (k, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if s(r, k).unwrap_or_default().is_empty() {
                out.push(FieldError::invalid(
                    p(&rp, k),
                    &sv(""),
                    &format!("{what} must not be empty"),
                ));
            }
        }
        if is_true(r, "controller") {
            let name = format!(
                "{}/{}",
                s(r, "kind").unwrap_or_default(),
                s(r, "name").unwrap_or_default()
            );
            if let Some(first) = controllers.first() {
                out.push(FieldError::invalid(
                    "metadata.ownerReferences",
                    meta.get("ownerReferences").unwrap_or(&Value::Null),
                    &format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {name}"),
                ));
            }
            controllers.push(name);
        }
    }
    out
}

/// `ValidateObjectMetaUpdate`: identity fields may not change.
pub fn validate_object_meta_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let (m, om) = (&o["metadata"], &old["metadata"]);
    for k in ["name", "namespace", "uid", "creationTimestamp"] {
        let norm = |v: &Value| match v.get(k) {
            Some(Value::String(x)) if x.is_empty() => None,
            Some(Value::Null) | None => None,
            Some(x) => Some(x.clone()),
        };
        // Fields the client left out are filled by the server from the stored object.
        if k != "name" && k != "namespace" && norm(m).is_none() {
            continue;
        }
        if norm(m) != norm(om) {
            out.push(FieldError::invalid(
                format!("metadata.{k}"),
                &norm(m).unwrap_or(sv("")),
                IMMUTABLE,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn name_formats() {
        assert!(is_dns1123_subdomain("example.com").is_empty());
        assert!(is_dns1123_label("my-name").is_empty());
        assert!(is_dns1035_label("abc-123").is_empty());
        assert_eq!(is_dns1123_label("a.b").len(), 1);
        assert_eq!(is_dns1035_label("1abc").len(), 1);
        assert_eq!(
            is_dns1123_subdomain("Bad_Name"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(
            is_dns1035_label("9x")[0],
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in ["app", "example.com/App_1", "a.b-c"] {
            assert!(is_qualified_name(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(is_qualified_name("-x")[0].starts_with("name part must consist"));
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("v1.2_3").is_empty());
        assert!(is_valid_label_value("bad value")[0].starts_with("a valid label must be"));
        assert!(is_config_map_key("ok.key_1").is_empty());
        assert_eq!(is_config_map_key("..x"), vec!["must not start with '..'"]);
        assert_eq!(is_config_map_key("a b").len(), 1);
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(
            is_valid_port_name("80"),
            vec!["must contain at least one letter (a-z)"]
        );
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"app": "a"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]});
        let labels = json!({"app": "a", "tier": "web"});
        assert!(selector_matches(&sel, labels.as_object()));
        let labels = json!({"app": "a"});
        assert!(!selector_matches(&sel, labels.as_object()));
        let bad = json!({"matchExpressions": [{"key": "k", "operator": "In"},
            {"key": "k", "operator": "Exists", "values": ["x"]}, {"key": "k", "operator": "Is"}]});
        let errs = validate_label_selector(&bad, "spec.selector");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator"
            ]
        );
    }

    #[test]
    fn object_meta() {
        let pods = find("", "v1", "pods").unwrap();
        let ok = json!({"metadata": {"name": "web", "namespace": "default",
            "labels": {"app": "web"}, "annotations": {"example.com/x": "y"}}});
        assert!(validate_object_meta(pods, &ok).is_empty());

        let cases = [
            (json!({"metadata": {"namespace": "d"}}), "metadata.name", "Required value: name or generateName is required"),
            (json!({"metadata": {"name": "a"}}), "metadata.namespace", "Required value"),
            (json!({"metadata": {"name": "Bad_Name", "namespace": "d"}}), "metadata.name", "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            (json!({"metadata": {"name": "a", "namespace": "d", "labels": {"a": "b c"}}}), "metadata.labels", "Invalid value: \"b c\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            (json!({"metadata": {"name": "a", "namespace": "d", "annotations": {"x": "y".repeat(262144)}}}), "metadata.annotations", "Too long: may not be more than 262144 bytes"),
        ];
        for (o, field, msg) in cases {
            let errs = validate_object_meta(pods, &o);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].field, field);
            assert_eq!(errs[0].message, msg);
        }

        let ns = find("", "v1", "namespaces").unwrap();
        let errs = validate_object_meta(ns, &json!({"metadata": {"name": "a.b"}}));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("RFC 1123 label"));
        let errs = validate_object_meta(ns, &json!({"metadata": {"name": "a", "namespace": "x"}}));
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        let svc = find("", "v1", "services").unwrap();
        let errs =
            validate_object_meta(svc, &json!({"metadata": {"name": "1a", "namespace": "d"}}));
        assert!(errs[0].message.contains("DNS-1035"));
    }

    #[test]
    fn finalizers_and_owners() {
        let pods = find("", "v1", "pods").unwrap();
        let o = json!({"metadata": {"name": "a", "namespace": "d",
            "finalizers": ["example.com/cleanup", "foregroundDeletion", "mine"]}});
        let errs: Vec<String> = validate_object_meta(pods, &o)
            .iter()
            .map(FieldError::display)
            .collect();
        assert_eq!(errs, vec!["metadata.finalizers[2]: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified"]);
        let o = json!({"metadata": {"name": "a", "namespace": "d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r1", "uid": "1", "controller": true},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r2", "uid": "2", "controller": true},
            {"apiVersion": "v1", "kind": "", "name": "x", "uid": "3"}]}});
        let errs: Vec<String> = validate_object_meta(pods, &o)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            errs,
            vec![
                "metadata.ownerReferences",
                "metadata.ownerReferences[2].kind"
            ]
        );
    }

    #[test]
    fn object_meta_update() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1"}});
        assert!(validate_object_meta_update(&old, &old).is_empty());
        let new = json!({"metadata": {"name": "a", "namespace": "d"}});
        assert!(validate_object_meta_update(&new, &old).is_empty());
        let new = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u2"}});
        let errs = validate_object_meta_update(&new, &old);
        assert_eq!(
            errs[0].display(),
            "metadata.uid: Invalid value: \"u2\": field is immutable"
        );
    }
}
