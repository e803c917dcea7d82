//! The service state machine.
//!
//! [`Machine::handle`] is a pure function of the machine, an [`Input`], the
//! current instant and a uniform random draw; it returns the [`Effect`]s the
//! caller must carry out (spawn, signal, arm a timer). The service actor in
//! the daemon is a thin loop that turns OS events into inputs and effects
//! into system calls, so every decision is here and table-tested.
//!
//! Every state change goes through [`Machine::enter`], which checks it
//! against [`transition_allowed`]; an invalid one is reported as
//! [`Effect::Bug`] and not applied.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{RestartPolicy, RestartSpec, ServiceKind, ServiceSpec};
use crate::signal::Signal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not running and not asked to run.
    Stopped,
    /// Asked to run, waiting for its dependencies.
    Blocked,
    /// Process spawned, not ready yet (a oneshot stays here until it ends).
    Starting,
    /// Ready.
    Running,
    /// Stop signal sent; waiting until no process of the service remains.
    Stopping,
    /// Ended successfully and the policy does not restart it (a oneshot
    /// that completed).
    Exited,
    /// Ended unsuccessfully and will not be restarted (policy, or attempts
    /// exhausted), or cannot start.
    Failed,
    /// Waiting out a backoff before the next start.
    Restarting,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Stopped,
        State::Blocked,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Exited,
        State::Failed,
        State::Restarting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Blocked => "blocked",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
            State::Restarting => "restarting",
        }
    }

    /// A process of the service may exist in this state.
    pub fn has_process(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one place that says which state changes exist.
pub fn transition_allowed(from: State, to: State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Stopped, Starting | Blocked)
            | (Blocked, Starting | Stopped)
            | (Starting, Running | Stopping | Exited | Failed | Restarting)
            | (Running, Stopping | Exited | Failed | Restarting)
            | (
                Stopping,
                Stopped | Starting | Blocked | Exited | Failed | Restarting
            )
            | (Restarting, Starting | Blocked | Stopped)
            | (Exited, Starting | Blocked | Stopped)
            | (Failed, Starting | Blocked | Stopped)
    )
}

/// How a process ended, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    Code(i32),
    Signal { signal: Signal, core_dumped: bool },
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal {
                signal,
                core_dumped: true,
            } => write!(f, "{signal} (core dumped)"),
            ExitStatus::Signal { signal, .. } => write!(f, "{signal}"),
        }
    }
}

/// Why a run ended. Distinct reasons, so that status says what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Exited on its own with this code.
    Exited(i32),
    /// Killed by a signal it did not get from us.
    Killed(Signal),
    /// Killed by the kernel's OOM killer (the cgroup counted it).
    OomKilled,
    /// Stopped because someone asked.
    Stopped,
    LivenessFailed(String),
    StartTimeout(Duration),
    WatchdogTimeout,
    /// No process could be created, or exec failed.
    SpawnFailed(String),
}

impl EndReason {
    /// A short machine-readable tag: `exited`, `killed`, `oom-killed`, ...
    pub fn tag(&self) -> &'static str {
        match self {
            EndReason::Exited(_) => "exited",
            EndReason::Killed(_) => "killed",
            EndReason::OomKilled => "oom-killed",
            EndReason::Stopped => "stopped",
            EndReason::LivenessFailed(_) => "liveness-failed",
            EndReason::StartTimeout(_) => "start-timeout",
            EndReason::WatchdogTimeout => "watchdog-timeout",
            EndReason::SpawnFailed(_) => "spawn-failed",
        }
    }

    fn from_status(status: ExitStatus) -> EndReason {
        match status {
            ExitStatus::Code(c) => EndReason::Exited(c),
            ExitStatus::Signal { signal, .. } => EndReason::Killed(signal),
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Exited(c) => write!(f, "exited with code {c}"),
            EndReason::Killed(s) => write!(f, "killed by {s}"),
            EndReason::OomKilled => f.write_str("oom-killed (memory limit reached)"),
            EndReason::Stopped => f.write_str("stopped by request"),
            EndReason::LivenessFailed(why) => write!(f, "liveness probe failed: {why}"),
            EndReason::StartTimeout(d) => {
                write!(f, "not ready within {}", humantime::format_duration(*d))
            }
            EndReason::WatchdogTimeout => f.write_str("watchdog timeout: no WATCHDOG=1 in time"),
            EndReason::SpawnFailed(why) => write!(f, "failed to start: {why}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastExit {
    /// `None` when no process ended (spawn failure).
    pub status: Option<ExitStatus>,
    pub reason: EndReason,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Run the service (the operator, `up`, or a dependent asked).
    Start,
    Stop,
    Restart,
    /// A dependency does not meet its condition (the reason says which).
    DepsUnmet(String),
    DepsMet,
    /// The process exists.
    Spawned {
        pid: u32,
    },
    /// No process could be created, or exec failed (and the failed
    /// child is already gone).
    SpawnFailed(String),
    /// Starting is refused and retrying cannot help (a binary that fails
    /// its checksum, a limit that cannot be enforced): failed at once.
    StartRefused(String),
    Ready,
    NotReady(String),
    StartTimedOut,
    /// Liveness failure or watchdog timeout: the service is hung.
    Unhealthy(EndReason),
    /// The main process ended. `group_empty` says whether any other process
    /// of the service remains; `oom` whether the OOM killer ended it.
    Exited {
        status: ExitStatus,
        oom: bool,
        group_empty: bool,
    },
    /// No process of the service remains.
    GroupEmpty,
    StopTimedOut,
    BackoffElapsed,
    /// The service asked for more time (sd_notify `EXTEND_TIMEOUT_USEC`):
    /// the pending start or stop timeout now ends this far from now.
    ExtendTimeout(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    Backoff,
    StopKill,
    StartTimeout,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Create the process (the caller answers with `Spawned` or `SpawnFailed`).
    Spawn,
    /// Send a signal to every process of the service.
    Signal(Signal),
    /// SIGKILL every process of the service (cgroup kill where there is one).
    KillAll,
    /// Report `GroupEmpty` once no process of the service remains.
    WatchGroup,
    /// (Re)arm a timer; it answers with its input when it fires.
    Arm(Timer, Duration),
    Disarm(Timer),
    /// A transition the table forbids was attempted: a bug, to be logged at
    /// error level. The state did not change.
    Bug(String),
}

/// The parts of a service's configuration the machine decides with.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub kind: ServiceKind,
    pub restart: RestartSpec,
    pub success_exit_codes: Vec<i32>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    /// Readiness is signalled by the service or a probe (not by exec alone).
    pub needs_readiness: bool,
    pub start_timeout: Option<Duration>,
}

impl Policy {
    pub fn from_spec(spec: &ServiceSpec) -> Self {
        Policy {
            kind: spec.kind,
            restart: spec.restart.clone(),
            success_exit_codes: spec.success_exit_codes.clone(),
            stop_signal: spec.stop_signal,
            stop_timeout: spec.stop_timeout,
            needs_readiness: spec.readiness.is_some(),
            start_timeout: spec.start_timeout,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Then {
    /// A requested stop: end in `stopped`.
    Stop,
    /// A restart: start again once everything is gone.
    Start,
    /// The run failed or ended on its own: judge it by the policy once the
    /// leftovers are gone.
    Outcome(EndReason),
}

#[derive(Clone, Debug, PartialEq)]
struct StopProgress {
    then: Then,
    main_gone: bool,
    group_empty: bool,
    killed: bool,
    status: Option<ExitStatus>,
}

#[derive(Clone, Debug)]
pub struct Machine {
    policy: Policy,
    state: State,
    since: Instant,
    pid: Option<u32>,
    run_started: Option<Instant>,
    restarts: u32,
    failures: u32,
    ready: bool,
    deps_met: bool,
    blocked_on: Option<String>,
    last_exit: Option<LastExit>,
    last_error: Option<String>,
    stop: Option<StopProgress>,
    next_start_in: Option<Duration>,
    runs: u64,
    ended: u64,
}

impl Machine {
    pub fn new(policy: Policy, now: Instant) -> Self {
        Machine {
            policy,
            state: State::Stopped,
            since: now,
            pid: None,
            run_started: None,
            restarts: 0,
            failures: 0,
            ready: false,
            deps_met: true,
            blocked_on: None,
            last_exit: None,
            last_error: None,
            stop: None,
            next_start_in: None,
            runs: 0,
            ended: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn since(&self) -> Instant {
        self.since
    }
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
    /// Consecutive failed runs (the backoff exponent).
    pub fn failures(&self) -> u32 {
        self.failures
    }
    pub fn ready(&self) -> bool {
        self.ready
    }
    pub fn last_exit(&self) -> Option<&LastExit> {
        self.last_exit.as_ref()
    }
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
    pub fn blocked_on(&self) -> Option<&str> {
        self.blocked_on
            .as_deref()
            .filter(|_| self.state == State::Blocked)
    }
    /// The backoff delay chosen when entering `restarting`.
    pub fn next_start_in(&self) -> Option<Duration> {
        self.next_start_in
            .filter(|_| self.state == State::Restarting)
    }
    /// When the current process started.
    pub fn run_started(&self) -> Option<Instant> {
        self.run_started.filter(|_| self.pid.is_some())
    }
    /// How many processes this service has had (a new one on every spawn).
    pub fn runs(&self) -> u64 {
        self.runs
    }
    /// How many runs have ended (each with a new `last_exit`).
    pub fn ended(&self) -> u64 {
        self.ended
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A reload changed settings that do not need a new process.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Feeds one input; returns what the caller must do, in order.
    pub fn handle(&mut self, input: Input, now: Instant, unit: f64) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.step(input, now, unit, &mut fx);
        fx
    }

    fn step(&mut self, input: Input, now: Instant, unit: f64, fx: &mut Vec<Effect>) {
        use State::*;
        match input {
            Input::Start => match self.state {
                Stopped | Exited | Failed => {
                    self.failures = 0;
                    self.begin_start(now, fx);
                }
                Restarting => {
                    fx.push(Effect::Disarm(Timer::Backoff));
                    self.failures = 0;
                    self.begin_start(now, fx);
                }
                Stopping => {
                    if let Some(stop) = &mut self.stop {
                        stop.then = Then::Start;
                    }
                }
                Blocked | Starting | Running => {}
            },
            Input::Restart => match self.state {
                Starting | Running => self.begin_stop(Then::Start, now, fx),
                Stopping => {
                    if let Some(stop) = &mut self.stop {
                        stop.then = Then::Start;
                    }
                }
                Restarting => {
                    fx.push(Effect::Disarm(Timer::Backoff));
                    self.failures = 0;
                    self.begin_start(now, fx);
                }
                Stopped | Exited | Failed | Blocked => {
                    self.failures = 0;
                    self.begin_start(now, fx);
                }
            },
            Input::Stop => match self.state {
                Starting | Running => self.begin_stop(Then::Stop, now, fx),
                Stopping => {
                    if let Some(stop) = &mut self.stop {
                        stop.then = Then::Stop;
                    }
                }
                Restarting => {
                    fx.push(Effect::Disarm(Timer::Backoff));
                    self.enter(Stopped, now, fx);
                }
                Blocked | Exited | Failed => {
                    self.enter(Stopped, now, fx);
                }
                Stopped => {}
            },
            Input::DepsUnmet(reason) => {
                self.deps_met = false;
                self.blocked_on = Some(reason);
            }
            Input::DepsMet => {
                self.deps_met = true;
                if self.state == Blocked {
                    self.begin_start(now, fx);
                }
            }
            Input::Spawned { pid } => {
                if self.state != Starting {
                    fx.push(Effect::Bug(format!(
                        "process {pid} spawned while {}",
                        self.state
                    )));
                    return;
                }
                self.pid = Some(pid);
                self.run_started = Some(now);
                self.runs += 1;
                self.ready = false;
                let waits = self.policy.kind == ServiceKind::Oneshot || self.policy.needs_readiness;
                if waits {
                    if let Some(t) = self.policy.start_timeout {
                        fx.push(Effect::Arm(Timer::StartTimeout, t));
                    }
                } else {
                    self.ready = true;
                    self.enter(Running, now, fx);
                }
            }
            Input::StartRefused(why) => {
                if self.state != Starting {
                    return;
                }
                self.last_exit = Some(LastExit {
                    status: None,
                    reason: EndReason::SpawnFailed(why.clone()),
                });
                self.ended += 1;
                self.last_error = Some(format!("refused to start: {why}"));
                self.run_started = None;
                self.enter(Failed, now, fx);
            }
            Input::SpawnFailed(why) => {
                if self.state != Starting {
                    return;
                }
                self.last_error = Some(format!("failed to start: {why}"));
                self.run_started = Some(now);
                self.conclude(None, EndReason::SpawnFailed(why), now, unit, fx);
            }
            Input::Ready => match self.state {
                Starting if self.policy.kind == ServiceKind::Simple => {
                    self.ready = true;
                    fx.push(Effect::Disarm(Timer::StartTimeout));
                    self.enter(Running, now, fx);
                }
                Running => self.ready = true,
                _ => {}
            },
            Input::NotReady(why) => {
                if self.state == Running && self.ready {
                    self.ready = false;
                    self.last_error = Some(why);
                }
            }
            Input::StartTimedOut => {
                if self.state == Starting {
                    let t = self.policy.start_timeout.unwrap_or_default();
                    let reason = EndReason::StartTimeout(t);
                    self.last_error = Some(reason.to_string());
                    self.begin_stop(Then::Outcome(reason), now, fx);
                }
            }
            Input::Unhealthy(reason) => {
                if matches!(self.state, Starting | Running) {
                    self.last_error = Some(reason.to_string());
                    self.begin_stop(Then::Outcome(reason), now, fx);
                }
            }
            Input::Exited {
                status,
                oom,
                group_empty,
            } => self.on_exit(status, oom, group_empty, now, unit, fx),
            Input::GroupEmpty => {
                if let Some(stop) = &mut self.stop {
                    stop.group_empty = true;
                    if stop.main_gone {
                        self.finish_stop(now, unit, fx);
                    }
                }
            }
            Input::StopTimedOut => {
                if let Some(stop) = &mut self.stop
                    && !stop.killed
                {
                    stop.killed = true;
                    fx.push(Effect::KillAll);
                }
            }
            Input::ExtendTimeout(d) => match self.state {
                Starting if self.policy.start_timeout.is_some() => {
                    fx.push(Effect::Arm(Timer::StartTimeout, d))
                }
                Stopping if self.stop.as_ref().is_some_and(|s| !s.killed) => {
                    fx.push(Effect::Arm(Timer::StopKill, d))
                }
                _ => {}
            },
            Input::BackoffElapsed => {
                if self.state == Restarting {
                    self.restarts += 1;
                    self.begin_start(now, fx);
                }
            }
        }
    }

    fn on_exit(
        &mut self,
        status: ExitStatus,
        oom: bool,
        group_empty: bool,
        now: Instant,
        unit: f64,
        fx: &mut Vec<Effect>,
    ) {
        use State::*;
        self.pid = None;
        self.ready = false;
        match self.state {
            Starting | Running => {
                fx.push(Effect::Disarm(Timer::StartTimeout));
                let reason = if oom {
                    EndReason::OomKilled
                } else {
                    EndReason::from_status(status)
                };
                if group_empty {
                    self.conclude(Some(status), reason, now, unit, fx);
                } else {
                    // The main process is gone but others of the service
                    // remain: they go first, so that a restart never runs
                    // next to leftovers of the previous run.
                    self.begin_stop(Then::Outcome(reason), now, fx);
                    if let Some(stop) = &mut self.stop {
                        stop.main_gone = true;
                        stop.status = Some(status);
                    }
                }
            }
            Stopping => {
                if let Some(stop) = &mut self.stop {
                    stop.main_gone = true;
                    stop.status = Some(status);
                    if oom && let Then::Outcome(reason) = &mut stop.then {
                        *reason = EndReason::OomKilled;
                    }
                    stop.group_empty |= group_empty;
                    if stop.group_empty {
                        self.finish_stop(now, unit, fx);
                    }
                }
            }
            other => fx.push(Effect::Bug(format!("process exit reported while {other}"))),
        }
    }

    fn begin_start(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.deps_met {
            if self.enter(State::Starting, now, fx) {
                fx.push(Effect::Spawn);
            }
        } else {
            self.enter(State::Blocked, now, fx);
        }
    }

    fn begin_stop(&mut self, then: Then, now: Instant, fx: &mut Vec<Effect>) {
        if !self.enter(State::Stopping, now, fx) {
            return;
        }
        fx.push(Effect::Disarm(Timer::StartTimeout));
        let immediate = self.policy.stop_timeout.is_zero();
        self.stop = Some(StopProgress {
            then,
            main_gone: self.pid.is_none(),
            group_empty: false,
            killed: immediate,
            status: None,
        });
        if immediate {
            fx.push(Effect::KillAll);
        } else {
            fx.push(Effect::Signal(self.policy.stop_signal));
            fx.push(Effect::Arm(Timer::StopKill, self.policy.stop_timeout));
        }
        fx.push(Effect::WatchGroup);
    }

    fn finish_stop(&mut self, now: Instant, unit: f64, fx: &mut Vec<Effect>) {
        let Some(stop) = self.stop.take() else { return };
        fx.push(Effect::Disarm(Timer::StopKill));
        match stop.then {
            Then::Stop => {
                self.ended += 1;
                self.last_exit = Some(LastExit {
                    status: stop.status,
                    reason: EndReason::Stopped,
                });
                self.enter(State::Stopped, now, fx);
            }
            Then::Start => {
                self.ended += 1;
                self.last_exit = Some(LastExit {
                    status: stop.status,
                    reason: EndReason::Stopped,
                });
                self.restarts += 1;
                self.failures = 0;
                self.begin_start(now, fx);
            }
            Then::Outcome(reason) => self.conclude(stop.status, reason, now, unit, fx),
        }
    }

    /// A run is over and nothing of it remains: decide by the policy.
    fn conclude(
        &mut self,
        status: Option<ExitStatus>,
        reason: EndReason,
        now: Instant,
        unit: f64,
        fx: &mut Vec<Effect>,
    ) {
        let ran_for = self
            .run_started
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.run_started = None;
        let success =
            matches!(reason, EndReason::Exited(c) if self.policy.success_exit_codes.contains(&c));
        if ran_for >= self.policy.restart.reset_after {
            self.failures = 0;
        }
        if !success && !matches!(reason, EndReason::SpawnFailed(_)) {
            self.last_error = Some(reason.to_string());
        }
        self.last_exit = Some(LastExit { status, reason });
        self.ended += 1;
        let restart = &self.policy.restart;
        if success {
            self.failures = 0;
            if self.policy.kind == ServiceKind::Simple && restart.policy == RestartPolicy::Always {
                let delay = restart.backoff.delay(1, unit);
                self.schedule_restart(delay, now, fx);
            } else {
                self.enter(State::Exited, now, fx);
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if restart.policy == RestartPolicy::Never {
            self.enter(State::Failed, now, fx);
            return;
        }
        if restart.max_attempts > 0 && self.failures >= restart.max_attempts {
            let last = self.last_error.take().unwrap_or_default();
            self.last_error = Some(format!(
                "gave up after {} consecutive failed runs; last: {last}",
                self.failures
            ));
            self.enter(State::Failed, now, fx);
            return;
        }
        let delay = restart.backoff.delay(self.failures, unit);
        self.schedule_restart(delay, now, fx);
    }

    fn schedule_restart(&mut self, delay: Duration, now: Instant, fx: &mut Vec<Effect>) {
        if self.enter(State::Restarting, now, fx) {
            self.next_start_in = Some(delay);
            fx.push(Effect::Arm(Timer::Backoff, delay));
        }
    }

    /// Changes state if the table allows it; otherwise reports a bug.
    fn enter(&mut self, to: State, now: Instant, fx: &mut Vec<Effect>) -> bool {
        if !transition_allowed(self.state, to) {
            fx.push(Effect::Bug(format!(
                "invalid transition {} -> {}",
                self.state, to
            )));
            return false;
        }
        if to != State::Stopping {
            self.stop = None;
        }
        self.state = to;
        self.since = now;
        true
    }
}

#[cfg(test)]
mod tests;
