use super::*;
use crate::backoff::Backoff;

fn policy() -> Policy {
    Policy {
        kind: ServiceKind::Simple,
        restart: RestartSpec {
            policy: RestartPolicy::OnFailure,
            backoff: Backoff::default(),
            max_attempts: 10,
            reset_after: Duration::from_secs(60),
        },
        success_exit_codes: vec![0],
        stop_signal: Signal::TERM,
        stop_timeout: Duration::from_secs(10),
        needs_readiness: false,
        start_timeout: None,
    }
}

/// A machine and a clock that only moves when told to.
struct Rig {
    m: Machine,
    t0: Instant,
    now: Instant,
}

impl Rig {
    fn new(p: Policy) -> Self {
        let t0 = Instant::now();
        Rig {
            m: Machine::new(p, t0),
            t0,
            now: t0,
        }
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
    }
    fn feed(&mut self, input: Input) -> Vec<Effect> {
        // unit = 0.5 makes jitter zero, so delays are exact.
        self.m.handle(input, self.now, 0.5)
    }
    fn running(&mut self, pid: u32) {
        assert_eq!(self.feed(Input::Start), [Effect::Spawn]);
        self.feed(Input::Spawned { pid });
        assert_eq!(self.m.state(), State::Running);
    }
    fn crash(&mut self, code: i32) -> Vec<Effect> {
        self.feed(Input::Exited {
            status: ExitStatus::Code(code),
            oom: false,
            group_empty: true,
        })
    }
}

fn backoff_delay(fx: &[Effect]) -> Option<Duration> {
    fx.iter().find_map(|e| match e {
        Effect::Arm(Timer::Backoff, d) => Some(*d),
        _ => None,
    })
}

#[test]
fn transition_table_is_exactly_this() {
    use State::*;
    let valid: &[(State, State)] = &[
        (Stopped, Starting),
        (Stopped, Blocked),
        (Blocked, Starting),
        (Blocked, Stopped),
        (Starting, Running),
        (Starting, Stopping),
        (Starting, Exited),
        (Starting, Failed),
        (Starting, Restarting),
        (Running, Stopping),
        (Running, Exited),
        (Running, Failed),
        (Running, Restarting),
        (Stopping, Stopped),
        (Stopping, Starting),
        (Stopping, Blocked),
        (Stopping, Exited),
        (Stopping, Failed),
        (Stopping, Restarting),
        (Restarting, Starting),
        (Restarting, Blocked),
        (Restarting, Stopped),
        (Exited, Starting),
        (Exited, Blocked),
        (Exited, Stopped),
        (Failed, Starting),
        (Failed, Blocked),
        (Failed, Stopped),
    ];
    for from in State::ALL {
        for to in State::ALL {
            let expected = valid.contains(&(from, to));
            assert_eq!(transition_allowed(from, to), expected, "{from} -> {to}");
        }
    }
}

#[test]
fn start_spawns_and_runs() {
    let mut r = Rig::new(policy());
    r.running(42);
    assert_eq!(r.m.pid(), Some(42));
    assert!(r.m.ready());
    assert_eq!(r.m.runs(), 1);
}

#[test]
fn start_while_running_does_nothing() {
    let mut r = Rig::new(policy());
    r.running(42);
    assert!(r.feed(Input::Start).is_empty());
    assert_eq!(r.m.state(), State::Running);
    assert_eq!(r.m.pid(), Some(42));
}

#[test]
fn crash_loop_follows_the_backoff_then_gives_up() {
    let mut p = policy();
    p.restart.max_attempts = 8;
    let mut r = Rig::new(p);
    r.running(1);
    let mut delays = Vec::new();
    for i in 0..7 {
        let fx = r.crash(1);
        assert_eq!(r.m.state(), State::Restarting);
        let d = backoff_delay(&fx).unwrap();
        delays.push(d.as_secs());
        r.advance(d);
        assert_eq!(r.feed(Input::BackoffElapsed), [Effect::Spawn]);
        r.feed(Input::Spawned { pid: 10 + i });
        assert_eq!(r.m.restarts(), i + 1);
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    r.crash(1);
    assert_eq!(r.m.state(), State::Failed);
    assert!(
        r.m.last_error().unwrap().contains("gave up after 8"),
        "{:?}",
        r.m.last_error()
    );
    assert_eq!(r.m.last_exit().unwrap().reason, EndReason::Exited(1));
}

#[test]
fn a_long_run_resets_the_attempts() {
    let mut r = Rig::new(policy());
    r.running(1);
    for _ in 0..3 {
        let d = backoff_delay(&r.crash(1)).unwrap();
        r.advance(d);
        r.feed(Input::BackoffElapsed);
        r.feed(Input::Spawned { pid: 2 });
    }
    assert_eq!(r.m.failures(), 3);
    r.advance(Duration::from_secs(61));
    let fx = r.crash(1);
    assert_eq!(backoff_delay(&fx), Some(Duration::from_secs(1)));
    assert_eq!(r.m.failures(), 1);
}

#[test]
fn clean_exit_is_exited_under_on_failure() {
    let mut r = Rig::new(policy());
    r.running(1);
    r.crash(0);
    assert_eq!(r.m.state(), State::Exited);
    assert_eq!(r.m.last_error(), None);
}

#[test]
fn always_restarts_even_a_clean_exit() {
    let mut p = policy();
    p.restart.policy = RestartPolicy::Always;
    let mut r = Rig::new(p);
    r.running(1);
    let fx = r.crash(0);
    assert_eq!(r.m.state(), State::Restarting);
    assert_eq!(backoff_delay(&fx), Some(Duration::from_secs(1)));
    assert_eq!(r.m.failures(), 0);
}

#[test]
fn never_policy_fails_without_restart() {
    let mut p = policy();
    p.restart.policy = RestartPolicy::Never;
    let mut r = Rig::new(p);
    r.running(1);
    let fx = r.crash(3);
    assert_eq!(r.m.state(), State::Failed);
    assert!(backoff_delay(&fx).is_none());
}

#[test]
fn success_codes_are_configurable() {
    let mut p = policy();
    p.success_exit_codes = vec![0, 143];
    let mut r = Rig::new(p);
    r.running(1);
    r.crash(143);
    assert_eq!(r.m.state(), State::Exited);
}

#[test]
fn stop_signals_then_waits_for_everything() {
    let mut r = Rig::new(policy());
    r.running(7);
    let fx = r.feed(Input::Stop);
    assert_eq!(
        fx,
        [
            Effect::Disarm(Timer::StartTimeout),
            Effect::Signal(Signal::TERM),
            Effect::Arm(Timer::StopKill, Duration::from_secs(10)),
            Effect::WatchGroup,
        ]
    );
    assert_eq!(r.m.state(), State::Stopping);
    // The leader goes first; a child of it lingers: still stopping.
    r.feed(Input::Exited {
        status: ExitStatus::Code(0),
        oom: false,
        group_empty: false,
    });
    assert_eq!(r.m.state(), State::Stopping);
    // The escalation is not cancelled by the leader's exit.
    assert_eq!(r.feed(Input::StopTimedOut), [Effect::KillAll]);
    assert!(r.feed(Input::StopTimedOut).is_empty(), "kill only once");
    let fx = r.feed(Input::GroupEmpty);
    assert!(fx.contains(&Effect::Disarm(Timer::StopKill)));
    assert_eq!(r.m.state(), State::Stopped);
    assert_eq!(r.m.last_exit().unwrap().reason, EndReason::Stopped);
}

#[test]
fn zero_stop_timeout_kills_at_once() {
    let mut p = policy();
    p.stop_timeout = Duration::ZERO;
    let mut r = Rig::new(p);
    r.running(7);
    let fx = r.feed(Input::Stop);
    assert!(fx.contains(&Effect::KillAll));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Signal(_))));
}

#[test]
fn crash_during_stop_is_not_restarted() {
    let mut r = Rig::new(policy());
    r.running(7);
    r.feed(Input::Stop);
    let fx = r.feed(Input::Exited {
        status: ExitStatus::Code(1),
        oom: false,
        group_empty: true,
    });
    assert_eq!(r.m.state(), State::Stopped);
    assert!(backoff_delay(&fx).is_none());
}

#[test]
fn stop_during_backoff_cancels_the_restart() {
    let mut r = Rig::new(policy());
    r.running(7);
    r.crash(1);
    assert_eq!(r.m.state(), State::Restarting);
    let fx = r.feed(Input::Stop);
    assert_eq!(fx, [Effect::Disarm(Timer::Backoff)]);
    assert_eq!(r.m.state(), State::Stopped);
    // A late timer is harmless.
    assert!(r.feed(Input::BackoffElapsed).is_empty());
    assert_eq!(r.m.state(), State::Stopped);
}

#[test]
fn manual_restart_skips_the_backoff() {
    let mut r = Rig::new(policy());
    r.running(7);
    for _ in 0..4 {
        let d = backoff_delay(&r.crash(1)).unwrap();
        r.advance(d);
        r.feed(Input::BackoffElapsed);
        r.feed(Input::Spawned { pid: 8 });
    }
    r.crash(1);
    assert_eq!(r.m.state(), State::Restarting);
    let fx = r.feed(Input::Restart);
    assert_eq!(fx, [Effect::Disarm(Timer::Backoff), Effect::Spawn]);
    assert_eq!(r.m.failures(), 0);
}

#[test]
fn restart_of_a_running_service_stops_then_starts() {
    let mut r = Rig::new(policy());
    r.running(7);
    r.feed(Input::Restart);
    assert_eq!(r.m.state(), State::Stopping);
    // A start during the stop does not start a second instance.
    assert!(r.feed(Input::Start).is_empty());
    let fx = r.feed(Input::Exited {
        status: ExitStatus::Signal {
            signal: Signal::TERM,
            core_dumped: false,
        },
        oom: false,
        group_empty: true,
    });
    assert!(fx.contains(&Effect::Spawn));
    assert_eq!(r.m.state(), State::Starting);
    assert_eq!(r.m.restarts(), 1);
    r.feed(Input::Spawned { pid: 8 });
    assert_eq!(r.m.runs(), 2);
}

#[test]
fn stop_after_restart_request_wins() {
    let mut r = Rig::new(policy());
    r.running(7);
    r.feed(Input::Restart);
    r.feed(Input::Stop);
    let fx = r.crash(0);
    assert!(!fx.contains(&Effect::Spawn));
    assert_eq!(r.m.state(), State::Stopped);
}

#[test]
fn leftovers_of_a_crashed_run_go_before_the_restart() {
    let mut r = Rig::new(policy());
    r.running(7);
    let fx = r.feed(Input::Exited {
        status: ExitStatus::Code(2),
        oom: false,
        group_empty: false,
    });
    assert_eq!(r.m.state(), State::Stopping);
    assert!(fx.contains(&Effect::Signal(Signal::TERM)));
    assert!(fx.contains(&Effect::WatchGroup));
    let fx = r.feed(Input::GroupEmpty);
    assert_eq!(r.m.state(), State::Restarting);
    assert_eq!(backoff_delay(&fx), Some(Duration::from_secs(1)));
    assert_eq!(r.m.last_exit().unwrap().reason, EndReason::Exited(2));
}

#[test]
fn oom_kill_is_its_own_reason() {
    let mut r = Rig::new(policy());
    r.running(7);
    r.feed(Input::Exited {
        status: ExitStatus::Signal {
            signal: Signal::KILL,
            core_dumped: false,
        },
        oom: true,
        group_empty: true,
    });
    assert_eq!(r.m.last_exit().unwrap().reason, EndReason::OomKilled);
    assert_eq!(r.m.state(), State::Restarting);
}

#[test]
fn spawn_failure_is_a_failed_run() {
    let mut r = Rig::new(policy());
    r.feed(Input::Start);
    let fx = r.feed(Input::SpawnFailed("no such file".into()));
    assert_eq!(r.m.state(), State::Restarting);
    assert_eq!(backoff_delay(&fx), Some(Duration::from_secs(1)));
    assert_eq!(r.m.last_error(), Some("failed to start: no such file"));
}

#[test]
fn readiness_gates_running_and_times_out() {
    let mut p = policy();
    p.needs_readiness = true;
    p.start_timeout = Some(Duration::from_secs(5));
    let mut r = Rig::new(p.clone());
    r.feed(Input::Start);
    let fx = r.feed(Input::Spawned { pid: 4 });
    assert_eq!(
        fx,
        [Effect::Arm(Timer::StartTimeout, Duration::from_secs(5))]
    );
    assert_eq!(r.m.state(), State::Starting);
    let fx = r.feed(Input::Ready);
    assert!(fx.contains(&Effect::Disarm(Timer::StartTimeout)));
    assert_eq!(r.m.state(), State::Running);
    r.feed(Input::NotReady("probe failed".into()));
    assert_eq!(r.m.state(), State::Running);
    assert!(!r.m.ready());

    let mut r = Rig::new(p);
    r.feed(Input::Start);
    r.feed(Input::Spawned { pid: 4 });
    r.feed(Input::StartTimedOut);
    assert_eq!(r.m.state(), State::Stopping);
    r.crash(0);
    assert_eq!(r.m.state(), State::Restarting);
    assert_eq!(
        r.m.last_exit().unwrap().reason,
        EndReason::StartTimeout(Duration::from_secs(5))
    );
}

#[test]
fn liveness_failure_restarts_as_a_failure() {
    let mut r = Rig::new(policy());
    r.running(4);
    r.feed(Input::Unhealthy(EndReason::LivenessFailed(
        "timeout".into(),
    )));
    assert_eq!(r.m.state(), State::Stopping);
    r.crash(143);
    assert_eq!(r.m.state(), State::Restarting);
    assert_eq!(r.m.failures(), 1);
    assert_eq!(r.m.last_error(), Some("liveness probe failed: timeout"));
}

#[test]
fn oneshot_completes_or_retries() {
    let mut p = policy();
    p.kind = ServiceKind::Oneshot;
    let mut r = Rig::new(p.clone());
    r.feed(Input::Start);
    r.feed(Input::Spawned { pid: 5 });
    assert_eq!(
        r.m.state(),
        State::Starting,
        "a oneshot is starting until it ends"
    );
    r.crash(0);
    assert_eq!(r.m.state(), State::Exited);

    p.restart.policy = RestartPolicy::Always;
    let mut r = Rig::new(p);
    r.feed(Input::Start);
    r.feed(Input::Spawned { pid: 5 });
    r.crash(0);
    assert_eq!(
        r.m.state(),
        State::Exited,
        "a completed oneshot is not rerun"
    );
    r.feed(Input::Start);
    r.feed(Input::Spawned { pid: 6 });
    r.crash(1);
    assert_eq!(r.m.state(), State::Restarting);
}

#[test]
fn unmet_dependencies_block_until_met() {
    let mut r = Rig::new(policy());
    r.feed(Input::DepsUnmet("waiting for db to be ready".into()));
    assert!(r.feed(Input::Start).is_empty());
    assert_eq!(r.m.state(), State::Blocked);
    assert_eq!(r.m.blocked_on(), Some("waiting for db to be ready"));
    assert_eq!(r.feed(Input::DepsMet), [Effect::Spawn]);
    assert_eq!(r.m.state(), State::Starting);
    assert_eq!(r.m.blocked_on(), None);
}

#[test]
fn backoff_into_unmet_dependencies_blocks() {
    let mut r = Rig::new(policy());
    r.running(1);
    r.crash(1);
    r.feed(Input::DepsUnmet("db is down".into()));
    assert!(r.feed(Input::BackoffElapsed).is_empty());
    assert_eq!(r.m.state(), State::Blocked);
    r.feed(Input::Stop);
    assert_eq!(r.m.state(), State::Stopped);
}

#[test]
fn impossible_inputs_are_reported_not_applied() {
    let mut r = Rig::new(policy());
    let fx = r.crash(0);
    assert!(matches!(fx.as_slice(), [Effect::Bug(_)]), "{fx:?}");
    assert_eq!(r.m.state(), State::Stopped);
    let fx = r.feed(Input::Spawned { pid: 9 });
    assert!(matches!(fx.as_slice(), [Effect::Bug(_)]));
    assert_eq!(r.m.pid(), None);
}

#[test]
fn since_moves_with_each_transition() {
    let mut r = Rig::new(policy());
    assert_eq!(r.m.since(), r.t0);
    r.advance(Duration::from_secs(3));
    r.running(1);
    assert_eq!(r.m.since(), r.t0 + Duration::from_secs(3));
}

#[test]
fn a_service_can_extend_its_timeouts() {
    let mut p = policy();
    p.needs_readiness = true;
    p.start_timeout = Some(Duration::from_secs(5));
    let mut r = Rig::new(p);
    r.feed(Input::Start);
    r.feed(Input::Spawned { pid: 4 });
    let fx = r.feed(Input::ExtendTimeout(Duration::from_secs(30)));
    assert_eq!(
        fx,
        [Effect::Arm(Timer::StartTimeout, Duration::from_secs(30))]
    );
    r.feed(Input::Ready);
    r.feed(Input::Stop);
    let fx = r.feed(Input::ExtendTimeout(Duration::from_secs(60)));
    assert_eq!(fx, [Effect::Arm(Timer::StopKill, Duration::from_secs(60))]);
    r.feed(Input::StopTimedOut);
    assert!(
        r.feed(Input::ExtendTimeout(Duration::from_secs(60)))
            .is_empty(),
        "too late once killed"
    );
}

#[test]
fn a_refused_start_fails_without_retrying() {
    let mut r = Rig::new(policy());
    r.feed(Input::Start);
    let fx = r.feed(Input::StartRefused("sha256 mismatch".into()));
    assert!(backoff_delay(&fx).is_none());
    assert_eq!(r.m.state(), State::Failed);
    assert_eq!(r.m.last_error(), Some("refused to start: sha256 mismatch"));
}
