//! The rustls client configuration: trust roots and the client identity.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

const CERT_KEY: &str = "KASPERSKY_API_CERT_PATH";
const CA_KEY: &str = "KASPERSKY_CA_CERT_PATH";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the TLS configuration: the Mozilla roots plus the extra CA, and the
/// client identity when a PEM is configured.
pub(crate) fn client_config(cert: Option<&Path>, extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let pem = read(CA_KEY, path)?;
        let certs = certificates(CA_KEY, path, &pem)?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ConfigError::new(CA_KEY, format!("{}: unusable CA certificate: {e}", path.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::general(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let (certs, key) = identity(path)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                ConfigError::new(
                    CERT_KEY,
                    format!("{}: the private key does not fit the certificate ({e})", path.display()),
                )
            })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

fn certificates(key: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key, format!("{}: malformed PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, format!("{}: no certificate found in the PEM file", path.display())));
    }
    Ok(certs)
}

/// Reads the client certificate chain and its private key (PKCS#8, PKCS#1
/// RSA or SEC1) from one PEM file, and checks that the two belong together.
fn identity(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
    let pem = read(CERT_KEY, path)?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(ConfigError::new(
            CERT_KEY,
            format!(
                "{}: the private key is encrypted; kl needs it unencrypted (for example `openssl pkey -in key.pem -out plain.pem`) and the file readable only by the SIEM's user",
                path.display()
            ),
        ));
    }
    let certs = certificates(CERT_KEY, path, &pem)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        ConfigError::new(
            CERT_KEY,
            format!(
                "{}: no usable private key in the PEM file ({e}); it must hold the certificate and its key",
                path.display()
            ),
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| ConfigError::new(CERT_KEY, format!("{}: unusable private key: {e}", path.display())))?;
    match rustls::sign::CertifiedKey::new(certs.clone(), signing).keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(ConfigError::new(
                CERT_KEY,
                format!("{}: the private key does not fit the certificate ({e})", path.display()),
            ));
        }
    }
    Ok((certs, key))
}
