//! `downwardAPI` volumes: pod fields (`metadata.name`, `namespace`, `uid`, `labels`,
//! `annotations`, one label or annotation) and container resources as files, re-projected
//! when the pod's labels or annotations change. Always read-only.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, Pod, ResourceFieldSelector,
};

use super::atomic::{self, FileProjection, Payload};
use super::{config_map::mode_bits, Context, Mounted, VolumeError, VolumePlugin};
use crate::supervisor::{millicores, parse_quantity};

/// A `downwardAPI` volume.
pub struct DownwardApiVolume {
    source: DownwardAPIVolumeSource,
}

impl DownwardApiVolume {
    /// The plugin for volume `_name` with `source`.
    pub fn new(_name: String, source: &DownwardAPIVolumeSource) -> Self {
        Self {
            source: source.clone(),
        }
    }
}

impl VolumePlugin for DownwardApiVolume {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~downward-api"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            let items = self.source.items.as_deref().unwrap_or_default();
            let payload = payload(ctx.pod, items, self.source.default_mode)?;
            atomic::mount(ctx, &payload)
        })
    }

    fn refreshes(&self) -> bool {
        true
    }
}

/// The files of downward API `items` for `pod` (shared with `projected`).
pub(crate) fn payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    for item in items {
        atomic::check_path(&item.path)
            .map_err(|e| VolumeError::Refused(format!("downwardAPI items path: {e}")))?;
        let value = if let Some(f) = &item.field_ref {
            field(pod, &f.field_path).ok_or_else(|| {
                VolumeError::Refused(format!(
                    "downwardAPI {:?}: unsupported fieldRef {:?}",
                    item.path, f.field_path
                ))
            })?
        } else if let Some(r) = &item.resource_field_ref {
            resource(pod, r)?
        } else {
            String::new()
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: item
                    .mode
                    .map_or(mode_bits(default_mode), |m| mode_bits(Some(m))),
            },
        );
    }
    Ok(payload)
}

/// A `metadata.*` `fieldRef` value as upstream writes it into a file (env uses the same).
pub(crate) fn field(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        p if p.starts_with("metadata.labels['") => {
            let key = bracket("metadata.labels['")?;
            meta.labels
                .as_ref()
                .and_then(|m| m.get(&key).cloned())
                .unwrap_or_default()
        }
        p if p.starts_with("metadata.annotations['") => {
            let key = bracket("metadata.annotations['")?;
            meta.annotations
                .as_ref()
                .and_then(|m| m.get(&key).cloned())
                .unwrap_or_default()
        }
        _ => return None,
    })
}

/// Upstream's `FormatMap`: `key="value"` lines in key order, no trailing newline.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef` value: the named container's limit or request divided by `divisor`
/// (`0` when unset; upstream falls back to the node's allocatable).
fn resource(pod: &Pod, r: &ResourceFieldSelector) -> Result<String, VolumeError> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let c = containers
        .iter()
        .find(|c| Some(&c.name) == r.container_name.as_ref())
        .ok_or_else(|| {
            VolumeError::Refused(format!(
                "resourceFieldRef {:?}: no container {:?} in the pod",
                r.resource, r.container_name
            ))
        })?;
    Ok(resource_value(c, r))
}

/// Container `c`'s limit or request that `r` names, divided by its `divisor` (rounded up;
/// `0` when unset): for volumes and env alike.
pub(crate) fn resource_value(c: &Container, r: &ResourceFieldSelector) -> String {
    let (kind, name) = r
        .resource
        .split_once('.')
        .unwrap_or(("limits", &r.resource));
    let resources = c.resources.as_ref();
    let quantity = match kind {
        "requests" => resources.and_then(|rr| rr.requests.as_ref()),
        _ => resources.and_then(|rr| rr.limits.as_ref()),
    }
    .and_then(|m| m.get(name));
    let divisor = r.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    let value = |q: &str| -> Option<u64> {
        if name == "cpu" {
            let millis = millicores(q)?;
            let div = millicores(divisor)?.max(1);
            Some(millis.div_ceil(div))
        } else {
            let v = parse_quantity(q)?;
            Some(v.div_ceil(parse_quantity(divisor)?.max(1)))
        }
    };
    quantity.and_then(|q| value(&q.0)).unwrap_or(0).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectFieldSelector;

    fn file(path: &str, field: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_fields_become_files_in_upstream_format() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns",
                         "labels": {"b": "2", "a": "x\"y"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "2Mi", "cpu": "500m"}}}]},
        }))
        .unwrap();
        let items = [
            file("name", "metadata.name"),
            file("labels", "metadata.labels"),
            file("one", "metadata.labels['b']"),
            DownwardAPIVolumeFile {
                path: "mem".into(),
                resource_field_ref: Some(k8s_openapi::api::core::v1::ResourceFieldSelector {
                    container_name: Some("c".into()),
                    resource: "limits.memory".into(),
                    divisor: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        "1Mi".into(),
                    )),
                }),
                ..Default::default()
            },
        ];
        let p = payload(&pod, &items, Some(0o600)).unwrap();
        assert_eq!(p["name"].data, b"p");
        assert_eq!(
            String::from_utf8_lossy(&p["labels"].data),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert_eq!(p["one"].data, b"2");
        assert_eq!(p["mem"].data, b"2");
        assert_eq!(p["name"].mode, 0o600);
        let bad = [file("../x", "metadata.name")];
        assert!(payload(&pod, &bad, None).unwrap_err().is_refusal());
    }
}
