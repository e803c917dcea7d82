//! The service actor: one task per service that owns its state machine,
//! its process, its timers and its log pump.
//!
//! The loop waits on exactly the things that can change the service (a
//! command, the process's exit, a timer, the process group emptying) and
//! nothing else: an idle service costs no wake-ups. Each happening becomes
//! an [`Input`] for the pure state machine, whose effects are carried out
//! here in order; everything that changed is then published at once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use blackhole_api::{LastExit, ProbeStatus, ServiceStatus, State, rfc3339};
use blackhole_core::config::Check;
use blackhole_core::config::ServiceSpec;
use blackhole_core::machine::{Effect, EndReason, ExitStatus, Input, Machine, Policy, Timer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use super::counters::ServiceCounters;
use super::deps::Deps;
use super::health::{self, Health, Notice};
use super::ops::LaunchError;
use super::{Command, Outcome, Processes, Reply, Snapshot};
use crate::events::EventBus;
use crate::logs::{self, ServiceLog};

/// How long an exit waits for the last output of the process to be read.
/// Only a process that passed its pipes to something still running makes
/// this wait at all.
const DRAIN_BOUND: Duration = Duration::from_millis(250);

/// Maps the machine's monotonic instants to wall-clock time for status.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    mono: Instant,
    wall: SystemTime,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

impl Clock {
    pub fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.mono {
            self.wall + (t - self.mono)
        } else {
            self.wall - (self.mono - t)
        }
    }
}

/// What the current process of the service needs watching.
struct Run {
    exit: oneshot::Receiver<ExitStatus>,
    pump: JoinHandle<()>,
}

enum Goal {
    Started,
    Stopped,
    /// A new process must have been spawned after this many runs.
    Restarted(u64),
}

struct Waiter {
    goal: Goal,
    reply: Reply,
}

enum Happening {
    Command(Option<Command>),
    Exit(ExitStatus),
    Timer(Timer),
    GroupChanged,
    Health(health::Signal),
    DepsChanged,
}

pub struct Actor<P: Processes> {
    spec: Arc<ServiceSpec>,
    machine: Machine,
    procs: P,
    commands: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Snapshot>,
    events: EventBus,
    log: Arc<ServiceLog>,
    clock: Clock,
    backoff: Option<Pin<Box<Sleep>>>,
    stop_kill: Option<Pin<Box<Sleep>>>,
    start_timeout: Option<Pin<Box<Sleep>>>,
    run: Option<Run>,
    /// The machine asked to hear when the group is empty ...
    want_watch: bool,
    /// ... and the watch is armed (only once the main process is gone).
    watching: bool,
    waiters: Vec<Waiter>,
    shutting_down: bool,
    oom_base: u64,
    exited_at: Option<SystemTime>,
    health: Health,
    deps: Deps,
    /// The last dependency verdict fed to the machine.
    deps_met: Option<bool>,
    counters: Arc<ServiceCounters>,
    /// Runs whose end was counted.
    ended_seen: u64,
    /// The service's cgroup and its CPU time at the current run's start.
    cgroup: Option<(Arc<std::path::PathBuf>, u64)>,
    /// The environment as status shows it (secrets masked), made once per
    /// configuration rather than on every publish.
    environment: Arc<std::collections::BTreeMap<String, String>>,
}

/// The next health signal. Its future is large (every probe's state) and
/// most services watch nothing, so it is boxed, and only when needed.
async fn health_signal(health: &mut Health) -> health::Signal {
    if health.watches_nothing() {
        std::future::pending().await
    } else {
        Box::pin(health.next()).await
    }
}

fn timer_input(t: Timer) -> Input {
    match t {
        Timer::Backoff => Input::BackoffElapsed,
        Timer::StopKill => Input::StopTimedOut,
        Timer::StartTimeout => Input::StartTimedOut,
    }
}

fn sleep_until(deadline: tokio::time::Instant) -> Pin<Box<Sleep>> {
    Box::pin(tokio::time::sleep_until(deadline))
}

async fn fire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn exited(run: &mut Option<Run>) -> ExitStatus {
    match run {
        Some(r) => match (&mut r.exit).await {
            Ok(status) => status,
            // The reaper dropped the callback: cannot happen while the
            // process exists; treat as killed so the service is not stuck.
            Err(_) => ExitStatus::Signal {
                signal: blackhole_core::signal::Signal::KILL,
                core_dumped: false,
            },
        },
        None => std::future::pending().await,
    }
}

impl<P: Processes> Actor<P> {
    pub fn new(
        spec: Arc<ServiceSpec>,
        procs: P,
        commands: mpsc::Receiver<Command>,
        events: EventBus,
        log: Arc<ServiceLog>,
        clock: Clock,
        counters: Arc<ServiceCounters>,
    ) -> (Self, watch::Receiver<Snapshot>) {
        let machine = Machine::new(Policy::from_spec(&spec), Instant::now());
        let first = Snapshot {
            status: initial_status(&spec, clock.wall(machine.since())),
            started: None,
            next_start_at: None,
            runs: 0,
            environment: super::masked_environment(&spec),
            cgroup: None,
            cpu_base_usec: 0,
        };
        let environment = first.environment.clone();
        let (snapshot, rx) = watch::channel(first);
        let health = Health::new(spec.clone(), procs.context(), log.clone());
        let actor = Actor {
            spec,
            machine,
            procs,
            commands,
            snapshot,
            events,
            log,
            clock,
            backoff: None,
            stop_kill: None,
            start_timeout: None,
            run: None,
            want_watch: false,
            watching: false,
            waiters: Vec::new(),
            shutting_down: false,
            oom_base: 0,
            exited_at: None,
            health,
            deps: Deps::default(),
            deps_met: None,
            counters,
            ended_seen: 0,
            cgroup: None,
            environment,
        };
        (actor, rx)
    }

    /// Runs until shut down. Takes the actor boxed so that the future
    /// holds one pointer to it rather than a copy beside the one it works on.
    pub async fn run(mut self: Box<Self>) {
        loop {
            let happening = tokio::select! {
                status = exited(&mut self.run) => Happening::Exit(status),
                cmd = self.commands.recv() => Happening::Command(cmd),
                _ = fire(&mut self.backoff) => Happening::Timer(Timer::Backoff),
                _ = fire(&mut self.stop_kill) => Happening::Timer(Timer::StopKill),
                _ = fire(&mut self.start_timeout) => Happening::Timer(Timer::StartTimeout),
                _ = self.procs.changed(), if self.watching => Happening::GroupChanged,
                sig = health_signal(&mut self.health) => Happening::Health(sig),
                _ = self.deps.changed() => Happening::DepsChanged,
            };
            // Each handler is boxed: the task then holds only the loop's
            // own state while idle, not the largest handler's (a few KiB
            // per service, thousands of services).
            match happening {
                Happening::Command(Some(cmd)) => Box::pin(self.command(cmd)).await,
                Happening::Command(None) => {
                    // Nobody can reach us any more: stop and end.
                    self.shutting_down = true;
                    Box::pin(self.feed(Input::Stop)).await;
                }
                Happening::Exit(status) => Box::pin(self.on_exit(status)).await,
                Happening::Timer(t) => {
                    self.clear_timer(t);
                    let input = timer_input(t);
                    Box::pin(self.feed(input)).await;
                    // Said after the SIGKILL (sent by the transition), so
                    // that writing it does not delay it.
                    if t == Timer::StopKill {
                        tracing::warn!(
                            service = %self.spec.name,
                            "did not stop within {}; sent SIGKILL",
                            humantime::format_duration(self.spec.stop_timeout)
                        );
                    }
                }
                Happening::GroupChanged => {
                    if self.procs.is_empty() {
                        Box::pin(self.feed(Input::GroupEmpty)).await;
                    }
                }
                Happening::Health(sig) => Box::pin(self.on_health(sig)).await,
                Happening::DepsChanged => Box::pin(self.check_deps()).await,
            }
            self.publish();
            self.settle_waiters();
            if self.shutting_down && self.machine.state() == State::Stopped && self.run.is_none() {
                self.procs.release();
                self.settle_waiters();
                return;
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start(reply) => {
                self.wait_for(Goal::Started, reply);
                self.feed(Input::Start).await;
            }
            Command::Stop(reply) => {
                self.wait_for(Goal::Stopped, reply);
                self.feed(Input::Stop).await;
            }
            Command::Restart(reply) => {
                self.wait_for(Goal::Restarted(self.machine.runs()), reply);
                self.feed(Input::Restart).await;
            }
            Command::Update(spec) => {
                self.machine.set_policy(Policy::from_spec(&spec));
                self.log
                    .writer()
                    .set_limits(&spec.name, spec.log_max_size, spec.log_max_files)
                    .await;
                self.health.set_spec(spec.clone());
                self.environment = super::masked_environment(&spec);
                self.spec = spec;
            }
            Command::SetDeps(deps) => {
                self.deps = *deps;
                self.deps_met = None;
                self.check_deps().await;
            }
            Command::Shutdown(reply) => {
                self.shutting_down = true;
                self.wait_for(Goal::Stopped, reply);
                self.feed(Input::Stop).await;
            }
            Command::Kill => {
                if self.machine.state().has_process() {
                    self.feed(Input::Stop).await;
                    self.feed(Input::StopTimedOut).await;
                }
            }
        }
    }

    fn wait_for(&mut self, goal: Goal, reply: Option<Reply>) {
        if let Some(reply) = reply {
            self.waiters.push(Waiter { goal, reply });
        }
    }

    async fn on_exit(&mut self, status: ExitStatus) {
        let Some(run) = self.run.take() else { return };
        self.exited_at = Some(SystemTime::now());
        self.health.ended();
        // Let the pump read what the process wrote just before it ended.
        let mut pump = run.pump;
        if tokio::time::timeout(DRAIN_BOUND, &mut pump).await.is_err() {
            tracing::debug!(
                service = %self.spec.name,
                "output pipes still open after the process ended (a child holds them); reading on"
            );
        }
        let mut group_empty = self.procs.is_empty();
        if !group_empty && self.want_watch {
            group_empty = self.watch_then_check();
        }
        let oom = self.procs.oom_kills() > self.oom_base;
        self.feed(Input::Exited {
            status,
            oom,
            group_empty,
        })
        .await;
    }

    /// Feeds an input and carries out its effects, including the inputs
    /// those effects produce (a spawn's result).
    async fn feed(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let before = self.machine.state();
            let was_ready = self.machine.ready();
            let handled_at = tokio::time::Instant::now();
            let mut effects = self.machine.handle(input, Instant::now(), fastrand::f64());
            // Signals go out before anyone is told of the change: telling
            // waits for room in the log writer's queue, which a burst of
            // notes (a stop of hundreds) or a stalled disk fills, and a
            // stop must not wait for the disk.
            let mut signalled = false;
            effects.retain(|effect| match *effect {
                Effect::Signal(sig) => {
                    self.procs.signal_all(sig);
                    signalled = true;
                    false
                }
                Effect::KillAll => {
                    self.procs.kill_all();
                    signalled = true;
                    false
                }
                _ => true,
            });
            let after = self.machine.state();
            // Stopped for good in a shutdown: the cgroup's removal (on the
            // reclaimer's thread) begins now, not after the telling, so
            // that it overlaps the other services' stops. After the
            // telling, a stop of 100 handed over every cgroup at its end,
            // and their removal was the shutdown's last 3 ms.
            if self.shutting_down && after == State::Stopped && self.run.is_none() {
                self.procs.release();
            }
            if before != after {
                if after == State::Running {
                    self.health.became_ready();
                }
                self.transitioned(before, after, signalled).await;
            } else if after == State::Running && was_ready != self.machine.ready() {
                // Readiness changed without a state change: say so.
                let message = if self.machine.ready() {
                    "ready again".to_string()
                } else {
                    format!(
                        "not ready: {}",
                        self.machine.last_error().unwrap_or("readiness lost")
                    )
                };
                tracing::info!(service = %self.spec.name, "{message}");
                self.log.note(self.machine.pid(), &message).await;
                self.events.publish(
                    &self.spec.name,
                    "health",
                    None,
                    None,
                    self.machine.pid(),
                    message,
                );
            }
            for effect in effects {
                match effect {
                    Effect::Spawn => match self.launch().await {
                        Ok(pid) => queue.push_back(Input::Spawned { pid }),
                        Err(LaunchError::Failed(why)) => queue.push_back(Input::SpawnFailed(why)),
                        Err(LaunchError::Refused(why)) => queue.push_back(Input::StartRefused(why)),
                    },
                    // Carried out (and taken out) before the telling.
                    Effect::Signal(_) | Effect::KillAll => {}
                    Effect::WatchGroup => {
                        self.want_watch = true;
                        // While the main process lives the group cannot be
                        // empty, and its exit comes from the reaper: the
                        // watch (a path look-up and an inotify mark, or a
                        // poll without cgroups) waits until then, and is
                        // not needed at all when nothing outlives it.
                        if self.run.is_none() && self.arm_watch() {
                            queue.push_back(Input::GroupEmpty);
                        }
                    }
                    // A zero delay (`initial_delay = 0`) is due now: the
                    // runtime's timer would add up to a millisecond.
                    Effect::Arm(t, d) if d.is_zero() => {
                        self.clear_timer(t);
                        queue.push_back(timer_input(t));
                    }
                    // From when the input was handled, not from now: the
                    // telling in between may have waited (the kill at the
                    // stop timeout counts from the stop signal).
                    Effect::Arm(t, d) => *self.timer(t) = Some(sleep_until(handled_at + d)),
                    Effect::Disarm(t) => self.clear_timer(t),
                    Effect::Bug(what) => {
                        tracing::error!(service = %self.spec.name, "state machine refused: {what} (this is a bug)")
                    }
                }
            }
        }
        // Count every run that ended, by its reason.
        if self.machine.ended() > self.ended_seen {
            self.ended_seen = self.machine.ended();
            if let Some(x) = self.machine.last_exit() {
                self.counters.exit(x.reason.tag());
            }
        }
        if !self.machine.state().has_process() {
            self.want_watch = false;
            if self.watching {
                self.procs.unwatch();
                self.watching = false;
            }
        }
    }

    /// Watches the group unless it is empty already; whether it is empty.
    fn arm_watch(&mut self) -> bool {
        self.procs.is_empty() || self.watch_then_check()
    }

    /// Watches the group, then looks again, so that an emptying between
    /// the caller's look and the watch is seen; whether it is empty.
    fn watch_then_check(&mut self) -> bool {
        if !self.watching {
            self.procs.watch();
            self.watching = true;
        }
        self.procs.is_empty()
    }

    fn timer(&mut self, t: Timer) -> &mut Option<Pin<Box<Sleep>>> {
        match t {
            Timer::Backoff => &mut self.backoff,
            Timer::StopKill => &mut self.stop_kill,
            Timer::StartTimeout => &mut self.start_timeout,
        }
    }

    fn clear_timer(&mut self, t: Timer) {
        *self.timer(t) = None;
    }

    async fn launch(&mut self) -> Result<u32, LaunchError> {
        let spec = self.spec.clone();
        let extras = self.health.prepare()?;
        let launched = self.procs.launch(&spec, extras).await?;
        let pid = launched.pid;
        self.cgroup = self.procs.cgroup().map(|(p, u)| (Arc::new(p), u));
        self.health.started(pid);
        self.oom_base = self.procs.oom_kills();
        let pump = tokio::spawn(logs::pump(
            self.log.clone(),
            pid,
            launched.stdout,
            launched.stderr,
        ));
        self.run = Some(Run {
            exit: launched.exit,
            pump,
        });
        Ok(pid)
    }

    /// Tells everyone about a state change: the event bus, the service's
    /// log, the orchestrator's log.
    /// `signalled`: the change sent the service a signal.
    async fn transitioned(&mut self, from: State, to: State, signalled: bool) {
        let name = self.spec.name.clone();
        let m = &self.machine;
        let message = match to {
            State::Starting => "starting".to_string(),
            State::Running => match m.pid() {
                Some(pid) => format!("running (pid {pid})"),
                None => "running".into(),
            },
            State::Stopping => "stopping".into(),
            State::Stopped => "stopped".into(),
            State::Exited => match m.last_exit() {
                Some(x) => x.reason.to_string(),
                None => "exited".into(),
            },
            State::Failed => m.last_error().unwrap_or("failed").to_string(),
            State::Restarting => {
                let why = m
                    .last_exit()
                    .map(|x| x.reason.to_string())
                    .unwrap_or_default();
                let delay = m.next_start_in().unwrap_or_default();
                format!("{why}; restarting in {:.1}s", delay.as_secs_f64())
            }
            State::Blocked => m
                .blocked_on()
                .unwrap_or("waiting for dependencies")
                .to_string(),
        };
        let pid = m.pid();
        match to {
            State::Failed => tracing::error!(service = %name, "{from} -> {to}: {message}"),
            State::Restarting => tracing::warn!(service = %name, "{from} -> {to}: {message}"),
            // The orchestrator said it is stopping everything; each
            // service's "stopped" follows (one line per service, not two:
            // a terminal write each, on the path of a shutdown).
            State::Stopping if self.shutting_down => {
                tracing::debug!(service = %name, "{from} -> {to}: {message}")
            }
            _ => tracing::info!(service = %name, "{from} -> {to}: {message}"),
        }
        if to != State::Starting {
            self.log.note(pid, &message).await;
        }
        if signalled {
            // The rest of the telling waits until the other services
            // being stopped have had their signals too: a stop of many
            // signals them all back to back, where signalling each after
            // the previous one's telling left the last waiting several
            // milliseconds. The lines stay before the yield, so that they
            // precede whatever the signal makes the service print.
            tokio::task::yield_now().await;
        }
        self.events.state(&name, from, to, pid, message);
    }

    fn publish(&mut self) {
        let m = &self.machine;
        let since = self.clock.wall(m.since());
        let status = ServiceStatus {
            name: self.spec.name.clone(),
            state: m.state(),
            enabled: self.spec.enabled,
            pid: m.pid(),
            restarts: m.restarts(),
            since: rfc3339(since),
            uptime_secs: None,
            last_exit: m.last_exit().map(|x| LastExit {
                code: match x.status {
                    Some(ExitStatus::Code(c)) => Some(c),
                    _ => None,
                },
                signal: match x.status {
                    Some(ExitStatus::Signal { signal, .. }) => Some(signal.name()),
                    _ => None,
                },
                reason: x.reason.tag().to_string(),
                message: x.reason.to_string(),
                at: self.exited_at.map(rfc3339),
            }),
            last_error: m.last_error().map(str::to_string),
            ready: m.ready(),
            kind: kind_name(&self.spec),
            next_start_secs: None,
            blocked_on: m.blocked_on().map(str::to_string),
            failures: m.failures(),
            binary: self.spec.binary.display().to_string(),
            readiness: None,
            liveness: None,
            status_text: self.health.status_text.clone(),
            main_pid: self.health.main_pid.filter(|p| Some(*p) != m.pid()),
            environment: None,
            usage: None,
        };
        let (ready_failures, live_failures) = self.health.failures();
        let mut status = status;
        if let Some(probe) = &self.spec.readiness {
            status.readiness = match (&self.health.last_readiness, &probe.check) {
                (Some(r), _) => Some(probe_status(probe.check.kind(), r, ready_failures)),
                // Signalled checks have no run of their own: say what they wait for.
                (None, Check::Notify | Check::Fd(_) | Check::Log(_)) if m.pid().is_some() => {
                    Some(ProbeStatus {
                        kind: probe.check.kind().into(),
                        ok: m.ready(),
                        message: if m.ready() {
                            "ready".into()
                        } else {
                            "waiting for the service to say it is ready".into()
                        },
                        at: rfc3339(since),
                        failures: 0,
                    })
                }
                _ => None,
            };
        }
        if let (Some(probe), Some(r)) = (&self.spec.liveness, &self.health.last_liveness) {
            status.liveness = Some(probe_status(probe.check.kind(), r, live_failures));
        }
        let snapshot = Snapshot {
            started: m.run_started().map(|t| self.clock.wall(t)),
            next_start_at: m.next_start_in().map(|d| since + d),
            runs: m.runs(),
            environment: self.environment.clone(),
            cgroup: self.cgroup.as_ref().map(|(p, _)| p.clone()),
            cpu_base_usec: self.cgroup.as_ref().map_or(0, |(_, u)| *u),
            status,
        };
        self.snapshot.send_if_modified(|old| {
            if *old == snapshot {
                false
            } else {
                *old = snapshot;
                true
            }
        });
    }

    /// What the service or its checks said.
    async fn on_health(&mut self, sig: health::Signal) {
        let name = self.spec.name.clone();
        match sig {
            health::Signal::Notify(d) => {
                let Some(pid) = d.pid else { return };
                let own = Some(pid) == self.machine.pid() || self.procs.contains(pid);
                if !own {
                    tracing::warn!(
                        service = %name,
                        "ignored a notify message from pid {pid}, which is not a process of this service"
                    );
                    return;
                }
                for notice in health::parse_notify(&d.text) {
                    self.on_notice(notice).await;
                }
            }
            health::Signal::FdReady => self.feed(Input::Ready).await,
            health::Signal::LogMatched(line) => {
                tracing::debug!(service = %name, "readiness pattern matched: {line}");
                self.feed(Input::Ready).await;
            }
            health::Signal::Readiness(r) => {
                let Some(probe) = self.spec.readiness.clone() else {
                    return;
                };
                let ok = r.ok;
                let message = r.message.clone();
                self.counters.probe(0, ok, r.took.as_micros() as u64);
                self.health.last_readiness = Some(r);
                let ready = self.machine.ready();
                if ok && !ready && self.health.readiness_successes() >= probe.success_threshold {
                    self.feed(Input::Ready).await;
                } else if !ok && ready && self.health.failures().0 >= probe.failure_threshold {
                    self.log
                        .note(self.machine.pid(), &format!("not ready: {message}"))
                        .await;
                    self.events.publish(
                        &name,
                        "health",
                        None,
                        None,
                        self.machine.pid(),
                        format!("not ready: {message}"),
                    );
                    self.feed(Input::NotReady(format!(
                        "readiness check failed: {message}"
                    )))
                    .await;
                }
            }
            health::Signal::Liveness(r) => {
                let Some(probe) = self.spec.liveness.clone() else {
                    return;
                };
                let ok = r.ok;
                let message = r.message.clone();
                self.counters.probe(1, ok, r.took.as_micros() as u64);
                self.health.last_liveness = Some(r);
                if !ok && self.health.failures().1 >= probe.failure_threshold {
                    tracing::warn!(service = %name, "liveness check failed {} times: {message}", probe.failure_threshold);
                    self.feed(Input::Unhealthy(EndReason::LivenessFailed(message)))
                        .await;
                }
            }
            health::Signal::WatchdogExpired => {
                if self.machine.state().has_process() {
                    self.feed(Input::Unhealthy(EndReason::WatchdogTimeout))
                        .await;
                }
            }
        }
    }

    async fn on_notice(&mut self, notice: Notice) {
        let pid = self.machine.pid();
        match notice {
            Notice::Ready => {
                if matches!(
                    self.spec.readiness.as_ref().map(|p| &p.check),
                    Some(Check::Notify)
                ) {
                    self.feed(Input::Ready).await;
                }
            }
            Notice::Reloading => {
                self.log.note(pid, "the service says it is reloading").await;
                self.feed(Input::NotReady("reloading (RELOADING=1)".into()))
                    .await;
            }
            Notice::Stopping => self.log.note(pid, "the service says it is stopping").await,
            Notice::Status(text) => self.health.status_text = Some(text),
            Notice::Watchdog => self.health.pet_watchdog(None),
            Notice::WatchdogUsec(d) => self.health.pet_watchdog(Some(d)),
            Notice::WatchdogTrigger => {
                self.feed(Input::Unhealthy(EndReason::WatchdogTimeout))
                    .await
            }
            Notice::MainPid(p) => self.health.main_pid = Some(p),
            Notice::Errno(n) => {
                let text = format!(
                    "the service reports errno {n} ({})",
                    nix::errno::Errno::from_raw(n).desc()
                );
                self.log.note(pid, &text).await;
                self.health.status_text = Some(text);
            }
            Notice::ExtendTimeout(d) => self.feed(Input::ExtendTimeout(d)).await,
        }
    }

    /// Re-reads the dependencies; tells the machine when the verdict
    /// changes, and restarts with a `restart_with` service that restarted.
    async fn check_deps(&mut self) {
        if let Some(other) = self.deps.restarted()
            && self.machine.state().has_process()
        {
            tracing::info!(service = %self.spec.name, "restarting because `{other}` restarted (restart_with)");
            self.feed(Input::Restart).await;
        }
        match self.deps.evaluate() {
            Ok(()) if self.deps_met != Some(true) => {
                self.deps_met = Some(true);
                self.feed(Input::DepsMet).await;
            }
            Err(why) => {
                let changed =
                    self.deps_met != Some(false) || self.machine.blocked_on() != Some(why.as_str());
                self.deps_met = Some(false);
                if changed {
                    self.feed(Input::DepsUnmet(why)).await;
                }
            }
            Ok(()) => {}
        }
    }

    /// Answers every waiter whose transition is complete.
    fn settle_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let state = self.machine.state();
        let runs = self.machine.runs();
        let last_error = self.machine.last_error().map(str::to_string);
        let status = self.snapshot.borrow().view();
        let mut pending = Vec::new();
        for w in self.waiters.drain(..) {
            let started = |spawned_anew: bool| -> Option<Result<(), String>> {
                match state {
                    State::Running | State::Exited if spawned_anew => Some(Ok(())),
                    State::Failed => {
                        Some(Err(last_error.clone().unwrap_or_else(|| "failed".into())))
                    }
                    State::Restarting if spawned_anew => Some(Err(format!(
                        "{}; it will be retried",
                        last_error
                            .clone()
                            .unwrap_or_else(|| "exited during start".into())
                    ))),
                    State::Stopped => Some(Err("stopped before it finished starting".into())),
                    _ => None,
                }
            };
            let verdict = match w.goal {
                Goal::Started => started(true),
                Goal::Restarted(before) => started(runs > before),
                Goal::Stopped => (state == State::Stopped).then_some(Ok(())),
            };
            match verdict {
                Some(Ok(())) => {
                    let _ = w.reply.send(Outcome::Done(status.clone()));
                }
                Some(Err(why)) => {
                    let _ = w.reply.send(Outcome::Failed(status.clone(), why));
                }
                None => pending.push(w),
            }
        }
        self.waiters = pending;
    }
}

fn probe_status(kind: &str, r: &super::probe::ProbeResult, failures: u32) -> ProbeStatus {
    ProbeStatus {
        kind: kind.to_string(),
        ok: r.ok,
        message: r.message.clone(),
        at: rfc3339(r.at),
        failures,
    }
}

fn kind_name(spec: &ServiceSpec) -> String {
    match spec.kind {
        blackhole_core::config::ServiceKind::Simple => "simple".into(),
        blackhole_core::config::ServiceKind::Oneshot => "oneshot".into(),
    }
}

fn initial_status(spec: &ServiceSpec, since: SystemTime) -> ServiceStatus {
    ServiceStatus {
        name: spec.name.clone(),
        state: State::Stopped,
        enabled: spec.enabled,
        pid: None,
        restarts: 0,
        since: rfc3339(since),
        uptime_secs: None,
        last_exit: None,
        last_error: None,
        ready: false,
        kind: kind_name(spec),
        next_start_secs: None,
        blocked_on: None,
        failures: 0,
        binary: spec.binary.display().to_string(),
        readiness: None,
        liveness: None,
        status_text: None,
        main_pid: None,
        environment: None,
        usage: None,
    }
}

/// Status of a service whose configuration is invalid: shown, never run.
pub fn invalid_status(name: &str, error: &str) -> ServiceStatus {
    ServiceStatus {
        name: name.to_string(),
        state: State::Failed,
        enabled: false,
        pid: None,
        restarts: 0,
        since: rfc3339(SystemTime::now()),
        uptime_secs: None,
        last_exit: None,
        last_error: Some(format!("invalid configuration: {error}")),
        ready: false,
        kind: "simple".into(),
        next_start_secs: None,
        blocked_on: None,
        failures: 0,
        binary: String::new(),
        readiness: None,
        liveness: None,
        status_text: None,
        main_pid: None,
        environment: None,
        usage: None,
    }
}
