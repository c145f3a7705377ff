//! `emptyDir` volumes: a per-pod directory, removed with the pod. `medium: Memory` is a
//! directory too (a wasm node mounts nothing). `sizeLimit` is enforced by the kubelet's
//! periodic check: over it, the pod is evicted with upstream's message.

use std::path::Path;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::EmptyDirVolumeSource;

use super::{io_err, Context, Mounted, VolumeError, VolumePlugin};

/// An `emptyDir` volume.
pub struct EmptyDir {
    name: String,
    /// `sizeLimit` as written and in bytes.
    limit: Option<(String, u64)>,
}

impl EmptyDir {
    /// The plugin for volume `name` with `source`.
    pub fn new(name: String, source: &EmptyDirVolumeSource) -> Self {
        let limit = source.size_limit.as_ref().and_then(|q| {
            crate::supervisor::parse_quantity(&q.0).map(|bytes| (q.0.clone(), bytes))
        });
        Self { name, limit }
    }
}

impl VolumePlugin for EmptyDir {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~empty-dir"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            std::fs::create_dir_all(ctx.dir).map_err(io_err(ctx.dir))?;
            Ok(Mounted {
                host: ctx.dir.to_path_buf(),
                read_only: false,
            })
        })
    }

    fn over_limit(&self, dir: &Path) -> Option<String> {
        let (text, bytes) = self.limit.as_ref()?;
        (usage(dir) > *bytes).then(|| {
            format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {text:?}.",
                self.name
            )
        })
    }
}

/// Bytes of the regular files under `dir` (symlinks are not followed).
pub fn usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => usage(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn usage_over_the_size_limit_gives_the_eviction_message() {
        let dir = tempfile::tempdir().unwrap();
        let source = EmptyDirVolumeSource {
            size_limit: Some(Quantity("1Ki".into())),
            ..Default::default()
        };
        let v = EmptyDir::new("scratch".into(), &source);
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/a"), vec![0u8; 1000]).unwrap();
        assert_eq!(v.over_limit(dir.path()), None);
        std::fs::write(dir.path().join("b"), vec![0u8; 100]).unwrap();
        assert_eq!(
            v.over_limit(dir.path()).as_deref(),
            Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Ki\".")
        );
        let unlimited = EmptyDir::new("x".into(), &EmptyDirVolumeSource::default());
        assert_eq!(unlimited.over_limit(dir.path()), None);
    }
}
