//! Reproducible `.tar.gz` archives: sorted entries, one fixed mtime, owner
//! 0:0 with no names, fixed modes, and a gzip header without a timestamp.
//! The same inputs always give the same bytes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// One file in an archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path inside the archive, `/`-separated.
    pub path: String,
    pub contents: Vec<u8>,
    pub executable: bool,
}

impl Entry {
    pub fn file(path: impl Into<String>, source: &Path) -> anyhow::Result<Entry> {
        let contents = std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        Ok(Entry { path: path.into(), contents, executable: false })
    }

    pub fn executable(path: impl Into<String>, source: &Path) -> anyhow::Result<Entry> {
        Ok(Entry { executable: true, ..Entry::file(path, source)? })
    }
}

/// Writes `entries` (and the folders that hold them) to `out` as `.tar.gz`.
pub fn write_tar_gz(out: &Path, mut entries: Vec<Entry>, mtime: u64) -> anyhow::Result<()> {
    let mut dirs: Vec<String> = Vec::new();
    for e in &entries {
        let mut parts: Vec<&str> = e.path.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            let d = format!("{}/", parts[..i].join("/"));
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    dirs.sort();
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let gz = flate2::GzBuilder::new().mtime(0).write(file, flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let header = |path: &str, size: u64, mode: u32, kind: tar::EntryType| -> anyhow::Result<tar::Header> {
        let mut h = tar::Header::new_gnu();
        h.set_path(path)?;
        h.set_size(size);
        h.set_mode(mode);
        h.set_entry_type(kind);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("")?;
        h.set_groupname("")?;
        h.set_cksum();
        Ok(h)
    };
    // Folders first, each before its contents; then files in path order.
    let mut all: Vec<(String, Option<&Entry>)> = dirs.iter().map(|d| (d.clone(), None)).collect();
    all.extend(entries.iter().map(|e| (e.path.clone(), Some(e))));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, entry) in all {
        match entry {
            None => {
                let h = header(&path, 0, 0o755, tar::EntryType::Directory)?;
                tar.append(&h, std::io::empty())?;
            }
            Some(e) => {
                let mode = if e.executable { 0o755 } else { 0o644 };
                let h = header(&path, e.contents.len() as u64, mode, tar::EntryType::Regular)?;
                tar.append(&h, e.contents.as_slice())?;
            }
        }
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()?;
    Ok(())
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_hex(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_bytes_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let e = |p: &str, c: &str, x: bool| Entry { path: p.into(), contents: c.as_bytes().to_vec(), executable: x };
        let a = dir.path().join("a.tar.gz");
        let b = dir.path().join("b.tar.gz");
        write_tar_gz(&a, vec![e("k/bin/x", "bin", true), e("k/a.py", "py", false)], 1_700_000_000).unwrap();
        write_tar_gz(&b, vec![e("k/a.py", "py", false), e("k/bin/x", "bin", true)], 1_700_000_000).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&a).unwrap()));
        let listing: Vec<(String, u32, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path().unwrap().display().to_string(), h.mode().unwrap(), h.mtime().unwrap(), h.uid().unwrap())
            })
            .collect();
        assert_eq!(
            listing,
            [
                ("k/".to_owned(), 0o755, 1_700_000_000, 0),
                ("k/a.py".to_owned(), 0o644, 1_700_000_000, 0),
                ("k/bin/".to_owned(), 0o755, 1_700_000_000, 0),
                ("k/bin/x".to_owned(), 0o755, 1_700_000_000, 0),
            ]
        );
    }
}
