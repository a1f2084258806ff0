//! `kl-generic-json`: Kaspersky TIP enrichment for any SIEM that speaks JSON.
//!
//! `enrich` reads NDJSON on stdin and writes one line per input line, in
//! order, each event that holds the indicator field enriched in the chosen
//! style. `lookup` answers one indicator. `--offline DIR` answers from
//! recorded responses instead of the network.

mod stream;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args as ClapArgs, Parser, Subcommand};
use kl_core::{
    Backend, Cache, Config, Engine, EngineOptions, Function, HttpBackend, Indicator, Outcome, ReplayBackend,
};
use kl_schema::{Match, Style};
use serde_json::{Map, Value};

use kl_schema::event::FieldPath;

#[derive(Debug, Parser)]
#[command(
    name = "kl-generic-json",
    version,
    about = "Enrich JSON events with Kaspersky Threat Intelligence Portal lookups"
)]
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
}

#[derive(Debug, ClapArgs)]
struct Common {
    /// Output style: kl (flat $KL fields), nested (under --target) or ecs.
    #[arg(long, default_value = "nested")]
    style: Style,
    /// The key that nested and ECS output write under.
    #[arg(long, default_value = "kaspersky")]
    target: String,
    /// The config file (dnifconfig.yml format). Default: $KL_CONFIG, else the environment alone.
    #[arg(long, value_name = "PATH", conflicts_with = "offline")]
    config: Option<PathBuf>,
    /// Answer from recorded responses in DIR (laid out as fixtures/responses), no network or credentials.
    #[arg(long, value_name = "DIR")]
    offline: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
struct EnrichArgs {
    /// One of the seven functions, or auto (the report function for the indicator's type).
    #[arg(long)]
    function: FunctionChoice,
    /// Where the indicator is: a top-level key, a dotted path (source.ip) or a JSON pointer (/source/ip).
    #[arg(long, value_name = "PATH")]
    field: String,
    #[command(flatten)]
    common: Common,
    /// Lines in flight at most (lookups run concurrently, lines leave in order).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    window: u32,
    /// Lines longer than this many bytes are passed through without enrichment.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..=(1 << 30)))]
    max_line_bytes: u32,
    /// No summary and no progress display on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, ClapArgs)]
struct LookupArgs {
    /// One of the seven functions, or auto.
    function: FunctionChoice,
    /// The indicator to look up.
    indicator: String,
    #[command(flatten)]
    common: Common,
}

/// A function, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionChoice {
    Auto,
    Fixed(Function),
}

impl std::str::FromStr for FunctionChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "auto" {
            return Ok(FunctionChoice::Auto);
        }
        s.parse::<Function>().map(FunctionChoice::Fixed).map_err(|e| format!("{e}, or auto"))
    }
}

impl FunctionChoice {
    /// The function for a raw indicator, or why there is none.
    pub fn resolve(self, raw: &str) -> Result<Function, String> {
        match self {
            FunctionChoice::Fixed(f) => Ok(f),
            FunctionChoice::Auto => Indicator::detect(raw).map(Function::report_for).ok_or_else(|| {
                let shown: String = raw.trim().chars().take(80).collect();
                format!("cannot tell the type of indicator {shown:?}: not an IPv4 address, domain, URL or hash")
            }),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kl-generic-json: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enrich(args) => enrich(args).await,
            Command::Lookup(args) => lookup(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kl-generic-json: {e:#}");
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

/// The engine: over recorded responses with `--offline`, else over the TIP
/// API as configured. Every problem here is a configuration error (exit 2).
fn engine(common: &Common) -> anyhow::Result<Engine> {
    if let Some(dir) = &common.offline {
        let backend: Arc<dyn Backend> = Arc::new(ReplayBackend::new(dir).context("--offline")?);
        return Ok(Engine::new(backend, EngineOptions::default()));
    }
    let path = common.config.clone().or_else(|| std::env::var_os("KL_CONFIG").map(PathBuf::from));
    if let Some(p) = &path {
        anyhow::ensure!(p.is_file(), "configuration: config file {} does not exist", p.display());
    }
    let config = Config::load(path.as_deref()).context("configuration")?;
    let backend = HttpBackend::from_config(&config).context("configuration")?;
    // A stream has no end to count a run deadline from: each lookup is
    // bounded by its tries and the request timeout instead.
    let cache = Cache::for_config(&config, kl_core::xdg_cache_dir()).map(Arc::new);
    let opts = EngineOptions { deadline: None, cache, ..EngineOptions::from_config(&config) };
    Ok(Engine::new(Arc::new(backend), opts))
}

async fn enrich(args: EnrichArgs) -> anyhow::Result<ExitCode> {
    let field = FieldPath::parse(&args.field).map_err(anyhow::Error::msg)?;
    let engine = engine(&args.common)?;
    let settings = stream::Settings {
        function: args.function,
        field,
        style: args.common.style,
        target: args.common.target,
        window: args.window as usize,
        max_line: args.max_line_bytes as usize,
        progress: !args.quiet && io::stderr().is_terminal(),
    };
    let summary = stream::run(engine.clone(), settings, tokio::io::stdin(), tokio::io::stdout()).await?;
    if !args.quiet {
        let s = engine.stats();
        let quota = s.quota.map(|(used, quota)| format!(", quota {used}/{quota} today")).unwrap_or_default();
        eprintln!(
            "kl-generic-json: {} lines, {} enriched, {} errors, {} skipped, {} passed through, {} requests, {} cache hits, {} retries{quota}",
            summary.lines,
            summary.enriched,
            summary.errors,
            summary.skipped,
            summary.passed,
            s.requests,
            // Answered without a request: from the persistent cache, or
            // from an earlier line with the same indicator.
            s.cache_hits + s.reused + summary.repeats,
            s.retries
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn lookup(args: LookupArgs) -> anyhow::Result<ExitCode> {
    let engine = engine(&args.common)?;
    let (function, outcome) = match args.function.resolve(&args.indicator) {
        Ok(f) => (f, engine.lookup(f, &args.indicator).await),
        Err(reason) => (Function::IpReport, Outcome::Failed(reason)),
    };
    if let Outcome::Failed(reason) = &outcome {
        eprintln!("kl-generic-json: {reason}");
        return Ok(ExitCode::from(1));
    }
    let mut out = Map::new();
    let m = Match { function, raw: &args.indicator, field: None };
    kl_schema::style::write(args.common.style, &mut out, kl_schema::render(function, &outcome), &args.common.target, m);
    println!("{}", Value::Object(out));
    Ok(ExitCode::SUCCESS)
}
