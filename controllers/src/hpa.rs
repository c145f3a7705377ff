//! Horizontal pod autoscaler (autoscaling/v2; v1 objects written by `kubectl autoscale` are
//! served as v2 by the apiserver): every sync period it reads the target's scale subresource and
//! the pods' resource usage, computes the replicas each Resource metric asks for (upstream's
//! ratio with a 10 % tolerance), stabilizes the recommendation over the behavior's windows,
//! limits the rate by its policies, clamps to min/max and writes the scale.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::podutil;
use crate::ControllerConfig;

/// Usage ratios this close to 1 do not scale (upstream `--horizontal-pod-autoscaler-tolerance`).
const TOLERANCE: f64 = 0.1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hpa {key}: {what}: {source}")]
    Api {
        key: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("hpa {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("reading pod metrics: {0}")]
    Metrics(String),
}

/// One pod's usage: CPU in millicores, memory in bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUsage {
    pub name: String,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// Where pod usage comes from: `metrics.k8s.io` in a cluster, a fake in tests.
pub trait MetricsSource: Send + Sync {
    /// Usage of the pods in `namespace` matching `selector` (a label selector string).
    fn pod_usage<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, Error>>;
}

/// The metrics source an HPA uses; `None` reads `metrics.k8s.io/v1beta1` through the client.
#[derive(Clone, Default)]
pub struct Metrics(pub Option<Arc<dyn MetricsSource>>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Metrics(custom)"
        } else {
            "Metrics(metrics.k8s.io)"
        })
    }
}

/// Reads `metrics.k8s.io/v1beta1` PodMetrics, as upstream's REST metrics client.
struct ApiMetrics(Client);

impl MetricsSource for ApiMetrics {
    fn pod_usage<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, Error>> {
        Box::pin(async move {
            let query = kube::core::params::ListParams::default().labels(selector);
            let mut url = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?");
            if let Some(sel) = &query.label_selector {
                url.push_str("labelSelector=");
                url.push_str(&url_escape(sel));
            }
            let req = http::Request::get(url)
                .body(Vec::new())
                .map_err(|e| Error::Metrics(e.to_string()))?;
            let list: serde_json::Value = self
                .0
                .request(req)
                .await
                .map_err(|e| Error::Metrics(e.to_string()))?;
            let mut out = Vec::new();
            for item in list["items"].as_array().into_iter().flatten() {
                let mut usage = PodUsage {
                    name: item["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    ..Default::default()
                };
                for c in item["containers"].as_array().into_iter().flatten() {
                    let get = |r: &str| c["usage"][r].as_str().and_then(quantity_milli);
                    usage.cpu_millis += get("cpu").unwrap_or(0);
                    usage.memory_bytes += get("memory").unwrap_or(0) / 1000;
                }
                out.push(usage);
            }
            Ok(out)
        })
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A quantity in thousandths of its unit ("250m" → 250, "1" → 1000, "64Mi" → 64·2²⁰·1000).
pub fn quantity_milli(q: &str) -> Option<i64> {
    // Rounded to the nearest thousandth (metrics report CPU in nanocores).
    let nano = wasmkube_quantity::parse_nano(q).ok()?;
    i64::try_from((nano + 500_000).div_euclid(1_000_000)).ok()
}

/// Per-HPA memory of recommendations and scale events (upstream keeps the same in memory).
#[derive(Default)]
struct History {
    recommendations: Vec<(jiff::Timestamp, i32)>,
    /// (when, replicas change) of the scalings this controller made.
    events: Vec<(jiff::Timestamp, i32)>,
}

pub struct Ctx {
    client: Client,
    metrics: Arc<dyn MetricsSource>,
    sync_period: Duration,
    history: Mutex<HashMap<String, History>>,
}

/// Runs the HPA controller until `stop` is cancelled.
pub async fn run(client: Client, config: ControllerConfig, stop: CancellationToken) {
    let metrics = config
        .metrics
        .0
        .clone()
        .unwrap_or_else(|| Arc::new(ApiMetrics(client.clone())));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        metrics,
        sync_period: config.hpa_sync_period,
        history: Mutex::new(HashMap::new()),
    });
    Controller::new(
        Api::<HorizontalPodAutoscaler>::all(client),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(config.concurrency))
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "hpa reconcile failed");
        }
    })
    .await;
}

fn error_policy(_hpa: Arc<HorizontalPodAutoscaler>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "hpa");
    Action::requeue(ctx.sync_period)
}

/// The scale subresource of the target: (current replicas, pod selector).
async fn read_scale(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<(i32, String)>, kube::Error> {
    let scale = match kind {
        "Deployment" => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await?
        }
        "ReplicaSet" => {
            Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await?
        }
        "StatefulSet" => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await?
        }
        _ => return Ok(None),
    };
    let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale.status.and_then(|s| s.selector).unwrap_or_default();
    Ok(Some((replicas, selector)))
}

async fn write_scale(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    replicas: i32,
) -> Result<(), kube::Error> {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let pp = PatchParams::default();
    match kind {
        "Deployment" => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?
        }
        "ReplicaSet" => {
            Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?
        }
        _ => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?
        }
    };
    Ok(())
}

fn pod_request_milli(pod: &Pod, resource: &str) -> Option<i64> {
    let mut total = 0;
    for c in pod.spec.as_ref()?.containers.iter() {
        let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
        total += quantity_milli(&q.0)?;
    }
    Some(total)
}

/// Replicas a Resource metric asks for (upstream `GetResourceReplicas`), and its status.
fn resource_replicas(
    resource: &str,
    target_utilization: Option<i32>,
    target_average_milli: Option<i64>,
    pods: &[Pod],
    usage: &HashMap<String, PodUsage>,
    current: i32,
) -> Result<(i32, MetricValueStatus), String> {
    let mut used = 0i64;
    let mut requested = 0i64;
    let mut counted = 0i64;
    for pod in pods {
        let Some(u) = usage.get(&pod.name_any()) else {
            continue; // no metrics yet (just started)
        };
        let value = if resource == "cpu" {
            u.cpu_millis
        } else {
            u.memory_bytes.saturating_mul(1000)
        };
        used += value;
        counted += 1;
        if target_utilization.is_some() {
            let Some(r) = pod_request_milli(pod, resource) else {
                return Err(format!(
                    "missing request for {resource} in pod {}",
                    pod.name_any()
                ));
            };
            requested += r;
        }
    }
    if counted == 0 {
        return Err(format!("no metrics returned for {resource}"));
    }
    let ratio_to_replicas = |ratio: f64| -> i32 {
        if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else {
            (ratio * counted as f64).ceil() as i32
        }
    };
    match (target_utilization, target_average_milli) {
        (Some(target), _) => {
            if requested == 0 {
                return Err(format!("zero {resource} requests"));
            }
            let utilization = (used * 100) / requested;
            let ratio = utilization as f64 / f64::from(target.max(1));
            Ok((
                ratio_to_replicas(ratio),
                MetricValueStatus {
                    average_utilization: Some(i32::try_from(utilization).unwrap_or(i32::MAX)),
                    average_value: Some(Quantity(format!("{}m", used / counted))),
                    value: None,
                },
            ))
        }
        (None, Some(target)) => {
            let average = used / counted;
            let ratio = average as f64 / target.max(1) as f64;
            Ok((
                ratio_to_replicas(ratio),
                MetricValueStatus {
                    average_value: Some(Quantity(format!("{average}m"))),
                    ..Default::default()
                },
            ))
        }
        (None, None) => Err(format!("{resource} metric has no target")),
    }
}

/// Default behavior (upstream): up at once by max(100 %, 4 pods) per 15 s; down after a 300 s
/// window by up to 100 % per 15 s.
fn rules(hpa: &HorizontalPodAutoscaler, up: bool) -> HPAScalingRules {
    let given = hpa
        .spec
        .as_ref()
        .and_then(|s| s.behavior.as_ref())
        .and_then(|b| {
            if up {
                b.scale_up.clone()
            } else {
                b.scale_down.clone()
            }
        });
    let policy = |type_: &str, value, period| HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: period,
    };
    let default = if up {
        HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Percent", 100, 15), policy("Pods", 4, 15)]),
            tolerance: None,
        }
    } else {
        HPAScalingRules {
            stabilization_window_seconds: Some(300),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy("Percent", 100, 15)]),
            tolerance: None,
        }
    };
    match given {
        None => default,
        Some(r) => HPAScalingRules {
            stabilization_window_seconds: r
                .stabilization_window_seconds
                .or(default.stabilization_window_seconds),
            select_policy: r.select_policy.or(default.select_policy),
            policies: r.policies.or(default.policies),
            tolerance: r.tolerance,
        },
    }
}

/// Upstream `normalizeDesiredReplicasWithBehaviors`: stabilize over the windows, then limit
/// the change by the rate policies.
fn with_behavior(
    hpa: &HorizontalPodAutoscaler,
    history: &mut History,
    current: i32,
    desired: i32,
    now: jiff::Timestamp,
) -> i32 {
    let up = rules(hpa, true);
    let down = rules(hpa, false);
    let window = |r: &HPAScalingRules| {
        jiff::SignedDuration::from_secs(i64::from(r.stabilization_window_seconds.unwrap_or(0)))
    };
    let (up_window, down_window) = (window(&up), window(&down));
    history.recommendations.push((now, desired));
    let keep = up_window.max(down_window);
    history.recommendations.retain(|(t, _)| *t >= now - keep);
    let mut up_rec = desired;
    let mut down_rec = desired;
    for (t, r) in &history.recommendations {
        if *t >= now - up_window {
            up_rec = up_rec.min(*r);
        }
        if *t >= now - down_window {
            down_rec = down_rec.max(*r);
        }
    }
    let mut stabilized = current;
    if stabilized < up_rec {
        stabilized = up_rec;
    }
    if stabilized > down_rec {
        stabilized = down_rec;
    }

    // Rate limits over the policies' periods, from the replicas at each period's start.
    let changed_within = |period: i32, sign: i32| -> i32 {
        let since = now - jiff::SignedDuration::from_secs(i64::from(period));
        history
            .events
            .iter()
            .filter(|(t, change)| *t > since && change.signum() == sign)
            .map(|(_, c)| c.abs())
            .sum()
    };
    if stabilized > current {
        let limits = up.policies.iter().flatten().map(|p| {
            let start = current - changed_within(p.period_seconds, 1);
            match p.type_.as_str() {
                "Pods" => start + p.value,
                _ => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
            }
        });
        let limit = match up.select_policy.as_deref() {
            Some("Disabled") => current,
            Some("Min") => limits.min().unwrap_or(i32::MAX),
            _ => limits.max().unwrap_or(i32::MAX),
        };
        stabilized.min(limit.max(current))
    } else if stabilized < current {
        let limits = down.policies.iter().flatten().map(|p| {
            let start = current + changed_within(p.period_seconds, -1);
            match p.type_.as_str() {
                "Pods" => start - p.value,
                _ => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)).ceil() as i32,
            }
        });
        let limit = match down.select_policy.as_deref() {
            Some("Disabled") => current,
            Some("Min") => limits.max().unwrap_or(i32::MIN),
            _ => limits.min().unwrap_or(i32::MIN),
        };
        stabilized.max(limit.min(current))
    } else {
        stabilized
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
    }
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = podutil::key(&hpa.metadata);
    let ns = hpa.namespace().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let api_err = |what: &str| {
        let key = key.clone();
        let what = what.to_string();
        move |source| Error::Api { key, what, source }
    };
    let old_status = hpa.status.clone().unwrap_or_default();
    let mut status = HorizontalPodAutoscalerStatus {
        observed_generation: hpa.metadata.generation,
        last_scale_time: old_status.last_scale_time.clone(),
        ..Default::default()
    };
    let mut conditions = Vec::new();

    let Some((current, selector)) = read_scale(&ctx.client, &ns, &target.kind, &target.name)
        .await
        .map_err(api_err("reading the target's scale"))?
    else {
        return Err(Error::Invalid {
            key,
            message: format!("unsupported scale target kind {}", target.kind),
        });
    };
    status.current_replicas = Some(current);
    status.desired_replicas = current;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;

    if current == 0 && min != 0 {
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
    } else {
        conditions.push(condition(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        ));
        let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let pods: Vec<Pod> = pods_api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_err("listing pods"))?
            .items
            .into_iter()
            .filter(podutil::is_active)
            .collect();
        let usage: HashMap<String, PodUsage> = ctx
            .metrics
            .pod_usage(&ns, &selector)
            .await?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        // Upstream's default when no metric is given: 80 % CPU.
        let metrics = spec.metrics.clone().unwrap_or_else(|| {
            serde_json::from_value(json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]))
            .unwrap_or_default()
        });
        let mut proposal: Option<i32> = None;
        let mut current_metrics = Vec::new();
        let mut failure = None;
        for m in &metrics {
            let Some(res) = m.resource.as_ref().filter(|_| m.type_ == "Resource") else {
                failure = Some(format!("metric type {} is not supported yet", m.type_));
                continue;
            };
            let average = res
                .target
                .average_value
                .as_ref()
                .and_then(|q| quantity_milli(&q.0));
            match resource_replicas(
                &res.name,
                res.target.average_utilization,
                average,
                &pods,
                &usage,
                current,
            ) {
                Ok((replicas, value)) => {
                    proposal = Some(proposal.map_or(replicas, |p| p.max(replicas)));
                    current_metrics.push(MetricStatus {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricStatus {
                            name: res.name.clone(),
                            current: value,
                        }),
                        ..Default::default()
                    });
                }
                Err(message) => failure = Some(message),
            }
        }
        status.current_metrics = (!current_metrics.is_empty()).then_some(current_metrics);
        match proposal {
            None => conditions.push(condition(
                "ScalingActive",
                false,
                "FailedGetResourceMetric",
                failure.as_deref().unwrap_or("no metrics"),
            )),
            Some(proposed) => {
                conditions.push(condition(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    "the HPA was able to successfully calculate a replica count",
                ));
                let now = jiff::Timestamp::now();
                let mut desired = {
                    let mut all = ctx.history.lock().unwrap_or_else(|p| p.into_inner());
                    let history = all.entry(key.clone()).or_default();
                    with_behavior(&hpa, history, current, proposed, now)
                };
                let limited = desired.clamp(min.min(max), max);
                if limited != desired {
                    conditions.push(condition(
                        "ScalingLimited",
                        true,
                        if desired > max {
                            "TooManyReplicas"
                        } else {
                            "TooFewReplicas"
                        },
                        "the desired replica count is outside the allowed range",
                    ));
                } else {
                    conditions.push(condition(
                        "ScalingLimited",
                        false,
                        "DesiredWithinRange",
                        "the desired count is within the acceptable range",
                    ));
                }
                desired = limited;
                if desired != current {
                    write_scale(&ctx.client, &ns, &target.kind, &target.name, desired)
                        .await
                        .map_err(api_err("scaling the target"))?;
                    tracing::info!(hpa = %key, from = current, to = desired, "scaled");
                    let mut all = ctx.history.lock().unwrap_or_else(|p| p.into_inner());
                    let history = all.entry(key.clone()).or_default();
                    history.events.push((now, desired - current));
                    history
                        .events
                        .retain(|(t, _)| *t >= now - jiff::SignedDuration::from_secs(1800));
                    status.last_scale_time = Some(Time(now));
                }
                status.desired_replicas = desired;
            }
        }
    }

    // Keep transition times of conditions whose status did not change.
    for c in conditions.iter_mut() {
        if let Some(old) = old_status
            .conditions
            .iter()
            .flatten()
            .find(|o| o.type_ == c.type_)
        {
            if old.status == c.status {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
    }
    status.conditions = Some(conditions);
    if status != old_status {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
        let body = serde_json::to_value(&status)
            .map_err(|e| api_err("encoding status")(kube::Error::SerdeError(e)))?;
        api.patch_status(
            &hpa.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": body})),
        )
        .await
        .map_err(api_err("updating status"))?;
    }
    Ok(Action::requeue(ctx.sync_period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_thousandths() {
        assert_eq!(quantity_milli("250m"), Some(250));
        assert_eq!(quantity_milli("2"), Some(2000));
        assert_eq!(quantity_milli("1Ki"), Some(1_024_000));
        assert_eq!(quantity_milli("0.5"), Some(500));
        assert_eq!(quantity_milli("1e3"), Some(1_000_000));
        assert_eq!(quantity_milli("163297185n"), Some(163));
        assert_eq!(quantity_milli("1500u"), Some(2));
        assert_eq!(quantity_milli("x"), None);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "spec": {"maxReplicas": 10, "scaleTargetRef": {"kind": "Deployment", "name": "d"},
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
        }))
        .expect("hpa");
        let mut h = History::default();
        let t = |s| jiff::Timestamp::from_second(s).expect("ts");
        // Up at once, bounded by max(100 %, +4) per 15 s.
        assert_eq!(with_behavior(&hpa, &mut h, 1, 8, t(1000)), 5);
        h.events.push((t(1000), 4));
        // Within the same 15 s period the limit still counts from the period's start (1).
        assert_eq!(with_behavior(&hpa, &mut h, 5, 8, t(1010)), 5);
        assert_eq!(with_behavior(&hpa, &mut h, 5, 8, t(1016)), 8);
        h.events.push((t(1016), 3));
        // Load gone: the window still remembers 8.
        assert_eq!(with_behavior(&hpa, &mut h, 8, 1, t(1030)), 8);
        assert_eq!(with_behavior(&hpa, &mut h, 8, 1, t(1080)), 1);
    }
}
