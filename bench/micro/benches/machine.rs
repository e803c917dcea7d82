//! `Machine::handle`: the cost of the decisions a service actor asks for,
//! per input, through a crash-and-restart cycle and a stop that times out.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blackhole_core::backoff::Backoff;
use blackhole_core::config::{RestartPolicy, RestartSpec, ServiceKind};
use blackhole_core::machine::{Effect, ExitStatus, Input, Machine, Policy, State, Timer};
use blackhole_core::signal::Signal;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// The defaults a `[services.x]` with only a command gets.
fn policy() -> Policy {
    Policy {
        kind: ServiceKind::Simple,
        restart: RestartSpec {
            policy: RestartPolicy::OnFailure,
            backoff: Backoff::default(),
            // Never give up, so the cycle can repeat for as long as
            // criterion wants.
            max_attempts: 0,
            reset_after: Duration::from_secs(60),
        },
        success_exit_codes: vec![0],
        stop_signal: Signal::TERM,
        stop_timeout: Duration::from_secs(10),
        needs_readiness: false,
        start_timeout: None,
    }
}

/// A uniform draw that is not 0.5, so the jitter is really computed.
const UNIT: f64 = 0.3;

fn running(t0: Instant) -> Machine {
    let mut m = Machine::new(policy(), t0);
    assert_eq!(m.handle(Input::Start, t0, UNIT), [Effect::Spawn]);
    m.handle(Input::Spawned { pid: 100 }, t0, UNIT);
    assert_eq!(m.state(), State::Running);
    m
}

/// running -> (exit 1) restarting -> (backoff elapsed) starting ->
/// (spawned) running. Returns each input's effects.
fn crash_cycle(m: &mut Machine, now: &mut Instant, pid: u32) -> [Vec<Effect>; 3] {
    *now += Duration::from_millis(5);
    let exit = Input::Exited {
        status: ExitStatus::Code(1),
        oom: false,
        group_empty: true,
    };
    let a = m.handle(black_box(exit), *now, black_box(UNIT));
    *now += Duration::from_secs(1);
    let b = m.handle(black_box(Input::BackoffElapsed), *now, black_box(UNIT));
    let c = m.handle(black_box(Input::Spawned { pid }), *now, black_box(UNIT));
    [a, b, c]
}

/// running -> (stop) stopping -> (stop timeout) SIGKILL -> (killed, group
/// empty) stopped.
fn stop_with_timeout(m: &mut Machine, t0: Instant) -> [Vec<Effect>; 3] {
    let a = m.handle(black_box(Input::Stop), t0, black_box(UNIT));
    let later = t0 + Duration::from_secs(10);
    let b = m.handle(black_box(Input::StopTimedOut), later, black_box(UNIT));
    let killed = Input::Exited {
        status: ExitStatus::Signal {
            signal: Signal::KILL,
            core_dumped: false,
        },
        oom: false,
        group_empty: true,
    };
    let c = m.handle(black_box(killed), later, black_box(UNIT));
    [a, b, c]
}

/// The benchmarks time only what these checks saw to be right.
fn check_sequences() {
    let t0 = Instant::now();
    let mut m = running(t0);
    let mut now = t0;
    for pid in 101..120 {
        let [exit, backoff, spawned] = crash_cycle(&mut m, &mut now, pid);
        assert!(
            exit.iter()
                .any(|e| matches!(e, Effect::Arm(Timer::Backoff, _))),
            "{exit:?}"
        );
        assert_eq!(backoff, [Effect::Spawn]);
        assert!(spawned.is_empty(), "{spawned:?}");
        assert_eq!(m.state(), State::Running);
    }
    let mut m = running(t0);
    let [stop, timeout, exit] = stop_with_timeout(&mut m, t0);
    assert!(stop.contains(&Effect::Signal(Signal::TERM)), "{stop:?}");
    assert_eq!(timeout, [Effect::KillAll]);
    assert!(
        !exit.iter().any(|e| matches!(e, Effect::Bug(_))),
        "{exit:?}"
    );
    assert_eq!(m.state(), State::Stopped);
}

fn bench(c: &mut Criterion) {
    check_sequences();
    let mut group = c.benchmark_group("machine");
    group.throughput(Throughput::Elements(3));

    // One machine, crash-looping: the failure count and the backoff keep
    // growing to their cap, as they would for a real crash loop.
    group.bench_function("crash_restart_cycle", |b| {
        let t0 = Instant::now();
        let mut m = running(t0);
        let mut now = t0;
        let mut pid = 100u32;
        b.iter(|| {
            pid = pid.wrapping_add(1);
            crash_cycle(&mut m, &mut now, pid)
        })
    });

    // A stop ends the cycle, so each one gets a fresh copy of a running
    // machine (copied outside the timing).
    group.bench_function("stop_with_timeout", |b| {
        let t0 = Instant::now();
        let template = running(t0);
        b.iter_batched(
            || template.clone(),
            |mut m| {
                let fx = stop_with_timeout(&mut m, t0);
                (m, fx)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
