//! The kubelet API over TLS, as upstream's kubelet with `--client-ca-file`: a self-signed
//! serving certificate made at start (upstream's default `kubelet.crt`; the apiserver does not
//! verify it, as upstream without `--kubelet-certificate-authority`), and client certificates
//! verified against the cluster CA, their subject's CN the user and O the groups. Callers
//! without a certificate still present a bearer token ([`crate::authn`]).

use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Who a verified client certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name.
    pub name: String,
    /// The subject's organizations.
    pub groups: Vec<String>,
}

/// Why the kubelet API's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the kubelet's serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("kubelet API TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("kubelet API TLS: the client CA: {0}")]
    ClientCa(String),
}

/// A server configuration for node `node` at `address`: a fresh self-signed certificate, client
/// certificates optional but, when presented, verified against `client_ca` (DER).
pub fn server_config(
    node: &str,
    address: IpAddr,
    client_ca: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let names = vec![
        node.to_string(),
        address.to_string(),
        "localhost".to_string(),
    ];
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node}@kubelet"));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in client_ca {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user and groups a (verified) client certificate (DER) names.
pub fn identity(cert: &[u8]) -> Option<PeerIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(PeerIdentity { name, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "wasmkube:kubelet-api");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            identity(cert.der().as_ref()),
            Some(PeerIdentity {
                name: "kube-apiserver-kubelet-client".into(),
                groups: vec!["wasmkube:kubelet-api".into()],
            })
        );
    }

    #[test]
    fn a_server_configuration_is_made_for_a_node() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        server_config("n1", IpAddr::from([127, 0, 0, 1]), &[ca.der().to_vec()])
            .expect("a configuration");
    }
}
