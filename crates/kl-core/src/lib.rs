//! The lookup side of kl: configuration, backends, the engine and the
//! persistent cache.
//!
//! This crate turns a raw indicator taken from an event into an
//! [`Outcome`], asking a [`Backend`] (the TIP API, or a folder of recorded
//! answers) at most once per distinct indicator, through the [`Engine`].
//!
//! It never knows about `$KL` field names: mapping an answer to fields is
//! `kl-schema`'s job, and reading or writing events is the adapters' job.
//! Credentials never leave this crate in printable form: every type holding
//! one redacts it in `Debug` and `Display`, and only the backends that send
//! them can read them.

pub mod backend;
mod config;
mod engine;
mod error;
mod memo;
mod secret;
pub mod store;
mod tls;

pub use backend::{Backend, BackendInfo, FailureKind, Fetched, License, LookupFailure};
pub use config::{
    BackendKind, CacheSetting, Config, ConfigError, Credentials, DEFAULT_API_URL, DEFAULT_OPENTIP_URL, HttpSettings,
    RedisSetting, redact_userinfo,
};
pub use engine::{Engine, EngineOptions, Pending, Probe, Stats, TOKEN_WARNING_DAYS, Waiting};
pub use error::{Error, TransportCause};
pub use kl_model::{Answer, Body, Function, HashKind, Indicator, IndicatorError, ObjectKind, Outcome, Zone, json_type};
pub use secret::Secret;
