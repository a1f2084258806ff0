//! The Kaspersky Threat Intelligence Portal side of kl.
//!
//! This crate knows how to turn a raw indicator taken from an event into a
//! validated [`Indicator`], how to ask the TIP API (or a directory of recorded
//! answers) about it, and how to do that for a whole batch without spending
//! quota twice on the same object ([`Engine`]).
//!
//! It never knows about `$KL` field names: mapping an answer to fields is
//! `kl-schema`'s job, and reading or writing events is the adapters' job.
//! Credentials never leave this crate in printable form: every type holding
//! one redacts it in `Debug` and `Display`.

mod backend;
mod cache;
mod config;
mod engine;
mod error;
mod http;
mod replay;
mod secret;
mod tls;

pub use backend::{Backend, FailureKind, LookupFailure};
pub use cache::{CACHE_FILE, Cache, xdg_cache_dir};
pub use config::{CacheSetting, Config, ConfigError, Credentials, DEFAULT_API_URL};
pub use engine::{Engine, EngineOptions, Stats};
pub use error::Error;
pub use http::{HttpBackend, HttpBackendBuilder};
pub use kl_model::{Answer, Function, HashKind, Indicator, IndicatorError, ObjectKind, Outcome, Zone, json_type};
pub use replay::ReplayBackend;
pub use secret::Secret;
