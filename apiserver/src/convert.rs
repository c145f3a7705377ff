//! Conversion between the versions of one resource: objects are stored in the storage version and
//! converted on read and write, as upstream does (events: core/v1 <-> events.k8s.io/v1; HPAs:
//! autoscaling/v2 <-> autoscaling/v1).

use serde_json::{json, Map, Value};

use crate::resources::ResourceDef;

/// Converts `obj` (in `from`'s version) into `to`'s version. Both must share a storage resource.
pub fn convert(obj: Value, from: &ResourceDef, to: &ResourceDef) -> Value {
    if from.group == to.group && from.version == to.version {
        return obj;
    }
    let mut out = match (from.storage, from.group, to.group) {
        ("events", "", "events.k8s.io") => rename(obj, CORE_TO_EVENTS),
        ("events", "events.k8s.io", "") => rename(obj, EVENTS_TO_CORE),
        ("horizontalpodautoscalers", _, _) if from.version == "v2" => hpa_v2_to_v1(obj),
        ("horizontalpodautoscalers", _, _) => hpa_v1_to_v2(obj),
        _ => obj,
    };
    if let Some(m) = out.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(to.api_version()));
        m.insert("kind".into(), Value::String(to.kind.into()));
    }
    out
}

const CORE_TO_EVENTS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

const EVENTS_TO_CORE: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: Value, pairs: &[(&str, &str)]) -> Value {
    let Value::Object(m) = obj else { return obj };
    let out: Map<String, Value> = m
        .into_iter()
        .map(|(k, v)| {
            let k = pairs
                .iter()
                .find(|(from, _)| *from == k)
                .map(|(_, to)| to.to_string())
                .unwrap_or(k);
            (k, v)
        })
        .collect();
    Value::Object(out)
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    let cpu_target = obj
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| {
            m.get("type").and_then(Value::as_str) == Some("Resource")
                && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        })
        .and_then(|m| m.pointer("/resource/target/averageUtilization").cloned());
    let cpu_current = obj
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
        .and_then(|m| m.pointer("/resource/current/averageUtilization").cloned());
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(t) = cpu_target {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(c) = cpu_current {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    obj
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(t) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": t}}}]),
            );
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(c) = status.remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": c}}}]),
            );
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn core_event_reads_as_events_k8s_io() {
        let core = find("", "v1", "events").unwrap();
        let new = find("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"apiVersion":"v1","kind":"Event","metadata":{"name":"e"},
            "involvedObject":{"kind":"Pod","name":"p"},"message":"hi","count":2,"reason":"Started"});
        let out = convert(ev.clone(), core, new);
        assert_eq!(out["apiVersion"], "events.k8s.io/v1");
        assert_eq!(out["regarding"]["name"], "p");
        assert_eq!(out["note"], "hi");
        assert_eq!(out["deprecatedCount"], 2);
        assert_eq!(convert(out, new, core), ev);
    }

    #[test]
    fn hpa_v1_target_cpu_becomes_a_v2_metric_and_back() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let h = json!({"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler",
            "metadata":{"name":"h"},"spec":{"maxReplicas":5,"targetCPUUtilizationPercentage":50,
            "scaleTargetRef":{"kind":"Deployment","name":"d"}}});
        let out = convert(h.clone(), v1, v2);
        assert_eq!(
            out["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(convert(out, v2, v1), h);
    }
}
