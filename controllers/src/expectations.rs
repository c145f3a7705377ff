//! Controller expectations (upstream `ControllerExpectations`): after a controller creates or
//! deletes pods it expects to *see* those changes in its cache before it acts again, so a cache
//! that lags behind the apiserver never makes it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Expectations older than this are considered satisfied: a lost watch event must not block a
/// controller forever (upstream's `ExpectationsTimeout`).
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Expected {
    adds: i64,
    /// Names of pods whose deletion is still to be observed.
    deletes: HashSet<String>,
    since: Instant,
}

/// Per-controller-key expectations (key: `namespace/name` of the owner).
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Expected>) -> R) -> R {
        // A poisoned lock only means another reconcile panicked mid-update; the counters are
        // still usable (at worst an expectation times out).
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// True when everything expected for `key` has been observed (or has timed out).
    pub fn satisfied(&self, key: &str) -> bool {
        self.with(|m| match m.get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.since.elapsed() > TIMEOUT,
        })
    }

    /// Records that `count` creations are about to be issued for `key`.
    pub fn expect_creations(&self, key: &str, count: usize) {
        self.with(|m| {
            let e = m.entry(key.to_string()).or_insert_with(|| Expected {
                adds: 0,
                deletes: HashSet::new(),
                since: Instant::now(),
            });
            if e.adds <= 0 && e.deletes.is_empty() {
                e.since = Instant::now();
            }
            e.adds += i64::try_from(count).unwrap_or(i64::MAX);
        })
    }

    /// Records that the pods named in `names` are about to be deleted for `key`.
    pub fn expect_deletions(&self, key: &str, names: impl IntoIterator<Item = String>) {
        self.with(|m| {
            let e = m.entry(key.to_string()).or_insert_with(|| Expected {
                adds: 0,
                deletes: HashSet::new(),
                since: Instant::now(),
            });
            if e.adds <= 0 && e.deletes.is_empty() {
                e.since = Instant::now();
            }
            e.deletes.extend(names);
        })
    }

    /// A created pod showed up in the cache, or a creation failed and will never show up.
    pub fn creation_observed(&self, key: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.adds -= 1;
            }
        })
    }

    /// A pod's deletion showed up in the cache (gone, or marked with a deletionTimestamp), or the
    /// delete failed and will never show up.
    pub fn deletion_observed(&self, key: &str, name: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.deletes.remove(name);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_only_after_every_expected_change_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        e.expect_deletions("ns/rs", ["a".to_string()]);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "b");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "a");
        assert!(e.satisfied("ns/rs"));
        assert!(e.satisfied("ns/other"));
    }
}
