//! Credentials `wasmkube up` creates on first start: the admin bearer token, kept with the PKI.

use std::path::Path;

use anyhow::Context;
use base64::Engine as _;
use wasmkube_apiserver::auth::TokenAuthenticator;

const TOKENS: &str = "tokens.csv";

/// The admin token, created (32 random bytes) on first use.
pub fn admin_token(pki_dir: &Path) -> anyhow::Result<String> {
    let path = pki_dir.join(TOKENS);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(token) = text
            .lines()
            .find(|l| l.split(',').nth(1) == Some("system:admin"))
            .and_then(|l| l.split(',').next())
        {
            return Ok(token.to_string());
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // Upstream's static token file format: token,user,uid,"groups".
    let line = format!("{token},system:admin,admin,\"system:masters\"\n");
    wasmkube_apiserver::tls::write_private(&path, &line)?;
    Ok(token)
}

/// The authenticator for the tokens in `pki_dir` (created with the admin token if missing).
pub fn token_authenticator(pki_dir: &Path) -> anyhow::Result<TokenAuthenticator> {
    std::fs::create_dir_all(pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    admin_token(pki_dir)?;
    let path = pki_dir.join(TOKENS);
    TokenAuthenticator::from_file(&path).with_context(|| format!("reading {}", path.display()))
}
