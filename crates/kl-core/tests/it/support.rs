//! Helpers shared by the tests: configs pointing at a mock, test certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kl_core::backend::TipBackend;
use kl_core::{Config, Engine, EngineOptions};

pub(crate) const PASSWORD: &str = "pw-9f8e7d-SECRET";
pub(crate) const USER: &str = "kl-user";

/// A config for `url` from YAML lines under `lookup_plugin:` (no environment).
pub(crate) fn config(dir: &Path, url: &str, extra: &str) -> Config {
    let yaml = format!("lookup_plugin:\n  KASPERSKY_API_URL: {url}\n{extra}");
    let path = dir.join("dnifconfig.yml");
    std::fs::write(&path, yaml).unwrap();
    Config::load_with_env(Some(&path), |_| None).unwrap()
}

/// Token auth against `url`.
pub(crate) fn token_config(dir: &Path, url: &str) -> Config {
    config(dir, url, "  KASPERSKY_API_TOKEN: tok-SECRET-42\n")
}

/// Engine options for tests: backoff squeezed to milliseconds.
pub(crate) fn fast_opts(config: &Config) -> EngineOptions {
    EngineOptions {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        retry_after_cap: Duration::from_millis(50),
        ..EngineOptions::from_config(config)
    }
}

pub(crate) fn engine(config: &Config) -> Engine {
    Engine::new(Arc::new(TipBackend::from_config(config).unwrap()), fast_opts(config))
}

/// A self-signed client certificate and key, in one PEM file.
pub(crate) fn client_pem(dir: &Path) -> PathBuf {
    let ck = rcgen::generate_simple_self_signed(vec!["kl-test-client".to_owned()]).unwrap();
    let path = dir.join("client.pem");
    std::fs::write(&path, format!("{}{}", ck.cert.pem(), ck.key_pair.serialize_pem())).unwrap();
    path
}

/// Test data committed beside the tests.
pub(crate) fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}
