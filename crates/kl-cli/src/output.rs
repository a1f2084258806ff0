//! Where a stream's output goes: an async writer, or standard output
//! written by a thread of its own.
//!
//! A stream gathers its output in large buffers. tokio's `Stdout` copies
//! each buffer into one of its own and writes it on the blocking pool, one
//! buffer at a time. [`ThreadSink`] instead hands the buffer itself to a
//! thread that owns the output, with a few buffers in flight, so building
//! the next lines and writing the last ones overlap, and no line's bytes
//! are copied once more on the way out. A stream writes about 1 KB of
//! fields onto each event, so with small events the output is tens of
//! times the input.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Takes a stream's output a buffer at a time.
pub trait Sink {
    /// Writes (or has written) what `buf` holds, and leaves `buf` empty
    /// (perhaps another buffer, with room).
    fn put(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Returns once everything put so far is written and flushed.
    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl<W: AsyncWrite + Unpin + Send> Sink for W {
    async fn put(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        self.write_all(buf).await?;
        buf.clear();
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        AsyncWriteExt::flush(self).await
    }
}

enum Job {
    Write(Vec<u8>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Buffers handed over and not yet written, at most: enough that the
/// stream rarely waits for the output, few enough to bound the memory.
const IN_FLIGHT: usize = 4;

/// An output written by a thread of its own (see the module's docs).
pub struct ThreadSink {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// Buffers the thread has written, back for reuse.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Why the thread stopped, once it has: the first error writing.
    failed: Arc<Mutex<Option<std::io::Error>>>,
    _thread: JoinHandle<()>,
}

impl std::fmt::Debug for ThreadSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSink").finish_non_exhaustive()
    }
}

impl ThreadSink {
    /// Standard output.
    pub fn stdout() -> std::io::Result<ThreadSink> {
        ThreadSink::new(std::io::stdout())
    }

    fn new(mut out: impl Write + Send + 'static) -> std::io::Result<ThreadSink> {
        let (jobs, mut rx) = tokio::sync::mpsc::channel::<Job>(IN_FLIGHT);
        let (spare_tx, spare) = std::sync::mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let failure = failed.clone();
        let thread = std::thread::Builder::new().name("kl-output".to_owned()).spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                let done = match job {
                    Job::Write(mut buf) => out.write_all(&buf).map(|()| {
                        buf.clear();
                        let _ = spare_tx.send(buf);
                    }),
                    Job::Flush(reply) => out.flush().map(|()| {
                        let _ = reply.send(());
                    }),
                };
                if let Err(e) = done {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    // Dropping the receiver tells the stream at its next
                    // hand-over.
                    return;
                }
            }
        })?;
        Ok(ThreadSink { jobs, spare, failed, _thread: thread })
    }

    /// The error that stopped the thread.
    fn failure(&self) -> std::io::Error {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match &*failed {
            Some(e) => std::io::Error::new(e.kind(), e.to_string()),
            None => std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the output's thread has stopped"),
        }
    }
}

impl Sink for ThreadSink {
    async fn put(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(buf.capacity()));
        let full = std::mem::replace(buf, next);
        self.jobs.send(Job::Write(full)).await.map_err(|_| self.failure())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.jobs.send(Job::Flush(reply)).await.map_err(|_| self.failure())?;
        done.await.map_err(|_| self.failure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records what it was given, and fails once it holds
    /// `limit` bytes.
    #[derive(Clone, Default)]
    struct Recorder {
        got: Arc<Mutex<Vec<u8>>>,
        limit: Option<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut got = self.got.lock().unwrap();
            if self.limit.is_some_and(|l| got.len() >= l) {
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone"));
            }
            got.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn buffers_are_written_in_order_and_flushed() {
        let rec = Recorder::default();
        let mut sink = ThreadSink::new(rec.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..100 {
            let mut buf = format!("line {i}\n").repeat(i + 1).into_bytes();
            expected.extend_from_slice(&buf);
            sink.put(&mut buf).await.unwrap();
            assert!(buf.is_empty(), "handed over");
        }
        sink.flush().await.unwrap();
        assert_eq!(*rec.got.lock().unwrap(), expected, "all written, in order, once flush returns");
    }

    #[tokio::test]
    async fn a_failed_write_is_the_error_of_a_later_call() {
        let rec = Recorder { limit: Some(10), ..Recorder::default() };
        let mut sink = ThreadSink::new(rec).unwrap();
        let mut result = Ok(());
        for _ in 0..20 {
            result = sink.put(&mut b"0123456789".to_vec()).await;
            if result.is_ok() {
                result = sink.flush().await;
            }
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }
}
