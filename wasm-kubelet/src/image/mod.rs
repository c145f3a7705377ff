//! Images: OCI pulls (oci-client) of wasm artifacts, digest checks, the content store shared by
//! all pods, `image import` (no registry) and `push`.

pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

pub use store::{sha256_digest, ContentStore, ImageRecord};

use crate::runtime::{detect, WasmKind};

/// Media type of a wasm layer in the CNCF wasm OCI artifact layout.
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of the config of a wasm OCI artifact (CNCF TAG-runtime layout).
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The older wasm-to-oci layer type, also accepted when pulling.
pub const WASM_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Image layer types holding a tar (optionally gzipped) with the `.wasm` inside, as
/// `docker buildx --platform wasi/wasm` and runwasi produce.
pub const TAR_LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// Errors of image handling; [`ImageError::reason`] gives the container waiting reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidName { reference: String, message: String },
    #[error("image {0:?} is not present on the node and imagePullPolicy is Never")]
    NeverPull(String),
    #[error("pulling {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{reference}: no wasm layer (media types seen: {seen}); expected {WASM_LAYER}")]
    NoWasmLayer { reference: String, seen: String },
    #[error("{path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{reference}: layer {digest}: {message}")]
    BadLayer {
        reference: String,
        digest: String,
        message: String,
    },
    #[error("{path}: not a wasm module or component: {message}")]
    NotWasm { path: PathBuf, message: String },
    #[error("pushing {reference}: {message}")]
    Push { reference: String, message: String },
}

impl ImageError {
    /// The container's waiting reason for this error, as upstream names it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "InvalidImageName",
            Self::NeverPull(_) => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }
}

/// `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy for `image`: as given, else `Always` for `:latest` or no tag, else
    /// `IfNotPresent` (the API default).
    pub fn resolve(given: Option<&str>, image: &str) -> Self {
        match given {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => match Reference::try_from(image) {
                Ok(r) if r.digest().is_none() && r.tag().is_none_or(|t| t == "latest") => {
                    Self::Always
                }
                _ => Self::IfNotPresent,
            },
        }
    }
}

/// Parses and normalizes an image reference (`hello:v1` → `docker.io/library/hello:v1`).
pub fn parse_reference(image: &str) -> Result<Reference, ImageError> {
    Reference::try_from(image).map_err(|e| ImageError::InvalidName {
        reference: image.to_string(),
        message: e.to_string(),
    })
}

/// Whether plain HTTP is used for `registry`: configured insecure, or loopback (as Docker does).
fn plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    insecure.iter().any(|r| r == registry || r == host)
        || host == "localhost"
        || host.starts_with("127.")
        || host == "[::1]"
}

fn client_for(registry: &str, insecure: &[String]) -> Client {
    let protocol = if plain_http(registry, insecure) {
        ClientProtocol::HttpsExcept(vec![registry.to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        // An index: take the wasm entry (os wasip1/wasip2/wasi, architecture wasm).
        platform_resolver: Some(Box::new(|entries| {
            entries
                .iter()
                .find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.architecture.to_string() == "wasm")
                })
                .map(|e| e.digest.clone())
        })),
        ..Default::default()
    })
}

/// The kubelet's images: the content store plus registry access.
#[derive(Clone)]
pub struct Images {
    store: ContentStore,
    insecure: Arc<Vec<String>>,
}

impl Images {
    pub fn new(store: ContentStore, insecure_registries: Vec<String>) -> Self {
        Self {
            store,
            insecure: Arc::new(insecure_registries),
        }
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// Makes `image` present per `policy` and returns its record and the wasm blob's path.
    pub async fn ensure(
        &self,
        image: &str,
        policy: PullPolicy,
        auth: &RegistryAuth,
    ) -> Result<(ImageRecord, PathBuf), ImageError> {
        let reference = parse_reference(image)?;
        let local = self.store.lookup(&reference.whole());
        let record = match (policy, local) {
            (PullPolicy::Never, Some(r)) | (PullPolicy::IfNotPresent, Some(r)) => r,
            (PullPolicy::Never, None) => return Err(ImageError::NeverPull(image.to_string())),
            _ => self.pull(&reference, auth).await?,
        };
        let path = self.store.blob_path(&record.wasm_digest);
        Ok((record, path))
    }

    /// Pulls `reference` from its registry into the store, verifying every digest.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<ImageRecord, ImageError> {
        let whole = reference.whole();
        let pull_err = |e: oci_client::errors::OciDistributionError| ImageError::Pull {
            reference: whole.clone(),
            message: e.to_string(),
        };
        let client = client_for(reference.resolve_registry(), &self.insecure);
        let (manifest, manifest_digest, config) = client
            .pull_manifest_and_config(reference, auth)
            .await
            .map_err(pull_err)?;
        if let Some(asked) = reference.digest() {
            if asked != manifest_digest {
                return Err(ImageError::DigestMismatch {
                    expected: asked.to_string(),
                    actual: manifest_digest,
                });
            }
        }
        let wasm_layer = manifest
            .layers
            .iter()
            .find(|l| l.media_type == WASM_LAYER || l.media_type == WASM_LAYER_V1);
        let tar_layer = manifest
            .layers
            .iter()
            .find(|l| TAR_LAYERS.contains(&l.media_type.as_str()));
        let wasm_digest = match (wasm_layer, tar_layer) {
            (Some(layer), _) => {
                if self.store.blob_path(&layer.digest).exists() {
                    layer.digest.clone()
                } else {
                    let mut bytes = Vec::new();
                    client
                        .pull_blob(reference, layer, &mut bytes)
                        .await
                        .map_err(pull_err)?;
                    self.store.put_blob(&bytes, Some(&layer.digest))?
                }
            }
            (None, Some(layer)) => {
                let mut bytes = Vec::new();
                client
                    .pull_blob(reference, layer, &mut bytes)
                    .await
                    .map_err(pull_err)?;
                let actual = sha256_digest(&bytes);
                if actual != layer.digest {
                    return Err(ImageError::DigestMismatch {
                        expected: layer.digest.clone(),
                        actual,
                    });
                }
                let entrypoint = entrypoint(&config);
                let wasm = wasm_from_tar(
                    &bytes,
                    layer.media_type.ends_with("gzip"),
                    entrypoint.as_deref(),
                )
                .map_err(|message| ImageError::BadLayer {
                    reference: whole.clone(),
                    digest: layer.digest.clone(),
                    message,
                })?;
                self.store.put_blob(&wasm, None)?
            }
            (None, None) => {
                return Err(ImageError::NoWasmLayer {
                    reference: whole.clone(),
                    seen: manifest
                        .layers
                        .iter()
                        .map(|l| l.media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        };
        let record = ImageRecord {
            reference: whole,
            image_id: format!(
                "{}/{}@{manifest_digest}",
                reference.registry(),
                reference.repository()
            ),
            wasm_digest,
        };
        self.store.tag(&record)?;
        Ok(record)
    }
}

/// The image config's `config.Entrypoint[0]`, when it names a `.wasm` file.
fn entrypoint(config: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(config).ok()?;
    let first = v.pointer("/config/Entrypoint/0")?.as_str()?;
    first
        .ends_with(".wasm")
        .then(|| first.trim_start_matches('/').to_string())
}

/// The `.wasm` inside an image layer tar: the entrypoint's file if named, else the first one.
fn wasm_from_tar(bytes: &[u8], gzip: bool, entrypoint: Option<&str>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| format!("not a tar: {e}"))?;
    let mut first: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the tar: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| format!("reading the tar: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if !path.ends_with(".wasm") {
            continue;
        }
        let wanted = entrypoint.is_some_and(|e| e == path);
        if !wanted && first.is_some() {
            continue;
        }
        let mut wasm = Vec::new();
        entry
            .read_to_end(&mut wasm)
            .map_err(|e| format!("reading {path}: {e}"))?;
        if wanted {
            return Ok(wasm);
        }
        first = Some(wasm);
    }
    first.ok_or_else(|| "the layer holds no .wasm file".to_string())
}

/// `wasmkube image import FILE.wasm REF --data-dir DIR`: loads a module or component into the
/// node content store under `data_dir` (the kubelet's, see [`crate::KubeletConfig::data_dir`])
/// without a registry; a running kubelet sees it at its next start of a container.
pub fn import(data_dir: &Path, file: &Path, image: &str) -> Result<ImageRecord, ImageError> {
    let reference = parse_reference(image)?;
    let bytes = std::fs::read(file).map_err(|source| ImageError::Store {
        path: file.to_path_buf(),
        source,
    })?;
    detect(&bytes).map_err(|e| ImageError::NotWasm {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let store = ContentStore::open(&crate::images_dir(data_dir))?;
    let wasm_digest = store.put_blob(&bytes, None)?;
    let record = ImageRecord {
        reference: reference.whole(),
        image_id: format!(
            "{}/{}@{wasm_digest}",
            reference.registry(),
            reference.repository()
        ),
        wasm_digest,
    };
    store.tag(&record)?;
    Ok(record)
}

/// `wasmkube push FILE.wasm REF [--insecure]`: pushes the CNCF wasm OCI artifact (config
/// `application/vnd.wasm.config.v0+json` with `os` wasip1 or wasip2 from the bytes, one
/// `application/wasm` layer). Returns the manifest URL.
pub async fn push(
    file: &Path,
    image: &str,
    insecure: bool,
    auth: &RegistryAuth,
) -> Result<String, ImageError> {
    let reference = parse_reference(image)?;
    let bytes = std::fs::read(file).map_err(|source| ImageError::Store {
        path: file.to_path_buf(),
        source,
    })?;
    let kind = detect(&bytes).map_err(|e| ImageError::NotWasm {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let digest = sha256_digest(&bytes);
    let os = match kind {
        WasmKind::Module => "wasip1",
        WasmKind::Component => "wasip2",
    };
    let config = serde_json::json!({
        "created": jiff::Timestamp::now().to_string(),
        "architecture": "wasm",
        "os": os,
        "layerDigests": [digest],
    });
    let config = Config {
        data: serde_json::to_vec(&config)
            .map_err(|e| ImageError::Push {
                reference: reference.whole(),
                message: e.to_string(),
            })?
            .into(),
        media_type: WASM_CONFIG.into(),
        annotations: None,
    };
    let layers = [ImageLayer {
        data: bytes.into(),
        media_type: WASM_LAYER.into(),
        annotations: None,
    }];
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.artifact_type = Some(WASM_CONFIG.into());
    let registry = reference.resolve_registry().to_string();
    let insecure_list = if insecure { vec![registry] } else { Vec::new() };
    let client = client_for(reference.resolve_registry(), &insecure_list);
    let response = client
        .push(&reference, &layers, config, auth, Some(manifest))
        .await
        .map_err(|e| ImageError::Push {
            reference: reference.whole(),
            message: e.to_string(),
        })?;
    Ok(response.manifest_url)
}

/// The registry credentials in a `kubernetes.io/dockerconfigjson` secret's data for `registry`.
pub fn auth_from_dockerconfig(json: &[u8], registry: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(k, e)| {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or(k);
        (host == registry).then_some(e)
    })?;
    if let (Some(u), Some(p)) = (
        entry.get("username").and_then(|v| v.as_str()),
        entry.get("password").and_then(|v| v.as_str()),
    ) {
        return Some(RegistryAuth::Basic(u.into(), p.into()));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.get("auth")?.as_str()?)
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(RegistryAuth::Basic(u.into(), p.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_and_policies_defaulted() {
        assert_eq!(
            parse_reference("hello:v1").unwrap().whole(),
            "docker.io/library/hello:v1"
        );
        assert_eq!(
            PullPolicy::resolve(None, "localhost:5000/x:v1"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(PullPolicy::resolve(None, "x"), PullPolicy::Always);
        assert_eq!(PullPolicy::resolve(None, "x:latest"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::resolve(Some("Never"), "x:latest"),
            PullPolicy::Never
        );
        assert!(matches!(
            parse_reference("UPPER CASE!"),
            Err(ImageError::InvalidName { .. })
        ));
    }

    #[test]
    fn plain_http_only_for_loopback_or_configured_registries() {
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("127.0.0.1:39999", &[]));
        assert!(!plain_http("ghcr.io", &[]));
        assert!(plain_http("reg.internal:5000", &["reg.internal".into()]));
    }

    #[test]
    fn import_stores_by_digest_and_tags_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("m.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let rec = import(dir.path(), &wasm, "hello:v1").unwrap();
        assert_eq!(rec.wasm_digest, sha256_digest(b"\0asm\x01\0\0\0"));
        let store = ContentStore::open(&crate::images_dir(dir.path())).unwrap();
        assert_eq!(store.lookup("docker.io/library/hello:v1"), Some(rec));
        std::fs::write(&wasm, b"not wasm").unwrap();
        assert!(matches!(
            import(dir.path(), &wasm, "hello:v2"),
            Err(ImageError::NotWasm { .. })
        ));
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let err = store.put_blob(b"abc", Some("sha256:00")).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn the_wasm_in_an_image_tar_is_found_by_entrypoint_or_suffix() {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("etc/readme.txt", &b"hi"[..]),
            ("a.wasm", b"\0asmA"),
            ("app/main.wasm", b"\0asmB"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, data).unwrap();
        }
        let plain = builder.into_inner().unwrap();
        assert_eq!(wasm_from_tar(&plain, false, None).unwrap(), b"\0asmA");
        assert_eq!(
            wasm_from_tar(&plain, false, Some("app/main.wasm")).unwrap(),
            b"\0asmB"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(wasm_from_tar(&gz, true, None).unwrap(), b"\0asmA");
        assert!(wasm_from_tar(b"not a tar at all", false, None).is_err());
        assert_eq!(
            entrypoint(r#"{"config":{"Entrypoint":["/app/main.wasm"]}}"#).as_deref(),
            Some("app/main.wasm")
        );
    }

    #[test]
    fn docker_config_secrets_give_basic_auth() {
        let json = br#"{"auths":{"https://reg.example:5000":{"auth":"dTpw"}}}"#;
        assert!(matches!(
            auth_from_dockerconfig(json, "reg.example:5000"),
            Some(RegistryAuth::Basic(u, p)) if u == "u" && p == "p"
        ));
        assert!(auth_from_dockerconfig(json, "other").is_none());
    }
}
