//! `wasmkube scheduler`: the scheduler alone, against the apiserver in a kubeconfig, until
//! SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Flags of `wasmkube scheduler`.
#[derive(clap::Args, Clone, Debug)]
pub struct SchedulerArgs {
    /// Kubeconfig of the apiserver to schedule for.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// A KubeSchedulerConfiguration file (profiles, plugins, weights, leader election);
    /// upstream's defaults without one.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => wasmkube_scheduler::Config::from_file(path)?,
        None => wasmkube_scheduler::Config::default(),
    };
    let client = wasmkube_scheduler::client_from_kubeconfig(&args.kubeconfig).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(wasmkube_scheduler::run(client, config, shutdown.clone()));
    println!(
        "wasmkube scheduler: running against {}",
        args.kubeconfig.display()
    );
    crate::wait_for_signal().await?;
    tracing::info!("stopping");
    shutdown.cancel();
    task.await.context("scheduler task")??;
    Ok(())
}
