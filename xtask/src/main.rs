//! Project tasks: `cargo xtask <task>`.
//!
//! - `docs`: writes `docs/fields.md` from kl-schema's tables.

mod docs;

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    match task.as_str() {
        "docs" => docs::run(&root()),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  docs      write docs/fields.md from the kl-schema tables"
            );
            std::process::exit(2);
        }
    }
}

/// The workspace root (the parent of `xtask/`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}
