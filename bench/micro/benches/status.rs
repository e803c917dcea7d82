//! `GET /v1/services`: building the `ServiceList` from the registry as the
//! handler does, serialising it, and deserialising it as the CLI does.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use blackhole_api::{LastExit, ServiceList, ServiceStatus, State, Usage, rfc3339};
use blackhole_daemon::logs::{LogWriter, ServiceLog};
use blackhole_daemon::service::counters::{Sampled, ServiceCounters};
use blackhole_daemon::service::{ServiceHandle, Snapshot};
use blackhole_daemon::supervisor::{Entry, Registry};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::{mpsc, watch};

/// The senders keep the handles' channels open, as the actors would.
struct Fixture {
    registry: Registry,
    _snapshots: Vec<watch::Sender<Snapshot>>,
    _commands: Vec<mpsc::Receiver<blackhole_daemon::service::Command>>,
    _dir: tempfile::TempDir,
}

/// `n` services, mostly running with a resource sample, some crash-looping
/// or failed, so that every optional field of the status appears.
fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let writer = LogWriter::start(dir.path().to_path_buf(), 1 << 20, 2).expect("the log writer");
    let now = SystemTime::now();
    let mut services = BTreeMap::new();
    let mut snapshots = Vec::with_capacity(n);
    let mut commands = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("worker-{i:04}");
        let pid = 10_000 + i as u32;
        let (state, crashed) = match i % 20 {
            0 => (State::Restarting, true),
            1 => (State::Failed, true),
            _ => (State::Running, i % 7 == 0),
        };
        let running = state == State::Running;
        let started = running.then(|| now - Duration::from_secs(3600 + i as u64));
        let status = ServiceStatus {
            name: name.clone(),
            state,
            enabled: true,
            pid: running.then_some(pid),
            restarts: if crashed { 3 } else { 0 },
            since: rfc3339(now - Duration::from_secs(60)),
            uptime_secs: None,
            last_exit: crashed.then(|| LastExit {
                code: Some(1),
                signal: None,
                reason: "exited".into(),
                message: "exited with code 1".into(),
                at: Some(rfc3339(now - Duration::from_secs(61))),
            }),
            last_error: crashed.then(|| "exited with code 1".into()),
            ready: running,
            kind: "simple".into(),
            next_start_secs: None,
            blocked_on: None,
            failures: if state == State::Running { 0 } else { 3 },
            binary: "/opt/app/bin/worker".into(),
            readiness: None,
            liveness: None,
            status_text: None,
            main_pid: None,
            environment: None,
            usage: None,
        };
        let snapshot = Snapshot {
            status,
            started,
            next_start_at: (state == State::Restarting).then(|| now + Duration::from_secs(4)),
            runs: 4,
            environment: Arc::new(BTreeMap::new()),
            cgroup: None,
            cpu_base_usec: 0,
        };
        let counters = Arc::new(ServiceCounters::default());
        if running {
            *counters.usage.lock().expect("a fresh mutex") = Some(Sampled {
                usage: Usage {
                    cpu_percent: 1.25,
                    cpu_seconds: 12.5,
                    memory_bytes: 23_456_768,
                    processes: 1,
                    fds: 12,
                    sampled_at: rfc3339(now),
                },
                cpu_total_seconds: 40.0,
                run: (pid, started),
                cpu_usec: 12_500_000,
                at: Instant::now(),
            });
        }
        let (snapshot_tx, snapshot_rx) = watch::channel(snapshot);
        let (command_tx, command_rx) = mpsc::channel(8);
        let handle = ServiceHandle {
            name: name.clone(),
            commands: command_tx,
            snapshot: snapshot_rx,
            log: ServiceLog::new(&name, writer.clone(), false, 256 * 1024),
            counters,
        };
        services.insert(name, Entry::Live(handle));
        snapshots.push(snapshot_tx);
        commands.push(command_rx);
    }
    Fixture {
        registry: Registry {
            services,
            stop_waves: Vec::new(),
        },
        _snapshots: snapshots,
        _commands: commands,
        _dir: dir,
    }
}

/// The body of the `list` handler, less its wait for a fresh sample.
fn list(registry: &Registry) -> ServiceList {
    ServiceList {
        services: registry.services.values().map(Entry::status).collect(),
    }
}

fn bench(c: &mut Criterion) {
    let mut build = c.benchmark_group("status_build");
    let fixtures: Vec<(usize, Fixture)> = [100, 1000].map(|n| (n, fixture(n))).into();
    for (n, f) in &fixtures {
        build.throughput(Throughput::Elements(*n as u64));
        build.bench_with_input(BenchmarkId::from_parameter(n), &f.registry, |b, r| {
            b.iter(|| list(r))
        });
    }
    build.finish();

    let lists: Vec<(usize, ServiceList, Vec<u8>)> = fixtures
        .iter()
        .map(|(n, f)| {
            let list = list(&f.registry);
            let json = serde_json::to_vec(&list).expect("serialisable");
            let back: ServiceList = serde_json::from_slice(&json).expect("readable");
            assert_eq!(back, list, "the CLI reads what the daemon wrote");
            (*n, list, json)
        })
        .collect();

    let mut ser = c.benchmark_group("status_serialise");
    for (n, list, json) in &lists {
        ser.throughput(Throughput::Bytes(json.len() as u64));
        // What axum's `Json` does with the handler's answer.
        ser.bench_with_input(BenchmarkId::from_parameter(n), list, |b, l| {
            b.iter(|| serde_json::to_vec(black_box(l)).expect("serialisable"))
        });
    }
    ser.finish();

    let mut de = c.benchmark_group("status_deserialise");
    for (n, _, json) in &lists {
        de.throughput(Throughput::Bytes(json.len() as u64));
        // What the CLI's client does with the body it collected.
        de.bench_with_input(BenchmarkId::from_parameter(n), json, |b, j| {
            b.iter(|| serde_json::from_slice::<ServiceList>(black_box(j)).expect("readable"))
        });
    }
    de.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
