//! A real `redis-server` for tests, on a free loopback port, and a tiny
//! client to look inside it.
//!
//! Where `redis-server` is not installed a test skips, except under
//! `CI=true`, where that is a failure (`.ci/run` installs it).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this test started; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    _dir: tempfile::TempDir,
}

/// A reply, as Redis gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Bulk(b) => b.clone(),
            Reply::Simple(s) => Some(s.clone()),
            other => panic!("not a string: {other:?}"),
        }
    }
}

impl RedisServer {
    /// Starts `redis-server` (with `password`, if any) on a free loopback
    /// port and waits until it answers. `None` when it is not installed and
    /// not under `CI=true` (the test should return, saying it skipped).
    pub fn start(password: Option<&str>) -> Option<RedisServer> {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and redis-server is not installed (.ci/run installs the Debian package redis-server)"
            );
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        // A port the OS just gave out and took back: free, barring a race,
        // which the retry covers.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let child = spawn(port, dir.path(), password);
            let mut server = RedisServer { child: Some(child), port, password: password.map(str::to_owned), _dir: dir };
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if server.try_command(&["PING"]).is_ok_and(|r| r == Reply::Simple("PONG".into())) {
                    return Some(server);
                }
                if server.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                    break; // it exited: the port was taken meanwhile
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            server.kill();
        }
        panic!("redis-server did not start on a loopback port");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:password@]127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The URL without the password (for a config that gives it apart).
    pub fn url_without_password(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs one command (authenticating first) and returns its reply.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.try_command(args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Every key matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.command(&["KEYS", pattern]) {
            Reply::Array(items) => items.iter().filter_map(Reply::text).collect(),
            other => panic!("KEYS: {other:?}"),
        }
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`]),
    /// empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port, self._dir.path(), self.password.as_deref()));
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.try_command(&["PING"]).is_ok_and(|r| r == Reply::Simple("PONG".into())) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Stops the server now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<Reply> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(pw) = &self.password {
            writer.write_all(&encode(&["AUTH", pw]))?;
            read_reply(&mut reader)?;
        }
        writer.write_all(&encode(args))?;
        read_reply(&mut reader)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` on loopback `port`, in the foreground, persisting nothing.
fn spawn(port: u16, dir: &std::path::Path, password: Option<&str>) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--loglevel", "warning", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(pw) = password {
        cmd.args(["--requirepass", pw]);
    }
    cmd.spawn().expect("spawn redis-server")
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply line {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; len as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(len as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}
