//! The one conformance suite every [`Storage`] backend passes unchanged.
//!
//! Each `pub async fn` is a test body taking a fresh, empty store. A backend instantiates all of
//! them with [`storage_conformance_tests!`](crate::storage_conformance_tests):
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     async fn make() -> std::sync::Arc<dyn crate::storage::Storage> { /* fresh store */ }
//!     crate::storage_conformance_tests!(make());
//! }
//! ```
//!
//! The bodies panic on failure (they are tests), and bound every wait on a watch with a timeout
//! so that a missing event fails the test instead of hanging it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{
    EventKind, KeyValue, ListOptions, ListResult, Result as StorageResult, Revision, Storage,
    StorageError, WatchEvent, WatchStream,
};

/// Expands to one `#[tokio::test(flavor = "multi_thread")]` per conformance body. `$make` is an
/// async expression (evaluated once per test) returning a fresh, empty `Arc<dyn Storage>`.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::storage_conformance_tests!(@tests $make;
            create_get_update_delete,
            revisions_strictly_increase,
            concurrent_cas_counter_loses_no_update,
            delete_preconditions,
            list_pagination_and_bounds,
            paginated_list_is_consistent_under_writes,
            list_at_old_revision_returns_old_snapshot,
            watch_from_old_revision_is_ordered_and_complete,
            watch_from_current_revision_sees_only_new_events,
            watch_under_concurrent_writes_has_no_gaps,
            compaction_fails_old_lists_and_watches,
            large_values,
            many_keys,
            prefix_isolation,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::storage::Storage> = $make.await;
                $crate::storage::conformance::$name(store).await;
            }
        )*
    };
}

/// Longest wait for an expected watch event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watch must stay quiet when no event is expected.
const QUIET: Duration = Duration::from_millis(200);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn opts(prefix: &str) -> ListOptions {
    ListOptions {
        prefix: prefix.to_string(),
        ..Default::default()
    }
}

async fn next_event(watch: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

async fn assert_quiet(watch: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, watch.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// A watch from a compacted revision fails either at once or with its first item (backends
/// such as etcd only learn it from the first response).
async fn assert_watch_compacted(store: &dyn Storage, prefix: &str, after: Revision) {
    match store.watch(prefix, after).await {
        Err(StorageError::Compacted { .. }) => {}
        Err(other) => panic!("watch after {after}: expected Compacted, got {other}"),
        Ok(mut watch) => match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
            Ok(Some(Err(StorageError::Compacted { .. }))) => {}
            other => panic!("watch after {after}: expected Compacted, got {other:?}"),
        },
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Runs `n` futures produced by `f(i)` with at most `concurrency` in flight.
async fn run_concurrently<F, Fut>(n: usize, concurrency: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, f)
        .await;
}

pub async fn create_get_update_delete(store: Arc<dyn Storage>) {
    // An empty store is at revision 0 for the embedded backend; other backends (etcd) may
    // start higher, so only "greater than the start" is required.
    let start = store.current_revision().await.expect("rev");
    assert_eq!(store.get("pods/ns/a").await.expect("get"), None);

    let created = store.create("pods/ns/a", b("v1")).await.expect("create");
    assert_eq!(created.key, "pods/ns/a");
    assert_eq!(created.value, b("v1"));
    assert!(created.create_revision > start);
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(
        store.get("pods/ns/a").await.expect("get"),
        Some(created.clone())
    );
    assert_eq!(
        store.current_revision().await.expect("rev"),
        created.mod_revision
    );

    assert_eq!(
        store.create("pods/ns/a", b("again")).await,
        Err(StorageError::AlreadyExists("pods/ns/a".into()))
    );
    assert_eq!(
        store
            .update("pods/ns/a", b("v2"), created.mod_revision + 100)
            .await,
        Err(StorageError::Conflict {
            key: "pods/ns/a".into(),
            expected: created.mod_revision + 100,
            actual: created.mod_revision,
        })
    );
    assert_eq!(
        store.update("pods/ns/missing", b("v"), 1).await,
        Err(StorageError::NotFound("pods/ns/missing".into()))
    );
    // Failed writes change nothing.
    assert_eq!(
        store.get("pods/ns/a").await.expect("get"),
        Some(created.clone())
    );
    assert_eq!(
        store.current_revision().await.expect("rev"),
        created.mod_revision
    );

    let updated = store
        .update("pods/ns/a", b("v2"), created.mod_revision)
        .await
        .expect("update");
    assert_eq!(updated.value, b("v2"));
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(
        store.get("pods/ns/a").await.expect("get"),
        Some(updated.clone())
    );
    // The old revision is now stale.
    assert!(matches!(
        store
            .update("pods/ns/a", b("v3"), created.mod_revision)
            .await,
        Err(StorageError::Conflict { .. })
    ));

    let deleted = store.delete("pods/ns/a", None).await.expect("delete");
    assert_eq!(deleted.key, "pods/ns/a");
    assert_eq!(deleted.value, b("v2"));
    assert_eq!(deleted.create_revision, created.create_revision);
    assert!(deleted.mod_revision > updated.mod_revision);
    assert_eq!(
        store.current_revision().await.expect("rev"),
        deleted.mod_revision
    );
    assert_eq!(store.get("pods/ns/a").await.expect("get"), None);
    assert_eq!(
        store.delete("pods/ns/a", None).await,
        Err(StorageError::NotFound("pods/ns/a".into()))
    );
    assert_eq!(
        store
            .update("pods/ns/a", b("v"), deleted.mod_revision)
            .await,
        Err(StorageError::NotFound("pods/ns/a".into()))
    );

    // A re-created key starts a new life.
    let again = store.create("pods/ns/a", b("v4")).await.expect("recreate");
    assert!(again.create_revision > deleted.mod_revision);
    assert_eq!(again.create_revision, again.mod_revision);
}

pub async fn revisions_strictly_increase(store: Arc<dyn Storage>) {
    let mut last = store.current_revision().await.expect("rev");
    for i in 0..20 {
        let key = format!("r/{}", i % 3);
        let kv = match store.get(&key).await.expect("get") {
            None => store.create(&key, b("x")).await.expect("create"),
            Some(_) if i % 5 == 0 => store.delete(&key, None).await.expect("delete"),
            Some(kv) => store
                .update(&key, b("y"), kv.mod_revision)
                .await
                .expect("update"),
        };
        assert!(kv.mod_revision > last, "{} after {last}", kv.mod_revision);
        last = kv.mod_revision;
        assert_eq!(store.current_revision().await.expect("rev"), last);
    }

    // Concurrent writes to different keys get distinct revisions.
    let before = store.current_revision().await.expect("rev");
    let revs = Arc::new(std::sync::Mutex::new(Vec::new()));
    run_concurrently(200, 32, |i| {
        let store = store.clone();
        let revs = revs.clone();
        async move {
            let kv = store
                .create(&format!("c/{i}"), b("v"))
                .await
                .expect("create");
            revs.lock().expect("lock").push(kv.mod_revision);
        }
    })
    .await;
    let mut revs = revs.lock().expect("lock").clone();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 200);
    assert!(revs[0] > before);
    assert_eq!(
        store.current_revision().await.expect("rev"),
        revs[revs.len() - 1]
    );
}

pub async fn concurrent_cas_counter_loses_no_update(store: Arc<dyn Storage>) {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 25;
    store.create("counter", b("0")).await.expect("create");
    let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    run_concurrently(TASKS, TASKS, |_| {
        let store = store.clone();
        let conflicts = conflicts.clone();
        async move {
            for _ in 0..INCREMENTS {
                loop {
                    let kv = store.get("counter").await.expect("get").expect("present");
                    let n: u64 = std::str::from_utf8(&kv.value)
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    match store
                        .update("counter", Bytes::from((n + 1).to_string()), kv.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(StorageError::Conflict { .. }) => {
                            conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(err) => panic!("update: {err}"),
                    }
                }
            }
        }
    })
    .await;
    let kv = store.get("counter").await.expect("get").expect("present");
    assert_eq!(kv.value, Bytes::from((TASKS * INCREMENTS).to_string()));
}

pub async fn delete_preconditions(store: Arc<dyn Storage>) {
    let kv = store.create("d/a", b("v")).await.expect("create");
    assert_eq!(
        store.delete("d/a", Some(kv.mod_revision + 1)).await,
        Err(StorageError::Conflict {
            key: "d/a".into(),
            expected: kv.mod_revision + 1,
            actual: kv.mod_revision,
        })
    );
    assert!(store.get("d/a").await.expect("get").is_some());
    let deleted = store
        .delete("d/a", Some(kv.mod_revision))
        .await
        .expect("delete");
    assert_eq!(deleted.value, b("v"));
    assert_eq!(
        store.delete("d/missing", Some(1)).await,
        Err(StorageError::NotFound("d/missing".into()))
    );

    // Racing preconditioned deletes: exactly one wins, the others see it gone.
    let kv = store.create("d/race", b("v")).await.expect("create");
    let wins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    run_concurrently(8, 8, |_| {
        let store = store.clone();
        let wins = wins.clone();
        async move {
            match store.delete("d/race", Some(kv.mod_revision)).await {
                Ok(_) => {
                    wins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(StorageError::NotFound(_)) => {}
                Err(err) => panic!("delete: {err}"),
            }
        }
    })
    .await;
    assert_eq!(wins.load(std::sync::atomic::Ordering::Relaxed), 1);
}

pub async fn list_pagination_and_bounds(store: Arc<dyn Storage>) {
    for name in ["b", "a", "d", "c", "e"] {
        store
            .create(&format!("l/{name}"), b(name))
            .await
            .expect("create");
    }
    store.create("l", b("bare prefix")).await.expect("create");
    store.create("m/a", b("after")).await.expect("create");
    let rev = store.current_revision().await.expect("rev");

    let all = store.list(opts("l/")).await.expect("list");
    assert_eq!(keys(&all.items), ["l/a", "l/b", "l/c", "l/d", "l/e"]);
    assert_eq!(all.items[2].value, b("c"));
    assert!(!all.more);
    assert_eq!(all.revision, rev);

    let zero = store
        .list(ListOptions {
            limit: Some(0),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert_eq!(zero.items.len(), 5);
    assert!(!zero.more);

    let page = store
        .list(ListOptions {
            limit: Some(2),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert_eq!(keys(&page.items), ["l/a", "l/b"]);
    assert!(page.more);
    let page = store
        .list(ListOptions {
            limit: Some(2),
            start_after: Some("l/b".into()),
            revision: Some(page.revision),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert_eq!(keys(&page.items), ["l/c", "l/d"]);
    assert!(page.more);
    let page = store
        .list(ListOptions {
            limit: Some(2),
            start_after: Some("l/d".into()),
            revision: Some(page.revision),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert_eq!(keys(&page.items), ["l/e"]);
    assert!(!page.more);

    // A limit equal to what is left reports no more.
    let exact = store
        .list(ListOptions {
            limit: Some(5),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert_eq!(exact.items.len(), 5);
    assert!(!exact.more);

    // start_after need not be a key; past the end gives nothing.
    let between = store
        .list(ListOptions {
            start_after: Some("l/bb".into()),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert_eq!(keys(&between.items), ["l/c", "l/d", "l/e"]);
    let past = store
        .list(ListOptions {
            start_after: Some("l/z".into()),
            ..opts("l/")
        })
        .await
        .expect("list");
    assert!(past.items.is_empty());
    assert!(!past.more);

    // An empty prefix lists everything.
    let everything = store.list(opts("")).await.expect("list");
    assert_eq!(everything.items.len(), 7);
}

pub async fn paginated_list_is_consistent_under_writes(store: Arc<dyn Storage>) {
    const N: usize = 200;
    run_concurrently(N, 32, |i| {
        let store = store.clone();
        async move {
            store
                .create(&format!("p/{i:04}"), Bytes::from(format!("v0-{i}")))
                .await
                .expect("create");
        }
    })
    .await;
    let snapshot = store.list(opts("p/")).await.expect("list");
    let expected: BTreeMap<String, Bytes> = snapshot
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(expected.len(), N);

    // A writer keeps updating, deleting and creating keys in the prefix while we page.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                let key = format!("p/{:04}", (i * 7) % N);
                match i % 3 {
                    0 => {
                        if let Some(kv) = store.get(&key).await.expect("get") {
                            let _ = store.update(&key, b("changed"), kv.mod_revision).await;
                        }
                    }
                    1 => {
                        let _ = store.delete(&key, None).await;
                    }
                    _ => {
                        let _ = store.create(&format!("p/{i:04}x"), b("new")).await;
                    }
                }
                i += 1;
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break i;
                }
            }
        })
    };

    let mut seen = BTreeMap::new();
    // Paging starts at the snapshot's revision: the writer may already have written by the
    // time the first page is asked for.
    let mut revision = Some(snapshot.revision);
    let mut start_after = None;
    loop {
        let page = store
            .list(ListOptions {
                prefix: "p/".into(),
                start_after: start_after.clone(),
                limit: Some(17),
                revision,
            })
            .await
            .expect("page");
        if let Some(r) = revision {
            assert_eq!(page.revision, r);
        }
        revision = Some(page.revision);
        assert!(page.items.len() <= 17);
        for kv in &page.items {
            assert!(seen.insert(kv.key.clone(), kv.value.clone()).is_none());
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
        // Let the writer make progress between pages.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(writes > 0);
    assert_eq!(seen, expected);
}

pub async fn list_at_old_revision_returns_old_snapshot(store: Arc<dyn Storage>) {
    let a = store.create("s/a", b("a1")).await.expect("create");
    store.create("s/b", b("b1")).await.expect("create");
    let r1 = store.current_revision().await.expect("rev");

    store
        .update("s/a", b("a2"), a.mod_revision)
        .await
        .expect("update");
    store.delete("s/b", None).await.expect("delete");
    store.create("s/c", b("c1")).await.expect("create");
    let r2 = store.current_revision().await.expect("rev");

    let old = store
        .list(ListOptions {
            revision: Some(r1),
            ..opts("s/")
        })
        .await
        .expect("old list");
    assert_eq!(old.revision, r1);
    let old: Vec<_> = old
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone()))
        .collect();
    assert_eq!(old, [("s/a", b("a1")), ("s/b", b("b1"))]);

    let now = store.list(opts("s/")).await.expect("list");
    assert_eq!(now.revision, r2);
    let now: Vec<_> = now
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone()))
        .collect();
    assert_eq!(now, [("s/a", b("a2")), ("s/c", b("c1"))]);

    // Before anything was written the prefix was empty; revisions in the items are the ones
    // current at the snapshot.
    let first = store
        .list(ListOptions {
            revision: Some(a.mod_revision),
            ..opts("s/")
        })
        .await
        .expect("first list");
    assert_eq!(first.items, vec![a.clone()]);
}

pub async fn watch_from_old_revision_is_ordered_and_complete(store: Arc<dyn Storage>) {
    store.create("w/before", b("x")).await.expect("create");
    let start = store.current_revision().await.expect("rev");

    let a1 = store.create("w/a", b("a1")).await.expect("create");
    store.create("other/a", b("o")).await.expect("create");
    let a2 = store
        .update("w/a", b("a2"), a1.mod_revision)
        .await
        .expect("update");
    let b1 = store.create("w/b", b("b1")).await.expect("create");
    let a_del = store
        .delete("w/a", Some(a2.mod_revision))
        .await
        .expect("delete");
    let before_del = store.delete("w/before", None).await.expect("delete");

    let mut watch = store.watch("w/", start).await.expect("watch");
    let e = next_event(&mut watch).await;
    assert_eq!((e.kind, &e.kv, &e.prev), (EventKind::Created, &a1, &None));
    let e = next_event(&mut watch).await;
    assert_eq!(
        (e.kind, &e.kv, &e.prev),
        (EventKind::Modified, &a2, &Some(a1.clone()))
    );
    let e = next_event(&mut watch).await;
    assert_eq!((e.kind, &e.kv, &e.prev), (EventKind::Created, &b1, &None));
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, EventKind::Deleted);
    assert_eq!(e.kv, a_del);
    assert_eq!(e.kv.value, b("a2"));
    assert_eq!(e.revision(), a_del.mod_revision);
    assert_eq!(e.prev, Some(a2.clone()));
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, EventKind::Deleted);
    assert_eq!(e.kv, before_del);
    assert_eq!(e.prev.as_ref().map(|p| p.value.clone()), Some(b("x")));

    // Then live events, after the replayed ones.
    let live = store.create("w/c", b("c1")).await.expect("create");
    let e = next_event(&mut watch).await;
    assert_eq!((e.kind, &e.kv), (EventKind::Created, &live));
    assert_quiet(&mut watch).await;
}

pub async fn watch_from_current_revision_sees_only_new_events(store: Arc<dyn Storage>) {
    for i in 0..5 {
        store
            .create(&format!("n/{i}"), b("old"))
            .await
            .expect("create");
    }
    let now = store.current_revision().await.expect("rev");
    let mut watch = store.watch("n/", now).await.expect("watch");
    assert_quiet(&mut watch).await;
    let kv = store.create("n/new", b("new")).await.expect("create");
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, EventKind::Created);
    assert_eq!(e.kv, kv);
    assert_quiet(&mut watch).await;
}

pub async fn watch_under_concurrent_writes_has_no_gaps(store: Arc<dyn Storage>) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 50;
    let start = store.current_revision().await.expect("rev");
    // One watcher from before the writes (replay + live), one started in the middle.
    let mut early = store.watch("g/", start).await.expect("watch");
    let writers = {
        let store = store.clone();
        tokio::spawn(async move {
            run_concurrently(WRITERS, WRITERS, |w| {
                let store = store.clone();
                async move {
                    for i in 0..PER_WRITER {
                        let key = format!("g/{w}");
                        if i == 0 {
                            store.create(&key, b("0")).await.expect("create");
                        } else {
                            let kv = store.get(&key).await.expect("get").expect("present");
                            store
                                .update(&key, Bytes::from(i.to_string()), kv.mod_revision)
                                .await
                                .expect("update");
                        }
                        // Unrelated writes interleave.
                        store
                            .create(&format!("h/{w}/{i}"), b("x"))
                            .await
                            .expect("create");
                    }
                }
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mid = store.current_revision().await.expect("rev");
    let mut late = store.watch("g/", mid).await.expect("watch");
    writers.await.expect("writers");

    let total = WRITERS * PER_WRITER;
    let mut last = start;
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..total {
        let e = next_event(&mut early).await;
        assert!(e.revision() > last, "out of order");
        last = e.revision();
        let n: u64 = std::str::from_utf8(&e.kv.value)
            .expect("utf8")
            .parse()
            .expect("number");
        let expected = per_key.entry(e.kv.key.clone()).or_insert(0);
        assert_eq!(n, *expected, "gap or duplicate on {}", e.kv.key);
        *expected += 1;
    }
    assert_quiet(&mut early).await;

    // The late watcher sees exactly the events after `mid`.
    let after_mid = total
        - store
            .list(ListOptions {
                revision: Some(mid),
                ..opts("g/")
            })
            .await
            .expect("list")
            .items
            .iter()
            .map(|kv| {
                std::str::from_utf8(&kv.value)
                    .expect("utf8")
                    .parse::<usize>()
                    .expect("number")
                    + 1
            })
            .sum::<usize>();
    let mut last = mid;
    for _ in 0..after_mid {
        let e = next_event(&mut late).await;
        assert!(e.revision() > last);
        last = e.revision();
    }
    assert_quiet(&mut late).await;
}

pub async fn compaction_fails_old_lists_and_watches(store: Arc<dyn Storage>) {
    let a = store.create("k/a", b("a1")).await.expect("create");
    let b_kv = store.create("k/b", b("b1")).await.expect("create");
    let a2 = store
        .update("k/a", b("a2"), a.mod_revision)
        .await
        .expect("update");
    let c = store.create("k/c", b("c1")).await.expect("create");
    store.delete("k/c", None).await.expect("delete");
    let compact_at = a2.mod_revision;
    let a3 = store
        .update("k/a", b("a3"), a2.mod_revision)
        .await
        .expect("update");

    store.compact(compact_at).await.expect("compact");
    // Compacting again (or an older revision) is harmless.
    store.compact(compact_at).await.expect("compact again");
    store.compact(1).await.expect("compact older");

    for old in [a.mod_revision, b_kv.mod_revision] {
        assert!(matches!(
            store
                .list(ListOptions {
                    revision: Some(old),
                    ..opts("k/")
                })
                .await,
            Err(StorageError::Compacted { .. })
        ));
    }
    assert_watch_compacted(&*store, "k/", compact_at - 1).await;
    assert_watch_compacted(&*store, "", 0).await;

    // The compaction revision itself is still readable, and watchable from.
    let at = store
        .list(ListOptions {
            revision: Some(compact_at),
            ..opts("k/")
        })
        .await
        .expect("list at compaction revision");
    assert_eq!(at.items, vec![a2.clone(), b_kv.clone()]);
    let mut watch = store.watch("k/", compact_at).await.expect("watch");
    let e = next_event(&mut watch).await;
    assert_eq!((e.kind, &e.kv), (EventKind::Created, &c));
    let e = next_event(&mut watch).await;
    assert_eq!(e.kind, EventKind::Deleted);
    let e = next_event(&mut watch).await;
    assert_eq!((e.kind, &e.kv), (EventKind::Modified, &a3));

    // Current values are all kept.
    assert_eq!(store.get("k/a").await.expect("get"), Some(a3.clone()));
    assert_eq!(store.get("k/b").await.expect("get"), Some(b_kv.clone()));
    assert_eq!(store.get("k/c").await.expect("get"), None);
    let now = store.list(opts("k/")).await.expect("list");
    assert_eq!(now.items, vec![a3, b_kv]);
}

pub async fn large_values(store: Arc<dyn Storage>) {
    let big: Bytes = (0..1_536 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let start = store.current_revision().await.expect("rev");
    let kv = store.create("big/a", big.clone()).await.expect("create");
    assert_eq!(kv.value.len(), big.len());
    let got = store.get("big/a").await.expect("get").expect("present");
    assert_eq!(got.value, big);
    let mut bigger = big.to_vec();
    bigger.reverse();
    let bigger = Bytes::from(bigger);
    let updated = store
        .update("big/a", bigger.clone(), kv.mod_revision)
        .await
        .expect("update");
    let list = store.list(opts("big/")).await.expect("list");
    assert_eq!(list.items, vec![updated.clone()]);
    let mut watch = store.watch("big/", start).await.expect("watch");
    let e = next_event(&mut watch).await;
    assert_eq!(e.kv.value, big);
    let e = next_event(&mut watch).await;
    assert_eq!(e.kv.value, bigger);
    assert_eq!(e.prev.map(|p| p.value), Some(big));
}

pub async fn many_keys(store: Arc<dyn Storage>) {
    const N: usize = 100_000;
    run_concurrently(N, 256, |i| {
        let store = store.clone();
        async move {
            store
                .create(
                    &format!("many/{:02}/{i:06}", i % 10),
                    Bytes::from(i.to_string()),
                )
                .await
                .expect("create");
        }
    })
    .await;
    assert!(store.current_revision().await.expect("rev") >= N as Revision);

    let mut count = 0;
    let mut start_after = None;
    let mut revision = None;
    let mut last_key = String::new();
    loop {
        let page = store
            .list(ListOptions {
                prefix: "many/".into(),
                start_after: start_after.clone(),
                limit: Some(10_000),
                revision,
            })
            .await
            .expect("page");
        revision = Some(page.revision);
        for kv in &page.items {
            assert!(kv.key > last_key, "not in key order");
            last_key.clone_from(&kv.key);
        }
        count += page.items.len();
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(count, N);

    let one = store.list(opts("many/07/")).await.expect("list");
    assert_eq!(one.items.len(), N / 10);
    let kv = store
        .get("many/03/012343")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(kv.value, b("12343"));
}

pub async fn prefix_isolation(store: Arc<dyn Storage>) {
    let start = store.current_revision().await.expect("rev");
    let mine = store
        .create("pods/default/a", b("1"))
        .await
        .expect("create");
    store
        .create("pods/default2/a", b("2"))
        .await
        .expect("create");
    store
        .create("pods/default2/b", b("3"))
        .await
        .expect("create");
    store.create("pods/defaul/x", b("4")).await.expect("create");
    store.create("pods/default", b("5")).await.expect("create");

    let list = store.list(opts("pods/default/")).await.expect("list");
    assert_eq!(list.items, vec![mine.clone()]);
    let list = store.list(opts("pods/default2/")).await.expect("list");
    assert_eq!(keys(&list.items), ["pods/default2/a", "pods/default2/b"]);
    let paged = store
        .list(ListOptions {
            limit: Some(1),
            ..opts("pods/default/")
        })
        .await
        .expect("list");
    assert_eq!(paged.items, vec![mine.clone()]);
    assert!(!paged.more);

    let mut watch = store.watch("pods/default/", start).await.expect("watch");
    let e = next_event(&mut watch).await;
    assert_eq!(e.kv, mine);
    store
        .create("pods/default2/c", b("6"))
        .await
        .expect("create");
    let del = store.delete("pods/default/a", None).await.expect("delete");
    let e = next_event(&mut watch).await;
    assert_eq!((e.kind, &e.kv), (EventKind::Deleted, &del));
    assert_quiet(&mut watch).await;
}

/// A store kept together with what must outlive it or hold it for a test (its temporary
/// directory, a lock on a shared server); the store is dropped first.
pub struct Held<S, G> {
    pub store: S,
    pub guard: G,
}

#[async_trait::async_trait]
impl<S: Storage, G: Send + Sync + 'static> Storage for Held<S, G> {
    async fn get(&self, key: &str) -> StorageResult<Option<KeyValue>> {
        self.store.get(key).await
    }
    async fn list(&self, opts: ListOptions) -> StorageResult<ListResult> {
        self.store.list(opts).await
    }
    async fn create(&self, key: &str, value: Bytes) -> StorageResult<KeyValue> {
        self.store.create(key, value).await
    }
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StorageResult<KeyValue> {
        self.store.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> StorageResult<KeyValue> {
        self.store.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> StorageResult<WatchStream> {
        self.store.watch(prefix, after).await
    }
    async fn current_revision(&self) -> StorageResult<Revision> {
        self.store.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> StorageResult<()> {
        self.store.compact(revision).await
    }
}
