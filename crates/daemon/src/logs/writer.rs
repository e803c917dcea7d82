//! The log writer: one thread that owns every service's log file.
//!
//! Disk writes never run on the runtime's threads, so a slow or stalled
//! disk cannot delay supervision; the queue to this thread is bounded, so
//! a fast service is slowed (back-pressure) rather than buffered without
//! limit. Each queued batch is at most [`BATCH_BYTES`] plus one line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::Counters;
use super::file::LogFile;

/// Batches are cut at about this size by the pump.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Messages in flight: batches and notes (a shutdown queues a few notes
/// per service at once).
const QUEUE: usize = 64;
/// Full-size batches (a flooding service's) in flight, each holding a
/// buffer from the pool. A flood keeps them all in flight whenever the
/// writer thread is off the CPU (two cores, three busy threads), so each
/// one's buffer is needed again and again; 16 (1 MiB) kept one writer as
/// fast as the whole queue of 64 did.
const FULL_IN_FLIGHT: usize = 16;
/// Written batches' buffers kept for reuse: the full batches in flight
/// and the newest ones the services' rings share. Fewer, and a flood
/// frees and allocates buffers all the time; the allocator hands freed
/// memory back to the kernel, so each new buffer costs a page fault per
/// page (with 8 spares for a queue of 64 full batches: 9,000 to 15,000
/// faults per 1,000,000 lines, a third of the pump's time). Kept once a
/// flood has needed them: at most this many, about 70 KiB touched each.
const SPARE_BUFFERS: usize = FULL_IN_FLIGHT + 8;
/// Buffers at least this large come from the pool and count as full.
const POOLED: usize = BATCH_BYTES / 2;

/// Buffers of written batches, handed back to the pumps.
#[derive(Default)]
pub struct BufferPool {
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Full-size buffers allocated because none was spare.
    made: AtomicU64,
}

impl BufferPool {
    /// An empty buffer with room for at least `want` bytes.
    pub fn take(&self, want: usize) -> Vec<u8> {
        if want >= POOLED
            && let Some(mut buf) = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop()
        {
            buf.reserve(want);
            return buf;
        }
        if want >= POOLED {
            self.made.fetch_add(1, Ordering::Relaxed);
        }
        Vec::with_capacity(want)
    }

    /// Gives a buffer back (kept only if it is a full-size one).
    pub fn put(&self, mut buf: Vec<u8>) {
        // Only full-size buffers are worth keeping; small ones are cheap.
        if buf.capacity() < BATCH_BYTES {
            return;
        }
        buf.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }
}

/// Formatted lines of one service, ready to append. The bytes are shared
/// with the service's in-memory ring; whichever lets go last gives the
/// buffer back to the pool.
pub struct Batch {
    pub service: Arc<str>,
    pub bytes: Arc<Vec<u8>>,
    pub lines: u64,
    pub counters: Arc<Counters>,
}

enum Msg {
    /// With a permit when it holds a pool buffer; it is given back when
    /// the batch is written.
    Batch(Batch, Option<OwnedSemaphorePermit>),
    Limits {
        service: Arc<str>,
        max_size: u64,
        max_files: u32,
    },
    Close(Arc<str>),
    Flush(oneshot::Sender<()>),
}

/// Totals across services, for the orchestrator's metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped_lines: AtomicU64,
}

#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    /// The writer thread, unparked by a flush so it does not finish its
    /// linger first.
    thread: std::thread::Thread,
    pub stats: Arc<WriterStats>,
    pub pool: Arc<BufferPool>,
    full: Arc<Semaphore>,
}

struct Limits {
    max_size: u64,
    max_files: u32,
}

impl LogWriter {
    /// Starts the writer thread; files go to `dir/NAME.log`.
    pub fn start(dir: PathBuf, max_size: u64, max_files: u32) -> std::io::Result<LogWriter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let pool = Arc::new(BufferPool::default());
        let thread_pool = pool.clone();
        let handle = std::thread::Builder::new()
            .name("bh-logwriter".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                run(
                    rx,
                    dir,
                    Limits {
                        max_size,
                        max_files,
                    },
                    thread_stats,
                    &thread_pool,
                )
            })?;
        Ok(LogWriter {
            tx,
            thread: handle.thread().clone(),
            stats,
            pool,
            full: Arc::new(Semaphore::new(FULL_IN_FLIGHT)),
        })
    }

    /// Queues a batch, waiting while the queue (or, for a full-size one,
    /// the full batches' share of it) is full.
    pub async fn send(&self, batch: Batch) {
        let permit = if batch.bytes.capacity() >= POOLED {
            // Never closed.
            self.full.clone().acquire_owned().await.ok()
        } else {
            None
        };
        if let Err(mpsc::error::SendError(Msg::Batch(b, _))) =
            self.tx.send(Msg::Batch(batch, permit)).await
        {
            b.counters.dropped.fetch_add(b.lines, Ordering::Relaxed);
        }
    }

    pub async fn set_limits(&self, service: &str, max_size: u64, max_files: u32) {
        let _ = self
            .tx
            .send(Msg::Limits {
                service: service.into(),
                max_size,
                max_files,
            })
            .await;
    }

    /// Closes a service's file (the service was removed).
    pub async fn close(&self, service: &str) {
        let _ = self.tx.send(Msg::Close(service.into())).await;
    }

    /// Returns once everything queued before it is written, and the disk
    /// space reserved ahead of floods is given back (the shutdown's last
    /// step for the logs).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            self.thread.unpark();
            let _ = rx.await;
        }
    }
}

/// After a wake-up that found little to write, the writer waits this long
/// before looking again, so lines trickling in from many services are
/// written together: at most a few hundred wake-ups a second however many
/// lines arrive, instead of two context switches per line. Never while
/// idle (the wait follows work), and never under a flood: a wake-up that
/// finds much to write, or many messages (a burst of notes from many
/// services at once, such as a shutdown's "stopping", whose senders
/// would otherwise wait on a full queue for the whole linger), looks
/// again at once. A flush cuts it short: the last lines of a shutdown are
/// not kept waiting.
const LINGER: Duration = Duration::from_millis(2);
const LINGER_BELOW: usize = BATCH_BYTES / 2;
const LINGER_BELOW_MESSAGES: usize = QUEUE / 8;

/// Whether a wake-up that wrote `written` bytes from `messages` messages
/// found so little that the next one should wait for more.
fn should_linger(written: usize, messages: usize) -> bool {
    written > 0 && written < LINGER_BELOW && messages < LINGER_BELOW_MESSAGES
}

fn run(
    mut rx: mpsc::Receiver<Msg>,
    dir: PathBuf,
    defaults: Limits,
    stats: Arc<WriterStats>,
    pool: &BufferPool,
) {
    let mut w = Writer {
        dir,
        defaults,
        stats,
        files: HashMap::new(),
        limits: HashMap::new(),
        failing: HashMap::new(),
    };
    while let Some(msg) = rx.blocking_recv() {
        let mut written = w.handle(msg, pool);
        let mut messages = 1;
        while let Ok(msg) = rx.try_recv() {
            written += w.handle(msg, pool);
            messages += 1;
        }
        if should_linger(written, messages) {
            // May return early (a flush, or spuriously): that only means
            // a smaller gathering.
            std::thread::park_timeout(LINGER);
        }
    }
}

struct Writer {
    dir: PathBuf,
    defaults: Limits,
    stats: Arc<WriterStats>,
    files: HashMap<Arc<str>, LogFile>,
    limits: HashMap<Arc<str>, Limits>,
    /// Per service: when we last warned, and lines dropped since.
    failing: HashMap<Arc<str>, (Instant, u64)>,
}

impl Writer {
    /// Bytes written.
    fn handle(&mut self, msg: Msg, pool: &BufferPool) -> usize {
        let Writer {
            dir,
            defaults,
            stats,
            files,
            limits,
            failing,
        } = self;
        match msg {
            Msg::Batch(batch, permit) => {
                let result = match files.get_mut(&batch.service) {
                    Some(f) => f.write_lines(&batch.bytes),
                    None => {
                        let l = limits.get(&batch.service).unwrap_or(defaults);
                        let path = dir.join(format!("{}.log", batch.service));
                        LogFile::open(path, l.max_size, l.max_files).and_then(|mut f| {
                            let r = f.write_lines(&batch.bytes);
                            files.insert(batch.service.clone(), f);
                            r
                        })
                    }
                };
                match result {
                    Ok(()) => {
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        stats
                            .bytes
                            .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
                        if let Some((_, lost)) = failing.remove(&batch.service) {
                            tracing::warn!(
                                service = &*batch.service,
                                "log file is writable again; {lost} lines could not be written to it"
                            );
                        }
                    }
                    Err(e) => {
                        batch
                            .counters
                            .dropped
                            .fetch_add(batch.lines, Ordering::Relaxed);
                        stats
                            .dropped_lines
                            .fetch_add(batch.lines, Ordering::Relaxed);
                        let now = Instant::now();
                        let entry = failing
                            .entry(batch.service.clone())
                            .or_insert((now - Duration::from_secs(3600), 0));
                        entry.1 += batch.lines;
                        if now.duration_since(entry.0) >= Duration::from_secs(10) {
                            entry.0 = now;
                            tracing::error!(
                                service = &*batch.service,
                                "cannot write to {}: {e}; {} lines dropped from the file so far \
                                 (they are still in memory and in `logs -f`); free space or fix permissions",
                                dir.join(format!("{}.log", batch.service)).display(),
                                entry.1
                            );
                        }
                        // Reopen on the next batch (the file may be gone).
                        files.remove(&batch.service);
                    }
                }
                let n = batch.bytes.len();
                if let Some(bytes) = Arc::into_inner(batch.bytes) {
                    pool.put(bytes);
                }
                // After the buffer is back: the pump it wakes takes it.
                drop(permit);
                n
            }
            Msg::Limits {
                service,
                max_size,
                max_files,
            } => {
                if let Some(f) = files.get_mut(&service) {
                    f.set_limits(max_size, max_files);
                }
                limits.insert(
                    service,
                    Limits {
                        max_size,
                        max_files,
                    },
                );
                0
            }
            Msg::Close(service) => {
                files.remove(&service);
                limits.remove(&service);
                0
            }
            Msg::Flush(done) => {
                for f in files.values_mut() {
                    f.release();
                }
                let _ = done.send(());
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn a_lagging_disk_holds_no_more_full_batches_than_the_bound() {
        // The log file is a FIFO read slowly, so the writer thread falls
        // behind the sender and the queue would fill with full batches.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("flood.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::open(fifo).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            loop {
                match f.read(&mut buf).unwrap() {
                    0 => return total,
                    n => total += n,
                }
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        let w = LogWriter::start(dir.path().to_path_buf(), u64::MAX, 1).unwrap();
        let counters = Arc::new(Counters::default());
        let line = [b'x'; 1023];
        const BATCHES: usize = 200;
        for _ in 0..BATCHES {
            let mut b = w.pool.take(BATCH_BYTES + 1024);
            while b.len() < BATCH_BYTES {
                b.extend_from_slice(&line);
                b.push(b'\n');
            }
            w.send(Batch {
                service: "flood".into(),
                bytes: Arc::new(b),
                lines: (BATCH_BYTES / 1024) as u64,
                counters: counters.clone(),
            })
            .await;
        }
        w.flush().await;
        let made = w.pool.made.load(Ordering::Relaxed);
        let kept = w.pool.spare.lock().unwrap().len();
        drop(w); // the writer thread ends and closes the FIFO
        assert_eq!(reader.join().unwrap(), BATCHES * BATCH_BYTES);
        // The ones in flight, and the one being filled.
        assert!(
            made as usize <= FULL_IN_FLIGHT + 1,
            "{made} buffers allocated for {BATCHES} batches"
        );
        assert!(kept <= SPARE_BUFFERS);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
    }

    /// The shutdown's flush gives back the space reserved ahead of a
    /// flood, with the file still open.
    #[tokio::test]
    async fn a_flush_gives_back_the_space_reserved_for_a_flood() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::start(dir.path().to_path_buf(), u64::MAX, 1).unwrap();
        let counters = Arc::new(Counters::default());
        let mut b = w.pool.take(BATCH_BYTES + 1024);
        while b.len() < BATCH_BYTES {
            b.extend_from_slice(&[b'x'; 99]);
            b.push(b'\n');
        }
        let len = b.len() as u64;
        w.send(Batch {
            service: "flood".into(),
            bytes: Arc::new(b),
            lines: len / 100,
            counters,
        })
        .await;
        w.flush().await;
        let meta = std::fs::metadata(dir.path().join("flood.log")).unwrap();
        assert_eq!(meta.len(), len);
        // Whether or not this file system took the reservation, nothing
        // beyond the data (rounded up to blocks) is left allocated.
        assert!(
            meta.blocks() * 512 < len + 64 * 1024,
            "{} bytes allocated for {len}",
            meta.blocks() * 512
        );
    }

    #[test]
    fn lingers_only_after_a_trickle() {
        // A line or two: wait for more.
        assert!(should_linger(120, 1));
        assert!(should_linger(LINGER_BELOW - 1, LINGER_BELOW_MESSAGES - 1));
        // Nothing written (a flush, new limits): nothing to gather.
        assert!(!should_linger(0, 1));
        // A flood: look again at once.
        assert!(!should_linger(LINGER_BELOW, 1));
        // A burst of small notes from many services (a shutdown's
        // "stopping"): their senders may be waiting on a full queue.
        assert!(!should_linger(
            48 * LINGER_BELOW_MESSAGES,
            LINGER_BELOW_MESSAGES
        ));
    }
}
