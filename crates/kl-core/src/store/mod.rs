//! The persistent cache of answers, behind one interface.
//!
//! - [`sqlite`]: an embedded database in a folder, shared by the processes
//!   of one host (the default);
//! - [`redis`]: a Redis server, shared by processes on many hosts, which
//!   also lets one process ask the API for a new indicator while the
//!   others wait for its answer, and shares the account's quota figures.
//!
//! A store keeps raw answers (the sections, not fields), so a corrected
//! field mapping applies to stored answers too. Failures are never stored.
//! A store must never stop a lookup: whatever goes wrong with it is logged
//! once and the lookup goes on without it.

pub(crate) mod redis;
pub(crate) mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use kl_model::{Answer, Body, Function, Indicator};

pub use self::redis::RedisStore;
pub use sqlite::{CACHE_FILE, SqliteStore, xdg_cache_dir};

use crate::backend::License;

/// Work on a decoded answer that its first reader would do anyway (a
/// stream renders it), done where the answer is decoded.
///
/// The work makes the body's rendering for the settings `key` stands for
/// ([`Body::render_into`]). A store may keep that rendering with the
/// answer and hand it back with the answer later ([`Body::adopt_rendering`])
/// rather than have it made again, so `key` must stand for everything the
/// rendering depends on besides the answer, the build of kl included.
#[derive(Clone)]
pub struct Prepare {
    pub key: u64,
    pub run: std::sync::Arc<dyn Fn(&Body) + Send + Sync>,
}

impl fmt::Debug for Prepare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prepare({:#x})", self.key)
    }
}

/// What to do about a key that missed, when other processes share the
/// store ([`Store::claim`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ask the API; nobody else is known to be asking.
    Ask,
    /// Ask the API: this process holds the key's lock, and must
    /// [`Store::release`] it when done.
    Mine,
    /// Another process asked meanwhile; here is its answer.
    Answered(Answer),
}

/// A persistent cache of answers.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A fresh answer stored under `key`, if there is one.
    async fn get(&self, key: &str) -> Option<Answer>;

    /// As [`Store::get`], with `prepare` run on the answer's body. A store
    /// that decodes on a thread of its own runs it there, off the runtime's
    /// thread; the others leave the work to the caller.
    async fn get_prepared(&self, key: &str, _prepare: Prepare) -> Option<Answer> {
        self.get(key).await
    }

    /// Stores `answer` under `key` for `ttl`. Returns at once: the write
    /// happens off the caller's thread, and is durable after [`Store::flush`].
    fn put(&self, key: &str, answer: &Answer, ttl: Duration);

    /// As [`Store::put`], keeping the answer's rendering for `prepare`'s
    /// settings with it where the store can (made by then, or made by the
    /// store's thread when it writes).
    fn put_prepared(&self, key: &str, answer: &Answer, ttl: Duration, _prepare: Prepare) {
        self.put(key, answer, ttl);
    }

    /// Waits until every answer put so far is written.
    async fn flush(&self);

    /// Where the store is, for people (never a password).
    fn describe(&self) -> String;

    /// For a key that missed: whether this process should ask the API or
    /// another one is already asking (then wait, briefly, for its answer).
    /// A store of one host's processes never coordinates them.
    async fn claim(&self, _key: &str) -> Claim {
        Claim::Ask
    }

    /// Gives up the lock [`Claim::Mine`] took, after the answer is put (or
    /// the lookup failed), so waiters see the answer or try themselves.
    fn release(&self, _key: &str) {}

    /// Records the account figures last seen under `scope`, for the other
    /// processes' summaries. Returns at once, like [`Store::put`].
    fn put_license(&self, _scope: &str, _license: &License) {}

    /// The account figures another process last recorded under `scope`.
    async fn license(&self, _scope: &str) -> Option<License> {
        None
    }

    /// Whether the store answers now (for `check`); why not, if it does not.
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The key an answer is stored under: the backend's scope (name, endpoint,
/// request parameters), the sections asked for, and the normalised
/// indicator. Answers that could differ never share a key.
pub fn key(scope: &str, function: Function, indicator: &Indicator) -> String {
    // Joined by hand: `format!` costs several times as much, once per
    // lookup that reaches the store.
    let sections = function.sections_param();
    let parts = [scope, &sections, indicator.kind().api_type(), indicator.as_str()];
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        key.push_str(part);
    }
    key
}
