//! Project tasks, callable from tests as well as from `cargo xtask`.

pub mod archive;
pub mod bench;
pub mod docs;
pub mod package;

use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}
