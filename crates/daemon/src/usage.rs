//! Resource use of every running service, sampled by one task for all.
//!
//! Sampling costs a few file reads per service, so it happens only while
//! someone looks: a status request, a scrape of /metrics or an open
//! dashboard asks for a fresh sample; the task then samples every
//! `sample_interval` for as long as requests keep coming (three intervals),
//! and sleeps otherwise. An idle orchestrator does not wake up for it.
//!
//! Numbers come from the service's cgroup where it has one (so children
//! and grandchildren count): CPU time from `cpu.stat`, the member list
//! from `cgroup.procs`; resident memory and descriptors are summed over
//! the members from /proc. Without a cgroup the members are the main
//! process and its descendants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blackhole_api::{Usage, rfc3339};
use blackhole_os::procfs;
use tokio::sync::{Notify, watch};

use crate::service::counters::Sampled;
use crate::supervisor::{Entry, Registry};

/// How long interest lasts after the last request, in intervals.
const LINGER: u32 = 3;

pub struct Sampler {
    interval: Duration,
    registry: watch::Receiver<Arc<Registry>>,
    wake: Notify,
    last_request: Mutex<Instant>,
    /// Increases with every completed sample.
    generation: watch::Sender<(u64, Instant)>,
}

impl Sampler {
    pub fn start(interval: Duration, registry: watch::Receiver<Arc<Registry>>) -> Arc<Sampler> {
        let long_ago = Instant::now() - interval * 10;
        let (generation, _) = watch::channel((0, long_ago));
        let s = Arc::new(Sampler {
            interval,
            registry,
            wake: Notify::new(),
            last_request: Mutex::new(long_ago),
            generation,
        });
        let task = s.clone();
        tokio::spawn(async move { task.run().await });
        s
    }

    /// Makes sure the samples are at most one interval old (waiting for
    /// one, at most a second, when they are not) and keeps sampling for a
    /// while.
    pub async fn fresh(&self) {
        *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut rx = self.generation.subscribe();
        let (seen, at) = *rx.borrow_and_update();
        if at.elapsed() <= self.interval {
            self.wake.notify_one();
            return;
        }
        self.wake.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while rx.borrow_and_update().0 == seen {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                // A few file reads per service: at a thousand services, tens
                // of milliseconds the runtime's one thread must not spend.
                let me = self.clone();
                if tokio::task::spawn_blocking(move || me.sample_all())
                    .await
                    .is_err()
                {
                    tracing::error!("resource sampling failed; figures may be stale");
                }
                let last = *self.last_request.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() > self.interval * LINGER {
                    break;
                }
                tokio::time::sleep(self.interval).await;
            }
        }
    }

    fn sample_all(&self) {
        let registry = self.registry.borrow().clone();
        // Built only if a service without a cgroup needs its descendants.
        let mut table: Option<ProcTable> = None;
        for entry in registry.services.values() {
            let Entry::Live(h) = entry else { continue };
            let (pid, started, cgroup, base) = {
                let s = h.snapshot.borrow();
                (s.status.pid, s.started, s.cgroup.clone(), s.cpu_base_usec)
            };
            let Some(pid) = pid else {
                *h.counters.usage.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            };
            let (members, cpu_total_usec) = match &cgroup {
                Some(dir) => {
                    let members: Vec<u32> = blackhole_os::kernfs::read(
                        &dir.join("cgroup.procs"),
                        blackhole_os::kernfs::Kind::List,
                    )
                    .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
                    .unwrap_or_default();
                    let usec = blackhole_os::track::read_key(&dir.join("cpu.stat"), "usage_usec");
                    (members, Some(usec))
                }
                None => {
                    let t = table.get_or_insert_with(ProcTable::read);
                    (t.tree(pid), None)
                }
            };
            let mut rss = 0u64;
            let mut fds = 0u32;
            let mut ticks = 0u64;
            for m in &members {
                rss += procfs::rss_bytes(*m).unwrap_or(0);
                fds += procfs::fd_count(*m).unwrap_or(0) as u32;
                if cpu_total_usec.is_none() {
                    ticks += procfs::stat(*m).map_or(0, |s| s.utime + s.stime);
                }
            }
            let (run_usec, total_usec) = match cpu_total_usec {
                Some(total) => (total.saturating_sub(base), total),
                None => {
                    let usec = ticks * 1_000_000 / procfs::ticks_per_second();
                    (usec, usec)
                }
            };
            let now = Instant::now();
            let previous = h.counters.sampled().filter(|p| p.run == (pid, started));
            let min_window = (self.interval / 2).min(Duration::from_millis(500));
            let mut window = (run_usec, now);
            let cpu_percent = match &previous {
                Some(p) if now.duration_since(p.at) < min_window => {
                    // Too soon after the last one: keep its figure and window.
                    window = (p.cpu_usec, p.at);
                    p.usage.cpu_percent
                }
                Some(p) => {
                    run_usec.saturating_sub(p.cpu_usec) as f64
                        / (now - p.at).as_micros().max(1) as f64
                        * 100.0
                }
                None => {
                    // First sample of this run: the average since it started.
                    let up = started
                        .and_then(|s| SystemTime::now().duration_since(s).ok())
                        .unwrap_or_default();
                    run_usec as f64 / up.as_micros().max(1) as f64 * 100.0
                }
            };
            let sample = Sampled {
                usage: Usage {
                    cpu_percent: (cpu_percent * 10.0).round() / 10.0,
                    cpu_seconds: run_usec as f64 / 1e6,
                    memory_bytes: rss,
                    processes: members.len() as u32,
                    fds,
                    sampled_at: rfc3339(SystemTime::now()),
                },
                cpu_total_seconds: total_usec as f64 / 1e6,
                run: (pid, started),
                cpu_usec: window.0,
                at: window.1,
            };
            *h.counters.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(sample);
        }
        let generation = self.generation.borrow().0 + 1;
        self.generation.send_replace((generation, Instant::now()));
    }
}

/// Parents and children of every process, read once per sample.
struct ProcTable {
    children: HashMap<i32, Vec<i32>>,
}

impl ProcTable {
    fn read() -> ProcTable {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for s in procfs::snapshot() {
            if s.state != 'Z' {
                children.entry(s.ppid).or_default().push(s.pid);
            }
        }
        ProcTable { children }
    }

    fn tree(&self, root: u32) -> Vec<u32> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            if let Some(kids) = self.children.get(&(out[i] as i32)) {
                out.extend(kids.iter().map(|k| *k as u32));
            }
            i += 1;
        }
        out
    }
}
