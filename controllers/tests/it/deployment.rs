use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::common::*;

const REVISION: &str = "deployment.kubernetes.io/revision";

fn deployment(
    name: &str,
    replicas: i32,
    strategy: serde_json::Value,
) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": template(name, "example.com/hello:1"),
        },
    }))?)
}

fn image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the rollout is complete as `kubectl rollout status` judges it.
async fn rolled_out(
    api: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> anyhow::Result<Deployment> {
    wait_for(&format!("deployment {name} rolled out"), || async {
        let d = api.get(name).await?;
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas);
        Ok(done.then_some(d))
    })
    .await
}

async fn owned_sets(c: &Cluster, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let uid = d.uid().unwrap_or_default();
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|r| r.uid == uid))
        .collect())
}

/// Watches the pods of `app` and records, at every observed state, (total pods, ready pods,
/// distinct images).
fn observe_steps(c: &Cluster, app: &str) -> Arc<Mutex<Vec<(usize, usize, usize)>>> {
    let steps = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let out = steps.clone();
    tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        // The initial list arrives pod by pod: only whole states count as steps.
        let mut listed = false;
        let mut events = std::pin::pin!(watcher(api, cfg));
        while let Some(Ok(ev)) = events.next().await {
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    if p.metadata.deletion_timestamp.is_some() {
                        pods.remove(&p.name_any());
                    } else {
                        pods.insert(p.name_any(), p);
                    }
                }
                watcher::Event::Delete(p) => {
                    pods.remove(&p.name_any());
                }
                watcher::Event::Init => {
                    pods.clear();
                    listed = false;
                    continue;
                }
                watcher::Event::InitDone => listed = true,
            }
            if !listed {
                continue;
            }
            let ready = pods.values().filter(|p| is_ready(p)).count();
            let images: std::collections::BTreeSet<String> = pods.values().map(image).collect();
            out.lock()
                .expect("lock")
                .push((pods.len(), ready, images.len()));
        }
    });
    steps
}

#[tokio::test]
async fn rolling_update_respects_max_surge_and_max_unavailable_at_every_step() -> anyhow::Result<()>
{
    let c = cluster().await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=roll");
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    api.create(&PostParams::default(), &deployment("roll", 4, strategy)?)
        .await?;
    let d = rolled_out(&api, "roll", 4).await?;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("1"));
    let first = owned_sets(&c, &d).await?;
    assert_eq!(first.len(), 1);
    let hash = first[0]
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(first[0].name_any(), format!("roll-{hash}"));
    for pod in pods(&c.client, "default", "app=roll").await? {
        assert_eq!(pod.labels().get("pod-template-hash"), Some(&hash));
    }

    let steps = observe_steps(&c, "roll");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "example.com/hello:2"}]}}}});
    api.patch("roll", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let d = rolled_out(&api, "roll", 4).await?;
    wait_for("only new pods", || async {
        let p = pods(&c.client, "default", "app=roll").await?;
        Ok((p.len() == 4 && p.iter().all(|p| image(p) == "example.com/hello:2")).then_some(()))
    })
    .await?;

    let steps = steps.lock().expect("lock").clone();
    assert!(
        steps.iter().any(|s| s.2 == 2),
        "old and new pods overlapped: {steps:?}"
    );
    for (total, ready, _) in &steps {
        assert!(*total <= 5, "more than replicas+maxSurge pods: {steps:?}");
        assert!(
            *ready >= 3,
            "fewer than replicas-maxUnavailable ready: {steps:?}"
        );
    }
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("2"));
    let sets = owned_sets(&c, &d).await?;
    assert_eq!(sets.len(), 2);
    let revisions: BTreeMap<String, i32> = sets
        .iter()
        .map(|rs| {
            let rev = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            (rev, rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1))
        })
        .collect();
    assert_eq!(
        revisions,
        BTreeMap::from([("1".into(), 0), ("2".into(), 4)])
    );
    let progressing = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
        .cloned()
        .expect("Progressing condition");
    assert_eq!(progressing.status, "True");
    Ok(())
}

#[tokio::test]
async fn rollout_undo_restores_the_old_template_and_reuses_its_replicaset() -> anyhow::Result<()> {
    let c = cluster().await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=undo");
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("undo", 2, json!({"type": "RollingUpdate"}))?,
    )
    .await?;
    rolled_out(&api, "undo", 2).await?;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "example.com/hello:2"}]}}}});
    api.patch("undo", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let d = rolled_out(&api, "undo", 2).await?;
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("2"));

    // What `kubectl rollout undo` does: copy revision 1's template (minus the hash label) back.
    let sets = owned_sets(&c, &d).await?;
    let old = sets
        .iter()
        .find(|rs| rs.annotations().get(REVISION).map(String::as_str) == Some("1"))
        .cloned()
        .expect("revision 1");
    let mut template = old.spec.and_then(|s| s.template).expect("template");
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
    api.patch(
        "undo",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch)?),
    )
    .await?;
    wait_for("undo rolled out", || async {
        let d = api.get("undo").await?;
        let p = pods(&c.client, "default", "app=undo").await?;
        let done = d.annotations().get(REVISION).map(String::as_str) == Some("3")
            && p.len() == 2
            && p.iter().all(|p| image(p) == "example.com/hello:1");
        Ok(done.then_some(()))
    })
    .await?;
    let d = rolled_out(&api, "undo", 2).await?;
    let sets = owned_sets(&c, &d).await?;
    assert_eq!(sets.len(), 2, "the old ReplicaSet is reused, not copied");
    let reused = sets
        .iter()
        .find(|rs| rs.name_any() == old.metadata.name.clone().unwrap_or_default());
    assert_eq!(
        reused
            .and_then(|rs| rs.annotations().get(REVISION).cloned())
            .as_deref(),
        Some("3")
    );
    Ok(())
}

#[tokio::test]
async fn recreate_never_runs_old_and_new_pods_together() -> anyhow::Result<()> {
    let c = cluster().await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=recreate");
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("recreate", 3, json!({"type": "Recreate"}))?,
    )
    .await?;
    rolled_out(&api, "recreate", 3).await?;
    let steps = observe_steps(&c, "recreate");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "example.com/hello:2"}]}}}});
    api.patch(
        "recreate",
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await?;
    rolled_out(&api, "recreate", 3).await?;
    wait_for("only new pods", || async {
        let p = pods(&c.client, "default", "app=recreate").await?;
        Ok((p.len() == 3 && p.iter().all(|p| image(p) == "example.com/hello:2")).then_some(()))
    })
    .await?;
    let steps = steps.lock().expect("lock").clone();
    assert!(
        steps.iter().all(|s| s.2 <= 1),
        "old and new pods ran together: {steps:?}"
    );
    assert!(
        steps.iter().any(|s| s.0 == 0),
        "scaled to zero in between: {steps:?}"
    );
    Ok(())
}

#[tokio::test]
async fn paused_deployment_does_not_roll_out_until_resumed() -> anyhow::Result<()> {
    let c = cluster().await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=pause");
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("pause", 2, json!({"type": "RollingUpdate"}))?,
    )
    .await?;
    rolled_out(&api, "pause", 2).await?;
    // `kubectl rollout pause`, then a template change.
    api.patch(
        "pause",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await?;
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}});
    api.patch("pause", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let d = wait_for("paused condition observed", || async {
        let d = api.get("pause").await?;
        let s = d.status.clone().unwrap_or_default();
        let paused =
            s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
        Ok((paused && s.observed_generation >= d.metadata.generation).then_some(d))
    })
    .await?;
    assert_eq!(
        owned_sets(&c, &d).await?.len(),
        1,
        "no rollout while paused"
    );

    // `kubectl rollout resume`: the restart annotation rolls out.
    api.patch(
        "pause",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await?;
    wait_for("resumed rollout", || async {
        let d = api.get("pause").await?;
        Ok((d.annotations().get(REVISION).map(String::as_str) == Some("2")).then_some(()))
    })
    .await?;
    let d = rolled_out(&api, "pause", 2).await?;
    assert_eq!(owned_sets(&c, &d).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn stuck_rollout_exceeds_its_progress_deadline() -> anyhow::Result<()> {
    let c = cluster().await?;
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let mut d = deployment("stuck", 2, json!({"type": "RollingUpdate"}))?;
    if let Some(spec) = d.spec.as_mut() {
        spec.progress_deadline_seconds = Some(1);
    }
    api.create(&PostParams::default(), &d).await?;
    // No kubelet: pods never become ready.
    wait_for("ProgressDeadlineExceeded", || async {
        let d = api.get("stuck").await?;
        let exceeded = d
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
        Ok(exceeded.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn revision_history_limit_deletes_the_oldest_replicasets() -> anyhow::Result<()> {
    let c = cluster().await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=history");
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let mut d = deployment("history", 1, json!({"type": "RollingUpdate"}))?;
    if let Some(spec) = d.spec.as_mut() {
        spec.revision_history_limit = Some(1);
    }
    api.create(&PostParams::default(), &d).await?;
    rolled_out(&api, "history", 1).await?;
    for v in 2..=4 {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": format!("example.com/hello:{v}")}]}}}});
        api.patch("history", &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        wait_for("rollout", || async {
            let d = api.get("history").await?;
            Ok((d.annotations().get(REVISION) == Some(&v.to_string())).then_some(()))
        })
        .await?;
        rolled_out(&api, "history", 1).await?;
    }
    let d = api.get("history").await?;
    wait_for("two ReplicaSets left (revisions 3 and 4)", || async {
        let sets = owned_sets(&c, &d).await?;
        let mut revs: Vec<String> = sets
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .filter_map(|rs| rs.annotations().get(REVISION).cloned())
            .collect();
        revs.sort();
        Ok((revs == ["3", "4"]).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn scaling_a_deployment_scales_its_replicaset() -> anyhow::Result<()> {
    let c = cluster().await?;
    let _kubelet = fake_kubelet(&c.client, "default", "app=scale");
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &deployment("scale", 2, json!({"type": "RollingUpdate"}))?,
    )
    .await?;
    rolled_out(&api, "scale", 2).await?;
    api.patch_scale(
        "scale",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await?;
    let d = rolled_out(&api, "scale", 5).await?;
    let sets = owned_sets(&c, &d).await?;
    assert_eq!(sets.len(), 1);
    assert_eq!(
        sets[0]
            .annotations()
            .get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("5")
    );
    Ok(())
}
