//! The seam where authentication (and later authorization) plugs in: a middleware that turns a
//! request's credentials into a [`User`] stored in the request's extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use crate::errors::ApiError;
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

pub async fn authenticate(
    State(server): State<Arc<ApiServer>>,
    mut req: Request,
    next: Next,
) -> Response {
    match server.authenticator.authenticate(req.headers()) {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
