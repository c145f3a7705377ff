//! `hostPath` volumes: a host directory, only under the prefixes the kubelet allows
//! (`--allowed-host-path-prefix`; none by default). Symlinks are resolved and must stay under
//! the prefix. `type` is checked as upstream: `Directory`, `DirectoryOrCreate` and `""` work;
//! `File`/`FileOrCreate` are refused (a WASI preopen is a directory), as are sockets and devices.

use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::HostPathVolumeSource;

use super::{paths, Context, Mounted, VolumeError, VolumePlugin};

/// A `hostPath` volume.
pub struct HostPath {
    source: HostPathVolumeSource,
}

impl HostPath {
    /// The plugin for volume `_name` with `source`.
    pub fn new(_name: String, source: &HostPathVolumeSource) -> Self {
        Self {
            source: source.clone(),
        }
    }
}

impl VolumePlugin for HostPath {
    fn plugin_dir(&self) -> &'static str {
        "kubernetes.io~host-path"
    }

    fn set_up<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Mounted, VolumeError>> {
        Box::pin(async move {
            let kind = self.source.type_.as_deref().unwrap_or_default();
            let host = resolve(
                Path::new(&self.source.path),
                kind,
                &ctx.config.host_path_prefixes,
            )?;
            Ok(Mounted {
                host,
                read_only: false,
            })
        })
    }
}

/// Checks `path` against the allowed `prefixes` and hostPath `kind`, creating it for
/// `DirectoryOrCreate`; returns the canonical directory.
pub fn resolve(path: &Path, kind: &str, prefixes: &[PathBuf]) -> Result<PathBuf, VolumeError> {
    let shown = path.display();
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(VolumeError::Refused(format!(
            "hostPath {shown:?} must be an absolute path without '..'"
        )));
    }
    let create = match kind {
        "" | "Directory" => false,
        "DirectoryOrCreate" => true,
        "File" | "FileOrCreate" => {
            return Err(VolumeError::Refused(format!(
                "hostPath {shown:?} of type {kind}: a wasm guest can only be given directories \
                 (WASI preopens); mount the parent directory instead"
            )))
        }
        other => {
            return Err(VolumeError::Refused(format!(
                "hostPath {shown:?}: type {other:?} is not supported on wasm nodes"
            )))
        }
    };
    let Some(prefix) = prefixes.iter().find(|p| path.starts_with(p)) else {
        let allowed = if prefixes.is_empty() {
            "none are allowed (no --allowed-host-path-prefix is set)".to_string()
        } else {
            let list: Vec<String> = prefixes.iter().map(|p| p.display().to_string()).collect();
            format!("allowed prefixes: {}", list.join(", "))
        };
        return Err(VolumeError::Refused(format!(
            "hostPath {shown:?} is not under an allowed prefix: {allowed}"
        )));
    };
    let rel = path
        .strip_prefix(prefix)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    match paths::resolve_within(prefix, &rel, create) {
        Ok(real) if real.is_dir() => Ok(real),
        Ok(real) => Err(VolumeError::Refused(format!(
            "hostPath {shown:?} ({}) is not a directory; a wasm guest can only be given \
             directories",
            real.display()
        ))),
        Err(VolumeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(VolumeError::Waiting(format!(
                "hostPath type check failed: {shown} is not a directory"
            )))
        }
        Err(VolumeError::Refused(why)) => Err(VolumeError::Refused(format!(
            "hostPath {shown:?} escapes its allowed prefix {}: {why}",
            prefix.display()
        ))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_under_allowed_prefixes_are_given() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let secret = dir.path().join("secret");
        std::fs::create_dir_all(allowed.join("data")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        let prefixes = vec![allowed.clone()];

        assert!(resolve(&allowed.join("data"), "Directory", &prefixes).is_ok());
        let e = resolve(&secret, "", &prefixes).unwrap_err();
        assert!(e.is_refusal() && e.to_string().contains("not under an allowed prefix"));
        let e = resolve(&secret, "", &[]).unwrap_err();
        assert!(e.to_string().contains("none are allowed"), "{e}");
        let e = resolve(&allowed.join("../secret"), "", &prefixes).unwrap_err();
        assert!(e.is_refusal(), "{e}");

        // Missing: Directory waits, DirectoryOrCreate creates.
        let e = resolve(&allowed.join("new"), "Directory", &prefixes).unwrap_err();
        assert!(!e.is_refusal(), "{e}");
        assert!(
            resolve(&allowed.join("new/sub"), "DirectoryOrCreate", &prefixes)
                .unwrap()
                .is_dir()
        );
        std::fs::write(allowed.join("f"), "x").unwrap();
        assert!(resolve(&allowed.join("f"), "", &prefixes)
            .unwrap_err()
            .is_refusal());
        assert!(resolve(&allowed.join("f"), "File", &prefixes)
            .unwrap_err()
            .is_refusal());
        assert!(resolve(&allowed.join("s"), "Socket", &prefixes)
            .unwrap_err()
            .is_refusal());

        // A symlink under the prefix pointing out is refused, and nothing is created there.
        std::os::unix::fs::symlink(&secret, allowed.join("link")).unwrap();
        let e = resolve(&allowed.join("link"), "", &prefixes).unwrap_err();
        assert!(e.is_refusal() && e.to_string().contains("escapes"), "{e}");
        let e = resolve(&allowed.join("link/x"), "DirectoryOrCreate", &prefixes).unwrap_err();
        assert!(e.is_refusal(), "{e}");
        assert!(!secret.join("x").exists());
    }
}
