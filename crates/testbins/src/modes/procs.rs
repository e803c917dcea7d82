//! Process-tree troublemakers: children that escape the process group,
//! daemons, fork bombs and helpers that outlive the service holding its pipes.
//! These modes never start threads, so forking and using std in the child is safe.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::FromRawFd;

use super::started;
use crate::args::Cli;
use crate::{die, sig};

fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the process is single-threaded here (see the module doc), so the
    // child inherits no lock held by another thread.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        pid => Ok(pid),
    }
}

fn fork_or_die() -> libc::pid_t {
    fork().unwrap_or_else(|e| die(format_args!("fork: {e}")))
}

/// Leaves without running exit handlers twice (they belong to the parent).
fn child_exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; say! already flushed our output.
    unsafe { libc::_exit(code) }
}

fn setsid() {
    // SAFETY: setsid has no preconditions; a forked child is never a group leader.
    unsafe { libc::setsid() };
}

pub fn setsid_child(cli: &Cli) -> ! {
    started();
    if fork_or_die() == 0 {
        setsid();
        sig::ignore_term();
        say!("child pid={}", std::process::id());
        sig::pause_forever();
    }
    sig::run_until_term(cli)
}

/// The main process and a child in its process group each count the
/// SIGTERMs they receive: taken one by one as they come (`sigtimedwait`),
/// so a second one is counted unless it arrives before the first is
/// taken; 300 ms after the last, each says `main got N` / `child got N`
/// and exits.
pub fn count_term(_: &Cli) -> ! {
    started();
    let who = if fork_or_die() == 0 { "child" } else { "main" };
    say!("{who} ready");
    sig::wait_term(None);
    let mut got = 1;
    while sig::wait_term(Some(std::time::Duration::from_millis(300))) {
        got += 1;
    }
    say!("{who} got {got}");
    if who == "child" {
        child_exit(0);
    }
    // SAFETY: wait for any child; a null status pointer is allowed.
    unsafe { libc::wait(std::ptr::null_mut()) };
    std::process::exit(0)
}

pub fn daemonize(cli: &Cli) -> ! {
    let exit_after_fork = cli.flag("exit-after-fork");
    started();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        die(format_args!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by exactly one File each.
    let (mut ready_r, ready_w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let first = fork_or_die();
    if first == 0 {
        drop(ready_r);
        setsid();
        if fork_or_die() == 0 {
            sig::ignore_term();
            say!("grandchild pid={}", std::process::id());
            // Closing the pipe tells the original process we are up.
            drop(ready_w);
            sig::pause_forever();
        }
        child_exit(0);
    }
    drop(ready_w);
    // SAFETY: reaping our own child; a null status pointer is allowed.
    unsafe { libc::waitpid(first, std::ptr::null_mut(), 0) };
    let _ = ready_r.read(&mut [0]);
    if exit_after_fork {
        std::process::exit(0);
    }
    sig::run_until_term(cli)
}

pub fn forkbomb(cli: &Cli) -> ! {
    let mut n = 0u64;
    loop {
        if sig::term_pending() {
            sig::on_term(cli);
        }
        match fork() {
            Ok(0) => {
                sig::ignore_term();
                sig::pause_forever();
            }
            Ok(_) => {
                n += 1;
                if n.is_multiple_of(10) {
                    say!("forked {n}");
                }
            }
            Err(e) => {
                say!("fork failed after {n}: {e}");
                sig::run_until_term(cli)
            }
        }
    }
}

pub fn grandchild_holding_pipes(cli: &Cli) -> ! {
    let hold = cli.ms("hold-ms", 2000);
    if fork_or_die() == 0 {
        // Dies with its group like any ordinary helper would.
        sig::default_term();
        std::thread::sleep(hold);
        say!("grandchild still here");
        child_exit(0);
    }
    say!("parent exiting");
    std::process::exit(0)
}
