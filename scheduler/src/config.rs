//! Configuration: a file shaped like upstream's `KubeSchedulerConfiguration`
//! (`kubescheduler.config.k8s.io/v1`), every field optional, with upstream's defaults.
//!
//! ```yaml
//! apiVersion: kubescheduler.config.k8s.io/v1
//! kind: KubeSchedulerConfiguration
//! percentageOfNodesToScore: 0        # 0: adaptive (50% - nodes/125, at least 5% and 100 nodes)
//! podInitialBackoffSeconds: 1
//! podMaxBackoffSeconds: 10
//! leaderElection: {leaderElect: true, leaseDuration: 15s, renewDeadline: 10s, retryPeriod: 2s,
//!                  resourceNamespace: kube-system, resourceName: kube-scheduler}
//! profiles:
//! - schedulerName: default-scheduler
//!   plugins:
//!     multiPoint: {disabled: [{name: ImageLocality}]}
//!     score: {enabled: [{name: NodeResourcesBalancedAllocation, weight: 2}]}
//!   pluginConfig:
//!   - name: NodeResourcesFit
//!     args: {scoringStrategy: {type: MostAllocated}}
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The scheduler name pods get when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading scheduler config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing scheduler config {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("scheduler config: unsupported apiVersion/kind {0:?}: expected kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration")]
    Kind(String),
    #[error("scheduler config: {0}")]
    Invalid(String),
}

/// The scheduler's configuration. `Config::default()` is upstream's default profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    /// Percentage of nodes to look at for each pod once enough feasible ones are found;
    /// 0 is upstream's adaptive default, 100 looks at all.
    pub percentage_of_nodes_to_score: u32,
    /// Worker threads for filtering and scoring nodes (default: the machine's cores).
    pub parallelism: usize,
    pub pod_initial_backoff_seconds: u64,
    pub pod_max_backoff_seconds: u64,
    /// How long a pod may wait in the unschedulable set before being retried anyway.
    pub pod_max_in_unschedulable_pods_seconds: u64,
    /// Bindings written to the apiserver at once.
    pub bind_concurrency: usize,
    /// Write a `Scheduled` Event per bound pod, as upstream does (a wasmkube extension to turn
    /// it off: it is one more apiserver write per pod).
    pub scheduled_events: bool,
    pub leader_election: LeaderElection,
    pub profiles: Vec<Profile>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_version: None,
            kind: None,
            percentage_of_nodes_to_score: 0,
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            pod_initial_backoff_seconds: 1,
            pod_max_backoff_seconds: 10,
            pod_max_in_unschedulable_pods_seconds: 300,
            bind_concurrency: 64,
            scheduled_events: true,
            leader_election: LeaderElection::default(),
            profiles: vec![Profile::default()],
        }
    }
}

impl Config {
    /// Reads a `KubeSchedulerConfiguration` YAML (or JSON) file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: p, source },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let c: Config = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<inline>".into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(v) = &self.api_version {
            if !v.starts_with("kubescheduler.config.k8s.io/") {
                return Err(ConfigError::Kind(v.clone()));
            }
        }
        if let Some(k) = &self.kind {
            if k != "KubeSchedulerConfiguration" {
                return Err(ConfigError::Kind(k.clone()));
            }
        }
        if self.percentage_of_nodes_to_score > 100 {
            return Err(ConfigError::Invalid(format!(
                "percentageOfNodesToScore {} must be between 0 and 100",
                self.percentage_of_nodes_to_score
            )));
        }
        if self.profiles.is_empty() {
            return Err(ConfigError::Invalid("profiles must not be empty".into()));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.profiles {
            if !names.insert(&p.scheduler_name) {
                return Err(ConfigError::Invalid(format!(
                    "two profiles named {:?}",
                    p.scheduler_name
                )));
            }
        }
        if self.pod_initial_backoff_seconds == 0
            || self.pod_max_backoff_seconds < self.pod_initial_backoff_seconds
        {
            return Err(ConfigError::Invalid(
                "podInitialBackoffSeconds must be > 0 and <= podMaxBackoffSeconds".into(),
            ));
        }
        let le = &self.leader_election;
        if le.leader_elect
            && (le.renew_deadline >= le.lease_duration || le.retry_period >= le.renew_deadline)
        {
            return Err(ConfigError::Invalid(
                "leaderElection: need retryPeriod < renewDeadline < leaseDuration".into(),
            ));
        }
        Ok(())
    }

    pub fn initial_backoff(&self) -> Duration {
        Duration::from_secs(self.pod_initial_backoff_seconds)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.pod_max_backoff_seconds)
    }
}

/// Leader election through a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct LeaderElection {
    pub leader_elect: bool,
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub lease_duration: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub renew_deadline: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub retry_period: Duration,
    pub resource_namespace: String,
    pub resource_name: String,
    /// This instance's name in the Lease (default: hostname + a random suffix).
    pub identity: Option<String>,
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            leader_elect: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resource_namespace: "kube-system".into(),
            resource_name: "kube-scheduler".into(),
            identity: None,
        }
    }
}

/// One scheduler name and its plugins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Profile {
    pub scheduler_name: String,
    pub plugins: Plugins,
    pub plugin_config: Vec<PluginConfig>,
    /// Overrides the global percentage for this profile.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            plugins: Plugins::default(),
            plugin_config: Vec::new(),
            percentage_of_nodes_to_score: None,
        }
    }
}

/// Changes to the default plugins, per extension point.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Plugins {
    pub multi_point: PluginList,
    pub pre_filter: PluginList,
    pub filter: PluginList,
    pub pre_score: PluginList,
    pub score: PluginList,
    pub reserve: PluginList,
    pub pre_bind: PluginList,
    pub bind: PluginList,
}

/// Plugins to add and to remove (`*` removes all defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PluginList {
    pub enabled: Vec<PluginRef>,
    pub disabled: Vec<PluginRef>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PluginRef {
    pub name: String,
    pub weight: Option<i64>,
}

/// A plugin's arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PluginConfig {
    pub name: String,
    pub args: serde_json::Value,
}

/// Go-style durations: `15s`, `500ms`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("invalid duration {s:?} (e.g. 15s, 500ms)"))
    })
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_upstream_style_file() {
        let c = Config::from_yaml(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 100
leaderElection:
  leaderElect: false
  leaseDuration: 20s
profiles:
- schedulerName: wasm-scheduler
  plugins:
    multiPoint:
      disabled: [{name: ImageLocality}]
    score:
      enabled: [{name: NodeResourcesBalancedAllocation, weight: 2}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
"#,
        )
        .unwrap();
        assert_eq!(c.percentage_of_nodes_to_score, 100);
        assert!(!c.leader_election.leader_elect);
        assert_eq!(c.leader_election.lease_duration, Duration::from_secs(20));
        assert_eq!(c.leader_election.retry_period, Duration::from_secs(2));
        assert_eq!(c.profiles[0].scheduler_name, "wasm-scheduler");
        assert_eq!(
            c.profiles[0].plugins.multi_point.disabled[0].name,
            "ImageLocality"
        );
        assert_eq!(c.profiles[0].plugins.score.enabled[0].weight, Some(2));
        assert_eq!(c.pod_max_backoff_seconds, 10);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(matches!(
            Config::from_yaml("kind: Pod"),
            Err(ConfigError::Kind(_))
        ));
        assert!(Config::from_yaml("percentageOfNodesToScore: 101").is_err());
        assert!(Config::from_yaml("profiles: []").is_err());
        assert!(Config::from_yaml("leaderElection: {leaseDuration: soon}").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), None);
    }
}
