//! `cargo xtask bench`: the performance figures, against a local mock TIP.
//!
//! 1. **DNIF batch**: 2,000 events over 200 distinct public addresses
//!    through `kl-dnif`: wall time beside the floor ceil(200 / concurrency) ×
//!    latency, requests beside distinct indicators, the most requests in
//!    flight at the mock; then the same batch again (0 requests, identical
//!    output).
//! 2. **Streams**: `--events` NDJSON events over 200, 20,000 and 200,000
//!    distinct addresses through `kl-generic-json enrich --style kl`, cold
//!    (empty cache) and warm (the cache filled by the cold run, a new
//!    process): requests, events per second and peak memory, beside
//!    `jq -c .` on the same file where jq is installed.
//! 3. **Latency**: a producer writes one new event every 5 ms into
//!    `kl-generic-json` against a mock answering after 20 ms (plus the
//!    `--latency-ms` setting): the delay from each line going in to its
//!    line coming out, p50, p99 and max.
//! 4. **Service**: `kl-http` against a mock answering after 5 ms (plus
//!    `--latency-ms`): 64 clients asking the same 200 new addresses at once
//!    (singleflight: requests beside distinct addresses), then the same
//!    from memory, and from 8 clients: requests per second, p50 and p99.
//! 5. **Memo entry cost**: peak memory of a stream over 20,000 and over
//!    200,000 distinct addresses with the cache off and a memo large enough
//!    for all; the difference per extra address is what one memo entry
//!    costs.
//!
//! 6. **Fleet**: 4 `kl-generic-json` processes at once over the same 2,000
//!    new addresses (each in its own order) against a mock answering after
//!    20 ms (plus `--latency-ms`), once with a SQLite cache each and once
//!    sharing one Redis (a `redis-server` the bench starts on a free
//!    loopback port): requests sent and wall time; then a fifth process
//!    over the same addresses.
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
    /// Events per stream.
    pub events: usize,
    /// Distinct addresses per stream run.
    pub distinct: Vec<usize>,
    /// Run only these parts (`dnif`, `streams`, `latency`, `service`, `memo`, `fleet`); all when empty.
    pub only: Vec<String>,
    /// Small events (`{"indicator":"…"}`) instead of firewall-log-sized ones.
    pub small: bool,
    /// A recorded answer the mock serves for every address instead of its
    /// built-in one (about 260 bytes), with the address it was recorded for
    /// (the file's name) replaced by the one asked about.
    pub answer: Option<PathBuf>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options {
            latency_ms: 0,
            concurrency: 8,
            events: 200_000,
            distinct: vec![200, 20_000, 200_000],
            only: Vec::new(),
            small: false,
            answer: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--small" {
                o.small = true;
                continue;
            }
            let v = it.next().with_context(|| format!("{a} needs a value"))?;
            match a.as_str() {
                "--latency-ms" => o.latency_ms = v.parse()?,
                "--concurrency" => o.concurrency = v.parse()?,
                "--events" => o.events = v.parse()?,
                "--distinct" => o.distinct = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
                "--only" => o.only = v.split(',').map(str::to_owned).collect(),
                "--answer" => o.answer = Some(PathBuf::from(v)),
                other => bail!("unknown option {other:?} for bench"),
            }
        }
        Ok(o)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
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

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn reset_max(&self) {
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// The answer every mock serves, when `--answer` gives one: its text and the
/// address to replace in it.
static ANSWER: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// The mock's answer for `ip`.
fn answer_for(ip: &str) -> String {
    match ANSWER.get() {
        Some((text, own)) => text.replace(own.as_str(), ip),
        None => format!(
            r#"{{"LicenseInfo":{{"DayRequests":17,"DayQuota":1000000}},"Zone":"Red","IpGeneralInfo":{{"Ip":"{ip}","CountryCode":"NL","HitsCount":100,"Categories":["CATEGORY_MALWARE"]}},"IpWhoIs":{{"Asn":[{{"Number":64500,"Description":["EXAMPLE-AS"]}}],"Net":{{"RangeStart":"11.0.0.0","RangeEnd":"11.255.255.255","Name":"BENCH"}}}}}}"#
        ),
    }
}

fn serve(stream: TcpStream, latency: Duration, requests: &AtomicUsize, in_flight: &AtomicUsize, max: &AtomicUsize) {
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(clone);
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
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let ip = request_line.split('/').nth(3).and_then(|s| s.split('?').next()).unwrap_or("0.0.0.0");
        let body = answer_for(ip);
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

/// What one measured run took.
struct Run {
    wall: Duration,
    /// Peak resident memory in KiB.
    peak_kib: u64,
}

impl Run {
    fn mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// Runs `cmd` with `stdin_file`, stdout to `stdout_file`; returns wall time
/// and peak resident memory (the kernel's high-water mark `VmHWM`, read
/// every few milliseconds while the child runs).
fn measure(cmd: &mut Command, stdin_file: &Path, stdout_file: &Path) -> anyhow::Result<Run> {
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
    let wall = started.elapsed();
    let err = reader.join().unwrap_or_default();
    ensure!(status.success(), "{cmd:?} failed: {err}");
    Ok(Run { wall, peak_kib: peak })
}

/// The fastest of `n` runs, with the highest peak memory of them.
fn best_of(n: usize, mut run: impl FnMut() -> anyhow::Result<Run>) -> anyhow::Result<Run> {
    let mut best = run()?;
    for _ in 1..n {
        let next = run()?;
        best = Run { wall: best.wall.min(next.wall), peak_kib: best.peak_kib.max(next.peak_kib) };
    }
    Ok(best)
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The release binaries, the mock and a scratch folder.
struct Bench {
    kl_dnif: PathBuf,
    kl_generic: PathBuf,
    kl_http: PathBuf,
    mock: Mock,
    work: PathBuf,
    opts: Options,
}

impl Bench {
    /// A config against the mock, with `extra` lines.
    fn config(&self, name: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(name);
        std::fs::write(
            &path,
            format!(
                "lookup_plugin:\n  KASPERSKY_API_TOKEN: bench\n  KASPERSKY_API_URL: http://127.0.0.1:{}/api\n  KL_CONCURRENCY: {}\n{extra}",
                self.mock.port, self.opts.concurrency
            ),
        )?;
        Ok(path)
    }

    fn cache_line(&self, name: &str) -> String {
        format!("  KL_CACHE_PATH: {}\n", self.work.join(name).display())
    }

    /// `kl-generic-json enrich --style kl` over `input`; requests sent and the run.
    fn enrich(&self, config: &Path, input: &Path) -> anyhow::Result<(usize, Run)> {
        let before = self.mock.requests();
        let run = measure(
            Command::new(&self.kl_generic).args([
                "enrich",
                "--function",
                "get_ip_report",
                "--field",
                "indicator",
                "--style",
                "kl",
                "--config",
                config.to_str().context("path")?,
                "--quiet",
            ]),
            input,
            &self.work.join("enriched.ndjson"),
        )?;
        Ok((self.mock.requests() - before, run))
    }
}

/// `n` distinct public addresses in 11.0.0.0/8.
fn addresses(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("11.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)).collect()
}

fn write_events(path: &Path, events: usize, ips: &[String], small: bool) -> anyhow::Result<u64> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..events {
        if small {
            writeln!(w, r#"{{"indicator":"{}"}}"#, ips[(i * 7919) % ips.len()])?;
            continue;
        }
        writeln!(
            w,
            r#"{{"@timestamp":"2026-11-20T08:14:03Z","event":{{"module":"firewall","action":"deny","id":{i}}},"host":{{"name":"fw-edge-1"}},"indicator":"{}","destination":{{"ip":"10.20.0.15","port":22}},"message":"connection attempt blocked by policy 17"}}"#,
            ips[(i * 7919) % ips.len()]
        )?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    if let Some(path) = &opts.answer {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let own = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        ensure!(text.contains(&own), "{} does not name its own address ({own})", path.display());
        // Compact, as the API sends it.
        let compact = serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&text)?)?;
        let _ = ANSWER.set((compact, own));
    }
    let (kl_dnif, kl_generic, kl_http) = build(root)?;
    let bench = Bench {
        kl_dnif,
        kl_generic,
        kl_http,
        mock: Mock::start(Duration::from_millis(opts.latency_ms))?,
        work: scratch_dir()?,
        opts: opts.clone(),
    };
    println!("kl bench: mock latency {} ms, KL_CONCURRENCY {}", opts.latency_ms, opts.concurrency);
    if opts.wants("dnif") {
        dnif_batch(&bench)?;
    }
    if opts.wants("streams") {
        streams(&bench)?;
    }
    if opts.wants("latency") {
        latency(&bench)?;
    }
    if opts.wants("service") {
        service(&bench)?;
    }
    if opts.wants("memo") {
        memo_entry_cost(&bench)?;
    }
    if opts.wants("fleet") {
        fleet(&bench)?;
    }
    let _ = std::fs::remove_dir_all(&bench.work);
    Ok(())
}

fn build(root: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "--locked", "-p", "kl-dnif", "-p", "kl-generic-json", "-p", "kl-http"])
        .status()?;
    ensure!(status.success(), "cargo build --release failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let release = target.join("release");
    Ok((release.join("kl-dnif"), release.join("kl-generic-json"), release.join("kl-http")))
}

fn dnif_batch(b: &Bench) -> anyhow::Result<()> {
    let cfg = b.config("dnif.yml", &b.cache_line("dnif-cache"))?;
    let ips = addresses(200);
    let batch: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"$SrcIP":"{}","$DstIP":"10.1.2.3","$DstPort":443,"n":{i}}}"#, ips[(i * 7) % 200]))
        .collect();
    let batch_file = b.work.join("batch.json");
    std::fs::write(&batch_file, format!("[{}]", batch.join(",")))?;
    let dnif = |out: &Path| {
        measure(
            Command::new(&b.kl_dnif).args(["--config", cfg.to_str().unwrap_or_default(), "get_ip_report", "$SrcIP"]),
            &batch_file,
            out,
        )
    };
    let (out1, out2) = (b.work.join("out1.json"), b.work.join("out2.json"));
    b.mock.reset_max();
    let before = b.mock.requests();
    let first = dnif(&out1)?;
    let requests1 = b.mock.requests() - before;
    let max_in_flight = b.mock.max_in_flight.load(Ordering::SeqCst);
    let latency = Duration::from_millis(b.opts.latency_ms);
    let floor = latency * 200usize.div_ceil(b.opts.concurrency) as u32;
    let second = dnif(&out2)?;
    let requests2 = b.mock.requests() - before - requests1;
    let identical = std::fs::read(&out1)? == std::fs::read(&out2)?;
    println!();
    println!("kl-dnif, 2000 events / 200 distinct IPs");
    println!(
        "  wall time          {:>9.3} s   (floor {:.3} s; limit 4x floor = {:.3} s)",
        first.wall.as_secs_f64(),
        floor.as_secs_f64(),
        4.0 * floor.as_secs_f64()
    );
    println!("  requests           {requests1:>9}     (distinct indicators: 200)");
    println!("  most in flight     {max_in_flight:>9}     (limit {})", b.opts.concurrency);
    println!(
        "  re-run requests    {requests2:>9}     (wall {:.3} s, output identical: {identical})",
        second.wall.as_secs_f64()
    );
    Ok(())
}

fn streams(b: &Bench) -> anyhow::Result<()> {
    let events = b.opts.events;
    println!();
    let shape = if b.opts.small { "small" } else { "firewall-log" };
    println!(
        "kl-generic-json enrich --style kl, {events} {shape} events (limits: peak 64 MiB; warm within 1.5x jq; warm and jq best of 3)"
    );
    println!(
        "  answer: {} bytes ({})",
        answer_for("11.0.0.1").len(),
        match &b.opts.answer {
            Some(p) => p.display().to_string(),
            None => "the bench's own".to_owned(),
        }
    );
    println!(
        "  {:>9} {:>5} {:>9} {:>9} {:>11} {:>9} {:>8}",
        "distinct", "cache", "requests", "wall s", "events/s", "peak MiB", "x jq"
    );
    for &distinct in &b.opts.distinct {
        let input = b.work.join(format!("events-{distinct}.ndjson"));
        let size = write_events(&input, events, &addresses(distinct), b.opts.small)?;
        // Warm runs and jq, best of three: a shared machine's noise only
        // ever adds time.
        let jq = best_of(3, || measure(Command::new("jq").arg("-c").arg("."), &input, &b.work.join("jq.ndjson"))).ok();
        let cfg = b.config(&format!("stream-{distinct}.yml"), &b.cache_line(&format!("cache-{distinct}")))?;
        for label in ["cold", "warm"] {
            let (requests, run) = match label {
                "cold" => b.enrich(&cfg, &input)?,
                _ => {
                    let mut requests = 0;
                    let run = best_of(3, || {
                        let (r, run) = b.enrich(&cfg, &input)?;
                        requests += r;
                        Ok(run)
                    })?;
                    (requests, run)
                }
            };
            let ratio =
                jq.as_ref().map_or("-".to_owned(), |j| format!("{:.2}", run.wall.as_secs_f64() / j.wall.as_secs_f64()));
            println!(
                "  {distinct:>9} {label:>5} {requests:>9} {:>9.3} {:>11.0} {:>9.1} {ratio:>8}",
                run.wall.as_secs_f64(),
                events as f64 / run.wall.as_secs_f64(),
                run.mib(),
            );
        }
        match &jq {
            Some(j) => println!(
                "  {distinct:>9} {:>5} {:>9} {:>9.3} {:>11.0} {:>9.1}   (jq -c . on the same {:.1} MiB)",
                "jq",
                "",
                j.wall.as_secs_f64(),
                events as f64 / j.wall.as_secs_f64(),
                j.mib(),
                size as f64 / 1048576.0
            ),
            None => println!("  jq -c . not measured (is jq installed?)"),
        }
    }
    Ok(())
}

/// Input-to-output delay under a steady producer.
fn latency(b: &Bench) -> anyhow::Result<()> {
    const LINES: usize = 1000;
    // 200 events a second: within what 8 requests in flight at 20 ms serve.
    const EVERY: Duration = Duration::from_millis(5);
    // A slower mock of its own: the delay a lookup adds is the point.
    let mock = Mock::start(Duration::from_millis(20 + b.opts.latency_ms))?;
    let cfg = b.work.join("latency.yml");
    std::fs::write(
        &cfg,
        format!(
            "lookup_plugin:\n  KASPERSKY_API_TOKEN: bench\n  KASPERSKY_API_URL: http://127.0.0.1:{}/api\n  KL_CONCURRENCY: {}\n  KL_CACHE_PATH: off\n",
            mock.port, b.opts.concurrency
        ),
    )?;
    let mut child = Command::new(&b.kl_generic)
        .args(["enrich", "--function", "get_ip_report", "--field", "indicator", "--config"])
        .arg(&cfg)
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::with_capacity(LINES);
        for line in BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            out.push(Instant::now());
        }
        out
    });
    let ips = addresses(LINES);
    let start = Instant::now();
    let mut sent = Vec::with_capacity(LINES);
    for (i, ip) in ips.iter().enumerate() {
        let due = start + EVERY * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.push(Instant::now());
        writeln!(stdin, r#"{{"n":{i},"indicator":"{ip}"}}"#)?;
        stdin.flush()?;
    }
    drop(stdin);
    let received = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    child.wait()?;
    ensure!(received.len() == LINES, "{} lines out of {LINES}", received.len());
    let mut delays: Vec<Duration> = sent.iter().zip(&received).map(|(s, r)| r.saturating_duration_since(*s)).collect();
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!();
    println!(
        "latency: one new event every {} ms, mock answering after {} ms, KL_CONCURRENCY {}",
        EVERY.as_millis(),
        20 + b.opts.latency_ms,
        b.opts.concurrency
    );
    println!(
        "  input to output    p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   (the lookup itself: {} ms)",
        at(0.5),
        at(0.99),
        at(1.0),
        20 + b.opts.latency_ms
    );
    Ok(())
}

/// A keep-alive HTTP/1.1 client for the bench: GETs, timed.
struct HttpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl HttpClient {
    fn connect(addr: &str) -> anyhow::Result<HttpClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(HttpClient { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// One GET; its status and how long it took.
    fn get(&mut self, path: &str, token: &str) -> anyhow::Result<(u16, Duration)> {
        let started = Instant::now();
        write!(self.writer, "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n")?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line.split_whitespace().nth(1).context("no status")?.parse()?;
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header)?;
            if header == "\r\n" || header.is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, started.elapsed()))
    }
}

/// `clients` threads, each asking `per_client` paths; throughput and the
/// latencies, sorted.
fn hammer(
    addr: &str,
    token: &str,
    clients: usize,
    paths: &[String],
    per_client: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, token, paths) = (addr.to_owned(), token.to_owned(), paths.to_vec());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut client = HttpClient::connect(&addr)?;
                let mut times = Vec::with_capacity(per_client);
                for k in 0..per_client {
                    let (status, took) = client.get(&paths[(c * 7 + k) % paths.len()], &token)?;
                    ensure!(status == 200, "status {status}");
                    times.push(took);
                }
                Ok(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow::anyhow!("a client panicked"))??);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all.len() as f64 / wall.as_secs_f64(), all))
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0
}

/// kl-http under concurrent clients.
fn service(b: &Bench) -> anyhow::Result<()> {
    let latency = 5 + b.opts.latency_ms;
    let mock = Mock::start(Duration::from_millis(latency))?;
    let token = "bench-token-0123456789abcdef";
    let cfg = b.work.join("http.yml");
    std::fs::write(
        &cfg,
        format!(
            "lookup_plugin:\n  KASPERSKY_API_TOKEN: bench\n  KASPERSKY_API_URL: http://127.0.0.1:{}/api\n  KL_CONCURRENCY: {}\n  KL_CACHE_PATH: off\n  KL_HTTP_TOKENS: {token}\n",
            mock.port, b.opts.concurrency
        ),
    )?;
    let mut child = Command::new(&b.kl_http)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        ensure!(stderr.read_line(&mut line)? > 0, "kl-http ended before listening");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split(',').next().context("address")?.to_owned();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let paths: Vec<String> = addresses(200).iter().map(|ip| format!("/v1/lookup/get_ip_report/{ip}")).collect();
    let before = mock.requests();
    let cold = hammer(&addr, token, 64, &paths, paths.len());
    let requests = mock.requests() - before;
    let warm64 = hammer(&addr, token, 64, &paths, 500);
    let warm8 = hammer(&addr, token, 8, &paths, 2000);
    let _ = child.kill();
    let _ = child.wait();
    println!();
    println!("kl-http, mock answering after {latency} ms, KL_CONCURRENCY {}", b.opts.concurrency);
    for (label, result) in [("64 clients, cold", cold), ("64 clients, cached", warm64), ("8 clients, cached", warm8)] {
        let (rate, times) = result?;
        println!(
            "  {label:<20} {:>7} lookups {rate:>9.0}/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            times.len(),
            percentile_ms(&times, 0.5),
            percentile_ms(&times, 0.99)
        );
    }
    println!("  upstream requests for the cold pass: {requests} (distinct addresses: 200)");
    Ok(())
}

fn memo_entry_cost(b: &Bench) -> anyhow::Result<()> {
    let big_memo = "  KL_CACHE_PATH: off\n  KL_MEMO_BYTES: 4294967296\n";
    let cfg = b.config("memo.yml", big_memo)?;
    let mut peaks = Vec::new();
    for distinct in [20_000usize, 200_000] {
        let input = b.work.join(format!("memo-{distinct}.ndjson"));
        // Each address once: every line is a new memo entry.
        write_events(&input, distinct, &addresses(distinct), false)?;
        let (_, run) = b.enrich(&cfg, &input)?;
        peaks.push((distinct, run.peak_kib));
    }
    let ((n1, k1), (n2, k2)) = (peaks[0], peaks[1]);
    let per_entry = (k2.saturating_sub(k1) as f64 * 1024.0) / (n2 - n1) as f64;
    println!();
    println!("memo entry cost (cache off, memo unbounded, each address once)");
    println!("  peak with {n1:>7} answers {:>9.1} MiB", k1 as f64 / 1024.0);
    println!("  peak with {n2:>7} answers {:>9.1} MiB", k2 as f64 / 1024.0);
    println!(
        "  per answer         {per_entry:>9.0} bytes (the mock's answer is {} bytes)",
        answer_for("11.0.0.1").len()
    );
    Ok(())
}

/// N processes over the same new addresses: separate caches vs one Redis.
fn fleet(b: &Bench) -> anyhow::Result<()> {
    const PROCESSES: usize = 4;
    const DISTINCT: usize = 2000;
    let latency = 20 + b.opts.latency_ms;
    let mock = Mock::start(Duration::from_millis(latency))?;
    let redis = BenchRedis::start(&b.work)?;
    let ips: Vec<String> =
        (0..DISTINCT).map(|i| format!("12.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)).collect();
    let inputs: Vec<PathBuf> = (0..=PROCESSES)
        .map(|p| {
            let mut mine = ips.clone();
            mine.rotate_left(p * DISTINCT / PROCESSES);
            let path = b.work.join(format!("fleet-{p}.ndjson"));
            std::fs::write(&path, mine.iter().map(|ip| format!("{{\"indicator\":\"{ip}\"}}\n")).collect::<String>())?;
            Ok(path)
        })
        .collect::<anyhow::Result<_>>()?;
    let config = |name: &str, cache: &str| -> anyhow::Result<PathBuf> {
        let path = b.work.join(name);
        std::fs::write(
            &path,
            format!(
                "lookup_plugin:\n  KASPERSKY_API_TOKEN: bench\n  KASPERSKY_API_URL: http://127.0.0.1:{}/api\n  KL_CONCURRENCY: {}\n{cache}",
                mock.port, b.opts.concurrency
            ),
        )?;
        Ok(path)
    };
    let spawn = |cfg: &Path, input: &Path| -> anyhow::Result<std::process::Child> {
        Ok(Command::new(&b.kl_generic)
            .args(["enrich", "--function", "get_ip_report", "--field", "indicator", "--quiet", "--config"])
            .arg(cfg)
            .stdin(std::fs::File::open(input)?)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    };
    println!();
    println!(
        "fleet: {PROCESSES} kl-generic-json processes at once over the same {DISTINCT} new addresses, mock answering after {latency} ms"
    );
    for shared in [false, true] {
        let configs: Vec<PathBuf> = (0..=PROCESSES)
            .map(|p| {
                let cache = if shared {
                    format!("  KL_CACHE_URL: {}\n", redis.url())
                } else {
                    b.cache_line(&format!("fleet-cache-{p}"))
                };
                config(&format!("fleet-{shared}-{p}.yml"), &cache)
            })
            .collect::<anyhow::Result<_>>()?;
        let before = mock.requests();
        let started = Instant::now();
        let children: Vec<_> = (0..PROCESSES).map(|p| spawn(&configs[p], &inputs[p])).collect::<anyhow::Result<_>>()?;
        for mut child in children {
            ensure!(child.wait()?.success(), "a fleet process failed");
        }
        let wall = started.elapsed();
        let requests = mock.requests() - before;
        let before_fifth = mock.requests();
        ensure!(spawn(&configs[PROCESSES], &inputs[PROCESSES])?.wait()?.success(), "the fifth process failed");
        let fifth = mock.requests() - before_fifth;
        let label = if shared { "one shared Redis" } else { "a SQLite cache each" };
        println!(
            "  {label:<20} requests {requests:>6} ({:.2} per address; limit with Redis 1.10)   wall {:>6.2} s   a fifth process then sends {fifth}",
            requests as f64 / DISTINCT as f64,
            wall.as_secs_f64()
        );
    }
    Ok(())
}

/// A `redis-server` for the fleet figure, killed when dropped.
struct BenchRedis {
    child: std::process::Child,
    port: u16,
}

impl BenchRedis {
    fn start(work: &Path) -> anyhow::Result<BenchRedis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (apt-get install redis-server)")?;
        let redis = BenchRedis { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for BenchRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kl-bench-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
