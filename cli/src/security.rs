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

/// The user of the apiserver's client certificate toward kubelets (kubeadm's
/// `apiserver-kubelet-client`).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Node `node`'s token: user `system:node:<node>`, group `system:nodes` (NodeRestriction).
pub fn node_token(pki_dir: &Path, node: &str) -> anyhow::Result<String> {
    token_for(
        pki_dir,
        &format!("system:node:{node}"),
        &format!("node-{node}"),
        "system:nodes",
    )
}

/// The authenticator for the tokens in `pki_dir` (the admin's created if missing). A
/// `kube-apiserver-kubelet-client` token left by an older version (the apiserver reaches
/// kubelets with a client certificate now; that token was a master) is removed.
pub fn token_authenticator(pki_dir: &Path) -> anyhow::Result<TokenAuthenticator> {
    admin_token(pki_dir)?;
    let path = pki_dir.join(TOKENS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kept: String = text
        .lines()
        .filter(|l| l.split(',').nth(1) != Some(KUBELET_CLIENT_USER))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept != text {
        wasmkube_apiserver::tls::write_private(&path, &kept)?;
    }
    TokenAuthenticator::from_file(&path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_kubelet_client_token_is_removed_and_the_admins_kept() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin_token(dir.path()).unwrap();
        // A cluster made by an older version: the kubelet client was a master.
        let path = dir.path().join(TOKENS);
        let old =
            "oldtoken,kube-apiserver-kubelet-client,apiserver-kubelet-client,\"system:masters\"";
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{old}\n")).unwrap();

        token_authenticator(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("oldtoken"), "{text}");
        assert_eq!(admin_token(dir.path()).unwrap(), admin);
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
