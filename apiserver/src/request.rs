//! What a resource request addresses (from its path) and asks for (from its query and headers).

use std::collections::HashMap;

use http::HeaderMap;

use crate::errors::ApiError;
use crate::resources::{self, ResourceDef};

/// The object or collection a request path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: &'static ResourceDef,
    /// The namespace from the path (None for cluster-scoped or all-namespaces requests).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Parses the part of the path after `/api/v1/` or `/apis/{g}/{v}/`.
    pub fn parse(group: &str, version: &str, rest: &str) -> Result<Self, ApiError> {
        let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let not_found = || {
            ApiError::new(
                http::StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
        let lookup = |plural: &str| resources::find(group, version, plural).ok_or_else(not_found);
        let target =
            |def, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>| Target {
                def,
                namespace: namespace.map(str::to_string),
                name: name.map(|s| s.to_string()),
                subresource: sub.map(|s| s.to_string()),
            };
        // `namespaces/{ns}/{plural}...` addresses namespaced resources, unless the third segment
        // is a subresource of the namespace itself (`namespaces/x/status`, `/finalize`).
        if segs.len() >= 3 && segs[0] == "namespaces" && !segs[1].is_empty() {
            if let Some(def) = resources::find(group, version, segs[2]).filter(|d| d.namespaced) {
                if segs.len() > 5 {
                    return Err(not_found());
                }
                return Ok(target(def, Some(segs[1]), segs.get(3), segs.get(4)));
            }
        }
        if segs.is_empty() || segs[0].is_empty() || segs.len() > 3 {
            return Err(not_found());
        }
        let def = lookup(segs[0])?;
        Ok(target(def, None, segs.get(1), segs.get(2)))
    }
}

/// Query parameters of a request.
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True"))
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.number(key)
    }

    pub fn i64(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.number(key)
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key}: {s:?}")))
            })
            .transpose()
    }

    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    /// How unknown fields are handled: upstream's default (no parameter) is Warn.
    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }

    /// The field manager: `?fieldManager=`, else the user agent's program name, as upstream.
    pub fn field_manager(&self, headers: &HeaderMap) -> String {
        if let Some(m) = self.get("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

/// Whether the client asked for a `meta.k8s.io/v1` Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_targets() {
        let t = Target::parse("", "v1", "namespaces/default/pods/web/status").unwrap();
        assert_eq!(t.def.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let t = Target::parse("", "v1", "namespaces/kube-system/status").unwrap();
        assert_eq!(t.def.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let t = Target::parse("", "v1", "pods").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());

        let t = Target::parse("apps", "v1", "namespaces/a/deployments").unwrap();
        assert_eq!(t.def.kind, "Deployment");
        assert!(Target::parse("", "v1", "bogus").is_err());
    }
}
