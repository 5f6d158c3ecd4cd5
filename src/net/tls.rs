//! DICOM over TLS (PS3.15 Annex B, the BCP 195 profile): the rustls configuration of the TLS
//! listener. TLS 1.3 and 1.2 only, with rustls's cipher suites (ECDHE key exchange and AEAD
//! ciphers, as BCP 195 asks); with a CA file, clients must present a certificate it signed.
//! And the client side, for associations we open to peers marked `tls = true`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why the TLS listener cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The server side of the TLS listener: `cert` (PEM chain) and `key`, and when `ca` is given,
/// client certificates required and verified against it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for der in certificates(ca, "CA certificates")? {
                roots.add(der)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    Ok(Arc::new(builder.with_single_cert(
        certificates(cert, "certificate")?,
        key,
    )?))
}

/// The client side, for C-MOVE sub-associations to peers with `tls = true`: their
/// certificates are checked against `ca`, and we present `cert` (whose extended key usage
/// should include clientAuth).
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certificates(cert, "certificate")?, key)?;
    Ok(Arc::new(config))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in certificates(ca, "CA certificates")? {
        roots.add(der)?;
    }
    Ok(roots)
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}
