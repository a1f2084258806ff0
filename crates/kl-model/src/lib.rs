//! The vocabulary every part of kl shares.
//!
//! The seven lookup [`Function`]s, the [`Indicator`]s they take (validated
//! and normalised before anything is sent), the [`Zone`] verdicts, a
//! backend's [`Answer`] and the [`Outcome`] an event is rendered from.
//!
//! This crate must never do I/O, and cannot: it depends on no crate that
//! could. Whatever needs only these words (field tables, output styles,
//! docs, fuzz targets) builds without an HTTP stack or a database.

mod function;
mod indicator;
pub mod keys;
mod outcome;
pub mod privacy;
mod zone;

pub use function::{Function, FunctionChoice, UnknownFunction};
pub use indicator::{
    HashKind, Indicator, IndicatorError, MAX_URL_LEN, ObjectKind, encode_segment, is_private_or_reserved,
};
pub use outcome::{Answer, Body, Dictionaries, LICENSE_SECTION, Outcome, PackedBody, json_type};
pub use privacy::Policy;
pub use zone::{Portal, Zone};
