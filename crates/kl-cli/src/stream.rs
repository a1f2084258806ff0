//! NDJSON enrichment: one line out per line in, in input order.
//!
//! - A line is read (up to a length cap), its indicator fields are looked
//!   up, and it is written back with the answers added (kl-schema decides
//!   how). Answers the engine holds in memory are written at once; other
//!   lines wait for their lookups on a task of their own, so lookups of
//!   different lines run concurrently.
//! - The writer takes lines in input order. A line leaves as soon as it and
//!   every earlier line are done, and the output is flushed whenever the
//!   next line is not done yet: no line waits for a later one.
//! - At most `window` lines and a byte budget are in flight, so memory is
//!   bounded however long the stream runs.
//! - On a signal the reader stops, the lines already read are finished
//!   (within the drain time) and written, and the run ends normally.
//! - If the output is closed, reading stops; the summary says how many
//!   lines were written and how many were not.
//!
//! A line is counted (enriched, error, skipped, passed through) only once
//! it has been flushed to the output.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kl_core::Waiting;
use kl_model::{Body, Function, FunctionChoice, Outcome};
use kl_schema::Style;
use kl_schema::event::{self, FieldPath, RawEvent, Splice, raw_string, raw_type};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::output::Sink;
use crate::setup::Assembled;

/// An indicator field, and where its answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub path: FieldPath,
    /// The key this field's answer is written under, when given (`PATH=TARGET`).
    pub target: Option<String>,
}

impl std::str::FromStr for Field {
    type Err = String;

    /// `PATH` or `PATH=TARGET` (split at the last `=`).
    fn from_str(spec: &str) -> Result<Field, String> {
        let (path, target) = match spec.rsplit_once('=') {
            Some((path, target)) => (path, Some(target.trim())),
            None => (spec, None),
        };
        if target == Some("") {
            return Err(format!("--field {spec:?}: the target after '=' is empty"));
        }
        Ok(Field { path: FieldPath::parse(path)?, target: target.map(str::to_owned) })
    }
}

/// What `enrich` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub function: FunctionChoice,
    pub fields: Vec<Field>,
    pub style: Style,
    /// The key nested and ECS output write under, for a field without a target.
    pub target: String,
    /// Lines in flight, at most.
    pub window: usize,
    /// Longer lines are passed through unread, in pieces.
    pub max_line: usize,
    /// A progress display on stderr.
    pub progress: bool,
}

impl Settings {
    /// Refuses combinations that would lose data: a target that would
    /// overwrite an indicator, an empty target, two answers for one key.
    pub fn check(&self) -> Result<(), String> {
        if self.fields.is_empty() {
            return Err("no --field given; name the key that holds the indicator".to_owned());
        }
        let several = self.fields.len() > 1;
        if several && self.style != Style::Ecs {
            if let Some(f) = self.fields.iter().find(|f| f.target.is_none()) {
                return Err(format!(
                    "with several --field options in the {} style, each needs its own target: --field {}=TARGET",
                    style_name(self.style),
                    f.path.as_str()
                ));
            }
        }
        let mut targets: Vec<&str> = Vec::new();
        for f in &self.fields {
            let target = match (&f.target, self.style) {
                (Some(t), _) => t.as_str(),
                (None, Style::Kl) => continue,
                (None, _) => self.target.as_str(),
            };
            if target.trim().is_empty() {
                return Err("the target key is empty; name the key the answer goes under".to_owned());
            }
            if let Some(clash) = self.fields.iter().find(|other| other.path.top() == target) {
                return Err(format!(
                    "the target {target:?} would overwrite the indicator field {:?}; choose another target",
                    clash.path.as_str()
                ));
            }
            if f.target.is_some() && targets.contains(&target) {
                return Err(format!("the target {target:?} is given to two fields; each needs its own"));
            }
            targets.push(target);
        }
        Ok(())
    }
}

fn style_name(style: Style) -> &'static str {
    match style {
        Style::Kl => "kl",
        Style::Nested => "nested",
        Style::Ecs => "ecs",
    }
}

/// Counts of a run, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines written (flushed) to the output.
    pub written: u64,
    pub enriched: u64,
    pub errors: u64,
    pub skipped: u64,
    /// Lines written back unchanged: not a JSON object, or no field.
    pub passed: u64,
    /// Of those, lines that could not be read even leniently (bytes that are
    /// not UTF-8 in a line that is otherwise an object).
    pub unreadable: u64,
    /// The output was closed before every line read was written.
    pub output_closed: bool,
    /// The signal that stopped the reading, if one did.
    pub interrupted: Option<&'static str>,
}

impl Summary {
    /// Lines read and not written (the output was closed).
    pub fn unwritten(&self) -> u64 {
        self.lines.saturating_sub(self.written)
    }

    /// The closing summary: the lines by how they went, then the engine's
    /// counts. `requests` are requests sent (retries included); `cache
    /// hits` were answered by the persistent cache; `reused` were answered
    /// in this run without either (an indicator seen before).
    pub fn describe(&self, stats: &kl_core::Stats) -> String {
        let unreadable = if self.unreadable > 0 { format!(" ({} unreadable)", self.unreadable) } else { String::new() };
        let quota = stats.quota.map(|(used, quota)| format!(", quota {used}/{quota} today")).unwrap_or_default();
        format!(
            "{} lines, {} enriched, {} errors, {} skipped, {} passed through{unreadable}; {} requests, {} cache hits, {} reused in this run, {} retries{quota}",
            self.lines,
            self.enriched,
            self.errors,
            self.skipped,
            self.passed,
            stats.requests,
            stats.cache_hits,
            stats.reused,
            stats.retries,
        )
    }
}

/// How a line went, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Enriched,
    Error,
    Skipped,
    Passed,
    Unreadable,
    /// A piece of an over-long line other than its last: not a line.
    Piece,
}

#[derive(Debug, Default)]
struct Counters {
    enriched: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    passed: AtomicU64,
    unreadable: AtomicU64,
    written: AtomicU64,
    warned_unreadable: AtomicBool,
}

impl Counters {
    fn count(&self, class: Class) {
        let c = match class {
            Class::Piece => return,
            Class::Enriched => &self.enriched,
            Class::Error => &self.errors,
            Class::Skipped => &self.skipped,
            Class::Passed => &self.passed,
            Class::Unreadable => {
                self.passed.fetch_add(1, Ordering::Relaxed);
                &self.unreadable
            }
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.written.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    assembled: Assembled,
    settings: Settings,
    counters: Counters,
    /// Each field's part of [`rendering_key`], hashed once for the stream.
    field_keys: Vec<u64>,
}

/// One line's output (or a piece of an over-long line): ready now, or once
/// its lookups are done. It holds its share of the byte budget until written.
struct Slot {
    output: Output,
    /// A complete next line was already read into the input buffer when
    /// this one was sent: the reader will send it at once, so the writer
    /// need not flush for its sake.
    more_buffered: bool,
    _budget: OwnedSemaphorePermit,
}

enum Output {
    Ready(Written, Class),
    /// A line whose lookups are running (on the engine's tasks): the writer
    /// finishes it once they end.
    Pending(Box<PendingLine>),
}

struct PendingLine {
    line: Vec<u8>,
    asks: Vec<(Ask, State)>,
}

/// A line's output: its bytes, or a line and one answer to add to it.
enum Written {
    Bytes(Vec<u8>),
    /// The common case, a line with one answer and nothing of ours to
    /// replace: the answer's rendering for these settings (made once and
    /// kept with the answer) is unpacked straight into the output, with
    /// the line around it, rather than into bytes of the line's own.
    Spliced {
        line: Vec<u8>,
        splice: Splice,
        ask: Ask,
        body: Body,
    },
}

impl From<Vec<u8>> for Written {
    fn from(bytes: Vec<u8>) -> Written {
        Written::Bytes(bytes)
    }
}

impl Written {
    /// Appends the line to `out`.
    fn write_into(self, out: &mut Vec<u8>, shared: &Shared) {
        let (line, splice, ask, body) = match self {
            Written::Bytes(bytes) => return out.extend_from_slice(&bytes),
            Written::Spliced { line, splice, ask, body } => (line, splice, ask, body),
        };
        out.reserve(line.len() + body.rendering_len() + 1);
        let mut made = false;
        splice.write_into(out, &line, |out| {
            made = body.render_into(rendering_key(shared, &ask), out, |body| {
                let done = [(ask.clone(), Outcome::Data(body.clone()))];
                members(&shared.settings, &shared.assembled.ecs, &done)
            });
        });
        if made {
            // The memo weighs what the answer now holds.
            shared.assembled.engine.reweigh(ask.function, &ask.raw);
        }
    }
}

impl Output {
    fn is_done(&self) -> bool {
        match self {
            Output::Ready(..) => true,
            Output::Pending(p) => p.asks.iter().all(|(_, state)| match state {
                State::Now(_) => true,
                State::Later(w) => w.is_done(),
            }),
        }
    }

    async fn resolve(self, shared: &Shared) -> (Written, Class) {
        let p = match self {
            Output::Ready(bytes, class) => return (bytes, class),
            Output::Pending(p) => p,
        };
        let mut done = Vec::with_capacity(p.asks.len());
        for (ask, state) in p.asks {
            let outcome = match state {
                State::Now(o) => o,
                State::Later(w) => w.outcome().await,
            };
            done.push((ask, outcome));
        }
        let content = split_ending(&p.line);
        let readable = event::lenient(&p.line[..content]);
        let finished = RawEvent::parse(&readable).map(|event| finish(shared, &p.line, content, &event, done));
        drop(readable);
        match finished {
            Some((finished, class)) => (finished.with_line(p.line), class),
            None => (p.line.into(), Class::Passed),
        }
    }
}

/// Bytes of input held at once, at least: lines in flight stay within this
/// (and within the window's count), however long the stream runs.
const BYTE_BUDGET: usize = 32 << 20;

/// Over-long lines travel in pieces of this size.
const PIECE: usize = 64 << 10;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Runs the stream to the end of `input`, or until `shutdown` resolves (with
/// the signal's name) or the output is closed.
pub async fn run<R, W, S>(
    assembled: Assembled,
    settings: Settings,
    input: R,
    output: W,
    shutdown: S,
) -> anyhow::Result<Summary>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: Sink + Send + 'static,
    S: Future<Output = &'static str> + Send,
{
    let (tx, rx) = mpsc::channel::<Slot>(settings.window.max(1));
    let budget_bytes = BYTE_BUDGET.max(2 * settings.max_line);
    let budget = Arc::new(Semaphore::new(budget_bytes));
    let progress = settings.progress.then(progress_bar);
    let field_keys = field_keys(&settings, &assembled.ecs);
    let shared = Arc::new(Shared { assembled, settings, counters: Counters::default(), field_keys });
    prepare_answers(&shared);
    let writer = tokio::spawn(write_lines(rx, output, progress.clone(), shared.clone()));

    let mut reader = Reader {
        input: BufReader::with_capacity(1 << 16, input),
        shared: shared.clone(),
        tx,
        budget,
        budget_bytes,
        shutdown: Box::pin(shutdown),
        interrupted: None,
        lines: 0,
        warned_long: false,
    };
    let read_result = reader.read_all().await;
    let (lines, interrupted) = (reader.lines, reader.interrupted);
    drop(reader);
    let write_result = writer.await?;
    shared.assembled.engine.flush().await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    read_result.map_err(|e| anyhow::Error::new(e).context("cannot read the input"))?;
    let output_closed = match write_result {
        Ok(()) => false,
        Err(e) if is_closed(&e) => true,
        Err(e) => return Err(anyhow::Error::new(e).context("cannot write the output")),
    };
    let c = &shared.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(Summary {
        lines,
        written: load(&c.written),
        enriched: load(&c.enriched),
        errors: load(&c.errors),
        skipped: load(&c.skipped),
        passed: load(&c.passed),
        unreadable: load(&c.unreadable),
        output_closed,
        interrupted,
    })
}

/// Whether a write failed because the reader of the output is gone.
fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} lines {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

struct Reader<R, S> {
    input: BufReader<R>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Slot>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    shutdown: std::pin::Pin<Box<S>>,
    interrupted: Option<&'static str>,
    lines: u64,
    warned_long: bool,
}

/// Why the reader stopped early.
enum Stop {
    /// The writer is gone (the output was closed).
    Closed,
}

impl<R: AsyncRead + Unpin, S: Future<Output = &'static str>> Reader<R, S> {
    /// Reads lines until the end of the input, a signal, or a closed output.
    async fn read_all(&mut self) -> std::io::Result<()> {
        let max_line = self.shared.settings.max_line;
        let mut line = Vec::new();
        loop {
            // A line already in the buffer is taken at once; the signal is
            // looked at whenever the reader has to wait for input (or for
            // room, in `send`), so at least once per buffer's worth.
            let read = if self.interrupted.is_none() && take_buffered_line(&mut self.input, &mut line, max_line) {
                Ok(true)
            } else {
                tokio::select! {
                    biased;
                    signal = self.shutdown.as_mut(), if self.interrupted.is_none() => {
                        self.interrupt(signal);
                        Ok(true)
                    }
                    r = read_bounded(&mut self.input, &mut line, max_line) => r,
                }
            };
            let complete = read?;
            if line.is_empty() {
                return Ok(());
            }
            self.lines += 1;
            if self.lines == 1 && line.starts_with(BOM) {
                line.drain(..BOM.len());
            }
            let result = if self.interrupted.is_some() {
                // A line cut short by the signal goes out as it came.
                self.send(Output::Ready(std::mem::take(&mut line).into(), Class::Passed), 1).await
            } else if complete {
                let bytes = line.len();
                self.send(prepare(&self.shared, std::mem::take(&mut line), self.lines), bytes).await
            } else {
                self.pass_long_line(std::mem::take(&mut line)).await?
            };
            if matches!(result, Err(Stop::Closed)) || self.interrupted.is_some() {
                return Ok(());
            }
        }
    }

    fn interrupt(&mut self, signal: &'static str) {
        self.interrupted = Some(signal);
        self.shared.assembled.start_drain(signal);
    }

    /// Waits for `fut`; a signal meanwhile starts the drain, and the wait
    /// goes on (what was read is still written).
    async fn or_signal<T>(&mut self, fut: impl Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        if self.interrupted.is_none() {
            tokio::select! {
                biased;
                out = fut.as_mut() => return out,
                signal = self.shutdown.as_mut() => self.interrupt(signal),
            }
        }
        fut.await
    }

    /// Hands a line to the writer, within the window and the byte budget.
    async fn send(&mut self, output: Output, bytes: usize) -> Result<(), Stop> {
        use tokio::sync::{TryAcquireError, mpsc::error::TrySendError};
        let n = bytes.clamp(1, self.budget_bytes) as u32;
        // Room is usually there: take it without waiting (or looking at
        // the signal); wait, watching for the signal, only when it is not.
        let permit = match self.budget.clone().try_acquire_many_owned(n) {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(Stop::Closed),
            Err(TryAcquireError::NoPermits) => {
                let budget = self.budget.clone();
                self.or_signal(budget.acquire_many_owned(n)).await.map_err(|_| Stop::Closed)?
            }
        };
        let more_buffered = self.input.buffer().contains(&b'\n');
        let slot = Slot { output, more_buffered, _budget: permit };
        match self.tx.try_send(slot) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Stop::Closed),
            Err(TrySendError::Full(slot)) => {
                let tx = self.tx.clone();
                let reserved = self.or_signal(tx.reserve()).await.map_err(|_| Stop::Closed)?;
                reserved.send(slot);
                Ok(())
            }
        }
    }

    /// A line too long to look at: passed through as it comes, in pieces
    /// (one warning per run). The line counts once, with its last piece.
    async fn pass_long_line(&mut self, first: Vec<u8>) -> std::io::Result<Result<(), Stop>> {
        if !self.warned_long {
            self.warned_long = true;
            tracing::warn!(
                "line {} is longer than {} bytes and is passed through without enrichment",
                self.lines,
                self.shared.settings.max_line
            );
        }
        let mut piece = first;
        loop {
            let mut next = Vec::new();
            let done = if self.interrupted.is_some() {
                true
            } else {
                tokio::select! {
                    biased;
                    signal = self.shutdown.as_mut() => {
                        self.interrupt(signal);
                        true
                    }
                    r = read_bounded(&mut self.input, &mut next, PIECE) => r?,
                }
            };
            let last = done && next.is_empty();
            let class = if last { Class::Passed } else { Class::Piece };
            if let Err(stop) = self.send(Output::Ready(std::mem::replace(&mut piece, next).into(), class), PIECE).await
            {
                return Ok(Err(stop));
            }
            if last {
                return Ok(Ok(()));
            }
            if done {
                return Ok(self.send(Output::Ready(piece.into(), Class::Passed), PIECE).await);
            }
        }
    }
}

/// One indicator field of a line.
#[derive(Clone)]
struct Ask {
    field: usize,
    function: Function,
    raw: String,
}

/// Its answer: known now, or to be waited for.
enum State {
    Now(Outcome),
    Later(Waiting),
}

/// The line without its ending, and the ending (`\n`, `\r\n` or none).
fn split_ending(line: &[u8]) -> usize {
    if line.ends_with(b"\r\n") {
        line.len() - 2
    } else if line.ends_with(b"\n") {
        line.len() - 1
    } else {
        line.len()
    }
}

/// Looks at one line: what it asks, and its output now or a task for it.
fn prepare(shared: &Arc<Shared>, line: Vec<u8>, number: u64) -> Output {
    let content = split_ending(&line);
    let readable = event::lenient(&line[..content]);
    let Some(event) = RawEvent::parse(&readable) else {
        let lenient_failed = matches!(readable, std::borrow::Cow::Owned(_))
            && readable.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if lenient_failed {
            if !shared.counters.warned_unreadable.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "line {number} holds bytes that are not UTF-8 and cannot be read as a JSON object; it is passed through unchanged (the summary counts such lines)"
                );
            }
            return Output::Ready(line.into(), Class::Unreadable);
        }
        return Output::Ready(line.into(), Class::Passed);
    };
    let asks = asks(shared, &line[..content], &event);
    if asks.is_empty() {
        drop(event);
        drop(readable);
        return Output::Ready(line.into(), Class::Passed);
    }
    if asks.iter().all(|(_, state)| matches!(state, State::Now(_))) {
        let done: Vec<(Ask, Outcome)> = asks
            .into_iter()
            .filter_map(|(ask, state)| match state {
                State::Now(o) => Some((ask, o)),
                State::Later(_) => None,
            })
            .collect();
        let (finished, class) = finish(shared, &line, content, &event, done);
        drop(event);
        drop(readable);
        return Output::Ready(finished.with_line(line), class);
    }
    drop(event);
    Output::Pending(Box::new(PendingLine { line, asks }))
}

/// The indicator fields a line holds, each answered from memory or pending.
fn asks(shared: &Shared, original: &[u8], event: &RawEvent<'_>) -> Vec<(Ask, State)> {
    let s = &shared.settings;
    let engine = &shared.assembled.engine;
    let mut out = Vec::new();
    for (i, field) in s.fields.iter().enumerate() {
        let Some(value) = field.path.get(event) else { continue };
        let failed = |function, raw: String, reason: String| {
            (Ask { field: i, function, raw }, State::Now(Outcome::Failed(reason)))
        };
        let Some(text) = raw_string(value) else {
            let outcome = Outcome::not_a_string(s.function.object(), raw_type(value));
            out.push((Ask { field: i, function: Function::IpReport, raw: String::new() }, State::Now(outcome)));
            continue;
        };
        if std::str::from_utf8(&original[event.span_of(value)]).is_err() {
            out.push(failed(Function::IpReport, text, "the indicator is not valid UTF-8".to_owned()));
            continue;
        }
        let function = match s.function.resolve(&text) {
            Ok(f) => f,
            Err(reason) => {
                out.push(failed(Function::IpReport, text, reason));
                continue;
            }
        };
        // A lookup the memo cannot answer starts now, so lookups of
        // different lines run concurrently while the writer waits in order.
        let state = match engine.lookup_now(function, &text) {
            Ok(outcome) => State::Now(outcome),
            Err(pending) => State::Later(engine.start(pending)),
        };
        out.push((Ask { field: i, function, raw: text }, state));
    }
    out
}

/// What becomes of a line whose lookups are done.
enum Finished {
    /// One answer, added where the line is written ([`Written::Spliced`]).
    Splice(Splice, Ask, Body),
    /// The line with the answers written on.
    Bytes(Vec<u8>),
}

impl Finished {
    fn with_line(self, line: Vec<u8>) -> Written {
        match self {
            Finished::Splice(splice, ask, body) => Written::Spliced { line, splice, ask, body },
            Finished::Bytes(bytes) => Written::Bytes(bytes),
        }
    }
}

/// The line with the answers written on (or to be), and how it went.
fn finish(
    shared: &Shared,
    line: &[u8],
    content: usize,
    event: &RawEvent<'_>,
    mut done: Vec<(Ask, Outcome)>,
) -> (Finished, Class) {
    let class = if done.iter().any(|(_, o)| matches!(o, Outcome::Failed(_))) {
        Class::Error
    } else if done.iter().any(|(_, o)| o.is_answer()) {
        Class::Enriched
    } else {
        Class::Skipped
    };
    if let [(ask, Outcome::Data(_))] = &done[..] {
        if !clashes(&shared.settings, ask, event) {
            let Some((ask, Outcome::Data(body))) = done.pop() else { unreachable!("one answer with data") };
            return (Finished::Splice(event.splice(), ask, body), class);
        }
    }
    let mut bytes = event::apply(&line[..content], event, &output(shared, &done));
    bytes.extend_from_slice(&line[content..]);
    (Finished::Bytes(bytes), class)
}

fn output(shared: &Shared, done: &[(Ask, Outcome)]) -> kl_schema::Output {
    with_items(&shared.settings, done, |items| {
        kl_schema::output(shared.settings.style, &shared.settings.target, &shared.assembled.ecs, items)
    })
}

/// The members a line with these answers gets, serialised, for a line that
/// holds none of them.
fn members(s: &Settings, ecs: &kl_schema::Ecs, done: &[(Ask, Outcome)]) -> Vec<u8> {
    with_items(s, done, |items| kl_schema::style::members(s.style, &s.target, ecs, items))
}

fn with_items<T>(s: &Settings, done: &[(Ask, Outcome)], f: impl FnOnce(&[kl_schema::Item<'_>]) -> T) -> T {
    let items: Vec<kl_schema::Item<'_>> = done
        .iter()
        .map(|(ask, outcome)| kl_schema::Item {
            function: ask.function,
            raw: &ask.raw,
            field: Some(s.fields[ask.field].path.as_str()),
            target: s.fields[ask.field].target.as_deref(),
            outcome,
        })
        .collect();
    f(&items)
}

/// Renders answers read from the persistent cache on the cache's thread,
/// as [`finish`] would render them for the stream's one field, so the
/// thread that reads and writes events finds them rendered; a cache that
/// keeps renderings with answers keeps these, and gives them back to the
/// next stream with the same settings. Only where the rendering does not
/// depend on the event (one field; not ECS, which names the indicator as
/// written).
fn prepare_answers(shared: &Shared) {
    let s = &shared.settings;
    if s.fields.len() != 1 || s.style == Style::Ecs {
        return;
    }
    let (settings, ecs, field_key) = (s.clone(), shared.assembled.ecs.clone(), shared.field_keys[0]);
    let key = move |function| settings_key(field_key, function);
    shared.assembled.engine.prepare_answers(key, move |function, body| {
        let ask = Ask { field: 0, function, raw: String::new() };
        let done = [(ask, Outcome::Data(body.clone()))];
        let key = settings_key(field_key, function);
        body.render_into(key, &mut Vec::new(), |_| members(&settings, &ecs, &done));
    });
}

/// Whether the event holds a key the answer of `ask` would write or clear.
fn clashes(s: &Settings, ask: &Ask, event: &RawEvent<'_>) -> bool {
    let field = &s.fields[ask.field];
    match (s.style, field.target.as_deref()) {
        (Style::Kl, None) => event.has_key_starting_with("$KL"),
        (style, target) => {
            event.contains(target.unwrap_or(&s.target)) || (style == Style::Ecs && event.contains("threat"))
        }
    }
}

/// What a rendering of one answer depends on besides the answer: the
/// style, where it goes, the function, and (ECS names the match) the
/// indicator as written. The settings' part is fixed for a stream and
/// hashed once, in [`field_keys`]; a line hashes only what varies.
fn rendering_key(shared: &Shared, ask: &Ask) -> u64 {
    use std::hash::{Hash, Hasher};
    let key = settings_key(shared.field_keys[ask.field], ask.function);
    if shared.settings.style != Style::Ecs {
        return key;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key, &ask.raw).hash(&mut h);
    h.finish()
}

/// A field's part of [`rendering_key`] with the function added: the field's
/// key is a hash already, and adding the function (one of seven) keeps
/// distinct settings apart without hashing again.
fn settings_key(field_key: u64, function: Function) -> u64 {
    field_key.wrapping_add(function as u64)
}

/// The settings' part of each field's [`rendering_key`]. Renderings are
/// kept in a persistent cache too, so the key holds everything they depend
/// on besides the answer, down to the build of kl that makes them.
fn field_keys(s: &Settings, ecs: &kl_schema::Ecs) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let build = build_identity();
    s.fields
        .iter()
        .map(|field| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&build, format!("{ecs:?}"), s.style as u8, &s.target, field.path.as_str(), &field.target).hash(&mut h);
            h.finish()
        })
        .collect()
}

/// What tells this build of kl from any other that may share its cache:
/// the version, and the executable file (device, inode, size, modification
/// time), which a rebuild or an upgrade changes. When the file cannot be
/// read, a value of this process alone: its renderings are then never
/// reused by another.
fn build_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::fs::MetadataExt;
    let version = env!("CARGO_PKG_VERSION");
    match std::env::current_exe().and_then(std::fs::metadata) {
        Ok(m) => format!("{version} {} {} {} {}.{}", m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()),
        Err(_) => {
            format!("{version} process {}", std::collections::hash_map::RandomState::new().build_hasher().finish())
        }
    }
}

/// Takes the next line from what `r` holds already, if a complete one fits
/// in `max` bytes; `false` (and nothing taken) otherwise.
fn take_buffered_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, buf: &mut Vec<u8>, max: usize) -> bool {
    let available = r.buffer();
    match memchr::memchr(b'\n', available) {
        Some(i) if buf.is_empty() && i < max => {
            buf.extend_from_slice(&available[..=i]);
            Pin::new(r).consume(i + 1);
            true
        }
        _ => false,
    }
}

/// Reads up to and including the next newline into `buf`, but no more than
/// `max` bytes. `true` when the line ended (newline or end of input),
/// `false` when `max` was reached first and the rest is still unread.
///
/// Cancel-safe as to the data: what was taken from `r` is in `buf`.
async fn read_bounded<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(true);
        }
        let room = max.saturating_sub(buf.len());
        if let Some(i) = memchr::memchr(b'\n', available) {
            if i < room {
                buf.extend_from_slice(&available[..=i]);
                r.consume(i + 1);
                return Ok(true);
            }
        }
        let take = available.len().min(room);
        buf.extend_from_slice(&available[..take]);
        r.consume(take);
        if buf.len() >= max {
            return Ok(false);
        }
    }
}

/// How long the writer waits for a line that is not done before it
/// flushes the lines written ahead of it. Short enough that no finished line
/// waits noticeably for a later one; long enough that a stream whose answers
/// come from the cache in bursts is written in large pieces, not one write
/// (and one hand-over to the output's thread) per line.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes lines in input order; lines are counted once flushed.
///
/// After each line the output is flushed, unless a next line has come (it
/// is written first if it is done within [`FLUSH_GRACE`]), or is about to
/// come (the reader holds it complete in its buffer). So no finished line
/// waits for a later one for longer than the grace, and a fast stream is
/// written in large pieces.
async fn write_lines<W: Sink>(
    mut rx: mpsc::Receiver<Slot>,
    output: W,
    progress: Option<indicatif::ProgressBar>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let mut out = Flusher {
        out: output,
        staged: Vec::with_capacity(STAGED),
        unflushed: Vec::new(),
        progress,
        shared: shared.clone(),
    };
    let mut next: Option<Slot> = None;
    loop {
        let slot = match next.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        let more_buffered = slot.more_buffered;
        let (bytes, class) = match slot.output {
            Output::Ready(written, class) => (written, class),
            pending => {
                let waits = !pending.is_done() && !out.unflushed.is_empty();
                let resolving = pending.resolve(&shared);
                if waits {
                    let mut resolving = std::pin::pin!(resolving);
                    tokio::select! {
                        biased;
                        done = resolving.as_mut() => done,
                        () = tokio::time::sleep(FLUSH_GRACE) => {
                            out.flush().await?;
                            resolving.await
                        }
                    }
                } else {
                    resolving.await
                }
            }
        };
        out.write(bytes, class).await?;
        drop(slot._budget);
        next = rx.try_recv().ok();
        if next.is_none() && !more_buffered {
            out.flush().await?;
        }
    }
    out.flush().await
}

/// Bytes gathered before they are handed to the output.
const STAGED: usize = 64 << 10;

/// The output, the bytes written since they were last handed to it, and
/// the classes of the lines written since it was last flushed: they are
/// counted once flushed.
struct Flusher<W> {
    out: W,
    staged: Vec<u8>,
    unflushed: Vec<Class>,
    progress: Option<indicatif::ProgressBar>,
    shared: Arc<Shared>,
}

impl<W: Sink> Flusher<W> {
    async fn write(&mut self, written: Written, class: Class) -> std::io::Result<()> {
        written.write_into(&mut self.staged, &self.shared);
        self.unflushed.push(class);
        if self.staged.len() >= STAGED {
            self.out.put(&mut self.staged).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.staged.is_empty() {
            self.out.put(&mut self.staged).await?;
        }
        self.out.flush().await?;
        for class in self.unflushed.drain(..) {
            self.shared.counters.count(class);
        }
        if let Some(bar) = &self.progress {
            bar.set_position(self.shared.counters.written.load(Ordering::Relaxed));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fields: &[&str], style: Style) -> Settings {
        Settings {
            function: FunctionChoice::Auto,
            fields: fields.iter().map(|f| f.parse().unwrap()).collect(),
            style,
            target: "kaspersky".to_owned(),
            window: 16,
            max_line: 1 << 20,
            progress: false,
        }
    }

    #[test]
    fn field_specs_and_targets() {
        let f: Field = "source.ip=src_kl".parse().unwrap();
        assert_eq!((f.path.as_str(), f.target.as_deref()), ("source.ip", Some("src_kl")));
        let f: Field = "indicator".parse().unwrap();
        assert_eq!(f.target, None);
        assert!("source.ip=".parse::<Field>().unwrap_err().contains("empty"));
        assert!("=x".parse::<Field>().is_err());
    }

    #[test]
    fn settings_that_would_lose_data_are_refused() {
        assert!(settings(&["source.ip", "destination.ip"], Style::Ecs).check().is_ok());
        for style in [Style::Kl, Style::Nested] {
            let e = settings(&["source.ip", "destination.ip"], style).check().unwrap_err();
            assert!(e.contains("each needs its own target"), "{e}");
            assert!(settings(&["source.ip=s", "destination.ip=d"], style).check().is_ok());
        }
        let e = settings(&["indicator"], Style::Nested);
        assert!(Settings { target: "indicator".into(), ..e.clone() }.check().unwrap_err().contains("overwrite"));
        assert!(Settings { target: "".into(), ..e.clone() }.check().unwrap_err().contains("empty"));
        assert!(settings(&["source.ip=source"], Style::Kl).check().unwrap_err().contains("overwrite"));
        assert!(settings(&["a=x", "b=x"], Style::Nested).check().unwrap_err().contains("two fields"));
        assert!(Settings { target: "source".into(), ..settings(&["source.ip"], Style::Ecs) }.check().is_err());
        assert!(settings(&["indicator"], Style::Kl).check().is_ok());
    }

    #[test]
    fn line_endings_are_found() {
        assert_eq!(split_ending(b"{}\r\n"), 2);
        assert_eq!(split_ending(b"{}\n"), 2);
        assert_eq!(split_ending(b"{}"), 2);
    }
}
