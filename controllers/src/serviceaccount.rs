//! ServiceAccount controller: every active namespace has a `default` ServiceAccount.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::ControllerConfig;

/// The ServiceAccount each namespace gets.
pub const DEFAULT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("namespace {namespace}: creating the default serviceaccount: {source}")]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

pub struct Ctx {
    client: Client,
}

/// Runs the ServiceAccount controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let accounts = Api::<ServiceAccount>::all(client.clone());
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    // Deleting `default` brings it back.
    .watches(
        accounts,
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
        |sa| sa.namespace().map(|ns| ObjectRef::new(&ns)),
    )
    .with_config(Config::default().concurrency(config.concurrency))
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile, error_policy, Arc::new(Ctx { client }))
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "serviceaccount reconcile failed");
        }
    })
    .await;
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "serviceaccount");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            namespace: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(Action::await_change()),
        // Exists already (the usual case), or the namespace started terminating meanwhile.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(Action::await_change()),
        Err(source) => Err(Error::Create {
            namespace: name,
            source,
        }),
    }
}
