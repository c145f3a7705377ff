//! wasmkube-apiserver: a Kubernetes-compatible API server over a durable store.

pub mod allocator;
pub mod auth;
pub mod authz;
pub mod codec;
pub mod convert;
pub mod discovery;
pub mod errors;
pub mod metrics;
pub mod namespaces;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod podlog;
pub mod protobuf;
pub mod registry;
pub mod request;
pub mod resources;
pub mod rest;
pub mod router;
pub mod secret_tokens;
pub mod selectors;
pub mod storage;
pub mod strategy;
pub mod subresource;
pub mod tables;
pub mod tls;
pub mod tokenreview;
pub mod watch;

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use router::app;
use storage::Storage;

/// The shared state of a running apiserver.
pub struct ApiServer {
    pub store: Arc<dyn Storage>,
    pub authenticator: Box<dyn auth::Authenticator>,
    /// Cancelled when the server stops: ends watches so shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// Namespaces as last watched, for the create path's namespace check.
    pub namespaces: Arc<namespaces::NamespaceCache>,
    /// ClusterIP and NodePort allocation for Services.
    pub services: allocator::ServiceAllocator,
    /// How the apiserver reaches kubelets: TLS with its client certificate
    /// ([`tls::Pki::kubelet_client_config`]); unset (`--insecure`), plain HTTP without a
    /// credential.
    pub kubelet_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
}

impl ApiServer {
    /// Prepares a store for serving: creates the system namespaces and starts the namespace
    /// finalizer, which stops with `shutdown`.
    pub async fn start(
        store: Arc<dyn Storage>,
        authenticator: Box<dyn auth::Authenticator>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, storage::StorageError> {
        Self::start_with(store, authenticator, shutdown, Default::default()).await
    }

    /// [`Self::start`] with a Service allocator other than the default ranges; also starts its
    /// repair loop.
    pub async fn start_with(
        store: Arc<dyn Storage>,
        authenticator: Box<dyn auth::Authenticator>,
        shutdown: CancellationToken,
        services: allocator::ServiceAllocator,
    ) -> Result<Arc<Self>, storage::StorageError> {
        namespaces::bootstrap(store.as_ref()).await?;
        tokio::spawn(allocator::run_repair(
            services,
            store.clone(),
            shutdown.clone(),
        ));
        if let Some(table) = authenticator.secret_tokens() {
            tokio::spawn(secret_tokens::run(store.clone(), table, shutdown.clone()));
        }
        let cache = Arc::new(namespaces::NamespaceCache::default());
        tokio::spawn(namespaces::run_finalizer(
            store.clone(),
            cache.clone(),
            shutdown.clone(),
        ));
        Ok(Arc::new(Self {
            store,
            authenticator,
            shutdown,
            namespaces: cache,
            services,
            kubelet_tls: std::sync::OnceLock::new(),
        }))
    }
}

/// Opens the store named by `spec`: `embedded` (default; a file under `data_dir`) or
/// `etcd://HOST:PORT[,HOST:PORT...][?prefix=/registry/]` (etcd v3; keys under the prefix).
pub async fn open_store(spec: &str, data_dir: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    match spec {
        "" | "embedded" => {
            let store = storage::embedded::EmbeddedStore::open(&data_dir.join("store")).await?;
            Ok(Arc::new(store))
        }
        etcd if etcd.starts_with("etcd://") => {
            Ok(Arc::new(storage::etcd::EtcdStore::open(etcd).await?))
        }
        other => anyhow::bail!(
            "unknown store {other:?}: expected \"embedded\" or etcd://HOST:PORT[,HOST:PORT...]"
        ),
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<ApiServer>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let shutdown = server.shutdown.clone();
    // Small request/response exchanges (watch events, status patches) must not wait for
    // Nagle's delayed-ACK round (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(server))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves the API over TLS on `listener` until `shutdown` is cancelled (open watches end then;
/// other requests get a few seconds to finish).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    server: Arc<ApiServer>,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let shutdown = server.shutdown.clone();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener.into_std()?)?
        .acceptor(acceptor)
        .handle(handle)
        .serve(app(server).into_make_service())
        .await
}

/// An apiserver on an ephemeral loopback port, for tests and benchmarks of the components that
/// talk to it. Stops when dropped.
pub struct LocalServer {
    pub addr: std::net::SocketAddr,
    pub server: Arc<ApiServer>,
}

impl LocalServer {
    /// Starts one over the store named by `spec` (see [`open_store`]) with data under `dir`.
    pub async fn start(spec: &str, dir: &Path) -> anyhow::Result<Self> {
        let store = open_store(spec, dir).await?;
        let server = ApiServer::start(
            store,
            Box::new(auth::InsecureAdmin),
            CancellationToken::new(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, server.clone()));
        Ok(Self { addr, server })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.server.shutdown.cancel();
    }
}
