//! Exit statuses, the same for every kl binary.

use std::process::ExitCode;

/// The run did what was asked (per-event failures are data, not failures).
pub const OK: u8 = 0;
/// `lookup` or `check` could not get an answer; the reason is on stderr.
pub const FAILED: u8 = 1;
/// A usage, configuration or input error, reported before any lookup.
pub const USAGE: u8 = 2;
/// The output was closed before every line read was written.
pub const OUTPUT_CLOSED: u8 = 3;

/// Parses the command line; help and version exit 0, mistakes exit 2.
pub fn parse_args<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let code = if e.use_stderr() { USAGE } else { OK };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// Prints `program: error` (with its causes) and gives status 2.
fn usage_error(program: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("{program}: {e:#}");
    ExitCode::from(USAGE)
}

/// Runs `main` on a current-thread runtime and returns its exit status.
/// Startup failures are usage errors. When `main` is done, the runtime is
/// left without waiting for its blocking threads: a read of a stdin that
/// is still open (a stream ended by a signal) would otherwise hold the
/// process forever. Everything that must be written is written by then.
pub fn run_async<F>(program: &str, main: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return usage_error(program, &anyhow::Error::new(e).context("cannot start")),
    };
    let result = runtime.block_on(main);
    runtime.shutdown_background();
    result.unwrap_or_else(|e| usage_error(program, &e))
}
