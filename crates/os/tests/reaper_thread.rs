//! The reaping thread, in a process of its own: it reaps every child of
//! the process, so it cannot share one with tests that reap by hand.

use std::ffi::CString;
use std::time::Duration;

use blackhole_os::ExitStatus;
use blackhole_os::spawn::SpawnPlan;
use blackhole_os::spawner::Reaper;

fn plan(argv: &[&str]) -> SpawnPlan {
    SpawnPlan::new(
        CString::new(argv[0]).unwrap(),
        argv.iter().map(|a| CString::new(*a).unwrap()).collect(),
    )
}

/// Each child is spawned once the one before it has been reaped, so the
/// thread has just found no child at all. Woken by a spawn's *beginning*,
/// it looked before the fork had made the child, found none again and
/// slept through the child's exit (seen: the first child's exit never
/// came); woken by its end, the child is there to wait for.
#[test]
fn every_exit_is_delivered_though_each_child_comes_after_the_thread_found_none() {
    let reaper = Reaper::global();
    reaper.start_thread().unwrap();
    for i in 0..300 {
        let (_, rx) = reaper.spawn_and_watch(&plan(&["/bin/true"])).unwrap();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(status) => assert_eq!(status, ExitStatus::Code(0)),
            Err(_) => panic!("child {i}: its exit was not delivered within 10 s"),
        }
    }
    // A longer-lived child, killed: its exit comes while the thread waits
    // in the kernel.
    let (spawned, rx) = reaper
        .spawn_and_watch(&plan(&["/bin/sleep", "30"]))
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spawned.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(ExitStatus::Signal { .. })
    ));
    assert_eq!(reaper.tracked(), 0, "every child was delivered");
}
