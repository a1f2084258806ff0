//! `kl-http`: Kaspersky TIP lookups as an HTTP service.
//!
//! One engine serves every client: concurrent asks for the same indicator
//! share one upstream request, `KL_CONCURRENCY` bounds upstream requests
//! for the whole service, and memory stays within the memo's budget.
//! The routes are in `service.rs`; this file parses the command line,
//! loads the config, listens, and shuts down.

mod service;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use kl_cli::setup::{self, ConfigSearch, EngineSetup};
use kl_cli::{exit, signals};
use kl_model::keys;

const NAME: &str = "kl-http";

/// Serve Kaspersky Threat Intelligence Portal lookups over HTTP.
#[derive(Debug, Parser)]
#[command(name = NAME, version, about, long_about = None)]
struct Args {
    /// The config file (dnifconfig.yml format). Default: $KL_CONFIG, else the environment alone.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The address and port to listen on. Default: KL_HTTP_LISTEN, else 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn main() -> ExitCode {
    let args = match exit::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    exit::run_async(NAME, run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = setup::load_config(args.config.as_deref(), ConfigSearch::default())?;
    setup::start_logging(&config, false)?;
    let listen_text = args.listen.or_else(|| config.http.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().with_context(|| {
        format!("configuration: {}: not an address and port: {listen_text:?}", keys::HTTP_LISTEN.name)
    })?;
    if !listen.ip().is_loopback() && config.http.tokens.is_empty() {
        bail!(
            "configuration: {}: required to listen on {listen}, beyond loopback: anyone who reaches the port could spend the account's quota",
            keys::HTTP_TOKENS.name
        );
    }
    let tls = match &config.http.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key).context("configuration")?),
        None => None,
    };
    let assembled = setup::engine(
        &config,
        EngineSetup { default_cache_dir: kl_core::store::xdg_cache_dir(), run_deadline: false },
    )?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("configuration: cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let info = assembled.engine.backend_info();
    eprintln!(
        "{NAME}: listening on {}://{local}, backend {} at {}, client auth {}",
        if tls.is_some() { "https" } else { "http" },
        info.name,
        info.endpoint,
        if config.http.tokens.is_empty() { "off" } else { "on" }
    );
    let (state, app) = service::router(assembled.clone(), &config.http)?;

    // Shutdown: stop accepting, let the requests in progress finish within
    // KL_DRAIN_SECS (lookups still open then end with an error), then write
    // the cache.
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let drain = assembled.drain;
    let signalled = {
        let assembled = assembled.clone();
        async move {
            let signal = signals::shutdown().await;
            tracing::info!("{signal}: no new connections; finishing the requests in progress");
            assembled.start_drain(signal);
            state.shut_down();
            let _ = stopping.send(true);
        }
    };
    let server = async move {
        match tls {
            None => axum::serve(listener, app).with_graceful_shutdown(signalled).await,
            Some(acceptor) => {
                axum::serve(tls::Listener::new(listener, acceptor), app).with_graceful_shutdown(signalled).await
            }
        }
    };
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        _ = stopped.wait_for(|s| *s) => match tokio::time::timeout(drain + Duration::from_secs(1), &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("requests still open {}s after shutdown began are dropped", drain.as_secs() + 1);
                Ok(())
            }
        },
    };
    assembled.engine.flush().await;
    served.context("the server stopped")?;
    Ok(ExitCode::SUCCESS)
}
