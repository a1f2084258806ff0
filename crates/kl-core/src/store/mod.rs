//! The persistent cache of answers, behind one interface.
//!
//! - [`sqlite`]: an embedded database in a folder, shared by the processes
//!   of one host (the default).
//!
//! A store keeps raw answers (the sections, not fields), so a corrected
//! field mapping applies to stored answers too. Failures are never stored.
//! A store must never stop a lookup: whatever goes wrong with it is logged
//! once and the lookup goes on without it.

pub(crate) mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use kl_model::{Answer, Function, Indicator};

pub use sqlite::{CACHE_FILE, SqliteStore, xdg_cache_dir};

/// A persistent cache of answers.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A fresh answer stored under `key`, if there is one.
    async fn get(&self, key: &str) -> Option<Answer>;

    /// Stores `answer` under `key` for `ttl`. Returns at once: the write
    /// happens off the caller's thread, and is durable after [`Store::flush`].
    fn put(&self, key: &str, answer: &Answer, ttl: Duration);

    /// Waits until every answer put so far is written.
    async fn flush(&self);

    /// Where the store is, for people (never a password).
    fn describe(&self) -> String;
}

/// The key an answer is stored under: the backend's scope (name, endpoint,
/// request parameters), the sections asked for, and the normalised
/// indicator. Answers that could differ never share a key.
pub fn key(scope: &str, function: Function, indicator: &Indicator) -> String {
    format!("{scope}|{}|{}|{}", function.sections_param(), indicator.kind().api_type(), indicator.as_str())
}
