//! Test helpers for kl (tests only, never shipped).
//!
//! - [`fuzz`]: the properties the fuzz targets check, also replayed over the
//!   fuzz corpora by `cargo test`;
//! - with the `servers` feature (the default): a TIP server that misbehaves
//!   on purpose ([`FaultServer`]), the fault plan both adapters are tested
//!   against, helpers to run a kl binary, and a real `redis-server`
//!   ([`redis::RedisServer`]).

pub mod fuzz;
#[cfg(feature = "servers")]
pub mod redis;
#[cfg(feature = "servers")]
mod servers;
#[cfg(feature = "servers")]
pub use servers::*;
