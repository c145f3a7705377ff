//! The storage seam: a key-value store with one global revision counter.
//!
//! Revisions are strictly increasing across the whole store (like etcd's), and a key's
//! `mod_revision` is the object's `metadata.resourceVersion`. Every acknowledged write is durable
//! before the call returns. Backends: [`embedded`] (the default, a single redb file) and
//! [`etcd`] (etcd v3, for several apiservers on one etcd cluster). [`conformance`] is the one
//! test suite every backend passes.

pub mod bench;
pub mod conformance;
pub mod embedded;
pub mod etcd;

use bytes::Bytes;
use futures::stream::BoxStream;

/// A store revision; also the `resourceVersion` of objects and lists.
pub type Revision = u64;

/// One stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (0 is never used).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Modified,
    Deleted,
}

/// One change seen by a watch. For `Deleted`, `kv.value` is the last value before deletion and
/// `kv.mod_revision` is the revision of the delete itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The value before this change (None for `Created`).
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly greater than this one (the continue point of a paged list).
    pub start_after: Option<String>,
    /// At most this many items (None or 0: all).
    pub limit: Option<usize>,
    /// Read the state as of this revision (None: the current state). Pages of one list pass the
    /// revision of the first page so the whole list is one consistent snapshot. A revision older
    /// than the compacted one fails with [`StorageError::Compacted`].
    pub revision: Option<Revision>,
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ListResult {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list reflects (the store's revision when it was read, or the one asked for).
    pub revision: Revision,
    /// Whether more items follow the last one returned.
    pub more: bool,
}

/// Storage errors, mapped by the apiserver to HTTP statuses (404, 409, 409, 410, 503).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {key}: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A stream of watch events in revision order. An error ends the stream.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Runs `follow` (a list, then a watch of the store) until `shutdown`, starting over a second
/// after each error: the loop of every apiserver-internal cache of stored objects.
pub async fn follow_until_shutdown<F, Fut>(
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut follow: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StorageError>>,
{
    loop {
        if let Err(e) = follow().await {
            tracing::warn!(error = %e, "{what}: starting over");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// The storage seam. Implementations must be safe to share across tasks.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The value of `key`, if present.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// A page of keys under a prefix, in key order.
    async fn list(&self, opts: ListOptions) -> Result<ListResult>;

    /// Creates `key`; fails with `AlreadyExists` if it is present.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key` if its `mod_revision` is `expected`: `Conflict` if not, `NotFound` if absent.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, if `expected` is given only when its `mod_revision` matches. Returns the
    /// deleted value with `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Events under `prefix` with revision greater than `after`, in order, then live ones.
    /// `Compacted` if events after `after` are no longer kept.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the last write (0 for an empty store).
    async fn current_revision(&self) -> Result<Revision>;

    /// Forgets history at and before `revision`: lists and watches from older revisions then fail
    /// with `Compacted`. The current value of every key is kept.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
