//! Plain lifecycles: idle, tick, refuse SIGTERM, exit or crash on cue, and
//! the small readiness and bookkeeping signals (ready fd, pid file, stamps).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::started;
use crate::args::{Cli, usage};
use crate::{die, sig};

/// Benchmarks run a thousand of these: no output, one blocked syscall.
pub fn pause(cli: &Cli) -> ! {
    sig::wait_term(None);
    std::process::exit(cli.term_code)
}

pub fn run(cli: &Cli) -> ! {
    let every = cli.opt_num("print-every").map(Duration::from_millis);
    started();
    let Some(every) = every else {
        sig::run_until_term(cli)
    };
    // Ticks follow a fixed schedule so slow prints do not make them drift.
    let t0 = Instant::now();
    let mut n = 0u32;
    loop {
        n += 1;
        let due = t0 + every * n;
        sig::sleep(cli, due.saturating_duration_since(Instant::now()));
        say!("tick {n}");
    }
}

/// Takes every SIGTERM and carries on, saying when it came (on the
/// kernel's monotonic clock, which the bench compares with the instant the
/// process died).
pub fn ignore_term(_: &Cli) -> ! {
    say!("started pid={} ignoring SIGTERM", std::process::id());
    loop {
        if sig::wait_term(None) {
            say!("SIGTERM ignored at monotonic {} ns", sig::monotonic_ns());
        }
    }
}

pub fn exit(cli: &Cli) -> ! {
    let after = cli.ms("after", 0);
    let code = cli.num("code", 0);
    let signal = cli.get("signal").map(|s| {
        sig::parse_signal(s).unwrap_or_else(|| usage(&format!("--signal: unknown signal {s:?}")))
    });
    started();
    sig::sleep(cli, after);
    if let Some(signal) = signal {
        sig::raise_default(signal);
    }
    std::process::exit(code)
}

pub fn ready_fd(cli: &Cli) -> ! {
    let delay = cli.ms("delay", 0);
    let fd: libc::c_int = cli.num("fd", 3);
    sig::sleep(cli, delay);
    // SAFETY: writing one byte from a live buffer; a bad fd is reported, not UB.
    if unsafe { libc::write(fd, b"\n".as_ptr().cast(), 1) } != 1 {
        die(format_args!(
            "write to fd {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the fd was handed to us for this one purpose and nothing else uses it.
    unsafe { libc::close(fd) };
    say!("ready");
    sig::run_until_term(cli)
}

pub fn pidfile(cli: &Cli) -> ! {
    let path = cli.required("file");
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        die(format_args!("{path}: {e}"));
    }
    sig::run_until_term(cli)
}

pub fn stamp(cli: &Cli) -> ! {
    let path = cli.required("file");
    let name = cli.get("name").or(cli.service.as_deref()).unwrap_or("svc");
    // O_APPEND plus one write per line keeps lines whole between concurrent writers.
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| die(format_args!("{path}: {e}")));
    let mut append = |what: &str| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!("{name} {what} {}\n", nanos.as_nanos());
        if let Err(e) = file.write_all(line.as_bytes()) {
            die(format_args!("{path}: {e}"));
        }
    };
    append("start");
    sig::wait_term(None);
    sig::acknowledge(cli);
    append("stop");
    std::process::exit(cli.term_code)
}

pub fn close_stdio(cli: &Cli) -> ! {
    // SAFETY: closing our own stdio; std treats writes to a closed stdout as no-ops.
    unsafe {
        libc::close(1);
        libc::close(2);
    }
    sig::run_until_term(cli)
}
