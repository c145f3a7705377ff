use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::common::*;

async fn pod_with_ip(c: &Cluster, name: &str, ip: &str, ready: bool) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "example.com/web:1",
                                  "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    let status = if ready { "True" } else { "False" };
    let body = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": status}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(body))
        .await?;
    Ok(())
}

#[tokio::test]
async fn endpoints_and_slices_follow_the_selected_pods() -> anyhow::Result<()> {
    let c = cluster().await?;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    pod_with_ip(&c, "web-a", "127.1.0.1", true).await?;
    pod_with_ip(&c, "web-b", "127.1.0.2", false).await?;

    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let by_service = ListParams::default().labels("kubernetes.io/service-name=web");
    let slice = wait_for("a slice with both pods", || async {
        let list = slices.list(&by_service).await?.items;
        Ok(list.into_iter().find(|s| s.endpoints.len() == 2))
    })
    .await?;
    let ready: Vec<(String, Option<bool>)> = slice
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().and_then(|c| c.ready),
            )
        })
        .collect();
    assert_eq!(
        ready,
        [
            ("127.1.0.1".to_string(), Some(true)),
            ("127.1.0.2".to_string(), Some(false))
        ]
    );
    let port = slice.ports.iter().flatten().next().cloned().expect("port");
    assert_eq!((port.name.as_deref(), port.port), (Some("web"), Some(8080)));
    assert_eq!(
        slice.owner_references().first().map(|o| o.kind.as_str()),
        Some("Service")
    );

    let endpoints: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    wait_for("endpoints split ready and not ready", || async {
        let Some(ep) = endpoints.get_opt("web").await? else {
            return Ok(None);
        };
        let subset = ep
            .subsets
            .unwrap_or_default()
            .into_iter()
            .next()
            .unwrap_or_default();
        let ips = |a: Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
            a.unwrap_or_default()
                .into_iter()
                .map(|a| a.ip)
                .collect::<Vec<_>>()
        };
        let done = ips(subset.addresses) == ["127.1.0.1"]
            && ips(subset.not_ready_addresses) == ["127.1.0.2"];
        Ok(done.then_some(()))
    })
    .await?;

    // A pod that goes away leaves the slice.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.delete("web-a", &DeleteParams::default()).await?;
    wait_for("slice without web-a", || async {
        let list = slices.list(&by_service).await?.items;
        Ok(list
            .iter()
            .any(|s| s.endpoints.len() == 1 && s.endpoints[0].addresses == ["127.1.0.2"])
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_namespace_gets_a_default_serviceaccount() -> anyhow::Result<()> {
    let c = cluster().await?;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team");
    wait_for("default serviceaccount", || async {
        Ok(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    let first = accounts.get("default").await?.uid();
    accounts.delete("default", &DeleteParams::default()).await?;
    wait_for("default serviceaccount recreated", || async {
        Ok(accounts
            .get_opt("default")
            .await?
            .filter(|sa| sa.uid() != first)
            .map(|_| ()))
    })
    .await?;
    Ok(())
}
