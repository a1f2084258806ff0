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
pub fn usage_error(program: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("{program}: {e:#}");
    ExitCode::from(USAGE)
}
