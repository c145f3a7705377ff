//! Deployments, ReplicaSets and DaemonSets: `pkg/apis/apps/v1/defaults.go` and
//! `pkg/apis/apps/validation`.

use serde_json::{json, Value};

use super::meta::{
    child_mut, default_field, default_str, go_string_map, immutable, int, nonnegative, p,
    regex_error, s, selector_is_empty, selector_matches, sv, validate_label_selector, NEGATIVE,
};
use super::pod::{default_pod_template, validate_pod_template};
use crate::errors::FieldError;

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

fn default_template(spec: &mut Value) {
    if let Some(t) = child_mut(spec, "template") {
        default_pod_template(t);
    }
}

/// `SetDefaults_Deployment`.
pub fn default_deployment(o: &mut Value) {
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    default_field(spec, "replicas", json!(1));
    if let Some(strategy) = child_mut(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if s(strategy, "type") == Some("RollingUpdate") {
            if let Some(ru) = child_mut(strategy, "rollingUpdate") {
                default_field(ru, "maxUnavailable", json!("25%"));
                default_field(ru, "maxSurge", json!("25%"));
            }
        }
    }
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

/// `SetDefaults_ReplicaSet`.
pub fn default_replica_set(o: &mut Value) {
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    default_field(spec, "replicas", json!(1));
    default_template(spec);
}

/// `SetDefaults_DaemonSet`.
pub fn default_daemon_set(o: &mut Value) {
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    if let Some(strategy) = child_mut(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if s(strategy, "type") == Some("RollingUpdate") {
            if let Some(ru) = child_mut(strategy, "rollingUpdate") {
                default_field(ru, "maxUnavailable", json!(1));
                default_field(ru, "maxSurge", json!(0));
            }
        }
    }
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_template(spec);
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The selector and the template it must select, as every workload validates them.
/// `kind` names the resource in "empty selector is invalid for {kind}".
pub fn validate_selector_and_template(
    spec: &Value,
    path: &str,
    kind: &str,
    restart_policies: &[&str],
) -> Vec<FieldError> {
    let mut out = Vec::new();
    let sp = p(path, "selector");
    let tp = p(path, "template");
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => out.push(FieldError::required(&sp)),
        Some(sel) => {
            out.extend(validate_label_selector(sel, &sp));
            if selector_is_empty(sel) {
                out.push(FieldError::invalid(
                    &sp,
                    sel,
                    &format!("empty selector is invalid for {kind}"),
                ));
            } else {
                let labels = spec.pointer("/template/metadata/labels");
                if !selector_matches(sel, labels.and_then(Value::as_object)) {
                    out.push(labels_mismatch(&p(&p(&tp, "metadata"), "labels"), labels));
                }
            }
        }
    }
    let empty = json!({});
    let template = spec.get("template").unwrap_or(&empty);
    out.extend(validate_pod_template(template, &tp));
    let rp = p(&p(&tp, "spec"), "restartPolicy");
    if let Some(rp_value) = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
    {
        if !restart_policies.contains(&rp_value) && !rp_value.is_empty() {
            out.push(FieldError::not_supported(
                rp,
                &sv(rp_value),
                restart_policies,
            ));
        }
    }
    out
}

/// "`selector` does not match template `labels`", with the labels shown as Go prints a map.
pub fn labels_mismatch(path: &str, labels: Option<&Value>) -> FieldError {
    FieldError {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!(
            "Invalid value: {}: `selector` does not match template `labels`",
            go_string_map(labels.and_then(Value::as_object))
        ),
    }
}

/// Workload templates may not set activeDeadlineSeconds.
fn no_active_deadline(spec: &Value, path: &str, kind: &str) -> Option<FieldError> {
    let v = spec.pointer("/template/spec/activeDeadlineSeconds")?;
    (!v.is_null()).then(|| {
        FieldError::forbidden(
            format!("{path}.template.spec.activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        )
    })
}

/// `IntOrString` as upstream prints it (through `String()`, hence quoted).
fn int_or_string_shown(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        other => Value::String(other.to_string()),
    }
}

/// `IsValidPercent`: `[0-9]+%`.
fn is_valid_percent(v: &str) -> bool {
    v.strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// `getIntOrPercentValue`: the number of an int or of a valid percentage, else 0.
fn int_or_percent(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(x) if is_valid_percent(x) => {
            x.trim_end_matches('%').parse().unwrap_or(i64::MAX)
        }
        _ => 0,
    }
}

fn ru_value(ru: &Value, k: &str) -> Value {
    ru.get(k)
        .filter(|v| !v.is_null())
        .cloned()
        .unwrap_or(json!(0))
}

/// `ValidatePositiveIntOrPercent`.
fn validate_positive_int_or_percent(ru: &Value, k: &str, path: &str) -> Option<FieldError> {
    let v = ru_value(ru, k);
    let fp = p(path, k);
    match &v {
        Value::String(x) if !is_valid_percent(x) => Some(FieldError::invalid(
            fp,
            &v,
            &regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%",
                &["1%", "93%"],
            ),
        )),
        Value::String(_) => None,
        Value::Number(n) if n.as_i64().is_some_and(|n| n < 0) => {
            Some(FieldError::invalid(fp, &v, NEGATIVE))
        }
        Value::Number(_) => None,
        _ => Some(FieldError::invalid(
            fp,
            &v,
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100_percent(ru: &Value, k: &str, path: &str) -> Option<FieldError> {
    let v = ru_value(ru, k);
    let pct = v.as_str().filter(|x| is_valid_percent(x))?;
    (int_or_percent(&v) > 100)
        .then(|| FieldError::invalid(p(path, k), &sv(pct), "must not be greater than 100%"))
}

fn validate_replicas_and_history(spec: &Value, path: &str) -> Vec<FieldError> {
    ["replicas", "minReadySeconds", "revisionHistoryLimit"]
        .iter()
        .filter_map(|k| nonnegative(spec, k, path))
        .collect()
}

/// `ValidateDeployment` (spec part).
pub fn validate_deployment(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let path = "spec";
    let mut out = validate_replicas_and_history(spec, path);
    out.extend(validate_selector_and_template(
        spec,
        path,
        "deployment",
        &["Always"],
    ));
    out.extend(no_active_deadline(spec, path, "ReplicaSet"));
    out.extend(validate_deployment_strategy(spec, path));
    out.extend(nonnegative(spec, "progressDeadlineSeconds", path));
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            out.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pds),
                "must be greater than minReadySeconds",
            ));
        }
    }
    out
}

fn validate_deployment_strategy(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let empty = json!({});
    let strategy = spec.get("strategy").unwrap_or(&empty);
    let sp = p(path, "strategy");
    let ru = strategy.get("rollingUpdate").filter(|v| !v.is_null());
    let rp = p(&sp, "rollingUpdate");
    match s(strategy, "type").unwrap_or_default() {
        "Recreate" => {
            if ru.is_some() {
                out.push(FieldError::forbidden(
                    rp,
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match ru {
            None => out.push(FieldError::required_msg(
                rp,
                "this should be defaulted and never be nil",
            )),
            Some(ru) => out.extend(validate_rolling_update_deployment(ru, &rp)),
        },
        // Upstream reports the whole strategy on `spec.strategy`.
        _ => out.push(FieldError::not_supported(
            sp,
            strategy,
            &["Recreate", "RollingUpdate"],
        )),
    }
    out
}

/// `ValidateRollingUpdateDeployment`.
fn validate_rolling_update_deployment(ru: &Value, path: &str) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = ["maxUnavailable", "maxSurge"]
        .iter()
        .filter_map(|k| validate_positive_int_or_percent(ru, k, path))
        .collect();
    let zero = |k| int_or_percent(&ru_value(ru, k)) == 0;
    if zero("maxUnavailable") && zero("maxSurge") {
        out.push(FieldError::invalid(
            p(path, "maxUnavailable"),
            &int_or_string_shown(&ru_value(ru, "maxUnavailable")),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    out.extend(not_more_than_100_percent(ru, "maxUnavailable", path));
    out
}

/// `ValidateReplicaSet` (spec part).
pub fn validate_replica_set(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut out = validate_replicas_and_history(spec, "spec");
    out.extend(validate_selector_and_template(
        spec,
        "spec",
        "deployment",
        &["Always"],
    ));
    out.extend(no_active_deadline(spec, "spec", "ReplicaSet"));
    out
}

/// `ValidateDaemonSet` (spec part).
pub fn validate_daemon_set(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut out = validate_replicas_and_history(spec, "spec");
    out.extend(validate_selector_and_template(
        spec,
        "spec",
        "daemonset",
        &["Always"],
    ));
    out.extend(no_active_deadline(spec, "spec", "DaemonSet"));
    let strategy = spec.get("updateStrategy").unwrap_or(&empty);
    let sp = "spec.updateStrategy";
    match s(strategy, "type").unwrap_or_default() {
        "OnDelete" => {}
        "RollingUpdate" => match strategy.get("rollingUpdate").filter(|v| !v.is_null()) {
            None => out.push(FieldError::required(format!("{sp}.rollingUpdate"))),
            Some(ru) => out.extend(validate_daemon_set_rolling_update(
                ru,
                "spec.updateStrategy.rollingUpdate",
            )),
        },
        _ => out.push(FieldError::not_supported(
            sp,
            strategy,
            &["RollingUpdate", "OnDelete"],
        )),
    }
    out
}

/// `ValidateRollingUpdateDaemonSet`: exactly one of maxUnavailable/maxSurge is non-zero.
fn validate_daemon_set_rolling_update(ru: &Value, path: &str) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = ["maxUnavailable", "maxSurge"]
        .iter()
        .filter_map(|k| validate_positive_int_or_percent(ru, k, path))
        .collect();
    out.extend(not_more_than_100_percent(ru, "maxUnavailable", path));
    out.extend(not_more_than_100_percent(ru, "maxSurge", path));
    let nonzero = |k| int_or_percent(&ru_value(ru, k)) != 0;
    match (nonzero("maxUnavailable"), nonzero("maxSurge")) {
        (true, true) => out.push(FieldError::invalid(
            p(path, "maxSurge"),
            &int_or_string_shown(&ru_value(ru, "maxSurge")),
            "may not be set when maxUnavailable is non-zero",
        )),
        (false, false) => out.push(FieldError::required_msg(
            p(path, "maxUnavailable"),
            "cannot be 0 when maxSurge is 0",
        )),
        _ => {}
    }
    out
}

/// `ValidateDeploymentStatus` / `ValidateReplicaSetStatus`: counts are sane.
pub fn validate_replicas_status(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let status = o.get("status").unwrap_or(&empty);
    let mut out: Vec<FieldError> = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "collisionCount",
    ]
    .iter()
    .filter_map(|k| nonnegative(status, k, "status"))
    .collect();
    let n = |k| int(status, k).unwrap_or(0);
    for k in [
        "updatedReplicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        if n(k) > n("replicas") {
            out.push(FieldError::invalid(
                format!("status.{k}"),
                &Value::from(n(k)),
                "cannot be greater than status.replicas",
            ));
        }
    }
    if n("availableReplicas") > n("readyReplicas") {
        out.push(FieldError::invalid(
            "status.availableReplicas",
            &Value::from(n("availableReplicas")),
            "cannot be greater than readyReplicas",
        ));
    }
    out
}

/// apps/v1 selectors are immutable.
pub fn validate_selector_update(o: &Value, old: &Value) -> Vec<FieldError> {
    immutable(
        o.pointer("/spec/selector"),
        old.pointer("/spec/selector"),
        "spec.selector",
    )
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(spec: Value) -> Value {
        let mut base = json!({"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}});
        if let (Some(m), Some(e)) = (base.as_object_mut(), spec.as_object()) {
            m.extend(e.clone());
        }
        let mut o = json!({"metadata": {"name": "d", "namespace": "n"}, "spec": base});
        default_deployment(&mut o);
        o
    }

    #[test]
    fn deployment_defaults() {
        let d = deployment(json!({}));
        assert!(d["spec"]["template"]["metadata"]["labels"].is_object());
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert!(
            validate_deployment(&d).is_empty(),
            "{:?}",
            validate_deployment(&d)
        );

        let d = deployment(json!({"replicas": 0, "strategy": {"type": "Recreate"}}));
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert!(validate_deployment(&d).is_empty());
    }

    #[test]
    fn deployment_rules() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"replicas": -1}), "spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
            (json!({"selector": {"matchLabels": {"app": "b"}}}), "spec.template.metadata.labels",
                "Invalid value: map[string]string{\"app\":\"a\"}: `selector` does not match template `labels`"),
            (json!({"strategy": {"type": "Blue"}}), "spec.strategy",
                "Unsupported value: {\"type\":\"Blue\"}: supported values: \"Recreate\", \"RollingUpdate\""),
            (json!({"strategy": {"rollingUpdate": {"maxSurge": "x%"}}}), "spec.strategy.rollingUpdate.maxSurge",
                "Invalid value: \"x%\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
            (json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}), "spec.strategy.rollingUpdate.maxUnavailable",
                "Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"),
            (json!({"strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}}), "spec.strategy.rollingUpdate.maxUnavailable",
                "Invalid value: \"150%\": must not be greater than 100%"),
            (json!({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}), "spec.strategy.rollingUpdate",
                "Forbidden: may not be specified when strategy `type` is 'Recreate'"),
            (json!({"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "nginx"}]}}}),
                "spec.template.spec.restartPolicy", "Unsupported value: \"Never\": supported values: \"Always\""),
            (json!({"progressDeadlineSeconds": 5, "minReadySeconds": 10}), "spec.progressDeadlineSeconds",
                "Invalid value: 5: must be greater than minReadySeconds"),
        ];
        for (spec, field, msg) in cases {
            let errs: Vec<(String, String)> = validate_deployment(&deployment(spec.clone()))
                .into_iter()
                .map(|e| (e.field, e.message))
                .collect();
            assert_eq!(errs, vec![(field.to_string(), msg.to_string())], "{spec}");
        }
        let mut d = deployment(json!({}));
        d["spec"].as_object_mut().unwrap().remove("selector");
        assert_eq!(
            validate_deployment(&d)[0].display(),
            "spec.selector: Required value"
        );
        d["spec"]["selector"] = json!({});
        assert_eq!(
            validate_deployment(&d)[0].message,
            "Invalid value: {}: empty selector is invalid for deployment"
        );
    }

    #[test]
    fn selector_is_immutable() {
        let old = deployment(json!({}));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        let errs = validate_selector_update(&new, &old);
        assert_eq!(errs[0].field, "spec.selector");
        assert!(errs[0].message.ends_with("field is immutable"));
        assert!(validate_selector_update(&old, &old).is_empty());
    }

    #[test]
    fn daemon_sets() {
        let mut ds = json!({"metadata": {"name": "d", "namespace": "n"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        default_daemon_set(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        assert!(validate_daemon_set(&ds).is_empty());
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(0);
        assert_eq!(
            validate_daemon_set(&ds)[0].display(),
            "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
        );
        ds["spec"]["updateStrategy"] = json!({"type": "Sometimes"});
        assert_eq!(validate_daemon_set(&ds)[0].field, "spec.updateStrategy");
    }

    #[test]
    fn replica_status() {
        let ok = json!({"status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2}});
        assert!(validate_replicas_status(&ok).is_empty());
        let bad = json!({"status": {"replicas": 1, "readyReplicas": 2, "availableReplicas": 2}});
        let errs: Vec<String> = validate_replicas_status(&bad)
            .iter()
            .map(FieldError::display)
            .collect();
        assert_eq!(
            errs,
            vec![
                "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas",
                "status.availableReplicas: Invalid value: 2: cannot be greater than status.replicas",
            ]
        );
    }

    #[test]
    fn replica_sets() {
        let mut rs = json!({"metadata": {"name": "r", "namespace": "n"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        default_replica_set(&mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(validate_replica_set(&rs).is_empty());
        rs["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
        assert_eq!(
            validate_replica_set(&rs)[0].field,
            "spec.template.metadata.labels"
        );
    }
}
