//! Formatting lines for the log file: the per-batch prefix, and the lines
//! of one 64 KiB read pushed into a service's log (ring, file batches).

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use blackhole_daemon::logs::{LineDecoder, LogWriter, ServiceLog, Stream, file_prefix};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A default pipe's capacity, and the size at which batches are cut.
const READ: usize = 64 * 1024;
/// The orchestrator's default `log_memory`.
const LOG_MEMORY: usize = 256 * 1024;

/// One full read of copies of a 100-byte line (the last copy cut off by
/// the read, as a pipe read cuts it).
fn read_of(body: &[u8]) -> Vec<u8> {
    assert_eq!(body.len(), 99);
    let line = [body, b"\n"].concat();
    line.iter().copied().cycle().take(READ).collect()
}

/// 99 bytes: `start`, then `x` to the end.
fn padded(start: &[u8]) -> Vec<u8> {
    let mut body = start.to_vec();
    body.resize(99, b'x');
    body
}

/// 99 bytes of `fill` over and over.
fn repeated(fill: &[u8]) -> Vec<u8> {
    fill.iter().copied().cycle().take(99).collect()
}

fn prefix(c: &mut Criterion) {
    let mut group = c.benchmark_group("file_prefix");
    group.throughput(Throughput::Elements(1));
    let time = SystemTime::now();
    group.bench_function("stdout_pid", |b| {
        b.iter(|| file_prefix(black_box(time), Stream::Stdout, black_box(Some(4242))))
    });
    group.bench_function("note_no_pid", |b| {
        b.iter(|| file_prefix(black_box(time), Stream::Note, black_box(None)))
    });
    group.finish();
}

/// What the writer does once a batch is written: its buffer goes back to
/// the pool, unless the ring still shares it (the ring gives it back when
/// it lets go). Without this every batch would allocate afresh. A macro:
/// the batch type is not exported, so no function can name it.
macro_rules! written {
    ($pool:expr, $batches:expr) => {
        for batch in $batches {
            if let Some(bytes) = Arc::into_inner(batch.bytes) {
                $pool.put(bytes);
            }
        }
    };
}

fn batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    // Its thread never gets a batch here: nothing touches the disk.
    let writer = LogWriter::start(dir.path().to_path_buf(), 1 << 20, 2).expect("the log writer");
    let log: Arc<ServiceLog> = ServiceLog::new("svc", writer, false, LOG_MEMORY);
    let pool = log.writer().pool.clone();

    let mut group = c.benchmark_group("log_batch");
    group.throughput(Throughput::Bytes(READ as u64));
    for (name, read) in [
        ("64KiB_100B_lines", read_of(&padded(b""))),
        // Latin-1 text, one byte per line invalid as UTF-8: the lossy
        // conversion, which turns each bad byte into U+FFFD.
        ("64KiB_100B_lines_latin1", read_of(&padded(b"GET /caf\xe9"))),
        // Half the bytes invalid, as in binary output: the worst case.
        ("64KiB_100B_lines_binary", read_of(&repeated(b"ab\xff\xfe"))),
    ] {
        let lines: Vec<&[u8]> = read.split(|&b| b == b'\n').collect();
        // Lines already split, each checked as UTF-8 on its own.
        group.bench_function(format!("push/{name}"), |b| {
            b.iter(|| {
                let mut batch = log.batch(Stream::Stdout, 4242, READ);
                for line in &lines {
                    batch.push(black_box(line));
                }
                written!(pool, batch.finish())
            })
        });
    }

    // A read that is valid UTF-8 as a whole is checked once, and its lines
    // go in as text.
    let read = read_of(&padded(b""));
    let lines: Vec<&str> = std::str::from_utf8(&read)
        .expect("ASCII")
        .split('\n')
        .collect();
    group.bench_function("push_str/64KiB_100B_lines", |b| {
        b.iter(|| {
            let mut batch = log.batch(Stream::Stdout, 4242, READ);
            black_box(std::str::from_utf8(black_box(&read)).is_ok());
            for line in &lines {
                batch.push_str(black_box(line));
            }
            written!(pool, batch.finish())
        })
    });

    // What the pump does with one read of a flood: valid UTF-8 as a whole,
    // no follower, echo or watch, so each line is copied verbatim behind
    // its prefix. Reads of a grown pipe are up to 256 KiB.
    for size in [READ, 4 * READ] {
        let read: Vec<u8> = read_of(&padded(b"")).repeat(size / READ);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("pump_read/{}KiB_100B_lines", size / 1024), |b| {
            let mut decoder = LineDecoder::default();
            b.iter(|| {
                written!(
                    pool,
                    log.take_read(Stream::Stdout, 4242, &mut decoder, black_box(&read))
                )
            })
        });
    }
    group.throughput(Throughput::Bytes(READ as u64));

    // What the pump does with one read that is not valid UTF-8 as a whole:
    // the whole-read check fails, the decoder splits it and every line is
    // checked on its own. It carries the cut-off line from one read to the
    // next, as between reads of a pipe.
    let read = read_of(&padded(b"GET /caf\xe9"));
    assert!(std::str::from_utf8(&read).is_err());
    group.bench_function("pump_read/64KiB_100B_lines_latin1", |b| {
        let mut decoder = LineDecoder::default();
        b.iter(|| {
            written!(
                pool,
                log.take_read(Stream::Stdout, 4242, &mut decoder, black_box(&read))
            )
        })
    });
    group.finish();
}

criterion_group!(benches, prefix, batch);
criterion_main!(benches);
