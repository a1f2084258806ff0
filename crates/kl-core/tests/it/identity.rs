//! The client identity PEM: accepted forms and clear refusals.

use kl_core::backend::TipBackend;

use crate::support::*;

fn build(dir: &std::path::Path, pem: &std::path::Path) -> Result<TipBackend, kl_core::ConfigError> {
    let cfg = config(
        dir,
        "https://tip.example.com/api",
        &format!(
            "  KASPERSKY_API_USERNAME: {USER}\n  KASPERSKY_API_PASSWORD: {PASSWORD}\n  KASPERSKY_API_CERT_PATH: {}\n",
            pem.display()
        ),
    );
    TipBackend::from_config(&cfg)
}

#[test]
fn pkcs8_pkcs1_and_ec_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &data("client-rsa-pkcs1.pem")).unwrap();
    build(dir.path(), &data("client-rsa-pkcs8.pem")).unwrap();
    build(dir.path(), &client_pem(dir.path())).unwrap();
}

#[test]
fn bad_pems_are_config_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases = [
        (data("client-rsa-encrypted.pem"), "encrypted"),
        (write("mismatch.pem", format!("{}{}", a.cert.pem(), b.key_pair.serialize_pem())), "does not fit"),
        (write("nokey.pem", a.cert.pem()), "no usable private key"),
        (write("nocert.pem", a.key_pair.serialize_pem()), "no certificate"),
        (write("garbage.pem", "hello".to_owned()), "no certificate"),
    ];
    for (pem, expected) in cases {
        let e = build(dir.path(), &pem).unwrap_err();
        assert_eq!(e.key, Some("KASPERSKY_API_CERT_PATH"), "{e}");
        assert!(e.to_string().contains(expected), "{}: {e}", pem.display());
        assert!(!e.to_string().contains(PASSWORD));
    }
}
