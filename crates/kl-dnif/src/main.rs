//! `kl-dnif`: the DNIF lookup adapter.
//!
//! Reads DNIF's `inward_array` (a JSON array of event objects) on stdin and
//! writes the same array on stdout, each event that holds FIELD enriched with
//! the `$KL` fields of FUNCTION. Per-event failures are `$KLError` fields;
//! the exit status is 2 only for usage, config and input errors, and then
//! nothing is written on stdout.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use kl_cli::setup::{self, ConfigSearch, EngineSetup};
use kl_cli::{exit, signals};
use kl_model::{Function, Outcome};
use kl_schema::event::{self, RawEvent, raw_string, raw_type};
use kl_schema::{Item, Style};
use serde_json::value::RawValue;

const NAME: &str = "kl-dnif";

/// Enrich DNIF events with Kaspersky Threat Intelligence Portal lookups.
#[derive(Debug, Parser)]
#[command(name = NAME, version, about, long_about = None, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The config file (dnifconfig.yml format). Default: $KL_CONFIG, then
    /// dnifconfig.yml in the plugin folder (beside bin/), then in the current folder.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The lookup: get_ip_report, get_ip_report_file, get_url_report,
    /// get_url_report_file, get_domain_report, get_domain_report_file or get_hash_report.
    #[arg(required = true)]
    function: Option<Function>,
    /// The event key holding the indicator, such as $SrcIP.
    #[arg(required = true)]
    field: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check the config, the API's answer and the account (quota, token expiry).
    Check {
        /// The config file; found as for a lookup when not given.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// Where the config is looked for, after `--config` and `$KL_CONFIG`.
const SEARCH: ConfigSearch =
    ConfigSearch { beside_binary: Some("dnifconfig.yml"), in_current_dir: Some("dnifconfig.yml") };

fn main() -> ExitCode {
    let args = match exit::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    exit::run_async(NAME, async {
        match args.command {
            Some(Command::Check { config }) => check(config).await,
            None => run(args).await.map(|()| ExitCode::SUCCESS),
        }
    })
}

async fn check(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = setup::load_config(config.as_deref(), SEARCH)?;
    setup::start_logging(&config, false)?;
    let assembled = setup::engine(&config, EngineSetup { default_cache_dir: None, run_deadline: true })?;
    let report = kl_cli::check::run(&assembled).await;
    Ok(kl_cli::check::print(NAME, &report, false))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (Some(function), Some(field)) = (args.function, args.field) else {
        bail!("FUNCTION and FIELD are required, such as get_ip_report '$SrcIP'");
    };
    let field = field.trim().to_owned();
    if field.is_empty() {
        bail!("FIELD is empty; name the event key that holds the indicator, such as $SrcIP");
    }
    let config = setup::load_config(args.config.as_deref(), SEARCH)?;
    setup::start_logging(&config, false)?;
    // The cache lives beside the plugin's config by default (`cache/`), so
    // every DNIF process on the host shares it.
    let default_cache_dir = config.base_dir.as_ref().map(|d| d.join("cache")).or_else(kl_core::store::xdg_cache_dir);
    let assembled = setup::engine(&config, EngineSetup { default_cache_dir, run_deadline: true })?;
    assembled.engine.supports(function).map_err(anyhow::Error::msg)?;

    let mut input = Vec::new();
    io::stdin().read_to_end(&mut input).context("cannot read stdin")?;
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&input);
    let readable = event::lenient(input);
    let events = parse_events(&readable)?;

    // One request per event that holds the field, aligned by index.
    let requests: Vec<Request> =
        events.iter().map(|(range, e)| Request::of(e, &field, &input[range.clone()])).collect();
    let texts: Vec<(usize, &str)> = requests.iter().enumerate().filter_map(|(i, r)| r.text().map(|t| (i, t))).collect();
    let raws: Vec<&str> = texts.iter().map(|(_, t)| *t).collect();
    let lookups = assembled.engine.lookup_all(function, &raws);
    tokio::pin!(lookups);
    let answers = tokio::select! {
        answers = &mut lookups => answers,
        signal = signals::shutdown() => {
            // Finish what was asked within the drain time, then answer.
            assembled.start_drain(signal);
            lookups.await
        }
    };
    let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|r| r.outcome(function)).collect();
    for ((i, _), answer) in texts.iter().zip(answers) {
        outcomes[*i] = Some(answer);
    }

    let enriched: Vec<Vec<u8>> = events
        .iter()
        .zip(&requests)
        .zip(&outcomes)
        .map(|(((range, event), request), outcome)| {
            let original = &input[range.clone()];
            match outcome {
                None => original.to_vec(),
                Some(outcome) => {
                    let item = Item { function, raw: request.raw(), field: Some(&field), target: None, outcome };
                    event::apply(original, event, &kl_schema::output(Style::Kl, "", &assembled.ecs, &[item]))
                }
            }
        })
        .collect();
    assembled.engine.flush().await;
    log_stats(&assembled.engine, events.len());
    write_events(&enriched)
}

/// What one event asks.
enum Request {
    /// No FIELD: the event passes unchanged.
    Absent,
    /// FIELD holds something that is not an indicator string.
    Unusable(String),
    Text(String),
}

impl Request {
    /// `original` is the event's own bytes (it may have been parsed from a
    /// lenient copy of them).
    fn of(event: &RawEvent<'_>, field: &str, original: &[u8]) -> Request {
        let Some(value) = event.get(field) else { return Request::Absent };
        if std::str::from_utf8(&original[event.span_of(value)]).is_err() {
            return Request::Unusable("the indicator is not valid UTF-8".to_owned());
        }
        match raw_string(value) {
            Some(text) => Request::Text(text),
            None => Request::Unusable(raw_type(value).to_owned()),
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Request::Text(t) => Some(t),
            _ => None,
        }
    }

    fn raw(&self) -> &str {
        self.text().unwrap_or_default()
    }

    /// The outcome known without a lookup.
    fn outcome(&self, function: Function) -> Option<Outcome> {
        match self {
            Request::Absent | Request::Text(_) => None,
            Request::Unusable(why) if why.starts_with("the indicator") => Some(Outcome::Failed(why.clone())),
            Request::Unusable(found) => Some(Outcome::not_a_string(Some(function.object()), found)),
        }
    }
}

/// Splits the input into its events: each one's byte range and members.
/// An input that is not a JSON array of objects is a usage error (exit 2).
fn parse_events(input: &[u8]) -> anyhow::Result<Vec<(Range<usize>, RawEvent<'_>)>> {
    if input.iter().all(u8::is_ascii_whitespace) {
        bail!("stdin is empty; expected a JSON array of event objects");
    }
    let items: Vec<&RawValue> = match serde_json::from_slice(input) {
        Ok(items) => items,
        Err(e) if e.is_data() => {
            let found = serde_json::from_slice::<&RawValue>(input).map(raw_type).unwrap_or("something else");
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
        .map(|(i, item)| {
            let start = item.get().as_ptr() as usize - input.as_ptr() as usize;
            let range = start..start + item.get().len();
            match RawEvent::parse(&input[range.clone()]) {
                Some(event) => Ok((range, event)),
                None => bail!("stdin must be a JSON array of event objects, but element {i} is {}", raw_type(item)),
            }
        })
        .collect()
}

fn log_stats(engine: &kl_core::Engine, events: usize) {
    let s = engine.stats();
    tracing::debug!(
        events,
        requests = s.requests,
        cache_hits = s.cache_hits,
        reused = s.reused,
        retries = s.retries,
        errors = s.errors,
        skipped = s.skipped,
        quota_used = s.quota.map(|q| q.0),
        quota = s.quota.map(|q| q.1),
        max_in_flight = s.max_in_flight,
        "done"
    );
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
    result.context("cannot write stdout")
}
