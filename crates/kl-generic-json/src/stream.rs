//! The NDJSON stream: concurrent lookups, lines out in input order, a
//! bounded window of lines in flight.
//!
//! An enriched line is the input line with the new keys spliced in before
//! its closing brace, so every byte of the event stays as it came. Only when
//! a new key would clash with one the event already has (a `threat` object
//! to extend, an old `$KLZone`) is the event rebuilt as a whole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kl_core::{Engine, Function, Outcome};
use kl_schema::{Match, Style};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::FunctionChoice;
use kl_schema::event::{FieldPath, RawEvent, raw_string, raw_type, splice};

/// What `enrich` was asked to do.
#[derive(Debug)]
pub struct Settings {
    pub function: FunctionChoice,
    pub field: FieldPath,
    pub style: Style,
    pub target: String,
    pub window: usize,
    /// Longer lines are passed through unread, in pieces.
    pub max_line: usize,
    pub progress: bool,
}

/// Counts for the closing summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub enriched: u64,
    pub errors: u64,
    pub skipped: u64,
    pub passed: u64,
    /// Lines answered from an earlier line's lookup, without asking the engine.
    pub repeats: u64,
}

#[derive(Debug, Default)]
struct Counters {
    enriched: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    passed: AtomicU64,
    repeats: AtomicU64,
}

/// What one lookup adds to an event, ready to splice in.
#[derive(Debug)]
struct Rendered {
    /// The new top-level keys and values, serialised without braces.
    members: Vec<u8>,
    /// The new top-level keys, to detect clashes.
    keys: Vec<String>,
    /// The fields, for events that must be rebuilt.
    object: Map<String, Value>,
    counter: fn(&Counters) -> &AtomicU64,
}

/// Rendered answers by (function, indicator as written), so a repeated
/// indicator costs a splice and nothing more. Cleared when it grows past
/// this many entries.
const RENDERED_LIMIT: usize = 100_000;

/// Indicator as written -> the answers rendered for it, per function.
type RenderedByIndicator = HashMap<String, Vec<(Function, Arc<Rendered>)>>;

struct Shared {
    engine: Engine,
    settings: Settings,
    counters: Counters,
    rendered: Mutex<RenderedByIndicator>,
}

/// One line's output (or a piece of an over-long line): ready now, or once
/// its lookup is done. It holds its share of the byte budget until written.
struct Slot {
    output: Output,
    _budget: OwnedSemaphorePermit,
}

enum Output {
    Ready(Vec<u8>),
    Pending(JoinHandle<Vec<u8>>),
}

/// Bytes of input held at once, at least: lines in flight stay within this
/// (and within the window's count), however long the stream runs.
const BYTE_BUDGET: usize = 32 << 20;

/// Over-long lines travel in pieces of this size.
const PIECE: usize = 64 << 10;

/// Runs the stream to the end of `input`.
pub async fn run<R, W>(engine: Engine, settings: Settings, input: R, output: W) -> anyhow::Result<Summary>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Slot>(settings.window.max(1));
    let budget_bytes = BYTE_BUDGET.max(2 * settings.max_line);
    let budget = Arc::new(Semaphore::new(budget_bytes));
    let progress = settings.progress.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} lines {per_sec} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let shared = Arc::new(Shared { engine, settings, counters: Counters::default(), rendered: Mutex::default() });
    let writer = tokio::spawn(write_lines(rx, output, progress.clone()));

    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut lines = 0u64;
    let mut read_error = None;
    let mut warned_long = false;
    'lines: loop {
        let mut line = Vec::new();
        let complete = match read_bounded(&mut reader, &mut line, shared.settings.max_line).await {
            Ok(c) => c,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if line.is_empty() {
            break;
        }
        lines += 1;
        let permit = |n: usize| budget.clone().acquire_many_owned(n.clamp(1, budget_bytes) as u32);
        if complete {
            let Ok(p) = permit(line.len()).await else { break };
            let slot = Slot { output: handle_line(&shared, line), _budget: p };
            if tx.send(slot).await.is_err() {
                break; // the writer stopped: stdout is closed
            }
            continue;
        }
        // Too long to look at: pass it through as it comes, piece by piece.
        if !warned_long {
            warned_long = true;
            tracing::warn!(
                "line {lines} is longer than {} bytes and is passed through without enrichment",
                shared.settings.max_line
            );
        }
        shared.counters.passed.fetch_add(1, Ordering::Relaxed);
        let mut piece = line;
        loop {
            let Ok(p) = permit(piece.len()).await else { break 'lines };
            if tx.send(Slot { output: Output::Ready(piece), _budget: p }).await.is_err() {
                break 'lines;
            }
            piece = Vec::new();
            match read_bounded(&mut reader, &mut piece, PIECE).await {
                Ok(true) => {
                    if !piece.is_empty() {
                        let Ok(p) = permit(piece.len()).await else { break 'lines };
                        if tx.send(Slot { output: Output::Ready(piece), _budget: p }).await.is_err() {
                            break 'lines;
                        }
                    }
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    read_error = Some(e);
                    break 'lines;
                }
            }
        }
    }
    drop(tx);
    let write_result = writer.await?;
    shared.engine.flush();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = read_error {
        return Err(anyhow::Error::new(e).context("cannot read stdin"));
    }
    write_result?;
    let c = &shared.counters;
    Ok(Summary {
        lines,
        enriched: c.enriched.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        skipped: c.skipped.load(Ordering::Relaxed),
        passed: c.passed.load(Ordering::Relaxed),
        repeats: c.repeats.load(Ordering::Relaxed),
    })
}

fn handle_line(shared: &Arc<Shared>, line: Vec<u8>) -> Output {
    let settings = &shared.settings;
    let passthrough = |line| {
        shared.counters.passed.fetch_add(1, Ordering::Relaxed);
        Output::Ready(line)
    };
    let Some(event) = RawEvent::parse(&line) else { return passthrough(line) };
    let Some(raw) = settings.field.get(&event) else { return passthrough(line) };
    let Some(text) = raw_string(raw) else {
        let found = raw_type(raw);
        let kind = match settings.function {
            FunctionChoice::Fixed(f) => Some(f.object()),
            FunctionChoice::Auto => None,
        };
        let outcome = Outcome::not_a_string(kind, found);
        let rendered = render(shared, Function::IpReport, "", &outcome);
        let clash = clashes(&event, &rendered);
        drop(event);
        return Output::Ready(splice_or_rebuild(shared, line, &rendered, clash));
    };
    let function = match settings.function.resolve(&text) {
        Ok(f) => f,
        Err(reason) => {
            let rendered = render(shared, Function::IpReport, &text, &Outcome::Failed(reason));
            let clash = clashes(&event, &rendered);
            drop(event);
            return Output::Ready(splice_or_rebuild(shared, line, &rendered, clash));
        }
    };
    let known = shared
        .rendered
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(text.as_str())
        .and_then(|per_function| per_function.iter().find(|(f, _)| *f == function).map(|(_, r)| r.clone()));
    if let Some(rendered) = known {
        shared.counters.repeats.fetch_add(1, Ordering::Relaxed);
        let clash = clashes(&event, &rendered);
        drop(event);
        return Output::Ready(splice_or_rebuild(shared, line, &rendered, clash));
    }
    drop(event);
    let shared = shared.clone();
    Output::Pending(tokio::spawn(async move {
        let outcome = shared.engine.lookup(function, &text).await;
        let rendered = Arc::new(render(&shared, function, &text, &outcome));
        {
            let mut map = shared.rendered.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= RENDERED_LIMIT {
                map.clear();
            }
            map.entry(text).or_default().push((function, rendered.clone()));
        }
        finish(&shared, line, &rendered)
    }))
}

fn render(shared: &Shared, function: Function, raw: &str, outcome: &Outcome) -> Rendered {
    let s = &shared.settings;
    let mut object = Map::new();
    let m = Match { function, raw, field: Some(s.field.as_str()) };
    kl_schema::style::write(s.style, &mut object, kl_schema::render(function, outcome), &s.target, m);
    let members = kl_schema::event::members(&object);
    let counter: fn(&Counters) -> &AtomicU64 = match outcome {
        Outcome::Data(_) | Outcome::NotFound => |c| &c.enriched,
        Outcome::Skipped(_) => |c| &c.skipped,
        Outcome::Failed(_) => |c| &c.errors,
    };
    Rendered { members, keys: object.keys().cloned().collect(), object, counter }
}

/// Whether the event already has one of the keys the answer adds.
fn clashes(event: &RawEvent<'_>, rendered: &Rendered) -> bool {
    rendered.keys.iter().any(|k| event.contains(k))
}

/// The output line for an event seen for the first time here.
fn finish(shared: &Shared, line: Vec<u8>, rendered: &Rendered) -> Vec<u8> {
    let clash = RawEvent::parse(&line).is_none_or(|event| clashes(&event, rendered));
    splice_or_rebuild(shared, line, rendered, clash)
}

/// `line` with the rendered members spliced in before its closing brace, or
/// the event rebuilt when a key clashes.
fn splice_or_rebuild(shared: &Shared, line: Vec<u8>, rendered: &Rendered, clash: bool) -> Vec<u8> {
    (rendered.counter)(&shared.counters).fetch_add(1, Ordering::Relaxed);
    if !clash {
        if let Some(mut out) = splice(&line, &rendered.members) {
            out.push(b'\n');
            return out;
        }
    }
    let Some(event) = RawEvent::parse(&line) else { return line };
    let mut out = kl_schema::event::write(&line, &event, &rendered.object);
    out.push(b'\n');
    out
}

/// Reads up to and including the next newline into `buf`, but no more than
/// `max` bytes. `true` when the line ended (newline or end of input),
/// `false` when `max` was reached first and the rest is still unread.
async fn read_bounded<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(true);
        }
        let room = max.saturating_sub(buf.len());
        if let Some(i) = available.iter().position(|b| *b == b'\n') {
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

/// Writes lines in input order; flushes whenever no further line is ready,
/// so a producer writing one line at a time gets each answer at once.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Slot>,
    output: W,
    progress: Option<indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, output);
    while let Some(slot) = rx.recv().await {
        let bytes = match slot.output {
            Output::Ready(b) => b,
            Output::Pending(task) => task.await?,
        };
        let result = async {
            out.write_all(&bytes).await?;
            if rx.is_empty() {
                out.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot write stdout")),
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    match out.flush().await {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write stdout"))
        }
        _ => Ok(()),
    }
}
