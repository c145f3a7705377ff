//! wasmkube controllers: the kube-controller-manager role.
//!
//! Each controller is a module with a `reconcile(obj, ctx) -> Result<Action, Error>` and an error
//! policy, driven by kube-runtime's [`Controller`](kube::runtime::Controller) (keyed, rate-limited
//! work queue). [`run`] runs them all while this process holds the leader Lease.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
mod expectations;
pub mod finalizers;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod leader;
pub mod localpath;
pub mod nodeipam;
pub mod nodelifecycle;
mod podutil;
pub mod protection;
pub mod pvbinder;
pub mod replicaset;
pub mod serviceaccount;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Settings shared by every controller; [`Default`] gives upstream's values.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// This process's name in the leader Lease (`holderIdentity`).
    pub identity: String,
    /// Whether to take the Lease before running; off runs the controllers at once.
    pub leader_election: bool,
    /// Namespace and name of the Lease (`kube-system/kube-controller-manager` upstream).
    pub lease_namespace: String,
    pub lease_name: String,
    /// How long a Lease stays valid without renewal (upstream 15 s).
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops its controllers (upstream 10 s).
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews (upstream 2 s).
    pub retry_period: Duration,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// Delay applied to every pod watch event before the controllers' caches see it. Zero in
    /// production; tests raise it to prove the controllers never over-create while their cache lags.
    pub pod_cache_lag: Duration,
    /// First delay before a Job replaces a failed pod; doubles per failure up to 6 minutes
    /// (upstream 10 s).
    pub job_backoff_base: Duration,
    /// A node whose kubelet was not heard of for this long becomes `Ready=Unknown` and tainted
    /// unreachable (upstream `--node-monitor-grace-period`, 40 s).
    pub node_monitor_grace_period: Duration,
    /// How often each HorizontalPodAutoscaler is evaluated (upstream 15 s).
    pub hpa_sync_period: Duration,
    /// Where the HPA reads pod usage; the default reads `metrics.k8s.io/v1beta1`.
    pub metrics: hpa::Metrics,
    /// `--cluster-cidr`: the pod CIDR node IPAM cuts `podCIDR`s from.
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: the prefix length of each Node's `podCIDR`.
    pub node_cidr_mask_size: u8,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "wasmkube".to_string());
        Self {
            identity: format!("{host}_{}", std::process::id()),
            leader_election: true,
            lease_namespace: "kube-system".to_string(),
            lease_name: "kube-controller-manager".to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            concurrency: 4,
            pod_cache_lag: Duration::ZERO,
            job_backoff_base: Duration::from_secs(10),
            node_monitor_grace_period: Duration::from_secs(40),
            hpa_sync_period: Duration::from_secs(15),
            metrics: hpa::Metrics::default(),
            cluster_cidr: nodeipam::DEFAULT_CLUSTER_CIDR.to_string(),
            node_cidr_mask_size: nodeipam::DEFAULT_NODE_CIDR_MASK,
        }
    }
}

/// Errors that stop [`run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: {0}")]
    Leader(#[from] leader::Error),
}

/// Runs every controller until `shutdown` is cancelled. With leader election on, the controllers
/// run only while this process holds the Lease; losing it stops them and the process campaigns
/// again, so two managers never reconcile at once.
pub async fn run(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !config.leader_election {
        run_controllers(client, config, shutdown).await;
        return Ok(());
    }
    let elector = leader::LeaseElector::new(client.clone(), &config);
    loop {
        if !elector.acquire(&shutdown).await? {
            return Ok(()); // shut down while waiting
        }
        tracing::info!(identity = %config.identity, "became leader; starting controllers");
        let leading = shutdown.child_token();
        let renewer = tokio::spawn({
            let elector = elector.clone();
            let leading = leading.clone();
            async move { elector.keep_renewing(&leading).await }
        });
        run_controllers(client.clone(), config.clone(), leading.clone()).await;
        leading.cancel();
        let _ = renewer.await;
        if shutdown.is_cancelled() {
            // Let a standby take over at once instead of waiting for the Lease to expire.
            elector.release().await;
            return Ok(());
        }
        tracing::warn!("lost the leader Lease; controllers stopped, campaigning again");
    }
}

/// Runs every controller until `stop` is cancelled.
async fn run_controllers(client: kube::Client, config: ControllerConfig, stop: CancellationToken) {
    tokio::join!(
        named(
            "replicaset",
            replicaset::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "deployment",
            deployment::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "garbage-collector",
            gc::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "job",
            job::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "cronjob",
            cronjob::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "endpoints",
            endpoints::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "serviceaccount",
            serviceaccount::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "node-lifecycle",
            nodelifecycle::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "node-ipam",
            nodeipam::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "horizontal-pod-autoscaler",
            hpa::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "daemonset",
            daemonset::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "local-path-provisioner",
            localpath::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "persistentvolume-binder",
            pvbinder::run(client.clone(), config.clone(), stop.clone())
        ),
        named(
            "pvc-protection/pv-protection",
            protection::run(client.clone(), config.clone(), stop.clone())
        ),
    );
}

/// Runs one controller, logging when it stops (a stuck shutdown then names its culprit).
async fn named(name: &'static str, controller: impl std::future::Future<Output = ()>) {
    tracing::debug!(controller = name, "starting");
    controller.await;
    tracing::debug!(controller = name, "stopped");
}
