//! The persistent lookup cache: raw answers in SQLite, shared by processes.
//!
//! One row per (sections, object type, normalised indicator) holds the raw
//! answer (the response body, or "not found") and when it expires. Storing
//! the raw body rather than fields means a fix to the field mapping applies
//! to cached answers too. Failures are never cached.
//!
//! The cache must never stop a lookup: a missing, locked, corrupt or
//! unwritable database is logged once and bypassed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::{CacheSetting, Config};
use kl_model::Answer;
use kl_model::Function;
use kl_model::Indicator;

/// The database file inside the cache folder.
pub const CACHE_FILE: &str = "kl-cache.sqlite3";

/// A persistent cache of TIP answers.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    /// Answers of one API endpoint are never served for another.
    namespace: String,
    conn: Mutex<Option<Connection>>,
    /// Answers not yet written: one transaction per flush, not per answer.
    pending: Mutex<Vec<Row>>,
    ttl: Duration,
    grey_ttl: Duration,
    warned: AtomicBool,
}

#[derive(Debug)]
struct Row {
    key: String,
    found: bool,
    body: Option<Vec<u8>>,
    stored: i64,
    expires: i64,
}

/// Pending answers are written once this many have gathered (and on
/// [`Cache::flush`], and when the cache is dropped).
const FLUSH_EVERY: usize = 256;

/// The XDG cache folder for kl: `$XDG_CACHE_HOME/kl`, else `~/.cache/kl`.
pub fn xdg_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kl"))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Cache {
    /// The cache a config asks for: `KL_CACHE_PATH`, `off`, or `default_dir`
    /// when the key is not set. `None` when there is to be no cache.
    pub fn for_config(config: &Config, default_dir: Option<PathBuf>) -> Option<Cache> {
        let dir = match &config.cache {
            CacheSetting::Off => return None,
            CacheSetting::Path(p) => p.clone(),
            CacheSetting::Default => default_dir?,
        };
        Some(Cache::open(&dir, config.cache_ttl, config.cache_grey_ttl).for_endpoint(config.api_url.as_str()))
    }

    /// Keeps this cache's answers apart from those of other API endpoints
    /// (a test server, another portal) sharing the same folder.
    pub fn for_endpoint(mut self, api_url: &str) -> Cache {
        self.namespace = api_url.trim_end_matches('/').to_owned();
        self
    }

    /// Opens (creating if needed) the cache in folder `dir`. Never fails: an
    /// unusable cache is logged and every call on it is a miss.
    pub fn open(dir: &Path, ttl: Duration, grey_ttl: Duration) -> Cache {
        let path = dir.join(CACHE_FILE);
        let cache = Cache {
            path,
            namespace: String::new(),
            conn: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            ttl,
            grey_ttl,
            warned: AtomicBool::new(false),
        };
        match cache.connect(dir) {
            Ok(conn) => *cache.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn),
            Err(e) => cache.warn(&e),
        }
        cache
    }

    fn connect(&self, dir: &Path) -> Result<Connection, String> {
        // Which indicators a site looks up is its own business: the folder
        // and the database are readable by their owner only.
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(&self.path).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?;
        // WAL lets readers and one writer from several processes work at once.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| e.to_string())?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS answers (
                key TEXT PRIMARY KEY,
                found INTEGER NOT NULL,
                body BLOB,
                stored_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS answers_expiry ON answers(expires_at);",
        )
        .map_err(|e| e.to_string())?;
        conn.execute("DELETE FROM answers WHERE expires_at <= ?1", params![now()]).map_err(|e| e.to_string())?;
        Ok(conn)
    }

    fn warn(&self, err: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("lookup cache {} is unusable and is bypassed: {err}", self.path.display());
        } else {
            tracing::debug!("lookup cache {}: {err}", self.path.display());
        }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn key(&self, function: Function, indicator: &Indicator) -> String {
        format!(
            "{}|{}|{}|{}",
            self.namespace,
            function.sections_param(),
            indicator.kind().api_type(),
            indicator.as_str()
        )
    }

    /// A fresh cached answer, if there is one.
    pub fn get(&self, function: Function, indicator: &Indicator) -> Option<Answer> {
        let key = self.key(function, indicator);
        {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(row) = pending.iter().rev().find(|r| r.key == key) {
                return match (&row.found, &row.body) {
                    (false, _) => Some(Answer::NotFound),
                    (true, Some(body)) => serde_json::from_slice(body).ok().map(Answer::Data),
                    (true, None) => None,
                };
            }
        }
        let guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let conn = guard.as_ref()?;
        type Found = (bool, Option<Vec<u8>>);
        let row: Result<Option<Found>, _> = conn
            .query_row("SELECT found, body FROM answers WHERE key = ?1 AND expires_at > ?2", params![key, now()], |r| {
                Ok((r.get::<_, bool>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
            })
            .optional();
        match row {
            Ok(None) => None,
            Ok(Some((false, _))) => Some(Answer::NotFound),
            Ok(Some((true, Some(body)))) => match serde_json::from_slice(&body) {
                Ok(v) => Some(Answer::Data(v)),
                Err(e) => {
                    self.warn(&format!("unreadable entry: {e}"));
                    None
                }
            },
            Ok(Some((true, None))) => None,
            Err(e) => {
                self.warn(&e.to_string());
                None
            }
        }
    }

    /// Stores an answer: data for the data lifetime, "no data" (not found,
    /// or no section besides `LicenseInfo`) for the shorter Grey lifetime.
    pub fn put(&self, function: Function, indicator: &Indicator, answer: &Answer) {
        let (found, body, ttl) = match answer {
            Answer::NotFound => (false, None, self.grey_ttl),
            Answer::Data(v) => {
                let has_data = v.as_object().is_some_and(|m| m.keys().any(|k| k != "LicenseInfo"));
                let ttl = if has_data { self.ttl } else { self.grey_ttl };
                (true, serde_json::to_vec(v).ok(), ttl)
            }
        };
        if ttl.is_zero() || self.conn.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return;
        }
        let stored = now();
        let expires = stored.saturating_add(ttl.as_secs().min(i64::MAX as u64) as i64);
        let row = Row { key: self.key(function, indicator), found, body, stored, expires };
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(row);
            pending.len() >= FLUSH_EVERY
        };
        if full {
            self.flush();
        }
    }

    /// Writes the pending answers, in one transaction.
    pub fn flush(&self) {
        let rows = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if rows.is_empty() {
            return;
        }
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_mut() else { return };
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO answers (key, found, body, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for r in &rows {
                    stmt.execute(params![r.key, r.found, r.body, r.stored, r.expires])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            self.warn(&e.to_string());
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_model::ObjectKind;
    use serde_json::json;

    fn ip(s: &str) -> Indicator {
        Indicator::parse(ObjectKind::Ipv4, s).unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn stores_and_reads_back_per_function() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), DAY, DAY);
        let data = Answer::Data(json!({"Zone": "Red", "LicenseInfo": {"DayRequests": 1}}));
        assert_eq!(c.get(Function::IpReport, &ip("8.8.8.8")), None);
        c.put(Function::IpReport, &ip("8.8.8.8"), &data);
        c.put(Function::IpReport, &ip("8.8.4.4"), &Answer::NotFound);
        assert_eq!(c.get(Function::IpReport, &ip("8.8.8.8")), Some(data.clone()));
        assert_eq!(c.get(Function::IpReport, &ip("8.8.4.4")), Some(Answer::NotFound));
        assert_eq!(c.get(Function::IpReportFile, &ip("8.8.8.8")), None, "other sections, other entry");
        // A second handle (another process) sees the same entries once written.
        c.flush();
        let other = Cache::open(dir.path(), DAY, DAY);
        assert_eq!(other.get(Function::IpReport, &ip("8.8.8.8")), Some(data));
        let elsewhere = Cache::open(dir.path(), DAY, DAY).for_endpoint("https://tip.example/api");
        assert_eq!(elsewhere.get(Function::IpReport, &ip("8.8.8.8")), None, "another endpoint, another entry");
    }

    #[test]
    fn several_writers_share_one_cache() {
        // DNIF runs lookups in parallel: four handles (as four processes
        // would) write and flush at the same time; every answer lands.
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = dir.path().to_path_buf();
                s.spawn(move || {
                    let c = Cache::open(&path, DAY, DAY);
                    for i in 0..300 {
                        c.put(
                            Function::IpReport,
                            &ip(&format!("11.{t}.{}.{}", i / 200, i % 200)),
                            &Answer::Data(json!({"Zone": "Red", "n": i})),
                        );
                    }
                    c.flush();
                });
            }
        });
        let c = Cache::open(dir.path(), DAY, DAY);
        for t in 0..4 {
            for i in 0..300 {
                let answer = c.get(Function::IpReport, &ip(&format!("11.{t}.{}.{}", i / 200, i % 200)));
                assert_eq!(answer, Some(Answer::Data(json!({"Zone": "Red", "n": i}))), "{t}/{i}");
            }
        }
        assert!(!c.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn the_cache_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("cache");
        let _c = Cache::open(&folder, DAY, DAY);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(CACHE_FILE)), 0o600);
    }

    #[test]
    fn grey_answers_use_the_grey_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), DAY, Duration::ZERO);
        c.put(Function::IpReport, &ip("1.1.1.1"), &Answer::NotFound);
        c.put(Function::IpReport, &ip("1.0.0.1"), &Answer::Data(json!({"LicenseInfo": {}})));
        c.put(Function::IpReport, &ip("9.9.9.9"), &Answer::Data(json!({"Zone": "Green"})));
        assert_eq!(c.get(Function::IpReport, &ip("1.1.1.1")), None);
        assert_eq!(c.get(Function::IpReport, &ip("1.0.0.1")), None);
        assert!(c.get(Function::IpReport, &ip("9.9.9.9")).is_some());
    }

    #[test]
    fn expired_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), DAY, DAY);
        c.put(Function::IpReport, &ip("9.9.9.9"), &Answer::Data(json!({"Zone": "Green"})));
        c.flush();
        let conn = c.conn.lock().unwrap();
        conn.as_ref().unwrap().execute("UPDATE answers SET expires_at = 1", []).unwrap();
        drop(conn);
        assert_eq!(c.get(Function::IpReport, &ip("9.9.9.9")), None);
    }

    #[test]
    fn a_corrupt_or_unwritable_cache_is_bypassed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CACHE_FILE), b"this is not a database, just garbage bytes".repeat(100)).unwrap();
        let c = Cache::open(dir.path(), DAY, DAY);
        c.put(Function::IpReport, &ip("9.9.9.9"), &Answer::NotFound);
        assert_eq!(c.get(Function::IpReport, &ip("9.9.9.9")), None);
        // A folder that cannot be created (a file is in the way).
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let c = Cache::open(&blocked.join("sub"), DAY, DAY);
        assert_eq!(c.get(Function::IpReport, &ip("9.9.9.9")), None);
    }
}
