//! `cargo xtask docs`: regenerates `docs/fields.md`.

use std::path::Path;

use anyhow::Context;

pub fn run(root: &Path) -> anyhow::Result<()> {
    let path = root.join("docs/fields.md");
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(&path, kl_schema::fields_markdown()).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
