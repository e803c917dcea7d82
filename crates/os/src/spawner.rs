//! One reaper for the whole process, and the threads that fork.
//!
//! The orchestrator is a child subreaper: orphaned grandchildren of
//! services are re-parented to it and must be reaped, or they stay zombies.
//! Reaping them with `waitpid(-1)` would steal the exit statuses of tracked
//! children from anyone else waiting on them, so there is exactly one
//! reaper and every child is registered with it. A child can exit, and be
//! reaped, before the thread that forked it has registered it; so while
//! any spawn is in progress, an exit nobody registered is kept aside
//! rather than counted as an orphan's, and the spawn that finishes looks
//! there first. What is kept aside once every spawn that was in progress
//! at its reap has ended belonged to an orphan. No lock is held across a
//! fork, so spawns proceed side by side.
//!
//! A child's number could only be an earlier orphan's again if the kernel
//! handed out every other number in between (it allocates them in a
//! cycle), within one spawn; the exit of a child still unreaped is never
//! taken for it.
//!
//! Forking happens on a few long-lived threads ([`Spawner`]): the
//! parent-death signal fires when the *thread* that forked a child exits,
//! so forking from a pool thread that the runtime retires when idle would
//! kill services for no reason. Those threads also keep every signal
//! blocked, so no signal handler of the orchestrator can run in a child
//! before the child resets its signal handling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::spawn::{CONCURRENT_SPAWNS, SpawnError, SpawnPlan, Spawned, spawn};
use crate::{ExitStatus, Signal};

/// Called once with the exit status of the process it was registered for.
pub type ExitCallback = Box<dyn FnOnce(ExitStatus) + Send>;

/// What one call to [`Reaper::reap`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Exits delivered to their callbacks.
    pub tracked: usize,
    /// Processes nobody registered (orphans re-parented to us) reaped
    /// while no spawn was in progress. Those reaped during a spawn are
    /// kept aside, and logged, not counted, when they are let go.
    pub orphans: usize,
}

/// An exit nobody had registered when it was reaped.
struct Unclaimed {
    pid: i32,
    status: ExitStatus,
    /// The number of the newest spawn begun by then: only a spawn up to
    /// this one can own it.
    newest_spawn: u64,
}

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, ExitCallback>,
    /// Spawns begun so far; each spawn's number.
    spawns_begun: u64,
    /// The numbers of the spawns between their start and the
    /// registration of their child (at most one per spawning thread).
    in_progress: Vec<u64>,
    /// Exits reaped while a spawn was in progress that nobody had
    /// registered: a child of one of those spawns, or an orphan.
    unclaimed: Vec<Unclaimed>,
}

impl Table {
    fn begin_spawn(&mut self) -> u64 {
        self.spawns_begun += 1;
        self.in_progress.push(self.spawns_begun);
        self.spawns_begun
    }

    /// Called with the lock held when spawn `number` ends. Returns the exit
    /// of `pid` if it was reaped before its registration.
    fn finish_spawn(&mut self, number: u64, pid: Option<i32>) -> Option<ExitStatus> {
        self.in_progress.retain(|n| *n != number);
        let early = pid.and_then(|pid| {
            // The newest entry: an orphan that had the same number can
            // only have been reaped before this child existed. Whether
            // this child is still ours to reap (running, or a zombie)
            // settles it: then the entry is that orphan's.
            let at = self.unclaimed.iter().rposition(|u| u.pid == pid)?;
            if is_unreaped_child(pid) {
                return None;
            }
            Some(self.unclaimed.remove(at).status)
        });
        // Kept-aside exits that no spawn still in progress can own were
        // orphans'. Spawns follow each other without a gap while many
        // services start, so waiting for none to be in progress could
        // keep them for the whole start-up.
        let oldest = self.in_progress.iter().min().copied().unwrap_or(u64::MAX);
        self.unclaimed.retain(|u| {
            let owner_may_be_running = u.newest_spawn >= oldest;
            if !owner_may_be_running {
                tracing::debug!(pid = u.pid, status = %u.status, "reaped an orphaned process");
            }
            owner_may_be_running
        });
        early
    }
}

/// Whether `pid` is a child of this process that has not been reaped.
fn is_unreaped_child(pid: i32) -> bool {
    any_unreaped(Some(pid))
}

/// Whether the child `pid` (or, for `None`, any child) exists, running or
/// not yet reaped. One system call, and no status is taken.
fn any_unreaped(pid: Option<i32>) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        let id = pid.map_or(Id::All, |p| Id::Pid(Pid::from_raw(p)));
        match waitid(id, flags) {
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return false,
            // Children exist (`StillAlive`: none has exited yet), or a
            // zombie is waiting; an unexpected error counts as yes.
            _ => return true,
        }
    }
}

/// One exited child, taken (`waitpid(-1, WNOHANG | __WALL)`); `None`: no
/// child has exited. The status is decoded here because nix's decoding
/// refuses real-time signals (`EINVAL`), with the child already reaped:
/// a service killed by `SIGRTMIN+6` would have lost its exit, and ended
/// the round of reaping.
fn take_exit() -> Result<Option<(i32, ExitStatus)>, Errno> {
    loop {
        let mut raw: libc::c_int = 0;
        // SAFETY: waitpid writes only the status word it is given.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::__WALL) };
        if pid < 0 {
            return Err(Errno::last());
        }
        if pid == 0 {
            return Ok(None);
        }
        let status = if libc::WIFEXITED(raw) {
            ExitStatus::Code(libc::WEXITSTATUS(raw))
        } else if libc::WIFSIGNALED(raw) {
            ExitStatus::Signal {
                signal: Signal::from_exit(libc::WTERMSIG(raw)).unwrap_or(Signal::KILL),
                core_dumped: libc::WCOREDUMP(raw),
            }
        } else {
            // A ptrace stop (without WUNTRACED nothing else): not an exit.
            continue;
        };
        return Ok(Some((pid, status)));
    }
}

#[derive(Default)]
pub struct Reaper {
    table: Mutex<Table>,
}

impl Reaper {
    /// The process's one reaper.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        REAPER.get_or_init(Reaper::default)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks `plan` and registers `on_exit` for it, such that its exit is
    /// delivered to `on_exit` however early it comes. `on_exit` runs on
    /// this thread if the child was reaped before it could be registered.
    pub fn spawn(&self, plan: &SpawnPlan, on_exit: ExitCallback) -> Result<Spawned, SpawnError> {
        self.register_around(|| spawn(plan), on_exit)
    }

    fn register_around(
        &self,
        fork: impl FnOnce() -> Result<Spawned, SpawnError>,
        on_exit: ExitCallback,
    ) -> Result<Spawned, SpawnError> {
        let number = self.lock().begin_spawn();
        // Ends the spawn if `fork` panics, or kept-aside exits would never
        // be let go; otherwise it ends below, with the child's pid.
        struct EndOnPanic<'a>(&'a Reaper, u64);
        impl Drop for EndOnPanic<'_> {
            fn drop(&mut self) {
                self.0.lock().finish_spawn(self.1, None);
            }
        }
        let on_panic = EndOnPanic(self, number);
        let result = fork();
        std::mem::forget(on_panic);
        let mut table = self.lock();
        let pid = result.as_ref().ok().map(|s| s.pid as i32);
        match table.finish_spawn(number, pid) {
            Some(status) => {
                drop(table);
                on_exit(status);
            }
            None => {
                if let Some(pid) = pid
                    && table.waiting.insert(pid, on_exit).is_some()
                {
                    // Only if the number came round again within one
                    // spawn; the older registration's exit is lost.
                    tracing::error!(pid, "a process number was registered twice");
                }
            }
        }
        result
    }

    /// Reaps every child that has exited (the thread of
    /// [`Reaper::start_thread`] calls it at every exit).
    pub fn reap(&self) -> Reaped {
        let mut out = Reaped::default();
        loop {
            // Locked for each exit, and each exit delivered as soon as it
            // is taken, not after the whole round: a round of a
            // shutdown's exits takes milliseconds (the kernel's release of
            // each process), and neither the first exit nor a spawn should
            // wait for the last.
            let callback = {
                let mut table = self.lock();
                let (pid, status) = match take_exit() {
                    Ok(Some(exit)) => exit,
                    Ok(None) | Err(Errno::ECHILD) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("waitpid failed: {e}");
                        break;
                    }
                };
                match table.waiting.remove(&pid) {
                    Some(callback) => Some((callback, status)),
                    None if !table.in_progress.is_empty() => {
                        let newest_spawn = table.spawns_begun;
                        table.unclaimed.push(Unclaimed {
                            pid,
                            status,
                            newest_spawn,
                        });
                        None
                    }
                    None => {
                        out.orphans += 1;
                        tracing::debug!(pid, %status, "reaped an orphaned process");
                        None
                    }
                }
            };
            if let Some((callback, status)) = callback {
                out.tracked += 1;
                // One callback's panic must not keep the others' exits back.
                let delivered =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(status)));
                if delivered.is_err() {
                    tracing::error!(%status, "an exit callback panicked");
                }
            }
        }
        out
    }

    /// Readies the process for [`Reaper::start_thread`]; call it while the
    /// process has one thread. SIGCHLD goes back to its default action (one
    /// ignored through `exec` would have the kernel reap children itself,
    /// so that no exit ever reached us) and is blocked in this thread, and
    /// so in every thread made from here on: it then stays pending until
    /// the reaping thread takes it. Children start with no signal blocked.
    pub fn prepare_process() -> std::io::Result<()> {
        use nix::sys::signal::{SigHandler, Signal as Sig, signal};
        // SAFETY: SIG_DFL installs no code of ours; nothing else in the
        // process handles SIGCHLD.
        unsafe { signal(Sig::SIGCHLD, SigHandler::SigDfl) }.map_err(std::io::Error::from)?;
        child_signal().thread_block().map_err(std::io::Error::from)
    }

    /// Starts the thread that reaps children as they exit: it sleeps in
    /// `sigwait` for SIGCHLD, which every other thread keeps blocked (see
    /// [`Reaper::prepare_process`]), and reaps everything that has exited
    /// each time it comes. An exit after a round of reaping leaves the
    /// signal pending, so none is missed; orphans adopted from anywhere
    /// (as PID 1) signal like children. Idle, the thread sleeps in the
    /// kernel: it wakes only when a child exits (or is stopped or
    /// continued, for an empty round).
    ///
    /// Reaping on SIGCHLD on the runtime thread instead cost that thread
    /// the kernel's release of every exited process (a fifth of its time
    /// in a shutdown of 100 services) and a signal handler per exit, and
    /// the exits waited there until every other ready task had run: in a
    /// shutdown, until every service had been signalled and every pipe
    /// closed. Here they are collected on the other core as they happen.
    pub fn start_thread(&'static self) -> std::io::Result<()> {
        use nix::sys::signal::{SigSet, Signal as Sig};
        let blocked = SigSet::thread_get_mask().map_err(std::io::Error::from)?;
        if !blocked.contains(Sig::SIGCHLD) {
            return Err(std::io::Error::other(
                "SIGCHLD is not blocked: Reaper::prepare_process was not called first",
            ));
        }
        std::thread::Builder::new()
            .name("bh-reaper".into())
            // Callbacks and log lines run here too; only touched pages
            // are resident.
            .stack_size(128 * 1024)
            .spawn(move || {
                block_all_signals();
                self.reap_forever();
            })?;
        Ok(())
    }

    fn reap_forever(&self) -> ! {
        let chld = child_signal();
        loop {
            // A panic must not end reaping for good, and exits may still
            // wait behind it: reap again soon rather than at the next
            // signal.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reap())).is_err() {
                tracing::error!("reaping panicked; reaping again in 100 ms");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            match chld.wait() {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("waiting for SIGCHLD failed: {e}; reaping again in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Whether this process has any child at all, running or not yet
    /// reaped (children of every thread count). One system call, and no
    /// status is taken: a child that exited stays for [`Reaper::reap`].
    pub fn has_children(&self) -> bool {
        any_unreaped(None)
    }

    /// The pids that are not registered processes (orphans re-parented to
    /// this process, or a child whose spawn is still in progress).
    pub fn unregistered(&self, mut pids: Vec<i32>) -> Vec<i32> {
        let table = self.lock();
        pids.retain(|p| !table.waiting.contains_key(p));
        pids
    }

    /// How many processes are registered and not yet reaped.
    pub fn tracked(&self) -> usize {
        self.lock().waiting.len()
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

    /// Waits for an exit by reaping until it arrives. Without the reaping
    /// thread this polls, so it is for tests and tools, not the daemon.
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

/// The threads that fork ([`CONCURRENT_SPAWNS`] of them, taking jobs from
/// one queue). Cheap to clone; the threads live as long as the process.
#[derive(Clone)]
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawning threads for `reaper`.
    pub fn start(reaper: &'static Reaper) -> std::io::Result<Spawner> {
        crate::spawn::reserve_descriptor_slots();
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..CONCURRENT_SPAWNS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("bh-spawner".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    block_all_signals();
                    loop {
                        // The lock is held while waiting: the other
                        // threads wait for it instead, and the next job
                        // goes to whichever holds it then.
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        let result = reaper.spawn(&job.plan, job.on_exit);
                        // The plan's descriptors (cgroup files, readiness
                        // pipe ends) are closed here, after the fork.
                        drop(job.plan);
                        (job.reply)(result);
                    }
                })?;
        }
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

/// The set holding SIGCHLD alone.
fn child_signal() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGCHLD);
    set
}

fn block_all_signals() {
    let all = nix::sys::signal::SigSet::all();
    if let Err(e) = all.thread_block() {
        tracing::warn!(
            "cannot block signals on the {} thread: {e}",
            std::thread::current().name().unwrap_or("orchestrator")
        );
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
        let plan = crate::spawn::shell(script);
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

#[cfg(test)]
mod concurrency_tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::{AsFd, OwnedFd};

    fn plan(argv: &[&str]) -> SpawnPlan {
        let mut plan = SpawnPlan::new(
            CString::new(argv[0]).unwrap(),
            argv.iter().map(|s| CString::new(*s).unwrap()).collect(),
        );
        plan.output = crate::spawn::Output::Discard;
        plan
    }

    fn channel_callback() -> (ExitCallback, mpsc::Receiver<ExitStatus>) {
        let (tx, rx) = mpsc::channel();
        (
            Box::new(move |status| {
                let _ = tx.send(status);
            }),
            rx,
        )
    }

    /// Reaps (as the reaping thread would) until `pid` has been taken
    /// and kept aside as nobody's.
    fn reap_until_unclaimed(reaper: &Reaper, pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            reaper.reap();
            if reaper.lock().unclaimed.iter().any(|u| u.pid == pid as i32) {
                return;
            }
            assert!(Instant::now() < deadline, "child {pid} was never reaped");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn an_exit_reaped_before_its_registration_reaches_its_callback() {
        let reaper = Reaper::global();
        let (on_exit, rx) = channel_callback();
        let spawned = reaper
            .register_around(
                || {
                    let spawned = spawn(&plan(&["/bin/sh", "-c", "exit 7"]))?;
                    // The child exits and is reaped before the spawning
                    // thread gets to register it.
                    reap_until_unclaimed(reaper, spawned.pid);
                    Ok(spawned)
                },
                on_exit,
            )
            .unwrap();
        assert_eq!(
            rx.try_recv(),
            Ok(ExitStatus::Code(7)),
            "the early exit of {} was not delivered",
            spawned.pid
        );
    }

    #[test]
    fn an_orphan_that_had_the_same_number_is_not_taken_for_the_child() {
        let reaper = Reaper::global();
        let (on_exit, rx) = channel_callback();
        let spawned = reaper
            .register_around(
                || {
                    let spawned = spawn(&plan(&["/bin/sleep", "30"]))?;
                    // An orphan with this number, reaped while the spawn
                    // was in progress (the number was then free again).
                    let mut table = reaper.lock();
                    let newest_spawn = table.spawns_begun;
                    table.unclaimed.push(Unclaimed {
                        pid: spawned.pid as i32,
                        status: ExitStatus::Code(99),
                        newest_spawn,
                    });
                    Ok(spawned)
                },
                on_exit,
            )
            .unwrap();
        assert_eq!(
            rx.try_recv(),
            Err(mpsc::TryRecvError::Empty),
            "a running child was given an orphan's exit"
        );
        nix::sys::signal::kill(
            Pid::from_raw(spawned.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert_eq!(
            reaper.wait_blocking(rx),
            ExitStatus::Signal {
                signal: Signal::KILL,
                core_dumped: false
            }
        );
    }

    fn kept(table: &mut Table, pid: i32, code: i32) {
        let newest_spawn = table.spawns_begun;
        table.unclaimed.push(Unclaimed {
            pid,
            status: ExitStatus::Code(code),
            newest_spawn,
        });
    }

    /// Not a child of this process (the init process): its exit, kept
    /// aside, is the spawn's to take.
    const NOT_OUR_CHILD: i32 = 1;

    #[test]
    fn the_spawn_takes_the_newest_exit_with_its_number() {
        let mut table = Table::default();
        let spawn = table.begin_spawn();
        // An orphan that had the number first, then the child.
        kept(&mut table, NOT_OUR_CHILD, 99);
        kept(&mut table, NOT_OUR_CHILD, 7);
        assert_eq!(
            table.finish_spawn(spawn, Some(NOT_OUR_CHILD)),
            Some(ExitStatus::Code(7))
        );
        assert!(table.unclaimed.is_empty(), "the orphan's exit was kept");
    }

    #[test]
    fn kept_exits_go_once_no_spawn_that_could_own_them_is_in_progress() {
        let mut table = Table::default();
        let first = table.begin_spawn();
        kept(&mut table, 1_000_001, 0);
        let second = table.begin_spawn();
        assert_eq!(table.finish_spawn(first, Some(1_000_002)), None);
        assert!(
            table.unclaimed.is_empty(),
            "an exit only the first spawn could own outlived it"
        );
        kept(&mut table, 1_000_003, 0);
        let third = table.begin_spawn();
        table.finish_spawn(third, None);
        assert_eq!(table.unclaimed.len(), 1, "the second spawn may own it");
        table.finish_spawn(second, None);
        assert!(table.unclaimed.is_empty());
    }

    /// A pipe with one page of room, filled: a child that writes to it
    /// blocks until the test reads.
    fn full_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let size = nix::fcntl::fcntl(w.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
        nix::unistd::write(&w, &vec![0u8; size as usize]).unwrap();
        (r, w)
    }

    #[test]
    fn a_spawn_completes_while_another_child_is_held_before_exec() {
        let reaper = Reaper::global();
        let spawner = Spawner::start(reaper).unwrap();
        let (release, hold) = full_pipe();
        let mut held = plan(&["/bin/true"]);
        // The child's first step writes to each of these (its cgroup's
        // member list, normally): this one blocks it there.
        held.cgroup_procs = vec![hold];
        let (held_exit, held_exit_rx) = channel_callback();
        let (held_tx, held_rx) = mpsc::channel();
        spawner.submit(
            held,
            held_exit,
            Box::new(move |r| {
                let _ = held_tx.send(r.map(|s| s.pid));
            }),
        );
        let (free_exit, free_exit_rx) = channel_callback();
        let (free_tx, free_rx) = mpsc::channel();
        spawner.submit(
            plan(&["/bin/true"]),
            free_exit,
            Box::new(move |r| {
                let _ = free_tx.send(r.map(|s| s.pid));
            }),
        );
        let free = free_rx.recv_timeout(Duration::from_secs(10));
        let held_done_early = held_rx.try_recv().is_ok();
        // Let the held child go on, whatever happened above.
        let mut page = vec![0u8; 4096];
        nix::unistd::read(&release, &mut page).unwrap();
        assert!(
            free.is_ok(),
            "the second spawn waited for the first one's child"
        );
        assert!(
            !held_done_early,
            "the held spawn finished while its child was held"
        );
        assert!(
            held_rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .is_ok()
        );
        assert_eq!(reaper.wait_blocking(free_exit_rx), ExitStatus::Code(0));
        assert_eq!(reaper.wait_blocking(held_exit_rx), ExitStatus::Code(0));
    }
}
