//! The etcd v3 backend: the [`Storage`] trait over `etcd-client`, laid out like kube-apiserver's.
//!
//! - Keys live under a configurable prefix (default `/registry/`): `pods/ns/a` is stored as
//!   `/registry/pods/ns/a`. Several apiservers on one etcd with the same prefix serve one cluster.
//! - Revisions are etcd's: an object's `resourceVersion` is its etcd `mod_revision`, a list's is
//!   the header revision it was read at.
//! - `create` is a transaction on `create_revision == 0`; `update` and preconditioned `delete`
//!   are compare-and-swap transactions on `mod_revision` (plus `version > 0`, so that a CAS never
//!   creates a key); a failed comparison reads the key in the same transaction to tell
//!   `NotFound` from `Conflict`.
//! - Pages of one list are read at the revision of the first page (the apiserver keeps it in the
//!   continue token), so a paginated list is one snapshot even while writes happen.
//! - A watch `after` revision R asks etcd for events from R itself (`start_revision = R`) and
//!   drops those at R: etcd then reports `Compacted` exactly when R is older than its compaction
//!   revision, as the embedded store does (`after < compacted`). `watch(.., 0)` starts at 1.
//! - Every call is bounded by a timeout: when etcd is unreachable a caller gets
//!   `StorageError::Unavailable` (HTTP 503) within seconds, never a hang. The gRPC channel
//!   reconnects by itself; watch streams end with an error (the apiserver sends an `ERROR` event
//!   and closes, and clients resume from their last resourceVersion).
//! - A background task compacts like kube-apiserver: every 5 minutes it records the current
//!   revision in `compact_rev_key` (a transaction on the key's version, so that among several
//!   apiservers only one compacts per interval) and compacts to the revision recorded one
//!   interval earlier, but never within the last [`EtcdOptions::keep_revisions`] revisions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};

use crate::storage::bench::BenchResult;
use crate::storage::{
    EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Storage, StorageError,
    WatchEvent, WatchStream,
};

/// Default key prefix, as kube-apiserver's `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/registry/";
/// The key kube-apiserver uses to coordinate compaction between apiservers.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// gRPC messages can be large: a whole unpaged list, or watch events of 1.5 MiB objects with
/// their previous values (kube-apiserver allows `math.MaxInt32`).
const MAX_MESSAGE: usize = i32::MAX as usize;

/// How to reach etcd and lay out keys.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `host:port` or `http://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Prefix of every key (ends with `/` by convention).
    pub prefix: String,
    /// Bound on every request (and on establishing a watch): past it the call fails with
    /// `Unavailable`.
    pub request_timeout: Duration,
    /// Bound on one list request, which may read many keys.
    pub list_timeout: Duration,
    /// Bound on opening a TCP connection to a member.
    pub connect_timeout: Duration,
    /// Period of the automatic compaction; `None` disables it (explicit `compact` only).
    pub compaction_interval: Option<Duration>,
    /// The automatic compaction never drops the last this-many revisions.
    pub keep_revisions: u64,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["127.0.0.1:2379".into()],
            prefix: DEFAULT_PREFIX.into(),
            request_timeout: Duration::from_secs(4),
            list_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            compaction_interval: Some(Duration::from_secs(300)),
            keep_revisions: 1_000,
        }
    }
}

impl EtcdOptions {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...][?prefix=/registry/]`.
    pub fn from_spec(spec: &str) -> std::result::Result<Self, String> {
        let rest = spec
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{spec:?}: an etcd store is etcd://HOST:PORT[,HOST:PORT...]"))?;
        let (hosts, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let endpoints: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{spec:?}: no etcd endpoint"));
        }
        let mut options = EtcdOptions {
            endpoints,
            ..Default::default()
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("prefix", p)) if !p.is_empty() => options.prefix = p.to_string(),
                _ => {
                    return Err(format!(
                        "{spec:?}: unknown option {pair:?} (expected prefix=...)"
                    ))
                }
            }
        }
        Ok(options)
    }
}

/// The [`Storage`] implementation over etcd. Cheap to share; dropping it stops its compactor.
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    prefix: String,
    timeout: Duration,
    list_timeout: Duration,
    /// Highest compaction revision seen (by `compact` or a watch), to fill `Compacted` errors.
    compacted: Arc<AtomicU64>,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(task) = self.compactor.take() {
            task.abort();
        }
    }
}

fn unavailable(err: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("etcd: {err}"))
}

/// End of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix is empty): to the end of the keyspace.
    vec![0]
}

fn rev(r: i64) -> Revision {
    r.max(0) as Revision
}

/// Connects to etcd. The gRPC channel is lazy: an unreachable etcd shows up as `Unavailable`
/// from the first call, and the channel reconnects by itself when etcd is back.
async fn client(options: &EtcdOptions) -> Result<Client> {
    let connect = ConnectOptions::new()
        .with_connect_timeout(options.connect_timeout)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    tokio::time::timeout(
        options.request_timeout,
        Client::connect(&options.endpoints, Some(connect)),
    )
    .await
    .map_err(|_| unavailable("connecting timed out"))?
    .map_err(unavailable)
}

impl EtcdStore {
    /// Connects with `options` and starts the periodic compaction (if enabled).
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore> {
        let client = client(&options).await?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let watch = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let compacted = Arc::new(AtomicU64::new(0));
        let compactor = options.compaction_interval.map(|interval| {
            tokio::spawn(compact_periodically(
                kv.clone(),
                interval,
                options.keep_revisions,
                options.request_timeout,
                compacted.clone(),
            ))
        });
        Ok(EtcdStore {
            kv,
            watch,
            prefix: options.prefix,
            timeout: options.request_timeout,
            list_timeout: options.list_timeout.max(options.request_timeout),
            compacted,
            compactor,
        })
    }

    /// Connects to the store named by an `etcd://...` spec (see [`EtcdOptions::from_spec`]).
    pub async fn open(spec: &str) -> anyhow::Result<EtcdStore> {
        let options = EtcdOptions::from_spec(spec).map_err(anyhow::Error::msg)?;
        Ok(Self::connect(options).await?)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key under the prefix (for benchmarks and tests that share an etcd).
    pub async fn delete_all(&self) -> Result<()> {
        let start = self.prefix.as_bytes().to_vec();
        let end = prefix_end(&start);
        let mut kv = self.kv.clone();
        self.bounded(kv.delete(start, Some(DeleteOptions::new().with_range(end))))
            .await?;
        Ok(())
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// Runs one etcd call with the request timeout, mapping its errors.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(err)) => Err(self.map_error(err, 0)),
            Err(_) => Err(unavailable(format!(
                "request timed out after {:?}",
                self.timeout
            ))),
        }
    }

    fn map_error(&self, err: etcd_client::Error, requested: Revision) -> StorageError {
        let text = err.to_string();
        if text.contains("required revision has been compacted") {
            let compacted = self.compacted.load(Ordering::Relaxed).max(requested + 1);
            return StorageError::Compacted {
                requested,
                compacted,
            };
        }
        unavailable(text)
    }

    /// Our key for an etcd key (None if it is outside the prefix).
    fn strip<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key.strip_prefix(self.prefix.as_bytes())?).ok()
    }

    fn to_kv(&self, kv: etcd_client::KeyValue) -> Option<KeyValue> {
        let (create_revision, mod_revision) = (rev(kv.create_revision()), rev(kv.mod_revision()));
        let (key, value) = kv.into_key_value();
        Some(KeyValue {
            key: self.strip(&key)?.to_string(),
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        })
    }

    /// After a failed comparison whose else-branch read `key`: `NotFound` or `Conflict`.
    fn cas_failure(
        &self,
        key: &str,
        expected: Revision,
        resp: &etcd_client::TxnResponse,
    ) -> StorageError {
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| rev(kv.mod_revision())),
            _ => None,
        });
        match current {
            None => StorageError::NotFound(key.to_string()),
            Some(actual) => StorageError::Conflict {
                key: key.to_string(),
                expected,
                actual,
            },
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| rev(h.revision()))
        .ok_or_else(|| unavailable("response without header"))
}

#[async_trait::async_trait]
impl Storage for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv.clone();
        let mut resp = self.bounded(kv.get(self.full(key), None)).await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .and_then(|kv| self.to_kv(kv)))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let prefix = self.full(&opts.prefix);
        let start = match &opts.start_after {
            Some(after) if after.as_str() >= opts.prefix.as_str() => {
                let mut start = self.full(after);
                start.push(0);
                start
            }
            _ => prefix.clone(),
        };
        let mut get = GetOptions::new().with_range(prefix_end(&prefix));
        if let Some(limit) = opts.limit.filter(|&l| l > 0) {
            get = get.with_limit(limit.min(i64::MAX as usize) as i64);
        }
        if let Some(r) = opts.revision {
            get = get.with_revision(r.min(i64::MAX as u64) as i64);
        }
        let mut kv = self.kv.clone();
        let call = kv.get(start, Some(get));
        let mut resp = match tokio::time::timeout(self.list_timeout, call).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(err)) => return Err(self.map_error(err, opts.revision.unwrap_or(0))),
            Err(_) => return Err(unavailable("list timed out")),
        };
        let revision = match opts.revision {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        let more = resp.more();
        let items = resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| self.to_kv(kv))
            .collect();
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.to_vec(), None)]);
        let mut kv = self.kv.clone();
        let resp = self.bounded(kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(StorageError::AlreadyExists(key.to_string()));
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected as i64),
                Compare::version(full.clone(), CompareOp::Greater, 0),
            ])
            // Reading the key back (without its value) gives its create_revision, cheaper
            // than the previous value a `prev_kv` put would return.
            .and_then([
                TxnOp::put(full.clone(), value.to_vec(), None),
                TxnOp::get(full.clone(), Some(GetOptions::new().with_keys_only())),
            ])
            .or_else([TxnOp::get(full, Some(GetOptions::new().with_keys_only()))]);
        let mut kv = self.kv.clone();
        let resp = self.bounded(kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(self.cas_failure(key, expected, &resp));
        }
        let revision = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| rev(kv.create_revision())),
                _ => None,
            })
            .ok_or_else(|| unavailable("update: the key vanished within its transaction"))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let full = self.full(key);
        let mut kv = self.kv.clone();
        let (revision, prev) = match expected {
            None => {
                let resp = self
                    .bounded(kv.delete(full, Some(DeleteOptions::new().with_prev_key())))
                    .await?;
                (
                    header_revision(resp.header())?,
                    resp.prev_kvs().first().cloned(),
                )
            }
            Some(expected) => {
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(full.clone(), CompareOp::Equal, expected as i64),
                        Compare::version(full.clone(), CompareOp::Greater, 0),
                    ])
                    .and_then([TxnOp::delete(
                        full.clone(),
                        Some(DeleteOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::get(full, Some(GetOptions::new().with_keys_only()))]);
                let resp = self.bounded(kv.txn(txn)).await?;
                if !resp.succeeded() {
                    return Err(self.cas_failure(key, expected, &resp));
                }
                let prev = resp.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Delete(del) => del.prev_kvs().first().cloned(),
                    _ => None,
                });
                (header_revision(resp.header())?, prev)
            }
        };
        let prev = prev.ok_or_else(|| StorageError::NotFound(key.to_string()))?;
        let mut deleted = self
            .to_kv(prev)
            .ok_or_else(|| StorageError::NotFound(key.to_string()))?;
        deleted.mod_revision = revision;
        Ok(deleted)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let full = self.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(&full))
            .with_start_revision(after.clamp(1, i64::MAX as u64) as i64)
            .with_prev_key();
        let mut client = self.watch.clone();
        let setup = async {
            let mut stream = client.watch(full, Some(options)).await?;
            // The first response confirms the watch (or reports a compacted start).
            let first = stream.message().await?;
            Ok::<_, etcd_client::Error>((stream, first))
        };
        let (stream, first) = match tokio::time::timeout(self.timeout, setup).await {
            Ok(Ok(v)) => v,
            Ok(Err(err)) => return Err(self.map_error(err, after)),
            Err(_) => return Err(unavailable("starting a watch timed out")),
        };
        let mut watcher = Watcher {
            stream,
            prefix: self.prefix.clone(),
            after,
            ready: VecDeque::new(),
            compacted: self.compacted.clone(),
            done: false,
        };
        match first {
            None => return Err(unavailable("watch closed by etcd")),
            Some(resp) => watcher.absorb(resp)?,
        }
        let stream = futures::stream::unfold(watcher, |mut w| async move {
            w.next().await.map(|item| (item, w))
        });
        Ok(Box::pin(stream))
    }

    async fn current_revision(&self) -> Result<Revision> {
        // A linearizable count of one key reads nothing but returns the store's revision.
        let mut kv = self.kv.clone();
        let resp = self
            .bounded(kv.get(
                self.full(COMPACT_REV_KEY),
                Some(GetOptions::new().with_count_only()),
            ))
            .await?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.kv.clone();
        let call = kv.compact(revision.min(i64::MAX as u64) as i64, None);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => {
                self.compacted.fetch_max(revision, Ordering::Relaxed);
                Ok(())
            }
            // Compacting an already compacted revision is a no-op, as in the embedded store.
            Ok(Err(err))
                if err
                    .to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Ok(Err(err)) if err.to_string().contains("future revision") => {
                Err(StorageError::Unavailable(format!(
                    "cannot compact revision {revision}: it is newer than the current revision"
                )))
            }
            Ok(Err(err)) => Err(unavailable(err)),
            Err(_) => Err(unavailable("compaction timed out")),
        }
    }
}

/// One etcd watch, turned into our events.
struct Watcher {
    stream: etcd_client::WatchStream,
    prefix: String,
    /// Events at or before this revision are not delivered.
    after: Revision,
    ready: VecDeque<WatchEvent>,
    compacted: Arc<AtomicU64>,
    done: bool,
}

impl Watcher {
    /// Queues the events of one response; an error if it ends the watch.
    fn absorb(&mut self, resp: etcd_client::WatchResponse) -> Result<()> {
        if resp.compact_revision() != 0 {
            let compacted = rev(resp.compact_revision());
            self.compacted.fetch_max(compacted, Ordering::Relaxed);
            return Err(StorageError::Compacted {
                requested: self.after,
                compacted,
            });
        }
        if resp.canceled() {
            return Err(unavailable(format!(
                "watch canceled: {}",
                resp.cancel_reason()
            )));
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = rev(kv.mod_revision());
            if revision <= self.after {
                continue;
            }
            let Some(key) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(self.prefix.as_str()))
            else {
                continue;
            };
            let prev = event.prev_kv().map(|p| KeyValue {
                key: key.to_string(),
                value: Bytes::copy_from_slice(p.value()),
                create_revision: rev(p.create_revision()),
                mod_revision: rev(p.mod_revision()),
            });
            let out = match event.event_type() {
                EventType::Put => WatchEvent {
                    kind: if kv.version() == 1 {
                        EventKind::Created
                    } else {
                        EventKind::Modified
                    },
                    kv: KeyValue {
                        key: key.to_string(),
                        value: Bytes::copy_from_slice(kv.value()),
                        create_revision: rev(kv.create_revision()),
                        mod_revision: revision,
                    },
                    prev: if kv.version() == 1 { None } else { prev },
                },
                EventType::Delete => WatchEvent {
                    kind: EventKind::Deleted,
                    kv: KeyValue {
                        key: key.to_string(),
                        value: prev.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
                        create_revision: prev.as_ref().map_or(0, |p| p.create_revision),
                        mod_revision: revision,
                    },
                    prev,
                },
            };
            self.ready.push_back(out);
        }
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.after = event.revision();
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let result = match self.stream.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => Err(unavailable("watch closed by etcd")),
                Err(err) => Err(unavailable(err)),
            };
            if let Err(err) = result {
                self.done = true;
                self.ready.clear();
                return Some(Err(err));
            }
        }
    }
}

/// kube-apiserver's compactor: each interval, the apiserver that wins a transaction on
/// `compact_rev_key`'s version records the current revision there and compacts to the revision
/// recorded one interval before (so at least one interval of history is kept), also keeping the
/// last `keep` revisions.
async fn compact_periodically(
    kv: KvClient,
    interval: Duration,
    keep: u64,
    timeout: Duration,
    compacted: Arc<AtomicU64>,
) {
    let mut version = 0i64;
    let mut last_rev: Revision = 0;
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let mut client = kv.clone();
        let step = async {
            let txn = Txn::new()
                .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, version)])
                .and_then([TxnOp::put(COMPACT_REV_KEY, last_rev.to_string(), None)])
                .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
            let resp = client.txn(txn).await?;
            let current = resp.header().map_or(0, |h| rev(h.revision()));
            if !resp.succeeded() {
                // Another apiserver compacted this interval: follow its version.
                let theirs = resp.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                    _ => None,
                });
                return Ok::<_, etcd_client::Error>((theirs.unwrap_or(0), current, None));
            }
            // The put above bumped the version; compact what was recorded last interval.
            let target = last_rev.min(current.saturating_sub(keep));
            if target > 1 {
                if let Err(err) = client.compact(target as i64, None).await {
                    if !err
                        .to_string()
                        .contains("required revision has been compacted")
                    {
                        return Err(err);
                    }
                }
                return Ok((version + 1, current, Some(target)));
            }
            Ok((version + 1, current, None))
        };
        match tokio::time::timeout(timeout, step).await {
            Ok(Ok((v, current, done))) => {
                version = v;
                last_rev = current;
                if let Some(target) = done {
                    compacted.fetch_max(target, Ordering::Relaxed);
                    tracing::info!(revision = target, "etcd: compacted");
                }
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "etcd: compaction failed"),
            Err(_) => tracing::warn!("etcd: compaction timed out"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw-etcd benchmark.

/// What [`bench_raw_puts`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawWrite {
    /// A plain `Put`.
    Put,
    /// A `Txn` that puts only if the key does not exist (`create_revision == 0`): the write
    /// that [`EtcdStore::create`] (and kube-apiserver) sends.
    CreateTxn,
}

/// `total` etcd writes of distinct keys with values of `value_size` bytes from `concurrency`
/// tasks, straight through `etcd-client`: the baselines of `wasmkube bench apiserver --store
/// etcd://...`. The keys are deleted afterwards.
pub async fn bench_raw_puts(
    options: &EtcdOptions,
    concurrency: usize,
    total: usize,
    value_size: usize,
    write: RawWrite,
) -> Result<BenchResult> {
    let client = client(options).await?;
    let kv = client.kv_client();
    let prefix = format!(
        "{}bench-raw/{}/",
        options.prefix,
        uuid::Uuid::new_v4().simple()
    );
    let value = vec![b'x'; value_size];
    let timeout = options.request_timeout;
    let load_prefix = prefix.clone();
    let result = super::bench::run_load(concurrency, total, move |i| {
        let (mut kv, value) = (kv.clone(), value.clone());
        let key = format!("{load_prefix}{i:010}");
        async move {
            match write {
                RawWrite::Put => {
                    let put = kv.put(key, value, None);
                    matches!(tokio::time::timeout(timeout, put).await, Ok(Ok(_)))
                }
                RawWrite::CreateTxn => {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, value, None)]);
                    matches!(
                        tokio::time::timeout(timeout, kv.txn(txn)).await,
                        Ok(Ok(resp)) if resp.succeeded()
                    )
                }
            }
        }
    })
    .await;
    let mut cleanup = client.kv_client();
    let _ = tokio::time::timeout(
        timeout,
        cleanup.delete(
            prefix.clone(),
            Some(DeleteOptions::new().with_range(prefix_end(prefix.as_bytes()))),
        ),
    )
    .await;
    Ok(result)
}

/// The etcd endpoint tests use: `WASMKUBE_TEST_ETCD` (scripts/test starts etcd and sets it).
/// Without it a test is skipped with a printed reason, except under CI (`CI` set), where the
/// etcd tests must run: there it panics.
#[doc(hidden)]
pub fn test_endpoint(test: &str) -> Option<String> {
    match std::env::var("WASMKUBE_TEST_ETCD") {
        Ok(endpoint) if !endpoint.trim().is_empty() => Some(endpoint.trim().to_string()),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{test}: WASMKUBE_TEST_ETCD is not set but CI is: the etcd tests must run in CI \
             (scripts/test starts etcd and sets it)"
        ),
        _ => {
            eprintln!(
                "skipping {test}: WASMKUBE_TEST_ETCD is not set (scripts/test starts etcd and sets it)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Instant;

    #[test]
    fn parses_specs() {
        let o = EtcdOptions::from_spec("etcd://127.0.0.1:2379").expect("spec");
        assert_eq!(o.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(o.prefix, DEFAULT_PREFIX);
        let o = EtcdOptions::from_spec("etcd://a:1,b:2/?prefix=/other/").expect("spec");
        assert_eq!(o.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(o.prefix, "/other/");
        assert!(EtcdOptions::from_spec("etcd://").is_err());
        assert!(EtcdOptions::from_spec("etcd://a:1?x=y").is_err());
        assert!(EtcdOptions::from_spec("embedded").is_err());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
    }

    /// etcd has one revision counter and one compaction for all prefixes, and the suite checks
    /// exact revisions and compacts: tests on the shared etcd run one at a time, each under a
    /// fresh prefix. The store holds the lock until the test drops it.
    type TestStore = crate::storage::conformance::Held<EtcdStore, tokio::sync::OwnedMutexGuard<()>>;

    fn turn() -> Arc<tokio::sync::Mutex<()>> {
        static TURN: std::sync::OnceLock<Arc<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
        TURN.get_or_init(Default::default).clone()
    }

    fn test_options(endpoint: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![endpoint.to_string()],
            prefix: format!("/wasmkube-test/{}/", uuid::Uuid::new_v4().simple()),
            compaction_interval: None,
            ..Default::default()
        }
    }

    async fn test_store(test: &str) -> Option<TestStore> {
        let endpoint = test_endpoint(test)?;
        let turn = turn().lock_owned().await;
        let store = EtcdStore::connect(test_options(&endpoint))
            .await
            .expect("connect to etcd");
        Some(TestStore { store, guard: turn })
    }

    async fn conformance_store() -> Option<Arc<dyn Storage>> {
        let store = test_store("etcd conformance").await?;
        Some(Arc::new(store))
    }

    // The same suite as the embedded store's; without etcd (and outside CI) each test returns
    // early after printing why.
    crate::storage_conformance_tests!({
        let Some(store) = conformance_store().await else {
            return;
        };
        std::future::ready(store)
    });

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn unreachable_etcd_fails_fast_with_unavailable() {
        // Nothing listens on port 1: every call must fail within the timeout, not hang.
        let store = EtcdStore::connect(EtcdOptions {
            endpoints: vec!["http://127.0.0.1:1".into()],
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            compaction_interval: None,
            ..Default::default()
        })
        .await
        .expect("the channel is lazy");
        let started = Instant::now();
        assert!(matches!(
            store.get("a").await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.create("a", b("v")).await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.list(ListOptions::default()).await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.watch("", 0).await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.current_revision().await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn silent_etcd_times_out_with_unavailable() {
        // A socket that accepts connections but never answers (a hung or partitioned member):
        // only the timeouts can end the calls.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let store = EtcdStore::connect(EtcdOptions {
            endpoints: vec![format!("http://{}", silent.local_addr().expect("addr"))],
            request_timeout: Duration::from_millis(500),
            list_timeout: Duration::from_millis(500),
            compaction_interval: None,
            ..Default::default()
        })
        .await
        .expect("the channel is lazy");
        let started = Instant::now();
        assert!(matches!(
            store.get("a").await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.update("a", b("v"), 3).await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.list(ListOptions::default()).await,
            Err(StorageError::Unavailable(_))
        ));
        assert!(matches!(
            store.watch("", 0).await,
            Err(StorageError::Unavailable(_))
        ));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1_500) && elapsed < Duration::from_secs(6),
            "{elapsed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_stores_on_one_prefix_are_one_store() {
        let Some(one) = test_store("etcd two_stores_on_one_prefix_are_one_store").await else {
            return;
        };
        let endpoint = test_endpoint("etcd").expect("endpoint");
        let two = EtcdStore::connect(EtcdOptions {
            prefix: one.store.prefix().to_string(),
            ..test_options(&endpoint)
        })
        .await
        .expect("connect");
        let start = one.current_revision().await.expect("rev");
        let mut watch = two.watch("x/", start).await.expect("watch");
        let kv = one.create("x/a", b("1")).await.expect("create");
        let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("event in time")
            .expect("event")
            .expect("ok");
        assert_eq!((e.kind, &e.kv), (EventKind::Created, &kv));
        assert_eq!(two.get("x/a").await.expect("get"), Some(kv.clone()));
        assert!(matches!(
            two.update("x/a", b("2"), kv.mod_revision + 1).await,
            Err(StorageError::Conflict { .. })
        ));
        let updated = two
            .update("x/a", b("2"), kv.mod_revision)
            .await
            .expect("update");
        assert_eq!(one.get("x/a").await.expect("get"), Some(updated));
        // A third store under another prefix sees none of it.
        let other = EtcdStore::connect(test_options(&endpoint))
            .await
            .expect("connect");
        assert_eq!(other.get("x/a").await.expect("get"), None);
        assert!(other
            .list(ListOptions::default())
            .await
            .expect("list")
            .items
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn periodic_compaction_keeps_recent_history() {
        let Some(held) = test_store("etcd periodic_compaction_keeps_recent_history").await else {
            return;
        };
        let endpoint = test_endpoint("etcd").expect("endpoint");
        let store = EtcdStore::connect(EtcdOptions {
            prefix: held.store.prefix().to_string(),
            compaction_interval: Some(Duration::from_millis(300)),
            keep_revisions: 5,
            ..test_options(&endpoint)
        })
        .await
        .expect("connect");
        let first = store.create("c/a", b("0")).await.expect("create");
        let mut last = first.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            last = store
                .update("c/a", b("n"), last.mod_revision)
                .await
                .expect("update");
            let old = store
                .list(ListOptions {
                    prefix: "c/".into(),
                    revision: Some(first.mod_revision),
                    ..Default::default()
                })
                .await;
            if matches!(old, Err(StorageError::Compacted { .. })) {
                break;
            }
            assert!(Instant::now() < deadline, "no compaction within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The last revisions are kept.
        let current = store.current_revision().await.expect("rev");
        store
            .list(ListOptions {
                prefix: "c/".into(),
                revision: Some(current - 4),
                ..Default::default()
            })
            .await
            .expect("recent revisions are kept");
        assert_eq!(store.get("c/a").await.expect("get"), Some(last));
    }
}
