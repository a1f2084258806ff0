//! Project tasks, callable from tests as well as from `cargo xtask`.

pub mod archive;
pub mod bench;
pub mod docs;
pub mod glibc;
pub mod licenses;
pub mod package;
pub mod zigbuild;

use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// The cargo that runs this task (`$CARGO`), else the one on `PATH`.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
