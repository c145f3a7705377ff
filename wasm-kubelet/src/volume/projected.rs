//! `projected` volumes: configMap, secret and downwardAPI sources merged into one atomically
//! written directory. `serviceAccountToken` and `clusterTrustBundle` sources are skipped (this
//! cluster issues no bound tokens yet): nothing is written for them and a note is logged.
//! Always read-only.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ProjectedVolumeSource;

use super::atomic::{self, Payload};
use super::{config_map, downward_api, secret, Context, Mounted, VolumeError, VolumePlugin};

/// A `projected` volume.
pub struct ProjectedVolume {
    name: String,
    source: ProjectedVolumeSource,
}

impl ProjectedVolume {
    /// The plugin for volume `name` with `source`.
    pub fn new(name: String, source: &ProjectedVolumeSource) -> Self {
        Self {
            name,
            source: source.clone(),
        }
    }
}

impl VolumePlugin for ProjectedVolume {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~projected"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            let mode = self.source.default_mode;
            let mut payload = Payload::new();
            for s in self.source.sources.iter().flatten() {
                let part = if let Some(c) = &s.config_map {
                    config_map::payload(ctx, &c.name, c.items.as_deref(), mode, c.optional).await?
                } else if let Some(c) = &s.secret {
                    secret::payload(ctx, &c.name, c.items.as_deref(), mode, c.optional).await?
                } else if let Some(d) = &s.downward_api {
                    downward_api::payload(ctx.pod, d.items.as_deref().unwrap_or_default(), mode)?
                } else {
                    tracing::info!(
                        volume = %self.name,
                        "projected source skipped: serviceAccountToken and clusterTrustBundle \
                         projections are not supported on wasm nodes"
                    );
                    continue;
                };
                payload.extend(part);
            }
            atomic::mount(ctx, &payload)
        })
    }

    fn refreshes(&self) -> bool {
        true
    }
}
