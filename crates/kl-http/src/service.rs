//! The routes of kl-http.
//!
//! - `GET /v1/lookup/{function|auto}/{indicator}?style=&target=`: one
//!   lookup, the object `kl-generic-json lookup` prints;
//! - `POST /v1/lookup` with `{"function": …, "indicators": […]}`: several,
//!   in order;
//! - `POST /v1/enrich?function=&field=&style=&target=`: NDJSON in, NDJSON
//!   out, the kl-generic-json stream;
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Errors are RFC 9457 problem objects. With `KL_HTTP_TOKENS` set, every
//! route but `/healthz` needs `Authorization: Bearer <token>`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt;
use kl_cli::setup::Assembled;
use kl_cli::stream::{self, Field};
use kl_core::{HttpSettings, Secret};
use kl_model::{FunctionChoice, Indicator, Outcome};
use kl_schema::Style;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

/// What every request shares: one engine, one bound on pending lookups.
pub(crate) struct Service {
    assembled: Assembled,
    tokens: Vec<Secret>,
    max_batch: usize,
    /// Lookups waiting for an answer, across all clients; beyond it: 503.
    pending: Arc<Semaphore>,
    max_pending: usize,
    metrics: PrometheusHandle,
    /// Set when shutdown begins: enrich streams stop reading.
    shutdown: watch::Sender<bool>,
}

impl Service {
    /// Tells the streams in progress to stop reading and finish.
    pub(crate) fn shut_down(&self) {
        let _ = self.shutdown.send(true);
    }
}

type Shared = Arc<Service>;

/// Seconds a client is told to wait (`Retry-After`) when kl cannot answer now.
const RETRY_AFTER_SECS: u64 = 60;

/// The service and its router.
pub(crate) fn router(assembled: Assembled, http: &HttpSettings) -> anyhow::Result<(Shared, Router)> {
    let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".to_owned()), &buckets)?
        .install_recorder()?;
    let service = Arc::new(Service {
        assembled,
        tokens: http.tokens.clone(),
        max_batch: http.max_batch,
        pending: Arc::new(Semaphore::new(http.max_pending)),
        max_pending: http.max_pending,
        metrics,
        shutdown: watch::Sender::new(false),
    });
    let guarded = Router::new()
        .route("/v1/lookup/{function}/{indicator}", get(lookup_one))
        .route("/v1/lookup", post(lookup_many))
        .route("/v1/enrich", post(enrich))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .layer(middleware::from_fn_with_state(service.clone(), client_auth));
    let app = guarded
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such route", "see docs/http.md for the API") })
        .layer(middleware::from_fn(count_requests))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, http.timeout))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(http.max_body_bytes.min(usize::MAX as u64) as usize))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(service.clone());
    Ok((service, app))
}

/// An RFC 9457 problem: what an error response says.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// Send `Retry-After`: kl cannot answer now, but may later.
    retry_later: bool,
}

fn problem(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
    Problem { status, title, detail: detail.into(), retry_later: false }
}

/// 503 with `Retry-After`.
fn unavailable(detail: impl Into<String>) -> Problem {
    Problem { retry_later: true, ..problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail) }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body =
            json!({"type": "about:blank", "title": self.title, "status": self.status.as_u16(), "detail": self.detail});
        let mut resp = (self.status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.retry_later {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

/// Every route but `/healthz`: `Authorization: Bearer <one of the tokens>`,
/// when tokens are configured. Each token is compared in constant time, and
/// all of them are, so timing tells nothing.
async fn client_auth(State(service): State<Shared>, request: Request, next: Next) -> Response {
    if service.tokens.is_empty() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let ok = service.tokens.iter().fold(false, |ok, t| t.matches(given) | ok);
    if ok {
        return next.run(request).await;
    }
    let mut resp =
        problem(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>").into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Counts requests by route and status, and times them.
async fn count_requests(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(request).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("kl_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("kl_http_request_duration_seconds", "route" => route).record(started.elapsed());
    resp
}

#[derive(Debug, Deserialize)]
struct Presentation {
    style: Option<String>,
    target: Option<String>,
}

impl Presentation {
    fn parse(&self) -> Result<(Style, String), Problem> {
        let style = match self.style.as_deref() {
            None | Some("") => Style::Nested,
            Some(s) => Style::from_str(s).map_err(|e| problem(StatusCode::BAD_REQUEST, "invalid style", e))?,
        };
        let target = self.target.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "kaspersky".to_owned());
        Ok((style, target))
    }
}

/// One lookup checked before it is sent: a function the backend answers
/// and a valid indicator, or a 400 naming what is wrong.
fn validate(service: &Service, function: &str, raw: &str) -> Result<FunctionChoice, Problem> {
    let bad = |title, detail: String| problem(StatusCode::BAD_REQUEST, title, detail);
    let choice = FunctionChoice::from_str(function).map_err(|e| bad("invalid function", e))?;
    let function = choice.resolve(raw).map_err(|e| bad("invalid indicator", e))?;
    service.assembled.engine.supports(function).map_err(|e| bad("unsupported function", e))?;
    Indicator::parse(function.object(), raw).map_err(|e| bad("invalid indicator", e.to_string()))?;
    Ok(choice)
}

/// `n` slots for pending lookups, or a 503 when the service is that busy.
fn reserve(service: &Service, n: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let permit = service.pending.clone().try_acquire_many_owned(n).map_err(|_| {
        unavailable(format!(
            "more than KL_HTTP_MAX_PENDING ({}) lookups are waiting; try again later",
            service.max_pending
        ))
    })?;
    metrics::gauge!("kl_lookups_in_flight").set((service.max_pending - service.pending.available_permits()) as f64);
    Ok(permit)
}

/// 503 once the upstream API refused the service (401, 403).
fn refused(service: &Service) -> Result<(), Problem> {
    match service.assembled.engine.fatal() {
        Some(reason) => Err(unavailable(format!("the upstream API refused the service: {reason}"))),
        None => Ok(()),
    }
}

async fn lookup_one(
    State(service): State<Shared>,
    Path((function, indicator)): Path<(String, String)>,
    Query(presentation): Query<Presentation>,
) -> Result<Response, Problem> {
    let (style, target) = presentation.parse()?;
    let choice = validate(&service, &function, &indicator)?;
    refused(&service)?;
    let _permit = reserve(&service, 1)?;
    let started = Instant::now();
    let looked = kl_cli::lookup::lookup(&service.assembled, choice, &indicator, style, &target).await;
    metrics::histogram!("kl_lookup_duration_seconds").record(started.elapsed());
    Ok(axum::Json(looked.object).into_response())
}

#[derive(Debug, Deserialize)]
struct Batch {
    function: String,
    indicators: Vec<Value>,
    style: Option<String>,
    target: Option<String>,
}

async fn lookup_many(State(service): State<Shared>, body: Bytes) -> Result<Response, Problem> {
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "invalid body",
            format!("expected {{\"function\": \"auto\", \"indicators\": [...]}}: {e}"),
        )
    })?;
    if batch.indicators.len() > service.max_batch {
        return Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many indicators",
            format!("{} indicators; KL_HTTP_MAX_BATCH allows {}", batch.indicators.len(), service.max_batch),
        ));
    }
    let (style, target) = (Presentation { style: batch.style, target: batch.target }).parse()?;
    let choice = FunctionChoice::from_str(&batch.function)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, "invalid function", e))?;
    refused(&service)?;
    let _permit = reserve(&service, batch.indicators.len())?;
    let started = Instant::now();
    let lookups = batch.indicators.iter().map(|value| {
        let service = service.clone();
        let target = target.clone();
        async move {
            match value.as_str() {
                Some(raw) => kl_cli::lookup::lookup(&service.assembled, choice, raw, style, &target).await.object,
                None => {
                    let outcome = Outcome::not_a_string(choice.object(), kl_model::json_type(value));
                    let function = kl_model::Function::IpReport;
                    kl_cli::lookup::render(&service.assembled, function, "", &outcome, style, &target)
                }
            }
        }
    });
    let results = futures_util::future::join_all(lookups).await;
    metrics::histogram!("kl_lookup_duration_seconds").record(started.elapsed());
    Ok(axum::Json(json!({"results": results})).into_response())
}

/// `POST /v1/enrich`: the kl-generic-json stream over the request body.
async fn enrich(State(service): State<Shared>, RawQuery(query): RawQuery, body: Body) -> Result<Response, Problem> {
    let settings = enrich_settings(query.as_deref().unwrap_or_default())
        .map_err(|detail| problem(StatusCode::BAD_REQUEST, "invalid query", detail))?;
    if let FunctionChoice::Fixed(f) = settings.function {
        service
            .assembled
            .engine
            .supports(f)
            .map_err(|e| problem(StatusCode::BAD_REQUEST, "unsupported function", e))?;
    }
    refused(&service)?;
    let input = tokio_util::io::StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let (writer, reader) = tokio::io::duplex(64 << 10);
    let mut shutdown = service.shutdown.subscribe();
    let assembled = service.assembled.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
            "shutdown"
        };
        if let Err(e) = stream::run(assembled, settings, input, writer, stop).await {
            tracing::warn!("an enrich stream ended early: {e:#}");
        }
    });
    let mut resp = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(reader)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

/// `function`, `field` (repeatable, `PATH[=TARGET]`), `style`, `target` and
/// `window` from a query string.
fn enrich_settings(query: &str) -> Result<stream::Settings, String> {
    let mut function = None;
    let mut fields = Vec::new();
    let mut presentation = Presentation { style: None, target: None };
    let mut window = 1024;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "function" => function = Some(FunctionChoice::from_str(&v)?),
            "field" => fields.push(Field::from_str(&v)?),
            "style" => presentation.style = Some(v.into_owned()),
            "target" => presentation.target = Some(v.into_owned()),
            "window" => {
                window = v.parse::<usize>().map_err(|_| format!("window: not a number: {v:?}"))?.clamp(1, 100_000)
            }
            other => {
                return Err(format!("unknown parameter {other:?}; expected function, field, style, target, window"));
            }
        }
    }
    let function = function.ok_or("the function parameter is required (one of the seven functions, or auto)")?;
    let (style, target) = presentation.parse().map_err(|_| "invalid style; expected kl, nested or ecs".to_owned())?;
    let settings = stream::Settings { function, fields, style, target, window, max_line: 1 << 20, progress: false };
    settings.check()?;
    Ok(settings)
}

async fn readyz(State(service): State<Shared>) -> Response {
    match service.assembled.engine.fatal() {
        None => axum::Json(json!({"ready": true})).into_response(),
        Some(reason) => {
            let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"ready": false, "reason": reason})))
                .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            resp
        }
    }
}

/// Prometheus text: the request counts, and the engine's figures as of now.
async fn render_metrics(State(service): State<Shared>) -> Response {
    let engine = &service.assembled.engine;
    let s = engine.stats();
    metrics::counter!("kl_upstream_retries_total").absolute(s.retries);
    metrics::counter!("kl_persistent_cache_hits_total").absolute(s.cache_hits);
    metrics::counter!("kl_memory_hits_total").absolute(s.reused);
    metrics::counter!("kl_lookup_errors_total").absolute(s.errors);
    metrics::counter!("kl_lookups_skipped_total").absolute(s.skipped);
    for (status, n) in engine.upstream_statuses() {
        metrics::counter!("kl_upstream_requests_total", "status" => status).absolute(n);
    }
    if let Some((used, quota)) = s.quota {
        metrics::gauge!("kl_quota_used_today").set(used as f64);
        metrics::gauge!("kl_quota_day").set(quota as f64);
    }
    let (entries, bytes) = engine.memo_usage();
    metrics::gauge!("kl_memo_answers").set(entries as f64);
    metrics::gauge!("kl_memo_bytes").set(bytes as f64);
    metrics::gauge!("kl_lookups_in_flight").set((service.max_pending - service.pending.available_permits()) as f64);
    let mut resp = service.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
