//! `secret` volumes: like `configMap` over the secret's (decoded) data. Always read-only.
//! The files live on the kubelet's disk (upstream uses tmpfs; a wasm node has no mounts).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource};

use super::atomic::{self, Payload};
use super::{config_map, Context, Mounted, VolumeError, VolumePlugin};

/// A `secret` volume.
pub struct SecretVolume {
    source: SecretVolumeSource,
}

impl SecretVolume {
    /// The plugin for volume `_name` with `source`.
    pub fn new(_name: String, source: &SecretVolumeSource) -> Self {
        Self {
            source: source.clone(),
        }
    }
}

impl VolumePlugin for SecretVolume {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~secret"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            let s = &self.source;
            let name = s.secret_name.as_deref().unwrap_or_default();
            let payload =
                payload(ctx, name, s.items.as_deref(), s.default_mode, s.optional).await?;
            atomic::mount(ctx, &payload)
        })
    }

    fn refreshes(&self) -> bool {
        true
    }
}

/// The files of secret `name` (shared with `projected`).
pub(crate) async fn payload(
    ctx: &Context<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: Option<bool>,
) -> Result<Payload, VolumeError> {
    let found = ctx
        .objects
        .secrets
        .get(ctx.namespace(), name, ctx.uid())
        .await
        .map_err(VolumeError::Waiting)?;
    let data = found.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        // stringData is write-only upstream; an apiserver that kept it still means the same.
        for (k, v) in s.string_data.iter().flatten() {
            data.entry(k.clone())
                .or_insert_with(|| v.clone().into_bytes());
        }
        data
    });
    config_map::project(
        "secret",
        name,
        data,
        items,
        default_mode,
        optional.unwrap_or(false),
    )
}
