//! The scheduling queue: pods waiting for a node.
//!
//! - **active**: ready now, ordered by priority (high first), then by when they were queued;
//! - **backoff**: failed recently; wait `initial * 2^(attempts-1)`, at most `max`, then active;
//! - **unschedulable**: no node fits; moved back only by a cluster event that a plugin which
//!   rejected the pod registered for (or after `max_unschedulable`, as upstream's flush).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::EventMask;
use crate::info::{PodInfo, PodKey};

/// A queue operation on a pod the queue does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("pod {0} is not in flight")]
    NotInFlight(PodKey),
}

const LEFTOVER_FLUSH_PERIOD: Duration = Duration::from_secs(30);

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Active,
    Backoff,
    Unschedulable,
    /// Popped and being scheduled.
    InFlight,
}

/// A pod in the queue and its scheduling history.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    /// When it entered the active queue last (orders equal priorities).
    pub timestamp: Instant,
    /// When it was first queued (for latency figures).
    pub initial: Instant,
    pub attempts: u32,
    /// Plugins that rejected it in its last attempt.
    pub unschedulable_plugins: BTreeSet<&'static str>,
    location: Location,
    backoff_until: Instant,
    unschedulable_since: Instant,
    /// Bumped on every move so stale heap entries are skipped.
    generation: u64,
    /// The scheduling cycle it was popped in.
    cycle: u64,
}

#[derive(PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    timestamp: Instant,
    seq: u64,
    key: PodKey,
    generation: u64,
}

impl Ord for ActiveEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.timestamp.cmp(&self.timestamp))
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The three queues over one map of pods.
pub struct SchedulingQueue {
    pods: HashMap<PodKey, QueuedPod>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, PodKey, u64)>>,
    /// Keys of the pods in `Unschedulable`, so events and flushes need not scan every pod.
    unschedulable: std::collections::HashSet<PodKey>,
    last_leftover_flush: Option<Instant>,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_unschedulable: Duration,
    seq: u64,
    /// Incremented per pop.
    cycle: u64,
    /// The cycle when the last cluster event arrived: a pod that was in flight during it is
    /// retried with backoff instead of parked, because the event may have made it fit.
    move_request_cycle: u64,
}

impl SchedulingQueue {
    pub fn new(
        initial_backoff: Duration,
        max_backoff: Duration,
        max_unschedulable: Duration,
    ) -> Self {
        Self {
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: std::collections::HashSet::new(),
            last_leftover_flush: None,
            initial_backoff,
            max_backoff,
            max_unschedulable,
            seq: 0,
            cycle: 0,
            move_request_cycle: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn location(&self, key: &str) -> Option<Location> {
        self.pods.get(key).map(|p| p.location)
    }

    /// Counts per location: (active, backoff, unschedulable, in flight).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for p in self.pods.values() {
            match p.location {
                Location::Active => c.0 += 1,
                Location::Backoff => c.1 += 1,
                Location::Unschedulable => c.2 += 1,
                Location::InFlight => c.3 += 1,
            }
        }
        c
    }

    fn push_active(&mut self, key: &str, now: Instant) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        self.seq += 1;
        p.generation += 1;
        p.location = Location::Active;
        p.timestamp = now;
        self.active.push(ActiveEntry {
            priority: p.info.priority,
            timestamp: now,
            seq: self.seq,
            key: key.to_string(),
            generation: p.generation,
        });
    }

    fn push_backoff(&mut self, key: &str) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        self.seq += 1;
        p.generation += 1;
        p.location = Location::Backoff;
        self.backoff.push(Reverse((
            p.backoff_until,
            self.seq,
            key.to_string(),
            p.generation,
        )));
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff)
    }

    /// A new pending pod.
    pub fn add(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key.clone();
        if let Some(p) = self.pods.get_mut(&key) {
            p.info = info;
            return;
        }
        self.pods.insert(
            key.clone(),
            QueuedPod {
                info,
                timestamp: now,
                initial: now,
                attempts: 0,
                unschedulable_plugins: BTreeSet::new(),
                location: Location::Active,
                backoff_until: now,
                unschedulable_since: now,
                generation: 0,
                cycle: 0,
            },
        );
        self.push_active(&key, now);
    }

    /// A pending pod changed: the new spec may fit now, so an unschedulable pod is retried.
    pub fn update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key.clone();
        let Some(p) = self.pods.get_mut(&key) else {
            self.add(info, now);
            return;
        };
        let spec_changed = p.info.pod.spec != info.pod.spec || p.info.labels != info.labels;
        p.info = info;
        if p.location == Location::Unschedulable && spec_changed {
            if p.backoff_until > now {
                self.push_backoff(&key);
            } else {
                self.push_active(&key, now);
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        // Heap entries become stale and are skipped when popped.
        self.pods.remove(key);
        self.unschedulable.remove(key);
    }

    /// The next pod to schedule, if one is ready.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(e) = self.active.pop() {
            let Some(p) = self.pods.get_mut(&e.key) else {
                continue;
            };
            if p.generation != e.generation || p.location != Location::Active {
                continue;
            }
            self.cycle += 1;
            p.location = Location::InFlight;
            p.attempts += 1;
            p.cycle = self.cycle;
            return Some(p.clone());
        }
        None
    }

    /// The in-flight pod was assumed on a node: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self.location(key) == Some(Location::InFlight) {
            self.pods.remove(key);
        }
    }

    /// No node fit (`plugins` rejected it) or something failed (`plugins` empty): park it
    /// until an event helps, or back off when an event already arrived during its attempt.
    pub fn requeue(
        &mut self,
        key: &str,
        plugins: BTreeSet<&'static str>,
        error: bool,
        now: Instant,
    ) -> Result<(), QueueError> {
        let move_request_cycle = self.move_request_cycle;
        let backoff = {
            let Some(p) = self.pods.get(key) else {
                // Deleted while in flight, or re-added elsewhere: nothing to do.
                return Ok(());
            };
            if p.location != Location::InFlight {
                return Err(QueueError::NotInFlight(key.to_string()));
            }
            self.backoff_duration(p.attempts)
        };
        let Some(p) = self.pods.get_mut(key) else {
            return Ok(());
        };
        p.backoff_until = now + backoff;
        p.unschedulable_plugins = plugins;
        if error || move_request_cycle >= p.cycle {
            self.push_backoff(key);
        } else {
            p.generation += 1;
            p.location = Location::Unschedulable;
            p.unschedulable_since = now;
            self.unschedulable.insert(key.to_string());
        }
        Ok(())
    }

    /// A failed binding: back to the queue with backoff (the pod was popped and `done`).
    pub fn requeue_after_bind_failure(&mut self, qp: QueuedPod, now: Instant) {
        let key = qp.info.key.clone();
        let backoff = self.backoff_duration(qp.attempts);
        let mut qp = qp;
        qp.backoff_until = now + backoff;
        qp.location = Location::Backoff;
        self.pods.insert(key.clone(), qp);
        self.push_backoff(&key);
    }

    /// Backoff pods whose time is up become active; unschedulable pods parked too long are
    /// retried.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, _, key, generation))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            let current = self
                .pods
                .get(&key)
                .is_some_and(|p| p.generation == generation && p.location == Location::Backoff);
            if current {
                self.push_active(&key, now);
            }
        }
        // Upstream checks for leftovers every 30 s; so do we, at most.
        if self
            .last_leftover_flush
            .is_some_and(|t| now.saturating_duration_since(t) < LEFTOVER_FLUSH_PERIOD)
        {
            return;
        }
        self.last_leftover_flush = Some(now);
        let stale: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.pods.get(*k).is_some_and(|p| {
                    now.saturating_duration_since(p.unschedulable_since) >= self.max_unschedulable
                })
            })
            .cloned()
            .collect();
        for k in stale {
            self.move_one(&k, now);
        }
    }

    fn move_one(&mut self, key: &str, now: Instant) {
        let Some(p) = self.pods.get(key) else { return };
        if p.backoff_until > now {
            self.push_backoff(key);
        } else {
            self.push_active(key, now);
        }
    }

    /// A cluster event: unschedulable pods that `can_help(plugins, events)` says it may help
    /// move to backoff (if still backing off) or active.
    pub fn on_event(
        &mut self,
        events: EventMask,
        now: Instant,
        can_help: impl Fn(&PodInfo, &BTreeSet<&'static str>, EventMask) -> bool,
    ) {
        if events.is_empty() {
            return;
        }
        self.move_request_cycle = self.cycle;
        if self.unschedulable.is_empty() {
            return;
        }
        let movable: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.pods
                    .get(*k)
                    .is_some_and(|p| can_help(&p.info, &p.unschedulable_plugins, events))
            })
            .cloned()
            .collect();
        for k in movable {
            self.move_one(&k, now);
        }
    }

    /// Whether a pod is ready to pop (drops stale heap entries on the way).
    pub fn has_active(&mut self) -> bool {
        while let Some(e) = self.active.peek() {
            let valid = self
                .pods
                .get(&e.key)
                .is_some_and(|p| p.generation == e.generation && p.location == Location::Active);
            if valid {
                return true;
            }
            self.active.pop();
        }
        false
    }

    /// When the next backoff expires (for the loop's sleep).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, ..))| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::ClusterEvent;
    use crate::info::testing::pod;
    use serde_json::json;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(300),
        )
    }

    fn prio(name: &str, p: i32) -> Arc<PodInfo> {
        pod(name, json!({"priority": p}))
    }

    #[test]
    fn active_orders_by_priority_then_age() {
        let mut q = q();
        let t = Instant::now();
        q.add(prio("low-old", 0), t);
        q.add(prio("high", 10), t + Duration::from_millis(1));
        q.add(prio("low-new", 0), t + Duration::from_millis(2));
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop().map(|p| p.info.name.clone())).collect();
        assert_eq!(order, vec!["high", "low-old", "low-new"]);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut q = q();
        let t = Instant::now();
        q.add(prio("p", 0), t);
        let mut now = t;
        let mut waits = vec![];
        for _ in 0..6 {
            let p = q.pop().expect("ready");
            q.requeue(&p.info.key, BTreeSet::new(), true, now).unwrap();
            assert!(q.pop().is_none(), "backing off");
            let until = q.next_wakeup().unwrap();
            waits.push(until.duration_since(now).as_secs());
            q.flush(until - Duration::from_millis(1));
            assert!(q.pop().is_none(), "not before the backoff ends");
            now = until;
            q.flush(now);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
        assert!(q.pop().is_some());
    }

    #[test]
    fn unschedulable_pods_move_only_on_events_their_plugins_registered() {
        let mut q = q();
        let t = Instant::now();
        q.add(prio("p", 0), t);
        let p = q.pop().unwrap();
        q.requeue(&p.info.key, BTreeSet::from(["NodeResourcesFit"]), false, t)
            .unwrap();
        assert_eq!(q.location("default/p"), Some(Location::Unschedulable));
        let helps = |plugins: &BTreeSet<&'static str>, ev: EventMask| {
            plugins.contains("NodeResourcesFit") && ev.intersects(EventMask::node_or_pod_delete())
        };
        q.on_event(ClusterEvent::NodeLabelChange.into(), t, |_, pl, ev| {
            helps(pl, ev)
        });
        assert_eq!(q.location("default/p"), Some(Location::Unschedulable));
        let later = t + Duration::from_secs(2);
        q.on_event(ClusterEvent::NodeAdd.into(), later, |_, pl, ev| {
            helps(pl, ev)
        });
        assert_eq!(q.location("default/p"), Some(Location::Active));
        assert!(q.pop().is_some());
    }

    #[test]
    fn an_event_during_the_attempt_means_backoff_not_parking() {
        let mut q = q();
        let t = Instant::now();
        q.add(prio("p", 0), t);
        let p = q.pop().unwrap();
        q.on_event(ClusterEvent::NodeAdd.into(), t, |_, _, _| true);
        q.requeue(&p.info.key, BTreeSet::from(["NodeResourcesFit"]), false, t)
            .unwrap();
        assert_eq!(q.location("default/p"), Some(Location::Backoff));
    }

    #[test]
    fn parked_pods_are_retried_after_the_maximum_wait() {
        let mut q = q();
        let t = Instant::now();
        q.add(prio("p", 0), t);
        let p = q.pop().unwrap();
        q.requeue(&p.info.key, BTreeSet::from(["X"]), false, t)
            .unwrap();
        q.flush(t + Duration::from_secs(299));
        assert_eq!(q.location("default/p"), Some(Location::Unschedulable));
        q.flush(t + Duration::from_secs(329));
        assert_eq!(q.location("default/p"), Some(Location::Active));
    }

    #[test]
    fn deleted_pods_are_not_popped() {
        let mut q = q();
        let t = Instant::now();
        q.add(prio("a", 0), t);
        q.add(prio("b", 0), t);
        q.delete("default/a");
        assert_eq!(q.pop().unwrap().info.name, "b");
        assert!(q.pop().is_none());
    }
}
