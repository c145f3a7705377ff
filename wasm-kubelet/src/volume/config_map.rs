//! `configMap` volumes: the configMap's keys (or the listed `items`) as files, re-projected
//! atomically when the configMap changes. Always read-only, as upstream.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, KeyToPath};

use super::atomic::{self, FileProjection, Payload};
use super::{Context, Mounted, VolumeError, VolumePlugin};

/// A `configMap` volume.
pub struct ConfigMapVolume {
    source: ConfigMapVolumeSource,
}

impl ConfigMapVolume {
    /// The plugin for volume `_name` with `source`.
    pub fn new(_name: String, source: &ConfigMapVolumeSource) -> Self {
        Self {
            source: source.clone(),
        }
    }
}

impl VolumePlugin for ConfigMapVolume {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~configmap"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            let s = &self.source;
            let payload =
                payload(ctx, &s.name, s.items.as_deref(), s.default_mode, s.optional).await?;
            atomic::mount(ctx, &payload)
        })
    }

    fn refreshes(&self) -> bool {
        true
    }
}

/// The files of configMap `name` (shared with `projected`).
pub(crate) async fn payload(
    ctx: &Context<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: Option<bool>,
) -> Result<Payload, VolumeError> {
    let found = ctx
        .objects
        .config_maps
        .get(ctx.namespace(), name, ctx.uid())
        .await
        .map_err(VolumeError::Waiting)?;
    let data = found.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        data
    });
    project(
        "configmap",
        name,
        data,
        items,
        default_mode,
        optional.unwrap_or(false),
    )
}

/// The files of a key/value object (`kind` `configmap` or `secret`): every key, or the listed
/// `items` at their paths, with `mode` or `default_mode`. A missing object is an error unless
/// `optional` (then the volume is empty), as are missing keys.
pub(crate) fn project(
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let default_mode = mode_bits(default_mode);
    let Some(data) = data else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(VolumeError::Waiting(format!("{kind} {name:?} not found")))
        };
    };
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (key, value) in data {
                atomic::check_path(&key)?;
                payload.insert(
                    key,
                    FileProjection {
                        data: value,
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                atomic::check_path(&item.path).map_err(|e| {
                    VolumeError::Refused(format!("items path of key {:?}: {e}", item.key))
                })?;
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    let what = if kind == "secret" {
                        "secret key"
                    } else {
                        "config key"
                    };
                    return Err(VolumeError::Waiting(format!(
                        "{kind} references non-existent {what}: {}",
                        item.key
                    )));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: value.clone(),
                        mode: item.mode.map_or(default_mode, |m| mode_bits(Some(m))),
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// A `defaultMode`/`mode` as permission bits (default 0644).
pub(crate) fn mode_bits(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(atomic::DEFAULT_MODE, |m| m & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Option<BTreeMap<String, Vec<u8>>> {
        Some(BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]))
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn every_key_becomes_a_file_with_the_default_mode() {
        let p = project("configmap", "cm", data(), None, Some(0o600), false).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["a"].data, b"1");
        assert_eq!(p["b"].mode, 0o600);
        let p = project("configmap", "cm", data(), None, None, false).unwrap();
        assert_eq!(p["a"].mode, 0o644);
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let items = [item("b", "dir/bee.txt", Some(0o400))];
        let p = project("configmap", "cm", data(), Some(&items), None, false).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["dir/bee.txt"]);
        assert_eq!(p["dir/bee.txt"].mode, 0o400);
        assert_eq!(p["dir/bee.txt"].data, b"2");
    }

    #[test]
    fn missing_objects_and_keys_wait_unless_optional() {
        let e = project("configmap", "x", None, None, None, false).unwrap_err();
        assert_eq!(e.to_string(), "configmap \"x\" not found");
        assert!(!e.is_refusal());
        assert!(project("secret", "x", None, None, None, true)
            .unwrap()
            .is_empty());
        let items = [item("nope", "n", None)];
        let e = project("secret", "s", data(), Some(&items), None, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret references non-existent secret key: nope"
        );
        assert!(project("secret", "s", data(), Some(&items), None, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn traversal_in_items_is_refused() {
        let items = [item("a", "../../etc/passwd", None)];
        let e = project("configmap", "cm", data(), Some(&items), None, false).unwrap_err();
        assert!(e.is_refusal());
        assert!(e.to_string().contains("must not contain '..'"), "{e}");
    }
}
