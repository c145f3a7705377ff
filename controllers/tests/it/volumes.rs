//! The local-path provisioner and the PersistentVolume binder.

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::common::*;

async fn node(client: &Client, name: &str, dir: Option<&str>) -> anyhow::Result<()> {
    let mut annotations = json!({});
    if let Some(d) = dir {
        annotations["wasmkube.dev/local-path-dir"] = json!(d);
    }
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name,
        "labels": {"kubernetes.io/hostname": name}, "annotations": annotations}}))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await?;
    Ok(())
}

async fn claim(
    client: &Client,
    name: &str,
    class: Option<&str>,
    size: &str,
) -> anyhow::Result<PersistentVolumeClaim> {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}}});
    if let Some(c) = class {
        spec["storageClassName"] = json!(c);
    }
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?;
    Ok(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &pvc)
            .await?,
    )
}

async fn static_volume(
    client: &Client,
    name: &str,
    size: &str,
    policy: &str,
) -> anyhow::Result<()> {
    let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"storageClassName": "manual", "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": policy,
            "hostPath": {"path": format!("/tmp/{name}")}}}))?;
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    Ok(())
}

async fn select_node(client: &Client, claim: &str, node: &str) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}});
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .patch(claim, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

fn phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Waits until `name` is Bound and returns it.
async fn bound(client: &Client, name: &str) -> anyhow::Result<PersistentVolumeClaim> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    wait_for(&format!("claim {name} Bound"), || {
        let api = api.clone();
        async move {
            let c = api.get(name).await?;
            Ok((phase(&c) == "Bound").then_some(c))
        }
    })
    .await
}

/// Waits for an event with `reason` about the claim `name` and returns its note.
async fn event(client: &Client, name: &str, reason: &str) -> anyhow::Result<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    wait_for(&format!("event {reason} on {name}"), || {
        let api = api.clone();
        async move {
            let list = api.list(&Default::default()).await?;
            Ok(list.items.into_iter().find_map(|e| {
                (e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .then(|| e.note.unwrap_or_default())
            }))
        }
    })
    .await
}

#[tokio::test]
async fn a_claim_gets_a_local_path_volume_on_its_selected_node() -> anyhow::Result<()> {
    let c = cluster().await?;
    let classes: Api<StorageClass> = Api::all(c.client.clone());
    let class = wait_for("the local-path StorageClass", || {
        let classes = classes.clone();
        async move { Ok(classes.get_opt("local-path").await?) }
    })
    .await?;
    assert_eq!(class.provisioner, "wasmkube.dev/local-path");
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(
        class.annotations()["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    node(&c.client, "n1", Some("/var/lib/wasmkube/local-path")).await?;
    node(&c.client, "n2", None).await?;

    // No class named: the default class is filled in by admission.
    let pvc = claim(&c.client, "data", None, "1Gi").await?;
    assert_eq!(
        pvc.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("local-path")
    );
    let note = event(&c.client, "data", "WaitForFirstConsumer").await?;
    assert_eq!(
        note,
        "waiting for first consumer to be created before binding"
    );
    select_node(&c.client, "data", "n1").await?;
    let pvc = bound(&c.client, "data").await?;
    let uid = pvc.uid().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(
        pvc.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(pv_name.as_str())
    );
    let a = pvc.annotations();
    assert_eq!(a["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(a["pv.kubernetes.io/bound-by-controller"], "yes");
    assert_eq!(
        a["volume.kubernetes.io/storage-provisioner"],
        "wasmkube.dev/local-path"
    );
    assert_eq!(
        pvc.status.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
        "1Gi"
    );

    let pv = Api::<PersistentVolume>::all(c.client.clone())
        .get(&pv_name)
        .await?;
    let spec = pv.spec.clone().unwrap();
    assert_eq!(
        spec.local.unwrap().path,
        format!("/var/lib/wasmkube/local-path/{pv_name}_default_data")
    );
    let terms = spec
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms;
    assert_eq!(
        terms[0].match_expressions.as_ref().unwrap()[0].values,
        Some(vec!["n1".to_string()])
    );
    assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        pv.annotations()["pv.kubernetes.io/provisioned-by"],
        "wasmkube.dev/local-path"
    );
    assert_eq!(volume_phase(&pv), "Bound");
    let note = event(&c.client, "data", "ProvisioningSucceeded").await?;
    assert_eq!(note, format!("Successfully provisioned volume {pv_name}"));

    // A node without the directory annotation: a clear warning, then success once it has one.
    claim(&c.client, "waits", None, "1Gi").await?;
    select_node(&c.client, "waits", "n2").await?;
    let note = event(&c.client, "waits", "ProvisioningFailed").await?;
    assert!(
        note.contains("node \"n2\" has no wasmkube.dev/local-path-dir annotation"),
        "{note}"
    );
    let patch = json!({"metadata": {"annotations": {"wasmkube.dev/local-path-dir": "/data"}}});
    Api::<Node>::all(c.client.clone())
        .patch("n2", &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    bound(&c.client, "waits").await?;

    // Deleting the claim deletes its volume (reclaimPolicy Delete).
    Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .delete("data", &DeleteParams::default())
        .await?;
    let volumes: Api<PersistentVolume> = Api::all(c.client.clone());
    wait_for("the released volume deleted", || {
        let (volumes, pv_name) = (volumes.clone(), pv_name.clone());
        async move { Ok(volumes.get_opt(&pv_name).await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn shared_access_modes_are_refused_with_a_clear_event() -> anyhow::Result<()> {
    let c = cluster().await?;
    node(&c.client, "n1", Some("/data")).await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "shared"},
        "spec": {"storageClassName": "local-path", "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}}}}))?;
    Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &pvc)
        .await?;
    select_node(&c.client, "shared", "n1").await?;
    let note = event(&c.client, "shared", "ProvisioningFailed").await?;
    assert!(
        note.contains("access mode ReadWriteMany is not supported"),
        "{note}"
    );
    Ok(())
}

#[tokio::test]
async fn static_volumes_bind_smallest_first_and_retain_after_release() -> anyhow::Result<()> {
    let c = cluster().await?;
    static_volume(&c.client, "big", "10Gi", "Retain").await?;
    static_volume(&c.client, "small", "2Gi", "Retain").await?;
    claim(&c.client, "db", Some("manual"), "1Gi").await?;
    let pvc = bound(&c.client, "db").await?;
    assert_eq!(
        pvc.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("small")
    );
    assert_eq!(
        pvc.status.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
        "2Gi"
    );
    let volumes: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv = volumes.get("small").await?;
    assert_eq!(volume_phase(&pv), "Bound");
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().uid,
        pvc.uid(),
        "the volume's claimRef carries the claim's uid"
    );

    // Released, not deleted.
    Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .delete("db", &DeleteParams::default())
        .await?;
    wait_for("volume small Released", || {
        let volumes = volumes.clone();
        async move {
            let pv = volumes.get("small").await?;
            Ok((volume_phase(&pv) == "Released").then_some(()))
        }
    })
    .await?;
    // A new claim does not get the released volume: it holds the old claim's data.
    claim(&c.client, "db2", Some("manual"), "1Gi").await?;
    let pvc = bound(&c.client, "db2").await?;
    assert_eq!(pvc.spec.unwrap().volume_name.as_deref(), Some("big"));

    // Deleting a bound claim's volume leaves it Terminating (pv-protection) and the claim
    // Bound; an admin who forces it away by dropping the finalizer loses the claim.
    volumes.delete("big", &DeleteParams::default()).await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pv = volumes.get("big").await?;
    assert!(pv.metadata.deletion_timestamp.is_some());
    assert_eq!(pv.finalizers(), ["kubernetes.io/pv-protection"]);
    assert_eq!(volume_phase(&pv), "Bound");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    assert_eq!(phase(&api.get("db2").await?), "Bound");
    volumes
        .patch(
            "big",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    wait_for("claim db2 Lost", || {
        let api = api.clone();
        async move { Ok((phase(&api.get("db2").await?) == "Lost").then_some(())) }
    })
    .await?;
    event(&c.client, "db2", "ClaimLost").await?;
    Ok(())
}

#[tokio::test]
async fn claims_racing_for_one_volume_bind_it_once() -> anyhow::Result<()> {
    let c = cluster().await?;
    static_volume(&c.client, "only", "1Gi", "Retain").await?;
    let names = ["r1", "r2", "r3"];
    futures::future::try_join_all(
        names
            .iter()
            .map(|n| claim(&c.client, n, Some("manual"), "1Gi")),
    )
    .await?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let bound_claims = || {
        let api = api.clone();
        async move {
            let mut out = Vec::new();
            for n in names {
                let c = api.get(n).await?;
                if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                    out.push((n, v));
                }
            }
            anyhow::Ok(out)
        }
    };
    let first = wait_for("one claim bound", || async {
        let b = bound_claims().await?;
        Ok((!b.is_empty()).then_some(b))
    })
    .await?;
    assert_eq!(first.len(), 1, "one volume, one claim: {first:?}");
    // A second volume lets exactly one more claim bind, to it.
    static_volume(&c.client, "second", "1Gi", "Retain").await?;
    let both = wait_for("two claims bound", || async {
        let b = bound_claims().await?;
        Ok((b.len() >= 2).then_some(b))
    })
    .await?;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_ne!(both[0].1, both[1].1, "each volume bound once: {both:?}");
    let volumes: Api<PersistentVolume> = Api::all(c.client.clone());
    for (claim, volume) in &both {
        let pv = volumes.get(volume).await?;
        assert_eq!(
            pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
            Some(*claim)
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_static_volume_with_delete_policy_fails_instead_of_being_removed() -> anyhow::Result<()> {
    let c = cluster().await?;
    static_volume(&c.client, "handmade", "1Gi", "Delete").await?;
    claim(&c.client, "db", Some("manual"), "1Gi").await?;
    bound(&c.client, "db").await?;
    Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .delete("db", &DeleteParams::default())
        .await?;
    let volumes: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv = wait_for("volume handmade Failed", || {
        let volumes = volumes.clone();
        async move {
            let pv = volumes.get("handmade").await?;
            Ok((volume_phase(&pv) == "Failed").then_some(pv))
        }
    })
    .await?;
    assert_eq!(
        pv.status.and_then(|s| s.message).as_deref(),
        Some(
            "error getting deleter volume plugin for volume \"handmade\": no deletable volume \
             plugin matched"
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_claim_in_use_and_its_volume_stay_until_the_last_pod_is_gone() -> anyhow::Result<()> {
    let c = cluster().await?;
    static_volume(&c.client, "vol", "1Gi", "Retain").await?;
    let pvc = claim(&c.client, "data", Some("manual"), "1Gi").await?;
    // Both get their protection finalizer at create (the admission), not later.
    assert_eq!(pvc.finalizers(), ["kubernetes.io/pvc-protection"]);
    let volumes: Api<PersistentVolume> = Api::all(c.client.clone());
    assert_eq!(
        volumes.get("vol").await?.finalizers(),
        ["kubernetes.io/pv-protection"]
    );
    bound(&c.client, "data").await?;

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client.clone(), "default");
    let pod = |name: &str, node: Option<&str>| -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
        Ok(serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}))?)
    };
    pods.create(&PostParams::default(), &pod("writer", Some("n1"))?)
        .await?;
    pods.create(&PostParams::default(), &pod("pending", None)?)
        .await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    claims.delete("data", &DeleteParams::default()).await?;
    // The scheduled pod keeps it (an unscheduled one does not count: it cannot start now).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pvc = claims.get("data").await?;
    assert!(pvc.metadata.deletion_timestamp.is_some());
    assert_eq!(pvc.finalizers(), ["kubernetes.io/pvc-protection"]);
    assert_eq!(phase(&pvc), "Bound");
    assert_eq!(volume_phase(&volumes.get("vol").await?), "Bound");

    // The pod goes: the claim goes and its volume is released; a released volume can go.
    pods.delete("writer", &DeleteParams::default().grace_period(0))
        .await?;
    wait_for("claim data gone", || {
        let claims = claims.clone();
        async move { Ok(claims.get_opt("data").await?.is_none().then_some(())) }
    })
    .await?;
    wait_for("volume vol Released", || {
        let volumes = volumes.clone();
        async move { Ok((volume_phase(&volumes.get("vol").await?) == "Released").then_some(())) }
    })
    .await?;
    volumes.delete("vol", &DeleteParams::default()).await?;
    wait_for("volume vol gone", || {
        let volumes = volumes.clone();
        async move { Ok(volumes.get_opt("vol").await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn claims_created_without_the_finalizer_get_it() -> anyhow::Result<()> {
    let c = cluster().await?;
    claim(&c.client, "old", Some("manual"), "1Gi").await?;
    // As if created before the admission existed.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    claims
        .patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    wait_for("the finalizer back", || {
        let claims = claims.clone();
        async move {
            let pvc = claims.get("old").await?;
            Ok((pvc.finalizers() == ["kubernetes.io/pvc-protection"]).then_some(()))
        }
    })
    .await?;
    Ok(())
}
