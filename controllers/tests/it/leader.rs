use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmkube_controllers::ControllerConfig;

use crate::common::*;

fn config(identity: &str) -> ControllerConfig {
    ControllerConfig {
        identity: identity.into(),
        leader_election: true,
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn holder(leases: &Api<Lease>) -> anyhow::Result<Option<(String, String)>> {
    let Some(lease) = leases.get_opt("kube-controller-manager").await? else {
        return Ok(None);
    };
    let spec = lease.spec.unwrap_or_default();
    let renewed = spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default();
    Ok(spec.holder_identity.map(|h| (h, renewed)))
}

#[tokio::test]
async fn one_leader_runs_the_controllers_and_a_standby_takes_over() -> anyhow::Result<()> {
    let c = apiserver().await?;
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(wasmkube_controllers::run(
        c.client.clone(),
        config("a"),
        stop_a.clone(),
    ));
    wait_for("a leads", || async {
        Ok(holder(&leases).await?.filter(|(h, _)| h == "a").map(|_| ()))
    })
    .await?;

    let stop_b = c.stop.child_token();
    let b = tokio::spawn(wasmkube_controllers::run(
        c.client.clone(),
        config("b"),
        stop_b,
    ));
    // The leader keeps renewing and the standby does not take over.
    let (_, first) = holder(&leases).await?.unwrap_or_default();
    let renewals = std::sync::Mutex::new(std::collections::BTreeSet::new());
    wait_for("a renews twice while b stands by", || {
        let (leases, first, renewals) = (leases.clone(), first.clone(), &renewals);
        async move {
            let (h, renewed) = holder(&leases).await?.unwrap_or_default();
            anyhow::ensure!(h == "a", "b took the lease from a live leader");
            let mut seen = renewals.lock().expect("lock");
            if renewed != first {
                seen.insert(renewed);
            }
            Ok((seen.len() >= 2).then_some(()))
        }
    })
    .await?;

    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "led"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "led"}}, "template": template("led", "example.com/hello:1")},
    }))?;
    sets.create(&PostParams::default(), &rs).await?;
    wait_for("2 pods from the leader", || async {
        Ok((pods(&c.client, "default", "app=led").await?.len() == 2).then_some(()))
    })
    .await?;

    // The leader stops and hands over at once (it releases the lease).
    stop_a.cancel();
    tokio::time::timeout(DEADLINE, a)
        .await
        .map_err(|_| anyhow::anyhow!("a did not stop"))???;
    wait_for("b leads", || async {
        Ok(holder(&leases).await?.filter(|(h, _)| h == "b").map(|_| ()))
    })
    .await?;
    let victim = pods(&c.client, "default", "app=led").await?.remove(0);
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(c.client.clone(), "default");
    pod_api
        .delete(&victim.name_any(), &DeleteParams::default())
        .await?;
    wait_for("b's controllers replace the pod", || async {
        let p = pods(&c.client, "default", "app=led").await?;
        Ok((p.len() == 2 && p.iter().all(|p| p.name_any() != victim.name_any())).then_some(()))
    })
    .await?;
    c.stop.cancel();
    tokio::time::timeout(DEADLINE, b)
        .await
        .map_err(|_| anyhow::anyhow!("b did not stop"))???;
    Ok(())
}
