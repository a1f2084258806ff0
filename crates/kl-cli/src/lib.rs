//! What every kl adapter shares, so that an adapter is one thin `main.rs`:
//! parse its command line, call these, write its output.
//!
//! - [`exit`]: the exit statuses and the mapping of errors to them;
//! - [`setup`]: finding and loading the config, logging, assembling the
//!   engine (backend, store, options);
//! - [`signals`]: SIGTERM and SIGINT as a future;
//! - [`stream`]: NDJSON enrichment, for `kl-generic-json enrich` and
//!   `kl-http`'s `/v1/enrich`, and [`output`], where it writes;
//! - [`lookup`]: one indicator to one JSON object;
//! - [`check`]: one cheap request, and a report on the config and account.
//!
//! No field tables and no HTTP requests here: those are kl-schema's and
//! kl-core's.

pub mod check;
pub mod exit;
pub mod lookup;
pub mod output;
pub mod setup;
pub mod signals;
pub mod stream;
