//! The configMaps and secrets this node's pods use, kept current by one watch per object
//! (upstream's watch-based configMap/secret manager: a list+watch with
//! `fieldSelector=metadata.name=<name>`, which the node authorizer allows only for objects the
//! node's pods reference). A watch is shared by every pod that uses the object and stops when
//! the last of them is released, or once the object is `immutable`. Volumes re-project from
//! here and container env is resolved from here, so a node with thousands of pods makes no
//! periodic requests for them.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// How long a first read waits for its watch to list the object.
const FIRST_SYNC: Duration = Duration::from_secs(30);

/// What a watch knows of its object.
#[derive(Debug)]
enum State<K> {
    /// The first list has not answered yet.
    Syncing,
    /// The object as last seen (`None`: it does not exist).
    Synced(Option<Arc<K>>),
    /// The first list failed (the watch keeps retrying with backoff).
    Failed(String),
}

impl<K> Clone for State<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Syncing => Self::Syncing,
            Self::Synced(o) => Self::Synced(o.clone()),
            Self::Failed(e) => Self::Failed(e.clone()),
        }
    }
}

struct Entry<K> {
    /// The uids of the pods that use the object.
    users: HashSet<String>,
    state: watch::Receiver<State<K>>,
    task: tokio::task::AbortHandle,
}

/// Objects of one kind, each watched while a pod uses it.
pub struct ObjectCache<K> {
    client: Client,
    kind: &'static str,
    immutable: fn(&K) -> bool,
    entries: Mutex<HashMap<(String, String), Entry<K>>>,
}

impl<K> ObjectCache<K>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    /// A cache of `kind` (for messages) objects read through `client`.
    pub fn new(client: Client, kind: &'static str, immutable: fn(&K) -> bool) -> Self {
        Self {
            client,
            kind,
            immutable,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Object `name` in `namespace` (`None`: it does not exist), on behalf of pod `user`, which
    /// keeps it watched until [`Self::release`]. The first read of an object waits for its
    /// watch's first list; later reads answer from memory.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
        user: &str,
    ) -> Result<Option<Arc<K>>, String> {
        let mut state = {
            let mut entries = self.entries.lock().expect("object cache");
            let key = (namespace.to_string(), name.to_string());
            let entry = entries
                .entry(key)
                .or_insert_with(|| self.watch(namespace, name));
            entry.users.insert(user.to_string());
            entry.state.clone()
        };
        let kind = self.kind;
        let first =
            tokio::time::timeout(FIRST_SYNC, state.wait_for(|s| !matches!(s, State::Syncing)))
                .await;
        let current = match first {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => return Err(format!("{kind} {name:?}: its watch ended")),
            Err(_) => {
                return Err(format!(
                    "{kind} {name:?}: not listed within {}s",
                    FIRST_SYNC.as_secs()
                ))
            }
        };
        match current {
            State::Synced(o) => Ok(o),
            State::Failed(e) => Err(format!("{kind} {name:?}: {e}")),
            State::Syncing => unreachable!("waited for a state after Syncing"),
        }
    }

    /// Pod `user` no longer needs anything: watches nobody else uses stop.
    pub fn release(&self, user: &str) {
        let mut entries = self.entries.lock().expect("object cache");
        entries.retain(|_, e| {
            e.users.remove(user);
            if e.users.is_empty() {
                e.task.abort();
            }
            !e.users.is_empty()
        });
    }

    /// How many objects are watched (for tests and stats).
    pub fn watched(&self) -> usize {
        self.entries.lock().expect("object cache").len()
    }

    fn watch(&self, namespace: &str, name: &str) -> Entry<K> {
        let (tx, rx) = watch::channel(State::Syncing);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let immutable = self.immutable;
        let task = tokio::spawn(async move {
            let mut events = Box::pin(watcher::watcher(api, config).default_backoff());
            // The object as the current (re)list builds it.
            let mut listing: Option<Arc<K>> = None;
            while let Some(event) = events.next().await {
                let seen = match event {
                    Ok(Event::Init) => {
                        listing = None;
                        continue;
                    }
                    Ok(Event::InitApply(o)) => {
                        listing = Some(Arc::new(o));
                        continue;
                    }
                    Ok(Event::InitDone) => listing.take(),
                    Ok(Event::Apply(o)) => Some(Arc::new(o)),
                    Ok(Event::Delete(_)) => None,
                    Err(e) => {
                        // Keep what was seen (stale beats missing); only a first list that
                        // fails is reported.
                        tx.send_if_modified(|s| match s {
                            State::Syncing | State::Failed(_) => {
                                *s = State::Failed(e.to_string());
                                true
                            }
                            State::Synced(_) => false,
                        });
                        continue;
                    }
                };
                let done = seen.as_deref().is_some_and(immutable);
                tx.send_replace(State::Synced(seen));
                if done {
                    // An immutable object never changes: no watch needed (upstream stops too).
                    return;
                }
            }
        });
        Entry {
            users: HashSet::new(),
            state: rx,
            task: task.abort_handle(),
        }
    }
}

/// The configMaps and secrets of this node's pods.
pub struct Objects {
    pub config_maps: ObjectCache<ConfigMap>,
    pub secrets: ObjectCache<Secret>,
}

impl Objects {
    /// Caches reading through `client` (the node's credential).
    pub fn new(client: Client) -> Self {
        Self {
            config_maps: ObjectCache::new(client.clone(), "configmap", |c| {
                c.immutable == Some(true)
            }),
            secrets: ObjectCache::new(client, "secret", |s| s.immutable == Some(true)),
        }
    }

    /// Pod `user` has ended: stop watching what only it used.
    pub fn release(&self, user: &str) {
        self.config_maps.release(user);
        self.secrets.release(user);
    }
}
