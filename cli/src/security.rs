//! Credentials `wasmkube up` creates on first start, kept with the PKI in upstream's static
//! token file format (`token,user,uid,"groups"`): the admin's, each node's, and the apiserver's
//! own toward kubelets.

use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use wasmkube_apiserver::auth::TokenAuthenticator;

const TOKENS: &str = "tokens.csv";

/// The token of `user`, added to the token file (32 random bytes) on first use, and replaced
/// by a new one when the file gives `user` other groups (a cluster made by an older version).
fn token_for(pki_dir: &Path, user: &str, uid: &str, groups: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let path = pki_dir.join(TOKENS);
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    let quoted = format!("\"{groups}\"");
    if let Some(line) = text.lines().find(|l| l.split(',').nth(1) == Some(user)) {
        let fields: Vec<&str> = line.splitn(4, ',').collect();
        if fields.get(3) == Some(&quoted.as_str()) {
            return Ok(fields[0].to_string());
        }
        text = text
            .lines()
            .filter(|l| l.split(',').nth(1) != Some(user))
            .map(|l| format!("{l}\n"))
            .collect();
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
/// `kube-apiserver-kubelet-client` in group `wasmkube:kubelet-api`, which kubelets let in and
/// the apiserver grants nothing, so a kubelet that sees it (every kubelet does, on `kubectl
/// logs`) cannot use it against the cluster.
pub fn kubelet_client_token(pki_dir: &Path) -> anyhow::Result<String> {
    token_for(
        pki_dir,
        "kube-apiserver-kubelet-client",
        "apiserver-kubelet-client",
        wasmkube_kubelet::authn::KUBELET_API,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_while_its_groups_stay_and_replaced_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin_token(dir.path()).unwrap();
        // A cluster made by an older version: the kubelet client was a master.
        let path = dir.path().join(TOKENS);
        let old =
            "oldtoken,kube-apiserver-kubelet-client,apiserver-kubelet-client,\"system:masters\"";
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{old}\n")).unwrap();

        let client = kubelet_client_token(dir.path()).unwrap();
        assert_ne!(client, "oldtoken");
        assert_eq!(kubelet_client_token(dir.path()).unwrap(), client);
        assert_eq!(admin_token(dir.path()).unwrap(), admin);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("oldtoken"), "{text}");
        assert!(text.contains(&format!(
            "{client},kube-apiserver-kubelet-client,apiserver-kubelet-client,\"wasmkube:kubelet-api\"\n"
        )));
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
