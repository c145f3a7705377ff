//! The default storage backend: one redb file, group-committed writes, an in-memory MVCC index.
//!
//! Layout of the redb file (`DIR/state.redb`):
//! - `kv`: key -> (create_revision, mod_revision, value): the current state.
//! - `log`: revision -> event: every write since the compaction revision, so that watchers can
//!   resume after a restart and lists at old revisions can be answered after a restart.
//! - `meta`: the current revision and the compaction revision.
//!
//! Writes go through one writer thread. It takes every queued request, checks them in order
//! against the current state plus the earlier requests of the same batch, writes the whole batch
//! in one redb transaction and commits it with `Durability::Immediate` (one fsync for the batch:
//! group commit). Only then does it publish the batch to the in-memory state and answer the
//! callers, so no reader ever sees a write that is not on disk.
//!
//! Reads never touch redb: the in-memory index (like etcd's treeIndex) keeps, per key, every
//! version back to the compaction revision, so a list at any kept revision is an exact snapshot.
//! The whole current data set is therefore held in memory (kube-apiserver's watch cache does the
//! same), values being shared (`Bytes`) between the index and the event history.
//!
//! Watchers do not get their own queue: each one pulls from the shared in-memory event history,
//! remembering the last revision it delivered, and sleeps on a `tokio::sync::watch` channel that
//! the writer bumps after each batch. A slow watcher therefore never blocks the writer and never
//! needs events buffered for it; if it falls behind the compaction revision its stream ends with
//! `Compacted` (the client relists), so no event is ever skipped silently.
//!
//! Compaction: explicit `compact(rev)`, plus an automatic policy run by the writer (see
//! [`Retention`]): by default history is kept for 5 minutes (like kube-apiserver, which compacts
//! etcd every 5 minutes), but never more than 100 000 revisions (it is held in memory) and never
//! fewer than the last 1 000.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Storage, StorageError,
    WatchEvent, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// File name used when `open` is given a directory.
pub const STATE_FILE: &str = "state.redb";

/// Requests waiting for the writer; senders wait (asynchronously) when it is full.
const QUEUE_CAPACITY: usize = 8192;
/// A batch stops growing at this many operations or this many value bytes, to bound the size
/// of one transaction (and the latency of the first request in it).
const MAX_BATCH_OPS: usize = 4096;
const MAX_BATCH_BYTES: usize = 64 << 20;
/// A watcher copies at most this many history events per lock acquisition.
const WATCH_SCAN_CHUNK: usize = 1024;

/// How much history the writer keeps when compacting automatically.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Revisions older than this are compacted (kube-apiserver compacts etcd every 5 minutes).
    pub max_age: Duration,
    /// At most this many revisions are kept, whatever their age: history lives in memory.
    pub max_revisions: u64,
    /// At least this many revisions are kept, whatever their age, so that a watcher that
    /// reconnects after a quiet period can usually resume.
    pub min_revisions: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(300),
            max_revisions: 100_000,
            min_revisions: 1_000,
        }
    }
}

/// Options of [`EmbeddedStore::open_with`]. The default is what [`EmbeddedStore::open`] uses.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Automatic compaction policy; `None` disables it (only explicit `compact` then).
    pub retention: Option<Retention>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            retention: Some(Retention::default()),
        }
    }
}

/// Counters of the writer, to observe group commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// redb write transactions committed.
    pub commits: u64,
    /// Write requests (create, update, delete, compact) handled, successful or not.
    pub writes: u64,
}

/// One version of a key in the MVCC index. `value: None` is a deletion (tombstone).
#[derive(Clone, Debug)]
struct Version {
    mod_revision: Revision,
    create_revision: Revision,
    value: Option<Bytes>,
}

impl Version {
    fn to_kv(&self, key: &str) -> Option<KeyValue> {
        self.value.as_ref().map(|value| KeyValue {
            key: key.to_string(),
            value: value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }
}

/// The in-memory state, published by the writer after each durable commit.
#[derive(Default)]
struct MemState {
    /// key -> versions in increasing revision order: the latest one at or before `compacted`
    /// (unless it is a deletion) and every later one.
    index: BTreeMap<String, Vec<Version>>,
    /// Every event with a revision in (`compacted`, `current`], in order.
    history: VecDeque<WatchEvent>,
    current: Revision,
    compacted: Revision,
}

impl MemState {
    fn latest(&self, key: &str) -> Option<KeyValue> {
        self.index
            .get(key)
            .and_then(|versions| versions.last())
            .and_then(|v| v.to_kv(key))
    }

    fn apply(&mut self, event: WatchEvent) {
        let version = Version {
            mod_revision: event.kv.mod_revision,
            create_revision: event.kv.create_revision,
            value: match event.kind {
                EventKind::Deleted => None,
                EventKind::Created | EventKind::Modified => Some(event.kv.value.clone()),
            },
        };
        match self.index.get_mut(&event.kv.key) {
            Some(versions) => versions.push(version),
            None => {
                self.index.insert(event.kv.key.clone(), vec![version]);
            }
        }
        self.current = event.kv.mod_revision;
        self.history.push_back(event);
    }

    /// Drops history at and before `rev` and the versions no read at a revision >= `rev` needs.
    fn compact(&mut self, rev: Revision) {
        if rev <= self.compacted {
            return;
        }
        // Only keys written in (compacted, rev] can hold versions that become unnecessary: the
        // others are down to a single live version already.
        while self.history.front().is_some_and(|e| e.revision() <= rev) {
            let Some(event) = self.history.pop_front() else {
                break;
            };
            let key = event.kv.key;
            let Some(versions) = self.index.get_mut(&key) else {
                continue;
            };
            let keep_from = versions
                .iter()
                .rposition(|v| v.mod_revision <= rev)
                .unwrap_or(0);
            versions.drain(..keep_from);
            if versions
                .first()
                .is_some_and(|v| v.mod_revision <= rev && v.value.is_none())
            {
                versions.remove(0);
            }
            if versions.is_empty() {
                self.index.remove(&key);
            }
        }
        self.compacted = rev;
    }
}

struct Shared {
    state: RwLock<MemState>,
    commits: AtomicU64,
    writes: AtomicU64,
}

impl Shared {
    // A poisoned lock means the writer panicked while publishing; the state may be half
    // applied, so refuse to serve it rather than unwrap.
    fn read(&self) -> Result<RwLockReadGuard<'_, MemState>> {
        self.state
            .read()
            .map_err(|_| StorageError::Unavailable("store state poisoned".into()))
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, MemState>> {
        self.state
            .write()
            .map_err(|_| StorageError::Unavailable("store state poisoned".into()))
    }
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

enum Reply {
    Kv(oneshot::Sender<Result<KeyValue>>),
    Unit(oneshot::Sender<Result<()>>),
}

struct Request {
    op: Op,
    reply: Reply,
}

impl Request {
    fn size(&self) -> usize {
        match &self.op {
            Op::Create { key, value } | Op::Update { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
            Op::Compact { .. } => 0,
        }
    }
}

/// The embedded, durable store. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    published: watch::Receiver<Revision>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("{what}: {err}"))
}

fn closed() -> StorageError {
    StorageError::Unavailable("store is closed".into())
}

impl EmbeddedStore {
    /// Creates or reopens the store. `dir_or_file` is either a directory (created if missing;
    /// the file is `DIR/state.redb`) or a path ending in `.redb`. Loading runs on a blocking
    /// thread; the writer runs on its own OS thread.
    pub async fn open(dir_or_file: &Path) -> Result<EmbeddedStore> {
        Self::open_with(dir_or_file, EmbeddedOptions::default()).await
    }

    /// Like [`EmbeddedStore::open`], with options.
    pub async fn open_with(dir_or_file: &Path, options: EmbeddedOptions) -> Result<EmbeddedStore> {
        let path = resolve_path(dir_or_file)?;
        let load_path = path.clone();
        let (db, state) = tokio::task::spawn_blocking(move || load(&load_path))
            .await
            .map_err(|e| unavailable("loading the store", e))??;
        let current = state.current;
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let (publish, published) = watch::channel(current);
        let writer = Writer {
            db,
            shared: shared.clone(),
            queue,
            publish,
            auto: options.retention.map(AutoCompactor::new),
        };
        let writer = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| unavailable("starting the writer thread", e))?;
        Ok(EmbeddedStore {
            shared,
            requests: Some(requests),
            published,
            writer: Some(writer),
            path,
        })
    }

    /// The redb file of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writer counters (commits vs. write requests: group commit makes commits < writes).
    pub fn stats(&self) -> EmbeddedStats {
        EmbeddedStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// The compaction revision (history at and before it is gone).
    pub fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.read()?.compacted)
    }

    /// Stops the writer after it has finished the queued requests and closes the file, without
    /// blocking the async runtime (dropping the store does the same, but blocks while waiting).
    pub async fn close(mut self) -> Result<()> {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|e| unavailable("closing the store", e))?
                .map_err(|_| StorageError::Unavailable("the writer thread panicked".into()))?;
        }
        Ok(())
    }

    async fn submit<T>(
        &self,
        op: Op,
        reply: impl FnOnce(oneshot::Sender<Result<T>>) -> Reply,
    ) -> Result<T> {
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        let (tx, rx) = oneshot::channel();
        requests
            .send(Request {
                op,
                reply: reply(tx),
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; waiting for it
        // releases the file lock, so the same file can be reopened right after the drop.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("storage writer thread panicked");
            }
        }
    }
}

fn resolve_path(dir_or_file: &Path) -> Result<PathBuf> {
    let is_file = dir_or_file.extension().is_some_and(|e| e == "redb") && !dir_or_file.is_dir();
    let (dir, file) = if is_file {
        let dir = dir_or_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        (dir, dir_or_file.to_path_buf())
    } else {
        (dir_or_file.to_path_buf(), dir_or_file.join(STATE_FILE))
    };
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| unavailable(&format!("creating {}", dir.display()), e))?;
    }
    Ok(file)
}

// ---------------------------------------------------------------------------------------------
// Encoding. Everything is little-endian; values are prefixed by their length.

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("truncated record")]
    Truncated,
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("key is not UTF-8")]
    Utf8,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> std::result::Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> std::result::Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u64()?).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }
}

/// kv table value: create_revision, mod_revision, value.
fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn decode_kv(key: &str, raw: &[u8]) -> std::result::Result<KeyValue, DecodeError> {
    let mut r = Reader { buf: raw };
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    Ok(KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(r.buf),
        create_revision,
        mod_revision,
    })
}

/// log table value: kind, key, create_revision, value, then the previous version if any
/// (create_revision, mod_revision, value). A deletion's own value is the previous value, so it
/// is not stored twice. The event's revision is the table key.
fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| p.value.len());
    let mut out = Vec::with_capacity(64 + event.kv.key.len() + event.kv.value.len() + prev_len);
    let kind = match event.kind {
        EventKind::Created => 0u8,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    };
    out.push(kind);
    put_bytes(&mut out, event.kv.key.as_bytes());
    out.extend_from_slice(&event.kv.create_revision.to_le_bytes());
    match event.kind {
        EventKind::Deleted => put_bytes(&mut out, &[]),
        EventKind::Created | EventKind::Modified => put_bytes(&mut out, &event.kv.value),
    }
    match &event.prev {
        Some(prev) => {
            out.push(1);
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            put_bytes(&mut out, &prev.value);
        }
        None => out.push(0),
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn decode_event(revision: Revision, raw: &[u8]) -> std::result::Result<WatchEvent, DecodeError> {
    let mut r = Reader { buf: raw };
    let kind = match r.u8()? {
        0 => EventKind::Created,
        1 => EventKind::Modified,
        2 => EventKind::Deleted,
        other => return Err(DecodeError::Kind(other)),
    };
    let key = std::str::from_utf8(r.bytes()?)
        .map_err(|_| DecodeError::Utf8)?
        .to_string();
    let create_revision = r.u64()?;
    let value = Bytes::copy_from_slice(r.bytes()?);
    let prev = match r.u8()? {
        0 => None,
        _ => {
            let create_revision = r.u64()?;
            let mod_revision = r.u64()?;
            let value = Bytes::copy_from_slice(r.bytes()?);
            Some(KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision,
            })
        }
    };
    let value = match (&kind, &prev) {
        (EventKind::Deleted, Some(prev)) => prev.value.clone(),
        _ => value,
    };
    Ok(WatchEvent {
        kind,
        kv: KeyValue {
            key,
            value,
            create_revision,
            mod_revision: revision,
        },
        prev,
    })
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Opens (or creates) the file and rebuilds the in-memory state: the index from the log (older
/// versions, for snapshot reads) and the kv table (keys not written since the compaction), the
/// history from the log.
fn load(path: &Path) -> Result<(Database, MemState)> {
    let db = Database::create(path)
        .map_err(|e| unavailable(&format!("opening {}", path.display()), e))?;
    // Make sure the tables exist so that read transactions can open them.
    let mut tx = db.begin_write().map_err(|e| unavailable("begin", e))?;
    tx.set_durability(Durability::Immediate)
        .map_err(|e| unavailable("durability", e))?;
    {
        tx.open_table(KV).map_err(|e| unavailable("kv table", e))?;
        tx.open_table(LOG)
            .map_err(|e| unavailable("log table", e))?;
        tx.open_table(META)
            .map_err(|e| unavailable("meta table", e))?;
    }
    tx.commit().map_err(|e| unavailable("commit", e))?;

    let rx = db.begin_read().map_err(|e| unavailable("begin read", e))?;
    let meta = rx
        .open_table(META)
        .map_err(|e| unavailable("meta table", e))?;
    let get_meta = |name: &str| -> Result<u64> {
        Ok(meta
            .get(name)
            .map_err(|e| unavailable("reading meta", e))?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    let mut state = MemState {
        current: get_meta(META_REVISION)?,
        compacted: get_meta(META_COMPACTED)?,
        ..MemState::default()
    };
    let current = state.current;

    let log = rx
        .open_table(LOG)
        .map_err(|e| unavailable("log table", e))?;
    for entry in log.iter().map_err(|e| unavailable("reading log", e))? {
        let (rev, raw) = entry.map_err(|e| unavailable("reading log", e))?;
        let rev = rev.value();
        let mut event = decode_event(rev, raw.value())
            .map_err(|e| unavailable(&format!("log entry {rev}"), e))?;
        match state.index.get(&event.kv.key).and_then(|v| v.last()) {
            // The previous value is already in memory (decoded from the previous event of the
            // key): share it instead of keeping a second copy.
            Some(latest) => {
                if let (Some(prev), Some(value)) = (event.prev.as_mut(), latest.value.as_ref()) {
                    if prev.mod_revision == latest.mod_revision {
                        prev.value = value.clone();
                        if event.kind == EventKind::Deleted {
                            event.kv.value = value.clone();
                        }
                    }
                }
            }
            // The first event of a key carries the version before it (at or before the
            // compaction revision), which snapshot reads between the compaction and this event
            // still need.
            None => {
                if let Some(prev) = &event.prev {
                    state.index.insert(
                        prev.key.clone(),
                        vec![Version {
                            mod_revision: prev.mod_revision,
                            create_revision: prev.create_revision,
                            value: Some(prev.value.clone()),
                        }],
                    );
                }
            }
        }
        state.apply(event);
    }
    state.current = current;

    let kv = rx.open_table(KV).map_err(|e| unavailable("kv table", e))?;
    for entry in kv.iter().map_err(|e| unavailable("reading kv", e))? {
        let (key, raw) = entry.map_err(|e| unavailable("reading kv", e))?;
        let key = key.value();
        if state.index.contains_key(key) {
            continue;
        }
        let kv = decode_kv(key, raw.value()).map_err(|e| unavailable(&format!("key {key}"), e))?;
        state.index.insert(
            kv.key,
            vec![Version {
                mod_revision: kv.mod_revision,
                create_revision: kv.create_revision,
                value: Some(kv.value),
            }],
        );
    }
    drop(kv);
    drop(log);
    drop(meta);
    drop(rx);
    Ok((db, state))
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// Chooses automatic compaction points from (time, revision) samples.
struct AutoCompactor {
    policy: Retention,
    samples: VecDeque<(Instant, Revision)>,
    /// The newest revision known to be older than `max_age`.
    aged: Revision,
    last_run: Instant,
}

/// How often a (time, revision) sample is recorded and auto compaction considered.
const AUTO_COMPACT_EVERY: Duration = Duration::from_secs(5);

impl AutoCompactor {
    fn new(policy: Retention) -> Self {
        AutoCompactor {
            policy,
            samples: VecDeque::new(),
            aged: 0,
            last_run: Instant::now(),
        }
    }

    /// The revision to compact to before writing a batch, if any. Only called when there are
    /// writes: without writes history does not grow, so there is nothing to compact.
    fn target(&mut self, now: Instant, current: Revision, compacted: Revision) -> Option<Revision> {
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= AUTO_COMPACT_EVERY)
        {
            self.samples.push_back((now, current));
        }
        while let Some(&(t, rev)) = self.samples.front() {
            if now.duration_since(t) < self.policy.max_age {
                break;
            }
            self.aged = rev;
            self.samples.pop_front();
        }
        let by_count = current.saturating_sub(self.policy.max_revisions);
        let target = self
            .aged
            .max(by_count)
            .min(current.saturating_sub(self.policy.min_revisions));
        if target <= compacted {
            return None;
        }
        // Compact in steps rather than on every batch: each compaction walks the dropped
        // history, and small steps would do it for a handful of events each time.
        let step = (self.policy.max_revisions / 10).max(1);
        let over_count = current.saturating_sub(compacted) > self.policy.max_revisions + step;
        if over_count || now.duration_since(self.last_run) >= AUTO_COMPACT_EVERY {
            self.last_run = now;
            Some(target)
        } else {
            None
        }
    }
}

struct Writer {
    db: Database,
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Request>,
    publish: watch::Sender<Revision>,
    auto: Option<AutoCompactor>,
}

/// A checked batch: one outcome per request, the events to write, the compaction to apply.
struct Checked {
    outcomes: Vec<Outcome>,
    events: Vec<WatchEvent>,
    compact_to: Option<Revision>,
}

/// The outcome of one request, computed before the commit and sent after it.
enum Outcome {
    Kv(Result<KeyValue>),
    Unit(Result<()>),
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        // blocking_recv returns None once every sender is gone and the queue is drained.
        while let Some(first) = self.queue.blocking_recv() {
            let mut bytes = first.size();
            batch.push(first);
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match self.queue.try_recv() {
                    Ok(req) => {
                        bytes += req.size();
                        batch.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.process(std::mem::take(&mut batch));
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        self.shared
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (ops, replies): (Vec<Op>, Vec<Reply>) =
            batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let Checked {
            outcomes,
            events,
            compact_to,
        } = match self.check(ops) {
            Ok(checked) => checked,
            Err(err) => {
                reply_all(replies, &err);
                return;
            }
        };
        if events.is_empty() && compact_to.is_none() {
            // Nothing to write (only failed requests): no transaction, no fsync.
            send_outcomes(replies, outcomes);
            return;
        }
        if let Err(err) = self.commit(&events, compact_to) {
            tracing::error!(error = %err, "storage commit failed");
            reply_all(replies, &err);
            return;
        }
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        let published = match self.shared.write() {
            Ok(mut state) => {
                for event in events {
                    state.apply(event);
                }
                if let Some(rev) = compact_to {
                    state.compact(rev);
                }
                state.current
            }
            Err(err) => {
                reply_all(replies, &err);
                return;
            }
        };
        // Watchers wake up after the state holds the batch; callers are answered last, so a
        // caller that got its answer reads its own write.
        self.publish.send_replace(published);
        send_outcomes(replies, outcomes);
    }

    /// Checks the batch in order against the published state plus the batch's earlier
    /// operations; returns each request's outcome, the events to write, and the compaction
    /// revision (explicit or automatic) to apply with them.
    fn check(&mut self, ops: Vec<Op>) -> Result<Checked> {
        let state = self.shared.read()?;
        let mut rev = state.current;
        // The batch's own writes, which the published state does not have yet.
        let mut overlay: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        let mut compact_to: Option<Revision> = None;
        let current_of =
            |overlay: &HashMap<String, Option<KeyValue>>, key: &str| match overlay.get(key) {
                Some(kv) => kv.clone(),
                None => state.latest(key),
            };
        for op in ops {
            match op {
                Op::Create { key, value } => {
                    if current_of(&overlay, &key).is_some() {
                        outcomes.push(Outcome::Kv(Err(StorageError::AlreadyExists(key))));
                        continue;
                    }
                    rev += 1;
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: rev,
                        mod_revision: rev,
                    };
                    overlay.insert(key, Some(kv.clone()));
                    events.push(WatchEvent {
                        kind: EventKind::Created,
                        kv: kv.clone(),
                        prev: None,
                    });
                    outcomes.push(Outcome::Kv(Ok(kv)));
                }
                Op::Update {
                    key,
                    value,
                    expected,
                } => {
                    let Some(prev) = current_of(&overlay, &key) else {
                        outcomes.push(Outcome::Kv(Err(StorageError::NotFound(key))));
                        continue;
                    };
                    if prev.mod_revision != expected {
                        outcomes.push(Outcome::Kv(Err(StorageError::Conflict {
                            key,
                            expected,
                            actual: prev.mod_revision,
                        })));
                        continue;
                    }
                    rev += 1;
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: prev.create_revision,
                        mod_revision: rev,
                    };
                    overlay.insert(key, Some(kv.clone()));
                    events.push(WatchEvent {
                        kind: EventKind::Modified,
                        kv: kv.clone(),
                        prev: Some(prev),
                    });
                    outcomes.push(Outcome::Kv(Ok(kv)));
                }
                Op::Delete { key, expected } => {
                    let Some(prev) = current_of(&overlay, &key) else {
                        outcomes.push(Outcome::Kv(Err(StorageError::NotFound(key))));
                        continue;
                    };
                    if let Some(expected) = expected {
                        if prev.mod_revision != expected {
                            outcomes.push(Outcome::Kv(Err(StorageError::Conflict {
                                key,
                                expected,
                                actual: prev.mod_revision,
                            })));
                            continue;
                        }
                    }
                    rev += 1;
                    let kv = KeyValue {
                        mod_revision: rev,
                        ..prev.clone()
                    };
                    overlay.insert(key, None);
                    events.push(WatchEvent {
                        kind: EventKind::Deleted,
                        kv: kv.clone(),
                        prev: Some(prev),
                    });
                    outcomes.push(Outcome::Kv(Ok(kv)));
                }
                Op::Compact { revision } => {
                    // Compacting a revision that does not exist yet is a caller bug; compacting
                    // an already compacted one is a no-op, so that compaction is idempotent.
                    if revision > rev {
                        outcomes.push(Outcome::Unit(Err(StorageError::Unavailable(format!(
                            "cannot compact revision {revision}: current revision is {rev}"
                        )))));
                        continue;
                    }
                    if revision > state.compacted {
                        compact_to = Some(compact_to.map_or(revision, |c| c.max(revision)));
                    }
                    outcomes.push(Outcome::Unit(Ok(())));
                }
            }
        }
        if let Some(auto) = &mut self.auto {
            if !events.is_empty() {
                let floor = compact_to.unwrap_or(state.compacted);
                if let Some(target) = auto.target(Instant::now(), rev, floor) {
                    compact_to = Some(target);
                }
            }
        }
        Ok(Checked {
            outcomes,
            events,
            compact_to,
        })
    }

    fn commit(&self, events: &[WatchEvent], compact_to: Option<Revision>) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(|e| unavailable("begin", e))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| unavailable("durability", e))?;
        {
            let mut kv = tx.open_table(KV).map_err(|e| unavailable("kv table", e))?;
            let mut log = tx
                .open_table(LOG)
                .map_err(|e| unavailable("log table", e))?;
            let mut meta = tx
                .open_table(META)
                .map_err(|e| unavailable("meta table", e))?;
            for event in events {
                let key = event.kv.key.as_str();
                match event.kind {
                    EventKind::Deleted => {
                        kv.remove(key).map_err(|e| unavailable("delete", e))?;
                    }
                    EventKind::Created | EventKind::Modified => {
                        kv.insert(key, encode_kv(&event.kv).as_slice())
                            .map_err(|e| unavailable("put", e))?;
                    }
                }
                log.insert(event.revision(), encode_event(event).as_slice())
                    .map_err(|e| unavailable("log", e))?;
            }
            if let Some(last) = events.last() {
                meta.insert(META_REVISION, last.revision())
                    .map_err(|e| unavailable("meta", e))?;
            }
            if let Some(rev) = compact_to {
                log.retain_in(..=rev, |_, _| false)
                    .map_err(|e| unavailable("compacting log", e))?;
                meta.insert(META_COMPACTED, rev)
                    .map_err(|e| unavailable("meta", e))?;
            }
        }
        tx.commit().map_err(|e| unavailable("commit", e))
    }
}

fn reply_all(replies: Vec<Reply>, err: &StorageError) {
    for reply in replies {
        // A caller that gave up (dropped its future) does not need the answer.
        match reply {
            Reply::Kv(tx) => {
                let _ = tx.send(Err(err.clone()));
            }
            Reply::Unit(tx) => {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }
}

fn send_outcomes(replies: Vec<Reply>, outcomes: Vec<Outcome>) {
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        match (reply, outcome) {
            (Reply::Kv(tx), Outcome::Kv(result)) => {
                let _ = tx.send(result);
            }
            (Reply::Unit(tx), Outcome::Unit(result)) => {
                let _ = tx.send(result);
            }
            // Requests and outcomes are built pairwise from the same op; a mismatch cannot
            // happen, but answer rather than leave the caller hanging.
            (Reply::Kv(tx), Outcome::Unit(_)) => {
                let _ = tx.send(Err(StorageError::Unavailable("internal mismatch".into())));
            }
            (Reply::Unit(tx), Outcome::Kv(_)) => {
                let _ = tx.send(Err(StorageError::Unavailable("internal mismatch".into())));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads and watches.

fn list_state(state: &MemState, opts: &ListOptions) -> Result<ListResult> {
    let revision = match opts.revision {
        None => state.current,
        Some(r) if r < state.compacted => {
            return Err(StorageError::Compacted {
                requested: r,
                compacted: state.compacted,
            })
        }
        Some(r) if r > state.current => {
            return Err(StorageError::Unavailable(format!(
                "revision {r} is newer than the current revision {}",
                state.current
            )))
        }
        Some(r) => r,
    };
    let limit = opts.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
    let lower = match &opts.start_after {
        Some(after) if after.as_str() >= opts.prefix.as_str() => Bound::Excluded(after.as_str()),
        _ => Bound::Included(opts.prefix.as_str()),
    };
    let mut items = Vec::new();
    let mut more = false;
    for (key, versions) in state
        .index
        .range::<str, _>((lower, Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(opts.prefix.as_str()))
    {
        let at = versions.partition_point(|v| v.mod_revision <= revision);
        let Some(kv) = at.checked_sub(1).and_then(|i| versions[i].to_kv(key)) else {
            continue;
        };
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(kv);
    }
    Ok(ListResult {
        items,
        revision,
        more,
    })
}

struct Watcher {
    shared: Arc<Shared>,
    published: watch::Receiver<Revision>,
    prefix: String,
    /// The last revision examined: everything up to it has been delivered or filtered out.
    last: Revision,
    ready: VecDeque<WatchEvent>,
    done: bool,
}

impl Watcher {
    /// Copies the next chunk of matching history events into `ready`.
    fn fill(&mut self) -> Result<()> {
        let state = self.shared.read()?;
        if self.last < state.compacted {
            return Err(StorageError::Compacted {
                requested: self.last,
                compacted: state.compacted,
            });
        }
        let start = state.history.partition_point(|e| e.revision() <= self.last);
        for event in state.history.range(start..).take(WATCH_SCAN_CHUNK) {
            self.last = event.revision();
            if event.kv.key.starts_with(self.prefix.as_str()) {
                self.ready.push_back(event.clone());
            }
        }
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            // Mark the current publication as seen before reading, so that a batch published
            // after the read wakes `changed` below: no event can fall between the two.
            self.published.borrow_and_update();
            if let Err(err) = self.fill() {
                self.done = true;
                return Some(Err(err));
            }
            if self.ready.is_empty() && self.published.changed().await.is_err() {
                self.done = true;
                return Some(Err(closed()));
            }
        }
    }
}

#[async_trait::async_trait]
impl Storage for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.shared.read()?.latest(key))
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        list_state(&*self.shared.read()?, &opts)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let op = Op::Create {
            key: key.to_string(),
            value,
        };
        self.submit(op, Reply::Kv).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected,
        };
        self.submit(op, Reply::Kv).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let op = Op::Delete {
            key: key.to_string(),
            expected,
        };
        self.submit(op, Reply::Kv).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        {
            let state = self.shared.read()?;
            if after < state.compacted {
                return Err(StorageError::Compacted {
                    requested: after,
                    compacted: state.compacted,
                });
            }
        }
        let watcher = Watcher {
            shared: self.shared.clone(),
            published: self.published.clone(),
            prefix: prefix.to_string(),
            last: after,
            ready: VecDeque::new(),
            done: false,
        };
        let stream = futures::stream::unfold(watcher, |mut w| async move {
            w.next().await.map(|item| (item, w))
        });
        Ok(Box::pin(stream))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.read()?.current)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }, Reply::Unit).await
    }
}

// ---------------------------------------------------------------------------------------------
// Raw-store benchmark.

pub use super::bench::BenchResult;

/// Creates `total` distinct keys with values of `value_size` bytes from `concurrency` tasks and
/// measures throughput and latency: the raw-store baseline of `wasmkube bench apiserver`.
pub async fn bench_puts(
    store: Arc<dyn Storage>,
    concurrency: usize,
    total: usize,
    value_size: usize,
) -> BenchResult {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let value = Bytes::from(vec![b'x'; value_size]);
    super::bench::run_load(concurrency, total, move |i| {
        let (store, value, key) = (store.clone(), value.clone(), format!("bench/{run}/{i:010}"));
        async move { store.create(&key, value).await.is_ok() }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// The store plus the temporary directory holding it (dropped after the store).
    type TempStore = crate::storage::conformance::Held<EmbeddedStore, tempfile::TempDir>;

    async fn temp_store() -> Arc<dyn Storage> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        Arc::new(TempStore { store, guard: dir })
    }

    crate::storage_conformance_tests!(temp_store());

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn reopen_keeps_data_revision_and_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (r0, rev, old_snapshot_rev);
        {
            let store = EmbeddedStore::open(dir.path()).await.expect("open");
            r0 = store
                .create("a/1", b("one"))
                .await
                .expect("create")
                .mod_revision;
            let a2 = store.create("a/2", b("two")).await.expect("create");
            old_snapshot_rev = a2.mod_revision;
            store.create("a/3", b("three")).await.expect("create");
            store
                .update("a/2", b("two-b"), a2.mod_revision)
                .await
                .expect("update");
            store.delete("a/3", None).await.expect("delete");
            store.compact(r0).await.expect("compact");
            rev = store.current_revision().await.expect("rev");
            store.close().await.expect("close");
        }
        let store = EmbeddedStore::open(dir.path()).await.expect("reopen");
        assert_eq!(store.current_revision().await.expect("rev"), rev);
        assert_eq!(store.compacted_revision().expect("compacted"), r0);
        let now = store
            .list(ListOptions {
                prefix: "a/".into(),
                ..Default::default()
            })
            .await
            .expect("list");
        let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(now.items[1].value, b("two-b"));
        assert_eq!(now.revision, rev);
        // The snapshot between the compaction and the restart is still readable.
        let old = store
            .list(ListOptions {
                prefix: "a/".into(),
                revision: Some(old_snapshot_rev),
                ..Default::default()
            })
            .await
            .expect("old list");
        let old: Vec<_> = old
            .items
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone()))
            .collect();
        assert_eq!(old, [("a/1", b("one")), ("a/2", b("two"))]);
        // A new write continues the revision sequence.
        let next = store.create("a/4", b("four")).await.expect("create");
        assert_eq!(next.mod_revision, rev + 1);
        assert!(matches!(
            store.watch("a/", r0 - 1).await.err(),
            Some(StorageError::Compacted { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watcher_resumes_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seen;
        {
            let store = EmbeddedStore::open(dir.path()).await.expect("open");
            let first = store.create("w/a", b("1")).await.expect("create");
            seen = first.mod_revision;
            let second = store.update("w/a", b("2"), seen).await.expect("update");
            store.create("other/x", b("x")).await.expect("create");
            store
                .delete("w/a", Some(second.mod_revision))
                .await
                .expect("delete");
        }
        let store = EmbeddedStore::open(dir.path()).await.expect("reopen");
        let mut watch = store.watch("w/", seen).await.expect("watch");
        let e1 = watch.next().await.expect("event").expect("ok");
        assert_eq!(e1.kind, EventKind::Modified);
        assert_eq!(e1.kv.value, b("2"));
        assert_eq!(e1.prev.as_ref().map(|p| p.value.clone()), Some(b("1")));
        let e2 = watch.next().await.expect("event").expect("ok");
        assert_eq!(e2.kind, EventKind::Deleted);
        assert_eq!(e2.kv.value, b("2"));
        assert_eq!(
            e2.prev.as_ref().map(|p| p.mod_revision),
            Some(e1.revision())
        );
        // Live events continue after the replayed ones.
        let live = store.create("w/b", b("3")).await.expect("create");
        let e3 = watch.next().await.expect("event").expect("ok");
        assert_eq!(e3.revision(), live.mod_revision);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn group_commit_batches_concurrent_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).await.expect("open"));
        let before = store.stats();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..64 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..10 {
                    store
                        .create(&format!("g/{t}/{i}"), b("v"))
                        .await
                        .expect("create");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task");
        }
        let after = store.stats();
        let writes = after.writes - before.writes;
        let commits = after.commits - before.commits;
        assert_eq!(writes, 640);
        assert!(
            commits < writes / 2,
            "{commits} commits for {writes} writes"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn auto_compaction_bounds_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            retention: Some(Retention {
                max_age: Duration::from_secs(3600),
                max_revisions: 100,
                min_revisions: 10,
            }),
        };
        let store = EmbeddedStore::open_with(dir.path(), options)
            .await
            .expect("open");
        let kv = store.create("c", b("0")).await.expect("create");
        let mut rev = kv.mod_revision;
        for i in 1..400 {
            rev = store
                .update("c", Bytes::from(i.to_string()), rev)
                .await
                .expect("update")
                .mod_revision;
        }
        let compacted = store.compacted_revision().expect("compacted");
        assert!(compacted > 0, "nothing compacted");
        assert!(rev - compacted <= 100 + 10 + 1, "kept {}", rev - compacted);
        assert!(matches!(
            store.watch("", 0).await.err(),
            Some(StorageError::Compacted { .. })
        ));
        // The key's value survives compaction.
        let got = store.get("c").await.expect("get").expect("present");
        assert_eq!(got.mod_revision, rev);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watcher_behind_compaction_ends_with_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        assert_eq!(store.current_revision().await.expect("rev"), 0);
        let mut watch = store.watch("s/", 0).await.expect("watch");
        for i in 0..3 {
            store
                .create(&format!("s/{i}"), b("v"))
                .await
                .expect("create");
        }
        let first = watch.next().await.expect("event").expect("ok");
        assert_eq!(first.revision(), 1);
        store.create("s/3", b("v")).await.expect("create");
        let last = store.create("s/4", b("v")).await.expect("create");
        store.compact(last.mod_revision).await.expect("compact");
        // What the watcher had already taken is delivered in order, then it stops instead of
        // skipping the compacted revisions 4 and 5.
        let mut revisions = Vec::new();
        let end = loop {
            match watch.next().await {
                Some(Ok(event)) => revisions.push(event.revision()),
                other => break other,
            }
        };
        assert!(revisions.iter().zip(2u64..).all(|(r, want)| *r == want));
        assert!(matches!(end, Some(Err(StorageError::Compacted { .. }))));
        assert!(watch.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropped_store_ends_watches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).await.expect("open");
        let mut watch = store.watch("", 0).await.expect("watch");
        drop(store);
        let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("watch ended");
        assert!(matches!(end, Some(Err(StorageError::Unavailable(_)))));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bench_puts_reports() {
        let store = temp_store().await;
        let result = bench_puts(store.clone(), 8, 200, 1024).await;
        assert_eq!(result.errors, 0);
        assert!(result.puts_per_sec > 0.0);
        assert!(result.p50 <= result.p99);
        let list = store
            .list(ListOptions {
                prefix: "bench/".into(),
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(list.items.len(), 200);
    }

    #[test]
    fn event_encoding_roundtrips() {
        let prev = KeyValue {
            key: "k".into(),
            value: b("old"),
            create_revision: 3,
            mod_revision: 5,
        };
        let events = [
            WatchEvent {
                kind: EventKind::Created,
                kv: KeyValue {
                    mod_revision: 3,
                    ..prev.clone()
                },
                prev: None,
            },
            WatchEvent {
                kind: EventKind::Modified,
                kv: KeyValue {
                    value: b("new"),
                    mod_revision: 7,
                    ..prev.clone()
                },
                prev: Some(prev.clone()),
            },
            WatchEvent {
                kind: EventKind::Deleted,
                kv: KeyValue {
                    mod_revision: 9,
                    ..prev.clone()
                },
                prev: Some(prev.clone()),
            },
        ];
        for event in events {
            let raw = encode_event(&event);
            assert_eq!(decode_event(event.revision(), &raw).expect("decode"), event);
            assert!(decode_event(event.revision(), &raw[..raw.len() - 1]).is_err());
        }
    }
}
