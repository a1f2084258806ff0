//! `kl-dnif`: the DNIF lookup adapter.
//!
//! Reads DNIF's `inward_array` (a JSON array of event objects) on stdin and
//! writes the same array on stdout, each event that holds FIELD enriched with
//! the `$KL` fields of FUNCTION. Per-event failures are `$KLError` fields;
//! the exit status is 2 only for usage, config and input errors, and then
//! nothing is written on stdout.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use kl_core::{Cache, Config, Engine, EngineOptions, Function, HttpBackend, Outcome};
use kl_schema::event::{RawEvent, raw_string, raw_type};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Enrich DNIF events with Kaspersky Threat Intelligence Portal lookups.
#[derive(Debug, Parser)]
#[command(name = "kl-dnif", version, about, long_about = None)]
struct Args {
    /// The config file (dnifconfig.yml format). Default: $KL_CONFIG, then
    /// dnifconfig.yml in the plugin folder (beside bin/), then in the current folder.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The lookup: get_ip_report, get_ip_report_file, get_url_report,
    /// get_url_report_file, get_domain_report, get_domain_report_file or get_hash_report.
    function: Function,
    /// The event key holding the indicator, such as $SrcIP.
    field: String,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kl-dnif: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run(args: Args) -> anyhow::Result<()> {
    let field = args.field.trim().to_owned();
    if field.is_empty() {
        bail!("FIELD is empty; name the event key that holds the indicator, such as $SrcIP");
    }
    let config_path = find_config(args.config.as_deref())?;
    let config = Config::load(config_path.as_deref()).context("configuration")?;
    let backend = HttpBackend::from_config(&config).context("configuration")?;

    let mut input = String::new();
    io::stdin().read_to_string(&mut input).context("cannot read stdin")?;
    let events = parse_events(&input)?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The cache lives beside the plugin's config by default (`cache/`), so
    // every DNIF process on the host shares it.
    let default_cache = config.base_dir.as_ref().map(|d| d.join("cache")).or_else(kl_core::xdg_cache_dir);
    let cache = Cache::for_config(&config, default_cache).map(Arc::new);
    let engine = Engine::new(Arc::new(backend), EngineOptions { cache, ..EngineOptions::from_config(&config) });
    let enriched = runtime.block_on(enrich(&engine, args.function, &field, &events));
    let s = engine.stats();
    tracing::debug!(
        events = events.len(),
        requests = s.requests,
        reused = s.reused,
        retries = s.retries,
        errors = s.errors,
        skipped = s.skipped,
        cache_hits = s.cache_hits,
        quota_used = s.quota.map(|q| q.0),
        quota = s.quota.map(|q| q.1),
        max_in_flight = s.max_in_flight,
        "done"
    );
    write_events(&enriched)
}

/// The config file: `--config`, else `$KL_CONFIG`, else `dnifconfig.yml` in
/// the plugin folder (the parent of `bin/`), else in the current folder.
/// `None` when none exists: then the environment alone must configure kl.
fn find_config(given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("configuration: config file {} does not exist", p.display());
        }
        return Ok(Some(p.to_path_buf()));
    }
    if let Some(p) = std::env::var_os("KL_CONFIG") {
        return Ok(Some(PathBuf::from(p)));
    }
    let beside_plugin =
        std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("dnifconfig.yml")));
    Ok(beside_plugin.into_iter().chain([PathBuf::from("dnifconfig.yml")]).find(|p| p.is_file()))
}

/// Splits stdin into its events, each kept as raw text with its members.
fn parse_events(input: &str) -> anyhow::Result<Vec<(&str, RawEvent<'_>)>> {
    if input.trim().is_empty() {
        bail!("stdin is empty; expected a JSON array of event objects");
    }
    let items: Vec<&RawValue> = match serde_json::from_str(input) {
        Ok(items) => items,
        Err(e) if e.is_data() => {
            let found = serde_json::from_str::<&RawValue>(input).map(raw_type).unwrap_or("something else");
            bail!("stdin must be a JSON array of event objects, found {found}");
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context("stdin is not valid JSON; expected a JSON array of event objects")
            );
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match RawEvent::parse(item.get().as_bytes()) {
            Some(event) => Ok((item.get(), event)),
            None => bail!("stdin must be a JSON array of event objects, but element {i} is {}", raw_type(item)),
        })
        .collect()
}

/// Looks up every event's own indicator; returns each event as it goes out.
async fn enrich(engine: &Engine, function: Function, field: &str, events: &[(&str, RawEvent<'_>)]) -> Vec<Vec<u8>> {
    let values: Vec<Option<&RawValue>> = events.iter().map(|(_, e)| e.get(field)).collect();
    let texts: Vec<Option<String>> = values.iter().map(|v| v.and_then(raw_string)).collect();
    let wanted: Vec<&str> = texts.iter().flatten().map(String::as_str).collect();
    let mut answers = engine.lookup_batch(function, &wanted).await.into_iter();
    events
        .iter()
        .zip(values.iter().zip(&texts))
        .map(|((text, event), (value, indicator))| {
            let outcome = match (value, indicator) {
                (None, _) => return text.as_bytes().to_vec(),
                (Some(_), Some(_)) => answers.next().unwrap_or_else(|| Outcome::Failed("internal error".to_owned())),
                (Some(v), None) => Outcome::not_a_string(Some(function.object()), raw_type(v)),
            };
            let fields: Map<String, Value> =
                kl_schema::render(function, &outcome).into_iter().map(|f| (f.name, f.value)).collect();
            kl_schema::event::write(text.as_bytes(), event, &fields)
        })
        .collect()
}

/// Writes the events as one JSON array.
fn write_events(events: &[Vec<u8>]) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = (|| {
        out.write_all(b"[")?;
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(e)?;
        }
        out.write_all(b"]\n")?;
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write stdout"),
    }
}
