//! DefaultBinder: writes the decision as a `pods/binding` subresource, which the apiserver
//! applies only to a pod that is still unbound (a second binding gets 409).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{Api, PostParams};

use crate::framework::{BindOutcome, BindPlugin, EventMask, FrameworkError, Plugin, PluginContext};
use crate::info::PodInfo;

pub const NAME: &str = "DefaultBinder";

pub struct DefaultBinder {
    client: Option<kube::Client>,
}

pub fn new(
    _args: Option<&serde_json::Value>,
    ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    Ok(Arc::new(DefaultBinder {
        client: ctx.client.clone(),
    }))
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events(&self) -> EventMask {
        EventMask::NONE
    }
    fn as_bind(self: Arc<Self>) -> Option<Arc<dyn BindPlugin>> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> BindOutcome {
        let Some(client) = &self.client else {
            return BindOutcome::Failed("no apiserver client configured".into());
        };
        let binding = Binding {
            metadata: kube::api::ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                // The UID makes the apiserver refuse to bind a recreated pod of the same name.
                uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        match api
            .create_subresource::<Binding, serde::de::IgnoredAny>(
                "binding",
                &pod.name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => BindOutcome::Bound,
            Err(e) => BindOutcome::Failed(e.to_string()),
        }
    }
}
