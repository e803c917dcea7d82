//! The last lines of a service, in memory, bounded by bytes.
//!
//! Lines are packed into fixed-size chunks; when the budget is exceeded
//! the oldest chunk goes as a whole. A line costs a copy into a chunk and
//! a small index entry, not an allocation of its own, and an idle service
//! costs nothing: chunks are allocated on first use.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::Stream;

const CHUNK: usize = 16 * 1024;
/// What a line costs in a chunk's index.
const ENTRY: usize = size_of::<Entry>();

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    time: SystemTime,
    stream: Stream,
    pid: u32,
    start: u32,
    len: u32,
}

#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
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
    chunks: VecDeque<Chunk>,
    max_chunks: usize,
    /// A chunk kept for reuse after eviction.
    spare: Option<Chunk>,
    /// Sequence number of the next line.
    next: u64,
}

impl Ring {
    /// A ring holding about `budget` bytes of text (at least one chunk).
    pub fn new(budget: usize) -> Self {
        Ring {
            chunks: VecDeque::new(),
            max_chunks: budget.div_ceil(CHUNK).max(1),
            spare: None,
            next: 1,
        }
    }

    /// Changes the budget; beyond it the oldest chunks go at once.
    pub fn set_budget(&mut self, budget: usize) {
        self.max_chunks = budget.div_ceil(CHUNK).max(1);
        while self.chunks.len() > self.max_chunks {
            self.chunks.pop_front();
        }
        if self.chunks.len() == self.max_chunks {
            self.spare = None;
        }
    }

    /// Stores a line (longer lines than a chunk are truncated to one chunk;
    /// the decoder never produces those); returns its sequence number.
    pub fn push(&mut self, time: SystemTime, stream: Stream, pid: u32, text: &[u8]) -> u64 {
        let seq = self.next;
        self.next += 1;
        let text = &text[..text.len().min(CHUNK)];
        // A chunk's budget covers its index too: for short lines the index
        // outweighs the text, and counting text alone let a ring of quiet
        // services grow to three times its budget.
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.bytes.len() + text.len() + (c.entries.len() + 1) * ENTRY <= CHUNK);
        if !fits {
            if self.chunks.len() == self.max_chunks {
                let mut old = self.chunks.pop_front().unwrap_or_default();
                old.bytes.clear();
                old.entries.clear();
                self.spare = Some(old);
            }
            // A new chunk grows as lines come: a service that says one
            // line costs a few bytes, not a whole chunk.
            let chunk = self.spare.take().unwrap_or_default();
            self.chunks.push_back(chunk);
        }
        let Some(chunk) = self.chunks.back_mut() else {
            return seq;
        };
        let start = chunk.bytes.len() as u32;
        chunk.bytes.extend_from_slice(text);
        chunk.entries.push(Entry {
            seq,
            time,
            stream,
            pid,
            start,
            len: text.len() as u32,
        });
        seq
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(|c| c.entries.is_empty())
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<RingLine<'_>> {
        let mut out = Vec::with_capacity(n.min(self.len()));
        'outer: for chunk in self.chunks.iter().rev() {
            for e in chunk.entries.iter().rev() {
                if out.len() == n {
                    break 'outer;
                }
                out.push(RingLine {
                    seq: e.seq,
                    time: e.time,
                    stream: e.stream,
                    pid: e.pid,
                    text: &chunk.bytes[e.start as usize..(e.start + e.len) as usize],
                });
            }
        }
        out.reverse();
        out
    }

    /// Heap bytes held.
    pub fn footprint(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.bytes.capacity() + c.entries.capacity() * size_of::<Entry>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_within_budget() {
        let mut r = Ring::new(2 * CHUNK);
        let t = SystemTime::UNIX_EPOCH;
        for i in 0..10_000 {
            r.push(t, Stream::Stdout, 1, format!("line {i:05}").as_bytes());
        }
        let tail = r.tail(3);
        let texts: Vec<&[u8]> = tail.iter().map(|l| l.text).collect();
        assert_eq!(texts, [&b"line 09997"[..], b"line 09998", b"line 09999"]);
        // Two chunks, each within its budget but for the slack of a
        // doubling vector.
        assert!(r.footprint() <= 2 * 2 * CHUNK, "{}", r.footprint());
        // Ten-byte lines cost fifty with their index entry.
        assert!(r.len() < 10_000 && r.len() > 500, "{}", r.len());
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
        let t = SystemTime::UNIX_EPOCH;
        for i in 0..20_000 {
            r.push(t, Stream::Stdout, 1, format!("line {i:05}").as_bytes());
        }
        let before = r.len();
        r.set_budget(CHUNK);
        assert!(r.len() < before / 4, "{} of {before} lines kept", r.len());
        assert!(r.footprint() <= 2 * CHUNK);
        assert_eq!(r.tail(1)[0].text, b"line 19999");
        // And it stays within the new budget as lines keep coming.
        for i in 0..20_000 {
            r.push(t, Stream::Stdout, 1, format!("more {i:05}").as_bytes());
        }
        assert!(r.footprint() <= 2 * CHUNK);
    }
}
