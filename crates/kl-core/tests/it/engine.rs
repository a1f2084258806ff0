//! The engine with a scripted backend, on tokio's paused clock: the timing
//! assertions are about virtual time, so a busy machine cannot flake them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kl_core::store::{SqliteStore, Store};
use kl_core::{
    Answer, Backend, BackendInfo, Engine, EngineOptions, Error, Fetched, Function, Indicator, LookupFailure, Outcome,
};
use serde_json::json;

/// Answers after `latency`, with scripted failures first; `grey` addresses
/// are not found.
#[derive(Debug, Default)]
struct Scripted {
    latency: Duration,
    calls: AtomicUsize,
    failures: Mutex<Vec<Error>>,
    grey: Vec<&'static str>,
}

impl Scripted {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for Scripted {
    async fn fetch(&self, _: Function, indicator: &Indicator) -> Result<Fetched, LookupFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let next = {
            let mut f = self.failures.lock().unwrap();
            if f.is_empty() { None } else { Some(f.remove(0)) }
        };
        match next {
            Some(e) => Err(e),
            None if self.grey.contains(&indicator.as_str()) => Ok(Answer::NotFound.into()),
            None => Ok(Answer::Data(json!({"IpGeneralInfo": {"Ip": indicator.as_str()}}).into()).into()),
        }
    }

    fn cache_scope(&self) -> String {
        "scripted".to_owned()
    }

    fn info(&self) -> BackendInfo {
        BackendInfo { name: "scripted", endpoint: String::new(), auth: "none" }
    }
}

fn opts(concurrency: usize) -> EngineOptions {
    EngineOptions {
        concurrency,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(1),
        retry_after_cap: Duration::from_secs(30),
        ramp_step: Duration::ZERO,
        ..EngineOptions::default()
    }
}

fn ip_of(o: &Outcome) -> String {
    let Outcome::Data(v) = o else { panic!("{o:?}") };
    v.value()["IpGeneralInfo"]["Ip"].as_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_and_reached() {
    let backend = Arc::new(Scripted { latency: Duration::from_millis(10), ..Default::default() });
    let engine = Engine::new(backend.clone(), opts(8));
    let ips: Vec<String> = (1..=200).map(|i| format!("1.1.{}.{}", i / 250, i % 250)).collect();
    let mut raws: Vec<&str> = Vec::new();
    for _ in 0..10 {
        raws.extend(ips.iter().map(String::as_str));
    }
    let started = tokio::time::Instant::now();
    let out = engine.lookup_all(Function::IpReport, &raws).await;
    assert_eq!(out.len(), 2000);
    assert_eq!(backend.calls(), 200);
    let s = engine.stats();
    assert_eq!(s.max_in_flight, 8);
    assert_eq!((s.requests, s.reused, s.cache_hits), (200, 1800, 0), "{s:?}");
    // 200 lookups, 8 at a time, 10 ms each: 25 rounds.
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    for (raw, o) in raws.iter().zip(&out) {
        assert_eq!(ip_of(o), *raw);
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_askers_share_one_request() {
    let backend = Arc::new(Scripted { latency: Duration::from_millis(50), ..Default::default() });
    let engine = Engine::new(backend.clone(), opts(8));
    let (a, b) =
        tokio::join!(engine.lookup(Function::IpReport, "8.8.8.8"), engine.lookup(Function::IpReport, " 8.8.8.8 "));
    assert_eq!(a, b);
    assert_eq!(backend.calls(), 1);
    assert_eq!(engine.stats().reused, 1);
    // Later, from the memo.
    engine.lookup(Function::IpReport, "8.8.8.8").await;
    assert_eq!((backend.calls(), engine.stats().reused), (1, 2));
    // The same indicator under another function is another request.
    engine.lookup(Function::IpReportFile, "8.8.8.8").await;
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn answers_are_asked_again_once_their_lifetime_has_passed() {
    let backend = Arc::new(Scripted { grey: vec!["9.9.9.9"], ..Default::default() });
    let engine = Engine::new(
        backend.clone(),
        EngineOptions { ttl: Duration::from_secs(2), grey_ttl: Duration::from_secs(1), ..opts(4) },
    );
    let both = || async {
        (engine.lookup(Function::IpReport, "8.8.8.8").await, engine.lookup(Function::IpReport, "9.9.9.9").await)
    };
    let (data, grey) = both().await;
    assert!(matches!(data, Outcome::Data(_)));
    assert_eq!(grey, Outcome::NotFound);
    assert_eq!(backend.calls(), 2);
    tokio::time::advance(Duration::from_millis(900)).await;
    both().await;
    assert_eq!(backend.calls(), 2, "both still fresh");
    tokio::time::advance(Duration::from_millis(200)).await;
    both().await;
    assert_eq!(backend.calls(), 3, "Grey is stale after its 1 s, data is not");
    // t = 2.0 s: the data answer (from 0 s) is stale, the Grey one (asked
    // again at 1.1 s) is not.
    tokio::time::advance(Duration::from_millis(900)).await;
    both().await;
    assert_eq!(backend.calls(), 4, "data is stale after its 2 s");
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_never_remembered_beyond_its_own_request() {
    let outage = || Error::Status { status: 503, body_excerpt: String::new(), retry_after: None };
    let backend = Arc::new(Scripted { failures: Mutex::new(vec![outage(), outage()]), ..Default::default() });
    let engine = Engine::new(backend.clone(), EngineOptions { tries: 1, ..opts(4) });
    let (a, b) =
        tokio::join!(engine.lookup(Function::IpReport, "8.8.8.8"), engine.lookup(Function::IpReport, "8.8.8.8"));
    assert_eq!(a, Outcome::Failed("HTTP 503".into()));
    assert_eq!(a, b, "an asker that joined the failed request shares its failure");
    assert_eq!(backend.calls(), 1);
    assert_eq!(engine.lookup(Function::IpReport, "8.8.8.8").await, Outcome::Failed("HTTP 503".into()));
    assert_eq!(backend.calls(), 2, "asked again, not answered from memory");
    assert!(matches!(engine.lookup(Function::IpReport, "8.8.8.8").await, Outcome::Data(_)));
    assert_eq!(backend.calls(), 3);
    assert_eq!(engine.stats().errors, 3);
}

#[tokio::test(start_paused = true)]
async fn the_persistent_store_answers_before_the_backend_and_is_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()));
    let with_store = || EngineOptions { store: Some(store.clone()), ..opts(4) };
    let backend = Arc::new(Scripted::default());
    let first = Engine::new(backend.clone(), with_store());
    first.lookup_all(Function::IpReport, &["8.8.8.8", "8.8.4.4", "8.8.8.8"]).await;
    first.flush().await;
    let s = first.stats();
    assert_eq!((s.requests, s.cache_hits, s.reused), (2, 0, 1));
    // A second process: the store answers, nothing is sent.
    let second = Engine::new(backend.clone(), with_store());
    let out = second.lookup_all(Function::IpReport, &["8.8.8.8", "8.8.4.4", "8.8.4.4"]).await;
    assert_eq!(ip_of(&out[0]), "8.8.8.8");
    assert_eq!(ip_of(&out[1]), "8.8.4.4");
    let s = second.stats();
    assert_eq!((s.requests, s.cache_hits, s.reused), (0, 2, 1), "{s:?}");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let backend = Arc::new(Scripted {
        failures: Mutex::new(vec![Error::Status {
            status: 429,
            body_excerpt: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        }]),
        ..Default::default()
    });
    let engine = Engine::new(backend.clone(), opts(8));
    let started = tokio::time::Instant::now();
    assert!(matches!(engine.lookup(Function::IpReport, "8.8.8.8").await, Outcome::Data(_)));
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    assert_eq!(engine.stats().retries, 1);
    assert_eq!(engine.stats().requests, 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_and_is_capped() {
    let transport = || Error::Transport { message: "connection reset".into(), cause: kl_core::TransportCause::Other };
    let backend = Arc::new(Scripted {
        failures: Mutex::new(vec![transport(), transport(), transport(), transport()]),
        ..Default::default()
    });
    let engine = Engine::new(backend.clone(), EngineOptions { tries: 5, ..opts(1) });
    let started = tokio::time::Instant::now();
    assert!(matches!(engine.lookup(Function::IpReport, "8.8.8.8").await, Outcome::Data(_)));
    // Nominal delays 100, 200, 400, 800 ms, each jittered to 50-100%.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(750) && waited <= Duration::from_millis(1500), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn the_run_deadline_bounds_a_dead_server() {
    let backend = Arc::new(Scripted { latency: Duration::from_secs(3600), ..Default::default() });
    let engine = Engine::new(backend, EngineOptions { deadline: Some(Duration::from_secs(20)), ..opts(2) });
    let started = tokio::time::Instant::now();
    let out = engine.lookup_all(Function::IpReport, &["8.8.8.8", "8.8.4.4", "9.9.9.9"]).await;
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    for o in out {
        assert_eq!(o, Outcome::Failed("run deadline of 20s exceeded".into()));
    }
    assert_eq!(engine.stats().errors, 3);
}

#[tokio::test(start_paused = true)]
async fn a_drain_deadline_ends_the_lookups_still_open() {
    let backend = Arc::new(Scripted { latency: Duration::from_secs(3600), ..Default::default() });
    let engine = Engine::new(backend, EngineOptions { deadline: Some(Duration::from_secs(300)), ..opts(2) });
    let started = tokio::time::Instant::now();
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.lookup(Function::IpReport, "8.8.8.8").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    engine.set_deadline(Duration::from_secs(5), "not answered before shutdown");
    // A later deadline does not postpone it.
    engine.set_deadline(Duration::from_secs(50), "later");
    assert_eq!(waiting.await.unwrap(), Outcome::Failed("not answered before shutdown".into()));
    assert_eq!(started.elapsed(), Duration::from_secs(6));
}

/// Records when each request started, in virtual time.
#[derive(Debug)]
struct Clocked {
    origin: tokio::time::Instant,
    starts: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Backend for Clocked {
    async fn fetch(&self, _: Function, _: &Indicator) -> Result<Fetched, LookupFailure> {
        self.starts.lock().unwrap().push(self.origin.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(Answer::NotFound.into())
    }

    fn cache_scope(&self) -> String {
        "clocked".to_owned()
    }

    fn info(&self) -> BackendInfo {
        BackendInfo { name: "clocked", endpoint: String::new(), auth: "none" }
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_requests_ramp_up() {
    let backend = Arc::new(Clocked { origin: tokio::time::Instant::now(), starts: Mutex::default() });
    let engine = Engine::new(backend.clone(), EngineOptions { ramp_step: Duration::from_millis(2), ..opts(4) });
    let ips: Vec<String> = (1..=8).map(|i| format!("1.1.1.{i}")).collect();
    let raws: Vec<&str> = ips.iter().map(String::as_str).collect();
    engine.lookup_all(Function::IpReport, &raws).await;
    let starts = backend.starts.lock().unwrap().clone();
    let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
    // Four slots: the first four start 2 ms apart, the rest as slots free up.
    assert_eq!(ms, [0, 2, 4, 6, 10, 12, 14, 16]);
}

#[tokio::test(start_paused = true)]
async fn many_distinct_indicators_keep_the_memo_within_its_budget() {
    let backend = Arc::new(Scripted::default());
    let budget = 2 << 20;
    let engine = Engine::new(backend.clone(), EngineOptions { memo_bytes: budget, ..opts(64) });
    let ips: Vec<String> = (0..50_000u32).map(|i| format!("11.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)).collect();
    for chunk in ips.chunks(5000) {
        let raws: Vec<&str> = chunk.iter().map(String::as_str).collect();
        engine.lookup_all(Function::IpReport, &raws).await;
    }
    let (entries, bytes) = engine.memo_usage();
    assert!(bytes <= budget, "{bytes} > {budget}");
    assert!(entries > 1000, "{entries}");
    assert_eq!(backend.calls(), 50_000);
}

#[tokio::test(start_paused = true)]
async fn an_answer_already_there_wins_over_a_deadline_passed_meanwhile() {
    let backend = Arc::new(Scripted::default());
    let engine = Engine::new(backend.clone(), opts(4));
    let Err(pending) = engine.lookup_now(Function::IpReport, "8.8.8.8") else { panic!("not in the memo yet") };
    let waiting = engine.start(pending);
    while !waiting.is_done() {
        tokio::task::yield_now().await;
    }
    engine.set_deadline(Duration::ZERO, "too late");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(waiting.outcome().await, Outcome::Data(_)));
}

/// Answers read from the store are prepared on the store's thread, once
/// each, and what the preparation adds to them counts in the memo's weight
/// whether it finished before or after the answer reached the memo.
#[tokio::test]
async fn answers_prepared_on_the_stores_thread_are_weighed_with_what_they_hold() {
    // These answers are too short to become the packing's dictionaries
    // themselves, and packed forms are kept only when packed against some.
    let dictionary = format!("{{\"IpGeneralInfo\":{{\"Ip\":\"{}\"}}}}", "1".repeat(200));
    kl_model::Dictionaries::adopt(dictionary.as_bytes(), dictionary.as_bytes()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()));
    let with_store = || EngineOptions { store: Some(store.clone()), ..opts(8) };
    let ips: Vec<String> = (0..300u32).map(|i| format!("11.0.{}.{}", i >> 8, i & 255)).collect();
    let raws: Vec<&str> = ips.iter().map(String::as_str).collect();
    let backend = Arc::new(Scripted::default());
    let filler = Engine::new(backend.clone(), with_store());
    filler.lookup_all(Function::IpReport, &raws).await;
    filler.flush().await;

    let held = |outcomes: &[Outcome]| -> u64 {
        outcomes.iter().map(|o| if let Outcome::Data(b) = o { b.held() as u64 } else { 0 }).sum()
    };
    let plain = Engine::new(backend.clone(), with_store());
    let plain_out = plain.lookup_all(Function::IpReport, &raws).await;
    plain.flush().await;

    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prepared_engine = |salt: u64| {
        let engine = Engine::new(backend.clone(), with_store());
        let counted = calls.clone();
        engine.prepare_answers(
            move |function| function as u64 + salt,
            move |function, body| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let key = function as u64 + salt;
                body.render_into(key, &mut Vec::new(), |b| format!("rendered {salt} {}", b.text()).into_bytes());
            },
        );
        engine
    };
    let calls_so_far = || calls.swap(0, std::sync::atomic::Ordering::SeqCst);
    let prepared = prepared_engine(0);
    let prepared_out = prepared.lookup_all(Function::IpReport, &raws).await;
    // The store's thread prepares after answering; a flush comes after that.
    prepared.flush().await;
    assert_eq!(calls_so_far(), 300, "each answer prepared once");
    assert_eq!(prepared.stats().requests, 0);
    let (added_held, added_weight) =
        (held(&prepared_out) - held(&plain_out), prepared.memo_usage().1 - plain.memo_usage().1);
    assert!(added_held > 0);
    assert_eq!(added_weight, added_held, "the renderings are weighed");

    // The store kept the renderings: the next engine with the same
    // settings is given them with the answers, made by nobody, and weighs them.
    let again = prepared_engine(0);
    let again_out = again.lookup_all(Function::IpReport, &raws).await;
    again.flush().await;
    assert_eq!(calls_so_far(), 0, "renderings kept with the answers are not made again");
    assert_eq!(again.memo_usage().1, prepared.memo_usage().1);
    let rendering = |o: &Outcome, key: u64| match o {
        Outcome::Data(b) => {
            let mut out = Vec::new();
            b.render_into(key, &mut out, |_| panic!("no rendering kept for {key}"));
            String::from_utf8(out).unwrap()
        }
        other => panic!("{other:?}"),
    };
    for (a, b) in again_out.iter().zip(&prepared_out) {
        assert_eq!(rendering(a, Function::IpReport as u64), rendering(b, Function::IpReport as u64));
        assert!(rendering(a, Function::IpReport as u64).starts_with("rendered 0 {"));
    }
    // Other settings are not given those.
    let other = prepared_engine(1);
    let other_out = other.lookup_all(Function::IpReport, &raws).await;
    other.flush().await;
    assert_eq!(calls_so_far(), 300);
    assert!(rendering(&other_out[0], Function::IpReport as u64 + 1).starts_with("rendered 1 {"));
}
