//! `wasmkube controller-manager`: the controllers alone, against the apiserver in a kubeconfig,
//! until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Flags of `wasmkube controller-manager`.
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig of the apiserver to reconcile against.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = crate::kubeconfig::client(&args.kubeconfig).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(wasmkube_controllers::run(
        client,
        wasmkube_controllers::ControllerConfig::default(),
        shutdown.clone(),
    ));
    println!(
        "wasmkube controller-manager: running against {}",
        args.kubeconfig.display()
    );
    crate::wait_for_signal().await?;
    tracing::info!("stopping");
    shutdown.cancel();
    task.await.context("controller-manager task")??;
    Ok(())
}
