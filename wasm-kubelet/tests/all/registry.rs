//! Pulls from a real `docker-registry` (Debian package) on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use serde_json::json;

use crate::cluster::{phase, terminated, waiting_reason, Cluster};
use crate::guests::{self, Target};

/// A registry process with its storage in a temp dir; killed on drop.
pub struct Registry {
    pub addr: String,
    pub root: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/setup installs it)");
        let addr = format!("127.0.0.1:{port}");
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "registry did not listen on {addr}");
        Self {
            addr,
            root,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_and_p2_images_pushed_to_a_registry_are_pulled_and_run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reg = Registry::start().await;
    let c = Cluster::start().await;
    for (tag, target) in [("p1", Target::P1), ("p2", Target::P2)] {
        let image = format!("{}/wasmkube/hello:{tag}", reg.addr);
        let url = wasmkube_kubelet::push(
            &guests::path("hello", target),
            &image,
            false,
            &RegistryAuth::Anonymous,
        )
        .await
        .expect("push");
        assert!(url.contains("/v2/wasmkube/hello/manifests/"), "{url}");
        let name = format!("pulled-{tag}");
        c.create_pod(
            &name,
            json!({"restartPolicy": "Never",
                   "containers": [{"name": "c", "image": image, "imagePullPolicy": "Always"}]}),
        )
        .await;
        let pod = c.wait_pod(&name, 60, |p| phase(p) == "Succeeded").await;
        assert_eq!(terminated(&pod, "c").unwrap().exit_code, 0);
        let id = &crate::cluster::container(&pod, "c").image_id;
        assert!(
            id.starts_with(&format!("{}/wasmkube/hello@sha256:", reg.addr)),
            "{id}"
        );
    }
    // A missing image waits in ErrImagePull / ImagePullBackOff with the registry's message.
    c.create_pod(
        "missing",
        json!({"containers": [{"name": "c", "image": format!("{}/wasmkube/absent:v1", reg.addr)}]}),
    )
    .await;
    let pod = c
        .wait_pod("missing", 60, |p| {
            waiting_reason(p, "c").is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
        .await;
    let st = pod.status.unwrap().container_statuses.unwrap()[0].clone();
    let msg = st
        .state
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap_or_default();
    assert!(msg.contains("absent"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_does_not_match_its_digest_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reg = Registry::start().await;
    let c = Cluster::start().await;
    // A guest the node has not imported: its blob must come from the registry.
    let wasm = guests::path("stack-overflow", Target::P1);
    let image = format!("{}/wasmkube/tampered:v1", reg.addr);
    wasmkube_kubelet::push(&wasm, &image, false, &RegistryAuth::Anonymous)
        .await
        .expect("push");
    // Corrupt the stored layer in place (same length, one byte flipped).
    let hex = guests::digest(&wasm)
        .trim_start_matches("sha256:")
        .to_string();
    let data = reg
        .root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut bytes = std::fs::read(&data).expect("layer blob in registry storage");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    c.create_pod(
        "tampered",
        json!({"containers": [{"name": "c", "image": image}]}),
    )
    .await;
    let pod = c
        .wait_pod("tampered", 60, |p| {
            waiting_reason(p, "c").is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
        .await;
    let st = pod.status.unwrap().container_statuses.unwrap()[0].clone();
    let msg = st
        .state
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap_or_default();
    assert!(msg.to_lowercase().contains("digest"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_layer_is_a_tar_holding_the_wasm_is_run() {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reg = Registry::start().await;
    let c = Cluster::start().await;
    // What `docker buildx --platform wasi/wasm` produces: an OCI image, one tar+gzip layer.
    let wasm = std::fs::read(guests::path("hello", Target::P2)).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(wasm.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "hello.wasm", &wasm[..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
    let layer = ImageLayer {
        data: gz.finish().unwrap().into(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        annotations: None,
    };
    let config = Config {
        data: serde_json::to_vec(&json!({
            "architecture": "wasm", "os": "wasip2",
            "config": {"Entrypoint": ["/hello.wasm"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap()
        .into(),
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        annotations: None,
    };
    let image = format!("{}/wasmkube/tarred:v1", reg.addr);
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    client
        .push(
            &image.parse().unwrap(),
            &[layer],
            config,
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push image");
    c.create_pod(
        "tarred",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "c", "image": image, "args": ["tar"]}]}),
    )
    .await;
    c.wait_pod("tarred", 60, |p| phase(p) == "Succeeded").await;
    let logs = c.pods().logs("tarred", &Default::default()).await.unwrap();
    assert!(logs.starts_with("hello, tar!"), "{logs}");
}
