//! kl-core's integration tests, one binary.

mod engine;
mod http;
mod identity;
mod mtls;
mod props;
mod replay;
mod support;
