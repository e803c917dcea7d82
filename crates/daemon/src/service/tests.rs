//! The actor against a fake process layer, on a paused clock: every timer
//! fires exactly when the backoff says, with no real waiting.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blackhole_api::State;
use blackhole_core::backoff::Backoff;
use blackhole_core::config::{Origin, RestartPolicy, RestartSpec, ServiceKind, ServiceSpec};
use blackhole_core::machine::ExitStatus;
use blackhole_core::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::ops::BoxFuture;
use super::*;
use crate::events::EventBus;
use crate::logs::{LogWriter, ServiceLog};

#[derive(Default)]
struct World {
    next_pid: u32,
    launches: Vec<Instant>,
    exits: HashMap<u32, oneshot::Sender<ExitStatus>>,
    signals: Vec<Signal>,
    ignore_term: bool,
    fail_launch: Option<String>,
    /// A process of the service other than the main one (a daemonized
    /// child): survives the stop signal, gone with a kill or `clear_leftover`.
    leftover: bool,
    watches: u32,
    group_changed: Arc<tokio::sync::Notify>,
    /// Called at each signal (a test's probe of what was done before it).
    on_signal: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl World {
    fn end(&mut self, pid: u32, status: ExitStatus) {
        if let Some(tx) = self.exits.remove(&pid) {
            let _ = tx.send(status);
        }
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
    fn crash(&self, code: i32) {
        let mut w = self.world();
        let pids: Vec<u32> = w.exits.keys().copied().collect();
        for pid in pids {
            w.end(pid, ExitStatus::Code(code));
        }
    }
    fn launches(&self) -> Vec<Instant> {
        self.world().launches.clone()
    }
    fn clear_leftover(&self) {
        let mut w = self.world();
        w.leftover = false;
        w.group_changed.notify_one();
    }
}

impl Processes for Fake {
    fn launch<'a>(
        &'a mut self,
        _spec: &'a ServiceSpec,
        _extras: super::health::RunExtras,
    ) -> BoxFuture<'a, Result<Launched, super::ops::LaunchError>> {
        Box::pin(async move {
            let mut w = self.world();
            w.launches.push(Instant::now());
            if let Some(why) = w.fail_launch.clone() {
                return Err(why.into());
            }
            w.next_pid += 1;
            let pid = 1000 + w.next_pid;
            let (tx, rx) = oneshot::channel();
            w.exits.insert(pid, tx);
            Ok(Launched {
                pid,
                exit: rx,
                stdout: None,
                stderr: None,
            })
        })
    }
    fn signal_all(&mut self, sig: Signal) {
        let mut w = self.world();
        w.signals.push(sig);
        if let Some(probe) = &w.on_signal {
            probe();
        }
        if !(w.ignore_term && sig == Signal::TERM) {
            let pids: Vec<u32> = w.exits.keys().copied().collect();
            for pid in pids {
                w.end(
                    pid,
                    ExitStatus::Signal {
                        signal: sig,
                        core_dumped: false,
                    },
                );
            }
        }
    }
    fn kill_all(&mut self) {
        let mut w = self.world();
        w.signals.push(Signal::KILL);
        if let Some(probe) = &w.on_signal {
            probe();
        }
        if std::mem::take(&mut w.leftover) {
            w.group_changed.notify_one();
        }
        let pids: Vec<u32> = w.exits.keys().copied().collect();
        for pid in pids {
            w.end(
                pid,
                ExitStatus::Signal {
                    signal: Signal::KILL,
                    core_dumped: false,
                },
            );
        }
    }
    fn is_empty(&mut self) -> bool {
        let w = self.world();
        w.exits.is_empty() && !w.leftover
    }
    fn contains(&mut self, pid: u32) -> bool {
        self.world().exits.contains_key(&pid)
    }
    fn watch(&mut self) {
        self.world().watches += 1;
    }
    fn unwatch(&mut self) {}
    fn changed(&mut self) -> BoxFuture<'_, ()> {
        let changed = self.world().group_changed.clone();
        Box::pin(async move { changed.notified().await })
    }
    fn release(&mut self) {}
    fn describe(&self) -> String {
        "fake".into()
    }
}

fn spec(policy: RestartPolicy, max_attempts: u32) -> ServiceSpec {
    ServiceSpec {
        name: "svc".into(),
        origin: Origin::Discovered,
        enabled: true,
        kind: ServiceKind::Simple,
        binary: PathBuf::from("/bin/true"),
        args: vec![],
        service_args: false,
        environment: BTreeMap::new(),
        env_files: vec![],
        data_dir: PathBuf::from("/tmp"),
        memory_limit: None,
        log_level: Default::default(),
        stop_signal: Signal::TERM,
        stop_timeout: Duration::from_secs(5),
        success_exit_codes: vec![0],
        restart: RestartSpec {
            policy,
            backoff: Backoff {
                jitter: 0.0,
                ..Backoff::default()
            },
            max_attempts,
            reset_after: Duration::from_secs(3600),
        },
        log_max_size: 1 << 20,
        log_max_files: 2,
        depends_on: vec![],
        restart_with: vec![],
        readiness: None,
        liveness: None,
        start_timeout: None,
        watchdog: None,
        memory_swap_limit: None,
        cpu_quota: None,
        pids_limit: None,
        rlimits: vec![],
        credentials: None,
        no_new_privileges: false,
        sha256: None,
        allow_writable_binary: false,
    }
}

struct Rig {
    fake: Fake,
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(spec: ServiceSpec, fake: Fake) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let writer = LogWriter::start(dir.path().to_path_buf(), 1 << 20, 2).unwrap();
        Rig::start_on(spec, fake, writer, dir, EventBus::default())
    }

    /// [`Rig::start`] with a log writer (on `dir`) and an event bus of the
    /// test's own.
    fn start_on(
        spec: ServiceSpec,
        fake: Fake,
        writer: LogWriter,
        dir: tempfile::TempDir,
        bus: EventBus,
    ) -> Rig {
        let log = ServiceLog::new("svc", writer, false, 256 * 1024);
        let (tx, rx) = mpsc::channel(8);
        let (actor, snapshot) = Actor::new(
            Arc::new(spec),
            fake.clone(),
            rx,
            bus,
            log,
            Clock::default(),
            Default::default(),
        );
        tokio::spawn(Box::new(actor).run());
        Rig {
            fake,
            commands: tx,
            snapshot,
            _dir: dir,
        }
    }

    async fn send(&self, make: impl FnOnce(Reply) -> Command) -> Outcome {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.unwrap();
        rx.await.unwrap()
    }

    fn state(&self) -> State {
        self.snapshot.borrow().status.state
    }

    /// Waits (in paused time) until the state is `want`.
    async fn reach(&mut self, want: State) {
        let deadline = Instant::now() + Duration::from_secs(3600);
        while self.state() != want {
            tokio::select! {
                r = self.snapshot.changed() => r.unwrap(),
                _ = tokio::time::sleep_until(deadline) => panic!("never reached {want}; stuck in {}", self.state()),
            }
        }
    }
}

fn done(o: Outcome) -> blackhole_api::ServiceStatus {
    match o {
        Outcome::Done(s) => s,
        Outcome::Failed(s, why) => panic!("failed: {why} ({:?})", s.state),
    }
}

/// Every service holds one actor future for its whole life: with 1000
/// services each KiB here is a MiB of the orchestrator's memory. Its
/// handlers and its health future are boxed to keep it this small.
#[tokio::test]
async fn an_idle_actor_future_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::start(dir.path().to_path_buf(), 1 << 20, 2).unwrap();
    let (_tx, rx) = mpsc::channel(8);
    let (actor, _snapshot) = Actor::new(
        Arc::new(spec(RestartPolicy::OnFailure, 10)),
        Fake::default(),
        rx,
        EventBus::default(),
        ServiceLog::new("svc", writer, false, 256 * 1024),
        Clock::default(),
        Default::default(),
    );
    let future = Box::new(actor).run();
    let size = std::mem::size_of_val(&future);
    assert!(size <= 512, "the actor's future is {size} bytes");
}

#[tokio::test(start_paused = true)]
async fn start_runs_and_start_again_is_the_same_process() {
    let rig = Rig::start(spec(RestartPolicy::OnFailure, 10), Fake::default());
    let s = done(rig.send(|r| Command::Start(Some(r))).await);
    assert_eq!(s.state, State::Running);
    let again = done(rig.send(|r| Command::Start(Some(r))).await);
    assert_eq!(again.pid, s.pid, "no second instance");
    assert_eq!(rig.fake.launches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn crash_loop_backs_off_exponentially_then_fails() {
    let mut rig = Rig::start(spec(RestartPolicy::OnFailure, 5), Fake::default());
    done(rig.send(|r| Command::Start(Some(r))).await);
    for run in 1..=5 {
        rig.reach(State::Running).await;
        rig.fake.crash(1);
        if run < 5 {
            rig.reach(State::Restarting).await;
        }
    }
    rig.reach(State::Failed).await;
    let launches = rig.fake.launches();
    assert_eq!(launches.len(), 5, "5 failed runs, then it gives up");
    let gaps: Vec<u64> = launches
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    assert_eq!(gaps, [1000, 2000, 4000, 8000]);
    let status = rig.snapshot.borrow().view();
    assert_eq!(status.restarts, 4);
    assert!(status.last_error.unwrap().contains("gave up after 5"));
}

/// The log writer stuck opening a file (a FIFO nobody reads stands for a
/// hung disk) and its queue full behind it: a stop still signals at once,
/// and a service that ignores the signal is killed at its stop timeout,
/// counted from the signal (the notes give up waiting for the writer).
#[tokio::test(start_paused = true)]
async fn a_stalled_log_writer_does_not_hold_up_a_stop() {
    /// Gives the writer thread a reader, however the test ends: opened
    /// for reading and writing, a FIFO's open does not wait, and the
    /// descriptor is kept so that no later open waits either.
    struct Unstick(PathBuf);
    impl Drop for Unstick {
        fn drop(&mut self) {
            let fifo = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.0);
            std::mem::forget(fifo);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stall.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let _unstick = Unstick(fifo);
    let writer = LogWriter::start(dir.path().to_path_buf(), 1 << 20, 2).unwrap();
    let fake = Fake::default();
    let times = Arc::new(Mutex::new(Vec::new()));
    let probe_times = times.clone();
    {
        let mut w = fake.world();
        w.ignore_term = true;
        w.on_signal = Some(Arc::new(move || {
            probe_times.lock().unwrap().push(Instant::now());
        }));
    }
    let spec = spec(RestartPolicy::Never, 0);
    let stop_timeout = spec.stop_timeout;
    let rig = Rig::start_on(spec, fake, writer.clone(), dir, EventBus::default());
    done(rig.send(|r| Command::Start(Some(r))).await);
    let stall = ServiceLog::new("stall", writer.clone(), false, 4096);
    let filler = tokio::spawn(async move {
        loop {
            stall.note(None, "filling the queue").await;
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while writer.queue_room() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never filled"
        );
        tokio::task::yield_now().await;
    }
    rig.commands.send(Command::Stop(None)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.fake.world().signals.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no stop signal while the log writer is stuck"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(rig.fake.world().signals, [Signal::TERM]);
    // Paused time moves on whenever every task waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.fake.world().signals.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no kill at the stop timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rig.fake.world().signals, [Signal::TERM, Signal::KILL]);
    let times = times.lock().unwrap().clone();
    let waited = times[1] - times[0];
    assert!(
        waited >= stop_timeout && waited < stop_timeout + Duration::from_millis(50),
        "killed {waited:?} after the stop signal, not at the stop timeout ({stop_timeout:?})"
    );
    filler.abort();
}

/// Services stopped together are all signalled before any of them tells
/// of it (an event published), so that the last is not kept waiting for
/// the others' telling.
#[tokio::test(start_paused = true)]
async fn services_stopped_together_are_all_signalled_before_the_telling() {
    let bus = EventBus::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rigs: Vec<Rig> = (0..3)
        .map(|_| {
            let fake = Fake::default();
            let (probe_bus, probe_seen) = (bus.clone(), seen.clone());
            fake.world().on_signal = Some(Arc::new(move || {
                probe_seen.lock().unwrap().push(probe_bus.published());
            }));
            let dir = tempfile::tempdir().unwrap();
            let writer = LogWriter::start(dir.path().to_path_buf(), 1 << 20, 2).unwrap();
            Rig::start_on(
                spec(RestartPolicy::Never, 0),
                fake,
                writer,
                dir,
                bus.clone(),
            )
        })
        .collect();
    for rig in &rigs {
        done(rig.send(|r| Command::Start(Some(r))).await);
    }
    let before = bus.published();
    let mut replies = Vec::new();
    for rig in &rigs {
        let (tx, rx) = oneshot::channel();
        rig.commands.try_send(Command::Stop(Some(tx))).unwrap();
        replies.push(rx);
    }
    for rx in replies {
        assert_eq!(done(rx.await.unwrap()).state, State::Stopped);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [before; 3],
        "events published before the last signal"
    );
    assert!(bus.published() > before);
}

#[tokio::test(start_paused = true)]
async fn stop_during_backoff_cancels_the_restart() {
    let mut rig = Rig::start(spec(RestartPolicy::Always, 0), Fake::default());
    done(rig.send(|r| Command::Start(Some(r))).await);
    rig.fake.crash(1);
    rig.reach(State::Restarting).await;
    let s = done(rig.send(|r| Command::Stop(Some(r))).await);
    assert_eq!(s.state, State::Stopped);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(rig.fake.launches().len(), 1, "no restart after the stop");
    assert_eq!(rig.state(), State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn manual_restart_skips_the_backoff() {
    let mut rig = Rig::start(spec(RestartPolicy::OnFailure, 0), Fake::default());
    done(rig.send(|r| Command::Start(Some(r))).await);
    for _ in 0..4 {
        rig.reach(State::Running).await;
        rig.fake.crash(1);
        rig.reach(State::Restarting).await;
    }
    let before = rig.fake.launches();
    let s = done(rig.send(|r| Command::Restart(Some(r))).await);
    assert_eq!(s.state, State::Running);
    let after = rig.fake.launches();
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        *after.last().unwrap(),
        Instant::now(),
        "started at once, no delay"
    );
}

#[tokio::test(start_paused = true)]
async fn stubborn_process_is_killed_at_the_stop_timeout() {
    let fake = Fake::default();
    fake.world().ignore_term = true;
    let rig = Rig::start(spec(RestartPolicy::OnFailure, 0), fake);
    done(rig.send(|r| Command::Start(Some(r))).await);
    let t0 = Instant::now();
    let s = done(rig.send(|r| Command::Stop(Some(r))).await);
    assert_eq!(
        Instant::now() - t0,
        Duration::from_secs(5),
        "SIGKILL exactly at stop_timeout"
    );
    assert_eq!(rig.fake.world().signals, [Signal::TERM, Signal::KILL]);
    assert_eq!(s.last_exit.unwrap().signal.as_deref(), Some("SIGKILL"));
}

#[tokio::test(start_paused = true)]
async fn launch_failure_is_retried_with_backoff() {
    let fake = Fake::default();
    fake.world().fail_launch = Some("no such file".into());
    let mut rig = Rig::start(spec(RestartPolicy::OnFailure, 3), fake);
    match rig.send(|r| Command::Start(Some(r))).await {
        Outcome::Failed(s, why) => {
            assert!(why.contains("no such file"), "{why}");
            assert_eq!(s.state, State::Restarting);
        }
        Outcome::Done(s) => panic!("started? {s:?}"),
    }
    rig.reach(State::Failed).await;
    assert_eq!(rig.fake.launches().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn crash_during_stop_is_not_restarted() {
    let fake = Fake::default();
    fake.world().ignore_term = true;
    let mut rig = Rig::start(spec(RestartPolicy::Always, 0), fake);
    done(rig.send(|r| Command::Start(Some(r))).await);
    let (tx, rx) = oneshot::channel();
    rig.commands.send(Command::Stop(Some(tx))).await.unwrap();
    rig.reach(State::Stopping).await;
    rig.fake.crash(3);
    let s = done(rx.await.unwrap());
    assert_eq!(s.state, State::Stopped);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(rig.fake.launches().len(), 1);
}

/// The group can only be empty once the main process is gone, and the
/// reaper reports that exit: a stop whose main process takes everything
/// with it never watches the group (no inotify mark, no poll).
#[tokio::test(start_paused = true)]
async fn a_stop_that_ends_with_the_main_process_watches_nothing() {
    let fake = Fake::default();
    let rig = Rig::start(spec(RestartPolicy::OnFailure, 10), fake.clone());
    done(rig.send(|r| Command::Start(Some(r))).await);
    let s = done(rig.send(|r| Command::Stop(Some(r))).await);
    assert_eq!(s.state, State::Stopped);
    assert_eq!(fake.world().signals, [Signal::TERM]);
    assert_eq!(fake.world().watches, 0);
}

/// A process that outlives the main one keeps the stop going, watched
/// from the main process's exit on, until it is gone.
#[tokio::test(start_paused = true)]
async fn a_leftover_is_watched_from_the_main_exit_until_it_is_gone() {
    let fake = Fake::default();
    let mut rig = Rig::start(spec(RestartPolicy::OnFailure, 10), fake.clone());
    done(rig.send(|r| Command::Start(Some(r))).await);
    fake.world().leftover = true;
    let (tx, mut stopped) = oneshot::channel();
    rig.commands.send(Command::Stop(Some(tx))).await.unwrap();
    // The main process ended on SIGTERM; the leftover holds the stop.
    let deadline = Instant::now() + Duration::from_secs(1);
    while fake.world().watches == 0 {
        assert!(Instant::now() < deadline, "the group was never watched");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(rig.state(), State::Stopping);
    assert!(
        stopped.try_recv().is_err(),
        "stopped while a process remained"
    );
    fake.clear_leftover();
    rig.reach(State::Stopped).await;
    assert!(matches!(stopped.await.unwrap(), Outcome::Done(_)));
    assert_eq!(fake.world().watches, 1);
    assert_eq!(fake.world().signals, [Signal::TERM]);
}
