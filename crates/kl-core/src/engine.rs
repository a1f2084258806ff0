//! The lookup engine: one request per distinct indicator, bounded
//! concurrency, retries with backoff, a stop on fatal statuses, and a
//! deadline.
//!
//! Adapters hand the engine raw indicator values and get one [`Outcome`] per
//! value back. The engine is the only place that decides whether a request is
//! sent, so quota rules hold for every adapter and every backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use kl_model::{Answer, Function, Indicator, Outcome};

use crate::backend::{Backend, FailureKind};
use crate::cache::Cache;
use crate::config::Config;
use crate::error::Error;

/// Tuning of the engine. [`EngineOptions::from_config`] gives the configured values.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests in flight, at most.
    pub concurrency: usize,
    /// Tries in all for a transient failure (1 = no retry).
    pub tries: u32,
    /// Send private and reserved IPv4 addresses too.
    pub lookup_private_ips: bool,
    /// First backoff delay; doubled per try, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_cap: Duration,
    /// Longest wait a `Retry-After` may impose.
    pub retry_after_cap: Duration,
    /// Time allowed for the whole run, counted from the engine's creation.
    /// Lookups still unanswered then fail. `None`: no run deadline.
    pub deadline: Option<Duration>,
    /// Finished lookups remembered for reuse, at most (bounds memory on streams).
    pub memo_limit: usize,
    /// The persistent cache, if any.
    pub cache: Option<Arc<Cache>>,
    /// The spacing of the first `concurrency` requests of a run, so that a
    /// burst of new connections does not overflow a small server's listen
    /// backlog (a dropped SYN costs a one-second retransmit).
    pub ramp_step: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            concurrency: 8,
            tries: 3,
            lookup_private_ips: false,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(60),
            deadline: None,
            memo_limit: 100_000,
            cache: None,
            ramp_step: Duration::from_millis(2),
        }
    }
}

impl EngineOptions {
    pub fn from_config(c: &Config) -> EngineOptions {
        EngineOptions {
            concurrency: c.concurrency,
            tries: c.retries,
            lookup_private_ips: c.lookup_private_ips,
            deadline: Some(c.deadline),
            ..EngineOptions::default()
        }
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent to the backend, retries included.
    pub requests: u64,
    /// Lookups answered from an earlier lookup of the same indicator in this run.
    pub reused: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Lookups that ended in a failure (invalid indicators included).
    pub errors: u64,
    /// Lookups skipped by policy.
    pub skipped: u64,
    /// Lookups answered from the persistent cache.
    pub cache_hits: u64,
    /// The day's quota use as the last fresh answer gave it: (requests, quota).
    pub quota: Option<(u64, u64)>,
    /// The most requests that were in flight at once.
    pub max_in_flight: u64,
}

type Key = (Function, Indicator);

/// The lookup engine. Clones share everything (counters, in-flight lookups).
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn Backend>,
    opts: EngineOptions,
    permits: Semaphore,
    /// The reason the run stopped (401/403), once it has.
    fatal: OnceLock<String>,
    memo: Mutex<HashMap<Key, Arc<OnceCell<Outcome>>>>,
    deadline: Option<Instant>,
    requests: AtomicU64,
    reused: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    cache_hits: AtomicU64,
    quota: Mutex<Option<(u64, u64)>>,
    quota_warned: std::sync::atomic::AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests started, for the ramp-up.
    ramp: AtomicUsize,
}

impl Engine {
    pub fn new(backend: Arc<dyn Backend>, opts: EngineOptions) -> Engine {
        let deadline = opts.deadline.map(|d| Instant::now() + d);
        Engine {
            inner: Arc::new(Inner {
                backend,
                permits: Semaphore::new(opts.concurrency.max(1)),
                opts,
                fatal: OnceLock::new(),
                memo: Mutex::new(HashMap::new()),
                deadline,
                requests: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                quota: Mutex::new(None),
                quota_warned: std::sync::atomic::AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                ramp: AtomicUsize::new(0),
            }),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        Stats {
            requests: i.requests.load(Ordering::Relaxed),
            reused: i.reused.load(Ordering::Relaxed),
            retries: i.retries.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            skipped: i.skipped.load(Ordering::Relaxed),
            cache_hits: i.cache_hits.load(Ordering::Relaxed),
            quota: *i.quota.lock().unwrap_or_else(|p| p.into_inner()),
            max_in_flight: i.max_in_flight.load(Ordering::Relaxed) as u64,
        }
    }

    /// Looks up every value of a batch; the result is aligned with `raws`.
    ///
    /// Each distinct (function, normalised indicator) is fetched once, the
    /// distinct lookups running concurrently up to the configured limit.
    pub async fn lookup_batch(&self, function: Function, raws: &[&str]) -> Vec<Outcome> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let mut order = Vec::with_capacity(raws.len());
        for raw in raws {
            let next = slots.len();
            let slot = *slots.entry(raw).or_insert_with(|| {
                let engine = self.clone();
                let raw = raw.to_string();
                tasks.spawn(async move { (next, engine.lookup(function, &raw).await) });
                next
            });
            order.push(slot);
        }
        let mut results: Vec<Option<Outcome>> = vec![None; slots.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((slot, outcome)) => results[slot] = Some(outcome),
                Err(e) => tracing::error!("a lookup task failed: {e}"),
            }
        }
        self.flush();
        order
            .into_iter()
            .map(|slot| results[slot].clone().unwrap_or_else(|| Outcome::Failed("internal error".to_owned())))
            .collect()
    }

    /// Writes answers the cache still holds in memory. Called at the end of
    /// a batch; streams call it when they end.
    pub fn flush(&self) {
        if let Some(cache) = &self.inner.opts.cache {
            cache.flush();
        }
    }

    /// Looks up one raw value: validate, apply policy, then fetch once.
    ///
    /// Concurrent callers asking for the same indicator share one request.
    pub async fn lookup(&self, function: Function, raw: &str) -> Outcome {
        let inner = &self.inner;
        let indicator = match Indicator::parse(function.object(), raw) {
            Ok(i) => i,
            Err(e) => {
                inner.errors.fetch_add(1, Ordering::Relaxed);
                return Outcome::Failed(e.to_string());
            }
        };
        if indicator.is_private_or_reserved() && !inner.opts.lookup_private_ips {
            inner.skipped.fetch_add(1, Ordering::Relaxed);
            return Outcome::Skipped("private or reserved address".to_owned());
        }
        let cell = {
            let mut memo = inner.memo.lock().unwrap_or_else(|p| p.into_inner());
            if memo.len() >= inner.opts.memo_limit {
                memo.retain(|_, cell| !cell.initialized());
            }
            memo.entry((function, indicator.clone())).or_default().clone()
        };
        let mut ran = false;
        let outcome = cell
            .get_or_init(|| {
                ran = true;
                self.fetch(function, &indicator)
            })
            .await
            .clone();
        if !ran {
            inner.reused.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn fetch(&self, function: Function, indicator: &Indicator) -> Outcome {
        if let Some(cache) = &self.inner.opts.cache {
            if let Some(answer) = cache.get(function, indicator) {
                self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
                return outcome_of(answer);
            }
        }
        let fut = self.fetch_with_retries(function, indicator);
        let outcome = match self.inner.deadline {
            Some(at) => match tokio::time::timeout_at(at, fut).await {
                Ok(o) => o,
                Err(_) => Outcome::Failed(format!(
                    "run deadline of {}s exceeded",
                    self.inner.opts.deadline.unwrap_or_default().as_secs()
                )),
            },
            None => fut.await,
        };
        if matches!(outcome, Outcome::Failed(_)) {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn fetch_with_retries(&self, function: Function, indicator: &Indicator) -> Outcome {
        let inner = &self.inner;
        let tries = inner.opts.tries.max(1);
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = match inner.permits.acquire().await {
                    Ok(p) => p,
                    Err(_) => return Outcome::Failed("engine closed".to_owned()),
                };
                if let Some(reason) = inner.fatal.get() {
                    return Outcome::Failed(format!("not sent: {reason} earlier in this run"));
                }
                // Ramp up (see `EngineOptions::ramp_step`).
                let n = inner.ramp.fetch_add(1, Ordering::Relaxed);
                if n < inner.opts.concurrency && !inner.opts.ramp_step.is_zero() {
                    tokio::time::sleep(inner.opts.ramp_step * n as u32).await;
                }
                let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
                inner.requests.fetch_add(1, Ordering::Relaxed);
                let r = inner.backend.fetch(function, indicator).await;
                inner.in_flight.fetch_sub(1, Ordering::SeqCst);
                // Record a fatal answer before the slot is released, so no
                // request waiting for that slot goes out after it.
                if let Err(e) = &r {
                    if e.kind() == FailureKind::Fatal && inner.fatal.set(e.to_string()).is_ok() {
                        tracing::error!("{e}: no further requests in this run");
                    }
                }
                r
            };
            let err = match result {
                Ok(answer) => {
                    if let Answer::Data(v) = &answer {
                        self.note_quota(v);
                    }
                    if let Some(cache) = &inner.opts.cache {
                        cache.put(function, indicator, &answer);
                    }
                    return outcome_of(answer);
                }
                Err(e) => e,
            };
            match err.kind() {
                FailureKind::Fatal => return Outcome::Failed(err.to_string()),
                FailureKind::Permanent => return Outcome::Failed(err.to_string()),
                FailureKind::Transient if attempt >= tries => {
                    return Outcome::Failed(final_message(&err, tries));
                }
                FailureKind::Transient => {
                    let delay = self.backoff(attempt, &err);
                    tracing::debug!(
                        function = function.name(),
                        indicator = indicator.as_str(),
                        attempt,
                        "transient failure ({err}); next try in {delay:?}"
                    );
                    inner.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Records `LicenseInfo` from a fresh answer; warns once at 90% of the day's quota.
    fn note_quota(&self, answer: &serde_json::Value) {
        let info = &answer["LicenseInfo"];
        let number = |v: &serde_json::Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        let (Some(used), Some(quota)) = (number(&info["DayRequests"]), number(&info["DayQuota"])) else { return };
        *self.inner.quota.lock().unwrap_or_else(|p| p.into_inner()) = Some((used, quota));
        if quota > 0
            && used.saturating_mul(10) >= quota.saturating_mul(9)
            && !self.inner.quota_warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!("{used} of the day's {quota} TIP requests are used (90% or more)");
        }
    }

    /// Exponential backoff with jitter and a cap; a `Retry-After` wins, up to its cap.
    fn backoff(&self, attempt: u32, err: &Error) -> Duration {
        let o = &self.inner.opts;
        if let Some(ra) = err.retry_after() {
            return ra.min(o.retry_after_cap);
        }
        let exp = o.backoff_base.saturating_mul(1 << (attempt - 1).min(16)).min(o.backoff_cap);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

fn outcome_of(answer: Answer) -> Outcome {
    Outcome::from(answer)
}

fn final_message(err: &Error, tries: u32) -> String {
    if tries <= 1 {
        return err.to_string();
    }
    match err {
        Error::Status { status, .. } => format!("HTTP {status} after {tries} tries"),
        other => format!("{other} (after {tries} tries)"),
    }
}
