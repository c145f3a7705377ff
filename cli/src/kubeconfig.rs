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

/// How clients reach and prove themselves to the apiserver.
pub struct Access<'a> {
    pub server: &'a str,
    /// PEM of the CA that signed the serving certificate (None over plain HTTP).
    pub ca_pem: Option<&'a str>,
    /// The admin bearer token (None over plain HTTP, where requests are anonymous admins).
    pub token: Option<&'a str>,
}

/// Writes `dir/kubeconfig` (atomically, owner-only: it holds the admin token).
pub fn write(dir: &Path, access: &Access<'_>) -> anyhow::Result<PathBuf> {
    let path = dir.join("kubeconfig");
    wasmkube_apiserver::tls::write_private(&path, &render(access))?;
    Ok(path)
}

/// The text of a kubeconfig for `access`.
pub fn render(access: &Access<'_>) -> String {
    use base64::Engine as _;
    let ca = access
        .ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    let user = match access.token {
        Some(t) => format!("\n    token: {t}"),
        None => " {}".to_string(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: wasmkube
  cluster:
    server: {server}{ca}
users:
- name: admin
  user:{user}
contexts:
- name: wasmkube
  context:
    cluster: wasmkube
    user: admin
    namespace: default
current-context: wasmkube
",
        server = access.server
    )
}

/// A kube-rs client from a kubeconfig file (CA, token), as every component connects.
pub async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    Ok(client_and_ca(path).await?.0)
}

/// A client as [`client`], and the CA the kubeconfig trusts (DER; None over plain HTTP): a
/// kubelet accepts client certificates signed by it (the apiserver's).
pub async fn client_and_ca(path: &Path) -> anyhow::Result<(kube::Client, Option<Vec<Vec<u8>>>)> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("using {}", path.display()))?;
    let ca = config.root_cert.clone();
    Ok((kube::Client::try_from(config)?, ca))
}

/// A kube-rs client from a parsed kubeconfig.
pub async fn client_from(kc: kube::config::Kubeconfig) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
