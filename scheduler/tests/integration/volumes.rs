//! VolumeBinding against the apiserver: WaitForFirstConsumer claims get the pod's node, bound
//! volumes pin their pods, and a pod waiting for its claim is scheduled once it appears.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::{solo_config, start_scheduler, wait_for, Cluster};

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

async fn create<K>(api: Api<K>, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o: K = serde_json::from_value(obj).expect("object");
    api.create(&PostParams::default(), &o)
        .await
        .expect("create")
}

async fn wffc_class(c: &Cluster) {
    create(
        Api::<StorageClass>::all(c.client.clone()),
        json!({"metadata": {"name": "local-path"}, "provisioner": "wasmkube.dev/local-path",
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}),
    )
    .await;
}

fn claims(c: &Cluster) -> Api<PersistentVolumeClaim> {
    Api::namespaced(c.client.clone(), "default")
}

async fn claim(c: &Cluster, name: &str, extra_spec: Value) -> PersistentVolumeClaim {
    let mut spec = json!({"storageClassName": "local-path", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}});
    for (k, v) in extra_spec.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    create(claims(c), json!({"metadata": {"name": name}, "spec": spec})).await
}

fn using(claim: &str) -> Value {
    json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_first_consumer_claim_gets_the_pods_node() {
    let c = Cluster::start().await;
    c.node("a", "4", "8Gi", json!({}), json!([])).await;
    c.node("b", "4", "8Gi", json!({}), json!([])).await;
    wffc_class(&c).await;
    claim(&c, "data", json!({})).await;
    let s = start_scheduler(&c.client, solo_config());
    c.pod("app", json!({}), "100m", using("data")).await;
    let node = c.wait_bound(&["app"]).await.remove(0);
    let pvc = claims(&c).get("data").await.expect("claim");
    assert_eq!(
        pvc.metadata
            .annotations
            .unwrap_or_default()
            .get(SELECTED_NODE),
        Some(&node),
        "the claim names the node its first pod went to"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_goes_where_its_bound_volume_lives() {
    let c = Cluster::start().await;
    // "b" is the smallest node, so every score prefers the others: only the volume sends the
    // pod there.
    c.node("a", "16", "64Gi", json!({}), json!([])).await;
    c.node("b", "1", "1Gi", json!({}), json!([])).await;
    c.node("c", "16", "64Gi", json!({}), json!([])).await;
    wffc_class(&c).await;
    let pvc = claim(&c, "pinned", json!({"volumeName": "pv-b"})).await;
    create(
        Api::<PersistentVolume>::all(c.client.clone()),
        json!({"metadata": {"name": "pv-b"},
            "spec": {"storageClassName": "local-path", "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"], "local": {"path": "/data/pv-b"},
                "claimRef": {"namespace": "default", "name": "pinned", "uid": pvc.metadata.uid},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}}),
    )
    .await;
    claims(&c)
        .patch_status(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("claim status");
    let s = start_scheduler(&c.client, solo_config());
    for i in 0..3 {
        c.pod(&format!("user-{i}"), json!({}), "100m", using("pinned"))
            .await;
    }
    let got = c.wait_bound(&["user-0", "user-1", "user-2"]).await;
    assert_eq!(got, vec!["b", "b", "b"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waits_for_its_claim_then_schedules_when_it_appears() {
    let c = Cluster::start().await;
    c.node("a", "4", "8Gi", json!({}), json!([])).await;
    wffc_class(&c).await;
    let s = start_scheduler(&c.client, solo_config());
    c.pod("early", json!({}), "100m", using("late")).await;
    let message = wait_for("early unschedulable", || async {
        let p = c.pods().get("early").await.ok()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        (cond.status == "False").then_some(cond.message.unwrap_or_default())
    })
    .await;
    assert_eq!(
        message,
        r#"0/1 nodes are available: persistentvolumeclaim "late" not found."#
    );
    // The claim's creation (a PVC add event) moves the pod back to the active queue.
    claim(&c, "late", json!({})).await;
    assert_eq!(c.wait_bound(&["early"]).await, vec!["a"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_local_volume_is_claimed_and_its_node_chosen() {
    let c = Cluster::start().await;
    c.node("a", "16", "64Gi", json!({}), json!([])).await;
    c.node("b", "1", "1Gi", json!({}), json!([])).await;
    create(
        Api::<StorageClass>::all(c.client.clone()),
        json!({"metadata": {"name": "manual"}, "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer"}),
    )
    .await;
    let volumes: Api<PersistentVolume> = Api::all(c.client.clone());
    create(
        volumes.clone(),
        json!({"metadata": {"name": "disk-b"},
            "spec": {"storageClassName": "manual", "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"], "local": {"path": "/mnt/disk"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}}),
    )
    .await;
    // What the PV controller does for a new volume.
    volumes
        .patch_status(
            "disk-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Available"}})),
        )
        .await
        .expect("volume status");
    let pvc = claim(&c, "db", json!({"storageClassName": "manual"})).await;
    let s = start_scheduler(&c.client, solo_config());
    c.pod("db-0", json!({}), "100m", using("db")).await;
    assert_eq!(c.wait_bound(&["db-0"]).await, vec!["b"]);
    let pv = volumes.get("disk-b").await.expect("volume");
    let claim_ref = pv.spec.and_then(|s| s.claim_ref).expect("claimRef");
    assert_eq!(claim_ref.name.as_deref(), Some("db"));
    assert_eq!(claim_ref.uid, pvc.metadata.uid);
    let claim = claims(&c).get("db").await.expect("claim");
    assert!(
        !claim
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(SELECTED_NODE),
        "a claim served by an existing volume is not provisioned"
    );
    s.shutdown().await;
}
