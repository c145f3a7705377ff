//! Two schedulers on one apiserver: only the Lease holder binds, the other takes over when the
//! leader stops, every pod is bound exactly once and no node exceeds its allocatable.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use wasmkube_scheduler::resources::{milli_value, value};
use wasmkube_scheduler::Config;

use crate::{start_scheduler, wait_for, Cluster};

const NODES: usize = 22;
const PODS: usize = 2000;

fn ha_config(identity: &str) -> Config {
    let mut c = Config::default();
    c.leader_election.identity = Some(identity.into());
    c.leader_election.lease_duration = Duration::from_secs(3);
    c.leader_election.renew_deadline = Duration::from_secs(2);
    c.leader_election.retry_period = Duration::from_millis(200);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_bind_each_pod_once_without_overcommit() {
    let c = Cluster::start().await;
    // 22 nodes × 4 cpu = 88 cpu for 2,000 × 40m = 80 cpu: tight enough that double counting
    // or a stale cache would show as an overcommitted node.
    for i in 0..NODES {
        c.node(&format!("n{i}"), "4", "16Gi", json!({}), json!([]))
            .await;
    }
    let a = start_scheduler(&c.client, ha_config("a"));
    let b = start_scheduler(&c.client, ha_config("b"));
    let a_leads = wait_for("a leader", || async {
        match (
            a.stats.leading.load(Ordering::Relaxed),
            b.stats.leading.load(Ordering::Relaxed),
        ) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if a_leads { (a, b) } else { (b, a) };

    // Every change to every pod, from before the first create.
    let pods = c.pods();
    let rv = pods
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let history = tokio::spawn(async move {
        let mut nodes: HashMap<String, Vec<String>> = HashMap::new();
        let mut bound = 0;
        while bound < PODS {
            let Some(ev) = stream.try_next().await.expect("watch") else {
                break;
            };
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                let name = p.metadata.name.clone().unwrap_or_default();
                let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                let seen = nodes.entry(name).or_default();
                if !node.is_empty() && seen.last() != Some(&node) {
                    if seen.is_empty() {
                        bound += 1;
                    }
                    seen.push(node);
                }
            }
        }
        nodes
    });

    let template: Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "example/app:v1",
            "resources": {"requests": {"cpu": "40m", "memory": "64Mi"}}}]}
    }))
    .unwrap();
    let creator = {
        let pods = c.pods();
        tokio::spawn(async move {
            futures::stream::iter(0..PODS)
                .map(|i| {
                    let pods = pods.clone();
                    let mut p = template.clone();
                    p.metadata.name = Some(format!("p{i}"));
                    async move { pods.create(&PostParams::default(), &p).await.map(|_| ()) }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await
                .expect("create pods")
        })
    };

    // Part way through, the leader stops; the standby must take over and finish.
    let leader_stats = leader.stats.clone();
    wait_for("the leader to bind some pods", || async {
        (leader_stats.bound.load(Ordering::Relaxed) >= 300).then_some(())
    })
    .await;
    assert_eq!(
        standby.stats.scheduled.load(Ordering::Relaxed),
        0,
        "the standby scheduled while not leading"
    );
    leader.shutdown().await;
    creator.await.unwrap();
    let history = tokio::time::timeout(Duration::from_secs(60), history)
        .await
        .expect("all pods bound")
        .unwrap();

    assert_eq!(history.len(), PODS);
    for (pod, nodes) in &history {
        assert_eq!(
            nodes.len(),
            1,
            "pod {pod} was bound {} times: {nodes:?}",
            nodes.len()
        );
    }
    // The watch can show the last bindings before the standby's client has their responses:
    // stopping it waits for every binding in flight, so its count is final.
    let standby_stats = standby.stats.clone();
    standby.shutdown().await;
    let bound =
        leader_stats.bound.load(Ordering::Relaxed) + standby_stats.bound.load(Ordering::Relaxed);
    assert_eq!(
        bound as usize, PODS,
        "bindings accepted across both instances"
    );
    assert!(
        standby_stats.bound.load(Ordering::Relaxed) > 0,
        "the standby took over"
    );

    // No node over its allocatable, counted from the API.
    let mut cpu: HashMap<String, i64> = HashMap::new();
    let mut mem: HashMap<String, i64> = HashMap::new();
    let mut count: HashMap<String, i64> = HashMap::new();
    for p in c.pods().list(&ListParams::default()).await.unwrap().items {
        let spec = p.spec.unwrap();
        let node = spec.node_name.unwrap();
        for ctr in spec.containers {
            let req = ctr.resources.unwrap().requests.unwrap();
            *cpu.entry(node.clone()).or_default() += milli_value(&req["cpu"]).unwrap();
            *mem.entry(node.clone()).or_default() += value(&req["memory"]).unwrap();
        }
        *count.entry(node).or_default() += 1;
    }
    for (node, m) in &cpu {
        assert!(*m <= 4000, "{node} has {m}m cpu requested of 4000m");
        assert!(mem[node] <= 16 << 30);
        assert!(count[node] <= 110);
    }
}
