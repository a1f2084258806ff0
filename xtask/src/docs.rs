//! `cargo xtask docs`: regenerates `docs/fields.md` and the Splunk app's
//! `transforms.conf` from kl-schema's tables, and the README's config key
//! table from `kl_model::keys`.

use std::path::Path;

use anyhow::Context;

/// The Splunk app's lookup definitions, generated.
pub const TRANSFORMS: &str = "crates/kl-splunk/app/TA-kaspersky-tip/default/transforms.conf";
/// The script Splunk runs for those lookups.
pub const SPLUNK_SCRIPT: &str = "kaspersky_lookup.py";

pub fn run(root: &Path) -> anyhow::Result<()> {
    let path = root.join("docs/fields.md");
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(&path, kl_schema::fields_markdown()).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());

    let readme = root.join("README.md");
    let text = std::fs::read_to_string(&readme).with_context(|| format!("cannot read {}", readme.display()))?;
    let updated = kl_model::keys::with_table(&text).with_context(|| {
        format!(
            "README.md lacks the markers {} and {} around the key table",
            kl_model::keys::README_BEGIN,
            kl_model::keys::README_END
        )
    })?;
    std::fs::write(&readme, updated).with_context(|| format!("cannot write {}", readme.display()))?;
    println!("wrote the key table of {}", readme.display());

    let transforms = root.join(TRANSFORMS);
    std::fs::write(&transforms, kl_schema::splunk::transforms_conf(SPLUNK_SCRIPT))
        .with_context(|| format!("cannot write {}", transforms.display()))?;
    println!("wrote {}", transforms.display());
    Ok(())
}
