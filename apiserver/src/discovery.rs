//! Discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`.

use serde_json::{json, Value};

use crate::resources::{groups, ResourceDef, RESOURCES};

/// The Kubernetes version we speak. kubectl's dispatcher picks its build from `gitVersion`.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
pub const GIT_VERSION: &str = "v1.32.4";

/// The metrics API group, served from kubelets' stats (listed for `kubectl top`).
const METRICS_GROUP: &str = "metrics.k8s.io";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": concat!("wasmkube-", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.6",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, arch()),
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let mut out: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| group_json(g, &versions))
        .collect();
    out.push(group_json(
        crate::tokenreview::GROUP,
        &[crate::tokenreview::VERSION],
    ));
    out.push(group_json(METRICS_GROUP, &["v1beta1"]));
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": out})
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

/// `GET /api/v1` or `/apis/{group}/{version}`; None for an unknown group/version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    if group == METRICS_GROUP && version == "v1beta1" {
        let r = |name: &str, kind: &str, namespaced: bool| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]});
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [r("nodes", "NodeMetrics", false), r("pods", "PodMetrics", true)]}),
        );
    }
    if group == crate::tokenreview::GROUP && version == crate::tokenreview::VERSION {
        return Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [crate::tokenreview::discovery_resource()]}),
        );
    }
    let defs: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": d.verbs,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        for sub in d.subresources {
            resources.push(subresource_json(d, sub));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn subresource_json(d: &ResourceDef, sub: &str) -> Value {
    let (kind, verbs, group, version): (&str, &[&str], Option<&str>, Option<&str>) = match sub {
        "status" => (d.kind, &["get", "patch", "update"], None, None),
        "scale" => (
            "Scale",
            &["get", "patch", "update"],
            Some("autoscaling"),
            Some("v1"),
        ),
        "binding" => ("Binding", &["create"], None, None),
        "eviction" => ("Eviction", &["create"], Some("policy"), Some("v1")),
        "log" => ("Pod", &["get"], None, None),
        "exec" | "attach" => ("PodExecOptions", &["create", "get"], None, None),
        "portforward" => ("PodPortForwardOptions", &["create", "get"], None, None),
        "proxy" => (
            "NodeProxyOptions",
            &["create", "delete", "get", "patch", "update"],
            None,
            None,
        ),
        "finalize" => (d.kind, &["update"], None, None),
        _ => (d.kind, &["get"], None, None),
    };
    let mut r = json!({
        "name": format!("{}/{}", d.plural, sub),
        "singularName": "",
        "namespaced": d.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if let Some(g) = group {
        r["group"] = json!(g);
    }
    if let Some(v) = version {
        r["version"] = json!(v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_discovery_lists_pods_with_short_names_and_subresources() {
        let list = resource_list("", "v1").unwrap();
        let res = list["resources"].as_array().unwrap();
        let pods = res.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(res.iter().any(|r| r["name"] == "pods/log"));
    }

    #[test]
    fn autoscaling_prefers_v2_and_metrics_is_listed() {
        let groups = api_group_list();
        let g = groups["groups"].as_array().unwrap();
        let a = g.iter().find(|g| g["name"] == "autoscaling").unwrap();
        assert_eq!(a["preferredVersion"]["version"], "v2");
        assert!(g.iter().any(|g| g["name"] == "metrics.k8s.io"));
    }
}
