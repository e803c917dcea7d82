//! Per-service counters and the latest resource sample: written by the
//! actor and the sampler, read by status and /metrics. Atomics, so no
//! reader ever waits on a writer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use blackhole_api::Usage;

/// Exit reasons, in the order of the counters (the tags of
/// `blackhole_core::machine::EndReason`).
pub const REASONS: [&str; 8] = [
    "exited",
    "killed",
    "oom-killed",
    "stopped",
    "liveness-failed",
    "start-timeout",
    "watchdog-timeout",
    "spawn-failed",
];

/// `readiness` and `liveness`.
pub const PROBES: [&str; 2] = ["readiness", "liveness"];

#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub exits: [AtomicU64; 8],
    /// Per probe: successes, failures.
    pub probe_results: [[AtomicU64; 2]; 2],
    /// Per probe: how long the last run took, in microseconds.
    pub probe_micros: [AtomicU64; 2],
    /// The latest resource sample of the current run.
    pub usage: Mutex<Option<Sampled>>,
}

/// A sample with what the next one needs to compute a rate.
#[derive(Clone, Debug)]
pub struct Sampled {
    pub usage: Usage,
    /// CPU time of everything in the service's cgroup since it was
    /// created (monotonic across runs), for the metrics counter.
    pub cpu_total_seconds: f64,
    /// The run this sample belongs to (its main pid and start).
    pub run: (u32, Option<std::time::SystemTime>),
    /// Run CPU time and when it was read: the start of the window the
    /// next percentage is measured over. It only moves once the window is
    /// long enough to mean something (the kernel accounts CPU time per
    /// tick; two samples a millisecond apart would read 0 %).
    pub cpu_usec: u64,
    pub at: std::time::Instant,
}

impl ServiceCounters {
    pub fn exit(&self, reason_tag: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason_tag) {
            self.exits[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn probe(&self, which: usize, ok: bool, micros: u64) {
        self.probe_results[which][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        self.probe_micros[which].store(micros, Ordering::Relaxed);
    }

    pub fn sampled(&self) -> Option<Sampled> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
