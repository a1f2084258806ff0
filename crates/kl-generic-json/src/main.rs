//! `kl-generic-json`: NDJSON enrichment for any SIEM pipeline.
//!
//! Not built yet: this binary only says so, and exits 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("kl-generic-json: not implemented yet; use kl-dnif for DNIF batches");
    ExitCode::from(2)
}
