//! The last output of a service, in memory, bounded by bytes.
//!
//! Lines are kept as the log file gets them (`PREFIX TEXT\n`, see
//! [`super::file_prefix`]), so a line is formatted and copied once: a
//! large batch (a read of a busy service) is shared with the writer thread
//! rather than copied, and `tail` parses back only the lines it is asked
//! for. Small batches (a quiet service's line or two) are copied into an
//! open chunk, so that a line costs its bytes, not an allocation. When the
//! budget is exceeded the oldest pieces go first; the newest always stays.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::Stream;

/// Batches at least this large are shared, smaller ones copied.
const SHARE_AT: usize = 4 * 1024;
/// Size of an open chunk of copied lines.
const CHUNK: usize = 16 * 1024;

#[derive(Debug)]
enum Stored {
    Shared(Arc<Vec<u8>>),
    Copied(Vec<u8>),
}

#[derive(Debug)]
struct Piece {
    first_seq: u64,
    lines: u64,
    bytes: Stored,
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Stored::Shared(b) => b,
            Stored::Copied(b) => b,
        }
    }

    /// What the piece counts against the budget: a copied chunk counts
    /// as full from its first line (it fills up in place), so that the
    /// ring holds whole chunks' worth of lines and a fresh chunk never
    /// pushes out the only full one.
    fn cost(&self) -> usize {
        match &self.bytes {
            Stored::Shared(_) => self.capacity(),
            Stored::Copied(_) => CHUNK,
        }
    }

    fn capacity(&self) -> usize {
        match &self.bytes {
            Stored::Shared(b) => b.capacity(),
            Stored::Copied(b) => b.capacity(),
        }
    }
}

/// A line as stored: borrowed text and its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLine<'a> {
    pub seq: u64,
    pub time: SystemTime,
    pub stream: Stream,
    pub pid: u32,
    pub text: &'a [u8],
}

#[derive(Debug)]
pub struct Ring {
    pieces: VecDeque<Piece>,
    budget: usize,
    /// What the pieces count against the budget ([`Piece::cost`]).
    held: usize,
    /// A copied chunk kept for reuse after eviction.
    spare: Option<Vec<u8>>,
    /// Sequence number of the next line.
    next: u64,
}

impl Ring {
    /// A ring holding about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Ring {
            pieces: VecDeque::new(),
            budget,
            held: 0,
            spare: None,
            next: 1,
        }
    }

    /// Changes the budget; beyond it the oldest pieces go at once (shared
    /// buffers no one else holds are returned to `recycle`).
    pub fn set_budget(&mut self, budget: usize, recycle: &mut impl FnMut(Vec<u8>)) {
        self.budget = budget;
        self.spare = None;
        self.evict(recycle);
    }

    /// Numbers the next line; it must then be stored with [`Ring::store`]
    /// before the lock on the ring is given up.
    pub fn next_seq(&mut self) -> u64 {
        self.take_seqs(1)
    }

    /// Numbers the next `n` lines; returns the first one's number.
    pub fn take_seqs(&mut self, n: u64) -> u64 {
        let first = self.next;
        self.next += n;
        first
    }

    /// Keeps formatted lines numbered from `first_seq`: shared when large,
    /// copied when small. Buffers evicted to stay in budget that no one
    /// else holds go to `recycle`.
    pub fn store(
        &mut self,
        first_seq: u64,
        lines: u64,
        bytes: &Arc<Vec<u8>>,
        recycle: &mut impl FnMut(Vec<u8>),
    ) {
        if lines == 0 {
            return;
        }
        if bytes.len() >= SHARE_AT {
            self.push(Piece {
                first_seq,
                lines,
                bytes: Stored::Shared(bytes.clone()),
            });
        } else {
            self.copy(first_seq, lines, bytes);
        }
        self.evict(recycle);
    }

    fn copy(&mut self, first_seq: u64, lines: u64, bytes: &[u8]) {
        if let Some(last) = self.pieces.back_mut()
            && let Stored::Copied(chunk) = &mut last.bytes
            && last.first_seq + last.lines == first_seq
            && chunk.len() + bytes.len() <= CHUNK
        {
            grow_within_chunk(chunk, bytes.len());
            chunk.extend_from_slice(bytes);
            last.lines += lines;
            return;
        }
        // A new chunk grows as lines come: a service that says one line
        // costs a few bytes, not a whole chunk.
        let mut chunk = self.spare.take().unwrap_or_default();
        grow_within_chunk(&mut chunk, bytes.len());
        chunk.extend_from_slice(bytes);
        self.push(Piece {
            first_seq,
            lines,
            bytes: Stored::Copied(chunk),
        });
    }

    fn push(&mut self, piece: Piece) {
        self.held += piece.cost();
        self.pieces.push_back(piece);
    }

    fn evict(&mut self, recycle: &mut impl FnMut(Vec<u8>)) {
        while self.held > self.budget && self.pieces.len() > 1 {
            let Some(old) = self.pieces.pop_front() else {
                break;
            };
            self.held -= old.cost();
            match old.bytes {
                Stored::Shared(b) => {
                    // The writer may not have written it yet; then the
                    // buffer goes back from there.
                    if let Some(b) = Arc::into_inner(b) {
                        recycle(b);
                    }
                }
                Stored::Copied(mut b) if b.capacity() <= CHUNK * 2 => {
                    b.clear();
                    self.spare = Some(b);
                }
                Stored::Copied(_) => {}
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.lines as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<RingLine<'_>> {
        let mut out = Vec::with_capacity(n.min(self.len()));
        'outer: for piece in self.pieces.iter().rev() {
            let bytes = piece.bytes();
            // Every stored line ends with a newline; walk back from the end.
            let mut end = bytes.len();
            let mut seq = piece.first_seq + piece.lines;
            while end > 0 && out.len() < n {
                let start = memchr::memrchr(b'\n', &bytes[..end - 1]).map_or(0, |i| i + 1);
                seq -= 1;
                if let Some(line) = parse(seq, &bytes[start..end - 1]) {
                    out.push(line);
                }
                end = start;
            }
            if out.len() == n {
                break 'outer;
            }
        }
        out.reverse();
        out
    }

    /// Heap bytes held (shared buffers counted whole, though the writer
    /// may hold them too for a moment).
    pub fn footprint(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| size_of::<Piece>() + p.capacity())
            .sum()
    }
}

/// Makes room for `more` bytes, doubling as a vector does but never past
/// [`CHUNK`] (doubling from an odd first size would end at 1.5 chunks).
fn grow_within_chunk(chunk: &mut Vec<u8>, more: usize) {
    let need = chunk.len() + more;
    if need > chunk.capacity() {
        let want = (chunk.capacity() * 2).clamp(need, CHUNK.max(need));
        chunk.reserve_exact(want - chunk.len());
    }
}

/// Reads back a line written with [`super::file_prefix`].
fn parse(seq: u64, line: &[u8]) -> Option<RingLine<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let stamp = std::str::from_utf8(fields.next()?).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => Stream::Note,
    };
    let pid = std::str::from_utf8(fields.next()?)
        .ok()?
        .parse()
        .unwrap_or(0);
    Some(RingLine {
        seq,
        time: humantime::parse_rfc3339(stamp).ok()?,
        stream,
        pid,
        text: fields.next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::file_prefix;

    /// Formats lines as the pump does and stores them as one batch.
    fn store(r: &mut Ring, stream: Stream, pid: u32, texts: &[String]) {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_234_567);
        let prefix = file_prefix(time, stream, Some(pid));
        let mut bytes = Vec::new();
        let first = r.next;
        for t in texts {
            r.next_seq();
            bytes.extend_from_slice(prefix.as_bytes());
            bytes.extend_from_slice(t.as_bytes());
            bytes.push(b'\n');
        }
        r.store(first, texts.len() as u64, &Arc::new(bytes), &mut |_| {});
    }

    fn lines(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("line {i:05}")).collect()
    }

    #[test]
    fn keeps_the_newest_within_budget() {
        let mut r = Ring::new(2 * CHUNK);
        for i in 0..10_000 {
            store(&mut r, Stream::Stdout, 1, &lines(i, i + 1));
        }
        let tail = r.tail(3);
        let texts: Vec<&[u8]> = tail.iter().map(|l| l.text).collect();
        assert_eq!(texts, [&b"line 09997"[..], b"line 09998", b"line 09999"]);
        assert_eq!(tail[2].seq, 10_000);
        assert_eq!(tail[2].pid, 1);
        assert_eq!(tail[2].stream, Stream::Stdout);
        assert_eq!(
            tail[2].time,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_234_567)
        );
        assert!(r.footprint() <= 2 * CHUNK + 128, "{}", r.footprint());
        // A ten-byte line costs about fifty with its prefix.
        assert!(r.len() < 10_000 && r.len() > 400, "{}", r.len());
    }

    #[test]
    fn large_batches_are_shared_and_given_back_once_evicted() {
        let mut r = Ring::new(64 * 1024);
        let mut given_back = 0;
        let mut seq = 0;
        for round in 0..20 {
            let texts = lines(round * 1000, round * 1000 + 1000);
            let time = SystemTime::UNIX_EPOCH;
            let prefix = file_prefix(time, Stream::Stderr, Some(7));
            let mut bytes = Vec::with_capacity(64 * 1024);
            let first = r.next;
            for t in &texts {
                seq = r.next_seq();
                bytes.extend_from_slice(prefix.as_bytes());
                bytes.extend_from_slice(t.as_bytes());
                bytes.push(b'\n');
            }
            let shared = Arc::new(bytes);
            r.store(first, 1000, &shared, &mut |_| given_back += 1);
            // The writer is done with it.
            drop(shared);
        }
        assert!(given_back > 10, "{given_back} buffers came back");
        let tail = r.tail(2);
        assert_eq!(tail[1].text, b"line 19999");
        assert_eq!(tail[1].seq, seq);
        assert_eq!(tail[0].stream, Stream::Stderr);
        // A tail longer than what is kept gives what is kept, in order.
        let all = r.tail(usize::MAX);
        assert_eq!(all.len(), r.len());
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }

    #[test]
    fn notes_without_a_pid_read_back() {
        let mut r = Ring::new(CHUNK);
        let time = SystemTime::UNIX_EPOCH;
        let mut bytes = file_prefix(time, Stream::Note, None).into_bytes();
        bytes.extend_from_slice(b"exited with code 1 (a b c)\n");
        let seq = r.next_seq();
        r.store(seq, 1, &Arc::new(bytes), &mut |_| {});
        let tail = r.tail(5);
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].stream, Stream::Note);
        assert_eq!(tail[0].pid, 0);
        assert_eq!(tail[0].text, b"exited with code 1 (a b c)");
    }

    #[test]
    fn empty_ring_allocates_nothing() {
        let r = Ring::new(256 * 1024);
        assert_eq!(r.footprint(), 0);
        assert!(r.tail(10).is_empty());
    }

    #[test]
    fn a_smaller_budget_drops_the_oldest_and_keeps_the_newest() {
        let mut r = Ring::new(8 * CHUNK);
        for i in 0..20_000 {
            store(&mut r, Stream::Stdout, 1, &lines(i, i + 1));
        }
        let before = r.len();
        r.set_budget(CHUNK, &mut |_| {});
        assert!(r.len() < before / 4, "{} of {before} lines kept", r.len());
        assert!(r.footprint() <= 2 * CHUNK + 128);
        assert_eq!(r.tail(1)[0].text, b"line 19999");
        // And it stays within the new budget as lines keep coming.
        for i in 0..20_000 {
            store(&mut r, Stream::Stdout, 1, &[format!("more {i:05}")]);
        }
        assert!(r.footprint() <= 2 * CHUNK + 128);
    }
}
