//! The reaping thread, in a process of its own: it reaps every child of
//! the process and takes SIGCHLD for all of its threads, so it cannot
//! share one with tests that reap by hand, nor run in the test harness's
//! threads (made before SIGCHLD could be blocked). Each check panics on
//! failure; the process's exit code is the verdict.

use std::ffi::CString;
use std::time::{Duration, Instant};

use blackhole_os::spawn::SpawnPlan;
use blackhole_os::spawner::Reaper;
use blackhole_os::{ExitStatus, Signal};

fn plan(argv: &[&str]) -> SpawnPlan {
    SpawnPlan::new(
        CString::new(argv[0]).unwrap(),
        argv.iter().map(|a| CString::new(*a).unwrap()).collect(),
    )
}

fn exit_of(rx: std::sync::mpsc::Receiver<ExitStatus>, what: &str) -> ExitStatus {
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what}: its exit was not delivered within 10 s"))
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// A child killed by signal `n` is reported with that very signal.
fn assert_killed_by(reaper: &Reaper, n: i32) {
    let (spawned, rx) = reaper
        .spawn_and_watch(&plan(&["/bin/sleep", "30"]))
        .unwrap();
    kill(spawned.pid, n);
    assert_eq!(
        exit_of(rx, &format!("the child killed by signal {n}")),
        ExitStatus::Signal {
            signal: Signal::from_exit(n).unwrap(),
            core_dumped: false
        }
    );
}

/// Zombies among this process's children (what nobody reaped).
fn zombies() -> Vec<i32> {
    blackhole_os::procfs::children_of(std::process::id())
        .into_iter()
        .filter(|p| p.state == 'Z')
        .map(|p| p.pid)
        .collect()
}

fn main() {
    let reaper = Reaper::global();
    // Without SIGCHLD blocked the thread could sleep through exits.
    assert!(
        reaper.start_thread().is_err(),
        "refused before prepare_process"
    );
    Reaper::prepare_process().unwrap();
    blackhole_os::system::become_subreaper().unwrap();
    reaper.start_thread().unwrap();

    // Each child spawned right after the previous one was reaped: the
    // thread has just found nothing left, and must still see the next.
    for i in 0..300 {
        let (_, rx) = reaper.spawn_and_watch(&plan(&["/bin/true"])).unwrap();
        assert_eq!(exit_of(rx, &format!("child {i}")), ExitStatus::Code(0));
    }

    // Killed by a real-time signal (nix cannot name one; its exit was
    // lost), then an ordinary exit after it: reaping goes on.
    assert_killed_by(reaper, 40);
    let (_, rx) = reaper.spawn_and_watch(&plan(&["/bin/true"])).unwrap();
    assert_eq!(exit_of(rx, "the child after it"), ExitStatus::Code(0));
    // Signal 33 (glibc keeps it for itself; `kill` still sends it) is
    // reported as itself, not as some other signal.
    assert_killed_by(reaper, 33);

    // An orphan: the child's own child, re-parented to this subreaper
    // after the child has exited and been reaped, exits while no child
    // of ours is left: it must not stay a zombie.
    let (_, rx) = reaper
        .spawn_and_watch(&plan(&["/bin/sh", "-c", "sleep 0.3 & exit 0"]))
        .unwrap();
    assert_eq!(exit_of(rx, "the orphan's parent"), ExitStatus::Code(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = blackhole_os::procfs::children_of(std::process::id());
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orphan was not reaped: children {:?}, zombies {:?}",
            alive.iter().map(|p| (p.pid, p.state)).collect::<Vec<_>>(),
            zombies()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(reaper.tracked(), 0, "every registered exit was delivered");
    println!("reaper_thread: ok");
}
