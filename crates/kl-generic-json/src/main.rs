//! `kl-generic-json`: Kaspersky TIP enrichment for any SIEM that speaks JSON.
//!
//! `enrich` reads NDJSON on stdin and writes one line per input line, in
//! order, each event that holds an indicator field enriched in the chosen
//! style. `lookup` answers one indicator. `--offline DIR` answers from
//! recorded responses instead of the network.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kl_cli::setup::{self, Assembled, ConfigSearch, EngineSetup};
use kl_cli::stream::{self, Field};
use kl_cli::{exit, signals};
use kl_model::{FunctionChoice, Outcome};
use kl_schema::Style;

const NAME: &str = "kl-generic-json";

#[derive(Debug, Parser)]
#[command(name = NAME, version, about = "Enrich JSON events with Kaspersky Threat Intelligence Portal lookups")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrich NDJSON events from stdin to stdout, one line out per line in.
    Enrich(EnrichArgs),
    /// Look up one indicator and print the result as one JSON object.
    Lookup(LookupArgs),
    /// Check the config, the API's answer and the account (quota, token expiry).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The config file (dnifconfig.yml format). Default: $KL_CONFIG, else the environment alone.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print one JSON object, for monitoring.
    #[arg(long)]
    json: bool,
}

/// Where answers come from.
#[derive(Debug, Args)]
struct Source {
    /// The config file (dnifconfig.yml format). Default: $KL_CONFIG, else the environment alone.
    #[arg(long, value_name = "PATH", conflicts_with = "offline")]
    config: Option<PathBuf>,
    /// Answer from recorded responses in DIR (laid out as fixtures/responses), no network or credentials.
    #[arg(long, value_name = "DIR")]
    offline: Option<PathBuf>,
}

impl Source {
    /// Loads the config, sets up logging (`quiet`: nothing on stderr but
    /// errors that stop the run), and assembles the engine.
    fn assemble(&self, quiet: bool) -> anyhow::Result<Assembled> {
        match &self.offline {
            Some(dir) => {
                setup::init_logging(quiet, None)?;
                setup::offline_engine(dir)
            }
            None => {
                let config = setup::load_config(self.config.as_deref(), ConfigSearch::default())?;
                setup::start_logging(&config, quiet)?;
                // A stream has no end to count a run deadline from: each
                // lookup is bounded by its tries and the request timeout.
                setup::engine(
                    &config,
                    EngineSetup { default_cache_dir: kl_core::store::xdg_cache_dir(), run_deadline: false },
                )
            }
        }
    }
}

/// How answers are written.
#[derive(Debug, Args)]
struct Output {
    /// Output style: kl (flat $KL fields), nested (under --target) or ecs.
    #[arg(long, default_value = "nested")]
    style: Style,
    /// The key that nested and ECS output write under.
    #[arg(long, default_value = "kaspersky")]
    target: String,
}

#[derive(Debug, Args)]
struct EnrichArgs {
    /// One of the seven functions, or auto (the report function for the indicator's type).
    #[arg(long)]
    function: FunctionChoice,
    /// Where an indicator is: a top-level key, a dotted path (source.ip) or a JSON pointer
    /// (/source/ip), optionally with the key its answer goes under (source.ip=src_kl).
    /// Repeat it to look up several fields in one pass.
    #[arg(long = "field", value_name = "PATH[=TARGET]", required = true)]
    fields: Vec<Field>,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    source: Source,
    /// Lines in flight at most (lookups run concurrently, lines leave in order).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    window: u32,
    /// Lines longer than this many bytes are passed through without enrichment.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..=(1 << 30)))]
    max_line_bytes: u32,
    /// Nothing on stderr but errors that stop the run: no summary, no progress, no warnings.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct LookupArgs {
    /// One of the seven functions, or auto.
    function: FunctionChoice,
    /// The indicator to look up.
    indicator: String,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    source: Source,
}

fn main() -> ExitCode {
    let cli = match exit::parse_args::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    exit::run_async(NAME, async {
        match cli.command {
            Command::Enrich(args) => enrich(args).await,
            Command::Lookup(args) => lookup(args).await,
            Command::Check(args) => check(args).await,
        }
    })
}

/// Refuses a function the backend cannot answer, before anything is read.
fn check_function(assembled: &Assembled, choice: FunctionChoice) -> anyhow::Result<()> {
    if let FunctionChoice::Fixed(f) = choice {
        assembled.engine.supports(f).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

async fn enrich(args: EnrichArgs) -> anyhow::Result<ExitCode> {
    let settings = stream::Settings {
        function: args.function,
        fields: args.fields,
        style: args.output.style,
        target: args.output.target,
        window: args.window as usize,
        max_line: args.max_line_bytes as usize,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    settings.check().map_err(anyhow::Error::msg)?;
    let assembled = args.source.assemble(args.quiet)?;
    check_function(&assembled, settings.function)?;
    let engine = assembled.engine.clone();
    let output = kl_cli::output::ThreadSink::stdout()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the thread that writes the output"))?;
    let summary = stream::run(assembled, settings, tokio::io::stdin(), output, signals::shutdown()).await?;
    if !args.quiet {
        eprintln!("{NAME}: {}", summary.describe(&engine.stats()));
    }
    if summary.output_closed {
        eprintln!(
            "{NAME}: the output was closed: {} lines were written, {} lines read were not",
            summary.written,
            summary.unwritten()
        );
        return Ok(ExitCode::from(exit::OUTPUT_CLOSED));
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let source = Source { config: args.config, offline: None };
    let assembled = source.assemble(false)?;
    let report = kl_cli::check::run(&assembled).await;
    Ok(kl_cli::check::print(NAME, &report, args.json))
}

async fn lookup(args: LookupArgs) -> anyhow::Result<ExitCode> {
    let assembled = args.source.assemble(false)?;
    check_function(&assembled, args.function)?;
    let looked =
        kl_cli::lookup::lookup(&assembled, args.function, &args.indicator, args.output.style, &args.output.target)
            .await;
    assembled.engine.flush().await;
    println!("{}", looked.object);
    if let Outcome::Failed(reason) = &looked.outcome {
        eprintln!("{NAME}: {reason}");
        return Ok(ExitCode::from(exit::FAILED));
    }
    Ok(ExitCode::SUCCESS)
}
