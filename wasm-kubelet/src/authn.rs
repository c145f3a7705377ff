//! Authentication and authorization of the kubelet API, as upstream's kubelet with
//! `--anonymous-auth=false --authentication-token-webhook`: a caller presents a bearer token,
//! the kubelet asks the apiserver who it belongs to with a `TokenReview` (through its own node
//! credential), caches the answer, and lets only the cluster's masters in.
//!
//! Upstream then asks the apiserver a `SubjectAccessReview` for `nodes/proxy` (or `nodes/stats`,
//! `nodes/log`). We have no RBAC to review against: the apiserver authorizes `system:masters`
//! for everything and nobody else for those subresources, so "is in `system:masters`" is the
//! same answer without a second round trip. The apiserver's kubelet-client identity
//! (`kube-apiserver-kubelet-client`, as kubeadm names it) is let in through its own group,
//! [`KUBELET_API`], which the apiserver grants nothing: a bearer token reaches every kubelet the
//! apiserver talks to, so the one it presents must not be worth more than the kubelet API
//! (upstream presents a client certificate instead, which cannot be replayed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long an authenticated review is trusted (upstream kubelet's
/// `authentication.webhook.cacheTTL` default).
pub const AUTHENTICATED_TTL: Duration = Duration::from_secs(120);
/// How long a refused token stays refused: shorter, so a token issued a moment ago is accepted
/// soon (the apiserver's webhook authenticator uses 30 s for failures too).
pub const UNAUTHENTICATED_TTL: Duration = Duration::from_secs(30);
/// The cluster admins, who may call the kubelet API.
pub const MASTERS: &str = "system:masters";
/// The group of the apiserver's kubelet-client identity: the kubelet API, nothing else.
pub const KUBELET_API: &str = "wasmkube:kubelet-api";
/// Reviews kept at most; beyond this, expired ones are dropped and then everything (a flood of
/// made-up tokens must not grow memory without bound).
const MAX_CACHED: usize = 4096;

/// Who a reviewed token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `status.user.username`.
    pub name: String,
    /// `status.user.groups`.
    pub groups: Vec<String>,
}

/// A cached review: when it expires, and who the token belongs to (None: nobody).
type Cached = (Instant, Option<Caller>);

/// Reviews bearer tokens with the apiserver and caches the answers (keyed by the token's
/// SHA-256, so the cache holds no credential).
pub struct TokenReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl TokenReviewer {
    /// A reviewer asking the apiserver `client` talks to, with the client's credential.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Who `token` belongs to: `Ok(None)` when the apiserver does not authenticate it, `Err`
    /// when the apiserver could not be asked (not cached).
    pub async fn review(&self, token: &str) -> Result<Option<Caller>, kube::Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((expires, caller)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            if Instant::now() < expires {
                return Ok(caller);
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        let caller = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Some(Caller {
                name: user.username.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
            }),
            _ => {
                if let Some(e) = status.error.filter(|e| !e.is_empty()) {
                    tracing::debug!("kubelet API: token not authenticated: {e}");
                }
                None
            }
        };
        let ttl = if caller.is_some() {
            AUTHENTICATED_TTL
        } else {
            UNAUTHENTICATED_TTL
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                let now = Instant::now();
                cache.retain(|_, (expires, _)| *expires > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now() + ttl, caller.clone()));
        }
        Ok(caller)
    }
}

/// A `metav1.Status` failure, the body upstream's API servers answer errors with.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

/// The `nodes` subresource a kubelet path is authorized as (upstream's kubelet auth filter):
/// `stats`, `metrics`, `log`, `spec`, else `proxy`.
fn subresource(path: &str) -> &'static str {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else {
        "proxy"
    }
}

/// The RBAC verb of an HTTP method, as upstream's kubelet names it.
fn verb(method: &Method) -> &'static str {
    match method.as_str() {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    }
}

/// Middleware: `/healthz` answers anyone; every other request needs a verified client
/// certificate or a bearer token of a [`MASTERS`] or [`KUBELET_API`] member (401 without
/// either, 403 for anyone else).
pub async fn authenticate(
    State(reviewer): State<Arc<TokenReviewer>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    // A client certificate the TLS handshake verified against the cluster CA.
    let peer = req
        .extensions()
        .get::<Arc<axum_server::tls::TlsInfo>>()
        .and_then(|t| t.peer_certificates.first().cloned())
        .and_then(|der| crate::tls::identity(&der));
    if let Some(peer) = peer {
        if allowed(&peer.groups) {
            return next.run(req).await;
        }
        return forbidden(&peer.name, &req);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return unauthorized();
    };
    let caller = match reviewer.review(token).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return unauthorized(),
        Err(e) => {
            // As upstream: a review that could not be made leaves the request unauthenticated.
            tracing::warn!("kubelet API: reviewing a bearer token with the apiserver: {e}");
            return unauthorized();
        }
    };
    if allowed(&caller.groups) {
        return next.run(req).await;
    }
    forbidden(&caller.name, &req)
}

/// Whether members of `groups` may use the kubelet API.
fn allowed(groups: &[String]) -> bool {
    groups.iter().any(|g| g == MASTERS || g == KUBELET_API)
}

/// Upstream's refusal of an authenticated caller without the right.
fn forbidden(user: &str, req: &Request) -> Response {
    let message = format!(
        "Forbidden (user={user}, verb={}, resource=nodes, subresource={})",
        verb(req.method()),
        subresource(req.uri().path())
    );
    status(StatusCode::FORBIDDEN, "Forbidden", &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reviews_are_served_from_the_cache_until_they_expire() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Nothing listens on port 1: every review that reaches the apiserver fails.
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
        let reviewer = TokenReviewer::new(kube::Client::try_from(config).expect("client"));
        assert!(
            reviewer.review("t").await.is_err(),
            "failures are not cached"
        );
        let admin = Caller {
            name: "system:admin".into(),
            groups: vec![MASTERS.into()],
        };
        let key: [u8; 32] = Sha256::digest(b"t").into();
        let cache = |expires: Instant, caller: Option<Caller>| {
            reviewer
                .cache
                .lock()
                .expect("cache")
                .insert(key, (expires, caller));
        };
        cache(Instant::now() + AUTHENTICATED_TTL, Some(admin.clone()));
        assert_eq!(reviewer.review("t").await.expect("cached"), Some(admin));
        cache(Instant::now() + UNAUTHENTICATED_TTL, None);
        assert_eq!(reviewer.review("t").await.expect("cached"), None);
        cache(Instant::now(), None);
        assert!(reviewer.review("t").await.is_err(), "expired: asked again");
    }

    #[test]
    fn paths_map_to_upstreams_node_subresources() {
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/containerLogs/default/p/c"), "proxy");
        assert_eq!(subresource("/logs/"), "log");
        assert_eq!(subresource("/statsx"), "proxy");
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::POST), "create");
    }
}
