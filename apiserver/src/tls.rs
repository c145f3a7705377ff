//! The cluster's PKI: a CA generated on first start and a serving certificate for the
//! apiserver, kept under `DIR/pki/`. Clients trust the CA through the kubeconfig.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("loading the serving certificate: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}: not a PEM private key")]
    BadKey(PathBuf),
}

/// The CA and the apiserver's serving certificate, as PEM.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    server_key_pem: String,
    ca_key_pem: String,
}

/// The CA's subject: rebuilding the same parameters with the stored key signs certificates
/// that chain to the stored CA certificate.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "wasmkube-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Valid for ten years from the first start.
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(p)
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Writes a file readable only by its owner (keys, tokens), atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Pki {
    /// Loads `dir` (`ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key`), creating what is
    /// missing. The serving certificate is issued again when `sans` (DNS names or IPs) changed.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Self, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.into(),
            source,
        })?;
        let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca_key = match read(&ca_key_path)? {
            Some(pem) => {
                KeyPair::from_pem(&pem).map_err(|_| TlsError::BadKey(ca_key_path.clone()))?
            }
            None => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write_private(&ca_key_path, &key.serialize_pem())?;
                write_private(&ca_cert_path, &cert.pem())?;
                // A new CA invalidates any serving certificate signed by an old one.
                let _ = std::fs::remove_file(dir.join("apiserver.sans"));
                key
            }
        };
        let ca_key_pem = ca_key.serialize_pem();
        let ca_cert_pem = read(&ca_cert_path)?.ok_or_else(|| TlsError::Io {
            path: ca_cert_path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;

        let (cert_path, key_path, sans_path) = (
            dir.join("apiserver.crt"),
            dir.join("apiserver.key"),
            dir.join("apiserver.sans"),
        );
        let wanted = sans.join(",");
        let existing = (read(&cert_path)?, read(&key_path)?, read(&sans_path)?);
        let (server_cert_pem, server_key_pem) = match existing {
            (Some(c), Some(k), Some(s)) if s == wanted => (c, k),
            _ => {
                let issuer = Issuer::new(ca_params()?, ca_key);
                let mut p = CertificateParams::new(sans.to_vec())?;
                p.distinguished_name
                    .push(DnType::CommonName, "wasmkube-apiserver");
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p.not_after = rcgen::date_time_ymd(2036, 1, 1);
                let key = KeyPair::generate()?;
                let cert = p.signed_by(&key, &issuer)?;
                write_private(&key_path, &key.serialize_pem())?;
                write_private(&cert_path, &cert.pem())?;
                write_private(&sans_path, &wanted)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        Ok(Self {
            dir: dir.into(),
            ca_cert_pem,
            server_cert_pem,
            server_key_pem,
            ca_key_pem,
        })
    }

    /// The apiserver's TLS client configuration toward kubelets (kubeadm's
    /// `apiserver-kubelet-client`): a client certificate for user `user` in group `group`,
    /// signed by the CA (`kubelet-client.crt`, issued on first use and again when the subject
    /// changes). Kubelets verify it against the CA; it cannot be replayed as a token could.
    ///
    /// The kubelets' serving certificates are self-signed, so they are not verified: upstream's
    /// default too (without `--kubelet-certificate-authority`).
    pub fn kubelet_client_config(
        &self,
        user: &str,
        group: &str,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert_path, key_path, subject_path) = (
            self.dir.join("kubelet-client.crt"),
            self.dir.join("kubelet-client.key"),
            self.dir.join("kubelet-client.subject"),
        );
        let wanted = format!("CN={user},O={group}");
        let existing = (read(&cert_path)?, read(&key_path)?, read(&subject_path)?);
        let (cert_pem, key_pem) = match existing {
            (Some(c), Some(k), Some(s)) if s == wanted => (c, k),
            _ => {
                let ca_key = KeyPair::from_pem(&self.ca_key_pem)
                    .map_err(|_| TlsError::BadKey(self.dir.join("ca.key")))?;
                let issuer = Issuer::new(ca_params()?, ca_key);
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.distinguished_name.push(DnType::CommonName, user);
                p.distinguished_name.push(DnType::OrganizationName, group);
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p.not_after = rcgen::date_time_ymd(2036, 1, 1);
                let key = KeyPair::generate()?;
                let cert = p.signed_by(&key, &issuer)?;
                write_private(&key_path, &key.serialize_pem())?;
                write_private(&cert_path, &cert.pem())?;
                write_private(&subject_path, &wanted)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TlsError::BadKey(cert_path.clone()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| TlsError::BadKey(key_path.clone()))?;
        kubelet_connector(Some((certs, key)))
    }

    /// A rustls server configuration for the apiserver (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TlsError::BadKey(self.dir.join("apiserver.crt")))?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|_| TlsError::BadKey(self.dir.join("apiserver.key")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS client configuration for kubelets' self-signed serving certificates (not verified),
/// presenting `client` (certificate chain and key) when given.
pub fn kubelet_connector(
    client: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedServer(provider)));
    let config = match client {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (still checking the handshake's signatures): for kubelets,
/// whose serving certificates are self-signed.
#[derive(Debug)]
struct UnverifiedServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_created_once_and_reissued_when_names_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = Pki::load_or_create(dir.path(), &sans).expect("create");
        let b = Pki::load_or_create(dir.path(), &sans).expect("load");
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.server_cert_pem, b.server_cert_pem);
        let more = vec!["localhost".to_string(), "10.1.2.3".to_string()];
        let c = Pki::load_or_create(dir.path(), &more).expect("reissue");
        assert_eq!(a.ca_cert_pem, c.ca_cert_pem, "the CA stays");
        assert_ne!(a.server_cert_pem, c.server_cert_pem);
        c.server_config().expect("rustls accepts the certificate");
        c.kubelet_client_config("u", "g")
            .expect("a client certificate");
        let again = Pki::load_or_create(dir.path(), &more).expect("load");
        again.kubelet_client_config("u", "g").expect("kept");
        assert!(dir.path().join("kubelet-client.crt").exists());
    }
}
