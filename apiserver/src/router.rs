//! Every route of the apiserver in one table, and the layers around them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::errors::ApiError;
use crate::request::{Params, Target};
use crate::rest::{self, Ctx};
use crate::{auth, discovery, subresource, watch, ApiServer};

/// Upstream's limit on request bodies (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Non-streaming requests that take longer than this get a 504 `Status`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The apiserver's router.
pub fn app(server: Arc<ApiServer>) -> Router {
    Router::new()
        .route("/version", get(|| async { Json(discovery::version()) }))
        .route("/healthz", get(ok))
        .route("/livez", get(ok))
        .route("/readyz", get(ok))
        .route("/api", get(|| async { Json(discovery::api_versions()) }))
        .route("/apis", get(|| async { Json(discovery::api_group_list()) }))
        .route("/api/{version}", get(core_discovery))
        .route("/apis/{group}/{version}", get(group_discovery))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api/{version}/{*rest}", any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            server.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn(timeout_unless_streaming))
        .layer(middleware::from_fn(errors_as_status))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TraceLayer::new_for_http())
        .with_state(server)
}

async fn ok() -> &'static str {
    "ok"
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
    .into_response()
}

async fn core_discovery(Path(version): Path<String>) -> Response {
    match discovery::resource_list("", &version) {
        Some(v) => Json(v).into_response(),
        None => not_found().await,
    }
}

async fn group_discovery(Path((group, version)): Path<(String, String)>) -> Response {
    match discovery::resource_list(&group, &version) {
        Some(v) => Json(v).into_response(),
        None => not_found().await,
    }
}

async fn openapi_v2(headers: HeaderMap) -> Response {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let protobuf = accept.contains("protobuf");
    let content_type = if protobuf {
        crate::openapi::V2_PROTOBUF
    } else {
        "application/json"
    };
    (
        [(http::header::CONTENT_TYPE, content_type)],
        crate::openapi::v2_document(protobuf),
    )
        .into_response()
}

async fn openapi_index() -> Response {
    Json(crate::openapi::index()).into_response()
}

async fn openapi_document(Path(path): Path<String>) -> Response {
    match crate::openapi::document(&path) {
        Some(doc) => Json(doc).into_response(),
        None => not_found().await,
    }
}

async fn core_resource(
    State(server): State<Arc<ApiServer>>,
    Path((version, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    resource(&server, "", &version, &rest, req).await
}

async fn group_resource(
    State(server): State<Arc<ApiServer>>,
    Path((group, version, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    resource(&server, &group, &version, &rest, req).await
}

async fn resource(
    server: &Arc<ApiServer>,
    group: &str,
    version: &str,
    rest: &str,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("the request body is larger than the limit of {MAX_BODY} bytes"),
            )
            .into_response()
        }
    };
    let user = parts.extensions.get::<auth::User>().cloned();
    dispatch(
        server,
        user.as_ref(),
        group,
        version,
        rest,
        parts.method,
        parts.uri,
        parts.headers,
        body,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Routes one resource request to its verb.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    server: &Arc<ApiServer>,
    user: Option<&auth::User>,
    group: &str,
    version: &str,
    rest_path: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if group == "metrics.k8s.io" {
        let user =
            user.ok_or_else(|| ApiError::internal("request reached a handler unauthenticated"))?;
        let resource = if rest_path.contains("nodes") {
            "nodes"
        } else {
            "pods"
        };
        crate::authz::authorize_metrics(user, resource)?;
        return crate::metrics::handle(server, version, rest_path, uri.query()).await;
    }
    if group == crate::tokenreview::GROUP {
        let user =
            user.ok_or_else(|| ApiError::internal("request reached a handler unauthenticated"))?;
        return crate::tokenreview::handle(
            server, user, version, rest_path, &method, &headers, &body,
        )
        .await;
    }
    let target = Target::parse(group, version, rest_path)?;
    let params = Params::parse(uri.query())?;
    // Every request passed authentication, which stored who made it.
    let user =
        user.ok_or_else(|| ApiError::internal("request reached a handler unauthenticated"))?;
    let created = || crate::codec::parse_body(&headers, &body).ok();
    crate::authz::authorize(server, user, &method, &target, &params, created).await?;
    let ctx = Ctx {
        server,
        target: &target,
        params: &params,
        headers: &headers,
    };
    if let Some(sub) = target.subresource.as_deref() {
        return subresource::handle(&ctx, &method, sub, &body).await;
    }
    let watching = params.flag("watch");
    match (method.as_str(), target.name.is_some()) {
        ("GET", true) if watching => Err(ApiError::bad_request(
            "watch of a single object: use a list with fieldSelector=metadata.name=NAME",
        )),
        ("GET", true) => rest::get(&ctx).await,
        ("GET", false) if watching => watch::watch(&ctx).await,
        ("GET", false) => rest::list(&ctx).await,
        ("POST", false) => {
            if target.def.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            rest::create(&ctx, &body).await
        }
        ("PUT", true) => rest::update(&ctx, &body, None).await,
        ("PATCH", true) => rest::patch(&ctx, &body, None).await,
        ("DELETE", true) => rest::delete(&ctx, &body).await,
        ("DELETE", false) => rest::delete_collection(&ctx, &body).await,
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// Applies the request timeout to everything but watches and followed logs.
async fn timeout_unless_streaming(req: Request, next: Next) -> Response {
    let q = req.uri().query().unwrap_or("");
    let streaming = q
        .split('&')
        .any(|kv| matches!(kv, "watch=true" | "watch=1" | "follow=true" | "follow=1"));
    if streaming {
        return next.run(req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            "the request did not complete within the allotted timeout of 60s",
        )
        .into_response(),
    }
}

/// Errors produced below the handlers (body too large, bad path encoding) come back as plain
/// text; clients expect a `Status`, so wrap them.
async fn errors_as_status(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let reason = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        s if s.is_server_error() => "InternalError",
        _ => "BadRequest",
    };
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    ApiError::new(status, reason, message).into_response()
}
