//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection:
//! a candidate takes the Lease when it is free or expired (compare-and-swap on
//! resourceVersion), the leader renews it every `retryPeriod`, and gives up leading when it
//! could not renew within `renewDeadline`. On shutdown the leader releases it so a standby
//! takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

use crate::config::LeaderElection;

/// A Lease request that failed for a reason other than losing a race.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// One candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaderElection,
    pub identity: String,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaderElection, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.resource_namespace),
            cfg,
            identity,
        }
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.cfg.resource_namespace.clone(),
            name: self.cfg.resource_name.clone(),
            source,
        }
    }

    fn spec(&self, now: Timestamp, acquire: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquire)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the Lease: `Ok(true)` when we hold it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let name = &self.cfg.resource_name;
        let current = self.api.get_opt(name).await.map_err(|e| self.err(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.cfg.resource_namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let expires = spec
                .renew_time
                .as_ref()
                .map(|t| t.0 + SignedDuration::from_secs(duration));
            if expires.is_some_and(|e| e > now) {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquire = if ours {
            spec.acquire_time.map(|t| t.0).unwrap_or(now)
        } else {
            now
        };
        lease.spec = Some(self.spec(now, acquire, transitions));
        // replace carries the resourceVersion we read: a concurrent candidate's write wins
        // and ours gets 409.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Waits until we hold the Lease (`true`) or `shutdown` (`false`).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
    }

    /// Renews until `stop` is cancelled; cancels `lost` if a renewal does not succeed within
    /// `renewDeadline` (another candidate may take over after `leaseDuration`).
    pub async fn keep(&self, lost: CancellationToken, stop: CancellationToken) {
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            let attempt =
                tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_ok = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(identity = %self.identity, "leader election: lease taken by another candidate");
                    lost.cancel();
                    return;
                }
                Ok(Err(e)) => tracing::warn!("leader election: renewing: {e}"),
                Err(_) => tracing::warn!("leader election: renewing timed out"),
            }
            if last_ok.elapsed() > self.cfg.renew_deadline {
                tracing::warn!(identity = %self.identity, "leader election: could not renew within the deadline");
                lost.cancel();
                return;
            }
        }
    }

    /// Gives the Lease up (holder cleared, 1 s duration) if we still hold it.
    pub async fn release(&self) {
        let name = &self.cfg.resource_name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(e) = self.api.replace(name, &PostParams::default(), &lease).await {
            tracing::warn!("leader election: releasing: {e}");
        }
    }

    pub fn retry_period(&self) -> Duration {
        self.cfg.retry_period
    }
}
