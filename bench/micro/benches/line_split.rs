//! `LineDecoder`: splitting a service's pipe output into lines, as the
//! pump does for every read.

use std::hint::black_box;

use blackhole_daemon::logs::{LineDecoder, MAX_LINE};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A default pipe's capacity: what one read gets from a service that
/// filled its pipe. The pump reads up to 256 KiB from a pipe it has grown.
const READ: usize = 64 * 1024;
const TOTAL: usize = 1024 * 1024;

/// About `TOTAL` bytes of `line` (newline included) repeated.
fn stream_of(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOTAL + line.len());
    while out.len() < TOTAL {
        out.extend_from_slice(line);
    }
    out
}

/// `len` bytes with the newline: whole copies of `fill`, padded with `x`
/// so that no character is cut in half.
fn line_of(len: usize, fill: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(len);
    while line.len() + fill.len() < len {
        line.extend_from_slice(fill);
    }
    line.resize(len - 1, b'x');
    line.push(b'\n');
    line
}

/// One stream through a fresh decoder in pump-sized reads; returns the
/// number of lines so the work cannot be optimised away.
fn split(data: &[u8]) -> usize {
    let mut decoder = LineDecoder::default();
    let mut lines = 0usize;
    let mut emit = |l: &[u8]| {
        black_box(l);
        lines += 1;
    };
    for read in data.chunks(READ) {
        decoder.feed(black_box(read), &mut emit);
    }
    decoder.finish(&mut emit);
    lines
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, Vec<u8>); 5] = [
        ("100B_lines", stream_of(&line_of(100, b"x"))),
        // Half the bytes invalid as UTF-8: the decoder must not care.
        (
            "100B_lines_invalid_utf8",
            stream_of(&line_of(100, b"ab\xff\xfe")),
        ),
        // Just under MAX_LINE, and not a divisor of the read size: about
        // one line in four straddles two reads and is put together in the
        // partial buffer; none is cut.
        (
            "lines_near_MAX_LINE",
            stream_of(&line_of(MAX_LINE - 100, b"x")),
        ),
        // Over MAX_LINE: cut into pieces while still unfinished.
        ("40KiB_lines_cut", stream_of(&line_of(40 * 1024 + 1, b"x"))),
        // Three-byte characters: MAX_LINE is not a multiple of three, so
        // every cut backs off to a character boundary.
        (
            "40KiB_lines_cut_utf8",
            stream_of(&line_of(40 * 1024 + 1, "€".as_bytes())),
        ),
    ];
    let mut group = c.benchmark_group("line_split");
    for (name, data) in &cases {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(*name, |b| b.iter(|| split(data)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
