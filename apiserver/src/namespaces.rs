//! Namespaces that always exist, and namespace finalization: deleting a namespace deletes all
//! its objects, then the namespace (upstream's namespace controller, kept in the apiserver so it
//! works with nothing else running).

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::codec;
use crate::object;
use crate::resources::RESOURCES;
use crate::storage::{EventKind, ListOptions, Storage, StorageError};

/// Namespaces created at start, as upstream's bootstrap controller does.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing.
pub async fn bootstrap(store: &dyn Storage) -> Result<(), StorageError> {
    for ns in SYSTEM_NAMESPACES {
        let key = format!("namespaces/{ns}");
        if store.get(&key).await?.is_some() {
            continue;
        }
        let mut obj = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": object::now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        match store.create(&key, codec::to_stored(&mut obj)).await {
            Ok(_) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Namespaces as the finalizer's watch last saw them (name -> being deleted), so that creates
/// need no extra store read to check their namespace (upstream's NamespaceLifecycle uses an
/// informer the same way, and reads the store when the cache does not know a namespace).
#[derive(Default)]
pub struct NamespaceCache(std::sync::RwLock<std::collections::HashMap<String, bool>>);

impl NamespaceCache {
    /// `Some(deleting)` for a namespace the cache knows.
    pub fn get(&self, name: &str) -> Option<bool> {
        self.0.read().ok().and_then(|m| m.get(name).copied())
    }

    /// Records at once that `name` is being deleted (this apiserver just marked it), so no
    /// create slips in before the watch reports it.
    pub fn mark_deleting(&self, name: &str) {
        self.set(name, Some(true));
    }

    fn replace(&self, all: impl IntoIterator<Item = (String, bool)>) {
        if let Ok(mut m) = self.0.write() {
            *m = all.into_iter().collect();
        }
    }

    fn set(&self, name: &str, deleting: Option<bool>) {
        if let Ok(mut m) = self.0.write() {
            match deleting {
                Some(d) => m.insert(name.to_string(), d),
                None => m.remove(name),
            };
        }
    }
}

fn parse(value: &[u8]) -> Value {
    serde_json::from_slice(value).unwrap_or_default()
}

/// Runs until `shutdown`: keeps `cache` current and finalizes every namespace being deleted.
pub async fn run_finalizer(
    store: Arc<dyn Storage>,
    cache: Arc<NamespaceCache>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    crate::storage::follow_until_shutdown("namespace finalizer", &shutdown, || {
        finalize_pending(store.as_ref(), &cache, &shutdown)
    })
    .await;
}

/// Lists namespaces being deleted and finalizes them, then follows the namespace watch.
async fn finalize_pending(
    store: &dyn Storage,
    cache: &NamespaceCache,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), StorageError> {
    let page = store
        .list(ListOptions {
            prefix: "namespaces/".into(),
            ..Default::default()
        })
        .await?;
    let all: Vec<Value> = page.items.iter().map(|kv| parse(&kv.value)).collect();
    cache.replace(
        all.iter()
            .map(|ns| (object::name(ns).to_string(), object::is_deleting(ns))),
    );
    for ns in &all {
        finalize_if_deleting(store, ns).await?;
    }
    let mut events = store.watch("namespaces/", page.revision).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ev = events.next() => match ev {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(ev)) => {
                    let ns = parse(&ev.kv.value);
                    let deleted = ev.kind == EventKind::Deleted;
                    cache.set(object::name(&ns), (!deleted).then(|| object::is_deleting(&ns)));
                    if !deleted {
                        finalize_if_deleting(store, &ns).await?;
                    }
                }
            }
        }
    }
}

async fn finalize_if_deleting(store: &dyn Storage, ns: &Value) -> Result<(), StorageError> {
    if !object::is_deleting(ns) {
        return Ok(());
    }
    let name = object::name(ns).to_string();
    // Delete the content: every namespaced resource, each storage prefix once.
    let mut seen = Vec::new();
    for def in RESOURCES.iter().filter(|d| d.namespaced) {
        if seen.contains(&def.storage) {
            continue;
        }
        seen.push(def.storage);
        let prefix = format!("{}/{name}/", def.storage);
        loop {
            let page = store
                .list(ListOptions {
                    prefix: prefix.clone(),
                    limit: Some(500),
                    ..Default::default()
                })
                .await?;
            for kv in &page.items {
                match store.delete(&kv.key, None).await {
                    Ok(_) | Err(StorageError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if !page.more {
                break;
            }
        }
    }
    // Then drop the "kubernetes" finalizer and the namespace itself.
    let key = format!("namespaces/{name}");
    loop {
        let Some(kv) = store.get(&key).await? else {
            return Ok(());
        };
        let mut ns: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if let Some(f) = ns
            .pointer_mut("/spec/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|v| v != "kubernetes");
        }
        let done = ns
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
            && object::finalizers(&ns).is_empty();
        let res = if done {
            store.delete(&key, Some(kv.mod_revision)).await.map(|_| ())
        } else {
            store
                .update(&key, codec::to_stored(&mut ns), kv.mod_revision)
                .await
                .map(|_| ())
        };
        match res {
            Ok(()) | Err(StorageError::NotFound(_)) => return Ok(()),
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}
