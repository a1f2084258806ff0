//! TLS against a local rustls server with certificates made here: the
//! client identity is presented, the extra CA is trusted, and a server the
//! client does not trust is refused.

use std::sync::Arc;

use kl_core::{Function, Outcome};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::support::*;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ca { cert: params.self_signed(&key).unwrap(), key }
}

fn leaf(ca: &Ca, cn: &str, ip_san: bool) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if ip_san {
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    }
    (params.signed_by(&key, &ca.cert, &ca.key).unwrap(), key)
}

/// Starts a TLS server that requires a client certificate from `client_ca`
/// and reports the client certificate it saw on the channel.
async fn server(server_ca: &Ca, client_ca: &Ca) -> (u16, mpsc::UnboundedReceiver<Vec<CertificateDer<'static>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = leaf(server_ca, "kl-test-server", true);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.cert.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
                let _ = tx.send(peer);
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"Zone":"Red"}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn client_identity_is_presented_and_the_extra_ca_trusted() {
    let server_ca = ca("kl test server CA");
    let client_ca = ca("kl test client CA");
    let (port, mut seen) = server(&server_ca, &client_ca).await;

    let dir = tempfile::tempdir().unwrap();
    let (client_cert, client_key) = leaf(&client_ca, "kl-test-client", false);
    let pem = dir.path().join("client.pem");
    std::fs::write(&pem, format!("{}{}", client_cert.pem(), client_key.serialize_pem())).unwrap();
    let ca_pem = dir.path().join("extra-ca.pem");
    std::fs::write(&ca_pem, server_ca.cert.pem()).unwrap();

    let cfg = config(
        dir.path(),
        &format!("https://127.0.0.1:{port}/api"),
        &format!(
            "  KASPERSKY_API_USERNAME: {USER}\n  KASPERSKY_API_PASSWORD: {PASSWORD}\n  KASPERSKY_API_CERT_PATH: client.pem\n  KASPERSKY_CA_CERT_PATH: extra-ca.pem\n"
        ),
    );
    let out = engine(&cfg).lookup(Function::IpReport, "8.8.8.8").await;
    assert!(matches!(out, Outcome::Data(_)), "{out:?}");
    let presented = seen.recv().await.unwrap();
    assert_eq!(presented.first(), Some(client_cert.der()), "the server saw our client certificate");
}

#[tokio::test]
async fn an_untrusted_server_is_refused() {
    let server_ca = ca("kl test server CA");
    let client_ca = ca("kl test client CA");
    let (port, _seen) = server(&server_ca, &client_ca).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = client_pem(dir.path());
    // No KASPERSKY_CA_CERT_PATH: the server's CA is unknown.
    let cfg = config(
        dir.path(),
        &format!("https://127.0.0.1:{port}/api"),
        &format!(
            "  KASPERSKY_API_USERNAME: {USER}\n  KASPERSKY_API_PASSWORD: {PASSWORD}\n  KASPERSKY_API_CERT_PATH: {}\n  KL_RETRIES: 3\n",
            pem.display()
        ),
    );
    let engine = engine(&cfg);
    let out = engine.lookup(Function::IpReport, "8.8.8.8").await;
    let Outcome::Failed(msg) = out else { panic!("{out:?}") };
    assert!(msg.contains("not trusted") && msg.contains("KASPERSKY_CA_CERT_PATH"), "{msg}");
    // Permanent: not retried, and nothing more is sent in this run.
    let later = engine.lookup(Function::IpReport, "8.8.4.4").await;
    let Outcome::Failed(later) = later else { panic!("{later:?}") };
    assert!(later.starts_with("not sent: TLS"), "{later}");
    let s = engine.stats();
    assert_eq!((s.requests, s.retries), (1, 0), "{s:?}");
    assert!(engine.fatal().is_some());
}

#[tokio::test]
async fn a_refused_client_certificate_stops_the_run() {
    let server_ca = ca("kl test server CA");
    let client_ca = ca("kl test client CA");
    let (port, _seen) = server(&server_ca, &client_ca).await;
    let dir = tempfile::tempdir().unwrap();
    // A self-signed client certificate the server's CA did not issue.
    let pem = client_pem(dir.path());
    let ca_file = dir.path().join("server-ca.pem");
    std::fs::write(&ca_file, server_ca.cert.pem()).unwrap();
    let cfg = config(
        dir.path(),
        &format!("https://127.0.0.1:{port}/api"),
        &format!(
            "  KASPERSKY_API_USERNAME: {USER}\n  KASPERSKY_API_PASSWORD: {PASSWORD}\n  KASPERSKY_API_CERT_PATH: {}\n  KASPERSKY_CA_CERT_PATH: {}\n  KL_RETRIES: 3\n",
            pem.display(),
            ca_file.display()
        ),
    );
    let engine = engine(&cfg);
    let out = engine.lookup(Function::IpReport, "8.8.8.8").await;
    let Outcome::Failed(msg) = out else { panic!("{out:?}") };
    assert!(msg.contains("refused our client certificate") && msg.contains("KASPERSKY_API_CERT_PATH"), "{msg}");
    let s = engine.stats();
    assert_eq!((s.requests, s.retries), (1, 0), "permanent, not retried: {s:?}");
}
