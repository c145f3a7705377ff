//! The node proxy (the kube-proxy role, in userspace): for every TCP Service port a listener on
//! `ClusterIP:port` and, for NodePort/LoadBalancer Services, on `<node address>:nodePort` (and
//! 127.0.0.1); each connection is spliced to a ready endpoint: round robin, or the client's
//! previous endpoint under `sessionAffinity: ClientIP`. An endpoint that refuses is skipped for
//! the next one; a port without ready endpoints resets the connection (upstream's iptables
//! mode rejects it). Listeners follow the [`ServiceTable`]: a removed Service or port closes
//! its listener.
//!
//! ClusterIPs need no setup on one host: the service CIDR lies in 127.0.0.0/8, all of which
//! Linux routes to loopback, so `bind(127.96.x.y:port)` just works. With several kubelets on one
//! host only one may run the ClusterIP/NodePort listeners (`KubeletConfig::proxy`).
//!
//! # Across hosts
//! Pod addresses are loopback addresses of the host that runs the pod, so another host cannot
//! reach them directly. Every kubelet therefore serves a forwarding port on its node address,
//! announced on its Node as the annotation `wasmkube.dev/proxy-port`. A proxy that picks an
//! endpoint on another node connects to that node's `InternalIP:proxy-port` and sends one line,
//! `WASMKUBE-FORWARD <podIP>:<port>\n`; the far kubelet checks that the address is one of its
//! pods' (its pod CIDR), connects, answers `OK\n` (or `ERR <why>\n`, and the proxy tries the next
//! endpoint), and splices the two connections. Nodes must reach each other's `InternalIP`
//! (`--address`); nothing else needs routing. A deployment that routes pod CIDRs between hosts
//! (real interfaces or network namespaces per node, routes `podCIDR via nodeIP`) may ignore the
//! forwarding port: the proxy only uses it for endpoints on other nodes that announce one.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::services::{Endpoint, PortView, ServiceTable, Snapshot};

/// The first word of the forwarding preamble.
pub const FORWARD_PREAMBLE: &str = "WASMKUBE-FORWARD";
/// How long connecting to one endpoint (or a forwarder's answer) may take before the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often listeners that failed to bind are retried.
const RETRY_BINDS: Duration = Duration::from_secs(5);

/// Starts the node's kube-proxy role: the Service table (watching through `client`), the
/// forwarding port on the node address (announced on the Node), and, when `config.proxy`, the
/// ClusterIP/NodePort listeners. Returns the table, which resolves the pods' Service names.
pub async fn start(
    client: &kube::Client,
    config: &crate::KubeletConfig,
    pod_cidr: super::ipam::Cidr,
    stop: CancellationToken,
) -> Result<Arc<ServiceTable>, crate::KubeletError> {
    let table = ServiceTable::new(&config.node_name);
    tokio::spawn(table.clone().run(client.clone(), stop.clone()));
    let addr = SocketAddr::new(config.address, config.proxy_port);
    let listen_err = |source| crate::KubeletError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let port = listener.local_addr().map_err(listen_err)?.port();
    let allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync> =
        Arc::new(move |ip| matches!(ip, IpAddr::V4(v4) if pod_cidr.contains(v4)));
    tokio::spawn(serve_forwarder(listener, allowed, stop.clone()));
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"annotations": {
        super::services::PROXY_PORT_ANNOTATION: port.to_string()}}});
    if let Err(e) = nodes
        .patch(
            &config.node_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(node = %config.node_name, "announcing the forwarding port {port}: {e}");
    }
    tracing::info!(node = %config.node_name, port, proxy = config.proxy, "node proxy forwarding port");
    if config.proxy {
        let mut addresses = vec![config.address, IpAddr::from([127, 0, 0, 1])];
        addresses.dedup();
        if addresses.iter().any(IpAddr::is_unspecified) {
            addresses = vec![IpAddr::from([0, 0, 0, 0])];
        }
        tokio::spawn(run(table.clone(), addresses, stop));
    }
    Ok(table)
}

/// Which Service port a listener serves: `(namespace, name)` and the Service port number.
type PortKey = ((String, String), u16);

/// The listeners the snapshot asks for.
fn desired(snap: &Snapshot, node_addresses: &[IpAddr]) -> HashMap<SocketAddr, PortKey> {
    let mut out = HashMap::new();
    for (key, ports) in &snap.services {
        for p in ports {
            let pk = (key.clone(), p.port);
            if let Some(ip) = p.cluster_ip {
                out.insert(SocketAddr::new(ip, p.port), pk.clone());
            }
            if let Some(np) = p.node_port {
                for a in node_addresses {
                    out.insert(SocketAddr::new(*a, np), pk.clone());
                }
            }
        }
    }
    out
}

fn view(snap: &Snapshot, key: &PortKey) -> Option<Arc<PortView>> {
    snap.services
        .get(&key.0)?
        .iter()
        .find(|p| p.port == key.1)
        .cloned()
}

/// Runs the proxy's listeners for `table` until `stop`. `node_addresses` are where NodePorts
/// listen (the node's address and 127.0.0.1).
pub async fn run(table: Arc<ServiceTable>, node_addresses: Vec<IpAddr>, stop: CancellationToken) {
    let mut rx = table.subscribe();
    let mut listening: HashMap<SocketAddr, (PortKey, CancellationToken)> = HashMap::new();
    let mut retry = tokio::time::interval(RETRY_BINDS);
    let mut warned = std::collections::HashSet::new();
    loop {
        let snap = rx.borrow_and_update().clone();
        let want = desired(&snap, &node_addresses);
        listening.retain(|addr, (key, token)| {
            let keep = want.get(addr) == Some(key);
            if !keep {
                tracing::info!(%addr, "service listener closed");
                token.cancel();
            }
            keep
        });
        for (addr, key) in want {
            if listening.contains_key(&addr) {
                continue;
            }
            match std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }) {
                Ok(l) => {
                    warned.remove(&addr);
                    let token = stop.child_token();
                    tracing::info!(%addr, service = %format!("{}/{}:{}", key.0 .0, key.0 .1, key.1), "service listener open");
                    tokio::spawn(accept_loop(l, rx.clone(), key.clone(), token.clone()));
                    listening.insert(addr, (key, token));
                }
                // Another process holds it (often another cluster on this host with the same
                // service CIDR): said once, then retried quietly.
                Err(e) if warned.insert(addr) => {
                    tracing::warn!(%addr, "cannot listen for a Service (retrying): {e}")
                }
                Err(e) => tracing::debug!(%addr, "cannot listen for a Service (retrying): {e}"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
            _ = retry.tick() => {}
        }
    }
}

/// The next connection on `listener` (`what` names it in logs; a failed accept is retried
/// shortly), or None once `stop` is cancelled.
async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::debug!("{what} accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    rx: watch::Receiver<Arc<Snapshot>>,
    key: PortKey,
    stop: CancellationToken,
) {
    while let Some((conn, peer)) = accept(&listener, &stop, "service").await {
        let port = view(&rx.borrow(), &key);
        tokio::spawn(async move {
            match port {
                Some(port) => proxy_connection(conn, peer, &port).await,
                None => reset(conn),
            }
        });
    }
}

/// Closes `conn` with a reset (SO_LINGER 0), as a rejected connection looks.
fn reset(conn: TcpStream) {
    #[allow(deprecated)]
    let _ = conn.set_linger(Some(Duration::ZERO));
    drop(conn);
}

/// Splices `conn` to an endpoint of `port`, trying each in turn; resets it when none answers.
pub async fn proxy_connection(mut conn: TcpStream, peer: SocketAddr, port: &PortView) {
    let client = Some(peer.ip());
    let _ = conn.set_nodelay(true);
    for ep in port.pick_order(client) {
        match connect_endpoint(ep).await {
            Ok(mut upstream) => {
                port.served(client, ep);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                return;
            }
            Err(e) => {
                tracing::debug!(service = %port.id, endpoint = %ep.addr, "endpoint unreachable, trying the next: {e}")
            }
        }
    }
    if port.endpoints.is_empty() {
        tracing::debug!(service = %port.id, %peer, "no ready endpoints: connection rejected");
    } else {
        tracing::warn!(service = %port.id, %peer, "every endpoint refused: connection rejected");
    }
    reset(conn);
}

/// Connects to an endpoint, directly or through its node's forwarder.
pub async fn connect_endpoint(ep: &Endpoint) -> io::Result<TcpStream> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "timed out");
    let Some(via) = ep.via else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ep.addr))
            .await
            .map_err(|_| timed_out())?;
    };
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut s = TcpStream::connect(via).await?;
        s.write_all(format!("{FORWARD_PREAMBLE} {}\n", ep.addr).as_bytes())
            .await?;
        let answer = read_line(&mut s).await?;
        if answer == "OK" {
            Ok(s)
        } else {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("forwarder {via}: {answer}"),
            ))
        }
    })
    .await
    .map_err(|_| timed_out())?
}

/// Reads one `\n`-terminated line of at most 128 bytes, byte by byte (nothing after it is
/// consumed: the spliced stream follows).
async fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            return String::from_utf8(line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"));
        }
        if line.len() >= 128 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        line.push(b);
    }
}

/// Serves the node's forwarding port on `listener` until `stop`: each connection names a pod
/// address in its first line; `allowed` says which addresses this node serves (its pods').
pub async fn serve_forwarder(
    listener: TcpListener,
    allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    stop: CancellationToken,
) {
    while let Some((conn, peer)) = accept(&listener, &stop, "forwarder").await {
        let allowed = allowed.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(conn, allowed.as_ref()).await {
                tracing::debug!(%peer, "forwarding: {e}");
            }
        });
    }
}

async fn forward(
    mut conn: TcpStream,
    allowed: &(dyn Fn(IpAddr) -> bool + Send + Sync),
) -> io::Result<()> {
    let line = tokio::time::timeout(CONNECT_TIMEOUT, read_line(&mut conn))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no preamble"))??;
    let target = line
        .strip_prefix(FORWARD_PREAMBLE)
        .map(str::trim)
        .and_then(|t| t.parse::<SocketAddr>().ok());
    let target = match target {
        Some(t) if allowed(t.ip()) => t,
        Some(t) => {
            conn.write_all(
                format!("ERR {} is not a pod address of this node\n", t.ip()).as_bytes(),
            )
            .await?;
            return Ok(());
        }
        None => {
            conn.write_all(format!("ERR expected \"{FORWARD_PREAMBLE} <ip>:<port>\"\n").as_bytes())
                .await?;
            return Ok(());
        }
    };
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            conn.write_all(format!("ERR {target}: {e}\n").as_bytes())
                .await?;
            return Ok(());
        }
        Err(_) => {
            conn.write_all(format!("ERR {target}: timed out\n").as_bytes())
                .await?;
            return Ok(());
        }
    };
    conn.write_all(b"OK\n").await?;
    let _ = conn.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A "pod": answers every connection with its name, then closes.
    async fn pod(addr: &str, name: &'static str) -> (SocketAddr, CancellationToken) {
        let l = TcpListener::bind(addr).await.expect("bind a pod address");
        let a = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = s.cancelled() => return,
                    Ok((mut c, _)) = l.accept() => {
                        let _ = c.write_all(name.as_bytes()).await;
                    }
                }
            }
        });
        (a, stop)
    }

    async fn ask(addr: SocketAddr) -> io::Result<String> {
        let mut c = TcpStream::connect(addr).await?;
        let mut out = String::new();
        c.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// Asks `addr` until `check` holds for an answer (the proxy follows the table
    /// asynchronously), failing after 10 s.
    async fn until(
        addr: SocketAddr,
        check: impl Fn(&io::Result<String>) -> bool,
    ) -> io::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = ask(addr).await;
            if check(&r) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out; last answer {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn service(ip: &str, port: u16, node_port: Option<u16>, affinity: bool) -> Service {
        let mut spec = json!({"clusterIP": ip, "type": if node_port.is_some() {"NodePort"} else {"ClusterIP"},
            "ports": [{"name": "p", "port": port, "protocol": "TCP", "nodePort": node_port}]});
        if affinity {
            spec["sessionAffinity"] = json!("ClientIP");
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        }
        serde_json::from_value(
            json!({"metadata": {"name": "svc", "namespace": "t", "uid": "u"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(eps: &[(SocketAddr, bool)], node: Option<&str>) -> EndpointSlice {
        let port = eps.first().map(|e| e.0.port()).unwrap_or(1);
        let endpoints: Vec<_> = eps
            .iter()
            .map(|(a, ready)| json!({"addresses": [a.ip().to_string()], "conditions": {"ready": ready}, "nodeName": node}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "svc-1", "namespace": "t",
                "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4", "ports": [{"name": "p", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints}))
        .unwrap()
    }

    /// A free port on `ip` (bound and released).
    fn free_port(ip: &str) -> u16 {
        std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn cluster_ip_and_node_port_balance_over_ready_endpoints_and_follow_removal() {
        // Pods on distinct 127.128.x.y addresses, all on one port, as pods of a Deployment.
        let p = free_port("127.128.7.1");
        let (a, _sa) = pod(&format!("127.128.7.1:{p}"), "a").await;
        let (b, sb) = pod(&format!("127.128.7.2:{p}"), "b").await;
        let (c, _sc) = pod(&format!("127.128.7.3:{p}"), "c").await;
        let table = ServiceTable::new("n1");
        let stop = CancellationToken::new();
        tokio::spawn(run(
            table.clone(),
            vec!["127.0.0.1".parse().unwrap()],
            stop.clone(),
        ));
        let vport = free_port("127.96.7.1");
        let np = free_port("127.0.0.1");
        table.set_service(service("127.96.7.1", vport, Some(np), false));
        let cip: SocketAddr = format!("127.96.7.1:{vport}").parse().unwrap();
        let nodeport: SocketAddr = format!("127.0.0.1:{np}").parse().unwrap();

        // No endpoints: the listener accepts and resets (a closed port would refuse instead).
        until(cip, |r| {
            r.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
        })
        .await
        .unwrap_err();

        // d is ready in the slice but nothing listens there: skipped for the next endpoint.
        let d: SocketAddr = format!("127.128.7.4:{p}").parse().unwrap();
        table.set_slice(slice(
            &[
                (a, true),
                (b, true),
                (c, true),
                (d, true),
                ("127.128.7.5:1".parse().unwrap(), false),
            ],
            Some("n1"),
        ));
        until(cip, |r| r.is_ok()).await.unwrap();
        for target in [cip, nodeport] {
            let mut seen = BTreeMap::new();
            for _ in 0..12 {
                *seen.entry(ask(target).await.unwrap()).or_insert(0) += 1;
            }
            assert_eq!(
                seen.keys().cloned().collect::<Vec<_>>(),
                vec!["a", "b", "c"],
                "{target}: {seen:?}"
            );
        }

        // b leaves the slice (and stops): it drops out of rotation.
        table.set_slice(slice(&[(a, true), (c, true)], Some("n1")));
        sb.cancel();
        until(cip, |r| r.as_deref().is_ok_and(|s| s != "b"))
            .await
            .unwrap();
        for _ in 0..8 {
            assert_ne!(ask(cip).await.unwrap(), "b");
        }

        // The Service goes: so do its listeners.
        table.remove_service("t", "svc");
        until(nodeport, |r| {
            r.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        })
        .await
        .unwrap_err();
        stop.cancel();
    }

    #[tokio::test]
    async fn client_ip_affinity_keeps_a_client_on_one_endpoint() {
        let p = free_port("127.128.8.1");
        let (a, _sa) = pod(&format!("127.128.8.1:{p}"), "a").await;
        let (b, _sb) = pod(&format!("127.128.8.2:{p}"), "b").await;
        let table = ServiceTable::new("n1");
        let stop = CancellationToken::new();
        tokio::spawn(run(table.clone(), vec![], stop.clone()));
        let vport = free_port("127.96.8.1");
        table.set_service(service("127.96.8.1", vport, None, true));
        table.set_slice(slice(&[(a, true), (b, true)], None));
        let cip: SocketAddr = format!("127.96.8.1:{vport}").parse().unwrap();
        let first = until(cip, |r| r.is_ok()).await.unwrap();
        for _ in 0..10 {
            assert_eq!(ask(cip).await.unwrap(), first, "one client, one endpoint");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn endpoints_on_other_nodes_are_reached_through_their_forwarder() {
        let p = free_port("127.128.9.1");
        let (a, _sa) = pod(&format!("127.128.9.1:{p}"), "remote").await;
        // The other node's forwarder, serving only its pod CIDR 127.128.9.0/24.
        let fwd = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fwd_addr = fwd.local_addr().unwrap();
        let stop = CancellationToken::new();
        let cidr: crate::network::ipam::Cidr = "127.128.9.0/24".parse().unwrap();
        let allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync> =
            Arc::new(move |ip| matches!(ip, IpAddr::V4(v4) if cidr.contains(v4)));
        tokio::spawn(serve_forwarder(fwd, allowed, stop.clone()));

        let ep = Endpoint {
            addr: a,
            via: Some(fwd_addr),
        };
        let mut s = connect_endpoint(&ep).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "remote");
        // Addresses outside the node's pods are refused, with the reason.
        let elsewhere = Endpoint {
            addr: "127.0.0.1:22".parse().unwrap(),
            via: Some(fwd_addr),
        };
        let e = connect_endpoint(&elsewhere).await.unwrap_err();
        assert!(
            e.to_string().contains("is not a pod address of this node"),
            "{e}"
        );

        // Through a Service: the table marks n2's endpoint as behind n2's forwarder.
        let table = ServiceTable::new("n1");
        tokio::spawn(run(table.clone(), vec![], stop.clone()));
        table.set_node(
            serde_json::from_value(json!({"metadata": {"name": "n2",
                "annotations": {"wasmkube.dev/proxy-port": fwd_addr.port().to_string()}},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}))
            .unwrap(),
        );
        let vport = free_port("127.96.9.1");
        table.set_service(service("127.96.9.1", vport, None, false));
        table.set_slice(slice(&[(a, true)], Some("n2")));
        let cip: SocketAddr = format!("127.96.9.1:{vport}").parse().unwrap();
        assert_eq!(until(cip, |r| r.is_ok()).await.unwrap(), "remote");
        stop.cancel();
    }
}
