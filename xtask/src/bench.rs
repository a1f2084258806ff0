//! `cargo xtask bench`: the performance figures, against a local mock TIP.
//!
//! 1. A DNIF batch of 2,000 events holding 200 distinct public IPv4
//!    addresses through `kl-dnif` (release build), the mock answering each
//!    request after `--latency-ms`: wall time beside the floor
//!    ceil(200 / concurrency) × latency, requests beside distinct
//!    indicators, and the most requests in flight at the mock.
//! 2. The same batch again: requests (0 with the cache) and whether the
//!    output is identical.
//! 3. `--events` NDJSON events over the same 200 addresses through
//!    `kl-generic-json enrich --style kl` with the cache warm: requests,
//!    events per second and peak memory, beside `jq -c .` on the same file
//!    where jq is installed.
//!
//! Figures, not assertions: the acceptance limits are printed beside them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Bench settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub latency_ms: u64,
    pub concurrency: usize,
    pub events: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options { latency_ms: 10, concurrency: 8, events: 500_000 };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().with_context(|| format!("{a} needs a value"))?;
            match a.as_str() {
                "--latency-ms" => o.latency_ms = v.parse()?,
                "--concurrency" => o.concurrency = v.parse()?,
                "--events" => o.events = v.parse()?,
                other => bail!("unknown option {other:?} for bench"),
            }
        }
        Ok(o)
    }
}

/// A minimal HTTP/1.1 TIP mock: answers every GET after a fixed latency,
/// keeps connections alive, counts requests and the most in flight.
struct Mock {
    port: u16,
    requests: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Mock {
    fn start(latency: Duration) -> anyhow::Result<Mock> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let counters = (requests.clone(), in_flight.clone(), max_in_flight.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_nodelay(true);
                let c = counters.clone();
                std::thread::spawn(move || serve(stream, latency, &c.0, &c.1, &c.2));
            }
        });
        Ok(Mock { port, requests, in_flight, max_in_flight })
    }

    fn reset_max(&self) {
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, latency: Duration, requests: &AtomicUsize, in_flight: &AtomicUsize, max: &AtomicUsize) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" => break,
                Ok(_) => {}
            }
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(latency);
        let ip = request_line.split('/').nth(3).and_then(|s| s.split('?').next()).unwrap_or("0.0.0.0");
        let body = format!(
            r#"{{"LicenseInfo":{{"DayRequests":17,"DayQuota":1000000}},"Zone":"Red","IpGeneralInfo":{{"Ip":"{ip}","CountryCode":"NL","HitsCount":100,"Categories":["CATEGORY_MALWARE"]}},"IpWhoIs":{{"Asn":[{{"Number":64500,"Description":["EXAMPLE-AS"]}}],"Net":{{"RangeStart":"11.0.0.0","RangeEnd":"11.255.255.255","Name":"BENCH"}}}}}}"#
        );
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Runs `cmd` with `stdin_file`, stdout to `stdout_file`; returns wall time
/// and peak resident memory in KiB (the kernel's high-water mark `VmHWM`,
/// read every few milliseconds while the child runs).
fn measure(cmd: &mut Command, stdin_file: &Path, stdout_file: &Path) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(std::fs::File::open(stdin_file)?)
        .stdout(std::fs::File::create(stdout_file)?)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut stderr = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut peak = 0u64;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().as_deref().and_then(vm_hwm_kib) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    let err = reader.join().unwrap_or_default();
    ensure!(status.success(), "{cmd:?} failed: {err}");
    Ok((elapsed, peak))
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "--locked", "-p", "kl-dnif", "-p", "kl-generic-json"])
        .status()?;
    ensure!(status.success(), "cargo build --release failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let kl_dnif = target.join("release/kl-dnif");
    let kl_generic = target.join("release/kl-generic-json");

    let latency = Duration::from_millis(opts.latency_ms);
    let mock = Mock::start(latency)?;
    let work = tempfile_dir()?;
    let cfg = work.join("dnifconfig.yml");
    std::fs::write(
        &cfg,
        format!(
            "lookup_plugin:\n  KASPERSKY_API_TOKEN: bench\n  KASPERSKY_API_URL: http://127.0.0.1:{}/api\n  KL_CONCURRENCY: {}\n  KL_CACHE_PATH: {}\n",
            mock.port,
            opts.concurrency,
            work.join("cache").display()
        ),
    )?;

    // 1. The 2,000-event batch with 200 distinct addresses.
    let ips: Vec<String> = (0..200).map(|i| format!("11.0.{}.{}", i / 100, i % 100 + 1)).collect();
    let batch: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"$SrcIP":"{}","$DstIP":"10.1.2.3","$DstPort":443,"n":{i}}}"#, ips[(i * 7) % 200]))
        .collect();
    let batch_file = work.join("batch.json");
    std::fs::write(&batch_file, format!("[{}]", batch.join(",")))?;
    let out1 = work.join("out1.json");
    let out2 = work.join("out2.json");
    let dnif = |out: &Path| {
        measure(
            Command::new(&kl_dnif).args(["--config", cfg.to_str().unwrap(), "get_ip_report", "$SrcIP"]),
            &batch_file,
            out,
        )
    };

    mock.reset_max();
    let (t1, _) = dnif(&out1)?;
    let requests1 = mock.requests.load(Ordering::SeqCst);
    let max_in_flight = mock.max_in_flight.load(Ordering::SeqCst);
    let floor = latency * 200usize.div_ceil(opts.concurrency) as u32;
    let (t2, _) = dnif(&out2)?;
    let requests2 = mock.requests.load(Ordering::SeqCst) - requests1;
    let identical = std::fs::read(&out1)? == std::fs::read(&out2)?;

    println!("kl bench: mock latency {} ms, KL_CONCURRENCY {}", opts.latency_ms, opts.concurrency);
    println!();
    println!("kl-dnif, 2000 events / 200 distinct IPs");
    println!(
        "  wall time          {:>9.3} s   (floor {:.3} s; limit 4x floor = {:.3} s)",
        t1.as_secs_f64(),
        floor.as_secs_f64(),
        4.0 * floor.as_secs_f64()
    );
    println!("  requests           {requests1:>9}     (distinct indicators: 200)");
    println!("  most in flight     {max_in_flight:>9}     (limit {})", opts.concurrency);
    println!("  re-run requests    {requests2:>9}     (wall {:.3} s, output identical: {identical})", t2.as_secs_f64());

    // 3. Warm-cache NDJSON throughput.
    let ndjson = work.join("events.ndjson");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&ndjson)?);
        for i in 0..opts.events {
            writeln!(
                w,
                r#"{{"@timestamp":"2026-11-20T08:14:03Z","event":{{"module":"firewall","action":"deny","id":{i}}},"host":{{"name":"fw-edge-1"}},"indicator":"{}","destination":{{"ip":"10.20.0.15","port":22}},"message":"connection attempt blocked by policy 17"}}"#,
                ips[i % 200]
            )?;
        }
    }
    let size = std::fs::metadata(&ndjson)?.len();
    let before = mock.requests.load(Ordering::SeqCst);
    let sink = work.join("enriched.ndjson");
    let (tg, rss) = measure(
        Command::new(&kl_generic).args([
            "enrich",
            "--function",
            "get_ip_report",
            "--field",
            "indicator",
            "--style",
            "kl",
            "--config",
            cfg.to_str().unwrap(),
            "--quiet",
        ]),
        &ndjson,
        &sink,
    )?;
    let requests3 = mock.requests.load(Ordering::SeqCst) - before;
    let lines = BufReader::new(std::fs::File::open(&sink)?).lines().count();
    println!();
    println!(
        "kl-generic-json enrich --style kl, {} events ({:.1} MiB), cache warm",
        opts.events,
        size as f64 / 1048576.0
    );
    println!("  requests           {requests3:>9}");
    println!("  lines out          {lines:>9}");
    println!(
        "  wall time          {:>9.3} s   ({:.0} events/s)",
        tg.as_secs_f64(),
        opts.events as f64 / tg.as_secs_f64()
    );
    println!("  peak memory        {:>9.1} MiB (limit 64 MiB)", rss as f64 / 1024.0);
    match measure(Command::new("jq").arg("-c").arg("."), &ndjson, &work.join("jq.ndjson")) {
        Ok((tj, rss_jq)) => {
            println!(
                "  jq -c .            {:>9.3} s   ({:.0} events/s, peak {:.1} MiB)",
                tj.as_secs_f64(),
                opts.events as f64 / tj.as_secs_f64(),
                rss_jq as f64 / 1024.0
            );
            println!("  ratio to jq        {:>9.2}     (limit 1.5)", tg.as_secs_f64() / tj.as_secs_f64());
        }
        Err(e) => println!("  jq -c .            not measured: {e:#}"),
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kl-bench-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
