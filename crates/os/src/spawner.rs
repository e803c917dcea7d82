//! One reaper for the whole process, and the thread that forks.
//!
//! The orchestrator is a child subreaper: orphaned grandchildren of
//! services are re-parented to it and must be reaped, or they stay zombies.
//! Reaping them with `waitpid(-1)` would steal the exit statuses of tracked
//! children from anyone else waiting on them, so there is exactly one
//! reaper and every child is registered with it. Registration happens under
//! the same lock the reaper holds while calling `waitpid`, in the same
//! critical section as the fork, so no exit can be reaped before the
//! callback for it exists.
//!
//! Forking happens on one long-lived thread ([`Spawner`]): the
//! parent-death signal fires when the *thread* that forked a child exits,
//! so forking from a pool thread that the runtime retires when idle would
//! kill services for no reason. That thread also keeps every signal
//! blocked, so no signal handler of the orchestrator can run in a child
//! before the child resets its signal handling.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};

use crate::spawn::{SpawnError, SpawnPlan, Spawned, spawn};
use crate::{ExitStatus, Signal};

/// Called once with the exit status of the process it was registered for.
pub type ExitCallback = Box<dyn FnOnce(ExitStatus) + Send>;

/// What one call to [`Reaper::reap`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Exits delivered to their callbacks.
    pub tracked: usize,
    /// Processes nobody registered (orphans re-parented to us).
    pub orphans: usize,
}

#[derive(Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, ExitCallback>>,
}

impl Reaper {
    /// The process's one reaper.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        REAPER.get_or_init(Reaper::default)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, ExitCallback>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks `plan` and registers `on_exit` for it atomically with respect
    /// to [`Reaper::reap`].
    pub fn spawn(&self, plan: &SpawnPlan, on_exit: ExitCallback) -> Result<Spawned, SpawnError> {
        let mut waiting = self.lock();
        let spawned = spawn(plan)?;
        waiting.insert(spawned.pid as i32, on_exit);
        Ok(spawned)
    }

    /// Reaps every child that has exited. Call on every SIGCHLD.
    pub fn reap(&self) -> Reaped {
        let mut done = Vec::new();
        let mut out = Reaped::default();
        {
            let mut waiting = self.lock();
            loop {
                let (pid, status) =
                    match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                        Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                        Ok(WaitStatus::Signaled(pid, sig, core_dumped)) => (
                            pid,
                            ExitStatus::Signal {
                                signal: Signal::from_number(sig as i32).unwrap_or(Signal::KILL),
                                core_dumped,
                            },
                        ),
                        Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                        Ok(_) => continue,
                        Err(Errno::EINTR) => continue,
                        Err(e) => {
                            tracing::error!("waitpid failed: {e}");
                            break;
                        }
                    };
                match waiting.remove(&pid.as_raw()) {
                    Some(callback) => done.push((callback, status)),
                    None => {
                        out.orphans += 1;
                        tracing::debug!(pid = pid.as_raw(), %status, "reaped an orphaned process");
                    }
                }
            }
        }
        out.tracked = done.len();
        for (callback, status) in done {
            callback(status);
        }
        out
    }

    /// Whether this process has any child at all, running or not yet
    /// reaped (children of every thread count). One system call, and no
    /// status is taken: a child that exited stays for [`Reaper::reap`].
    pub fn has_children(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::All, flags) {
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return false,
                // Children exist (`StillAlive`: none has exited yet), or a
                // zombie is waiting; an unexpected error counts as yes.
                _ => return true,
            }
        }
    }

    /// How many processes are registered and not yet reaped.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    /// Spawns and returns a receiver for the exit status (for code without
    /// a runtime, and tests).
    pub fn spawn_and_watch(
        &self,
        plan: &SpawnPlan,
    ) -> Result<(Spawned, mpsc::Receiver<ExitStatus>), SpawnError> {
        let (tx, rx) = mpsc::channel();
        let spawned = self.spawn(
            plan,
            Box::new(move |status| {
                let _ = tx.send(status);
            }),
        )?;
        Ok((spawned, rx))
    }

    /// Waits for an exit by reaping until it arrives. Without a SIGCHLD
    /// listener this polls, so it is for tests and tools, not the daemon.
    pub fn wait_blocking(&self, rx: mpsc::Receiver<ExitStatus>) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.reap();
            if let Ok(status) = rx.recv_timeout(Duration::from_millis(5)) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within 60 s"
            );
        }
    }
}

type Reply = Box<dyn FnOnce(Result<Spawned, SpawnError>) + Send>;

struct Job {
    plan: SpawnPlan,
    on_exit: ExitCallback,
    reply: Reply,
}

/// The thread that forks. Cheap to clone; the thread lives as long as the
/// process.
#[derive(Clone)]
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawning thread for `reaper`.
    pub fn start(reaper: &'static Reaper) -> std::io::Result<Spawner> {
        crate::spawn::reserve_descriptor_slots();
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bh-spawner".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                block_all_signals();
                while let Ok(job) = rx.recv() {
                    let result = reaper.spawn(&job.plan, job.on_exit);
                    // The plan's descriptors (cgroup files, readiness pipe
                    // ends) are closed here, after the fork.
                    drop(job.plan);
                    (job.reply)(result);
                }
            })?;
        Ok(Spawner { jobs: tx })
    }

    /// Queues a spawn; `reply` runs on the spawning thread with the result.
    pub fn submit(&self, plan: SpawnPlan, on_exit: ExitCallback, reply: Reply) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job {
            plan,
            on_exit,
            reply,
        }) {
            (job.reply)(Err(SpawnError::Setup {
                what: "reach the spawning thread",
                source: std::io::Error::other("the spawning thread is gone"),
            }));
        }
    }
}

fn block_all_signals() {
    let all = nix::sys::signal::SigSet::all();
    if let Err(e) = all.thread_block() {
        tracing::warn!("cannot block signals on the spawning thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn orphans_are_reaped_and_tracked_exits_delivered() {
        crate::system::become_subreaper().unwrap();
        let reaper = Reaper::global();
        let script = "sh -c 'sleep 0.05' & exit 0";
        let mut plan = SpawnPlan::new(
            CString::new("/bin/sh").unwrap(),
            ["sh", "-c", script]
                .iter()
                .map(|s| CString::new(*s).unwrap())
                .collect(),
        );
        plan.output = crate::spawn::Output::Discard;
        let (spawned, rx) = reaper.spawn_and_watch(&plan).unwrap();
        assert_eq!(reaper.wait_blocking(rx), ExitStatus::Code(0));
        // The backgrounded grandchild was re-parented to this process and
        // must not stay a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            reaper.reap();
            let zombies = crate::procfs::children_of(std::process::id())
                .into_iter()
                .filter(|p| p.state == 'Z')
                .count();
            let alive = crate::procfs::list_pids()
                .into_iter()
                .filter_map(crate::procfs::stat)
                .any(|s| s.session == spawned.pid as i32 && s.pid != spawned.pid as i32);
            if zombies == 0 && !alive {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild never reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn has_children_sees_a_child_and_leaves_its_status_to_reap() {
        let reaper = Reaper::global();
        let plan = SpawnPlan::new(
            CString::new("/bin/sleep").unwrap(),
            ["sleep", "30"]
                .iter()
                .map(|s| CString::new(*s).unwrap())
                .collect(),
        );
        let (spawned, rx) = reaper.spawn_and_watch(&plan).unwrap();
        assert!(reaper.has_children(), "a running child is a child");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(spawned.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Once it is a zombie (unless a parallel test's reap took it first),
        // it still counts, and asking did not take its status.
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::procfs::stat(spawned.pid).is_some_and(|s| s.state != 'Z') {
            assert!(Instant::now() < deadline, "the child never died");
            std::thread::sleep(Duration::from_millis(2));
        }
        if crate::procfs::stat(spawned.pid).is_some() {
            assert!(reaper.has_children(), "an unreaped zombie is a child");
        }
        assert_eq!(
            reaper.wait_blocking(rx),
            ExitStatus::Signal {
                signal: Signal::KILL,
                core_dumped: false
            }
        );
    }

    #[test]
    fn spawner_thread_forks_and_replies() {
        let reaper = Reaper::global();
        let spawner = Spawner::start(reaper).unwrap();
        let (tx, rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        let plan = SpawnPlan::new(
            CString::new("/bin/true").unwrap(),
            vec![CString::new("true").unwrap()],
        );
        spawner.submit(
            plan,
            Box::new(move |s| {
                let _ = exit_tx.send(s);
            }),
            Box::new(move |r| {
                let _ = tx.send(r.map(|s| s.pid));
            }),
        );
        let pid = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert!(pid > 0);
        assert_eq!(reaper.wait_blocking(exit_rx), ExitStatus::Code(0));
    }
}
