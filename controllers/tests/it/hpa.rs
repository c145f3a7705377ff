use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use wasmkube_controllers::hpa::{Error, Metrics, MetricsSource, PodUsage};
use wasmkube_controllers::ControllerConfig;

use crate::common::*;

/// Feeds the HPA: every selected pod uses `cpu_millis`.
struct FakeMetrics {
    client: Client,
    cpu_millis: Arc<Mutex<i64>>,
}

impl MetricsSource for FakeMetrics {
    fn pod_usage<'a>(
        &'a self,
        ns: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, Error>> {
        Box::pin(async move {
            let cpu = *self.cpu_millis.lock().expect("lock");
            let pods = pods(&self.client, ns, selector)
                .await
                .map_err(|e| Error::Metrics(e.to_string()))?;
            Ok(pods
                .iter()
                .map(|p| PodUsage {
                    name: p.name_any(),
                    cpu_millis: cpu,
                    memory_bytes: 0,
                })
                .collect())
        })
    }
}

#[tokio::test]
async fn hpa_scales_up_under_cpu_load_and_down_after_the_stabilization_window() -> anyhow::Result<()>
{
    let base = apiserver().await?;
    let load = Arc::new(Mutex::new(200));
    let metrics = FakeMetrics {
        client: base.client.clone(),
        cpu_millis: load.clone(),
    };
    let config = ControllerConfig {
        leader_election: false,
        hpa_sync_period: Duration::from_millis(200),
        metrics: Metrics(Some(Arc::new(metrics))),
        ..Default::default()
    };
    tokio::spawn(wasmkube_controllers::run(
        base.client.clone(),
        config,
        base.stop.clone(),
    ));
    let c = base;
    let _kubelet = fake_kubelet(&c.client, "default", "app=load");

    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let mut tmpl = template("load", "example.com/hello:1");
    tmpl["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "load"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "load"}}, "template": tmpl},
    }))?;
    deployments.create(&PostParams::default(), &d).await?;

    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.client.clone(), "default");
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "load"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "load"},
            "minReplicas": 1, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}},
        },
    }))?;
    hpas.create(&PostParams::default(), &hpa).await?;

    // 200m used of 100m requested = 200 % against a 50 % target: 4 replicas (the max).
    wait_for("scaled up to 4", || async {
        let d = deployments.get("load").await?;
        Ok((d.spec.and_then(|s| s.replicas) == Some(4)).then_some(()))
    })
    .await?;
    wait_for("hpa status reports it", || async {
        let s = hpas.get("load").await?.status.unwrap_or_default();
        let util = s
            .current_metrics
            .iter()
            .flatten()
            .filter_map(|m| m.resource.as_ref()?.current.average_utilization)
            .next();
        Ok((s.desired_replicas == 4 && util == Some(200)).then_some(()))
    })
    .await?;

    // Load gone: back to 1, but only once the 2 s window has passed.
    *load.lock().expect("lock") = 10;
    let dropped = Instant::now();
    wait_for("scaled down to 1", || async {
        let d = deployments.get("load").await?;
        Ok((d.spec.and_then(|s| s.replicas) == Some(1)).then_some(()))
    })
    .await?;
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "scaled down after only {waited:?}"
    );
    Ok(())
}

#[tokio::test]
async fn hpa_written_as_autoscaling_v1_like_kubectl_autoscale_works() -> anyhow::Result<()> {
    let base = apiserver().await?;
    let load = Arc::new(Mutex::new(300));
    let metrics = FakeMetrics {
        client: base.client.clone(),
        cpu_millis: load,
    };
    let config = ControllerConfig {
        leader_election: false,
        hpa_sync_period: Duration::from_millis(200),
        metrics: Metrics(Some(Arc::new(metrics))),
        ..Default::default()
    };
    tokio::spawn(wasmkube_controllers::run(
        base.client.clone(),
        config,
        base.stop.clone(),
    ));
    let c = base;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let mut tmpl = template("v1", "example.com/hello:1");
    tmpl["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "v1"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "v1"}}, "template": tmpl},
    }))?;
    deployments.create(&PostParams::default(), &d).await?;
    // What `kubectl autoscale deployment v1 --max=3 --cpu-percent=50` sends.
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
    ));
    let v1: Api<kube::api::DynamicObject> = Api::namespaced_with(c.client.clone(), "default", &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "v1"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "v1"},
                 "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    }))?;
    v1.create(&PostParams::default(), &obj).await?;
    wait_for("scaled to the max of 3", || async {
        let d = deployments.get("v1").await?;
        Ok((d.spec.and_then(|s| s.replicas) == Some(3)).then_some(()))
    })
    .await?;
    wait_for("v1 status shows the utilization", || async {
        let o = v1.get("v1").await?;
        Ok((o.data["status"]["currentCPUUtilizationPercentage"] == json!(300)).then_some(()))
    })
    .await?;
    Ok(())
}
