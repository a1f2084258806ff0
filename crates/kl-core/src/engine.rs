//! The lookup engine: the only caller of a backend.
//!
//! For every raw indicator an adapter hands it, the engine validates it,
//! applies the privacy policy, and answers from, in turn:
//!
//! 1. the memo (answers this process already has, within their lifetime);
//! 2. a lookup of the same indicator already in flight (joined, not repeated);
//! 3. the persistent store;
//! 4. the backend, with bounded concurrency, retries with backoff, and a
//!    stop for the whole run after a fatal answer (401, 403).
//!
//! Each of those is counted apart ([`Stats`]). A deadline (the run's, or a
//! shutdown's drain) bounds how long a caller waits.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kl_model::{Answer, Body, Function, Indicator, Outcome, Policy};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::backend::{Backend, BackendInfo, FailureKind, Fetched, License};
use crate::config::Config;
use crate::error::Error;
use crate::memo::{Key, Memo};
use crate::store::{self, Claim, Store};

/// Tuning of the engine. [`EngineOptions::from_config`] gives the configured values.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests in flight, at most.
    pub concurrency: usize,
    /// Tries in all for a transient failure (1 = no retry).
    pub tries: u32,
    /// What may be sent.
    pub policy: Policy,
    /// First backoff delay; doubled per try, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_cap: Duration,
    /// Longest wait a `Retry-After` may impose.
    pub retry_after_cap: Duration,
    /// Time allowed for the whole run, counted from the engine's creation.
    /// Lookups still unanswered then fail. `None`: no run deadline.
    pub deadline: Option<Duration>,
    /// The memo's budget in bytes (0: no memo).
    pub memo_bytes: u64,
    /// How long an answer with data is reused.
    pub ttl: Duration,
    /// How long a "no data" answer is reused.
    pub grey_ttl: Duration,
    /// The persistent cache, if any.
    pub store: Option<Arc<dyn Store>>,
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
            policy: Policy::default(),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(60),
            deadline: None,
            memo_bytes: 32 << 20,
            ttl: Duration::from_secs(7 * 86_400),
            grey_ttl: Duration::from_secs(86_400),
            store: None,
            ramp_step: Duration::from_millis(2),
        }
    }
}

impl EngineOptions {
    /// The configured values; no store and no run deadline (the adapter
    /// decides both).
    pub fn from_config(c: &Config) -> EngineOptions {
        EngineOptions {
            concurrency: c.concurrency,
            tries: c.retries,
            policy: Policy { lookup_private_ips: c.lookup_private_ips, lookup_internal_names: c.lookup_internal_names },
            memo_bytes: c.memo_bytes,
            ttl: c.cache_ttl,
            grey_ttl: c.cache_grey_ttl,
            ..EngineOptions::default()
        }
    }
}

/// Counters of one run. Every lookup of a valid, sendable indicator is
/// answered by exactly one of `requests` (first tries), `cache_hits` or
/// `reused`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent to the backend, retries included.
    pub requests: u64,
    /// Retries after transient failures (part of `requests`).
    pub retries: u64,
    /// Lookups answered from the persistent cache.
    pub cache_hits: u64,
    /// Lookups answered in this run without a request or a cache read: from
    /// the memo, or by joining the same lookup already in flight.
    pub reused: u64,
    /// Lookups that ended in a failure (invalid indicators included).
    pub errors: u64,
    /// Lookups withheld by policy.
    pub skipped: u64,
    /// The day's quota use as the last fresh answer gave it: (requests, quota).
    pub quota: Option<(u64, u64)>,
    /// The most requests that were in flight at once.
    pub max_in_flight: u64,
}

/// A lookup the engine cannot answer at once; [`Engine::wait`] finishes it.
#[derive(Debug)]
pub struct Pending {
    key: Key,
}

/// The lookup engine. Clones share everything (counters, memo, lookups in flight).
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn Backend>,
    scope: String,
    opts: EngineOptions,
    /// Requests in flight, at most `concurrency`.
    permits: Semaphore,
    /// The reason the run stopped (401/403), once it has.
    fatal: OnceLock<String>,
    memo: Memo,
    /// Lookups in flight, so a second asker joins the first. An entry lives
    /// from the first ask until its answer is in the memo (or it failed).
    /// A std mutex: held for a map operation, never across an await.
    in_flight: Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
    /// When waiting stops, and the error then given; `None`: no deadline.
    deadline: watch::Sender<Option<(Instant, Arc<str>)>>,
    license: Mutex<Option<License>>,
    /// Requests by how they ended (`200`, `404`, `503`, `timeout`…). A std
    /// mutex: held to bump one count.
    statuses: Mutex<std::collections::BTreeMap<String, u64>>,
    quota_warned: AtomicBool,
    token_warned: AtomicBool,
    counters: Counters,
    /// What to do with an answer read from the store, where it is decoded.
    prepare: OnceLock<PrepareHook>,
}

/// [`Engine::prepare_answers`]'s work, and the key of its settings.
#[derive(Clone)]
struct PrepareHook {
    key: Arc<dyn Fn(Function) -> u64 + Send + Sync>,
    run: Arc<PrepareFn>,
}

type PrepareFn = dyn Fn(Function, &Body) + Send + Sync;

impl fmt::Debug for PrepareHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrepareHook")
    }
}

/// A token that expires within this many days is warned about.
pub const TOKEN_WARNING_DAYS: i64 = 14;

/// What `Engine::probe` found.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The round trip.
    pub elapsed: Duration,
    pub answer: Answer,
    pub license: Option<License>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    cache_hits: AtomicU64,
    reused: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests started, for the ramp-up.
    started: AtomicUsize,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Engine {
    pub fn new(backend: Arc<dyn Backend>, opts: EngineOptions) -> Engine {
        let deadline = opts
            .deadline
            .map(|d| (Instant::now() + d, Arc::from(format!("run deadline of {}s exceeded", d.as_secs()).as_str())));
        Engine {
            inner: Arc::new(Inner {
                scope: backend.cache_scope(),
                backend,
                permits: Semaphore::new(opts.concurrency.max(1)),
                fatal: OnceLock::new(),
                memo: Memo::new(opts.memo_bytes),
                in_flight: Mutex::default(),
                deadline: watch::Sender::new(deadline),
                license: Mutex::default(),
                statuses: Mutex::default(),
                quota_warned: AtomicBool::new(false),
                token_warned: AtomicBool::new(false),
                counters: Counters::default(),
                prepare: OnceLock::new(),
                opts,
            }),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests: load(&c.requests),
            retries: load(&c.retries),
            cache_hits: load(&c.cache_hits),
            reused: load(&c.reused),
            errors: load(&c.errors),
            skipped: load(&c.skipped),
            quota: self.license().and_then(|l| l.quota()),
            max_in_flight: c.max_in_flight.load(Ordering::Relaxed) as u64,
        }
    }

    /// The account figures of the last fresh answer that carried them.
    pub fn license(&self) -> Option<License> {
        self.inner.license.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The backend's name, endpoint and authentication.
    pub fn backend_info(&self) -> BackendInfo {
        self.inner.backend.info()
    }

    /// Whether the backend can answer `function`; the reason when not.
    pub fn supports(&self, function: Function) -> Result<(), String> {
        self.inner.backend.supports(function)
    }

    /// The reason the run stopped sending (a 401 or 403), once it has.
    pub fn fatal(&self) -> Option<&str> {
        self.inner.fatal.get().map(String::as_str)
    }

    /// Answers held in memory, and the bytes they are weighed at.
    pub fn memo_usage(&self) -> (u64, u64) {
        self.inner.memo.usage()
    }

    /// Has `prepare` run on each answer read from the persistent store, on
    /// the store's own thread when it has one: a stream renders the answers
    /// there, off the thread that reads and writes events. `prepare` makes
    /// the body's rendering for the settings `key` gives for a function
    /// (see [`store::Prepare`]); a store that keeps renderings keeps it
    /// with the answer and gives it back instead. Set once; later calls
    /// are ignored.
    pub fn prepare_answers(
        &self,
        key: impl Fn(Function) -> u64 + Send + Sync + 'static,
        prepare: impl Fn(Function, &Body) + Send + Sync + 'static,
    ) {
        let _ = self.inner.prepare.set(PrepareHook { key: Arc::new(key), run: Arc::new(prepare) });
    }

    /// The store's form of the prepare hook for one lookup: it runs the
    /// hook, then weighs the answer again in the memo, where it may be
    /// already, with what it now holds.
    fn store_prepare(&self, key: &Key) -> Option<store::Prepare> {
        let hook = self.inner.prepare.get()?.clone();
        // Weak: a store may hold this while it writes, and must not keep
        // the engine (which holds the store) alive.
        let (engine, key) = (Arc::downgrade(&self.inner), key.clone());
        let settings = (hook.key)(key.0);
        let run = move |body: &Body| {
            (hook.run)(key.0, body);
            if let Some(inner) = engine.upgrade() {
                inner.memo.reweigh(&key);
            }
        };
        Some(store::Prepare { key: settings, run: Arc::new(run) })
    }

    /// Tells the memo that the answer it holds for this lookup has grown (a
    /// rendering was made and kept with it), so it is weighed again.
    pub fn reweigh(&self, function: Function, raw: &str) {
        if let Ok(indicator) = Indicator::parse(function.object(), raw) {
            self.inner.memo.reweigh(&(function, indicator));
        }
    }

    /// Stops waiting `after` from now (unless a deadline comes sooner):
    /// lookups still open then end with `reason`. For a shutdown's drain.
    pub fn set_deadline(&self, after: Duration, reason: &str) {
        let at = Instant::now() + after;
        self.inner.deadline.send_if_modified(|d| match d {
            Some((current, _)) if *current <= at => false,
            _ => {
                *d = Some((at, Arc::from(reason)));
                true
            }
        });
    }

    /// Looks up one raw value.
    pub async fn lookup(&self, function: Function, raw: &str) -> Outcome {
        match self.lookup_now(function, raw) {
            Ok(outcome) => outcome,
            Err(pending) => self.wait(pending).await,
        }
    }

    /// Whatever can be answered without waiting: an invalid or withheld
    /// indicator, or an answer in the memo. Anything else is [`Pending`].
    pub fn lookup_now(&self, function: Function, raw: &str) -> Result<Outcome, Pending> {
        let c = &self.inner.counters;
        let indicator = match Indicator::parse(function.object(), raw) {
            Ok(i) => i,
            Err(e) => {
                Counters::bump(&c.errors);
                return Ok(Outcome::Failed(e.to_string()));
            }
        };
        if let Some(reason) = indicator.withheld(&self.inner.opts.policy) {
            Counters::bump(&c.skipped);
            return Ok(Outcome::Skipped(reason));
        }
        let key = (function, indicator);
        match self.inner.memo.get(&key) {
            Some(outcome) => {
                Counters::bump(&c.reused);
                Ok(outcome)
            }
            None => Err(Pending { key }),
        }
    }

    /// Finishes a lookup: joins the same lookup in flight, or starts one,
    /// and waits for its outcome.
    pub async fn wait(&self, pending: Pending) -> Outcome {
        self.start(pending).outcome().await
    }

    /// Joins the same lookup in flight, or starts one, without waiting: the
    /// lookup runs on a task of its own, so an asker that gives up (a
    /// client gone) does not waste the request, whose answer is still
    /// stored for the next asker.
    pub fn start(&self, pending: Pending) -> Waiting {
        Waiting { engine: self.clone(), state: self.join_or_start(pending.key) }
    }

    /// A receiver for the lookup of `key` in flight, joined or started
    /// here; or the answer, when it reached the memo meanwhile.
    fn join_or_start(&self, key: Key) -> Result<Outcome, watch::Receiver<Option<Outcome>>> {
        let inner = &self.inner;
        let mut in_flight = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = in_flight.get(&key) {
            Counters::bump(&inner.counters.reused);
            return Err(rx.clone());
        }
        // A lookup that ended between `lookup_now` and here left its answer
        // in the memo before it left this map.
        if let Some(outcome) = inner.memo.get(&key) {
            Counters::bump(&inner.counters.reused);
            return Ok(outcome);
        }
        let (tx, rx) = watch::channel(None);
        in_flight.insert(key.clone(), rx.clone());
        drop(in_flight);
        let engine = self.clone();
        tokio::spawn(async move {
            let outcome = engine.resolve(&key).await;
            engine.inner.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            let _ = tx.send(Some(outcome));
        });
        Err(rx)
    }

    /// Resolves when the deadline passes, with its reason; never, without one.
    async fn deadline_passed(&self) -> Arc<str> {
        let mut rx = self.inner.deadline.subscribe();
        loop {
            let current = rx.borrow_and_update().clone();
            match current {
                Some((at, reason)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return reason,
                    changed = rx.changed() => if changed.is_err() { return reason },
                },
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// The persistent store, then the backend; an answer goes to the memo
    /// and the store.
    async fn resolve(&self, key: &Key) -> Outcome {
        let inner = &self.inner;
        let (function, indicator) = key;
        let store_key = inner.opts.store.as_ref().map(|_| store::key(&inner.scope, *function, indicator));
        let mut holding = false;
        // Made once: the read and, on a miss, the write use the same one.
        let prepare = store_key.as_ref().and_then(|_| self.store_prepare(key));
        if let (Some(store), Some(k)) = (&inner.opts.store, &store_key) {
            let read = match prepare.clone() {
                Some(prepare) => store.get_prepared(k, prepare).await,
                None => store.get(k).await,
            };
            let found = match read {
                Some(answer) => Some(answer),
                // Another process may be asking for it right now.
                None => match store.claim(k).await {
                    Claim::Answered(answer) => Some(answer),
                    Claim::Mine => {
                        holding = true;
                        None
                    }
                    Claim::Ask => None,
                },
            };
            if let Some(answer) = found {
                Counters::bump(&inner.counters.cache_hits);
                let ttl = self.ttl_of(&answer);
                let outcome = Outcome::from(answer);
                inner.memo.insert(key.clone(), &outcome, ttl);
                return outcome;
            }
        }
        let fetched = self.fetch_with_retries(*function, indicator).await;
        let outcome = match fetched {
            Ok(fetched) => {
                if let Some(license) = fetched.license {
                    self.note_license(license);
                }
                let ttl = self.ttl_of(&fetched.answer);
                if let (Some(store), Some(k)) = (&inner.opts.store, &store_key) {
                    match prepare {
                        Some(prepare) => store.put_prepared(k, &fetched.answer, ttl, prepare),
                        None => store.put(k, &fetched.answer, ttl),
                    }
                }
                let outcome = Outcome::from(fetched.answer);
                inner.memo.insert(key.clone(), &outcome, ttl);
                outcome
            }
            Err(reason) => Outcome::Failed(reason),
        };
        if let (true, Some(store), Some(k)) = (holding, &inner.opts.store, &store_key) {
            store.release(k);
        }
        outcome
    }

    /// Data lives for the data lifetime; "no data" for the Grey one.
    fn ttl_of(&self, answer: &Answer) -> Duration {
        if answer.has_data() { self.inner.opts.ttl } else { self.inner.opts.grey_ttl }
    }

    /// Sends until an answer, a permanent or fatal failure, or the last try.
    async fn fetch_with_retries(&self, function: Function, indicator: &Indicator) -> Result<Fetched, String> {
        let tries = self.inner.opts.tries.max(1);
        let mut attempt = 1;
        loop {
            let err = match self.send_once(function, indicator).await {
                Ok(fetched) => return Ok(fetched),
                Err(SendError::NotSent(reason)) => return Err(reason),
                Err(SendError::Failed(e)) => e,
            };
            if err.kind() != FailureKind::Transient {
                return Err(err.to_string());
            }
            if attempt >= tries {
                return Err(final_message(&err, tries));
            }
            let delay = self.backoff(attempt, &err);
            tracing::debug!(
                function = function.name(),
                indicator = indicator.as_str(),
                attempt,
                "transient failure ({err}); next try in {delay:?}"
            );
            Counters::bump(&self.inner.counters.retries);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One request, within the concurrency limit.
    async fn send_once(&self, function: Function, indicator: &Indicator) -> Result<Fetched, SendError> {
        let inner = &self.inner;
        let c = &inner.counters;
        let _permit = inner.permits.acquire().await.map_err(|_| SendError::NotSent("engine closed".to_owned()))?;
        if let Some(reason) = inner.fatal.get() {
            return Err(SendError::NotSent(format!("not sent: {reason} earlier in this run")));
        }
        // Ramp up (see `EngineOptions::ramp_step`).
        let n = c.started.fetch_add(1, Ordering::Relaxed);
        if n < inner.opts.concurrency && !inner.opts.ramp_step.is_zero() {
            tokio::time::sleep(inner.opts.ramp_step * n as u32).await;
        }
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Counters::bump(&c.requests);
        let result = inner.backend.fetch(function, indicator).await;
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.count_status(&result);
        // Record a fatal answer before the slot is released, so no request
        // waiting for that slot goes out after it.
        if let Err(e) = &result {
            if e.kind() == FailureKind::Fatal && inner.fatal.set(e.to_string()).is_ok() {
                tracing::error!("{e}: no further requests in this run");
            }
        }
        result.map_err(SendError::Failed)
    }

    /// Sends the backend's cheapest request, straight (no memo, no cache,
    /// no retry): whether the API answers, and how fast. For `check`.
    pub async fn probe(&self) -> Result<Probe, Error> {
        Counters::bump(&self.inner.counters.requests);
        let started = Instant::now();
        let fetched = self.inner.backend.probe().await?;
        let elapsed = started.elapsed();
        if let Some(license) = &fetched.license {
            self.note_license(license.clone());
        }
        Ok(Probe { elapsed, answer: fetched.answer, license: fetched.license })
    }

    fn count_status(&self, result: &Result<Fetched, Error>) {
        let status = match result {
            Ok(Fetched { answer: Answer::NotFound, .. }) => "404".to_owned(),
            Ok(_) => "200".to_owned(),
            Err(Error::Status { status, .. } | Error::Refused { status, .. }) => status.to_string(),
            Err(Error::Timeout { .. }) => "timeout".to_owned(),
            Err(Error::Tls { .. }) => "tls".to_owned(),
            Err(Error::Transport { .. }) => "connection".to_owned(),
            Err(_) => "invalid".to_owned(),
        };
        *self.inner.statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(status).or_default() += 1;
    }

    /// Requests sent so far, by how they ended (`200`, `404`, `503`,
    /// `timeout`, `connection`, `tls`, `invalid`).
    pub fn upstream_statuses(&self) -> Vec<(String, u64)> {
        self.inner.statuses.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Keeps the account figures; warns once at 90% of the day's quota, and
    /// once when the token expires within [`TOKEN_WARNING_DAYS`].
    fn note_license(&self, license: License) {
        if let Some(days) = license.token_days_left(std::time::SystemTime::now()) {
            if days < TOKEN_WARNING_DAYS && !self.inner.token_warned.swap(true, Ordering::Relaxed) {
                let date = license.token_expiration.as_deref().unwrap_or_default();
                if days < 0 {
                    tracing::warn!("the API token expired on {date}: every lookup will fail until it is renewed");
                } else {
                    tracing::warn!(
                        "the API token expires on {date}, in {days} days: renew it before it stops every lookup"
                    );
                }
            }
        }
        if let Some((used, quota)) = license.quota() {
            if quota > 0
                && used.saturating_mul(10) >= quota.saturating_mul(9)
                && !self.inner.quota_warned.swap(true, Ordering::Relaxed)
            {
                tracing::warn!("{used} of the day's {quota} requests are used (90% or more)");
            }
        }
        if let Some(store) = &self.inner.opts.store {
            store.put_license(&self.inner.scope, &license);
        }
        *self.inner.license.lock().unwrap_or_else(|p| p.into_inner()) = Some(license);
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

    /// Looks up every value; the result is aligned with `raws`. Values the
    /// memo cannot answer at once are looked up concurrently, one lookup
    /// per distinct indicator.
    pub async fn lookup_all(&self, function: Function, raws: &[&str]) -> Vec<Outcome> {
        let mut out: Vec<Option<Outcome>> = Vec::with_capacity(raws.len());
        let mut tasks = tokio::task::JoinSet::new();
        for (i, raw) in raws.iter().enumerate() {
            match self.lookup_now(function, raw) {
                Ok(outcome) => out.push(Some(outcome)),
                Err(pending) => {
                    out.push(None);
                    let engine = self.clone();
                    tasks.spawn(async move { (i, engine.wait(pending).await) });
                }
            }
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, outcome)) => out[i] = Some(outcome),
                Err(e) => tracing::error!("a lookup task failed: {e}"),
            }
        }
        out.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Failed("internal error".to_owned()))).collect()
    }

    /// Waits until every answer received is in the persistent store. A
    /// run that sent nothing takes the account figures another process
    /// sharing the store last saw, so its summary shows the fleet's quota.
    pub async fn flush(&self) {
        if let Some(store) = &self.inner.opts.store {
            store.flush().await;
            if self.license().is_none() {
                let shared = store.license(&self.inner.scope).await;
                let mut mine = self.inner.license.lock().unwrap_or_else(|p| p.into_inner());
                if mine.is_none() {
                    *mine = shared;
                }
            }
        }
    }

    /// The persistent store, described, and whether it answers now.
    pub async fn cache_status(&self) -> Option<(String, Result<(), String>)> {
        let store = self.inner.opts.store.as_ref()?;
        Some((store.describe(), store.ping().await))
    }

    /// The account figures this process saw, else those another process
    /// sharing the store recorded.
    pub async fn shared_license(&self) -> Option<License> {
        match (self.license(), &self.inner.opts.store) {
            (Some(l), _) => Some(l),
            (None, Some(store)) => store.license(&self.inner.scope).await,
            (None, None) => None,
        }
    }
}

/// A lookup started or joined; [`Waiting::outcome`] waits for it.
#[derive(Debug)]
pub struct Waiting {
    engine: Engine,
    /// The outcome, or where it will come.
    state: Result<Outcome, watch::Receiver<Option<Outcome>>>,
}

impl Waiting {
    /// Whether the outcome is there (waiting for it would not wait).
    pub fn is_done(&self) -> bool {
        match &self.state {
            Ok(_) => true,
            Err(rx) => rx.borrow().is_some(),
        }
    }

    /// The outcome, once the lookup ends or the deadline passes.
    pub async fn outcome(self) -> Outcome {
        let mut rx = match self.state {
            Ok(outcome) => return outcome,
            Err(rx) => rx,
        };
        let engine = self.engine;
        let ready = rx.borrow().clone();
        if let Some(outcome) = ready {
            if matches!(outcome, Outcome::Failed(_)) {
                Counters::bump(&engine.inner.counters.errors);
            }
            return outcome;
        }
        let answered = async {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or_else(|| Outcome::Failed("internal error".to_owned())),
                Err(_) => Outcome::Failed("internal error: the lookup task ended without an answer".to_owned()),
            }
        };
        // An answer that is already there wins over a deadline that has
        // passed meanwhile (a writer may come to it late).
        let outcome = tokio::select! {
            biased;
            outcome = answered => outcome,
            reason = engine.deadline_passed() => Outcome::Failed(reason.to_string()),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            Counters::bump(&engine.inner.counters.errors);
        }
        outcome
    }
}

enum SendError {
    /// Not sent at all (the run stopped); the reason.
    NotSent(String),
    /// Sent, and failed.
    Failed(Error),
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
