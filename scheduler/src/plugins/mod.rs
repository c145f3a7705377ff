//! The plugins, one file each with its `NAME`, its events and its table tests. Adding a
//! plugin touches its file, one `registry` line and (if on by default) `DEFAULT_PLUGINS`.

use std::sync::Arc;

use crate::framework::{Factory, FrameworkError, Plugin, PluginContext, Registry, MAX_NODE_SCORE};

pub mod balanced_allocation;
pub mod default_binder;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

/// Upstream's default multiPoint plugins in order, with score weights.
pub const DEFAULT_PLUGINS: &[(&str, Option<i64>)] = &[
    (node_unschedulable::NAME, None),
    (node_name::NAME, None),
    (taint_toleration::NAME, Some(3)),
    (node_affinity::NAME, Some(2)),
    (node_ports::NAME, None),
    (node_resources_fit::NAME, Some(1)),
    (volume_binding::NAME, None),
    (pod_topology_spread::NAME, Some(2)),
    (inter_pod_affinity::NAME, Some(2)),
    (balanced_allocation::NAME, Some(1)),
    (image_locality::NAME, Some(1)),
    (default_binder::NAME, None),
];

/// Every plugin by name.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    let entries: &[(&'static str, Factory)] = &[
        (node_unschedulable::NAME, node_unschedulable::new),
        (node_name::NAME, node_name::new),
        (taint_toleration::NAME, taint_toleration::new),
        (node_affinity::NAME, node_affinity::new),
        (node_ports::NAME, node_ports::new),
        (node_resources_fit::NAME, node_resources_fit::new),
        (pod_topology_spread::NAME, pod_topology_spread::new),
        (inter_pod_affinity::NAME, inter_pod_affinity::new),
        (balanced_allocation::NAME, balanced_allocation::new),
        (image_locality::NAME, image_locality::new),
        (volume_binding::NAME, volume_binding::new),
        (default_binder::NAME, default_binder::new),
    ];
    for (name, f) in entries {
        r.register(name, *f);
    }
    r
}

/// Reads a plugin's args into its typed form.
pub(crate) fn parse_args<T: serde::de::DeserializeOwned + Default>(
    name: &str,
    args: Option<&serde_json::Value>,
) -> Result<T, FrameworkError> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| FrameworkError::InvalidArgs {
            name: name.to_string(),
            message: e.to_string(),
        }),
    }
}

/// A plugin without args.
pub(crate) fn plain<P: Plugin + 'static>(
    p: P,
    _ctx: &PluginContext,
) -> Result<Arc<dyn Plugin>, FrameworkError> {
    Ok(Arc::new(p))
}

/// Upstream's `DefaultNormalizeScore`: scale to `0..=MAX_NODE_SCORE` by the highest score,
/// optionally reversed (fewer is better).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Running one plugin the way the framework does.
    use super::*;
    use crate::cache::Cache;
    use crate::framework::{CycleState, PreFilterOutcome, Rejection};
    use crate::info::{NodeInfo, PodInfo};

    /// PreFilter then Filter of one plugin for `pod` on every node in `cache`, in node order:
    /// `None` = fits, `Some(reasons)` otherwise.
    pub fn filter_all(p: &dyn Plugin, pod: &PodInfo, cache: &Cache) -> Vec<Result<(), Rejection>> {
        let mut state = CycleState::default();
        let mut restrict = None;
        if let Some(pf) = p.as_pre_filter() {
            match pf.pre_filter(&mut state, pod, cache) {
                Ok(PreFilterOutcome::Skip) => {
                    return cache.nodes().iter().map(|_| Ok(())).collect()
                }
                Ok(PreFilterOutcome::Nodes(n)) => restrict = Some(n),
                Ok(PreFilterOutcome::Continue) => {}
                Err(r) => return cache.nodes().iter().map(|_| Err(r.clone())).collect(),
            }
        }
        let f = p.as_filter().expect("filter plugin");
        cache
            .nodes()
            .iter()
            .map(|n| {
                if restrict.as_ref().is_some_and(|r| !r.contains(&n.name)) {
                    return Err(Rejection::unresolvable("not in prefilter result"));
                }
                f.filter(&state, pod, n)
            })
            .collect()
    }

    /// PreScore, Score and NormalizeScore of one plugin over every node in `cache`.
    pub fn score_all(p: &dyn Plugin, pod: &PodInfo, cache: &Cache) -> Vec<i64> {
        let mut state = CycleState::default();
        let nodes: Vec<&NodeInfo> = cache.nodes().iter().collect();
        if let Some(ps) = p.as_pre_score() {
            if !ps
                .pre_score(&mut state, pod, &nodes, cache)
                .expect("pre_score")
            {
                return vec![0; nodes.len()];
            }
        }
        let s = p.as_score().expect("score plugin");
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| s.score(&state, pod, n, cache).expect("score"))
            .collect();
        s.normalize(&state, pod, &mut scores);
        scores
    }

    /// A cache holding these nodes (in order) and these bound pods.
    pub fn cache_of(nodes: Vec<NodeInfo>, bound: Vec<(std::sync::Arc<PodInfo>, &str)>) -> Cache {
        let mut c = Cache::new();
        for n in nodes {
            let spec = n.spec.expect("spec");
            c.set_node(std::sync::Arc::try_unwrap(spec).expect("unique"));
        }
        for (p, node) in bound {
            c.assume(p, node).expect("assume");
        }
        c
    }
}
