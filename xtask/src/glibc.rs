//! The newest glibc a binary needs, read from its ELF version-needs table
//! (`.gnu.version_r`, what `objdump -T` shows as `GLIBC_2.17`), so the
//! packager can refuse a binary that would not start on an old host.

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use object::Endianness;
use object::elf::FileHeader64;
use object::read::elf::FileHeader;

/// The oldest glibc every shipped binary must run on: RHEL/CentOS 7's.
pub const FLOOR: GlibcVersion = GlibcVersion(2, 17, 0);

/// A `GLIBC_x.y[.z]` symbol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32, pub u32);

impl GlibcVersion {
    /// `GLIBC_2.2.5` → 2.2.5; `None` for any other version name
    /// (`GLIBC_PRIVATE`, `GCC_3.0`…).
    pub fn parse(name: &str) -> Option<GlibcVersion> {
        let mut parts = name.strip_prefix("GLIBC_")?.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = match parts.next() {
            Some(p) => p?,
            None => 0,
        };
        parts.next().is_none().then_some(GlibcVersion(major, minor, patch))
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlibcVersion(a, b, 0) => write!(f, "GLIBC_{a}.{b}"),
            GlibcVersion(a, b, c) => write!(f, "GLIBC_{a}.{b}.{c}"),
        }
    }
}

/// The newest glibc version `binary` (a 64-bit ELF) needs; `None` when it
/// needs no versioned glibc symbol (a static binary).
pub fn newest_needed(binary: &Path) -> anyhow::Result<Option<GlibcVersion>> {
    let data = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    newest_in(&data).with_context(|| format!("{} is not a readable 64-bit ELF", binary.display()))
}

fn newest_in(data: &[u8]) -> Result<Option<GlibcVersion>, object::read::Error> {
    let header = FileHeader64::<Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? else {
        return Ok(None);
    };
    let strings = sections.strings(endian, data, link)?;
    let mut newest = None;
    while let Some((_, mut versions)) = needs.next()? {
        while let Some(version) = versions.next()? {
            let name = String::from_utf8_lossy(version.name(endian, strings)?);
            newest = newest.max(GlibcVersion::parse(&name));
        }
    }
    Ok(newest)
}

/// Fails, naming the binary and the version, when `binary` needs a glibc
/// newer than `floor` ([`FLOOR`] for releases).
pub fn check(binary: &Path, floor: GlibcVersion) -> anyhow::Result<()> {
    match newest_needed(binary)? {
        Some(v) if v > floor => bail!(
            "{} needs {v}, newer than the {floor} the release must run on; \
             a dependency uses a newer glibc symbol (`objdump -T` shows which)",
            binary.display()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number_not_by_text() {
        let v = |s| GlibcVersion::parse(s).unwrap();
        assert!(v("GLIBC_2.3") < v("GLIBC_2.17"));
        assert!(v("GLIBC_2.2.5") < v("GLIBC_2.3"));
        assert!(v("GLIBC_2.34") > FLOOR);
        assert_eq!(v("GLIBC_2.17"), FLOOR);
        assert_eq!(v("GLIBC_2.2.5").to_string(), "GLIBC_2.2.5");
        assert_eq!(FLOOR.to_string(), "GLIBC_2.17");
        for other in ["GLIBC_PRIVATE", "GCC_3.0", "GLIBC_2", "GLIBC_2.x", "GLIBC_2.1.2.3"] {
            assert_eq!(GlibcVersion::parse(other), None, "{other}");
        }
    }

    #[test]
    fn the_check_agrees_with_what_the_binary_needs() {
        // This test's own executable is built for the host's glibc: read it,
        // and the check must pass or fail exactly as its newest version says.
        let me = std::env::current_exe().unwrap();
        let newest = newest_needed(&me).unwrap().expect("a host build needs versioned glibc symbols");
        assert!(newest >= GlibcVersion(2, 2, 5), "{newest}");
        match check(&me, FLOOR) {
            Ok(()) => assert!(newest <= FLOOR),
            Err(e) => {
                assert!(newest > FLOOR);
                assert!(e.to_string().contains(&newest.to_string()), "{e}");
            }
        }
        assert!(newest_needed(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").as_path()).is_err());
    }
}
