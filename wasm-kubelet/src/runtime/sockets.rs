//! wasi-sockets as a pod sees them, by shadowing two of wasmtime-wasi's interfaces (every other
//! function delegates to wasmtime-wasi, and the socket address check still applies):
//!
//! - `wasi:sockets/ip-name-lookup`: a pod resolves cluster names (`name`, `name.ns`,
//!   `name.ns.svc`, `name.ns.svc.cluster.local`) to their ClusterIP from the Service table, IP
//!   literals to themselves and `localhost` to its own address. Nothing goes to the host's DNS:
//!   other names are unresolvable, which matches the socket policy (cluster addresses only).
//! - `wasi:sockets/tcp` `start-bind`: a bind to `0.0.0.0` binds the pod's address instead (a
//!   server written to listen on all interfaces listens on its pod IP, as in a pod's network
//!   namespace). `[::]` has no pod address to become and stays denied by the policy.

use std::net::IpAddr;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self as lookup, Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::{self, HostTcpSocket, ShutdownType, TcpSocket};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

use super::P2State;
use crate::network::policy::PodNetwork;

/// The shadowing implementation's view of a store.
pub struct PodSockets<'a> {
    sockets: WasiSocketsCtxView<'a>,
    network: Option<&'a PodNetwork>,
}

struct PodSocketsData;

impl HasData for PodSocketsData {
    type Data<'a> = PodSockets<'a>;
}

impl P2State {
    fn names(&mut self) -> PodSockets<'_> {
        PodSockets {
            sockets: WasiSocketsCtxView {
                ctx: self.ctx.sockets(),
                table: &mut self.table,
            },
            network: self.network.as_deref(),
        }
    }
}

/// Replaces wasmtime-wasi's `ip-name-lookup` and `tcp` in `linker` (which must already hold
/// the WASI p2 interfaces) with the pod's versions.
pub fn shadow(linker: &mut Linker<P2State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = lookup::add_to_linker::<P2State, PodSocketsData>(linker, P2State::names)
        .and_then(|()| tcp::add_to_linker::<P2State, PodSocketsData>(linker, P2State::names));
    linker.allow_shadowing(false);
    added
}

/// What `name` resolves to for a pod with `net`, or why it does not.
pub fn resolve(net: &PodNetwork, name: &str) -> Result<IpAddr, String> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip);
    }
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    if lower == "localhost" {
        return Ok(net.policy.pod_ip);
    }
    net.resolver
        .as_ref()
        .and_then(|r| r.cluster_ip(&net.namespace, &lower))
        .ok_or_else(|| {
            format!(
                "{name:?} is not a Service of namespace {:?} (pods resolve only cluster names)",
                net.namespace
            )
        })
}

impl Host for PodSockets<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        let Some(net) = self.network else {
            return Err(ErrorCode::AccessDenied.into());
        };
        match resolve(net, &name) {
            // wasmtime-wasi answers an IP literal itself, without DNS.
            Ok(ip) => Host::resolve_addresses(&mut self.sockets, network, ip.to_string()),
            Err(why) => {
                tracing::debug!(pod = %net.pod, "name lookup: {why}");
                Err(ErrorCode::NameUnresolvable.into())
            }
        }
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::Host for PodSockets<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(
            &mut self.sockets,
            error,
        )
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi::p2::bindings::sockets::network::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::network_error_code(
            &mut self.sockets,
            err,
        )
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for PodSockets<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::bindings::sockets::network::HostNetwork::drop(&mut self.sockets, this)
    }
}

impl HostResolveAddressStream for PodSockets<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

/// `0.0.0.0:port` as `pod_ip:port` (IPv4 pods only); other addresses unchanged.
pub fn bind_address(net: Option<&PodNetwork>, addr: IpSocketAddress) -> IpSocketAddress {
    match (addr, net.map(|n| n.policy.pod_ip)) {
        (IpSocketAddress::Ipv4(a), Some(IpAddr::V4(ip))) if a.address == (0, 0, 0, 0) => {
            let o = ip.octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: a.port,
                address: (o[0], o[1], o[2], o[3]),
            })
        }
        (addr, _) => addr,
    }
}

impl tcp::Host for PodSockets<'_> {}

type SocketResult<T> = Result<T, SocketError>;

impl HostTcpSocket for PodSockets<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        let local_address = bind_address(self.network, local_address);
        HostTcpSocket::start_bind(&mut self.sockets, this, network, local_address).await
    }

    fn finish_bind(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        HostTcpSocket::finish_bind(&mut self.sockets, this)
    }

    fn start_connect(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        remote_address: IpSocketAddress,
    ) -> SocketResult<()> {
        HostTcpSocket::start_connect(&mut self.sockets, this, network, remote_address)
    }

    fn finish_connect(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        HostTcpSocket::finish_connect(&mut self.sockets, this)
    }

    async fn start_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        HostTcpSocket::start_listen(&mut self.sockets, this).await
    }

    fn finish_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        HostTcpSocket::finish_listen(&mut self.sockets, this)
    }

    fn accept(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    )> {
        HostTcpSocket::accept(&mut self.sockets, this)
    }

    fn local_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress> {
        HostTcpSocket::local_address(&mut self.sockets, this)
    }

    fn remote_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress> {
        HostTcpSocket::remote_address(&mut self.sockets, this)
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        HostTcpSocket::is_listening(&mut self.sockets, this)
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        HostTcpSocket::address_family(&mut self.sockets, this)
    }

    fn set_listen_backlog_size(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        HostTcpSocket::set_listen_backlog_size(&mut self.sockets, this, value)
    }

    fn keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> SocketResult<bool> {
        HostTcpSocket::keep_alive_enabled(&mut self.sockets, this)
    }

    fn set_keep_alive_enabled(
        &mut self,
        this: Resource<TcpSocket>,
        value: bool,
    ) -> SocketResult<()> {
        HostTcpSocket::set_keep_alive_enabled(&mut self.sockets, this, value)
    }

    fn keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        HostTcpSocket::keep_alive_idle_time(&mut self.sockets, this)
    }

    fn set_keep_alive_idle_time(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        HostTcpSocket::set_keep_alive_idle_time(&mut self.sockets, this, value)
    }

    fn keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        HostTcpSocket::keep_alive_interval(&mut self.sockets, this)
    }

    fn set_keep_alive_interval(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        HostTcpSocket::set_keep_alive_interval(&mut self.sockets, this, value)
    }

    fn keep_alive_count(&mut self, this: Resource<TcpSocket>) -> SocketResult<u32> {
        HostTcpSocket::keep_alive_count(&mut self.sockets, this)
    }

    fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> SocketResult<()> {
        HostTcpSocket::set_keep_alive_count(&mut self.sockets, this, value)
    }

    fn hop_limit(&mut self, this: Resource<TcpSocket>) -> SocketResult<u8> {
        HostTcpSocket::hop_limit(&mut self.sockets, this)
    }

    fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> SocketResult<()> {
        HostTcpSocket::set_hop_limit(&mut self.sockets, this, value)
    }

    fn receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        HostTcpSocket::receive_buffer_size(&mut self.sockets, this)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        HostTcpSocket::set_receive_buffer_size(&mut self.sockets, this, value)
    }

    fn send_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        HostTcpSocket::send_buffer_size(&mut self.sockets, this)
    }

    fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()> {
        HostTcpSocket::set_send_buffer_size(&mut self.sockets, this, value)
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        HostTcpSocket::subscribe(&mut self.sockets, this)
    }

    fn shutdown(
        &mut self,
        this: Resource<TcpSocket>,
        shutdown_type: ShutdownType,
    ) -> SocketResult<()> {
        HostTcpSocket::shutdown(&mut self.sockets, this, shutdown_type)
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        HostTcpSocket::drop(&mut self.sockets, this)
    }
}
