//! The `$KL` field contract of kl, as data, and the code that applies it.
//!
//! [`table`] gives, per lookup function, one [`FieldSpec`] row per documented
//! field: its `$KL` name, a snake_case name for nested output, where its value
//! comes from in a TIP response, and how it is built ([`Kind`]).
//! [`flatten`] maps a response through a function's table; [`render`] turns
//! an engine [`kl_model::Outcome`] into the fields an event gets (data, Grey,
//! `$KLError` or `$KLSkipped`).
//!
//! This crate must never do I/O: no files, no network, no clocks. It is pure
//! data and pure functions, so that every adapter renders identically.

mod docs;
pub mod event;
mod flatten;
pub mod splunk;
pub mod style;
mod table;
mod tree;

pub use docs::fields_markdown;
pub use flatten::{Field, flatten, render};
pub use style::{Ecs, Item, Output, Style, output};
pub use table::{ERROR_FIELD, FieldSpec, Kind, SKIPPED_FIELD, ZONE_FIELD, table};
