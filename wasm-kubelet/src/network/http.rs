//! wasi-http for pods: outgoing requests routed by the network plugin ([`OutgoingHooks`]),
//! and [`serve_file`], the kubelet's request path (one instance per request) for one
//! component file, for benchmarks.
//!
//! Outgoing HTTP bypasses the socket address check and DNS (the host opens the connection),
//! so its policy lives here: a host the Service table knows (`name`, `name.ns`, `name.ns.svc`,
//! `name.ns.svc.cluster.local`, a ClusterIP) goes to a ready endpoint over plain HTTP; an IP
//! address goes out only when the socket policy would let the pod connect to it; anything
//! else fails in the guest with `HTTP-request-denied` and a kubelet log line.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::policy::{PodNetwork, Use};
use crate::runtime::logs::{LogFile, Stream};
use crate::runtime::{ContainerSpec, Program, Runtime, RuntimeError};

/// The response future `send_request` hands back to wasmtime-wasi-http.
type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// The wasi-http hooks of one container run.
pub struct OutgoingHooks {
    network: Option<Arc<PodNetwork>>,
    log: Option<LogFile>,
}

impl OutgoingHooks {
    /// Hooks for a pod with `network` (`None`: every outgoing request is denied); denials are
    /// also noted in the container log `log`.
    pub fn new(network: Option<Arc<PodNetwork>>, log: Option<LogFile>) -> Self {
        Self { network, log }
    }

    /// Where `uri` may go: rewritten to an endpoint for a Service, unchanged for an allowed
    /// cluster address, or `Err` with why not.
    pub fn route(&self, uri: &http::Uri) -> Result<Option<http::Uri>, String> {
        let Some(net) = &self.network else {
            return Err("the container has no network".into());
        };
        let host = uri.host().ok_or("the URI names no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if let Some(resolver) = &net.resolver {
            if let Some(endpoint) = resolver.resolve(&net.namespace, host, port) {
                let mut parts = uri.clone().into_parts();
                parts.scheme = Some(Scheme::HTTP);
                parts.authority = Some(
                    Authority::try_from(endpoint.to_string().as_str())
                        .map_err(|e| format!("endpoint {endpoint}: {e}"))?,
                );
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                }
                return http::Uri::from_parts(parts)
                    .map(Some)
                    .map_err(|e| format!("endpoint {endpoint}: {e}"));
            }
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => net
                .policy
                .check(SocketAddr::new(ip, port), Use::Connect)
                .map(|()| None)
                .map_err(|d| d.to_string()),
            Err(_) => Err(format!(
                "{host:?} is not a Service of namespace {:?} (names resolve as name, name.ns, \
                 name.ns.svc or name.ns.svc.cluster.local) nor a cluster address",
                net.namespace
            )),
        }
    }
}

impl WasiHttpHooks for OutgoingHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let routed = self.route(request.uri());
        match routed {
            Ok(Some(uri)) => *request.uri_mut() = uri,
            Ok(None) => {}
            Err(why) => {
                let pod = self.network.as_ref().map_or("", |n| n.pod.as_str());
                tracing::warn!(pod = %pod, uri = %request.uri(), "outgoing HTTP denied: {why}");
                if let Some(log) = &self.log {
                    let note = format!("kubelet: HTTP request to {} denied: {why}", request.uri());
                    log.note(Stream::Stderr, &note);
                }
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        }
        Box::new(async move {
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

/// A component file served like an HTTP pod (see [`serve_file`]).
pub struct Served {
    /// The bound address.
    pub addr: SocketAddr,
    /// The serving task (ends when `stop` is cancelled).
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves the `wasi:http/incoming-handler` component at `wasm` on `listen` (port 0 picks one)
/// through the kubelet's own request path: one instance per request from a `ProxyPre`, pooling
/// allocator, guest output to the log file `log`. Runs until `stop` is cancelled.
pub async fn serve_file(
    runtime: &Runtime,
    wasm: &Path,
    listen: SocketAddr,
    log: &Path,
    stop: CancellationToken,
) -> Result<Served, RuntimeError> {
    let io = |source| RuntimeError::Io {
        path: wasm.to_path_buf(),
        source,
    };
    let bytes = tokio::fs::read(wasm).await.map_err(io)?;
    let digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    };
    let Program::Http(pre) = runtime.load(&digest, wasm).await? else {
        return Err(RuntimeError::Invalid(format!(
            "{}: not a wasi:http/incoming-handler component",
            wasm.display()
        )));
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let log = crate::runtime::logs::LogFile::create(log, u64::MAX).map_err(|source| {
        RuntimeError::Io {
            path: log.to_path_buf(),
            source,
        }
    })?;
    let task = tokio::spawn(async move {
        let spec = ContainerSpec::default();
        crate::runtime::http::serve_listeners(&pre, &spec, &log, vec![listener], &stop).await;
    });
    Ok(Served { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::policy::SocketPolicy;
    use crate::network::ServiceResolver;

    struct OneService;

    impl ServiceResolver for OneService {
        fn resolve(&self, namespace: &str, host: &str, port: u16) -> Option<SocketAddr> {
            let names = ["web", "web.ns", "web.ns.svc", "web.ns.svc.cluster.local"];
            let local = namespace == "ns" && host == "web";
            (port == 80 && (local || names[1..].contains(&host)))
                .then(|| "127.128.0.9:8080".parse().unwrap())
        }

        fn cluster_ip(&self, _: &str, _: &str) -> Option<IpAddr> {
            None
        }
    }

    fn hooks(resolver: bool) -> OutgoingHooks {
        OutgoingHooks::new(
            Some(Arc::new(PodNetwork {
                pod: "ns/client".into(),
                namespace: "ns".into(),
                policy: SocketPolicy {
                    pod_ip: "127.128.0.2".parse().unwrap(),
                    cluster_cidr: super::super::CLUSTER_CIDR.parse().unwrap(),
                    service_cidr: super::super::SERVICE_CIDR.parse().unwrap(),
                    node_addresses: vec!["127.0.0.1".parse().unwrap()],
                },
                resolver: resolver.then(|| Arc::new(OneService) as Arc<dyn ServiceResolver>),
            })),
            None,
        )
    }

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn service_names_are_rewritten_to_an_endpoint_over_plain_http() {
        let h = hooks(true);
        for name in ["web", "web.ns", "web.ns.svc", "web.ns.svc.cluster.local"] {
            let routed = h.route(&uri(&format!("http://{name}/a?b=c"))).unwrap();
            assert_eq!(
                routed.unwrap().to_string(),
                "http://127.128.0.9:8080/a?b=c",
                "{name}"
            );
        }
    }

    #[test]
    fn addresses_go_out_only_where_the_socket_policy_allows() {
        let h = hooks(false);
        assert_eq!(h.route(&uri("http://127.128.3.4:8080/")).unwrap(), None);
        assert_eq!(h.route(&uri("http://127.0.0.1:6443/")).unwrap(), None);
        let denied = h.route(&uri("http://127.0.0.2/")).unwrap_err();
        assert!(denied.contains("not a cluster address"), "{denied}");
        let unknown = h.route(&uri("http://example.com/")).unwrap_err();
        assert!(unknown.contains("not a Service"), "{unknown}");
        assert!(OutgoingHooks::new(None, None)
            .route(&uri("http://127.128.0.3/"))
            .is_err());
    }
}
