//! The log writer: one thread that owns every service's log file.
//!
//! Disk writes never run on the runtime's threads, so a slow or stalled
//! disk cannot delay supervision; the queue to this thread is bounded, so
//! a fast service is slowed (back-pressure) rather than buffered without
//! limit. Each queued batch is at most [`BATCH_BYTES`] plus one line.
//! The batches a wake-up finds for one file are written together, up to
//! an aligned size while a flood goes on (see `file.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// writer thread is off the CPU, and each batch written then wakes one
/// waiting pump: with 16 (1 MiB), 20 services flooding at once put the
/// runtime thread to sleep 4,000 to 15,000 times in 1.6 to 2.2 s, and the
/// machine stood idle a fifth to a third of the time. 48 halved those
/// sleeps and cut the run to 1.3 to 1.5 s (32 and 64 did no better); one
/// writer runs as fast as with 16. Releasing the permits in bulk instead (once per
/// wake-up of the writer) was slower still: the two threads took turns
/// instead of overlapping.
const FULL_IN_FLIGHT: usize = 48;
/// Spare buffers kept once the logs are quiet (a flood keeps more, see
/// [`BufferPool`]): 112 KiB each, about 70 KiB of it touched. The first
/// reads of a flood after a quiet spell allocate the rest again.
const SPARE_BUFFERS: usize = 8;
/// Buffers at least this large come from the pool and count as full.
const POOLED: usize = BATCH_BYTES / 2;
/// After a flood, the spares beyond [`SPARE_BUFFERS`] are let go once no
/// full-size buffer has been taken or given back for this long (a trickle
/// of small batches and notes does not hold them).
const QUIET: Duration = Duration::from_secs(1);

/// Buffers of written batches, handed back to the pumps.
///
/// A flood from many services at once has many more buffers out than
/// [`SPARE_BUFFERS`]: every service's ring holds its newest batches, and
/// each pump holds the batches it cut from one read until the queue takes
/// them. That number swings by more than a fixed number of spares, and
/// with 24 spares 20 flooding services allocated 4,837 buffers (80,000
/// page faults) for 20,000,000 lines instead of 110. So during a flood
/// the pool keeps every buffer up to the most it has had out at once,
/// and gives the excess back once the writer finds the logs quiet.
#[derive(Default)]
pub struct BufferPool {
    state: std::sync::Mutex<PoolState>,
    /// Full-size buffers allocated because none was spare.
    made: AtomicU64,
}

struct PoolState {
    spare: Vec<Vec<u8>>,
    /// Full-size buffers taken and not given back: in rings, in the
    /// queue, being filled. An estimate, and a harmless one: a buffer
    /// dropped without being given back (a removed service's ring) raises
    /// it and `peak` alike; a small buffer that grew to full size before
    /// it was given back lowers it, by at most one per such buffer, until
    /// it is 0.
    lent: usize,
    /// The most buffers lent at once since the logs were last quiet
    /// (counted from the first take after that).
    peak: usize,
    /// When a full-size buffer was last taken or given back.
    busy: Instant,
}

impl Default for PoolState {
    fn default() -> Self {
        PoolState {
            spare: Vec::new(),
            lent: 0,
            peak: 0,
            busy: Instant::now(),
        }
    }
}

impl BufferPool {
    /// An empty buffer with room for at least `want` bytes.
    pub fn take(&self, want: usize) -> Vec<u8> {
        if want < POOLED {
            return Vec::with_capacity(want);
        }
        let spare = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.lent += 1;
            s.peak = s.peak.max(s.lent);
            s.busy = Instant::now();
            s.spare.pop()
        };
        match spare {
            Some(mut buf) => {
                buf.reserve(want);
                buf
            }
            None => {
                self.made.fetch_add(1, Ordering::Relaxed);
                // Full size whatever was asked, so that it is counted back
                // in when it is given back.
                Vec::with_capacity(want.max(BATCH_BYTES))
            }
        }
    }

    /// Gives a buffer back (kept only if it is a full-size one and the
    /// pool does not hold more than a flood has needed).
    pub fn put(&self, mut buf: Vec<u8>) {
        // Only full-size buffers are worth keeping; small ones are cheap.
        if buf.capacity() < BATCH_BYTES {
            return;
        }
        buf.clear();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.lent = s.lent.saturating_sub(1);
        s.busy = Instant::now();
        if s.spare.len() < SPARE_BUFFERS.max(s.peak.saturating_sub(s.lent)) {
            s.spare.push(buf);
            return;
        }
        drop(s);
        drop(buf); // freed outside the lock
    }

    /// When the spares beyond what [`BufferPool::trim`] keeps are due to
    /// go: `quiet` after full-size buffers last moved. `None`: no excess.
    fn trim_due(&self, quiet: Duration) -> Option<Instant> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.spare.len() > SPARE_BUFFERS).then(|| s.busy + quiet)
    }

    /// The logs are quiet: keeps [`SPARE_BUFFERS`] spares and forgets the
    /// last flood's peak.
    fn trim(&self) {
        let extra = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Until the next take: buffers given back meanwhile (a
            // service's ring shrunk) are not a flood's.
            s.peak = 0;
            let keep = s.spare.len().min(SPARE_BUFFERS);
            s.spare.split_off(keep)
        };
        drop(extra); // freed outside the lock
    }

    #[cfg(test)]
    fn spares(&self) -> usize {
        self.state.lock().unwrap().spare.len()
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
    /// The writer thread is waiting for work with a flood's spares to let
    /// go at [`QUIET`]; it is not in the channel's own wait, so a sender
    /// must wake it.
    idle: Arc<AtomicBool>,
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
        LogWriter::start_with(dir, max_size, max_files, QUIET)
    }

    /// [`LogWriter::start`], letting a flood's spares go after `quiet`.
    fn start_with(
        dir: PathBuf,
        max_size: u64,
        max_files: u32,
        quiet: Duration,
    ) -> std::io::Result<LogWriter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let pool = Arc::new(BufferPool::default());
        let thread_pool = pool.clone();
        let idle = Arc::new(AtomicBool::new(false));
        let thread_idle = idle.clone();
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
                    &thread_idle,
                    quiet,
                )
            })?;
        Ok(LogWriter {
            tx,
            thread: handle.thread().clone(),
            idle,
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
            self.queue(Msg::Batch(batch, permit)).await
        {
            b.counters.dropped.fetch_add(b.lines, Ordering::Relaxed);
        }
    }

    /// Queues a small batch (a note) if the queue has room; hands it back
    /// if not (or if the writer is gone, for [`LogWriter::send`] to count).
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        if batch.bytes.capacity() >= POOLED {
            return Err(batch);
        }
        match self.tx.try_reserve() {
            Ok(slot) => {
                slot.send(Msg::Batch(batch, None));
                self.wake();
                Ok(())
            }
            Err(_) => Err(batch),
        }
    }

    /// Room left in the queue (for tests that fill it).
    #[cfg(test)]
    pub(crate) fn queue_room(&self) -> usize {
        self.tx.capacity()
    }

    async fn queue(&self, msg: Msg) -> Result<(), mpsc::error::SendError<Msg>> {
        self.tx.send(msg).await?;
        self.wake();
        Ok(())
    }

    /// After a message was queued: wakes the writer if it waits outside
    /// the channel's own wait.
    fn wake(&self) {
        // Pairs with the fence in `next_message`: either the writer sees
        // the message before it parks, or this sees it idle.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.idle.load(Ordering::Relaxed) {
            self.thread.unpark();
        }
    }

    pub async fn set_limits(&self, service: &str, max_size: u64, max_files: u32) {
        let _ = self
            .queue(Msg::Limits {
                service: service.into(),
                max_size,
                max_files,
            })
            .await;
    }

    /// Closes a service's file (the service was removed).
    pub async fn close(&self, service: &str) {
        let _ = self.queue(Msg::Close(service.into())).await;
    }

    /// Returns once everything queued before it is written, and the disk
    /// space reserved ahead of floods is given back (the shutdown's last
    /// step for the logs).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.queue(Msg::Flush(tx)).await.is_ok() {
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

/// A file's batches are written together once this much has gathered,
/// or the queue is empty.
const GATHER_BYTES: usize = 16 * BATCH_BYTES;
/// The part of a flood's last batch past the last [`ALIGN`](super::file::ALIGN) boundary
/// waits at most this long for the next batch (which, in a flood, comes
/// within tens of microseconds) before it is written as it is.
const HOLD: Duration = Duration::from_millis(1);

fn run(
    mut rx: mpsc::Receiver<Msg>,
    dir: PathBuf,
    defaults: Limits,
    stats: Arc<WriterStats>,
    pool: &BufferPool,
    idle: &AtomicBool,
    quiet: Duration,
) {
    let mut w = Writer {
        dir,
        defaults,
        stats,
        files: HashMap::new(),
        limits: HashMap::new(),
        failing: HashMap::new(),
        gathered: HashMap::new(),
    };
    while let Some(wake) = next_message(&mut rx, pool, idle, quiet, w.held_until()) {
        let mut written = 0;
        let mut messages = 0;
        match wake {
            Wake::Message(msg) => {
                written += w.handle(msg, pool);
                messages += 1;
            }
            Wake::HoldOver => written += w.write_every_file(pool, false),
        }
        while let Ok(msg) = rx.try_recv() {
            written += w.handle(msg, pool);
            messages += 1;
        }
        written += w.write_every_file(pool, true);
        // Not while a part is held: the flood's next batch must find the
        // writer waiting where a sender wakes it.
        if should_linger(written, messages) && w.held_until().is_none() {
            // May return early (a flush, or spuriously): that only means
            // a smaller gathering.
            std::thread::park_timeout(LINGER);
        }
    }
    w.write_every_file(pool, false);
}

enum Wake {
    Message(Msg),
    /// A held part is due to be written.
    HoldOver,
}

/// The next message, waiting as long as it takes (`None`: every sender is
/// gone), or until `held` (a part held back, see [`HOLD`]). While the
/// pool holds more spares than it keeps for good, the wait is cut when
/// they are due to go (see [`QUIET`]): one wake-up after a flood, none
/// while idle.
fn next_message(
    rx: &mut mpsc::Receiver<Msg>,
    pool: &BufferPool,
    idle: &AtomicBool,
    quiet: Duration,
    held: Option<Instant>,
) -> Option<Wake> {
    loop {
        let trim = pool.trim_due(quiet);
        let Some(due) = trim.into_iter().chain(held).min() else {
            return rx.blocking_recv().map(Wake::Message);
        };
        let now = Instant::now();
        if now >= due {
            if held.is_some_and(|h| h <= now) {
                return Some(Wake::HoldOver);
            }
            pool.trim();
            continue;
        }
        idle.store(true, Ordering::Relaxed);
        // Pairs with the fence in `LogWriter::queue`.
        std::sync::atomic::fence(Ordering::SeqCst);
        let msg = match rx.try_recv() {
            Ok(msg) => Some(Some(Wake::Message(msg))),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::error::TryRecvError::Empty) => {
                // Woken by a sender, or spuriously: look again (the
                // buffers may have moved meanwhile, putting it off).
                std::thread::park_timeout(due - now);
                None
            }
        };
        idle.store(false, Ordering::Relaxed);
        if let Some(msg) = msg {
            return msg;
        }
    }
}

/// Batches of one file not written yet, oldest first.
#[derive(Default)]
struct Gathered {
    parts: std::collections::VecDeque<Part>,
    /// Bytes not written yet, across the parts.
    bytes: usize,
    /// Since when the first part has waited for more (see [`HOLD`]).
    held_since: Option<Instant>,
}

struct Part {
    batch: Batch,
    permit: Option<OwnedSemaphorePermit>,
    /// Bytes of it already written.
    done: usize,
}

struct Writer {
    dir: PathBuf,
    defaults: Limits,
    stats: Arc<WriterStats>,
    files: HashMap<Arc<str>, LogFile>,
    limits: HashMap<Arc<str>, Limits>,
    /// Per service: when we last warned, and lines dropped since.
    failing: HashMap<Arc<str>, (Instant, u64)>,
    gathered: HashMap<Arc<str>, Gathered>,
}

impl Writer {
    /// Takes a message; returns the bytes written.
    fn handle(&mut self, msg: Msg, pool: &BufferPool) -> usize {
        match msg {
            Msg::Batch(batch, permit) => {
                let service = batch.service.clone();
                let g = self.gathered.entry(service.clone()).or_default();
                g.bytes += batch.bytes.len();
                g.parts.push_back(Part {
                    batch,
                    permit,
                    done: 0,
                });
                if g.bytes >= GATHER_BYTES {
                    self.write(&service, pool, true)
                } else {
                    0
                }
            }
            Msg::Limits {
                service,
                max_size,
                max_files,
            } => {
                let written = self.write(&service, pool, false);
                if let Some(f) = self.files.get_mut(&service) {
                    f.set_limits(max_size, max_files);
                }
                self.limits.insert(
                    service,
                    Limits {
                        max_size,
                        max_files,
                    },
                );
                written
            }
            Msg::Close(service) => {
                let written = self.write(&service, pool, false);
                self.files.remove(&service);
                self.limits.remove(&service);
                self.gathered.remove(&service);
                written
            }
            Msg::Flush(done) => {
                let written = self.write_every_file(pool, false);
                for f in self.files.values_mut() {
                    f.release();
                }
                let _ = done.send(());
                written
            }
        }
    }

    /// When the longest-held part is due to be written.
    fn held_until(&self) -> Option<Instant> {
        self.gathered
            .values()
            .filter_map(|g| g.held_since)
            .min()
            .map(|t| t + HOLD)
    }

    /// Writes every file's gathered batches (see [`Writer::write`]).
    fn write_every_file(&mut self, pool: &BufferPool, hold: bool) -> usize {
        let services: Vec<Arc<str>> = self
            .gathered
            .iter()
            .filter(|(_, g)| g.bytes > 0)
            .map(|(s, _)| s.clone())
            .collect();
        services.iter().map(|s| self.write(s, pool, hold)).sum()
    }

    /// Writes a service's gathered batches. With `hold`, when the newest
    /// is a flood's (a full batch), the part past the file's last
    /// [`ALIGN`](super::file::ALIGN) boundary waits for the next, for at most [`HOLD`].
    /// Returns the bytes written.
    fn write(&mut self, service: &Arc<str>, pool: &BufferPool, hold: bool) -> usize {
        let Writer {
            dir,
            defaults,
            stats,
            files,
            limits,
            failing,
            gathered,
        } = self;
        let Some(g) = gathered.get_mut(service).filter(|g| g.bytes > 0) else {
            return 0;
        };
        let more = hold
            && g.parts
                .back()
                .is_some_and(|p| p.batch.bytes.capacity() >= POOLED)
            && g.held_since.is_none_or(|t| t.elapsed() < HOLD);
        let parts: Vec<&[u8]> = g.parts.iter().map(|p| &p.batch.bytes[p.done..]).collect();
        let file = match files.entry(service.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let l = limits.get(service).unwrap_or(defaults);
                let path = dir.join(format!("{service}.log"));
                LogFile::open(path, l.max_size, l.max_files).map(|f| e.insert(f))
            }
        };
        let (written, error) = match file {
            Ok(f) => {
                let before = f.appended();
                match f.write_gathered(&parts, more) {
                    Ok(n) => (n, None),
                    // What landed before the error is in the file: only
                    // the rest counts as dropped.
                    Err(e) => ((f.appended() - before) as usize, Some(e)),
                }
            }
            Err(e) => (0, Some(e)),
        };
        drop(parts);
        let written = written.min(g.bytes);
        g.bytes -= written;
        stats.bytes.fetch_add(written as u64, Ordering::Relaxed);
        let mut left_to_count = written;
        while let Some(part) = g.parts.front_mut() {
            let left = part.batch.bytes.len() - part.done;
            if left_to_count < left {
                part.done += left_to_count;
                break;
            }
            left_to_count -= left;
            let part = g.parts.pop_front().expect("a part");
            stats.batches.fetch_add(1, Ordering::Relaxed);
            give_back(part, pool);
        }
        if let Some(e) = error {
            // A part cut by the error counts as dropped whole.
            let lines: u64 = g.parts.iter().map(|p| p.batch.lines).sum();
            for part in g.parts.drain(..) {
                part.batch
                    .counters
                    .dropped
                    .fetch_add(part.batch.lines, Ordering::Relaxed);
                give_back(part, pool);
            }
            g.bytes = 0;
            g.held_since = None;
            stats.dropped_lines.fetch_add(lines, Ordering::Relaxed);
            let now = Instant::now();
            let entry = failing
                .entry(service.clone())
                .or_insert((now - Duration::from_secs(3600), 0));
            entry.1 += lines;
            if now.duration_since(entry.0) >= Duration::from_secs(10) {
                entry.0 = now;
                tracing::error!(
                    service = &**service,
                    "cannot write to {}: {e}; {} lines dropped from the file so far \
                     (they are still in memory and in `logs -f`); free space or fix permissions",
                    dir.join(format!("{service}.log")).display(),
                    entry.1
                );
            }
            // Reopen on the next batch (the file may be gone).
            files.remove(service);
            return written;
        }
        if g.bytes == 0 {
            g.held_since = None;
        } else {
            // What is left is younger than a write that went past it: the
            // newest bytes, short of the next boundary.
            if written > 0 || g.held_since.is_none() {
                g.held_since = Some(Instant::now());
            }
            // Held for a moment only: its buffer no longer needs to count
            // against the pumps' share of the queue.
            for part in &mut g.parts {
                part.permit = None;
            }
        }
        if written > 0
            && let Some((_, lost)) = failing.remove(service)
        {
            tracing::warn!(
                service = &**service,
                "log file is writable again; {lost} lines could not be written to it"
            );
        }
        written
    }
}

/// A written batch's buffer back to the pool, then its permit: the pump
/// the permit wakes takes the buffer.
fn give_back(part: Part, pool: &BufferPool) {
    if let Some(bytes) = Arc::into_inner(part.batch.bytes) {
        pool.put(bytes);
    }
    drop(part.permit);
}

#[cfg(test)]
mod tests {
    use super::super::file;
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
        let kept = w.pool.spares();
        drop(w); // the writer thread ends and closes the FIFO
        assert_eq!(reader.join().unwrap(), BATCHES * BATCH_BYTES);
        // The ones in flight, and the one being filled; all kept until the
        // logs are quiet.
        assert!(
            made as usize <= FULL_IN_FLIGHT + 1,
            "{made} buffers allocated for {BATCHES} batches"
        );
        assert_eq!(kept, made as usize);
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

    fn full_buffer(pool: &BufferPool) -> Vec<u8> {
        let mut b = pool.take(BATCH_BYTES + 1024);
        b.resize(BATCH_BYTES, b'x');
        b
    }

    #[test]
    fn a_flood_reuses_every_buffer_it_had_out_at_once() {
        let pool = BufferPool::default();
        // Many more out at once than the fixed spares, all given back,
        // three times over (every ring's newest batches, then the pumps'
        // cut batches, written).
        const OUT: usize = 5 * SPARE_BUFFERS;
        for _ in 0..3 {
            let out: Vec<_> = (0..OUT).map(|_| full_buffer(&pool)).collect();
            for b in out {
                pool.put(b);
            }
        }
        assert_eq!(pool.made.load(Ordering::Relaxed), OUT as u64);
        assert_eq!(pool.spares(), OUT);
        // Some held for good (rings), the rest cycling: still none new.
        let held: Vec<_> = (0..OUT / 2).map(|_| full_buffer(&pool)).collect();
        for _ in 0..3 {
            let out: Vec<_> = (0..OUT / 2).map(|_| full_buffer(&pool)).collect();
            for b in out {
                pool.put(b);
            }
        }
        assert_eq!(pool.made.load(Ordering::Relaxed), OUT as u64);
        // Quiet: back to the fixed spares, and the old peak is forgotten
        // (a buffer given back beyond them is freed).
        pool.trim();
        assert_eq!(pool.spares(), SPARE_BUFFERS);
        for b in held {
            pool.put(b);
        }
        assert_eq!(pool.spares(), SPARE_BUFFERS);
        // Small buffers are never kept.
        pool.put(Vec::with_capacity(100));
        assert_eq!(pool.spares(), SPARE_BUFFERS);
    }

    /// Many services' batches cut at once, then written: the pool ends up
    /// holding `out` spares.
    async fn flood(w: &LogWriter, out: usize) -> Arc<Counters> {
        let counters = Arc::new(Counters::default());
        let cut: Vec<_> = (0..out).map(|_| full_buffer(&w.pool)).collect();
        for b in cut {
            w.send(line_batch(b, &counters)).await;
        }
        w.flush().await;
        assert_eq!(w.pool.spares(), out);
        counters
    }

    fn line_batch(bytes: Vec<u8>, counters: &Arc<Counters>) -> Batch {
        Batch {
            service: "flood".into(),
            bytes: Arc::new(bytes),
            lines: 1,
            counters: counters.clone(),
        }
    }

    #[tokio::test]
    async fn a_line_wakes_a_writer_that_holds_a_floods_spares() {
        let dir = tempfile::tempdir().unwrap();
        // Quiet comes late: the spares stay for the whole test.
        let quiet = Duration::from_secs(60);
        let w = LogWriter::start_with(dir.path().to_path_buf(), u64::MAX, 1, quiet).unwrap();
        const OUT: usize = 3 * SPARE_BUFFERS;
        let counters = flood(&w, OUT).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !w.idle.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "the writer never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Time to go from the flag to the park: the line must wake it,
        // not find it still looking (this only makes the test sharper).
        std::thread::sleep(Duration::from_millis(50));
        w.send(line_batch(b"one more\n".to_vec(), &counters)).await;
        let file = dir.path().join("flood.log");
        let flood = (OUT * BATCH_BYTES) as u64;
        // Without the wake-up it would be written after `quiet`.
        let deadline = Instant::now() + quiet / 3;
        while std::fs::metadata(&file).unwrap().len() == flood {
            assert!(Instant::now() < deadline, "the line was not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(std::fs::metadata(&file).unwrap().len(), flood + 9);
        assert_eq!(w.pool.spares(), OUT);
    }

    #[tokio::test]
    async fn a_floods_spares_go_once_no_full_buffer_has_moved_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        // Long enough that the flood's end cannot pass for quiet on a
        // loaded machine before its spares are counted.
        let quiet = Duration::from_secs(1);
        let w = LogWriter::start_with(dir.path().to_path_buf(), u64::MAX, 1, quiet).unwrap();
        let counters = flood(&w, 3 * SPARE_BUFFERS).await;
        // A trickle of short lines (a heartbeat) does not hold them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sent = 0u64;
        while w.pool.spares() > SPARE_BUFFERS {
            assert!(Instant::now() < deadline, "{} spares kept", w.pool.spares());
            w.send(line_batch(b"tick\n".to_vec(), &counters)).await;
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(w.pool.spares(), SPARE_BUFFERS);
        w.flush().await;
        let len = std::fs::metadata(dir.path().join("flood.log"))
            .unwrap()
            .len();
        assert_eq!(len, (3 * SPARE_BUFFERS * BATCH_BYTES) as u64 + 5 * sent);
    }

    /// A flood's batches end inside an aligned block: that part is held
    /// for the next batch, and written anyway when none comes, with no
    /// flush.
    #[tokio::test]
    async fn the_end_of_a_flood_lands_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::start(dir.path().to_path_buf(), u64::MAX, 1).unwrap();
        let counters = Arc::new(Counters::default());
        let mut want = Vec::new();
        for n in 0..5 {
            let mut b = w.pool.take(BATCH_BYTES + 1024);
            while b.len() < BATCH_BYTES {
                b.extend_from_slice(format!("batch {n} line {:05}\n", b.len()).as_bytes());
            }
            want.extend_from_slice(&b);
            w.send(line_batch(b, &counters)).await;
        }
        assert_ne!(want.len() as u64 % file::ALIGN, 0);
        let file = dir.path().join("flood.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).map_or(0, |m| m.len()) < want.len() as u64 {
            assert!(Instant::now() < deadline, "the flood's end was not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(std::fs::read(&file).unwrap(), want);
        assert_eq!(w.stats.batches.load(Ordering::Relaxed), 5);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
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
