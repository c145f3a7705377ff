//! Joining nodes, as kubeadm does with a bearer node credential in place of a client
//! certificate: `wasmkube token create` stores a bootstrap token and prints the join command;
//! `wasmkube kubelet join` reads `kube-public/cluster-info` without trusting the server, pins
//! the CA by the hash it was given, creates its node credential with the bootstrap token, and
//! runs the kubelet with it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use wasmkube_apiserver::secret_tokens::{
    BOOTSTRAP_TOKEN_PREFIX, BOOTSTRAP_TOKEN_TYPE, NAMESPACE, NODE_TOKEN_PREFIX, NODE_TOKEN_TYPE,
};

use crate::kubeconfig;

/// The group of the nodes' bootstrap tokens (kubeadm's `system:bootstrappers:kubeadm:...`).
const NODE_TOKEN_GROUP: &str = "system:bootstrappers:wasmkube:default-node-token";

/// `wasmkube token`.
#[derive(clap::Subcommand)]
pub enum Token {
    /// Create a bootstrap token and print the `wasmkube kubelet join` command that uses it.
    Create(TokenCreateArgs),
}

/// Flags of `wasmkube token create`.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenCreateArgs {
    /// An admin kubeconfig [default: DATA_DIR/kubeconfig].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The data dir of `wasmkube up` whose kubeconfig to use [default: $XDG_DATA_HOME/wasmkube
    /// or ~/.local/share/wasmkube].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How long the token authenticates (0: forever), as upstream's `--ttl`.
    #[arg(long, default_value = "24h", value_parser = crate::parse_duration)]
    pub ttl: Duration,
}

/// Flags of `wasmkube kubelet join`.
#[derive(clap::Args, Clone, Debug)]
pub struct JoinArgs {
    /// The apiserver, e.g. https://HOST:6443.
    #[arg(long)]
    pub server: String,
    /// A bootstrap token from `wasmkube token create` (`<id>.<secret>`).
    #[arg(long)]
    pub token: String,
    /// The CA's pin, `sha256:<hex>` (SHA-256 of its SubjectPublicKeyInfo, as kubeadm's).
    #[arg(long)]
    pub ca_cert_hash: String,
    #[command(flatten)]
    pub node: crate::kubelet::NodeArgs,
}

/// `wasmkube token ...`.
pub async fn token(cmd: Token) -> anyhow::Result<()> {
    let Token::Create(args) = cmd;
    let path = match (&args.kubeconfig, &args.data_dir) {
        (Some(k), _) => k.clone(),
        (None, Some(d)) => d.join("kubeconfig"),
        (None, None) => kubeconfig::default_data_dir()?.join("kubeconfig"),
    };
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    let cluster = current_cluster(&kc)
        .with_context(|| format!("{}: no cluster in the current context", path.display()))?;
    let server = cluster
        .server
        .clone()
        .with_context(|| format!("{}: the cluster has no server", path.display()))?;
    let ca_der = cluster
        .certificate_authority_data
        .as_deref()
        .map(ca_from_base64_pem)
        .transpose()?
        .with_context(|| {
            format!(
                "{}: no certificate-authority-data; joining needs a TLS cluster (not --insecure)",
                path.display()
            )
        })?;
    let hash = ca_cert_hash(&ca_der)?;
    let client = kubeconfig::client_from(kc)
        .await
        .with_context(|| format!("using {}", path.display()))?;
    let id = random_token_chars(6)?;
    let secret = random_token_chars(16)?;
    let mut data = vec![
        ("token-id", id.clone()),
        ("token-secret", secret.clone()),
        ("usage-bootstrap-authentication", "true".to_string()),
        ("auth-extra-groups", NODE_TOKEN_GROUP.to_string()),
    ];
    if !args.ttl.is_zero() {
        let ttl = jiff::SignedDuration::try_from(args.ttl).context("--ttl is too long")?;
        let expires = jiff::Timestamp::now()
            .checked_add(ttl)
            .context("--ttl is too long")?;
        data.push((
            "expiration",
            expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ));
    }
    let object = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{BOOTSTRAP_TOKEN_PREFIX}{id}")),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(BOOTSTRAP_TOKEN_TYPE.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, NAMESPACE)
        .create(&PostParams::default(), &object)
        .await
        .context("creating the bootstrap token Secret")?;
    println!("wasmkube kubelet join --server {server} --token {id}.{secret} --ca-cert-hash {hash}");
    Ok(())
}

/// The cluster of a kubeconfig's current context (or its only cluster).
fn current_cluster(kc: &kube::config::Kubeconfig) -> Option<&kube::config::Cluster> {
    let by_context = kc.current_context.as_ref().and_then(|current| {
        let context = kc.contexts.iter().find(|c| &c.name == current)?;
        let name = &context.context.as_ref()?.cluster;
        kc.clusters.iter().find(|c| &c.name == name)
    });
    by_context
        .or_else(|| kc.clusters.first())
        .and_then(|c| c.cluster.as_ref())
}

/// `n` characters of `[a-z0-9]`, as upstream's bootstrap tokens.
fn random_token_chars(n: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
        // 252 = 7 * 36: dropping larger bytes keeps every character equally likely.
        for b in bytes.into_iter().filter(|b| *b < 252) {
            if out.len() < n {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// kubeadm's CA pin: `sha256:` and the hex SHA-256 of the certificate's SubjectPublicKeyInfo.
pub fn ca_cert_hash(der: &[u8]) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("the CA certificate does not parse: {e}"))?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The first certificate of a kubeconfig's `certificate-authority-data` (base64 of PEM), as DER.
fn ca_from_base64_pem(data: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .context("certificate-authority-data is not base64")?;
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .context("certificate-authority-data holds no certificate")?
        .context("certificate-authority-data is not a PEM certificate")?;
    Ok(cert.to_vec())
}

/// The kubeconfig kubeadm publishes in `kube-public/cluster-info`: the server and its CA, no
/// credentials.
fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: \"\"
  cluster:
    server: {server}
    certificate-authority-data: {}
contexts: []
users: []
current-context: \"\"
",
        base64::engine::general_purpose::STANDARD.encode(ca_pem)
    )
}

/// Creates or updates `kube-public/cluster-info` (key `kubeconfig`), which joining nodes read
/// anonymously before they trust the server.
pub async fn publish_cluster_info(
    client: kube::Client,
    server: &str,
    ca_pem: &str,
) -> anyhow::Result<()> {
    let text = cluster_info_kubeconfig(server, ca_pem);
    let api = Api::<ConfigMap>::namespaced(client, "kube-public");
    let object = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("cluster-info".into()),
            ..Default::default()
        },
        data: Some([("kubeconfig".to_string(), text.clone())].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"data": {"kubeconfig": text}});
            api.patch(
                "cluster-info",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .context("updating kube-public/cluster-info")
        }
        Err(e) => Err(e).context("creating kube-public/cluster-info"),
    }
}

/// What the server answered, for an error message.
fn api_status(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

/// Reads cluster-info without verifying the server, and returns its CA (DER and PEM) once it
/// matches the pin.
async fn discover_ca(server: &str, pin: &str) -> anyhow::Result<(Vec<u8>, String)> {
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let mut config = kube::Config::new(uri);
    // Only this one read is unverified: its answer is trusted only if the CA matches the pin.
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config)?;
    let info = Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .with_context(|| format!("reading kube-public/cluster-info from {server}"))?;
    let text = info
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .context("kube-public/cluster-info has no kubeconfig key")?;
    let kc = kube::config::Kubeconfig::from_yaml(text)
        .context("kube-public/cluster-info: its kubeconfig does not parse")?;
    let data = kc
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.certificate_authority_data.clone())
        .context("kube-public/cluster-info: its kubeconfig has no certificate-authority-data")?;
    let der = ca_from_base64_pem(&data)?;
    let hash = ca_cert_hash(&der)?;
    if !hash.eq_ignore_ascii_case(pin.trim()) {
        anyhow::bail!(
            "the cluster CA's hash is {hash}, not the --ca-cert-hash {pin}: refusing to trust {server}"
        );
    }
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("certificate-authority-data is not base64")?,
    )
    .context("certificate-authority-data is not PEM text")?;
    Ok((der, pem))
}

/// `wasmkube kubelet join`.
pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.ca_cert_hash.starts_with("sha256:"),
        "--ca-cert-hash {:?}: expected sha256:<hex>",
        args.ca_cert_hash
    );
    let node = args
        .node
        .node_name
        .clone()
        .unwrap_or_else(crate::kubelet::default_node_name);
    let existing = args.node.data_dir()?.join("kubeconfig");
    anyhow::ensure!(
        !existing.exists(),
        "{} exists: this data dir already joined a cluster; run `wasmkube kubelet --kubeconfig {}` with the same flags instead",
        existing.display(),
        existing.display()
    );
    let server = args.server.trim_end_matches('/').to_string();
    let (_, ca_pem) = discover_ca(&server, &args.ca_cert_hash).await?;

    // From here on the server is verified with the pinned CA.
    let bootstrap =
        kube::config::Kubeconfig::from_yaml(&kubeconfig::render(&kubeconfig::Access {
            server: &server,
            ca_pem: Some(&ca_pem),
            token: Some(&args.token),
        }))?;
    let client = kubeconfig::client_from(bootstrap).await?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let secret_name = format!("{NODE_TOKEN_PREFIX}{node}");
    let object = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(NODE_TOKEN_TYPE.into()),
        data: Some([("token".to_string(), ByteString(token.clone().into_bytes()))].into()),
        ..Default::default()
    };
    if let Err(e) = Api::<Secret>::namespaced(client, NAMESPACE)
        .create(&PostParams::default(), &object)
        .await
    {
        match api_status(&e) {
            Some((409, _)) => anyhow::bail!(
                "node {node} already joined: its credential exists; delete secret {NAMESPACE}/{secret_name} to rejoin"
            ),
            Some((401, _)) => anyhow::bail!(
                "the apiserver refused the bootstrap token (401 Unauthorized): it is wrong or expired; create one with `wasmkube token create`"
            ),
            Some((code, message)) => {
                anyhow::bail!("creating the node credential: {message} ({code})")
            }
            None => return Err(e).context("creating the node credential"),
        }
    }

    let data_dir = args.node.data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = kubeconfig::write(
        &data_dir,
        &kubeconfig::Access {
            server: &server,
            ca_pem: Some(&ca_pem),
            token: Some(&token),
        },
    )?;
    wait_until_accepted(&path, &node).await?;
    println!(
        "wasmkube kubelet join: node {node} joined {server}; its credential is in {}",
        path.display()
    );
    crate::kubelet::run_node(&path, args.node).await
}

/// Waits until the apiserver knows the new credential (it learns Secret-held tokens from its
/// watch, a moment after the create).
async fn wait_until_accepted(kubeconfig_path: &std::path::Path, node: &str) -> anyhow::Result<()> {
    let client = kubeconfig::client(kubeconfig_path).await?;
    let nodes = Api::<Node>::all(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = match nodes.get_opt(node).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match api_status(&e) {
            Some((401, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => return Err(e).context("using the new node credential"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chars_are_lowercase_alphanumerics() {
        let t = random_token_chars(16).expect("random");
        assert_eq!(t.len(), 16);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    #[test]
    fn the_ca_pin_is_the_sha256_of_the_public_key_info() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = wasmkube_apiserver::tls::Pki::load_or_create(dir.path(), &["localhost".into()])
            .expect("pki");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pki.ca_cert_pem);
        let der = ca_from_base64_pem(&b64).expect("CA");
        let hash = ca_cert_hash(&der).expect("hash");
        // The key's SubjectPublicKeyInfo as rcgen encodes it, hashed independently.
        let key = std::fs::read_to_string(dir.path().join("ca.key")).expect("key");
        let key = rcgen::KeyPair::from_pem(&key).expect("key");
        use rcgen::PublicKeyData as _;
        use sha2::Digest as _;
        let want: String = sha2::Sha256::digest(key.subject_public_key_info())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, format!("sha256:{want}"));
    }
}
