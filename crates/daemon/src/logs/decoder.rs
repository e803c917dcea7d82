//! Splits a byte stream into lines.
//!
//! Unlike a codec that returns owned lines, this hands out borrowed slices
//! of the read buffer, so a line costs no allocation unless it straddles
//! two reads. A line longer than the maximum is cut into pieces (at a
//! UTF-8 character boundary when there is one nearby), never buffered
//! without bound; the unterminated tail is flushed at end of file.

use super::newlines::newlines;

/// Lines longer than this are split.
pub const MAX_LINE: usize = 16 * 1024;

/// Where [`LineDecoder::feed_into`] hands the lines it finds.
pub trait LineSink {
    /// Whole lines as they were fed, each with its newline. The sink
    /// takes the verbatim lines at the start ([`is_verbatim`]), as many
    /// as it likes, and returns how many bytes it took; the decoder hands
    /// the next line, and those after it up to the next verbatim one, to
    /// [`LineSink::line`], then the rest back here. Taking none is always
    /// correct, but then each verbatim line is searched for twice:
    /// [`each_verbatim`] and [`copy_verbatim`] take them in one pass.
    fn run(&mut self, run: &[u8], max: usize) -> usize;

    /// Any other complete line, without its line ending: one cut at the
    /// maximum, joined from two feeds, ended by `\r\n`, or not taken
    /// from a run.
    fn line(&mut self, line: &[u8]);
}

/// A closure as a sink, each line on its own.
struct EachLine<F>(F);

impl<F: FnMut(&[u8])> LineSink for EachLine<F> {
    fn run(&mut self, run: &[u8], max: usize) -> usize {
        each_verbatim(run, max, &mut self.0)
    }

    fn line(&mut self, line: &[u8]) {
        (self.0)(line)
    }
}

/// Whether the line of `run` from `start` to the newline at `nl` may be
/// handed out as it is: at most `max` bytes before the newline and not
/// ended by `\r\n`.
#[inline]
pub fn is_verbatim(run: &[u8], start: usize, nl: usize, max: usize) -> bool {
    nl - start <= max && (nl == start || run[nl - 1] != b'\r')
}

/// Calls `line` with each verbatim line at the start of `run` (without
/// its newline); returns the bytes taken.
pub fn each_verbatim(run: &[u8], max: usize, line: &mut impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    for nl in newlines(run) {
        if !is_verbatim(run, start, nl, max) {
            break;
        }
        line(&run[start..nl]);
        start = nl + 1;
    }
    start
}

/// Copies the verbatim lines at the start of `run` into `out`, each
/// with its newline and after `prefix`. Stops after the line that brings
/// `out` to `limit` bytes or more. Returns the bytes of `run` taken and
/// the lines copied.
///
/// The flood path: a newline search, two copies and a size check per
/// line. Counting and numbering are settled once per call: with a
/// callback, a number and a count per line as well, a 256 KiB read took
/// 54 µs instead of 48 (`log_batch/pump_read`).
pub fn copy_verbatim(
    run: &[u8],
    max: usize,
    prefix: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> (usize, u64) {
    let mut start = 0;
    let mut lines = 0;
    for nl in newlines(run) {
        if !is_verbatim(run, start, nl, max) {
            break;
        }
        out.extend_from_slice(prefix);
        out.extend_from_slice(&run[start..=nl]);
        lines += 1;
        start = nl + 1;
        if out.len() >= limit {
            break;
        }
    }
    (start, lines)
}

#[derive(Debug)]
pub struct LineDecoder {
    max: usize,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(MAX_LINE)
    }
}

impl LineDecoder {
    pub fn new(max: usize) -> Self {
        assert!(max >= 4, "a line must hold at least one character");
        LineDecoder {
            max,
            partial: Vec::new(),
        }
    }

    /// Feeds bytes; calls `emit` for every complete line (without its
    /// newline, and without a trailing `\r`).
    pub fn feed(&mut self, data: &[u8], emit: &mut impl FnMut(&[u8])) {
        self.feed_into(data, &mut EachLine(emit));
    }

    /// [`LineDecoder::feed`], with the lines read whole handed to the
    /// sink in runs, so that it can copy them in bulk.
    pub fn feed_into(&mut self, mut data: &[u8], sink: &mut impl LineSink) {
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    // The line ending goes before any cut, as for a line
                    // read in one piece.
                    let mut body = &data[..nl];
                    if let Some(stripped) = body.strip_suffix(b"\r") {
                        body = stripped;
                    } else if body.is_empty() && self.partial.last() == Some(&b'\r') {
                        self.partial.pop();
                    }
                    self.pend(body, &mut |l| sink.line(l));
                    let line = std::mem::take(&mut self.partial);
                    sink.line(&line);
                    self.partial = line;
                    self.partial.clear();
                    data = &data[nl + 1..];
                }
                None => {
                    self.pend(data, &mut |l| sink.line(l));
                    return;
                }
            }
        }
        let whole = memchr::memrchr(b'\n', data).map_or(0, |nl| nl + 1);
        let (mut run, tail) = data.split_at(whole);
        while !run.is_empty() {
            let taken = sink.run(run, self.max);
            debug_assert!(taken <= run.len() && (taken == 0 || run[taken - 1] == b'\n'));
            run = &run[taken..];
            // The line the sink stopped at, and those after it that are
            // not verbatim either, go the general way (a CRLF stream
            // never goes back to the sink); the next verbatim line
            // starts a run again.
            let mut start = 0;
            for nl in newlines(run) {
                if start > 0 && is_verbatim(run, start, nl, self.max) {
                    break;
                }
                self.emit_split(&run[start..nl], &mut |l| sink.line(l));
                start = nl + 1;
            }
            run = &run[start..];
        }
        if !tail.is_empty() {
            self.pend(tail, &mut |l| sink.line(l));
        }
    }

    /// End of file: the unterminated last line, if any.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit_split(&line, emit);
        }
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Adds `tail` (no newline in it) to the pending line, cutting pieces
    /// off once the line is known to be longer than the maximum. Exactly
    /// the maximum may still be a whole line whose newline comes with the
    /// next read: cutting it then would add an empty line after it.
    ///
    /// Pieces are cut from `tail` where it is, and only what is left (at
    /// most the maximum) is copied: moving the rest of a long line down
    /// the buffer after each cut was a copy between addresses that differ
    /// by an odd amount whenever a cut backed off to a character boundary,
    /// which made lines of three-byte characters five times slower to cut
    /// than ASCII ones.
    fn pend(&mut self, mut tail: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !self.partial.is_empty() {
            // One byte past the maximum tells where the cut goes.
            let take = (self.max + 1 - self.partial.len()).min(tail.len());
            self.partial.extend_from_slice(&tail[..take]);
            if self.partial.len() <= self.max {
                return;
            }
            let cut = cut_point(&self.partial, self.max);
            emit(&self.partial[..cut]);
            let rest = self.partial.len() - cut;
            if rest <= take {
                // What follows the cut is all from `tail`: go on there.
                tail = &tail[take - rest..];
                self.partial.clear();
            } else {
                tail = &tail[take..];
                self.partial.drain(..cut);
            }
        }
        while tail.len() > self.max {
            let cut = cut_point(tail, self.max);
            emit(&tail[..cut]);
            tail = &tail[cut..];
        }
        self.partial.extend_from_slice(tail);
    }

    fn emit_split(&self, mut line: &[u8], emit: &mut impl FnMut(&[u8])) {
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        while line.len() > self.max {
            let cut = cut_point(line, self.max);
            emit(&line[..cut]);
            line = &line[cut..];
        }
        emit(line);
    }
}

/// Where to cut `bytes` to at most `max`: before a UTF-8 continuation run
/// if one straddles the limit, else exactly at `max`.
fn cut_point(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut cut = max;
    for _ in 0..3 {
        if bytes[cut] & 0b1100_0000 != 0b1000_0000 {
            return cut;
        }
        cut -= 1;
    }
    if bytes[cut] & 0b1100_0000 != 0b1000_0000 && cut > 0 {
        cut
    } else {
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut |l| out.push(l.to_vec()));
        }
        d.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn splits_across_chunks() {
        let got = lines(100, &[b"he", b"llo\nwor", b"ld\r\n", b"\n", b"tail"]);
        assert_eq!(got, [&b"hello"[..], b"world", b"", b"tail"]);
    }

    #[test]
    fn overlong_lines_are_cut_not_buffered() {
        let long = vec![b'x'; 25];
        let got = lines(10, &[&long, b"\nshort\n"]);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5, 5]);
        let mut d = LineDecoder::new(10);
        let mut n = 0;
        for _ in 0..1000 {
            d.feed(&[b'y'; 7], &mut |_| n += 1);
            assert!(d.pending() <= 10);
        }
        assert_eq!(n * 10 + d.pending(), 7000);
    }

    /// Found by the micro-benchmarks: a line of exactly the maximum whose
    /// newline came in the next read was cut at the maximum, and the
    /// newline then ended a second, empty line.
    #[test]
    fn a_line_of_exactly_max_bytes_split_before_its_newline_is_one_line() {
        let line = vec![b'x'; 10];
        assert_eq!(
            lines(10, &[&line, b"\nnext\n"]),
            [line.clone(), b"next".to_vec()]
        );
        assert_eq!(lines(10, &[&line[..4], &line[4..], b"\n"]), [&line[..]]);
        // Read in one piece, the same.
        assert_eq!(
            lines(10, &[b"xxxxxxxxxx\nnext\n"]),
            [line, b"next".to_vec()]
        );
        // One byte more is cut into the maximum and the rest.
        let got = lines(10, &[&[b'y'; 11], b"\n"]);
        assert_eq!(got, [vec![b'y'; 10], vec![b'y']]);
    }

    #[test]
    fn cuts_at_character_boundaries() {
        // "aé" repeated: é is two bytes; a cut at 5 would split one.
        let text = "aéaéaéaé".as_bytes();
        let got = lines(5, &[text]);
        for piece in &got {
            assert!(std::str::from_utf8(piece).is_ok(), "{piece:?}");
            assert!(piece.len() <= 5);
        }
        assert_eq!(got.concat(), text);
    }

    /// Takes every run it is offered through [`copy_verbatim`] with an
    /// empty prefix, and records what it took and the other lines.
    struct Recorder(Vec<(bool, Vec<u8>)>);

    impl LineSink for Recorder {
        fn run(&mut self, run: &[u8], max: usize) -> usize {
            let mut out = Vec::new();
            let (taken, lines) = copy_verbatim(run, max, b"", &mut out, usize::MAX);
            assert_eq!(&out[..], &run[..taken]);
            if lines > 0 {
                self.0.push((true, out));
            }
            taken
        }

        fn line(&mut self, line: &[u8]) {
            self.0.push((false, line.to_vec()));
        }
    }

    #[test]
    fn runs_of_verbatim_lines_keep_their_newlines_and_the_rest_come_as_feed_gives_them() {
        let mut d = LineDecoder::new(5);
        let mut got = Recorder(Vec::new());
        let chunks: [&[u8]; 3] = [b"ab\ncd\r\n\n123456\npa", b"rt\nok\n", b"x\ny\n\nz"];
        for c in chunks {
            d.feed_into(c, &mut got);
        }
        let want: [(bool, &[u8]); 8] = [
            (true, b"ab\n"),
            (false, b"cd"),
            (true, b"\n"),
            // Longer than the maximum: cut.
            (false, b"12345"),
            (false, b"6"),
            // Joined from two reads: a slice of neither.
            (false, b"part"),
            (true, b"ok\n"),
            // Several verbatim lines in a row: one run; the tail waits.
            (true, b"x\ny\n\n"),
        ];
        let want: Vec<(bool, Vec<u8>)> = want.iter().map(|(v, l)| (*v, l.to_vec())).collect();
        assert_eq!(got.0, want);
        // `feed` gives the same lines, each on its own without its newline.
        let bare: Vec<Vec<u8>> = want
            .iter()
            .flat_map(|(v, l)| {
                if *v {
                    l.split_inclusive(|&b| b == b'\n')
                        .map(|l| l[..l.len() - 1].to_vec())
                        .collect()
                } else {
                    vec![l.clone()]
                }
            })
            .chain([b"z".to_vec()])
            .collect();
        assert_eq!(lines(5, &chunks), bare);
    }

    #[test]
    fn copy_verbatim_prefixes_each_line_and_stops_where_told() {
        let run = b"one\ntwo\nthree\n";
        let mut out = Vec::new();
        assert_eq!(
            copy_verbatim(run, 16, b"> ", &mut out, usize::MAX),
            (run.len(), 3)
        );
        assert_eq!(out, b"> one\n> two\n> three\n");
        // At the limit: after the line that reaches it.
        out.clear();
        assert_eq!(copy_verbatim(run, 16, b"> ", &mut out, 7), (8, 2));
        assert_eq!(out, b"> one\n> two\n");
        // Before a line longer than the maximum, and before a CRLF one.
        out.clear();
        assert_eq!(copy_verbatim(run, 4, b"", &mut out, usize::MAX), (8, 2));
        out.clear();
        assert_eq!(
            copy_verbatim(b"a\nb\r\nc\n", 4, b"", &mut out, usize::MAX),
            (2, 1)
        );
        // A line of exactly the maximum is verbatim; an empty one too.
        out.clear();
        assert_eq!(
            copy_verbatim(b"abcd\n\n", 4, b"", &mut out, usize::MAX),
            (6, 2)
        );
    }

    /// What the decoder must give for a whole stream without `\r`,
    /// however it arrives: each line cut from its start as `cut_point`
    /// says, and an unterminated tail the same way at the end.
    fn reference(max: usize, stream: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut pieces = |mut line: &[u8]| {
            while line.len() > max {
                let cut = cut_point(line, max);
                out.push(line[..cut].to_vec());
                line = &line[cut..];
            }
            out.push(line.to_vec());
        };
        let mut rest = stream;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            pieces(&rest[..nl]);
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() {
            pieces(rest);
        }
        out
    }

    proptest::proptest! {
        /// Long lines of one-, two- and three-byte characters in reads of
        /// any size: the same lines as from the stream in one piece.
        #[test]
        fn reads_of_any_size_give_the_lines_of_the_whole_stream(
            parts in proptest::collection::vec(0u8..4, 0..400),
            sizes in proptest::collection::vec(1usize..40, 1..40),
            max in 4usize..12,
        ) {
            let stream: Vec<u8> = parts
                .iter()
                .flat_map(|p| match p {
                    0 => b"a".to_vec(),
                    1 => "\u{e9}".as_bytes().to_vec(),
                    2 => "\u{20ac}".as_bytes().to_vec(),
                    _ => b"\n".to_vec(),
                })
                .collect();
            let mut chunks = Vec::new();
            let mut at = 0;
            for size in sizes.iter().cycle() {
                if at >= stream.len() {
                    break;
                }
                let end = (at + size).min(stream.len());
                chunks.push(&stream[at..end]);
                at = end;
            }
            let got = lines(max, &chunks);
            proptest::prop_assert_eq!(&got, &reference(max, &stream));
            for piece in &got {
                proptest::prop_assert!(piece.len() <= max);
                proptest::prop_assert!(std::str::from_utf8(piece).is_ok());
            }
        }
    }

    #[test]
    fn invalid_utf8_passes_through_unchanged() {
        let got = lines(100, &[b"\xff\xfe ok\n\0\0\n"]);
        assert_eq!(got, [&b"\xff\xfe ok"[..], b"\0\0"]);
    }
}
