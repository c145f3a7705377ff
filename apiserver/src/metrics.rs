//! `metrics.k8s.io/v1beta1`: pod and node usage for `kubectl top` and the HPA. The kubelets'
//! `/stats/summary` feeds it once nodes run pods; until a node reports, the lists are empty.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::errors::ApiError;
use crate::ApiServer;

pub async fn handle(
    _server: &Arc<ApiServer>,
    version: &str,
    rest: &str,
) -> Result<Response, ApiError> {
    if version != "v1beta1" {
        return Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let kind = match segs.as_slice() {
        ["nodes"] => "NodeMetricsList",
        ["pods"] | ["namespaces", _, "pods"] => "PodMetricsList",
        ["nodes", name] => return Err(ApiError::not_found("metrics.k8s.io", "nodes", name)),
        ["namespaces", _, "pods", name] | ["pods", name] => {
            return Err(ApiError::not_found("metrics.k8s.io", "pods", name))
        }
        _ => {
            return Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    Ok(axum::Json(
        json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": []}),
    )
    .into_response())
}
