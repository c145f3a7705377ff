//! Endpoints and EndpointSlice controller: for every Service with a selector, the addresses of
//! the pods it selects, ready or not, with the Service's ports resolved against each pod's
//! container ports. The node proxy balances over the EndpointSlices (label
//! `kubernetes.io/service-name`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::podutil;
use crate::ControllerConfig;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label marking the slices this controller manages (upstream's value, so tools recognise it).
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service {key}: {what}: {source}")]
    Api {
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
}

pub struct Ctx {
    client: Client,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
}

/// Runs the Endpoints/EndpointSlice controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let (pods, pod_events) = podutil::informer(
        Api::<Pod>::all(client.clone()),
        config.pod_cache_lag,
        |_, _| {},
    );
    let (slices, slice_events) = podutil::informer(
        Api::<EndpointSlice>::all(client.clone()),
        Duration::ZERO,
        |_, _| {},
    );
    let ctx = Arc::new(Ctx {
        client,
        pods,
        slices,
    });
    controller
        .watches_stream(pod_events, move |pod| selecting(&services, &pod))
        .watches_stream(slice_events, |slice| {
            let svc = slice.labels().get(SERVICE_NAME)?;
            Some(ObjectRef::new(svc).within(&slice.namespace().unwrap_or_default()))
        })
        .with_config(Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "endpoints reconcile failed");
            }
        })
        .await;
}

/// The Services whose selector selects `pod`.
fn selecting(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let ns = pod.namespace();
    let labels = pod.labels();
    services
        .state()
        .iter()
        .filter(|s| s.namespace() == ns)
        .filter(|s| {
            service_selector(s).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

fn error_policy(_svc: Arc<Service>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "endpoints");
    Action::requeue(Duration::from_secs(1))
}

/// One endpoint: a pod with an IP.
#[derive(Clone, Debug)]
struct Member {
    ip: String,
    ready: bool,
    terminating: bool,
    node: Option<String>,
    hostname: Option<String>,
    target: ObjectReference,
}

/// A port of the Service resolved for a pod: (name, port, protocol, appProtocol).
type Port = (Option<String>, i32, String, Option<String>);

/// The Service's ports as this pod serves them; a named targetPort the pod lacks drops the port.
fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    let container_ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    let mut out = Vec::new();
    for p in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            None => Some(p.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(name)) => container_ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port),
        };
        if let Some(port) = port {
            out.push((p.name.clone(), port, protocol, p.app_protocol.clone()));
        }
    }
    out
}

fn member(svc: &Service, pod: &Pod) -> Option<Member> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    let spec = pod.spec.as_ref();
    let subdomain_matches =
        spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref();
    Some(Member {
        ip,
        ready: podutil::is_ready(pod) && pod.metadata.deletion_timestamp.is_none(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        node: spec.and_then(|s| s.node_name.clone()),
        hostname: spec
            .and_then(|s| s.hostname.clone())
            .filter(|_| subdomain_matches),
        target: ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
    })
}

/// A short stable name suffix for a set of ports (FNV-32a, hex).
fn port_hash(ports: &[Port]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in format!("{ports:?}").bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&svc.metadata);
    let Some(selector) = service_selector(&svc) else {
        // Services without a selector have user-managed endpoints.
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true);
    let api_err = |what: &str| {
        let key = key.clone();
        let what = what.to_string();
        move |source| Error::Api { key, what, source }
    };

    // Pods grouped by the ports they serve (usually one group).
    let mut groups: BTreeMap<Vec<Port>, Vec<Member>> = BTreeMap::new();
    for pod in ctx.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let labels = pod.labels();
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let Some(m) = member(&svc, &pod) else {
            continue;
        };
        groups.entry(resolve_ports(&svc, &pod)).or_default().push(m);
    }
    for members in groups.values_mut() {
        members.sort_by(|a, b| a.ip.cmp(&b.ip));
    }

    let owner = OwnerReference {
        controller: Some(true),
        ..podutil::controller_owner_ref(svc.as_ref())
    };
    sync_endpoints(&ctx, &svc, &groups, publish_not_ready, &owner)
        .await
        .map_err(api_err("writing endpoints"))?;
    sync_slices(&ctx, &svc, &groups, publish_not_ready, &owner)
        .await
        .map_err(api_err("writing endpointslices"))?;
    Ok(Action::await_change())
}

/// The core/v1 Endpoints object (same name as the Service).
async fn sync_endpoints(
    ctx: &Ctx,
    svc: &Service,
    groups: &BTreeMap<Vec<Port>, Vec<Member>>,
    publish_not_ready: bool,
    owner: &OwnerReference,
) -> Result<(), kube::Error> {
    let address = |m: &Member| EndpointAddress {
        ip: m.ip.clone(),
        hostname: m.hostname.clone(),
        node_name: m.node.clone(),
        target_ref: Some(m.target.clone()),
    };
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .map(|(ports, members)| {
            let ready: Vec<_> = members
                .iter()
                .filter(|m| m.ready || (publish_not_ready && !m.terminating))
                .map(address)
                .collect();
            let not_ready: Vec<_> = members
                .iter()
                .filter(|m| !m.ready && !m.terminating && !publish_not_ready)
                .map(address)
                .collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol, app)| EndpointPort {
                            name: name.clone(),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            app_protocol: app.clone(),
                        })
                        .collect(),
                ),
            }
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect();
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let labels = svc.metadata.labels.clone();
    match api.get_opt(&svc.name_any()).await? {
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: svc.metadata.name.clone(),
                    namespace: Some(ns),
                    labels,
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                subsets,
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(mut ep) => {
            if ep.subsets == subsets && ep.metadata.labels == labels {
                return Ok(());
            }
            ep.subsets = subsets;
            ep.metadata.labels = labels;
            api.replace(&svc.name_any(), &PostParams::default(), &ep)
                .await
                .map(|_| ())
        }
    }
}

/// One EndpointSlice per port set, named `<service>-<hash of the ports>`; stale ones deleted.
async fn sync_slices(
    ctx: &Ctx,
    svc: &Service,
    groups: &BTreeMap<Vec<Port>, Vec<Member>>,
    publish_not_ready: bool,
    owner: &OwnerReference,
) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let svc_name = svc.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), svc_name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    let empty: BTreeMap<Vec<Port>, Vec<Member>> = [(Vec::new(), Vec::new())].into();
    // A Service with no endpoints still gets one (empty) slice, as upstream.
    let groups = if groups.is_empty() { &empty } else { groups };
    let mut wanted = Vec::new();
    for (ports, members) in groups {
        let slice_name = format!("{svc_name}-{}", port_hash(ports));
        wanted.push(slice_name.clone());
        let endpoints: Vec<discovery::Endpoint> = members
            .iter()
            .map(|m| discovery::Endpoint {
                addresses: vec![m.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(m.ready || (publish_not_ready && !m.terminating)),
                    serving: Some(m.ready || (m.terminating && publish_not_ready)),
                    terminating: Some(m.terminating),
                }),
                hostname: m.hostname.clone(),
                node_name: m.node.clone(),
                target_ref: Some(m.target.clone()),
                ..Default::default()
            })
            .collect();
        let ports: Vec<discovery::EndpointPort> = ports
            .iter()
            .map(|(name, port, protocol, app)| discovery::EndpointPort {
                name: name.clone(),
                port: Some(*port),
                protocol: Some(protocol.clone()),
                app_protocol: app.clone(),
            })
            .collect();
        let desired = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(slice_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(ports),
        };
        let cached = ctx.slices.get(&ObjectRef::new(&slice_name).within(&ns));
        match cached {
            None => match api.create(&PostParams::default(), &desired).await {
                Ok(_) => {}
                // Our cache is behind: the slice event brings us back with it.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            },
            Some(current) => {
                let same = current.endpoints == desired.endpoints
                    && current.ports == desired.ports
                    && current.metadata.labels == desired.metadata.labels;
                if !same {
                    let mut next = desired;
                    next.metadata.resource_version = current.metadata.resource_version.clone();
                    api.replace(&slice_name, &PostParams::default(), &next)
                        .await?;
                }
            }
        }
    }
    for slice in ctx.slices.state() {
        let ours = slice.namespace().as_deref() == Some(ns.as_str())
            && slice.labels().get(SERVICE_NAME) == Some(&svc_name)
            && slice.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER);
        if ours && !wanted.contains(&slice.name_any()) {
            match api
                .delete(&slice.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
