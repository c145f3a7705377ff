//! Authorization: the cluster admin may do anything; a node (user `system:node:<name>`, group
//! `system:nodes`) only what its kubelet needs, as upstream's Node authorizer and
//! NodeRestriction admission allow: its own Node and Lease, the status of pods bound to it,
//! deleting pods bound to it, events, and reading what its pods use. Everything else is 403.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::auth::User;
use crate::errors::ApiError;
use crate::request::{Params, Target};
use crate::rest;
use crate::ApiServer;

const MASTERS: &str = "system:masters";
const NODES: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";
const BOOTSTRAPPERS: &str = crate::secret_tokens::BOOTSTRAPPERS;

/// None when a bootstrap token may do `verb` on `target`: only create a node credential
/// (Secret `kube-system/node-token-<node>` of type `wasmkube.dev/node-token`), never replace
/// one (the create then fails with 409), and never for a node the cluster configured itself.
fn bootstrap_rule(
    server: &ApiServer,
    verb: &str,
    target: &Target,
    created: impl FnOnce() -> Option<Value>,
) -> Option<String> {
    use crate::secret_tokens::{NAMESPACE, NODE_TOKEN_PREFIX, NODE_TOKEN_TYPE};
    let def = target.def;
    let secrets = def.group.is_empty() && def.storage == "secrets" && target.subresource.is_none();
    if verb != "create" || !secrets || target.namespace.as_deref() != Some(NAMESPACE) {
        return Some(format!(
            "bootstrap tokens may only create secrets \"{NODE_TOKEN_PREFIX}<node>\" in the namespace \"{NAMESPACE}\""
        ));
    }
    let body = created().unwrap_or_default();
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let node = name.strip_prefix(NODE_TOKEN_PREFIX).unwrap_or("");
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
    if node.is_empty() || kind != NODE_TOKEN_TYPE {
        return Some(format!(
            "bootstrap tokens may only create secrets named \"{NODE_TOKEN_PREFIX}<node>\" of type \"{NODE_TOKEN_TYPE}\""
        ));
    }
    if server
        .authenticator
        .has_static_user(&format!("{NODE_PREFIX}{node}"))
    {
        return Some(format!(
            "node \"{node}\" has a credential configured by the cluster and cannot be joined"
        ));
    }
    None
}

/// The verb of a request, as upstream names it in RBAC.
pub fn verb(method: &Method, target: &Target, params: &Params) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if params.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// Allows the request or answers 403 with upstream's message. `created` parses the body of a
/// create (which names its object in the body, not the path).
pub async fn authorize(
    server: &ApiServer,
    user: &User,
    method: &Method,
    target: &Target,
    params: &Params,
    created: impl FnOnce() -> Option<Value>,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let verb = verb(method, target, params);
    let is_cluster_info = verb == "get"
        && target.def.group.is_empty()
        && target.def.storage == "configmaps"
        && target.subresource.is_none()
        && target.namespace.as_deref() == Some("kube-public")
        && target.name.as_deref() == Some("cluster-info");
    let bootstrapper = user.groups.iter().any(|g| g == BOOTSTRAPPERS);
    if is_cluster_info && (bootstrapper || crate::auth::is_anonymous(user)) {
        return Ok(());
    }
    if bootstrapper {
        return match bootstrap_rule(server, verb, target, created) {
            None => Ok(()),
            Some(why) => Err(forbidden(user, verb, target, &why)),
        };
    }
    let node = user
        .name
        .strip_prefix(NODE_PREFIX)
        .filter(|_| user.groups.iter().any(|g| g == NODES));
    let denied = match node {
        Some(node) => {
            // A create names its object in the body, not the path; a list or watch of one
            // object names it in `fieldSelector=metadata.name=...` (upstream's node
            // authorizer allows exactly that shape for the secrets a node's pods use).
            let name = match verb {
                "create" => created().map(|o| crate::object::name(&o).to_string()),
                "list" | "watch" if target.name.is_none() => params
                    .get("fieldSelector")
                    .and_then(|s| crate::selectors::FieldSelector::parse(s, target.def).ok())
                    .and_then(|f| f.name().map(str::to_string)),
                _ => target.name.clone(),
            };
            node_rule(server, node, verb, target, name.as_deref().unwrap_or("")).await?
        }
        None => Some("no permissions are granted to this user".to_string()),
    };
    match denied {
        None => Ok(()),
        Some(why) => Err(forbidden(user, verb, target, &why)),
    }
}

/// `metrics.k8s.io` reads: the cluster admins (kubectl top, the controller manager's HPA) only;
/// nodes and bootstrap tokens get 403, as without upstream's RBAC grant.
pub fn authorize_metrics(user: &User, resource: &str) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{resource}.metrics.k8s.io is forbidden: User \"{}\" cannot list resource \"{resource}\" in API group \"metrics.k8s.io\": no permissions are granted to this user",
            user.name
        ),
    )
    .with_details(serde_json::json!({"group": "metrics.k8s.io", "kind": resource})))
}

/// `create tokenreviews`: the cluster admin and nodes may (upstream's `system:node` role grants
/// it for kubelets' webhook authentication); anyone else gets 403.
pub fn authorize_token_review(user: &User) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == MASTERS || g == NODES) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "tokenreviews.authentication.k8s.io is forbidden: User \"{}\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope: no permissions are granted to this user",
            user.name
        ),
    )
    .with_details(serde_json::json!({"group": "authentication.k8s.io", "kind": "tokenreviews"})))
}

fn forbidden(user: &User, verb: &str, target: &Target, why: &str) -> ApiError {
    let def = target.def;
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", def.plural),
        None => def.plural.to_string(),
    };
    let name = target.name.as_deref().unwrap_or("");
    let scope = match &target.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let subject = if name.is_empty() {
        def.qualified_plural()
    } else {
        format!("{} \"{name}\"", def.qualified_plural())
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}: {why}",
            user.name, def.group
        ),
    )
    .with_details(serde_json::json!({"name": name, "group": def.group, "kind": def.plural}))
}

/// None when node `node` may do `verb` on `target`, else why not.
async fn node_rule(
    server: &ApiServer,
    node: &str,
    verb: &str,
    target: &Target,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let def = target.def;
    let sub = target.subresource.as_deref();
    let read = matches!(verb, "get" | "list" | "watch");
    let own = |what: &str| {
        if name == node {
            None
        } else {
            Some(format!("node \"{node}\" can only modify its own {what}"))
        }
    };
    Ok(match (def.group, def.storage, sub) {
        // Secrets are read only by name (a get, or a list/watch selecting one name), and only
        // those its pods use.
        ("", "secrets", None) if read && !name.is_empty() => {
            if pods_use_secret(
                server,
                node,
                target.namespace.as_deref().unwrap_or(""),
                name,
            )
            .await?
            {
                None
            } else {
                Some(format!(
                    "no relationship found between node \"{node}\" and this object"
                ))
            }
        }
        ("", "secrets", _) => Some("nodes may only read secrets their pods use, by name".into()),
        _ if read && sub != Some("log") && sub != Some("exec") => None,
        ("", "nodes", None | Some("status")) if matches!(verb, "create" | "update" | "patch") => {
            own("Node")
        }
        ("coordination.k8s.io", "leases", None)
            if matches!(verb, "create" | "update" | "patch")
                && target.namespace.as_deref() == Some("kube-node-lease") =>
        {
            own("Lease")
        }
        ("", "events", None) | ("events.k8s.io", "events", None)
            if matches!(verb, "create" | "update" | "patch") =>
        {
            None
        }
        ("", "pods", Some("status")) if matches!(verb, "update" | "patch") => {
            bound_elsewhere(server, node, target, "update pod status").await?
        }
        ("", "pods", None) if verb == "delete" => {
            bound_elsewhere(server, node, target, "delete pods").await?
        }
        _ => Some(format!(
            "node \"{node}\" is not allowed to {verb} this resource"
        )),
    })
}

/// None when the target pod is bound to `node` (or gone: the verb then answers 404).
async fn bound_elsewhere(
    server: &ApiServer,
    node: &str,
    target: &Target,
    what: &str,
) -> Result<Option<String>, ApiError> {
    let key = rest::key(
        target.def,
        target.namespace.as_deref(),
        target.name.as_deref().unwrap_or(""),
    );
    let Some(kv) = server
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
    else {
        return Ok(None);
    };
    let pod: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok((bound != node).then(|| {
        format!("node \"{node}\" can only {what} for pods with spec.nodeName set to itself")
    }))
}

/// Whether a pod bound to `node` in `namespace` uses secret `name` (volumes, env, envFrom,
/// imagePullSecrets).
async fn pods_use_secret(
    server: &ApiServer,
    node: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let page = server
        .store
        .list(crate::storage::ListOptions {
            prefix: format!("pods/{namespace}/"),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(page.items.iter().any(|kv| {
        let pod: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
            && references_secret(&pod, name)
    }))
}

fn references_secret(pod: &Value, name: &str) -> bool {
    let spec = &pod["spec"];
    let is = |v: &Value| v.as_str() == Some(name);
    let volumes = spec["volumes"].as_array().into_iter().flatten().any(|v| {
        is(&v["secret"]["secretName"])
            || v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| is(&s["secret"]["name"]))
    });
    let pull = spec["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| is(&s["name"]));
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| spec[*f].as_array().into_iter().flatten())
        .any(|c| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| is(&e["valueFrom"]["secretKeyRef"]["name"]))
                || c["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| is(&e["secretRef"]["name"]))
        });
    volumes || pull || containers
}
