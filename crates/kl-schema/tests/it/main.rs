//! kl-schema's integration tests: fixtures through every function, and the
//! generated reference.

mod docs;
mod fixtures;
mod props;
