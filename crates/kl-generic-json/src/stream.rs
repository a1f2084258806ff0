//! The NDJSON stream: concurrent lookups, lines out in input order, a
//! bounded window of lines in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kl_core::{Engine, Function, Outcome};
use kl_schema::{Match, Style};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::FunctionChoice;
use crate::path::FieldPath;

/// What `enrich` was asked to do.
#[derive(Debug)]
pub struct Settings {
    pub function: FunctionChoice,
    pub field: FieldPath,
    pub style: Style,
    pub target: String,
    pub window: usize,
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
}

#[derive(Debug, Default)]
struct Counters {
    enriched: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    passed: AtomicU64,
}

/// One line's output: ready now, or once its lookup is done.
enum Slot {
    Ready(Vec<u8>),
    Pending(JoinHandle<Vec<u8>>),
}

/// Runs the stream to the end of `input`.
pub async fn run<R, W>(engine: Engine, settings: Settings, input: R, output: W) -> anyhow::Result<Summary>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let settings = Arc::new(settings);
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel::<Slot>(settings.window.max(1));
    let progress = settings.progress.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} lines {per_sec} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let writer = tokio::spawn(write_lines(rx, output, progress.clone()));

    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut lines = 0u64;
    let mut read_error = None;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        lines += 1;
        let slot = handle_line(&engine, &settings, &counters, line);
        if tx.send(slot).await.is_err() {
            break; // the writer stopped: stdout is closed
        }
    }
    drop(tx);
    let write_result = writer.await?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(e) = read_error {
        return Err(anyhow::Error::new(e).context("cannot read stdin"));
    }
    write_result?;
    Ok(Summary {
        lines,
        enriched: counters.enriched.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        skipped: counters.skipped.load(Ordering::Relaxed),
        passed: counters.passed.load(Ordering::Relaxed),
    })
}

fn handle_line(engine: &Engine, settings: &Arc<Settings>, counters: &Arc<Counters>, line: Vec<u8>) -> Slot {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(&line) else {
        counters.passed.fetch_add(1, Ordering::Relaxed);
        return Slot::Ready(line);
    };
    let Some(value) = settings.field.get(&event) else {
        counters.passed.fetch_add(1, Ordering::Relaxed);
        return Slot::Ready(line);
    };
    let raw = match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(other.clone()),
    };
    let (engine, settings, counters) = (engine.clone(), settings.clone(), counters.clone());
    Slot::Pending(tokio::spawn(async move {
        let (function, outcome, raw_text) = match raw {
            Ok(text) => match settings.function.resolve(&text) {
                Ok(f) => (f, engine.lookup(f, &text).await, text),
                Err(reason) => (Function::IpReport, Outcome::Failed(reason), text),
            },
            Err(value) => {
                let f = match settings.function {
                    FunctionChoice::Fixed(f) => f,
                    FunctionChoice::Auto => Function::IpReport,
                };
                let outcome = match settings.function {
                    FunctionChoice::Fixed(f) => Outcome::not_a_string(f, &value),
                    FunctionChoice::Auto => Outcome::Failed(format!(
                        "invalid indicator: expected a string, found {}",
                        kl_core::json_type(&value)
                    )),
                };
                (f, outcome, String::new())
            }
        };
        let counter = match &outcome {
            Outcome::Data(_) | Outcome::NotFound => &counters.enriched,
            Outcome::Skipped(_) => &counters.skipped,
            Outcome::Failed(_) => &counters.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut event: Map<String, Value> = event;
        let m = Match { function, raw: &raw_text, field: Some(settings.field.as_str()) };
        kl_schema::style::write(settings.style, &mut event, kl_schema::render(function, &outcome), &settings.target, m);
        let mut out = serde_json::to_vec(&event).unwrap_or_default();
        out.push(b'\n');
        out
    }))
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
        let bytes = match slot {
            Slot::Ready(b) => b,
            Slot::Pending(task) => task.await?,
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
