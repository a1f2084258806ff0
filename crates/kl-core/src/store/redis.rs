//! The Redis store: one cache for a fleet of processes and hosts.
//!
//! Keys, all under the configured prefix (`kl:` by default):
//!
//! - `<prefix>answer:<store key>`: an answer, the API's sections as compact
//!   JSON, or `404` for "nothing known"; its Redis expiry is the answer's
//!   lifetime (`KL_CACHE_TTL_SECS`, or the Grey one).
//! - `<prefix>lock:<store key>`: held (`SET NX PX`) by the process asking
//!   the API for that key, so the others wait for its answer instead of
//!   asking too. It lapses by itself if its holder dies.
//! - `<prefix>license:<backend scope>`: the account figures last seen.
//!
//! Redis is a help, never a need: every call has a short timeout, and after
//! a failure the store steps aside for a few seconds (lookups go on
//! uncached, with one warning for the run), then tries again. Writes go
//! through one task, in order, pipelined, so a lock is released only after
//! the answer it guarded is written.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kl_model::{Answer, Body};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Claim, Store};
use crate::backend::License;
use crate::config::RedisSetting;

/// The longest one Redis call may take: a hung Redis must not stall
/// enrichment.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failure, Redis is left alone this long before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A lock outlives a holder that died without releasing it by this much
/// at most.
const LOCK_LEASE: Duration = Duration::from_secs(15);
/// How long a process waits for another's answer before asking itself.
const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting process looks for that answer.
const CLAIM_POLL: Duration = Duration::from_millis(20);
/// The account figures are kept this long at most (quotas are daily).
const LICENSE_TTL: Duration = Duration::from_secs(86_400);
/// Writes sent in one pipeline, at most.
const BATCH: usize = 256;
/// What an answer of "nothing known" is stored as.
const NOT_FOUND: &str = "404";

/// A cache in Redis, shared by every process pointed at it.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Option<ConnectionManager>,
    prefix: String,
    health: Health,
    writes: mpsc::UnboundedSender<Write>,
    /// This process's lock value.
    token: String,
}

enum Write {
    Answer { key: String, value: String, ttl: Duration },
    Release { key: String },
    License { key: String, value: String },
    Flush(oneshot::Sender<()>),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.inner.health.shown).field("prefix", &self.inner.prefix).finish()
    }
}

impl RedisStore {
    /// A store for `setting`. Connects lazily: an unreachable Redis is
    /// reported at the first use, once, and never stops a lookup. Must be
    /// called within a tokio runtime (the writer is a task).
    pub fn open(setting: &RedisSetting) -> RedisStore {
        RedisStore::open_with(setting, RETRY_AFTER)
    }

    /// [`RedisStore::open`], resting `retry_after` after a failure.
    fn open_with(setting: &RedisSetting, retry_after: Duration) -> RedisStore {
        let password = setting.password.as_ref().map(|p| p.expose().to_owned());
        let health = Health {
            shown: setting.shown.clone(),
            // Messages from Redis never quote a password; if one ever did,
            // this is the last line of defence.
            hide: [Some(setting.url.expose().to_owned()), password.clone(), url_password(setting.url.expose())]
                .into_iter()
                .flatten()
                .filter(|s| s.len() >= 3)
                .collect(),
            down_until: Mutex::new(None),
            warned: AtomicBool::new(false),
            retry_after,
        };
        let conn = match connect(setting.url.expose(), password.as_deref()) {
            Ok(conn) => Some(conn),
            Err(e) => {
                health.failed("cannot use the URL", &e);
                None
            }
        };
        let (writes, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            conn,
            prefix: setting.key_prefix.clone(),
            health,
            writes,
            token: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
        });
        tokio::spawn(writer(Arc::clone(&inner), rx));
        RedisStore { inner }
    }

    fn answer_key(&self, key: &str) -> String {
        format!("{}answer:{key}", self.inner.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}lock:{key}", self.inner.prefix)
    }

    /// Runs `cmd` if Redis is usable, within the call timeout.
    async fn query<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.inner.usable()?;
        self.inner.settle(what, tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn)).await)
    }

    /// [`RedisStore::query`] for a pipeline.
    async fn query_pipe<T: redis::FromRedisValue>(&self, what: &str, pipe: &redis::Pipeline) -> Option<T> {
        let mut conn = self.inner.usable()?;
        self.inner.settle(what, tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<T>(&mut conn)).await)
    }
}

impl Inner {
    fn usable(&self) -> Option<ConnectionManager> {
        if self.health.resting() { None } else { self.conn.clone() }
    }

    /// The value of a call, noting how Redis did.
    fn settle<T>(&self, what: &str, result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> Option<T> {
        match result {
            Ok(Ok(v)) => {
                self.health.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.health.failed(what, &e);
                None
            }
            Err(_) => {
                self.health.failed(what, &format!("no answer within {} ms", CALL_TIMEOUT.as_millis()));
                None
            }
        }
    }
}

fn connect(url: &str, password: Option<&str>) -> Result<ConnectionManager, RedisError> {
    let mut info = url.into_connection_info()?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT * 2))
        .set_response_timeout(Some(CALL_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
}

fn url_password(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let raw = parsed.password()?;
    Some(percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

/// Whether Redis answers, and the one warning of a run.
struct Health {
    /// The URL without its password.
    shown: String,
    /// Texts never to print.
    hide: Vec<String>,
    down_until: Mutex<Option<Instant>>,
    warned: AtomicBool,
    retry_after: Duration,
}

impl Health {
    /// Whether Redis failed lately, so calls should not wait on it now.
    fn resting(&self) -> bool {
        let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        down.is_some_and(|until| Instant::now() < until)
    }

    /// `text` with any secret in it replaced.
    fn hidden(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.hide {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        text
    }

    fn failed(&self, what: &str, error: &dyn fmt::Display) {
        let reason = self.hidden(&error.to_string());
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + self.retry_after);
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!("Redis cache at {}: {what}: {reason}", self.shown);
        } else {
            tracing::warn!(
                "the Redis cache at {} failed ({what}: {reason}); lookups go on without it, and it is tried again every {} s",
                self.shown,
                self.retry_after.as_secs()
            );
        }
    }

    fn succeeded(&self) {
        let was_down = self.down_until.lock().unwrap_or_else(|p| p.into_inner()).take().is_some();
        if was_down {
            tracing::info!("the Redis cache at {} answers again", self.shown);
        }
    }
}

/// Sends the writes in order, as pipelines of up to [`BATCH`].
async fn writer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut flushes = Vec::new();
        let writes = batch.len();
        for write in batch.drain(..) {
            match write {
                Write::Answer { key, value, ttl } => {
                    pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(millis(ttl)).ignore();
                }
                Write::Release { key } => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                Write::License { key, value } => {
                    pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(millis(LICENSE_TTL)).ignore();
                }
                Write::Flush(done) => flushes.push(done),
            }
        }
        if writes > flushes.len() {
            if let Some(mut conn) = inner.usable() {
                let result = tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
                inner.settle("writing answers", result);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode(text: &str) -> Option<Answer> {
    if text == NOT_FOUND {
        return Some(Answer::NotFound);
    }
    Body::from_json(text).map(Answer::Data)
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Option<Answer> {
        let text: Option<String> = self.query("reading an answer", redis::cmd("GET").arg(self.answer_key(key))).await?;
        decode(&text?)
    }

    fn put(&self, key: &str, answer: &Answer, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let value = match answer {
            Answer::Data(body) => body.text(),
            Answer::NotFound => NOT_FOUND.to_owned(),
        };
        let _ = self.inner.writes.send(Write::Answer { key: self.answer_key(key), value, ttl });
    }

    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn describe(&self) -> String {
        format!("Redis at {}", self.inner.health.shown)
    }

    async fn claim(&self, key: &str) -> Claim {
        let lock = self.lock_key(key);
        let answer = self.answer_key(key);
        // Take the lock and look for the answer in one round trip: an
        // answer written just before (by a holder that has released the
        // lock since) must not be asked for again.
        let mut take = redis::pipe();
        take.cmd("SET").arg(&lock).arg(&self.inner.token).arg("NX").arg("PX").arg(millis(LOCK_LEASE));
        take.cmd("GET").arg(&answer);
        let give_up = Instant::now() + CLAIM_WAIT;
        loop {
            let Some((taken, text)) = self.query_pipe::<(Option<String>, Option<String>)>("taking a lock", &take).await
            else {
                return Claim::Ask;
            };
            if let Some(found) = text.as_deref().and_then(decode) {
                if taken.is_some() {
                    self.release(key);
                }
                return Claim::Answered(found);
            }
            if taken.is_some() {
                return Claim::Mine;
            }
            // Another process holds it: wait for its answer, or for the
            // lock to go (it failed: try to take it).
            loop {
                if Instant::now() >= give_up {
                    tracing::debug!("no answer from the process asking for {key} yet; asking too");
                    return Claim::Ask;
                }
                tokio::time::sleep(CLAIM_POLL).await;
                let mut look = redis::pipe();
                look.cmd("GET").arg(&answer).cmd("EXISTS").arg(&lock);
                let Some((text, locked)) =
                    self.query_pipe::<(Option<String>, bool)>("waiting for an answer", &look).await
                else {
                    return Claim::Ask;
                };
                if let Some(found) = text.as_deref().and_then(decode) {
                    return Claim::Answered(found);
                }
                if !locked {
                    break;
                }
            }
        }
    }

    fn release(&self, key: &str) {
        let _ = self.inner.writes.send(Write::Release { key: self.lock_key(key) });
    }

    fn put_license(&self, scope: &str, license: &License) {
        if let Ok(value) = serde_json::to_string(license) {
            let _ =
                self.inner.writes.send(Write::License { key: format!("{}license:{scope}", self.inner.prefix), value });
        }
    }

    async fn ping(&self) -> Result<(), String> {
        let Some(mut conn) = self.inner.conn.clone() else { return Err("the URL is not usable".to_owned()) };
        match tokio::time::timeout(CALL_TIMEOUT * 4, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => {
                self.inner.health.succeeded();
                Ok(())
            }
            Ok(Err(e)) => Err(self.inner.health.hidden(&e.to_string())),
            Err(_) => Err(format!("no answer within {} ms", (CALL_TIMEOUT * 4).as_millis())),
        }
    }

    async fn license(&self, scope: &str) -> Option<License> {
        let key = format!("{}license:{scope}", self.inner.prefix);
        let text: Option<String> = self.query("reading the account figures", redis::cmd("GET").arg(key)).await?;
        serde_json::from_str(&text?).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kl_model::{Answer, Body};
    use kl_testkit::redis::RedisServer;

    use super::*;
    use crate::config::CacheSetting;
    use crate::config::Config;

    const PW: &str = "unit-REDIS-pw";

    fn setting(url: &str) -> RedisSetting {
        let yaml = format!("lookup_plugin:\n  KASPERSKY_API_TOKEN: t\n  KL_CACHE_URL: {url}\n");
        match Config::from_parts(Some(&yaml), None, |_| None).unwrap().cache {
            CacheSetting::Redis(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn data(zone: &str) -> Answer {
        Answer::Data(Body::from(serde_json::json!({"Zone": zone})))
    }

    /// Polls `f` until it holds, for at most 10 s.
    async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if f().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn answers_round_trip_with_their_lifetimes_and_debug_hides_the_password() {
        let Some(redis) = RedisServer::start(Some(PW)) else { return };
        let store = RedisStore::open(&setting(&redis.url()));
        store.put("k1", &data("Red"), Duration::from_secs(60));
        store.put("k2", &Answer::NotFound, Duration::from_secs(5));
        store.put("k3", &data("Red"), Duration::ZERO);
        store.flush().await;
        assert_eq!(store.get("k1").await, Some(data("Red")));
        assert_eq!(store.get("k2").await, Some(Answer::NotFound));
        assert_eq!(store.get("k3").await, None, "a zero lifetime stores nothing");
        let ttl = redis.command(&["PTTL", "kl:answer:k1"]).int();
        assert!(ttl > 55_000 && ttl <= 60_000, "{ttl}");
        assert!(redis.command(&["PTTL", "kl:answer:k2"]).int() <= 5_000);
        let shown = format!("{store:?} {}", store.describe());
        assert!(!shown.contains(PW) && shown.contains("[redacted]"), "{shown}");
        assert_eq!(store.ping().await, Ok(()));

        let license = License { day_requests: Some(3), day_quota: Some(10), ..License::default() };
        store.put_license("tip|x", &license);
        store.flush().await;
        assert_eq!(store.license("tip|x").await, Some(license));
        assert!(redis.command(&["PTTL", "kl:license:tip|x"]).int() > 0);
    }

    #[tokio::test]
    async fn one_process_asks_and_the_others_take_its_answer() {
        let Some(redis) = RedisServer::start(Some(PW)) else { return };
        let (a, b) = (RedisStore::open(&setting(&redis.url())), RedisStore::open(&setting(&redis.url())));
        assert_eq!(a.claim("new").await, Claim::Mine);
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.claim("new").await }
        });
        a.put("new", &data("Orange"), Duration::from_secs(60));
        a.release("new");
        assert_eq!(waiting.await.unwrap(), Claim::Answered(data("Orange")));
        assert!(redis.keys("kl:lock:*").is_empty());

        // A holder that fails releases without an answer: a waiter then
        // takes the lock and asks itself.
        assert_eq!(a.claim("failing").await, Claim::Mine);
        let waiting = tokio::spawn(async move { b.claim("failing").await });
        a.release("failing");
        assert_eq!(waiting.await.unwrap(), Claim::Mine);
    }

    #[tokio::test]
    async fn a_redis_that_goes_away_is_stepped_around_and_used_again_when_back() {
        let Some(mut redis) = RedisServer::start(None) else { return };
        let store = RedisStore::open_with(&setting(&redis.url()), Duration::from_millis(100));
        store.put("before", &data("Red"), Duration::from_secs(60));
        store.flush().await;
        assert_eq!(store.get("before").await, Some(data("Red")));

        redis.kill();
        assert_eq!(store.get("before").await, None, "no Redis: a miss, not an error");
        assert_eq!(store.claim("x").await, Claim::Ask);
        store.put("lost", &data("Red"), Duration::from_secs(60));
        store.flush().await;
        assert!(store.ping().await.is_err());

        redis.restart();
        let back = eventually(async || {
            store.put("after", &data("Green"), Duration::from_secs(60));
            store.flush().await;
            store.get("after").await == Some(data("Green"))
        })
        .await;
        assert!(back, "the store reconnects once Redis is back");
        assert_eq!(redis.command(&["EXISTS", "kl:answer:after"]).int(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_redis_costs_a_miss_not_a_stall() {
        // Nothing listens on port 1.
        let store = RedisStore::open(&setting(&format!("redis://:{PW}@127.0.0.1:1/0")));
        assert_eq!(store.get("k").await, None);
        assert_eq!(store.claim("k").await, Claim::Ask);
        store.put("k", &data("Red"), Duration::from_secs(60));
        store.flush().await;
        let problem = store.ping().await.unwrap_err();
        assert!(!problem.contains(PW), "{problem}");
    }
}
