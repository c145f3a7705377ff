//! Jobs and CronJobs: `pkg/apis/batch/v1/defaults.go`, the job strategy's selector generation
//! and `pkg/apis/batch/validation`, with robfig/cron's standard schedule parser.

use serde_json::{json, Map, Value};

use super::apps::labels_mismatch;
use super::meta::{
    child_mut, default_field, default_str, go_string_map, immutable, int, is_true, max_len_error,
    nonnegative, p, s, selector_matches, sv, validate_label_selector,
};
use super::pod::{default_pod_template, validate_pod_template};
use crate::errors::FieldError;

pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME: &str = "job-name";

// ---------------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------------

/// `SetDefaults_Job` plus the strategy's selector generation (when `metadata.uid` is known).
pub fn default_job(o: &mut Value) {
    let uid = o
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    default_job_spec(spec);
    if !uid.is_empty() && !is_true(spec, "manualSelector") {
        generate_selector(spec, &uid, &name);
    }
    let template_labels = spec.pointer("/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        if let Some(meta) = child_mut(o, "metadata") {
            let empty = meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if empty {
                meta["labels"] = labels;
            }
        }
    }
}

/// The defaults shared by Jobs and CronJobs' job templates (`SetDefaults_Job`'s spec part).
fn default_job_spec(spec: &mut Value) {
    let unset = |spec: &Value, k: &str| spec.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        default_field(spec, "completions", json!(1));
    }
    default_field(spec, "parallelism", json!(1));
    let backoff = if unset(spec, "backoffLimitPerIndex") {
        6
    } else {
        i64::from(i32::MAX)
    };
    default_field(spec, "backoffLimit", json!(backoff));
    default_str(spec, "completionMode", "NonIndexed");
    default_field(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    default_str(spec, "podReplacementPolicy", replacement);
    if let Some(t) = child_mut(spec, "template") {
        default_pod_template(t);
    }
}

/// `generateSelector`: the controller-uid selector and the labels it selects.
fn generate_selector(spec: &mut Value, uid: &str, name: &str) {
    if let Some(labels) = child_mut(spec, "template")
        .and_then(|t| child_mut(t, "metadata"))
        .and_then(|m| child_mut(m, "labels"))
        .and_then(Value::as_object_mut)
    {
        for (k, v) in [
            (CONTROLLER_UID, uid),
            (JOB_NAME, name),
            (LEGACY_CONTROLLER_UID, uid),
            (LEGACY_JOB_NAME, name),
        ] {
            labels.entry(k).or_insert_with(|| sv(v));
        }
    }
    if let Some(ml) = child_mut(spec, "selector")
        .and_then(|sel| child_mut(sel, "matchLabels"))
        .and_then(Value::as_object_mut)
    {
        ml.entry(CONTROLLER_UID).or_insert_with(|| sv(uid));
    }
}

/// `SetDefaults_CronJob` and the defaults of its job template's pod template.
pub fn default_cron_job(o: &mut Value) {
    let Some(spec) = child_mut(o, "spec") else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_field(spec, "suspend", json!(false));
    default_field(spec, "successfulJobsHistoryLimit", json!(3));
    default_field(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(t) = child_mut(spec, "jobTemplate")
        .and_then(|jt| child_mut(jt, "spec"))
        .and_then(|s| child_mut(s, "template"))
    {
        default_pod_template(t);
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// `validateJobSpec`: the rules shared by Jobs and job templates.
fn validate_job_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
    ]
    .iter()
    .filter_map(|k| nonnegative(spec, k, path))
    .collect();
    match s(spec, "completionMode").unwrap_or_default() {
        "" | "NonIndexed" => {}
        "Indexed" => {
            if int(spec, "completions").is_none() {
                out.push(FieldError::required_msg(
                    p(path, "completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        other => out.push(FieldError::not_supported(
            p(path, "completionMode"),
            &sv(other),
            &["NonIndexed", "Indexed"],
        )),
    }
    let tp = p(path, "template");
    let empty = json!({});
    out.extend(validate_pod_template(
        spec.get("template").unwrap_or(&empty),
        &tp,
    ));
    let restart = spec
        .pointer("/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if restart != "OnFailure" && restart != "Never" {
        out.push(FieldError::not_supported(
            p(&p(&tp, "spec"), "restartPolicy"),
            &sv(restart),
            &["OnFailure", "Never"],
        ));
    }
    out
}

/// `ValidateJob` (spec part): the selector is required and must select the template.
pub fn validate_job(o: &Value) -> Vec<FieldError> {
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    let mut out = validate_job_spec(spec, "spec");
    match spec.get("selector").filter(|v| !v.is_null()) {
        None => out.push(FieldError::required("spec.selector")),
        Some(sel) => {
            out.extend(validate_label_selector(sel, "spec.selector"));
            let labels = spec.pointer("/template/metadata/labels");
            if !selector_matches(sel, labels.and_then(Value::as_object)) {
                out.push(labels_mismatch("spec.template.metadata.labels", labels));
            }
        }
    }
    out.extend(validate_generated_selector(o, spec));
    out
}

/// `validateGeneratedSelector`: a generated selector selects exactly this job's pods, whose
/// template carries the controller-uid and job-name labels (`ValidateHasLabel`).
fn validate_generated_selector(o: &Value, spec: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let meta = |k: &str| {
        o.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (uid, name) = (meta("uid"), meta("name"));
    let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) else {
        return out;
    };
    if is_true(spec, "manualSelector") || uid.is_empty() {
        return out;
    }
    let labels = spec.pointer("/template/metadata/labels");
    for (k, want) in [
        (LEGACY_CONTROLLER_UID, uid),
        (LEGACY_JOB_NAME, name),
        (CONTROLLER_UID, uid),
        (JOB_NAME, name),
    ] {
        let field = format!("spec.template.metadata.labels[{k}]");
        match labels.and_then(|l| s(l, k)) {
            None => out.push(FieldError::required_msg(field, want)),
            Some(v) if v != want => out.push(FieldError {
                reason: "FieldValueInvalid",
                field,
                message: format!(
                    "Invalid value: {}: {want}",
                    go_string_map(labels.and_then(Value::as_object))
                ),
            }),
            Some(_) => {}
        }
    }
    let expected = json!({CONTROLLER_UID: uid, JOB_NAME: name,
        LEGACY_CONTROLLER_UID: uid, LEGACY_JOB_NAME: name});
    if !selector_matches(sel, expected.as_object()) {
        out.push(FieldError::invalid(
            "spec.selector",
            sel,
            "`selector` not auto-generated",
        ));
    }
    out
}

/// `ValidateJobUpdate`: selector, completion mode and (for started jobs) template are fixed.
pub fn validate_job_update(o: &Value, old: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let field = |k: &str, v: &Value| v.get("spec").and_then(|s| s.get(k)).cloned();
    for k in [
        "selector",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
    ] {
        out.extend(immutable(
            field(k, o).as_ref(),
            field(k, old).as_ref(),
            &format!("spec.{k}"),
        ));
    }
    // Indexed jobs may scale completions together with parallelism; others may not.
    let indexed = s(&old["spec"], "completionMode") == Some("Indexed");
    let completions_ok = indexed && field("completions", o) == field("parallelism", o);
    if !completions_ok {
        out.extend(immutable(
            field("completions", o).as_ref(),
            field("completions", old).as_ref(),
            "spec.completions",
        ));
    }
    // A suspended job that never started may still get a new template.
    let never_started = is_true(&old["spec"], "suspend")
        && old.pointer("/status/startTime").is_none_or(Value::is_null);
    if !never_started {
        if let Some(e) = immutable(
            field("template", o).as_ref(),
            field("template", old).as_ref(),
            "spec.template",
        ) {
            out.push(e);
        }
    }
    out
}

/// `ValidateCronJobCreate` (spec part).
pub fn validate_cron_job(o: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(name) = o.pointer("/metadata/name").and_then(Value::as_str) {
        if name.len() > 52 {
            out.push(FieldError::invalid(
                "metadata.name",
                &sv(name),
                &max_len_error(52),
            ));
        }
    }
    let empty = json!({});
    let spec = o.get("spec").unwrap_or(&empty);
    match s(spec, "schedule").unwrap_or_default() {
        "" => out.push(FieldError::required("spec.schedule")),
        sched => {
            if sched.contains("TZ") {
                out.push(FieldError::invalid(
                    "spec.schedule",
                    &sv(sched),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if let Err(e) = parse_cron(sched) {
                out.push(FieldError::invalid("spec.schedule", &sv(sched), &e));
            }
        }
    }
    if let Some(tz) = s(spec, "timeZone") {
        if tz.is_empty() || tz.contains(' ') || tz.starts_with('/') || tz.contains("..") {
            out.push(FieldError::invalid(
                "spec.timeZone",
                &sv(tz),
                &format!("unknown time zone {tz}"),
            ));
        }
    }
    match s(spec, "concurrencyPolicy").unwrap_or_default() {
        "Allow" | "Forbid" | "Replace" => {}
        "" => out.push(FieldError::required("spec.concurrencyPolicy")),
        other => out.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            &sv(other),
            &["Allow", "Forbid", "Replace"],
        )),
    }
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        out.extend(nonnegative(spec, k, "spec"));
    }
    let job_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&empty);
    out.extend(validate_job_spec(job_spec, "spec.jobTemplate.spec"));
    if let Some(sel) = job_spec.get("selector").filter(|v| !v.is_null()) {
        out.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            sel,
            "`selector` will be auto-generated",
        ));
    }
    if is_true(job_spec, "manualSelector") {
        out.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            &Value::Bool(true),
            &["nil", "false"],
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Cron schedules (github.com/robfig/cron/v3 ParseStandard)
// ---------------------------------------------------------------------------------------------

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses a standard 5-field schedule or a descriptor; `Err` is robfig/cron's message.
pub fn parse_cron(spec: &str) -> Result<(), String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    if let Some(d) = spec.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ if d.starts_with("every ") => parse_go_duration(&d[6..]).map_err(|_| {
                format!(
                    "failed to parse duration {spec}: time: invalid duration {:?}",
                    &d[6..]
                )
            }),
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let bounds: [(i64, i64, &[&str], i64); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 0),
        (1, 12, MONTHS, 1),
        (0, 6, DAYS, 0),
    ];
    for (f, (min, max, names, offset)) in fields.iter().zip(bounds) {
        for expr in f.split(',') {
            parse_range(expr, min, max, names, offset)?;
        }
    }
    Ok(())
}

fn parse_range(expr: &str, min: i64, max: i64, names: &[&str], offset: i64) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single_digit = low_and_high.len() == 1;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (min, max)
    } else {
        let start = parse_int_or_name(low_and_high[0], names, offset)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], names, offset)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single_digit {
                end = max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn parse_int_or_name(expr: &str, names: &[&str], offset: i64) -> Result<i64, String> {
    let lower = expr.to_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as i64 + offset);
    }
    must_parse_int(expr)
}

fn must_parse_int(expr: &str) -> Result<i64, String> {
    let n: i64 = expr.parse().map_err(|_| {
        format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax")
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n)
}

/// Go's `time.ParseDuration`, validity only (`1h30m`, `90s`, `1.5h`).
fn parse_go_duration(d: &str) -> Result<(), ()> {
    let mut rest = d.trim();
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(())?;
        if num_end == 0 {
            return Err(());
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(
            &rest[..unit_end],
            "ns" | "us" | "µs" | "ms" | "s" | "m" | "h"
        ) {
            return Err(());
        }
        rest = &rest[unit_end..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        let mut o = json!({"metadata": {"name": "j", "namespace": "n", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}});
        if let (Some(m), Some(e)) = (o["spec"].as_object_mut(), spec.as_object()) {
            m.extend(e.clone());
        }
        default_job(&mut o);
        o
    }

    #[test]
    fn job_defaults() {
        let j = job(json!({}));
        let spec = &j["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {CONTROLLER_UID: "u-1"}})
        );
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels[CONTROLLER_UID], "u-1");
        assert_eq!(labels[JOB_NAME], "j");
        assert_eq!(labels[LEGACY_JOB_NAME], "j");
        assert_eq!(j["metadata"]["labels"], *labels);
        assert!(validate_job(&j).is_empty(), "{:?}", validate_job(&j));

        let j = job(json!({"parallelism": 3, "backoffLimit": 0}));
        assert!(j["spec"].get("completions").is_none());
        assert_eq!(j["spec"]["parallelism"], 3);
        assert_eq!(j["spec"]["backoffLimit"], 0);

        let j = job(
            json!({"manualSelector": true, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}),
        );
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"a": "b"}}));
        assert!(validate_job(&j).is_empty());
    }

    #[test]
    fn job_rules() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"parallelism": -1}),
                "spec.parallelism",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                json!({"completions": -1}),
                "spec.completions",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                json!({"backoffLimit": -1}),
                "spec.backoffLimit",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                json!({"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "b"}]}}}),
                "spec.template.spec.restartPolicy",
                "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ),
            (
                json!({"completionMode": "Indexed", "parallelism": 2}),
                "spec.completions",
                "Required value: when completion mode is Indexed",
            ),
            (
                json!({"selector": {"matchLabels": {CONTROLLER_UID: "other"}}}),
                "spec.selector",
                "Invalid value: {\"matchLabels\":{\"batch.kubernetes.io/controller-uid\":\"other\"}}: `selector` not auto-generated",
            ),
            (
                json!({"template": {"metadata": {"labels": {JOB_NAME: "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}),
                "spec.template.metadata.labels[batch.kubernetes.io/job-name]",
                "Invalid value: map[string]string{\"batch.kubernetes.io/controller-uid\":\"u-1\", \"batch.kubernetes.io/job-name\":\"x\", \"controller-uid\":\"u-1\", \"job-name\":\"j\"}: j",
            ),
        ];
        for (spec, field, msg) in cases {
            let errs: Vec<(String, String)> = validate_job(&job(spec.clone()))
                .into_iter()
                .map(|e| (e.field, e.message))
                .collect();
            assert!(
                errs.contains(&(field.to_string(), msg.to_string())),
                "{spec}: {errs:?}"
            );
        }
        let mut j = job(json!({}));
        j["spec"]["template"]["metadata"]["labels"] = json!({"x": "y"});
        let fields: Vec<String> = validate_job(&j).into_iter().map(|e| e.field).collect();
        assert!(fields.contains(&"spec.template.metadata.labels".to_string()));
    }

    #[test]
    fn job_updates() {
        let old = job(json!({}));
        assert!(validate_job_update(&old, &old).is_empty());
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        let errs = validate_job_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template");
        assert!(errs[0].message.ends_with(": field is immutable"));
        let mut new = old.clone();
        new["spec"]["completions"] = json!(3);
        assert_eq!(
            validate_job_update(&new, &old)[0].display(),
            "spec.completions: Invalid value: 3: field is immutable"
        );
        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(5);
        new["spec"]["suspend"] = json!(true);
        assert!(validate_job_update(&new, &old).is_empty());
    }

    #[test]
    fn cron_jobs() {
        let mut cj = json!({"metadata": {"name": "c", "namespace": "n"}, "spec": {"schedule": "0 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        default_cron_job(&mut cj);
        let spec = &cj["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        assert!(
            validate_cron_job(&cj).is_empty(),
            "{:?}",
            validate_cron_job(&cj)
        );

        let cases = [
            ("* * * *", "Invalid value: \"* * * *\": expected exactly 5 fields, found 4: [* * * *]"),
            ("60 * * * *", "Invalid value: \"60 * * * *\": end of range (60) above maximum (59): 60"),
            ("x * * * *", "Invalid value: \"x * * * *\": failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"),
            ("@sometimes", "Invalid value: \"@sometimes\": unrecognized descriptor: @sometimes"),
            ("TZ=UTC 0 * * * *", "Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        ];
        for (sched, msg) in cases {
            let mut bad = cj.clone();
            bad["spec"]["schedule"] = json!(sched);
            let errs = validate_cron_job(&bad);
            assert_eq!(errs.len(), 1, "{sched}");
            assert_eq!(errs[0].field, "spec.schedule");
            assert_eq!(errs[0].message, msg);
        }
        for ok in [
            "*/15 9-17 * JAN-DEC mon-fri",
            "@hourly",
            "@every 1h30m",
            "0 0 1,15 * ?",
        ] {
            assert_eq!(parse_cron(ok), Ok(()), "{ok}");
        }
        let mut bad = cj.clone();
        bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
        assert_eq!(validate_cron_job(&bad)[0].field, "spec.concurrencyPolicy");
        let mut bad = cj.clone();
        bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert_eq!(
            validate_cron_job(&bad)[0].field,
            "spec.jobTemplate.spec.template.spec.restartPolicy"
        );
        let mut bad = cj.clone();
        bad["metadata"]["name"] = json!("a".repeat(53));
        assert_eq!(validate_cron_job(&bad)[0].message, "Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be no more than 52 characters");
    }
}
