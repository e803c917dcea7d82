//! The orchestrator behind `blackhole up`.
//!
//! - [`supervisor`]: the dispatcher loop that owns the set of services.
//! - [`service`]: one actor per service, and the OS seam it drives.
//! - [`logs`]: capturing service output into rings, files and streams.
//! - [`control`]: the HTTP API on the Unix socket.
//! - [`events`], [`telemetry`], [`state_dir`]: the rest of the plumbing.

pub mod control;
pub mod events;
pub mod logs;
pub mod metrics;
pub mod records;
pub mod service;
pub mod state_dir;
pub mod supervisor;
pub mod telemetry;
pub mod usage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use blackhole_core::config::{self, Config, LoadOptions, LogFormat, LogLevel};
use blackhole_os::host::SystemHost;
use blackhole_os::spawner::{Reaper, Spawner};
use blackhole_os::track::Tracking;
use tokio::sync::mpsc;

use crate::events::EventBus;
use crate::logs::LogWriter;
use crate::service::OsContext;
use crate::service::env::BaseEnv;
use crate::supervisor::{Source, Supervisor};
use crate::telemetry::Telemetry;

/// How `blackhole up` was invoked.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    pub config: PathBuf,
    /// The path was given (-c or $BLACKHOLE_CONFIG): it must exist.
    pub explicit: bool,
    pub services_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<LogLevel>,
}

/// Exit codes of `up`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const CONFIG: i32 = 1;
}

/// Runs the orchestrator in the foreground until it is shut down.
pub fn up(opts: UpOptions) -> i32 {
    // While this is the only thread: every thread made later inherits
    // SIGCHLD blocked, for the reaping thread alone to take.
    if let Err(e) = Reaper::prepare_process() {
        eprintln!("blackhole: cannot take charge of SIGCHLD: {e}");
        return exit::FAILED;
    }
    blackhole_os::system::tune_allocator();
    let options = LoadOptions {
        services_dir: opts.services_dir.clone(),
    };
    let loaded = config::load(&opts.config, opts.explicit, &options, &SystemHost);
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    let Some(mut config) = loaded.config else {
        eprintln!("blackhole: not started: fix the configuration errors above");
        return exit::CONFIG;
    };
    if let Some(level) = opts.log_level {
        config.orchestrator.log_level = level;
    }
    if let Some(format) = opts.log_format {
        config.orchestrator.log_format = format;
    }
    // Before any thread exists (see `reserve_descriptor_table`): each
    // service holds about six descriptors (two pipes, its log file, its
    // cgroup folder and two files in it), plus what the orchestrator
    // opens for itself. A reload that adds services grows it further.
    let nofile = blackhole_os::system::raise_nofile_limit();
    blackhole_os::system::reserve_descriptor_table(64 + 8 * config.services.len());
    // One thread runs every task: supervision is mostly waiting, and the
    // one busy path (service output) costs less on one thread than spread
    // over several, where every line read also wakes a sibling worker
    // (measured: 26 % less CPU for ten services printing 2000 lines/s
    // each). Disk writes and spawns have threads of their own. The
    // current-thread scheduler, not a multi-thread one with one worker:
    // no work-stealing bookkeeping, no extra thread, and no libm (its
    // statistics use `pow`), which was half a MiB of resident memory.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(telemetry::flush_held)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blackhole: cannot start the runtime: {e}");
            return exit::FAILED;
        }
    };
    let source = Source {
        path: opts.config.clone(),
        explicit: opts.explicit,
        options,
    };
    // The orchestrator is a task of its own, so that a panic in it is
    // reported as a failure rather than unwinding through `block_on`.
    telemetry::hold_on_this_thread();
    telemetry::flush_held_on_panic();
    let code = runtime.block_on(async move {
        let outcome = tokio::spawn(run(config, source, nofile)).await;
        // What the orchestrator logged comes before what is said here.
        telemetry::flush_held();
        match outcome {
            Ok(Ok(())) => exit::OK,
            Ok(Err(e)) => {
                tracing::error!("{e}");
                eprintln!("blackhole: {e}");
                exit::FAILED
            }
            Err(e) => {
                tracing::error!("the orchestrator task failed: {e}");
                eprintln!("blackhole: the orchestrator task failed: {e}");
                exit::FAILED
            }
        }
    });
    // Everything is stopped and the logs are flushed. Dropping the runtime
    // would free every task one by one, as dropping the supervisor did
    // (see the end of its shutdown); the process is about to end and the
    // kernel takes it all back at once. Idle helper threads end with it.
    std::mem::forget(runtime);
    telemetry::flush_held();
    code
}

/// A short, stable name for this orchestrator's cgroup folder: the state
/// folder's parent name and a hash of its path, so two orchestrators on
/// different folders never share cgroups.
pub fn instance_name(state_dir: &Path) -> String {
    let full = state_dir.to_string_lossy();
    let hash = full.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let parent = state_dir
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = parent
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.is_empty() {
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    } else {
        format!("{clean}-{:08x}", hash & 0xffff_ffff)
    }
}

async fn run(
    config: Config,
    source: Source,
    nofile: std::io::Result<(u64, u64)>,
) -> Result<(), String> {
    let started = Instant::now();
    let orch = config.orchestrator.clone();
    let telemetry = Telemetry::init(orch.log_level, orch.log_format);
    let signals =
        supervisor::Signals::register().map_err(|e| format!("cannot handle signals: {e}"))?;
    let lock = state_dir::acquire(&orch.state_dir)?;

    // Exits must be collected from the first child on.
    let reaper = Reaper::global();
    reaper
        .start_thread()
        .map_err(|e| format!("cannot start the reaping thread: {e}"))?;
    if let Err(e) = blackhole_os::system::become_subreaper() {
        tracing::warn!(
            "cannot become a child subreaper ({e}): orphaned grandchildren of services will not be reaped here"
        );
    }
    let nofile = match nofile {
        Ok((soft, hard)) => Some((soft, hard)),
        Err(e) => {
            tracing::warn!("cannot raise the descriptor limit: {e}");
            None
        }
    };

    let instance = instance_name(&orch.state_dir);
    let base_rel = PathBuf::from(&orch.cgroup_parent).join(&instance);
    let allow_cgroups = orch.cgroups != blackhole_core::config::CgroupMode::Off;
    for leftover in records::kill_recorded(&orch.state_dir) {
        tracing::warn!(
            "killed what an earlier orchestrator on this folder left running: {leftover}"
        );
    }
    let tracking = Tracking::detect(&base_rel, allow_cgroups);
    for note in &tracking.layout.notes {
        tracing::info!("cgroups: {note}");
    }
    clean_leftovers(&tracking);

    let writer = LogWriter::start(orch.log_dir.clone(), orch.log_max_size, orch.log_max_files)
        .map_err(|e| format!("cannot start the log writer: {e}"))?;
    let spawner =
        Spawner::start(reaper).map_err(|e| format!("cannot start the spawning thread: {e}"))?;
    let tracking_desc = tracking
        .base()
        .map_or_else(|| "process tree".to_string(), |b| b.display().to_string());
    let ctx_records = Some(records::Records::start(
        &orch.state_dir,
        tracking.all_bases(),
    ));
    let ctx = Arc::new(OsContext {
        spawner,
        tracking: tracking.clone(),
        base_env: BaseEnv::from_process(),
        nofile,
        instance,
        optional_limits: orch.cgroups == blackhole_core::config::CgroupMode::Optional,
        records: ctx_records.clone(),
        file_watcher: match blackhole_os::filewatch::FileWatcher::start() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("no inotify ({e}): services poll their cgroups while stopping");
                None
            }
        },
        reclaimer: Default::default(),
    });
    for spec in config.services.values() {
        for problem in ctx.unenforceable(spec) {
            if ctx.optional_limits {
                tracing::warn!(service = %spec.name, "{problem}; running without it (cgroups = \"optional\")");
            } else {
                tracing::error!(
                    service = %spec.name,
                    "{problem}; the service will not start (set cgroups = \"optional\" to run it without the limit)"
                );
            }
        }
    }

    let listener = state_dir::bind_socket(&orch.socket, orch.socket_group)?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|e| format!("control socket: {e}"))?;

    let events = EventBus::default();
    let (req_tx, req_rx) = mpsc::channel(256);
    let config_file = config.file.as_ref().map(|p| p.display().to_string());
    let counters = Arc::new(metrics::OrchestratorCounters::default());
    let writer_stats = writer.stats.clone();
    let (mut supervisor, registry) = Supervisor::new(
        config,
        source,
        ctx,
        writer,
        events.clone(),
        req_rx,
        telemetry,
        counters.clone(),
    );
    supervisor.boot();
    // What loading the configuration allocated is freed by now.
    blackhole_os::system::release_free_memory();
    let sampler = usage::Sampler::start(orch.sample_interval, registry.clone());
    let metrics = Arc::new(metrics::Metrics {
        registry: registry.clone(),
        counters: counters.clone(),
        writer: writer_stats,
        started_mono: started,
        started_wall: std::time::SystemTime::now() - started.elapsed(),
    });
    let metrics_task = match &orch.metrics_listen {
        Some(addr) => match control::serve_metrics(addr, metrics.clone(), sampler.clone()).await {
            Ok(t) => {
                tracing::info!("metrics on http://{addr}/metrics");
                Some(t)
            }
            Err(e) => {
                tracing::error!("no metrics listener: {e}");
                None
            }
        },
        None => None,
    };
    let app = control::AppState {
        sampler,
        metrics,
        counters,
        requests: req_tx,
        registry,
        events,
        started,
        config: config_file,
        tracking: tracking_desc,
    };
    let tcp = match (&orch.listen, &orch.token_file) {
        (Some(addr), Some(token_file)) => {
            match control::tcp::start(addr, token_file, app.clone()).await {
                Ok(task) => {
                    tracing::info!(
                        "control API also on tcp://{addr} (bearer token from {})",
                        token_file.display()
                    );
                    Some(task)
                }
                Err(e) => {
                    tracing::error!("not listening on {addr}: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let server = tokio::spawn(control::serve(listener, app));
    tracing::info!(
        "blackhole {} up (pid {}); control socket {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        orch.socket.display()
    );
    let result = supervisor
        .run(signals)
        .await
        .map_err(|e| format!("signal handling failed: {e}"));
    server.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = tcp {
        t.abort();
    }
    let _ = std::fs::remove_file(&orch.socket);
    if let Some(r) = &ctx_records {
        r.clear();
    }
    drop(lock);
    tracing::info!("blackhole stopped");
    result
}

/// Kills whatever a previous orchestrator on this state folder left in its
/// cgroups (it was SIGKILLed, or the machine lost power), so that no
/// service ever runs twice; then removes its empty cgroups.
fn clean_leftovers(tracking: &Tracking) {
    for base in tracking.all_bases() {
        clean_leftovers_in(&base);
    }
}

fn clean_leftovers_in(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for entry in dir.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let cg = blackhole_os::track::cgroup::ServiceCgroup::open(entry.path());
        let pids = cg.pids();
        if !pids.is_empty() {
            tracing::warn!(
                "found {} leftover process(es) of service `{}` from an earlier orchestrator ({:?}); killing them",
                pids.len(),
                entry.file_name().to_string_lossy(),
                pids
            );
            let _ = cg.kill_all();
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while cg.populated() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let _ = cg.remove();
    }
}
