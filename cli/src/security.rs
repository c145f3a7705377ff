//! Credentials `wasmkube up` creates on first start, kept with the PKI in upstream's static
//! token file format (`token,user,uid,"groups"`): the admin's, each node's, and the apiserver's
//! own toward kubelets.

use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use wasmkube_apiserver::auth::TokenAuthenticator;

const TOKENS: &str = "tokens.csv";

/// The token of `user`, added to the token file (32 random bytes) on first use.
fn token_for(pki_dir: &Path, user: &str, uid: &str, groups: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let path = pki_dir.join(TOKENS);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(token) = text
        .lines()
        .find(|l| l.split(',').nth(1) == Some(user))
        .and_then(|l| l.split(',').next())
    {
        return Ok(token.to_string());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let line = format!("{token},{user},{uid},\"{groups}\"\n");
    wasmkube_apiserver::tls::write_private(&path, &format!("{text}{line}"))?;
    Ok(token)
}

/// The cluster admin's token (group system:masters).
pub fn admin_token(pki_dir: &Path) -> anyhow::Result<String> {
    token_for(pki_dir, "system:admin", "admin", "system:masters")
}

/// The apiserver's credential toward kubelets (kubeadm's `apiserver-kubelet-client`): user
/// `kube-apiserver-kubelet-client` in group system:masters, which kubelets let in.
pub fn kubelet_client_token(pki_dir: &Path) -> anyhow::Result<String> {
    token_for(
        pki_dir,
        "kube-apiserver-kubelet-client",
        "apiserver-kubelet-client",
        "system:masters",
    )
}

/// Node `node`'s token: user `system:node:<node>`, group `system:nodes` (NodeRestriction).
pub fn node_token(pki_dir: &Path, node: &str) -> anyhow::Result<String> {
    token_for(
        pki_dir,
        &format!("system:node:{node}"),
        &format!("node-{node}"),
        "system:nodes",
    )
}

/// The authenticator for the tokens in `pki_dir` (the admin's and the apiserver's kubelet-client
/// token created if missing).
pub fn token_authenticator(pki_dir: &Path) -> anyhow::Result<TokenAuthenticator> {
    admin_token(pki_dir)?;
    kubelet_client_token(pki_dir)?;
    let path = pki_dir.join(TOKENS);
    TokenAuthenticator::from_file(&path).with_context(|| format!("reading {}", path.display()))
}
