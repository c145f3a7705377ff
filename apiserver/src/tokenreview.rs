//! `authentication.k8s.io/v1` `TokenReview`: `create` asks the apiserver's authenticator who a
//! bearer token belongs to (kubelets use it to authenticate callers of their own API, as
//! upstream's webhook token authentication). Reviews are answered, never stored.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use crate::auth::User;
use crate::errors::ApiError;
use crate::ApiServer;

/// The API group.
pub const GROUP: &str = "authentication.k8s.io";
/// The one version served.
pub const VERSION: &str = "v1";

/// The discovery entry of `tokenreviews` (create only, cluster-scoped).
pub fn discovery_resource() -> Value {
    json!({
        "name": "tokenreviews",
        "singularName": "tokenreview",
        "namespaced": false,
        "kind": "TokenReview",
        "verbs": ["create"],
    })
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Serves `/apis/authentication.k8s.io/{version}/{rest}` for `user`.
pub async fn handle(
    server: &ApiServer,
    user: &User,
    version: &str,
    rest: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if version != VERSION || rest.trim_matches('/') != "tokenreviews" {
        return Err(not_found());
    }
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on tokenreviews: the only verb is create"
        )));
    }
    crate::authz::authorize_token_review(user)?;
    let review = crate::codec::parse_body(headers, body)?;
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(kind, "" | "TokenReview")
        || !matches!(api_version, "" | "authentication.k8s.io/v1")
    {
        return Err(ApiError::bad_request(format!(
            "the body must be an authentication.k8s.io/v1 TokenReview, got {api_version} {kind}"
        )));
    }
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request(format!(
            "token is required for TokenReview in {GROUP}"
        )));
    }
    let status = review_token(server, token);
    let answer = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": review.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": review.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": status,
    });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// The `status` of a review of `token`: who it authenticates as, or why not. Under
/// `--insecure` (`InsecureAdmin`) every token is the admin, as every request is; kubelets of
/// such clusters let anonymous callers in anyway.
fn review_token(server: &ApiServer, token: &str) -> Value {
    let mut headers = HeaderMap::new();
    let user = HeaderValue::from_str(&format!("Bearer {token}"))
        .ok()
        .and_then(|value| {
            headers.insert(http::header::AUTHORIZATION, value);
            server.authenticator.authenticate(&headers).ok()
        });
    match user {
        Some(user) if user.name != "system:anonymous" => json!({
            "authenticated": true,
            "user": {"username": user.name, "groups": user.groups},
        }),
        // Not a token this server issued (upstream's bearer-token authenticator's words).
        _ => {
            json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
        }
    }
}
