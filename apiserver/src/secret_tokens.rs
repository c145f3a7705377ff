//! Bearer tokens kept in kube-system Secrets, as kubeadm's join uses them: bootstrap tokens
//! (type `bootstrap.kubernetes.io/token`, named `bootstrap-token-<id>`, presented as
//! `<id>.<secret>`) and node tokens (type `wasmkube.dev/node-token`, named
//! `node-token-<node>`, key `token`). An in-memory table follows the store's kube-system
//! Secrets so that the (sync) authenticator can answer without a store read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use futures::StreamExt;
use serde_json::Value;

use crate::auth::User;
use crate::storage::{EventKind, ListOptions, Storage, StorageError};

/// The Secret type of bootstrap tokens (upstream's).
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The Secret name prefix of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "bootstrap-token-";
/// The group every bootstrap token's user is in.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The Secret type of node credentials that `wasmkube kubelet join` creates.
pub const NODE_TOKEN_TYPE: &str = "wasmkube.dev/node-token";
/// The Secret name prefix of node credentials: `node-token-<node>`.
pub const NODE_TOKEN_PREFIX: &str = "node-token-";
/// Where both kinds of Secret live.
pub const NAMESPACE: &str = "kube-system";

const KEY_PREFIX: &str = "secrets/kube-system/";

/// One credential read from a Secret.
#[derive(Clone, Debug)]
enum Credential {
    Bootstrap {
        id: String,
        secret: String,
        /// Unix seconds after which the token is refused.
        expires: Option<i64>,
        usable: bool,
        extra_groups: Vec<String>,
    },
    Node {
        node: String,
        token: String,
    },
}

/// The credentials of kube-system's token Secrets, by Secret name.
#[derive(Default)]
pub struct SecretTokens(RwLock<HashMap<String, Credential>>);

/// Whether `token` has the shape of a bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_bootstrap_token(token: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(token.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl SecretTokens {
    /// Who `token` belongs to, if a Secret grants it (groups without `system:authenticated`).
    pub fn lookup(&self, token: &str) -> Option<User> {
        let table = self.0.read().unwrap_or_else(|e| e.into_inner());
        if is_bootstrap_token(token) {
            let (id, secret) = token.split_once('.')?;
            return match table.get(&format!("{BOOTSTRAP_TOKEN_PREFIX}{id}"))? {
                Credential::Bootstrap {
                    id: token_id,
                    secret: s,
                    expires,
                    usable,
                    extra_groups,
                } if token_id == id && same(s, secret) && *usable => {
                    let now = jiff::Timestamp::now().as_second();
                    if expires.is_some_and(|e| now >= e) {
                        return None;
                    }
                    let mut groups = vec![BOOTSTRAPPERS.to_string()];
                    groups.extend(extra_groups.iter().cloned());
                    Some(User {
                        name: format!("system:bootstrap:{id}"),
                        groups,
                    })
                }
                _ => None,
            };
        }
        table.values().find_map(|c| match c {
            Credential::Node { node, token: t } if same(t, token) => Some(User {
                name: format!("system:node:{node}"),
                groups: vec!["system:nodes".into()],
            }),
            _ => None,
        })
    }

    fn set(&self, name: &str, credential: Option<Credential>) {
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        match credential {
            Some(c) => table.insert(name.to_string(), c),
            None => table.remove(name),
        };
    }

    fn replace(&self, all: impl IntoIterator<Item = (String, Credential)>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = all.into_iter().collect();
    }
}

/// A Secret's key, from `data` (base64) or `stringData`.
fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(s) = secret
        .pointer(&format!("/stringData/{key}"))
        .and_then(Value::as_str)
    {
        return Some(s.to_string());
    }
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// The credential a Secret carries, if it is one of ours and well formed.
fn credential(secret: &Value) -> Option<(String, Credential)> {
    let name = secret.pointer("/metadata/name")?.as_str()?.to_string();
    let kind = secret.get("type").and_then(Value::as_str).unwrap_or("");
    let credential = match kind {
        BOOTSTRAP_TOKEN_TYPE => {
            let id = secret_value(secret, "token-id")?;
            if name != format!("{BOOTSTRAP_TOKEN_PREFIX}{id}") {
                return None;
            }
            // An unreadable expiration makes the token unusable, as upstream.
            let expires = secret_value(secret, "expiration").map(|e| {
                e.parse::<jiff::Timestamp>()
                    .map(|t| t.as_second())
                    .unwrap_or(i64::MIN)
            });
            // Upstream refuses a token whose extra groups leave system:bootstrappers:*.
            let extra_groups: Vec<String> = secret_value(secret, "auth-extra-groups")
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if extra_groups
                .iter()
                .any(|g| !g.starts_with("system:bootstrappers:"))
            {
                return None;
            }
            Credential::Bootstrap {
                id,
                secret: secret_value(secret, "token-secret")?,
                expires,
                usable: secret_value(secret, "usage-bootstrap-authentication").as_deref()
                    == Some("true"),
                extra_groups,
            }
        }
        NODE_TOKEN_TYPE => {
            let node = name.strip_prefix(NODE_TOKEN_PREFIX)?.to_string();
            let token = secret_value(secret, "token")?;
            if node.is_empty() || token.is_empty() {
                return None;
            }
            Credential::Node { node, token }
        }
        _ => return None,
    };
    Some((name, credential))
}

/// Keeps `table` in step with the store's kube-system Secrets until `shutdown` (relisting
/// after a watch error).
pub async fn run(
    store: Arc<dyn Storage>,
    table: Arc<SecretTokens>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    crate::storage::follow_until_shutdown("token secrets", &shutdown, || {
        follow(store.as_ref(), &table, &shutdown)
    })
    .await;
}

async fn follow(
    store: &dyn Storage,
    table: &SecretTokens,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), StorageError> {
    let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or_default();
    let page = store
        .list(ListOptions {
            prefix: KEY_PREFIX.into(),
            ..Default::default()
        })
        .await?;
    table.replace(
        page.items
            .iter()
            .filter_map(|kv| credential(&parse(&kv.value))),
    );
    let mut events = store.watch(KEY_PREFIX, page.revision).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ev = events.next() => match ev {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(ev)) => {
                    let secret = parse(&ev.kv.value);
                    let Some(name) = ev.kv.key.strip_prefix(KEY_PREFIX) else { continue };
                    let c = (ev.kind != EventKind::Deleted)
                        .then(|| credential(&secret).map(|(_, c)| c))
                        .flatten();
                    table.set(name, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bootstrap_tokens_have_upstreams_shape() {
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        assert!(!is_bootstrap_token("abcdef.0123456789abcde"));
        assert!(!is_bootstrap_token("ABCDEF.0123456789abcdef"));
        assert!(!is_bootstrap_token("abcdef0123456789abcdef"));
    }

    #[test]
    fn secrets_grant_bootstrap_and_node_users() {
        let table = SecretTokens::default();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let boot = json!({"metadata": {"name": "bootstrap-token-abcdef"},
            "type": BOOTSTRAP_TOKEN_TYPE, "data": {"token-id": b64("abcdef"),
            "token-secret": b64("0123456789abcdef"), "usage-bootstrap-authentication": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:wasmkube:default-node-token"),
            "expiration": b64("2999-01-01T00:00:00Z")}});
        let node = json!({"metadata": {"name": "node-token-n1"}, "type": NODE_TOKEN_TYPE,
            "data": {"token": b64("secret-node-token")}});
        let expired = json!({"metadata": {"name": "bootstrap-token-zzzzzz"},
            "type": BOOTSTRAP_TOKEN_TYPE, "stringData": {"token-id": "zzzzzz",
            "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true",
            "expiration": "2001-01-01T00:00:00Z"}});
        let escalating = json!({"metadata": {"name": "bootstrap-token-yyyyyy"},
            "type": BOOTSTRAP_TOKEN_TYPE, "stringData": {"token-id": "yyyyyy",
            "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:masters"}});
        table.replace(
            [&boot, &node, &expired, &escalating]
                .into_iter()
                .filter_map(credential),
        );
        let user = table
            .lookup("abcdef.0123456789abcdef")
            .expect("bootstrap user");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:wasmkube:default-node-token"
            ]
        );
        assert!(table.lookup("abcdef.0123456789abcdee").is_none());
        assert!(table.lookup("zzzzzz.0123456789abcdef").is_none(), "expired");
        assert!(
            table.lookup("yyyyyy.0123456789abcdef").is_none(),
            "bad extra group"
        );
        let n = table.lookup("secret-node-token").expect("node user");
        assert_eq!(n.name, "system:node:n1");
        assert_eq!(n.groups, ["system:nodes"]);
        table.set("node-token-n1", None);
        assert!(table.lookup("secret-node-token").is_none());
    }
}
