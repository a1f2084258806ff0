//! The engine with a scripted backend, on tokio's paused clock: the timing
//! assertions are about virtual time, so a busy machine cannot flake them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kl_core::{Answer, Backend, Engine, EngineOptions, Error, Function, Indicator, LookupFailure, Outcome};
use serde_json::json;

/// Answers after `latency`, with scripted failures first.
#[derive(Debug, Default)]
struct Scripted {
    latency: Duration,
    calls: AtomicUsize,
    failures: Mutex<Vec<Error>>,
}

#[async_trait]
impl Backend for Scripted {
    async fn fetch(&self, _: Function, indicator: &Indicator) -> Result<Answer, LookupFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let next = {
            let mut f = self.failures.lock().unwrap();
            if f.is_empty() { None } else { Some(f.remove(0)) }
        };
        match next {
            Some(e) => Err(e),
            None => Ok(Answer::Data(json!({"IpGeneralInfo": {"Ip": indicator.as_str()}}))),
        }
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
    let out = engine.lookup_batch(Function::IpReport, &raws).await;
    assert_eq!(out.len(), 2000);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 200);
    assert_eq!(engine.stats().max_in_flight, 8);
    // 200 lookups, 8 at a time, 10 ms each: 25 rounds.
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    for (raw, o) in raws.iter().zip(&out) {
        let Outcome::Data(v) = o else { panic!("{o:?}") };
        assert_eq!(v["IpGeneralInfo"]["Ip"], *raw);
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_askers_share_one_request() {
    let backend = Arc::new(Scripted { latency: Duration::from_millis(50), ..Default::default() });
    let engine = Engine::new(backend.clone(), opts(8));
    let (a, b) =
        tokio::join!(engine.lookup(Function::IpReport, "8.8.8.8"), engine.lookup(Function::IpReport, " 8.8.8.8 "));
    assert_eq!(a, b);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    assert_eq!(engine.stats().reused, 1);
    // The same indicator under another function is another request.
    engine.lookup(Function::IpReportFile, "8.8.8.8").await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
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
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_and_is_capped() {
    let transport = || Error::Transport { message: "connection reset".into() };
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
    let out = engine.lookup_batch(Function::IpReport, &["8.8.8.8", "8.8.4.4", "9.9.9.9"]).await;
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    for o in out {
        assert_eq!(o, Outcome::Failed("run deadline of 20s exceeded".into()));
    }
    assert_eq!(engine.stats().errors, 3);
}

/// Records when each request started, in virtual time.
#[derive(Debug)]
struct Clocked {
    origin: tokio::time::Instant,
    starts: Mutex<Vec<Duration>>,
}

#[async_trait]
impl Backend for Clocked {
    async fn fetch(&self, _: Function, _: &Indicator) -> Result<Answer, LookupFailure> {
        self.starts.lock().unwrap().push(self.origin.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(Answer::NotFound)
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_requests_ramp_up() {
    let backend = Arc::new(Clocked { origin: tokio::time::Instant::now(), starts: Mutex::default() });
    let engine = Engine::new(backend.clone(), EngineOptions { ramp_step: Duration::from_millis(2), ..opts(4) });
    let ips: Vec<String> = (1..=8).map(|i| format!("1.1.1.{i}")).collect();
    let raws: Vec<&str> = ips.iter().map(String::as_str).collect();
    engine.lookup_batch(Function::IpReport, &raws).await;
    let starts = backend.starts.lock().unwrap().clone();
    let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
    // Four slots: the first four start 2 ms apart, the rest as slots free up.
    assert_eq!(ms, [0, 2, 4, 6, 10, 12, 14, 16]);
}
