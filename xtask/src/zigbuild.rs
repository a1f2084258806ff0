//! cargo-zigbuild, for release binaries that run on old Linux hosts.
//!
//! Zig's linker can target an old glibc (`x86_64-unknown-linux-gnu.2.17`)
//! from any host, without a sysroot. The tools come from the Python package
//! index, pinned here and nowhere else, into a virtual environment under
//! `target/`, installed on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};

/// The pinned tools: pip requirements, the one place their versions live.
pub const REQUIREMENTS: &str = "cargo-zigbuild==0.24.1\nziglang==0.17.1\n";

/// The release target: x86_64 Linux, glibc 2.17 at most.
pub const PORTABLE_TARGET: &str = "x86_64-unknown-linux-gnu.2.17";

/// The Rust triple of a zigbuild target (`…-gnu.2.17` → `…-gnu`): what
/// cargo names its output folder after and what the tarball names carry.
pub fn rust_triple(target: &str) -> &str {
    match target.find("-gnu.") {
        Some(at) => &target[..at + "-gnu".len()],
        None => target,
    }
}

/// The virtual environment holding the pinned tools.
pub fn venv(root: &Path) -> PathBuf {
    root.join("target/zigbuild-venv")
}

/// The folder holding `cargo-zigbuild` and the venv's `python3` (which
/// carries `ziglang`), installing them first when missing or when the pins
/// changed.
pub fn ensure_installed(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = venv(root);
    let bin = venv.join("bin");
    let stamp = venv.join("kl-requirements.txt");
    if bin.join("cargo-zigbuild").is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(REQUIREMENTS) {
        return Ok(bin);
    }
    eprintln!("installing {} into {}", REQUIREMENTS.trim().replace('\n', " and "), venv.display());
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("cannot clear {}", venv.display()))?;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let status = Command::new(&python).args(["-m", "venv"]).arg(&venv).status().with_context(|| {
        format!("cannot run {python}: packaging needs Python 3 with venv to install cargo-zigbuild")
    })?;
    ensure!(status.success(), "`{python} -m venv {}` failed ({status})", venv.display());
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)?;
    let status = Command::new(bin.join("python3"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .context("cannot run pip in the zigbuild venv")?;
    ensure!(status.success(), "pip could not install {} (is the Python package index reachable?)", REQUIREMENTS.trim());
    std::fs::write(&stamp, REQUIREMENTS)?;
    Ok(bin)
}

/// `cargo zigbuild` with the pinned tools first on `PATH`, so it finds the
/// venv's `python3 -m ziglang`.
pub fn command(root: &Path) -> anyhow::Result<Command> {
    let bin = ensure_installed(root)?;
    let mut cmd = Command::new(bin.join("cargo-zigbuild"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin.clone()).chain(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).context("PATH")?).arg("zigbuild");
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glibc_suffix_is_not_part_of_the_rust_triple() {
        assert_eq!(rust_triple(PORTABLE_TARGET), "x86_64-unknown-linux-gnu");
        assert_eq!(rust_triple("aarch64-unknown-linux-gnu.2.28"), "aarch64-unknown-linux-gnu");
        assert_eq!(rust_triple("x86_64-unknown-linux-musl"), "x86_64-unknown-linux-musl");
        assert_eq!(rust_triple("x86_64-unknown-linux-gnu"), "x86_64-unknown-linux-gnu");
    }

    #[test]
    fn every_tool_is_pinned_to_one_version() {
        let lines: Vec<&str> = REQUIREMENTS.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.split_once("==").is_some_and(|(_, v)| !v.is_empty())), "{lines:?}");
    }
}
