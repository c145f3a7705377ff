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
    /// The pod CIDR node IPAM gives each Node a `podCIDR` block of.
    #[arg(long, default_value = wasmkube_controllers::nodeipam::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// The prefix length of each Node's `podCIDR`.
    #[arg(long, default_value_t = wasmkube_controllers::nodeipam::DEFAULT_NODE_CIDR_MASK)]
    pub node_cidr_mask_size: u8,
    /// A node whose kubelet is not heard of for this long becomes `Ready=Unknown` and tainted
    /// unreachable; its pods are evicted after their toleration.
    #[arg(long, default_value = "40s", value_parser = crate::parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = crate::kubeconfig::client(&args.kubeconfig).await?;
    let cluster: wasmkube_controllers::nodeipam::Cidr = args
        .cluster_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    wasmkube_controllers::nodeipam::RangeAllocator::new(cluster, args.node_cidr_mask_size)
        .map_err(|e| anyhow::anyhow!(e))?;
    let shutdown = CancellationToken::new();
    let config = wasmkube_controllers::ControllerConfig {
        cluster_cidr: args.cluster_cidr.clone(),
        node_cidr_mask_size: args.node_cidr_mask_size,
        node_monitor_grace_period: args.node_monitor_grace_period,
        ..Default::default()
    };
    let task = tokio::spawn(wasmkube_controllers::run(client, config, shutdown.clone()));
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
