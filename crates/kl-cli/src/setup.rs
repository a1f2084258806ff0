//! Finding the config, logging, and assembling the engine.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kl_core::backend::ReplayBackend;
use kl_core::store::{RedisStore, SqliteStore, Store};
use kl_core::{CacheSetting, Config, Engine, EngineOptions};
use kl_model::Portal;
use kl_schema::Ecs;

/// Where a binary looks for its config when `--config` is not given and
/// `$KL_CONFIG` is not set.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigSearch {
    /// A path relative to the binary's package folder (the parent of the
    /// `bin/` that holds it): `dnifconfig.yml` for the DNIF plugin.
    pub beside_binary: Option<&'static str>,
    /// A file name looked for in the current folder.
    pub in_current_dir: Option<&'static str>,
}

/// The config file: `--config`, else `$KL_CONFIG`, else the places of
/// `search`. `None` when there is none: the environment alone configures kl.
fn find_config(given: Option<&Path>, search: ConfigSearch) -> anyhow::Result<Option<PathBuf>> {
    let named = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KL_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(p) = named {
        if p.is_dir() {
            bail!("configuration: {} is a directory; give the config file itself", p.display());
        }
        if !p.is_file() {
            bail!("configuration: config file {} does not exist", p.display());
        }
        return Ok(Some(p));
    }
    let package = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
    let candidates = search
        .beside_binary
        .and_then(|name| package.map(|dir| dir.join(name)))
        .into_iter()
        .chain(search.in_current_dir.map(PathBuf::from));
    Ok(candidates.into_iter().find(|p| p.is_file()))
}

/// Finds and loads the config. Every failure is a config error (exit 2).
pub fn load_config(given: Option<&Path>, search: ConfigSearch) -> anyhow::Result<Config> {
    let path = find_config(given, search)?;
    Config::load(path.as_deref()).context("configuration")
}

/// Sets up logging: to `log_file` when given (appended; warnings and
/// errors, or what `RUST_LOG` asks), else to stderr (the same, or nothing
/// with `quiet` unless `RUST_LOG` asks).
pub fn init_logging(quiet: bool, log_file: Option<&Path>) -> anyhow::Result<()> {
    let default = if quiet && log_file.is_none() { "off" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("configuration: KL_LOG_FILE: cannot open {}", path.display()))?;
            builder.with_writer(std::sync::Mutex::new(file)).with_ansi(false).try_init()
        }
        None => builder.with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
    Ok(())
}

/// Logging as `config` and `quiet` ask, then the config's warnings.
pub fn start_logging(config: &Config, quiet: bool) -> anyhow::Result<()> {
    init_logging(quiet, config.log_file.as_deref())?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// What differs between adapters when the engine is assembled.
#[derive(Debug, Clone, Default)]
pub struct EngineSetup {
    /// The cache folder when `KL_CACHE_PATH` is not set; `None`: no cache then.
    pub default_cache_dir: Option<PathBuf>,
    /// Bound the whole run by `KL_DEADLINE_SECS` (a batch, not a stream).
    pub run_deadline: bool,
}

/// An engine, how long a shutdown may drain it, and what the ECS style
/// needs to know about where answers come from.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub engine: Engine,
    /// `KL_DRAIN_SECS`.
    pub drain: Duration,
    pub ecs: Ecs,
}

impl Assembled {
    /// Stops waiting for lookups `drain` from now: after a SIGTERM or SIGINT.
    pub fn start_drain(&self, signal: &str) {
        tracing::info!("{signal}: finishing the events already read (at most {}s)", self.drain.as_secs());
        self.engine.set_deadline(
            self.drain,
            &format!("not answered within KL_DRAIN_SECS ({}s) of {signal}", self.drain.as_secs()),
        );
    }
}

/// The engine a config asks for: its backend, its cache, its options.
pub fn engine(config: &Config, setup: EngineSetup) -> anyhow::Result<Assembled> {
    let backend = kl_core::backend::select(config).context("configuration")?;
    let store: Option<Arc<dyn Store>> = match &config.cache {
        CacheSetting::Off => None,
        CacheSetting::Path(dir) => Some(Arc::new(SqliteStore::open(dir))),
        CacheSetting::Redis(redis) => Some(Arc::new(RedisStore::open(redis))),
        CacheSetting::Default => setup.default_cache_dir.map(|dir| Arc::new(SqliteStore::open(&dir)) as Arc<dyn Store>),
    };
    let opts = EngineOptions {
        store,
        deadline: setup.run_deadline.then_some(config.deadline),
        ..EngineOptions::from_config(config)
    };
    let engine = Engine::new(backend, opts);
    let ecs = Ecs { threat_zones: config.ecs_threat_zones.clone(), portal: portal(&engine) };
    Ok(Assembled { engine, drain: config.drain, ecs })
}

/// The portal behind an engine's backend.
fn portal(engine: &Engine) -> Portal {
    match engine.backend_info().name {
        "opentip" | "replay (opentip)" => Portal::OpenTip,
        _ => Portal::Tip,
    }
}

/// An engine over recorded answers (`--offline DIR`): no network, no
/// credentials, no cache. With `KL_BACKEND=opentip` in the environment the
/// answers are taken as OpenTIP's (its functions, its portal).
pub fn offline_engine(dir: &Path) -> anyhow::Result<Assembled> {
    let mut backend = ReplayBackend::new(dir).context("--offline")?;
    let opentip = std::env::var(kl_model::keys::BACKEND.name).is_ok_and(|b| b.trim().eq_ignore_ascii_case("opentip"));
    if opentip {
        backend = backend.as_opentip();
    }
    let opts = EngineOptions { store: None, ..EngineOptions::default() };
    let drain = Duration::from_secs(kl_model::keys::DRAIN.default_text().parse().unwrap_or(5));
    let portal = if opentip { Portal::OpenTip } else { Portal::Tip };
    let ecs = Ecs { portal, ..Ecs::default() };
    Ok(Assembled { engine: Engine::new(Arc::new(backend), opts), drain, ecs })
}
