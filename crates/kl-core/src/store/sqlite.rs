//! The SQLite store: one database file in a folder, shared by processes.
//!
//! One row per key holds the raw answer (the sections as JSON text, or "not
//! found") and when it expires. Several processes share the file safely
//! (WAL mode; DNIF runs lookups in parallel).
//!
//! Beside an answer, a stream's form of it may be kept (see [`Prepare`]):
//! its text and the bytes a stream with the same settings, run by the same
//! build of kl, writes for it, both packed as the process held them
//! ([`PackedBody`]), with the packing's dictionaries kept once for the
//! file. A later stream with the same settings and dictionaries takes the
//! answer up as it is, rather than check, pack and render its text anew,
//! which is most of the cost of a warm stream's first sight of an answer.
//! Such a form expires with its answer, and a trigger drops it when the
//! answer is written again, whichever process or build writes it.
//!
//! No SQLite call runs on an async runtime's worker threads: one dedicated
//! thread owns the connection and serves reads and writes in the order they
//! were asked (so lookups reach the API in the order events came). Writes
//! are committed in batches: at least once a second, on [`Store::flush`],
//! and when the store is dropped. A read sees the writes not yet committed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use kl_model::{Answer, Body, Dictionaries, PackedBody};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Prepare, Store};

/// The database file inside the cache folder.
pub const CACHE_FILE: &str = "kl-cache.sqlite3";

/// The XDG cache folder for kl: `$XDG_CACHE_HOME/kl`, else `~/.cache/kl`.
pub fn xdg_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kl"))
}

/// Milliseconds since the Unix epoch: stored times are wall-clock times,
/// since other processes read them.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Answers are committed once this many are waiting…
const BATCH_ROWS: usize = 256;
/// …or forms of answers stored earlier, this many: they are only worth
/// their writes in large batches (they land all over the table), and
/// nothing is lost if they never land…
const BATCH_FORMS: usize = 8192;
/// …or once the oldest has waited this long.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long opening the database may wait for other processes' locks.
const OPEN_PATIENCE: Duration = Duration::from_secs(15);

/// The persistent cache in a folder.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// To the database thread; `None` when the database is unusable. A std
    /// mutex around the sender: held only to send one message.
    worker: Option<Mutex<Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    warned: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Row {
    key: String,
    /// The answer's body; `None`: not found (Grey).
    body: Option<Body>,
    stored_ms: i64,
    expires_ms: i64,
    /// Whose rendering to keep with the answer.
    prepare: Option<Prepare>,
}

/// A stream's form of an answer already stored.
#[derive(Debug)]
struct Rendering {
    key: String,
    settings: u64,
    packed: PackedBody,
    /// The answer it was made from, by its `stored_ms`: a form is not kept
    /// with an answer another process has since replaced.
    stored_ms: i64,
    expires_ms: i64,
}

/// A write waiting for the next commit.
#[derive(Debug)]
enum Write {
    Answer(Row),
    Rendering(Rendering),
}

enum Msg {
    /// A read, answered with the entry decoded (on this thread, not the
    /// runtime's) or why it could not be read.
    Get(String, Option<Prepare>, tokio::sync::oneshot::Sender<Result<Option<Answer>, String>>),
    Put(Row),
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Tests: run a statement.
    #[cfg(test)]
    Exec(&'static str, tokio::sync::oneshot::Sender<()>),
}

impl SqliteStore {
    /// Opens (creating if needed) the cache in folder `dir`. Never fails: an
    /// unusable cache is logged and every call on it is a miss.
    pub fn open(dir: &Path) -> SqliteStore {
        let path = dir.join(CACHE_FILE);
        let warned = Arc::new(AtomicBool::new(false));
        let (worker, thread) = match connect(dir, &path) {
            Ok(conn) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let (p, w) = (path.clone(), warned.clone());
                let thread =
                    std::thread::Builder::new().name("kl-cache".to_owned()).spawn(move || serve(conn, rx, &p, &w)).ok();
                (thread.as_ref().map(|_| Mutex::new(tx)), thread)
            }
            Err(e) => {
                warn(&warned, &path, &e);
                (None, None)
            }
        };
        SqliteStore { path, worker, thread: Mutex::new(thread), warned }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether something went wrong with the database (tests).
    #[cfg(test)]
    fn has_warned(&self) -> bool {
        self.warned.load(Ordering::Relaxed)
    }

    fn send(&self, msg: Msg) -> bool {
        match &self.worker {
            Some(w) => w.lock().unwrap_or_else(|p| p.into_inner()).send(msg).is_ok(),
            None => false,
        }
    }
}

fn warn(warned: &AtomicBool, path: &Path, err: &str) {
    if !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!("lookup cache {} is unusable and is bypassed: {err}", path.display());
    } else {
        tracing::debug!("lookup cache {}: {err}", path.display());
    }
}

/// Opens a connection and makes sure the schema exists, waiting for other
/// processes that hold the database locked (several DNIF processes may
/// start on a new cache folder at once) rather than giving up.
fn connect(dir: &Path, path: &Path) -> Result<Connection, String> {
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
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match try_connect(path) {
            Ok(conn) => return Ok(conn),
            Err(e) if is_busy(&e) && started.elapsed() < OPEN_PATIENCE => {
                std::thread::sleep(pause + Duration::from_millis(fastrand::u64(0..pause.as_millis() as u64 + 1)));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn try_connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    // Set before anything else touches the file, so every later statement
    // waits for a lock instead of failing at once.
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL lets readers and one writer from several processes work at once.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A statement that may change several rows (a write that fires the
    // trigger below, say) keeps a journal of its own for the length of
    // the statement: in memory, not in a file created for each one.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS lookups (
            key TEXT PRIMARY KEY,
            body TEXT,
            stored_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS lookups_expiry ON lookups(expires_ms);
        CREATE TABLE IF NOT EXISTS renderings (
            key TEXT NOT NULL,
            settings INTEGER NOT NULL,
            dict INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL,
            text BLOB NOT NULL,
            text_len INTEGER NOT NULL,
            rendering BLOB NOT NULL,
            rendering_len INTEGER NOT NULL,
            PRIMARY KEY (key, settings)
        ) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS renderings_of_a_new_answer AFTER INSERT ON lookups
        BEGIN
            DELETE FROM renderings WHERE key = NEW.key;
        END;
        CREATE TABLE IF NOT EXISTS dictionaries (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            text BLOB NOT NULL,
            rendering BLOB NOT NULL
        );
        DROP TABLE IF EXISTS answers;",
    )?;
    // A form expires with its answer; it has no index of its own by
    // expiry, which would cost a page written for every few forms kept.
    let now = now_ms();
    conn.execute("DELETE FROM renderings WHERE key IN (SELECT key FROM lookups WHERE expires_ms <= ?1)", params![now])?;
    conn.execute("DELETE FROM lookups WHERE expires_ms <= ?1", params![now])?;
    // Packed forms are shared between processes that pack alike: the
    // first dictionaries written to the file become this process's too.
    let kept = conn
        .query_row("SELECT text, rendering FROM dictionaries WHERE id = 1", [], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    if let Some((text, rendering)) = kept {
        Dictionaries::adopt(&text, &rendering);
    }
    Ok(conn)
}

/// When the writer commits: a batch is full, the oldest waiting answer has
/// waited [`FLUSH_INTERVAL`], or a flush was asked for.
#[derive(Debug, Default)]
struct Batch {
    answers: Vec<Row>,
    /// Kept apart: a read looks among the answers only.
    forms: Vec<Rendering>,
    oldest: Option<Instant>,
}

impl Batch {
    fn push(&mut self, write: Write, now: Instant) {
        self.oldest.get_or_insert(now);
        match write {
            Write::Answer(row) => self.answers.push(row),
            Write::Rendering(form) => self.forms.push(form),
        }
    }

    /// The answer waiting to be written under `key`, if one is and it is fresh.
    fn answer(&self, key: &str) -> Option<Answer> {
        self.answers.iter().rev().find(|row| row.key == key && row.expires_ms > now_ms()).map(Row::answer)
    }

    fn is_due(&self, now: Instant) -> bool {
        self.answers.len() >= BATCH_ROWS
            || self.forms.len() >= BATCH_FORMS
            || self.oldest.is_some_and(|t| now.duration_since(t) >= FLUSH_INTERVAL)
    }

    /// How long the writer may wait for more before committing.
    fn patience(&self, now: Instant) -> Duration {
        match self.oldest {
            Some(t) => FLUSH_INTERVAL.saturating_sub(now.duration_since(t)),
            None => Duration::from_secs(3600),
        }
    }

    fn take(&mut self) -> Vec<Write> {
        self.oldest = None;
        let answers = std::mem::take(&mut self.answers).into_iter().map(Write::Answer);
        answers.chain(std::mem::take(&mut self.forms).into_iter().map(Write::Rendering)).collect()
    }
}

/// Reads answered in one read transaction, at most: the reads queued behind
/// the first are answered together, taking the database's shared lock once.
const READ_BATCH: usize = 256;

fn serve(mut conn: Connection, rx: Receiver<Msg>, path: &Path, warned: &AtomicBool) {
    let mut batch = Batch::default();
    let commit = |conn: &mut Connection, rows: Vec<Write>| {
        if !rows.is_empty() {
            if let Err(e) = write_rows(conn, &rows) {
                warn(warned, path, &e.to_string());
            }
        }
    };
    let mut queued: std::collections::VecDeque<Msg> = std::collections::VecDeque::new();
    loop {
        let msg = match queued.pop_front() {
            Some(m) => Ok(m),
            None => rx.recv_timeout(batch.patience(Instant::now())),
        };
        match msg {
            Ok(Msg::Get(key, prepare, reply)) => {
                let mut gets = vec![(key, prepare, reply)];
                while gets.len() < READ_BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Get(k, p, r)) => gets.push((k, p, r)),
                        Ok(other) => {
                            queued.push_back(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let in_transaction = gets.len() > 1 && conn.execute_batch("BEGIN").is_ok();
                let mut to_prepare = Vec::new();
                for (key, prepare, reply) in gets {
                    let settings = prepare.as_ref().map(|p| p.key);
                    let (answer, rendering) = match batch.answer(&key) {
                        Some(answer) => (Ok(Some(answer)), Kept::Later),
                        None => match read(&conn, &key, settings) {
                            Ok(Some(entry)) => entry.decode(settings),
                            Ok(None) => (Ok(None), Kept::Already),
                            Err(e) => (Err(e.to_string()), Kept::Already),
                        },
                    };
                    if let (Some(prepare), Ok(Some(Answer::Data(body)))) = (prepare, &answer) {
                        if rendering != Kept::Already {
                            to_prepare.push((prepare, body.clone(), rendering, key));
                        }
                    }
                    let _ = reply.send(answer);
                }
                if in_transaction {
                    let _ = conn.execute_batch("COMMIT");
                }
                // The answers went back first, so the asker need not wait
                // for this: it prepares what it needs first itself, while
                // this thread works from the other end of the batch.
                for (prepare, body, rendering, key) in to_prepare.into_iter().rev() {
                    (prepare.run)(&body);
                    if let (Kept::No { stored_ms, expires_ms }, Some(packed)) = (rendering, body.packed(prepare.key)) {
                        let r = Rendering { key, settings: prepare.key, packed, stored_ms, expires_ms };
                        batch.push(Write::Rendering(r), Instant::now());
                    }
                }
            }
            Ok(Msg::Put(row)) => batch.push(Write::Answer(row), Instant::now()),
            Ok(Msg::Flush(done)) => {
                commit(&mut conn, batch.take());
                let _ = done.send(());
            }
            #[cfg(test)]
            Ok(Msg::Exec(sql, done)) => {
                conn.execute(sql, []).unwrap();
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                commit(&mut conn, batch.take());
                return;
            }
        }
        if batch.is_due(Instant::now()) {
            commit(&mut conn, batch.take());
        }
    }
}

fn write_rows(conn: &mut Connection, writes: &[Write]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        // (A trigger drops the forms kept with an answer written again.)
        let mut answer = tx.prepare_cached(
            "INSERT OR REPLACE INTO lookups (key, body, stored_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut form = tx.prepare_cached(
            "INSERT OR REPLACE INTO renderings
                (key, settings, dict, expires_ms, text, text_len, rendering, rendering_len)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE EXISTS (SELECT 1 FROM lookups WHERE key = ?1 AND stored_ms = ?9)",
        )?;
        // Answers first, in the order they came (a later one for a key
        // wins); then the forms, sorted by key, so that each page of their
        // table is written once however they are spread over it.
        let mut forms: Vec<(&str, u64, std::borrow::Cow<'_, PackedBody>, i64, i64)> = Vec::new();
        for w in writes {
            match w {
                Write::Answer(r) => {
                    answer.execute(params![r.key, r.body.as_ref().map(Body::text), r.stored_ms, r.expires_ms])?;
                    if let (Some(body), Some(prepare)) = (&r.body, &r.prepare) {
                        // Rendered by now, as a rule (the stream wrote the
                        // answer out); rendered here otherwise.
                        let packed = body.packed(prepare.key).or_else(|| {
                            (prepare.run)(body);
                            body.packed(prepare.key)
                        });
                        if let Some(packed) = packed {
                            forms.push((
                                &r.key,
                                prepare.key,
                                std::borrow::Cow::Owned(packed),
                                r.stored_ms,
                                r.expires_ms,
                            ));
                        }
                    }
                }
                Write::Rendering(r) => {
                    forms.push((&r.key, r.settings, std::borrow::Cow::Borrowed(&r.packed), r.stored_ms, r.expires_ms))
                }
            }
        }
        forms.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        // Asked after the answers: rendering one here may have set them.
        if let Some(d) = Dictionaries::get() {
            let mut kept_any = false;
            for (key, settings, packed, stored_ms, expires_ms) in &forms {
                kept_any |= form.execute(params![
                    key,
                    *settings as i64,
                    d.id() as i64,
                    expires_ms,
                    packed.text,
                    packed.text_len as i64,
                    packed.rendering,
                    packed.rendering_len as i64,
                    stored_ms
                ])? > 0;
            }
            if kept_any {
                tx.prepare_cached("INSERT OR IGNORE INTO dictionaries (id, text, rendering) VALUES (1, ?1, ?2)")?
                    .execute(params![d.text(), d.rendering()])?;
            }
        }
    }
    tx.commit()
}

impl Row {
    fn answer(&self) -> Answer {
        match &self.body {
            Some(body) => Answer::Data(body.clone()),
            None => Answer::NotFound,
        }
    }
}

/// A stored entry, as read.
enum Entry {
    /// A stream's form of the answer, for the settings asked about.
    Packed(PackedBody),
    /// The answer's text (`None`: not found, Grey), and when it was stored
    /// and expires.
    Stored { body: Option<String>, stored_ms: i64, expires_ms: i64 },
}

/// Whether a stream's form of an answer read is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// It is (and the body is made from it), or none is asked for.
    Already,
    /// Not yet: the answer waits to be written, and its form is kept when
    /// it is, if one was asked for.
    Later,
    /// No: one made now is kept with the answer stored then.
    No { stored_ms: i64, expires_ms: i64 },
}

impl Entry {
    /// The entry's answer, made from the stream's form for `settings` when
    /// that was read.
    fn decode(self, settings: Option<u64>) -> (Result<Option<Answer>, String>, Kept) {
        match self {
            Entry::Packed(packed) => {
                let key = settings.expect("a form is read only for settings");
                (Ok(Some(Answer::Data(Body::from_packed(key, packed)))), Kept::Already)
            }
            Entry::Stored { body: None, .. } => (Ok(Some(Answer::NotFound)), Kept::Already),
            Entry::Stored { body: Some(text), stored_ms, expires_ms } => match Body::from_json(&text) {
                Some(body) => (Ok(Some(Answer::Data(body))), Kept::No { stored_ms, expires_ms }),
                None => (Err("an unreadable entry".to_owned()), Kept::Already),
            },
        }
    }
}

/// Whether a packed form's lengths could be true: LZ4 expands a byte at
/// most 255 times, and no answer is near 16 MiB. A form that is not (a
/// damaged file) is passed over for the answer's text.
fn plausible(p: &PackedBody) -> bool {
    let fits = |packed: &[u8], len: usize| len <= packed.len().saturating_mul(255) && len < 16 << 20;
    fits(&p.text, p.text_len) && fits(&p.rendering, p.rendering_len)
}

/// The fresh entry under `key`: the stream's form for `settings`, when one
/// is kept that this process can unpack, else the answer.
fn read(conn: &Connection, key: &str, settings: Option<u64>) -> rusqlite::Result<Option<Entry>> {
    let now = now_ms();
    if let (Some(settings), Some(d)) = (settings, Dictionaries::get()) {
        let packed = conn
            .prepare_cached(
                "SELECT text, text_len, rendering, rendering_len FROM renderings
                 WHERE key = ?1 AND settings = ?2 AND dict = ?3 AND expires_ms > ?4",
            )?
            .query_row(params![key, settings as i64, d.id() as i64, now], |r| {
                Ok(PackedBody {
                    text: r.get(0)?,
                    text_len: r.get::<_, i64>(1)?.try_into().unwrap_or(usize::MAX),
                    rendering: r.get(2)?,
                    rendering_len: r.get::<_, i64>(3)?.try_into().unwrap_or(usize::MAX),
                })
            })
            .optional()?;
        if let Some(packed) = packed.filter(plausible) {
            return Ok(Some(Entry::Packed(packed)));
        }
    }
    conn.prepare_cached("SELECT body, stored_ms, expires_ms FROM lookups WHERE key = ?1 AND expires_ms > ?2")?
        .query_row(params![key, now], |r| {
            Ok(Entry::Stored { body: r.get(0)?, stored_ms: r.get(1)?, expires_ms: r.get(2)? })
        })
        .optional()
}

impl SqliteStore {
    /// Queues a write; the worker thread writes the text (and the rendering).
    fn put_row(&self, key: &str, answer: &Answer, ttl: Duration, prepare: Option<Prepare>) {
        if ttl.is_zero() {
            return;
        }
        let stored_ms = now_ms();
        let body = match answer {
            Answer::Data(b) => Some(b.clone()),
            Answer::NotFound => None,
        };
        let expires_ms = stored_ms.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        self.send(Msg::Put(Row { key: key.to_owned(), body, stored_ms, expires_ms, prepare }));
    }

    /// A read on the worker thread, which decodes the entry and prepares it.
    async fn lookup(&self, key: &str, prepare: Option<Prepare>) -> Option<Answer> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(Msg::Get(key.to_owned(), prepare, tx)) {
            return None;
        }
        match rx.await.ok()? {
            Ok(answer) => answer,
            Err(e) => {
                warn(&self.warned, &self.path, &e.to_string());
                None
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Option<Answer> {
        self.lookup(key, None).await
    }

    async fn get_prepared(&self, key: &str, prepare: Prepare) -> Option<Answer> {
        self.lookup(key, Some(prepare)).await
    }

    fn put(&self, key: &str, answer: &Answer, ttl: Duration) {
        self.put_row(key, answer, ttl, None);
    }

    fn put_prepared(&self, key: &str, answer: &Answer, ttl: Duration, prepare: Prepare) {
        self.put_row(key, answer, ttl, Some(prepare));
    }

    async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.send(Msg::Flush(tx)) {
            let _ = rx.await;
        }
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }
}

impl Drop for SqliteStore {
    /// Closes the thread's channel and waits for it to commit what it holds.
    fn drop(&mut self) {
        self.worker = None;
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // The thread itself may drop the last handle (a prepare hook
            // held what held the store); it then ends once this returns.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: Duration = Duration::from_secs(86_400);

    fn data(v: serde_json::Value) -> Answer {
        Answer::Data(Body::from(v))
    }

    /// A stream's work on an answer, as the engine hands it to a store:
    /// renders `R{key}:{text}`, counting its runs.
    fn rendering_as(key: u64, runs: &Arc<std::sync::atomic::AtomicUsize>) -> Prepare {
        let runs = runs.clone();
        let run = move |body: &Body| {
            runs.fetch_add(1, Ordering::SeqCst);
            body.render_into(key, &mut Vec::new(), |b| format!("R{key}:{}", b.text()).into_bytes());
        };
        Prepare { key, run: Arc::new(run) }
    }

    /// The rendering an answer holds for `key`, if it holds one. (One made
    /// on reading is made after the answer is given: a flush waits for it.)
    fn came_with(answer: &Option<Answer>, key: u64) -> Option<String> {
        let Some(Answer::Data(body)) = answer else { panic!("no data: {answer:?}") };
        let mut out = Vec::new();
        let made = body.render_into(key, &mut out, |_| Vec::new());
        (!made).then(|| String::from_utf8(out).unwrap())
    }

    /// An answer long enough to set the packing's dictionaries.
    fn sizeable(zone: &str) -> Answer {
        data(json!({"Zone": zone, "IpGeneralInfo": {"Note": "a note long enough to be packed. ".repeat(8)}}))
    }

    async fn exec(c: &SqliteStore, sql: &'static str) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(c.send(Msg::Exec(sql, tx)));
        rx.await.unwrap();
    }

    #[tokio::test]
    async fn a_streams_form_of_an_answer_is_kept_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = SqliteStore::open(dir.path());
        let red = sizeable("Red");
        // Not rendered yet when written: the store's thread renders it.
        c.put_prepared("k", &red, DAY, rendering_as(7, &runs));
        c.flush().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // Another handle (as another process would) is given the answer
        // with its rendering, and renders nothing.
        let other = SqliteStore::open(dir.path());
        let read = other.get_prepared("k", rendering_as(7, &runs)).await;
        assert_eq!(read, Some(red.clone()));
        assert_eq!(came_with(&read, 7), Some(format!("R7:{}", text_of(&red))));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "a kept form is not rendered again");
        // Other settings: rendered on reading, then kept too.
        let read = other.get_prepared("k", rendering_as(8, &runs)).await;
        other.flush().await;
        assert_eq!(came_with(&read, 8), Some(format!("R8:{}", text_of(&red))));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let read = SqliteStore::open(dir.path()).get_prepared("k", rendering_as(8, &runs)).await;
        assert_eq!(came_with(&read, 8), Some(format!("R8:{}", text_of(&red))));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A plain read is the answer alone.
        assert_eq!(c.get("k").await, Some(red));
        // The dictionaries the forms were packed with are in the file.
        let d = Dictionaries::get().expect("set by the sizeable answer");
        let conn = Connection::open(dir.path().join(CACHE_FILE)).unwrap();
        let (text, rendering): (Vec<u8>, Vec<u8>) =
            conn.query_row("SELECT text, rendering FROM dictionaries", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((text.as_slice(), rendering.as_slice()), (d.text(), d.rendering()));
        assert!(!c.has_warned());
    }

    fn text_of(answer: &Answer) -> String {
        let Answer::Data(body) = answer else { panic!() };
        body.text()
    }

    #[tokio::test]
    async fn a_form_goes_when_its_answer_is_written_again_by_any_process() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = SqliteStore::open(dir.path());
        c.put_prepared("k", &sizeable("Red"), DAY, rendering_as(7, &runs));
        c.flush().await;
        // Written again by a build that knows nothing of forms.
        exec(
            &c,
            r#"INSERT OR REPLACE INTO lookups (key, body, stored_ms, expires_ms) VALUES ('k', '{"Zone":"Green"}', 1, 32503680000000)"#,
        )
        .await;
        let read = c.get_prepared("k", rendering_as(7, &runs)).await;
        c.flush().await;
        assert_eq!(came_with(&read, 7).as_deref(), Some(r#"R7:{"Zone":"Green"}"#));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // And by this build, without a form.
        let yellow = sizeable("Yellow");
        c.put("k", &yellow, DAY);
        c.flush().await;
        let other = SqliteStore::open(dir.path());
        let read = other.get_prepared("k", rendering_as(7, &runs)).await;
        other.flush().await;
        assert_eq!(came_with(&read, 7), Some(format!("R7:{}", text_of(&yellow))));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_form_that_cannot_be_used_is_passed_over_for_the_answer() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let red = sizeable("Red");
        for damage in [
            "UPDATE renderings SET text_len = 999999999",
            "UPDATE renderings SET rendering_len = -1",
            "UPDATE renderings SET dict = dict + 1",
            "UPDATE renderings SET expires_ms = 1",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let c = SqliteStore::open(dir.path());
            c.put_prepared("k", &red, DAY, rendering_as(7, &runs));
            c.flush().await;
            exec(&c, damage).await;
            let before = runs.load(Ordering::SeqCst);
            let read = c.get_prepared("k", rendering_as(7, &runs)).await;
            c.flush().await;
            assert_eq!(read, Some(red.clone()), "{damage}");
            assert_eq!(came_with(&read, 7), Some(format!("R7:{}", text_of(&red))), "{damage}");
            assert_eq!(runs.load(Ordering::SeqCst), before + 1, "rendered anew after {damage}");
            assert!(!c.has_warned(), "{damage}");
        }
    }

    #[tokio::test]
    async fn stores_and_reads_back_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteStore::open(dir.path());
        let red = data(json!({"Zone": "Red"}));
        assert_eq!(c.get("a").await, None);
        c.put("a", &red, DAY);
        c.put("b", &Answer::NotFound, DAY);
        c.flush().await;
        assert_eq!(c.get("a").await, Some(red.clone()));
        assert_eq!(c.get("b").await, Some(Answer::NotFound));
        // A second handle (another process) sees the same entries.
        let other = SqliteStore::open(dir.path());
        assert_eq!(other.get("a").await, Some(red));
        assert!(!c.has_warned());
    }

    #[tokio::test]
    async fn reads_see_answers_not_yet_committed() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteStore::open(dir.path());
        c.put("k", &data(json!({"Zone": "Red"})), DAY);
        assert_eq!(c.get("k").await, Some(data(json!({"Zone": "Red"}))));
    }

    #[tokio::test]
    async fn dropping_the_store_writes_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteStore::open(dir.path());
        c.put("k", &Answer::NotFound, DAY);
        drop(c);
        assert_eq!(SqliteStore::open(dir.path()).get("k").await, Some(Answer::NotFound));
    }

    #[tokio::test]
    async fn the_writer_commits_without_being_asked_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteStore::open(dir.path());
        c.put("k", &Answer::NotFound, DAY);
        let other = SqliteStore::open(dir.path());
        // Polls another connection; the writer's own interval decides when
        // the row appears, so this waits about a second, bounded at ten.
        let started = Instant::now();
        while other.get("k").await.is_none() {
            assert!(started.elapsed() < Duration::from_secs(10), "not written within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "committed before the interval: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_batch_is_due_when_full_or_old() {
        let t0 = Instant::now();
        let row =
            |k: &str| Write::Answer(Row { key: k.to_owned(), body: None, stored_ms: 0, expires_ms: 1, prepare: None });
        let mut b = Batch::default();
        assert!(!b.is_due(t0));
        assert_eq!(b.patience(t0), Duration::from_secs(3600));
        b.push(row("a"), t0);
        assert!(!b.is_due(t0 + Duration::from_millis(999)));
        assert_eq!(b.patience(t0 + Duration::from_millis(400)), Duration::from_millis(600));
        assert!(b.is_due(t0 + FLUSH_INTERVAL));
        assert_eq!(b.take().len(), 1);
        for i in 0..BATCH_ROWS {
            assert!(!b.is_due(t0), "{i}");
            b.push(row(&i.to_string()), t0);
        }
        assert!(b.is_due(t0));
        b.take();
        // Forms wait for many more of their own, or the interval.
        let form = |k: &str| {
            let packed = PackedBody { text: Vec::new(), text_len: 0, rendering: Vec::new(), rendering_len: 0 };
            Write::Rendering(Rendering { key: k.to_owned(), settings: 1, packed, stored_ms: 0, expires_ms: 1 })
        };
        for i in 0..BATCH_FORMS {
            assert!(!b.is_due(t0), "{i}");
            b.push(form(&i.to_string()), t0);
        }
        assert!(b.is_due(t0));
        b.take();
        b.push(form("a"), t0);
        assert!(b.is_due(t0 + FLUSH_INTERVAL));
    }

    #[test]
    fn several_writers_share_one_cache() {
        // DNIF runs lookups in parallel: four handles (as four processes
        // would) write at the same time; every answer lands.
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = dir.path().to_path_buf();
                s.spawn(move || {
                    let c = SqliteStore::open(&path);
                    for i in 0..300 {
                        c.put(&format!("{t}/{i}"), &data(json!({"n": i})), DAY);
                    }
                    assert!(!c.has_warned());
                });
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let c = SqliteStore::open(dir.path());
        rt.block_on(async {
            for t in 0..4 {
                for i in 0..300 {
                    assert_eq!(c.get(&format!("{t}/{i}")).await, Some(data(json!({"n": i}))), "{t}/{i}");
                }
            }
        });
        assert!(!c.has_warned());
    }

    #[test]
    fn opening_a_new_cache_from_many_processes_at_once_waits_for_the_lock() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let folder = dir.path().join("new");
            let warned: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8).map(|_| s.spawn(|| SqliteStore::open(&folder).has_warned())).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(warned.iter().all(|w| !w), "a handle gave up on a locked database: {warned:?}");
        }
    }

    #[tokio::test]
    async fn the_cache_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("cache");
        let _c = SqliteStore::open(&folder);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(CACHE_FILE)), 0o600);
    }

    #[tokio::test]
    async fn expired_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let c = SqliteStore::open(dir.path());
        c.put("k", &data(json!({"Zone": "Green"})), DAY);
        c.put("zero", &data(json!({"Zone": "Green"})), Duration::ZERO);
        c.flush().await;
        assert!(c.get("k").await.is_some());
        assert_eq!(c.get("zero").await, None, "a zero lifetime is not stored");
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(c.send(Msg::Exec("UPDATE lookups SET expires_ms = 1", tx)));
        rx.await.unwrap();
        assert_eq!(c.get("k").await, None);
    }

    #[tokio::test]
    async fn a_corrupt_or_unwritable_cache_is_bypassed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CACHE_FILE), b"this is not a database, just garbage bytes".repeat(100)).unwrap();
        let c = SqliteStore::open(dir.path());
        c.put("k", &Answer::NotFound, DAY);
        c.flush().await;
        assert_eq!(c.get("k").await, None);
        assert!(c.has_warned());
        // A folder that cannot be created (a file is in the way).
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let c = SqliteStore::open(&blocked.join("sub"));
        assert_eq!(c.get("k").await, None);
    }
}
