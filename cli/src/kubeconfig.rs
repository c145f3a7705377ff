//! The kubeconfig the unchanged kubectl and client libraries use to reach the cluster.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The per-user default data dir: `$XDG_DATA_HOME/wasmkube` or `~/.local/share/wasmkube`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("wasmkube"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/wasmkube"))
}

/// Writes `dir/kubeconfig` for `server` (atomically: a half-written file is never read).
pub fn write(dir: &Path, server: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: wasmkube
  cluster:
    server: {server}
users:
- name: admin
  user: {{}}
contexts:
- name: wasmkube
  context:
    cluster: wasmkube
    user: admin
    namespace: default
current-context: wasmkube
"
    );
    let tmp = dir.join(".kubeconfig.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
