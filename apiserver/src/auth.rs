//! The seam where authentication (and later authorization) plugs in: a middleware that turns a
//! request's credentials into a [`User`] stored in the request's extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use crate::errors::ApiError;
use crate::secret_tokens::SecretTokens;
use crate::ApiServer;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Decides who a request comes from, or refuses it (401).
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError>;

    /// The table of Secret-held tokens this authenticator consults, which the apiserver keeps
    /// in step with the store (none by default).
    fn secret_tokens(&self) -> Option<Arc<SecretTokens>> {
        None
    }

    /// Whether a configured (not Secret-held) credential names user `name`: joining nodes may
    /// not take the name of a node `up` runs.
    fn has_static_user(&self, _name: &str) -> bool {
        false
    }
}

/// Plain HTTP with `--insecure`: every request is the cluster admin, as kubectl sends no token.
pub struct InsecureAdmin;

impl Authenticator for InsecureAdmin {
    fn authenticate(&self, _: &HeaderMap) -> Result<User, ApiError> {
        Ok(User {
            name: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        })
    }
}

/// Bearer tokens, as kube-apiserver's static token file (each token names a user and groups),
/// plus the bootstrap and node tokens kept in kube-system Secrets. A request without a token
/// is anonymous: only the health and version endpoints and `kube-public/cluster-info` answer it.
pub struct TokenAuthenticator {
    tokens: std::collections::HashMap<String, User>,
    secrets: Arc<SecretTokens>,
}

/// The ConfigMap joining nodes read before they trust the cluster (kubeadm's discovery).
pub const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// Paths that answer anonymous requests (upstream's `system:public-info-viewer`, and the
/// `kube-public/cluster-info` ConfigMap kubeadm lets anonymous users get).
const PUBLIC_PATHS: &[&str] = &[
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    CLUSTER_INFO_PATH,
];

impl TokenAuthenticator {
    /// Static tokens; Secret-held ones are added as the apiserver sees them.
    pub fn new(tokens: impl IntoIterator<Item = (String, User)>) -> Self {
        Self {
            tokens: tokens.into_iter().collect(),
            secrets: Arc::default(),
        }
    }

    /// Reads upstream's token file format: `token,user,uid,"group1,group2"` per line.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let mut tokens = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let _uid = parts.next();
            let groups = parts
                .next()
                .map(|g| {
                    g.trim_matches('"')
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            tokens.push((
                token.to_string(),
                User {
                    name: name.to_string(),
                    groups,
                },
            ));
        }
        Ok(Self::new(tokens))
    }

    fn check(&self, headers: &HeaderMap) -> Option<Result<User, ApiError>> {
        let value = headers.get(http::header::AUTHORIZATION)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let user = token.and_then(|t| {
            self.tokens
                .get(t)
                .cloned()
                .or_else(|| self.secrets.lookup(t))
        });
        Some(match user {
            Some(mut u) => {
                u.groups.push("system:authenticated".into());
                Ok(u)
            }
            None => Err(unauthorized()),
        })
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        http::StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized",
    )
}

impl Authenticator for TokenAuthenticator {
    fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        self.check(headers).unwrap_or_else(|| {
            Ok(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            })
        })
    }

    fn secret_tokens(&self) -> Option<Arc<SecretTokens>> {
        Some(self.secrets.clone())
    }

    fn has_static_user(&self, name: &str) -> bool {
        self.tokens.values().any(|u| u.name == name)
    }
}

/// Whether `user` is the anonymous user of requests without a token.
pub fn is_anonymous(user: &User) -> bool {
    user.name == "system:anonymous"
}

pub async fn authenticate(
    State(server): State<Arc<ApiServer>>,
    mut req: Request,
    next: Next,
) -> Response {
    match server.authenticator.authenticate(req.headers()) {
        Ok(user) if is_anonymous(&user) && !PUBLIC_PATHS.contains(&req.uri().path()) => {
            unauthorized().into_response()
        }
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
