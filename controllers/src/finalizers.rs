//! Adding and removing one finalizer without losing anybody else's: a JSON patch that first
//! `test`s the list we saw, so a concurrent change fails the patch (422) instead of being
//! overwritten.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Whether `obj` carries `finalizer`.
pub fn has<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Sets `obj`'s finalizers to `next`, provided they are still the ones `obj` shows. Ok when the
/// object is gone; 422 (the list changed) and other errors are returned.
async fn swap<K>(api: &Api<K>, obj: &K, next: Vec<String>) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let current = obj.finalizers().to_vec();
    let ops = if obj.meta().finalizers.is_none() {
        // No list to test (a `test` of a missing path fails): test the version we saw instead,
        // so the `add` cannot overwrite a list that appeared meanwhile.
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": next},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": next},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `finalizer` from `obj` (nothing to do when it is not there).
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !has(obj, finalizer) {
        return Ok(());
    }
    let kept = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    swap(api, obj, kept).await
}

/// Adds `finalizer` to `obj` (nothing to do when it is there).
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if has(obj, finalizer) {
        return Ok(());
    }
    let mut next = obj.finalizers().to_vec();
    next.push(finalizer.to_string());
    swap(api, obj, next).await
}

/// Whether an error means the object changed since it was read (the patch's `test` failed, or
/// a conflict): the next watch event brings the current version.
pub fn changed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if matches!(s.code, 409 | 422))
}
