//! `cargo xtask <task>`:
//!
//! - `bench`: prints the performance figures (see `bench.rs`);
//! - `docs`: writes `docs/fields.md` from kl-schema's tables;
//! - `package [--target T] [--profile P] [--out DIR]`: builds the release
//!   tarballs and `SHA256SUMS` into `dist/`, portable to glibc 2.17;
//! - `zigbuild-tools`: installs the pinned cargo-zigbuild and Zig that
//!   `package` uses (it does so itself when they are missing).

use xtask::{bench, docs, package, root};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  bench [--latency-ms N] [--concurrency N] [--events N] [--distinct A,B,..] [--small] [--answer FIXTURE] [--only dnif,streams,latency,service,memo,fleet]
                                              performance figures against a local mock TIP
  docs                                        write docs/fields.md from the kl-schema tables
  package [--target T] [--profile P] [--out DIR]
                                              build the release tarballs and SHA256SUMS (default: x86_64-unknown-linux-gnu.2.17,
                                              dist profile, dist/) with cargo-zigbuild
  zigbuild-tools                              install the pinned cargo-zigbuild and Zig into target/zigbuild-venv";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("docs") => docs::run(&root()),
        Some("bench") => bench::run(&root(), &bench::Options::parse(&args[1..])?),
        Some("package") => {
            let opts = package::Options::parse(&args[1..])?;
            let written = package::run(&root(), &opts)?;
            for line in written.sums.lines() {
                println!("{line}");
            }
            println!("wrote {}", written.dir.display());
            Ok(())
        }
        Some("zigbuild-tools") => {
            let bin = xtask::zigbuild::ensure_installed(&root())?;
            println!("{}", bin.display());
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
