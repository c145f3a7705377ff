//! ImageLocality: prefers nodes that already hold the pod's images (wasm modules). For wasm,
//! the pull is most of a pod's startup time, so this matters more than for containers.
//!
//! Upstream's formula: each image present on the node adds its size scaled by the fraction of
//! nodes that hold it (so one node holding a popular image does not attract every pod), and
//! the sum maps linearly onto `0..=100` between a minimum and a per-container maximum.
//! Upstream's thresholds (23 MiB, 1000 MiB) suit container images; wasm modules are a few MiB,
//! so ours default to 0 and 4 MiB per container (args `minThresholdBytes`,
//! `maxContainerThresholdBytes`).

use std::sync::Arc;

use serde::Deserialize;

use crate::cache::Cache;
use crate::framework::{
    ClusterEvent, CycleState, EventMask, FrameworkError, Plugin, PluginContext, Rejection,
    ScorePlugin, MAX_NODE_SCORE,
};
use crate::info::{NodeInfo, PodInfo};

pub const NAME: &str = "ImageLocality";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Args {
    pub min_threshold_bytes: i64,
    pub max_container_threshold_bytes: i64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            min_threshold_bytes: 0,
            max_container_threshold_bytes: 4 * 1024 * 1024,
        }
    }
}

pub struct ImageLocality {
    args: Args,
}

pub fn new(
    args: Option<&serde_json::Value>,
    _ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    let args: Args = super::parse_args(NAME, args)?;
    if args.max_container_threshold_bytes <= args.min_threshold_bytes
        || args.min_threshold_bytes < 0
    {
        return Err(FrameworkError::InvalidArgs {
            name: NAME.into(),
            message: "need 0 <= minThresholdBytes < maxContainerThresholdBytes".into(),
        });
    }
    Ok(Arc::new(ImageLocality { args }))
}

/// `nginx` and `nginx:latest` are one image; digests and tags are kept.
pub fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        ClusterEvent::NodeAdd | ClusterEvent::NodeImageChange
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl ScorePlugin for ImageLocality {
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        cache: &Cache,
    ) -> Result<i64, Rejection> {
        let Some(spec) = &node.spec else { return Ok(0) };
        if spec.images.is_empty() || pod.images.is_empty() {
            return Ok(0);
        }
        let total = cache.node_count().max(1) as f64;
        let mut sum: i64 = 0;
        for image in &pod.images {
            let name = normalize_image(image);
            let size = spec.images.get(&name).or_else(|| spec.images.get(image));
            if let Some(&size) = size {
                let spread =
                    cache.image_spread(&name).max(cache.image_spread(image)) as f64 / total;
                sum += (size as f64 * spread) as i64;
            }
        }
        let min = self.args.min_threshold_bytes;
        let max = self.args.max_container_threshold_bytes * pod.images.len() as i64;
        let clamped = sum.clamp(min, max);
        Ok(MAX_NODE_SCORE * (clamped - min) / (max - min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::testing::{node_with, pod};
    use crate::plugins::testing::{cache_of, score_all};
    use serde_json::json;

    fn with_images(name: &str, images: serde_json::Value) -> NodeInfo {
        node_with(
            name,
            json!({}),
            json!({}),
            json!({"allocatable": {"cpu": "1"}, "images": images}),
        )
    }

    #[test]
    fn nodes_holding_the_module_score_higher() {
        let mib = 1024 * 1024;
        let cache = cache_of(
            vec![
                with_images(
                    "has",
                    json!([{"names": ["reg/app@sha256:abc", "reg/app:v1"], "sizeBytes": 4 * mib}]),
                ),
                with_images(
                    "also",
                    json!([{"names": ["reg/app:v1"], "sizeBytes": 4 * mib}]),
                ),
                with_images("none", json!([])),
                with_images(
                    "other",
                    json!([{"names": ["reg/other:latest"], "sizeBytes": 4 * mib}]),
                ),
            ],
            vec![],
        );
        let p = pod(
            "p",
            json!({"containers": [{"name": "c", "image": "reg/app:v1"}]}),
        );
        // 4 MiB on 2 of 4 nodes → 2 MiB of a 4 MiB maximum → 50.
        assert_eq!(
            score_all(
                &ImageLocality {
                    args: Args::default()
                },
                &p,
                &cache
            ),
            vec![50, 50, 0, 0]
        );
        let untagged = pod(
            "q",
            json!({"containers": [{"name": "c", "image": "reg/other"}]}),
        );
        assert_eq!(
            score_all(
                &ImageLocality {
                    args: Args::default()
                },
                &untagged,
                &cache
            ),
            vec![0, 0, 0, 25]
        );
    }

    #[test]
    fn normalizes_like_upstream() {
        assert_eq!(normalize_image("nginx"), "nginx:latest");
        assert_eq!(
            normalize_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_image("app:v1"), "app:v1");
        assert_eq!(normalize_image("app@sha256:00"), "app@sha256:00");
    }
}
