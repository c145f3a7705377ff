//! wasmkube-scheduler: assigns pods to nodes, like kube-scheduler. Informers feed a cache of
//! node infos (counting assumed pods) and a scheduling queue; a framework of plugins
//! (filter, score, reserve, bind) picks each pod's node; bindings go through `pods/binding`;
//! a Lease makes one of several instances the leader.
//!
//! Entry points: [`run`] (the component) and [`bench`] (`wasmkube bench scheduler`).

pub mod bench;
pub mod cache;
pub mod config;
pub mod framework;
pub mod info;
pub mod informer;
pub mod labels;
pub mod leader;
pub mod plugins;
pub mod queue;
pub mod report;
pub mod resources;
pub mod scheduler;
pub mod volumes;

pub use bench::{bench, BenchReport};
pub use config::Config;
pub use scheduler::{Scheduler, SchedulerError as Error, Stats};

use std::path::Path;

use tokio_util::sync::CancellationToken;

/// A client for the apiserver a kubeconfig file points at (its current context). Installs
/// the ring crypto provider if none is (TLS needs one).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = |message: String| Error::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| err(e.to_string()))
}

/// Runs the scheduler against the apiserver behind `client` until `shutdown` is cancelled.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Scheduler::new(client, config)?.run(shutdown).await
}
