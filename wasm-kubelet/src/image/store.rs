//! The content store: wasm blobs by digest (`blobs/sha256/<hex>`) shared by every pod, and the
//! references that name them (`refs/<sha256 of the reference>.json`). Writes go through a
//! temp file and a rename, so a reader never sees half a blob and `image import` works while
//! the kubelet runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;

/// What a reference resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The normalized reference (`docker.io/library/hello:v1`).
    pub reference: String,
    /// `status.containerStatuses[].imageID`: `<repository>@sha256:<manifest or blob digest>`.
    pub image_id: String,
    /// `sha256:<hex>` of the wasm binary.
    pub wasm_digest: String,
}

/// The store under one directory.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Store {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), rand_suffix()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl ContentStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        std::fs::create_dir_all(root.join("blobs/sha256")).map_err(io(root))?;
        std::fs::create_dir_all(root.join("refs")).map_err(io(root))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    /// Stores `bytes`, checking them against `expected` when given; returns their digest.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&str>) -> Result<String, ImageError> {
        let digest = sha256_digest(bytes);
        if let Some(expected) = expected {
            if expected != digest {
                return Err(ImageError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", hex::encode(Sha256::digest(reference))))
    }

    /// Points `record.reference` at `record`.
    pub fn tag(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| ImageError::Store {
            path: self.ref_path(&record.reference),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.ref_path(&record.reference), &json)
    }

    /// The record for a normalized reference, if present and its blob is intact.
    pub fn lookup(&self, reference: &str) -> Option<ImageRecord> {
        let bytes = std::fs::read(self.ref_path(reference)).ok()?;
        let record: ImageRecord = serde_json::from_slice(&bytes).ok()?;
        self.blob_path(&record.wasm_digest)
            .exists()
            .then_some(record)
    }
}
