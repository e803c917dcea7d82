//! SIGTERM stays blocked in every thread and is taken synchronously with
//! `sigtimedwait`: no handler ever runs, so there is nothing to keep
//! async-signal-safe, and a SIGTERM that arrives mid-write is never lost.

use std::time::{Duration, Instant};
use std::{io, mem, ptr, thread};

use libc::c_int;

use crate::args::Cli;

fn set_of(sig: c_int) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset touches it, and
    // `sig` is a valid signal number (checked by callers).
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

fn mask(how: c_int, sig: c_int) {
    let set = set_of(sig);
    // SAFETY: `set` is initialised and the old mask is not requested.
    unsafe { libc::pthread_sigmask(how, &set, ptr::null_mut()) };
}

/// Called before any thread exists, so every thread inherits the mask.
pub fn block_term() {
    mask(libc::SIG_BLOCK, libc::SIGTERM);
}

/// Ignores SIGTERM for good. SIG_IGN discards a pending one; unblocking stops
/// later ones from sitting pending forever (blocked signals are never discarded).
pub fn ignore_term() {
    // SAFETY: SIG_IGN is a valid disposition for SIGTERM.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    mask(libc::SIG_UNBLOCK, libc::SIGTERM);
}

/// Gives SIGTERM back its default action (forked helpers that should die with their group).
pub fn default_term() {
    mask(libc::SIG_UNBLOCK, libc::SIGTERM);
}

/// Waits up to `timeout` (forever if `None`); true if SIGTERM arrived.
pub fn wait_term(timeout: Option<Duration>) -> bool {
    let set = set_of(libc::SIGTERM);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `set` and `ts` outlive the call; a null siginfo is allowed.
        if unsafe { libc::sigtimedwait(&set, ptr::null_mut(), ts_ptr) } == libc::SIGTERM {
            return true;
        }
        // EINTR (a stop/continue) just waits again; EAGAIN is the timeout.
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, comparable across processes.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A cheap poll for busy loops that cannot sit in `wait_term`.
pub fn term_pending() -> bool {
    // SAFETY: sigpending fills the zeroed set, which sigismember then reads.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGTERM) == 1
    }
}

/// The default reaction, minus the exit: say so and honour `--term-delay`.
pub fn acknowledge(cli: &Cli) {
    say!("got SIGTERM");
    thread::sleep(cli.term_delay);
}

pub fn on_term(cli: &Cli) -> ! {
    acknowledge(cli);
    std::process::exit(cli.term_code)
}

pub fn run_until_term(cli: &Cli) -> ! {
    wait_term(None);
    on_term(cli)
}

/// Sleeps, but a SIGTERM meanwhile ends the process the default way.
pub fn sleep(cli: &Cli, d: Duration) {
    if wait_term(Some(d)) {
        on_term(cli);
    }
}

pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Kills the process with `sig`; returns only if its default action is to ignore it.
pub fn raise_default(sig: c_int) {
    // SAFETY: `sig` is a valid signal; resetting it to SIG_DFL also removes
    // std's own SIGSEGV/SIGBUS handlers so the crash is real.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
    mask(libc::SIG_UNBLOCK, sig);
    // SAFETY: raise has no preconditions.
    unsafe { libc::raise(sig) };
}

/// `SIGSEGV`, `segv` or `11`.
pub fn parse_signal(s: &str) -> Option<c_int> {
    if let Ok(n) = s.parse::<c_int>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    use libc::*;
    const NAMES: &[(&str, c_int)] = &[
        ("HUP", SIGHUP),
        ("INT", SIGINT),
        ("QUIT", SIGQUIT),
        ("ILL", SIGILL),
        ("TRAP", SIGTRAP),
        ("ABRT", SIGABRT),
        ("BUS", SIGBUS),
        ("FPE", SIGFPE),
        ("KILL", SIGKILL),
        ("USR1", SIGUSR1),
        ("SEGV", SIGSEGV),
        ("USR2", SIGUSR2),
        ("PIPE", SIGPIPE),
        ("ALRM", SIGALRM),
        ("TERM", SIGTERM),
        ("XCPU", SIGXCPU),
        ("XFSZ", SIGXFSZ),
        ("SYS", SIGSYS),
    ];
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signal_names() {
        use super::parse_signal as p;
        assert_eq!(p("SIGSEGV"), Some(libc::SIGSEGV));
        assert_eq!(p("kill"), Some(9));
        assert_eq!(p("9"), Some(9));
        assert_eq!(p("0"), None);
        assert_eq!(p("SIGWHAT"), None);
    }
}
