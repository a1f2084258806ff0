//! kl-core's integration tests, one binary.

mod engine;
mod http;
mod identity;
mod mtls;
mod replay;
mod support;
