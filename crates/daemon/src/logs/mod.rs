//! Service output: every line a service writes is timestamped, kept in a
//! bounded in-memory ring (for `logs -n`), streamed to followers
//! (`logs -f`), appended to the service's log file by the writer thread,
//! and, when configured, echoed in the orchestrator's own log as an event
//! with `service`, `stream` and `pid` fields.
//!
//! Flow control is back-pressure, never silent loss: the pipe of a service
//! is read only as fast as its lines can be handed to the writer, whose
//! queue is bounded; a service that outruns the disk blocks in `write(2)`
//! on a full pipe, as it would writing to a terminal. Lines the disk
//! refuses (full, read-only) are counted as dropped from the file and
//! reported; they stay in the ring and the live stream.

mod decoder;
mod file;
mod newlines;
mod pump;
mod ring;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

pub use decoder::{LineDecoder, LineSink, MAX_LINE};
pub use file::LogFile;
pub use pump::pump;
pub use ring::Ring;
pub use writer::{LogWriter, WriterStats};

/// Says that notes were kept out of the files, at most every 10 s (a stop
/// of many behind a hung disk keeps out two notes per service).
fn warn_note_kept_out(service: &str) {
    static LAST: Mutex<Option<(std::time::Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    match &mut *last {
        Some((at, quiet)) if now.duration_since(*at) < std::time::Duration::from_secs(10) => {
            *quiet += 1;
        }
        _ => {
            let more = last.map_or(0, |(_, quiet)| quiet);
            tracing::warn!(
                service,
                "the log writer took no line for {}s: a note was kept out of the file (it is in `blackhole logs`); {more} more since the last warning",
                NOTE_WAIT.as_secs()
            );
            *last = Some((now, 0));
        }
    }
}

/// How long a note waits for room in the log writer's queue. The service's
/// actor can do nothing else meanwhile (a stop timer cannot fire), and a
/// writer that takes no line for this long is stuck on its disk: the note
/// stays in the ring and the live stream, and counts as dropped from the
/// file.
const NOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// The orchestrator's own notes about the service (started, exited).
    Note,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Note => "blackhole",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A line for live followers.
#[derive(Clone, Debug)]
pub struct Record {
    /// Increases by one per line of this service (across runs).
    pub seq: u64,
    pub time: SystemTime,
    pub stream: Stream,
    pub pid: u32,
    pub text: String,
}

/// Per-service counters (exported as metrics).
#[derive(Debug, Default)]
pub struct Counters {
    pub lines: [AtomicU64; 3],
    pub bytes: [AtomicU64; 3],
    /// Lines the log file did not get (disk full, unwritable).
    pub dropped: AtomicU64,
}

/// Waits for a line matching a pattern (the `log` readiness check).
pub struct LogWatch {
    regex: regex::Regex,
    fired: AtomicBool,
    line: Mutex<Option<String>>,
    wake: tokio::sync::Notify,
}

impl LogWatch {
    pub fn new(pattern: &str) -> Result<LogWatch, regex::Error> {
        Ok(LogWatch {
            regex: regex::Regex::new(pattern)?,
            fired: AtomicBool::new(false),
            line: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn check(&self, line: &str) {
        if !self.fired.load(Ordering::Relaxed) && self.regex.is_match(line) {
            self.fired.store(true, Ordering::Relaxed);
            *self.line.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.to_string());
            self.wake.notify_one();
        }
    }

    /// The first matching line, once there is one.
    pub async fn matched(&self) -> String {
        loop {
            if let Some(line) = self.line.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                return line;
            }
            self.wake.notified().await;
        }
    }
}

/// Capacity of the follower channel; a slower follower is told how many
/// lines it missed.
const FOLLOW_CAPACITY: usize = 1024;

/// Everything that receives one service's output. Shared by the pump of
/// each run, the actor (notes) and the API (tail, follow).
pub struct ServiceLog {
    name: Arc<str>,
    ring: Mutex<Ring>,
    /// Created when the first follower comes: its buffer is sized for a
    /// burst, and most services never have a follower.
    followers: std::sync::OnceLock<broadcast::Sender<Arc<Record>>>,
    writer: LogWriter,
    echo: AtomicBool,
    watch: Mutex<Option<Arc<LogWatch>>>,
    pub counters: Arc<Counters>,
}

impl ServiceLog {
    /// `memory`: bytes of the latest output kept for `tail`.
    pub fn new(name: &str, writer: LogWriter, echo: bool, memory: usize) -> Arc<ServiceLog> {
        let counters = Arc::new(Counters::default());
        Arc::new(ServiceLog {
            name: name.into(),
            ring: Mutex::new(Ring::new(memory)),
            followers: std::sync::OnceLock::new(),
            writer,
            echo: AtomicBool::new(echo),
            watch: Mutex::new(None),
            counters,
        })
    }

    /// Checks every line against `watch` until it matches.
    pub fn set_watch(&self, watch: Option<Arc<LogWatch>>) {
        *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = watch;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn has_followers(&self) -> bool {
        self.followers.get().is_some_and(|f| f.receiver_count() > 0)
    }

    pub fn set_echo(&self, echo: bool) {
        self.echo.store(echo, Ordering::Relaxed);
    }

    /// Changes how much output is kept in memory (oldest lines go first).
    pub fn set_memory(&self, bytes: usize) {
        let pool = &self.writer.pool;
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_budget(bytes, &mut |b| pool.put(b));
    }

    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }

    /// Starts a batch of lines from one read of `stream`. Lines pushed
    /// into it go to the ring, followers and echo at once; the file part
    /// comes out of [`LineBatch::finish`] to be queued to the writer.
    pub fn batch(&self, stream: Stream, pid: u32, hint: usize) -> LineBatch<'_> {
        let time = SystemTime::now();
        LineBatch {
            hint,
            log: self,
            ring: self.ring.lock().unwrap_or_else(|e| e.into_inner()),
            time,
            stream,
            pid,
            prefix: file_prefix(time, stream, Some(pid)),
            echo: self.echo.load(Ordering::Relaxed) && echo_enabled(stream),
            follow: self.has_followers(),
            watch: self.watch.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            out: Vec::new(),
            first_seq: 0,
            full: Vec::new(),
            lines: 0,
            bytes: 0,
        }
    }

    /// The lines of one read of a service's pipe, into the ring and to
    /// followers; the file batches to queue come back. `decoder` carries
    /// an unfinished line from one read to the next.
    pub fn take_read(
        &self,
        stream: Stream,
        pid: u32,
        decoder: &mut LineDecoder,
        read: &[u8],
    ) -> Vec<writer::Batch> {
        let batch = self.batch(stream, pid, read.len());
        let text = std::str::from_utf8(read).ok();
        let verbatim = text.is_some() && batch.is_plain();
        let mut sink = ReadSink {
            batch,
            read,
            text,
            verbatim,
        };
        decoder.feed_into(read, &mut sink);
        sink.batch.finish()
    }

    /// The orchestrator's note about the service, into the same places.
    pub async fn note(&self, pid: Option<u32>, text: &str) {
        if let Some(pending) = self.note_now(pid, text) {
            self.note_wait(pending).await;
        }
    }

    /// [`ServiceLog::note`] without waiting: into the ring and to
    /// followers now, and to the writer if its queue has room; otherwise
    /// the note is handed back for [`ServiceLog::note_wait`].
    fn note_now(&self, pid: Option<u32>, text: &str) -> Option<PendingNote> {
        let time = SystemTime::now();
        let mut out = file_prefix(time, Stream::Note, pid).into_bytes();
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
        let out = Arc::new(out);
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            let seq = ring.next_seq();
            let pool = &self.writer.pool;
            ring.store(seq, 1, &out, &mut |b| pool.put(b));
            if let Some(followers) = self.followers.get().filter(|f| f.receiver_count() > 0) {
                let _ = followers.send(Arc::new(Record {
                    seq,
                    time,
                    stream: Stream::Note,
                    pid: pid.unwrap_or(0),
                    text: text.to_string(),
                }));
            }
        }
        self.counters.lines[Stream::Note.index()].fetch_add(1, Ordering::Relaxed);
        let batch = writer::Batch {
            service: self.name.clone(),
            bytes: out,
            lines: 1,
            counters: self.counters.clone(),
        };
        self.writer.try_send(batch).err().map(PendingNote)
    }

    /// Queues a note that found the writer's queue full, waiting for room
    /// for at most [`NOTE_WAIT`].
    async fn note_wait(&self, note: PendingNote) {
        if tokio::time::timeout(NOTE_WAIT, self.writer.send(note.0))
            .await
            .is_err()
        {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.writer
                .stats
                .dropped_lines
                .fetch_add(1, Ordering::Relaxed);
            warn_note_kept_out(&self.name);
        }
    }

    /// The last `n` lines in memory, oldest first.
    pub fn tail(&self, n: usize) -> Vec<Record> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.tail(n)
            .into_iter()
            .map(|l| Record {
                seq: l.seq,
                time: l.time,
                stream: l.stream,
                pid: l.pid,
                text: String::from_utf8_lossy(l.text).into_owned(),
            })
            .collect()
    }

    /// Lines as they arrive.
    pub fn follow(&self) -> broadcast::Receiver<Arc<Record>> {
        self.followers
            .get_or_init(|| broadcast::channel(FOLLOW_CAPACITY).0)
            .subscribe()
    }
}

/// A note in the ring that waits for room in the writer's queue.
struct PendingNote(writer::Batch);

/// One read's lines on their way into a [`LineBatch`].
struct ReadSink<'r, 'l> {
    batch: LineBatch<'l>,
    read: &'r [u8],
    /// The read, when it is valid UTF-8 as a whole.
    text: Option<&'r str>,
    /// The read is valid text and the batch plain: lines read whole go
    /// into the file batch as they are.
    verbatim: bool,
}

impl LineSink for ReadSink<'_, '_> {
    fn run(&mut self, run: &[u8], max: usize) -> usize {
        if self.verbatim {
            self.batch.push_run(run, max)
        } else {
            let (read, text, batch) = (self.read, self.text, &mut self.batch);
            decoder::each_verbatim(run, max, &mut |line| push_line(batch, read, text, line))
        }
    }

    fn line(&mut self, line: &[u8]) {
        push_line(&mut self.batch, self.read, self.text, line);
    }
}

/// One line of `read` the general way: as text without a second check
/// when the read is valid as a whole and the line is a slice of it.
fn push_line(batch: &mut LineBatch<'_>, read: &[u8], text: Option<&str>, line: &[u8]) {
    match within(text, read, line) {
        Some(line) => batch.push_str(line),
        None => batch.push(line),
    }
}

/// Lines of one read, being distributed. Holds the ring's lock: push
/// synchronously, then finish.
pub struct LineBatch<'a> {
    log: &'a ServiceLog,
    ring: std::sync::MutexGuard<'a, Ring>,
    time: SystemTime,
    stream: Stream,
    pid: u32,
    prefix: String,
    echo: bool,
    follow: bool,
    watch: Option<Arc<LogWatch>>,
    /// Bytes read for this batch, to size its buffer.
    hint: usize,
    out: Vec<u8>,
    /// Sequence number of the first line in `out`.
    first_seq: u64,
    /// Batches cut at the size limit, in order.
    full: Vec<writer::Batch>,
    lines: u64,
    bytes: u64,
}

impl LineBatch<'_> {
    pub fn push(&mut self, raw: &[u8]) {
        // `from_utf8` checks ASCII a word at a time; the lossy decoder walks
        // every byte, which made it the pump's largest cost.
        let text = match std::str::from_utf8(raw) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        };
        self.push_text(text, raw.len());
    }

    /// A line known to be valid UTF-8 (a slice of a read that was checked
    /// as a whole: one check per read instead of one per line).
    pub fn push_str(&mut self, text: &str) {
        self.push_text(std::borrow::Cow::Borrowed(text), text.len());
    }

    /// Whether lines go only to the ring and the file (no echo, no
    /// watch, no follower): then [`LineBatch::push_run`] may be used.
    pub fn is_plain(&self) -> bool {
        !self.echo && !self.follow && self.watch.is_none()
    }

    /// Whole lines with their newlines, of a read that is valid UTF-8 as
    /// a whole (so each line is valid text), into a plain batch: those at
    /// the start that are verbatim are copied as they are, after the
    /// prefix. Returns the bytes taken; the caller pushes the next line
    /// the general way.
    pub fn push_run(&mut self, run: &[u8], max: usize) -> usize {
        debug_assert!(self.is_plain() && run.ends_with(b"\n"));
        let mut taken = 0;
        while taken < run.len() {
            if self.out.capacity() == 0 {
                self.take_buffer();
            }
            let (took, lines) = decoder::copy_verbatim(
                &run[taken..],
                max,
                self.prefix.as_bytes(),
                &mut self.out,
                writer::BATCH_BYTES,
            );
            let first = self.ring.take_seqs(lines);
            #[cfg(test)]
            tests::RUN_LINES.with(|n| n.set(n.get() + lines));
            if self.lines == 0 {
                self.first_seq = first;
            }
            self.lines += lines;
            self.bytes += took as u64;
            taken += took;
            if self.out.len() < writer::BATCH_BYTES {
                // Stopped at a line that is not verbatim, or at the end.
                break;
            }
            self.cut();
        }
        taken
    }

    /// Numbers the next line; the first one of a batch gets its buffer.
    #[inline]
    fn begin_line(&mut self) -> u64 {
        let seq = self.ring.next_seq();
        if self.lines == 0 {
            self.first_seq = seq;
        }
        if self.out.capacity() == 0 {
            self.take_buffer();
        }
        seq
    }

    #[cold]
    fn take_buffer(&mut self) {
        // Room for what was read plus the prefixes, not a whole batch: a
        // line of a quiet service should not cost 64 KiB. A full batch
        // ends with at most one line past the limit, whose invalid bytes
        // may each grow to three (U+FFFD).
        self.out = self
            .log
            .writer
            .pool
            .take((self.hint * 2 + 256).min(writer::BATCH_BYTES + 3 * MAX_LINE + 256));
    }

    fn push_text(&mut self, text: std::borrow::Cow<'_, str>, raw_len: usize) {
        let seq = self.begin_line();
        self.out.extend_from_slice(self.prefix.as_bytes());
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(b'\n');
        self.lines += 1;
        self.bytes += raw_len as u64 + 1;
        if self.echo {
            echo_line(&self.log.name, self.stream, self.pid, &text);
        }
        if let Some(w) = &self.watch {
            w.check(&text);
        }
        if self.follow
            && let Some(f) = self.log.followers.get()
        {
            let _ = f.send(Arc::new(Record {
                seq,
                time: self.time,
                stream: self.stream,
                pid: self.pid,
                text: text.into_owned(),
            }));
        }
        if self.out.len() >= writer::BATCH_BYTES {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.lines == 0 {
            return;
        }
        let i = self.stream.index();
        let counters = &self.log.counters;
        counters.lines[i].fetch_add(self.lines, Ordering::Relaxed);
        counters.bytes[i].fetch_add(self.bytes, Ordering::Relaxed);
        let bytes = Arc::new(std::mem::take(&mut self.out));
        let pool = &self.log.writer.pool;
        self.ring
            .store(self.first_seq, self.lines, &bytes, &mut |b| pool.put(b));
        self.full.push(writer::Batch {
            service: self.log.name.clone(),
            bytes,
            lines: self.lines,
            counters: counters.clone(),
        });
        self.lines = 0;
        self.bytes = 0;
    }

    /// Releases the ring and returns the file batches to queue, in order.
    pub fn finish(mut self) -> Vec<writer::Batch> {
        self.cut();
        std::mem::take(&mut self.full)
    }
}

/// `2026-11-29T03:32:54.123456Z stdout 1234 ` (pid `-` when none).
pub fn file_prefix(time: SystemTime, stream: Stream, pid: Option<u32>) -> String {
    let stamp = humantime::format_rfc3339_micros(time);
    match pid {
        Some(pid) if pid > 0 => format!("{stamp} {} {pid} ", stream.as_str()),
        _ => format!("{stamp} {} - ", stream.as_str()),
    }
}

/// The tracing target of service lines, for filters like
/// `log_level = "info,service=warn"`.
pub const ECHO_TARGET: &str = "service";

fn echo_enabled(stream: Stream) -> bool {
    match stream {
        Stream::Stderr => tracing::enabled!(target: "service", tracing::Level::WARN),
        _ => tracing::enabled!(target: "service", tracing::Level::INFO),
    }
}

fn echo_line(service: &str, stream: Stream, pid: u32, text: &str) {
    match stream {
        Stream::Stderr => {
            tracing::warn!(target: "service", service, stream = stream.as_str(), pid, "{text}")
        }
        _ => tracing::info!(target: "service", service, stream = stream.as_str(), pid, "{text}"),
    }
}

/// `line` as text, when it is a slice of `read` (not assembled from an
/// earlier read's tail) and `read` is valid UTF-8 as a whole (`text`): a
/// slice of valid text between character boundaries is valid text. A
/// line cut at the length limit may end or begin inside a character; it
/// is then not at a boundary, and checked on its own.
fn within<'a>(text: Option<&'a str>, read: &[u8], line: &[u8]) -> Option<&'a str> {
    let text = text?;
    let start = (line.as_ptr() as usize).checked_sub(read.as_ptr() as usize)?;
    text.get(start..start.checked_add(line.len())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Lines copied by [`LineBatch::push_run`] on this thread.
        pub static RUN_LINES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// The file's lines of `batches`, without their prefixes (checked).
    fn file_texts(batches: &[writer::Batch]) -> Vec<String> {
        let file: Vec<u8> = batches
            .iter()
            .flat_map(|b| b.bytes.iter().copied())
            .collect();
        String::from_utf8(file)
            .unwrap()
            .split_terminator('\n')
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let (_time, stream, pid) = (parts.next(), parts.next(), parts.next());
                assert_eq!((stream, pid), (Some("stdout"), Some("4242")), "{l}");
                parts.next().unwrap_or("").to_string()
            })
            .collect()
    }

    /// A flood across batches, with the lines the fast path must leave
    /// to the general one among them (the first of them just after a
    /// batch was cut): what reaches the file batches and the ring is,
    /// line by line, what the decoder alone gives, and what the general
    /// path alone gives.
    #[test]
    fn reads_reach_the_file_and_the_ring_line_by_line_whatever_path_each_line_takes() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let writer =
            LogWriter::start(dir.path().to_path_buf(), 1 << 30, 1).expect("the log writer");
        let flood = |from: usize, n: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for i in from..from + n {
                let mut line = format!("line {i} ").into_bytes();
                line.resize(99, b'x');
                line.push(b'\n');
                out.extend_from_slice(&line);
            }
            out
        };
        // 469 lines of 140 bytes with their prefixes are the first to
        // reach the batch limit: the CRLF line opens the second batch.
        const { assert!(468 * 140 < writer::BATCH_BYTES && 469 * 140 >= writer::BATCH_BYTES) };
        let reads: Vec<Vec<u8>> = vec![
            [
                flood(0, 469),
                b"crlf\r\n".to_vec(),
                flood(469, 251),
                b"cut-".to_vec(),
            ]
            .concat(),
            [
                b"off\n".to_vec(),
                vec![b'y'; MAX_LINE + 10],
                b"\n\n".to_vec(),
                flood(720, 10),
            ]
            .concat(),
            flood(730, 800),
            // Not valid UTF-8 as a whole: every line on its own, the bad
            // ones made valid.
            [b"caf\xe9 au lait\n\xff\xfe\n".to_vec(), flood(1530, 5)].concat(),
        ];
        let mut want = Vec::new();
        let mut reference = LineDecoder::default();
        for read in &reads {
            reference.feed(read, &mut |l| {
                want.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        assert!(want.iter().any(|l| l == "caf\u{fffd} au lait"));

        // Plain: the fast path, for the 1530 flood lines and the empty
        // one. With a follower: the general one for every line.
        let plain = ServiceLog::new("plain", writer.clone(), false, 4 << 20);
        let followed = ServiceLog::new("followed", writer, false, 4 << 20);
        let _follower = followed.follow();
        for (log, runs) in [(&plain, 1531), (&followed, 0)] {
            RUN_LINES.with(|n| n.set(0));
            let mut decoder = LineDecoder::default();
            let mut batches = Vec::new();
            for read in &reads {
                batches.extend(log.take_read(Stream::Stdout, 4242, &mut decoder, read));
            }
            assert_eq!(RUN_LINES.with(|n| n.get()), runs, "{}", log.name());
            for b in &batches {
                assert!(
                    b.bytes.len() <= writer::BATCH_BYTES + MAX_LINE + 64,
                    "{}",
                    b.bytes.len()
                );
            }
            assert_eq!(file_texts(&batches), want, "{}", log.name());
            assert_eq!(
                batches.iter().map(|b| b.lines).sum::<u64>(),
                want.len() as u64
            );
            let counted = log.counters.lines[Stream::Stdout.index()].load(Ordering::Relaxed);
            assert_eq!(counted, want.len() as u64);

            let tail = log.tail(want.len() + 10);
            let texts: Vec<&str> = tail.iter().map(|r| r.text.as_str()).collect();
            assert_eq!(texts, want, "{}", log.name());
            for pair in tail.windows(2) {
                assert_eq!(pair[1].seq, pair[0].seq + 1);
            }
        }
    }

    #[test]
    fn only_slices_of_a_valid_read_at_character_boundaries_skip_the_check() {
        let read = "ab\u{e9}c\n".as_bytes(); // 'é' is two bytes, at 2..4
        let text = std::str::from_utf8(read).ok();
        assert_eq!(within(text, read, &read[0..5]), Some("ab\u{e9}c"));
        // Cut inside 'é': not a boundary, so no shortcut.
        assert_eq!(within(text, read, &read[0..3]), None);
        assert_eq!(within(text, read, &read[3..5]), None);
        // Not part of the read (an earlier read's tail joined to it).
        let other = b"ab".to_vec();
        assert_eq!(within(text, read, &other), None);
        // The read is not valid text as a whole: every line is checked.
        let bad: Vec<u8> = [b"ok\n".as_slice(), &[0xff], b"\n"].concat();
        assert_eq!(
            within(std::str::from_utf8(&bad).ok(), &bad, &bad[0..2]),
            None
        );
    }
}
