//! Resource quantities as the scheduler counts them: cpu in millicores, everything else in units
//! (bytes for memory and ephemeral storage), parsed from Kubernetes `Quantity` strings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// What a pod that requests nothing counts as when scoring, as upstream's `GetNonzeroRequests`:
/// without it, best-effort pods would all pile onto one node.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

pub use wasmkube_quantity::{parse_nano, QuantityError};

/// Millicores of a cpu quantity, rounded up.
pub fn milli_value(q: &Quantity) -> Result<i64, QuantityError> {
    wasmkube_quantity::milli(&q.0)
}

/// Whole units of a quantity (bytes for memory), rounded up.
pub fn value(q: &Quantity) -> Result<i64, QuantityError> {
    wasmkube_quantity::units(&q.0)
}

/// An amount of every resource the scheduler tracks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Extended resources (`example.com/gpu`) and hugepages, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a resource list (node allocatable or container requests); unreadable quantities
    /// count as zero and are reported once in `bad`.
    pub fn from_list(list: &BTreeMap<String, Quantity>, bad: &mut Vec<QuantityError>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list {
            let parsed = if name == CPU {
                milli_value(q)
            } else {
                value(q)
            };
            let v = match parsed {
                Ok(v) => v,
                Err(e) => {
                    bad.push(e);
                    continue;
                }
            };
            r.set(name, v);
        }
        r
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.pods,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    pub fn set(&mut self, name: &str, v: i64) {
        match name {
            CPU => self.milli_cpu = v,
            MEMORY => self.memory = v,
            EPHEMERAL_STORAGE => self.ephemeral_storage = v,
            PODS => self.pods = v,
            other => {
                self.scalar.insert(other.to_string(), v);
            }
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Each resource the larger of the two (for init containers, which run one at a time).
    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

fn container_requests(c: &Container, bad: &mut Vec<QuantityError>) -> Resources {
    let Some(res) = &c.resources else {
        return Resources::default();
    };
    // A container with limits but no requests requests its limits (apiserver defaulting does
    // this too, but objects written by other servers may not be defaulted).
    match (&res.requests, &res.limits) {
        (Some(req), Some(lim)) => {
            let mut merged = lim.clone();
            merged.extend(req.iter().map(|(k, v)| (k.clone(), v.clone())));
            Resources::from_list(&merged, bad)
        }
        (Some(req), None) => Resources::from_list(req, bad),
        (None, Some(lim)) => Resources::from_list(lim, bad),
        (None, None) => Resources::default(),
    }
}

/// A pod's effective request, as upstream's `PodRequests`: the sum of its containers (and
/// restartable init containers, which keep running), at least the largest init container, plus
/// the pod overhead.
pub fn pod_requests(pod: &Pod, bad: &mut Vec<QuantityError>) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c, bad));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, bad);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        sum.add(&Resources::from_list(overhead, bad));
    }
    sum.pods = 0;
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities_like_upstream() {
        let cases: &[(&str, i64, i64)] = &[
            // (quantity, milli value, value)
            ("1", 1000, 1),
            ("100m", 100, 1),
            ("0.5", 500, 1),
            ("1.5", 1500, 2),
            ("2k", 2_000_000, 2000),
            ("1Ki", 1_024_000, 1024),
            ("500Mi", 524_288_000_000, 524_288_000),
            ("32Gi", 34_359_738_368_000, 34_359_738_368),
            ("1e3", 1_000_000, 1000),
            ("1E3", 1_000_000, 1000),
            ("1n", 1, 1),
            ("0", 0, 0),
            ("+2", 2000, 2),
        ];
        for (s, milli, v) in cases {
            let q = Quantity(s.to_string());
            assert_eq!(milli_value(&q).unwrap(), *milli, "milli of {s}");
            assert_eq!(value(&q).unwrap(), *v, "value of {s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "abc", "1x", "1.2.3", "Mi", "1e"] {
            assert!(parse_nano(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn pod_requests_take_the_larger_of_containers_and_init_containers() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "200m"}}}
                ],
                "initContainers": [
                    {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
                ],
                "overhead": {"cpu": "10m"}
            }
        }))
        .unwrap();
        let mut bad = vec![];
        let r = pod_requests(&pod, &mut bad);
        assert!(bad.is_empty());
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 1 << 30);
    }
}
