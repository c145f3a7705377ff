//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! a candidate takes the Lease when it is free or expired, the holder renews it every retry period,
//! and a holder that cannot renew within the renew deadline steps down.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::ControllerConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Campaigns for and renews one Lease.
#[derive(Clone)]
pub struct LeaseElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl LeaseElector {
    pub fn new(client: kube::Client, config: &ControllerConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.lease_namespace),
            namespace: config.lease_namespace.clone(),
            name: config.lease_name.clone(),
            identity: config.identity.clone(),
            lease_duration: config.lease_duration,
            renew_deadline: config.renew_deadline,
            retry_period: config.retry_period,
        }
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Waits until this process holds the Lease (`true`) or `shutdown` is cancelled (`false`).
    /// API errors are retried: an apiserver that is briefly away must not end the campaign.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<bool, Error> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(self.retry_period) => {}
            }
        }
    }

    /// Renews every retry period until `leading` is cancelled, and cancels it when no renewal
    /// succeeded within the renew deadline (someone else may hold the Lease by then).
    pub async fn keep_renewing(&self, leading: &CancellationToken) {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = leading.cancelled() => return,
                _ = tokio::time::sleep(self.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    tracing::warn!("leader Lease taken by another holder");
                    leading.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease failed"),
            }
            if last_renew.elapsed() > self.renew_deadline {
                tracing::warn!("could not renew the leader Lease within the renew deadline");
                leading.cancel();
                return;
            }
        }
    }

    /// Gives the Lease up so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(error = %e, "releasing the leader Lease failed");
        }
    }

    /// One step of the campaign: take or renew the Lease if it is ours, free or expired.
    /// Writes are compare-and-swap on resourceVersion, so two candidates never both win.
    async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.api_error(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !expired(spec, &now) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }
}

/// Whether the holder let the Lease lapse (no renewal within its duration).
fn expired(spec: &LeaseSpec, now: &MicroTime) -> bool {
    let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    match renew.0.checked_add(jiff::SignedDuration::from_secs(secs)) {
        Ok(until) => until < now.0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expires_after_its_duration() {
        let t0 = jiff::Timestamp::from_second(1_000).expect("valid");
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(t0)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        let at = |s| MicroTime(jiff::Timestamp::from_second(s).expect("valid"));
        assert!(!expired(&spec, &at(1_010)));
        assert!(expired(&spec, &at(1_016)));
        assert!(expired(&LeaseSpec::default(), &at(0)));
    }
}
