//! Output producers: line bursts at full speed or at a fixed rate, floods
//! without newlines, binary garbage, and reports of the environment, ids and
//! limits the supervisor set up.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use super::finish;
use crate::args::{Cli, usage};
use crate::{die, sig};

const CHUNK: usize = 64 << 10;

/// Bulk output bypasses std's line-buffered stdout so each write(2) carries a full 64 KiB.
fn raw(fd: i32) -> ManuallyDrop<File> {
    // SAFETY: fds 1 and 2 stay open for the life of the process, and
    // ManuallyDrop makes sure this File never closes them.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

fn write_failed(e: io::Error) -> ! {
    die(format_args!("write: {e}"))
}

/// Formats without allocating: this runs a million times per benchmark.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

pub fn print(cli: &Cli) -> ! {
    let lines: u64 = cli.num("lines", 10);
    let size: usize = cli.num("size", 0);
    let rate: u64 = cli.num("rate", 0);
    let (to_stderr, both) = (cli.flag("stderr"), cli.flag("both"));
    let final_newline = !cli.flag("no-final-newline");
    let wait = cli.then_wait();
    let (stdout, stderr) = (raw(1), raw(2));
    let mut out = BufWriter::with_capacity(CHUNK, &*stdout);
    let mut err = BufWriter::with_capacity(CHUNK, &*stderr);
    let filler = vec![b'x'; size];
    let mut digits = [0; 20];
    let t0 = Instant::now();
    let terminated = (|| -> io::Result<bool> {
        for i in 0..lines {
            if i.is_multiple_of(4096) && sig::term_pending() {
                return Ok(true);
            }
            if rate > 0 {
                // An absolute schedule: being late once is caught up, not carried over.
                let due = t0
                    + Duration::from_nanos(
                        (u128::from(i) * 1_000_000_000 / u128::from(rate)) as u64,
                    );
                let now = Instant::now();
                if due > now {
                    out.flush()?;
                    err.flush()?;
                    if sig::wait_term(Some(due - now)) {
                        return Ok(true);
                    }
                }
            }
            let w = if to_stderr || (both && i % 2 == 1) {
                &mut err
            } else {
                &mut out
            };
            let n = decimal(i, &mut digits);
            w.write_all(b"line ")?;
            w.write_all(n)?;
            w.write_all(b" ")?;
            w.write_all(&filler[..size.saturating_sub(n.len() + 6)])?;
            if final_newline || i + 1 < lines {
                w.write_all(b"\n")?;
            }
        }
        Ok(false)
    })();
    let flushed = out.flush().and_then(|_| err.flush());
    match flushed.and(terminated) {
        Ok(true) => sig::on_term(cli),
        Ok(false) => finish(cli, wait),
        Err(e) => write_failed(e),
    }
}

pub fn flood(cli: &Cli) -> ! {
    let bytes: u64 = cli.num("bytes", 1 << 20);
    let byte = match cli.get("byte").unwrap_or("x").as_bytes() {
        [b] => *b,
        _ => usage("--byte: expected one ASCII character"),
    };
    let wait = cli.then_wait();
    let chunk = vec![byte; CHUNK];
    let mut out = raw(1);
    let mut left = bytes;
    while left > 0 {
        if sig::term_pending() {
            sig::on_term(cli);
        }
        let n = left.min(CHUNK as u64) as usize;
        out.write_all(&chunk[..n])
            .unwrap_or_else(|e| write_failed(e));
        left -= n as u64;
    }
    finish(cli, wait)
}

/// Never valid UTF-8: no byte here can start a multi-byte sequence.
const JUNK: &[u8] = &[0xff, 0x00, 0xc0, 0x80, 0xfe, 0xbf, 0xc1, 0x00, 0xf8];

pub fn garbage(cli: &Cli) -> ! {
    let bytes: usize = cli.num("bytes", 65536);
    let data: Vec<u8> = (0..bytes)
        .map(|i| {
            if i % 1000 == 999 {
                b'\n'
            } else {
                JUNK[i % JUNK.len()]
            }
        })
        .collect();
    raw(1).write_all(&data).unwrap_or_else(|e| write_failed(e));
    std::process::exit(0)
}

/// Reports are small: build them whole and write them in one go.
fn report(text: &[u8]) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text);
    let _ = out.flush();
}

pub fn env(cli: &Cli) -> ! {
    let wait = cli.then_wait();
    let mut vars: Vec<_> = std::env::vars_os().collect();
    vars.sort();
    let mut text = Vec::new();
    for (k, v) in vars {
        text.extend_from_slice(k.as_bytes());
        text.push(b'=');
        text.extend_from_slice(v.as_bytes());
        text.push(b'\n');
    }
    text.extend_from_slice(b"cwd=");
    match std::env::current_dir() {
        Ok(dir) => text.extend_from_slice(dir.as_os_str().as_bytes()),
        Err(e) => text.extend_from_slice(format!("<{e}>").as_bytes()),
    }
    text.extend_from_slice(format!("\nargs={}\n", cli.argv.join(" ")).as_bytes());
    report(&text);
    finish(cli, wait)
}

pub fn id(cli: &Cli) -> ! {
    let wait = cli.then_wait();
    // SAFETY: these getters have no preconditions and cannot fail.
    let (uid, gid, euid, egid) = unsafe {
        (
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
            libc::getegid(),
        )
    };
    // SAFETY: a zero-sized call only returns the number of groups.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0; count.max(0) as usize];
    // SAFETY: `groups` has room for `count` entries.
    let count = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    groups.truncate(count.max(0) as usize);
    let groups: Vec<_> = groups.iter().map(|g| g.to_string()).collect();
    say!(
        "uid={uid} gid={gid} euid={euid} egid={egid} groups={}",
        groups.join(",")
    );
    finish(cli, wait)
}

pub fn limits(cli: &Cli) -> ! {
    let wait = cli.then_wait();
    let mut text = std::fs::read("/proc/self/limits")
        .unwrap_or_else(|e| die(format_args!("/proc/self/limits: {e}")));
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    report(&text);
    finish(cli, wait)
}
