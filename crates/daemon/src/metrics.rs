//! Prometheus metrics, rendered at scrape time from what the services
//! already publish (status snapshots, counters, the latest resource
//! sample): nothing is counted twice and nothing runs between scrapes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use blackhole_api::State;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

use crate::logs::WriterStats;
use crate::service::counters::{PROBES, REASONS};
use crate::supervisor::{Entry, Registry};

/// Counters of the orchestrator itself, updated where things happen.
#[derive(Debug, Default)]
pub struct OrchestratorCounters {
    /// `(route, status) -> requests`.
    pub requests: Mutex<HashMap<(String, u16), u64>>,
    pub reloads_ok: AtomicU64,
    pub reloads_invalid: AtomicU64,
}

impl OrchestratorCounters {
    pub fn request(&self, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
    }
}

pub struct Metrics {
    pub registry: watch::Receiver<Arc<Registry>>,
    pub counters: Arc<OrchestratorCounters>,
    pub writer: Arc<WriterStats>,
    pub started_mono: Instant,
    pub started_wall: SystemTime,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

fn family<T>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, T)],
    put: impl Fn(prometheus_client::encoding::MetricEncoder, &T) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        put(m.encode_family(labels)?, value)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Counter, rows, |e, v| {
        ConstCounter::new(*v).encode(e)
    })
}

fn counters_f(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Counter, rows, |e, v| {
        ConstCounter::new(*v).encode(e)
    })
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Gauge, rows, |e, v| {
        ConstGauge::new(*v).encode(e)
    })
}

fn svc(name: &str) -> Labels {
    vec![("service", name.to_string())]
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut enc;
        let registry = self.registry.borrow().clone();
        let version = vec![("version", env!("CARGO_PKG_VERSION").to_string())];
        gauges(
            e,
            "blackhole_build_info",
            "Build information (always 1).",
            &[(version, 1.0)],
        )?;
        let start = self
            .started_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        gauges(
            e,
            "blackhole_start_time_seconds",
            "When the orchestrator started (Unix time).",
            &[(vec![], start)],
        )?;
        gauges(
            e,
            "blackhole_uptime_seconds",
            "How long the orchestrator has been running.",
            &[(vec![], self.started_mono.elapsed().as_secs_f64())],
        )?;
        let me = std::process::id();
        gauges(
            e,
            "blackhole_resident_memory_bytes",
            "Resident memory of the orchestrator process.",
            &[(
                vec![],
                blackhole_os::procfs::rss_bytes(me).unwrap_or(0) as f64,
            )],
        )?;
        gauges(
            e,
            "blackhole_open_fds",
            "Open file descriptors of the orchestrator process.",
            &[(
                vec![],
                blackhole_os::procfs::fd_count(me).unwrap_or(0) as f64,
            )],
        )?;
        let requests: Vec<(Labels, u64)> = {
            let map = self
                .counters
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut rows: Vec<_> = map
                .iter()
                .map(|((route, code), n)| {
                    (
                        vec![("route", route.clone()), ("code", code.to_string())],
                        *n,
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        counters(
            e,
            "blackhole_api_requests",
            "Control API requests by route and status code.",
            &requests,
        )?;
        let reloads = vec![
            (
                vec![("outcome", "applied".to_string())],
                self.counters.reloads_ok.load(Ordering::Relaxed),
            ),
            (
                vec![("outcome", "invalid".to_string())],
                self.counters.reloads_invalid.load(Ordering::Relaxed),
            ),
        ];
        counters(
            e,
            "blackhole_reloads",
            "Configuration reloads by outcome.",
            &reloads,
        )?;
        counters(
            e,
            "blackhole_log_writer_dropped_lines",
            "Lines the log writer could not write to any file (all services).",
            &[(vec![], self.writer.dropped_lines.load(Ordering::Relaxed))],
        )?;
        gauges(
            e,
            "blackhole_services",
            "Services configured or discovered.",
            &[(vec![], registry.services.len() as f64)],
        )?;

        let mut state = Vec::new();
        let mut up = Vec::new();
        let mut ready = Vec::new();
        let mut restarts = Vec::new();
        let mut exits = Vec::new();
        let mut start_time = Vec::new();
        let mut exit_code = Vec::new();
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        let mut procs = Vec::new();
        let mut fds = Vec::new();
        let mut lines = Vec::new();
        let mut bytes = Vec::new();
        let mut dropped = Vec::new();
        let mut probe_runs = Vec::new();
        let mut probe_secs = Vec::new();
        for (name, entry) in &registry.services {
            let status = entry.status();
            for s in State::ALL {
                let mut l = svc(name);
                l.push(("state", s.to_string()));
                state.push((l, if status.state == s { 1.0 } else { 0.0 }));
            }
            up.push((svc(name), if status.pid.is_some() { 1.0 } else { 0.0 }));
            ready.push((svc(name), if status.ready { 1.0 } else { 0.0 }));
            restarts.push((svc(name), u64::from(status.restarts)));
            if let Some(code) = status.last_exit.as_ref().and_then(|x| x.code) {
                exit_code.push((svc(name), f64::from(code)));
            }
            let Entry::Live(h) = entry else { continue };
            let c = &h.counters;
            for (i, reason) in REASONS.iter().enumerate() {
                let mut l = svc(name);
                l.push(("reason", reason.to_string()));
                exits.push((l, c.exits[i].load(Ordering::Relaxed)));
            }
            if let Some(t) = h.snapshot.borrow().started {
                start_time.push((
                    svc(name),
                    t.duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64(),
                ));
            }
            if let Some(sample) = c.sampled().filter(|s| Some(s.run.0) == status.pid) {
                cpu.push((svc(name), sample.cpu_total_seconds));
                rss.push((svc(name), sample.usage.memory_bytes as f64));
                procs.push((svc(name), f64::from(sample.usage.processes)));
                fds.push((svc(name), f64::from(sample.usage.fds)));
            }
            for (i, stream) in ["stdout", "stderr", "blackhole"].iter().enumerate() {
                let mut l = svc(name);
                l.push(("stream", stream.to_string()));
                lines.push((l.clone(), h.log.counters.lines[i].load(Ordering::Relaxed)));
                bytes.push((l, h.log.counters.bytes[i].load(Ordering::Relaxed)));
            }
            dropped.push((svc(name), h.log.counters.dropped.load(Ordering::Relaxed)));
            for (p, probe) in PROBES.iter().enumerate() {
                let runs = [
                    c.probe_results[p][0].load(Ordering::Relaxed),
                    c.probe_results[p][1].load(Ordering::Relaxed),
                ];
                if runs == [0, 0] {
                    continue;
                }
                for (r, result) in ["success", "failure"].iter().enumerate() {
                    let mut l = svc(name);
                    l.push(("probe", probe.to_string()));
                    l.push(("result", result.to_string()));
                    probe_runs.push((l, runs[r]));
                }
                let mut l = svc(name);
                l.push(("probe", probe.to_string()));
                probe_secs.push((l, c.probe_micros[p].load(Ordering::Relaxed) as f64 / 1e6));
            }
        }
        gauges(
            e,
            "blackhole_service_state",
            "1 for the state the service is in, 0 for the others.",
            &state,
        )?;
        gauges(
            e,
            "blackhole_service_up",
            "1 while a process of the service runs.",
            &up,
        )?;
        gauges(
            e,
            "blackhole_service_ready",
            "1 while the service is ready.",
            &ready,
        )?;
        counters(
            e,
            "blackhole_service_restarts",
            "Restarts, automatic and manual.",
            &restarts,
        )?;
        counters(
            e,
            "blackhole_service_exits",
            "Ended runs by reason.",
            &exits,
        )?;
        gauges(
            e,
            "blackhole_service_start_time_seconds",
            "When the current process started (Unix time).",
            &start_time,
        )?;
        gauges(
            e,
            "blackhole_service_last_exit_code",
            "Exit code of the last run that exited with one.",
            &exit_code,
        )?;
        counters_f(
            e,
            "blackhole_service_cpu_seconds",
            "CPU time of the service's processes (its cgroup).",
            &cpu,
        )?;
        gauges(
            e,
            "blackhole_service_memory_rss_bytes",
            "Resident memory of the service's processes.",
            &rss,
        )?;
        gauges(
            e,
            "blackhole_service_processes",
            "Processes of the service.",
            &procs,
        )?;
        gauges(
            e,
            "blackhole_service_open_fds",
            "Open file descriptors of the service's processes.",
            &fds,
        )?;
        counters(
            e,
            "blackhole_service_log_lines",
            "Output lines by stream.",
            &lines,
        )?;
        counters(
            e,
            "blackhole_service_log_bytes",
            "Output bytes by stream.",
            &bytes,
        )?;
        counters(
            e,
            "blackhole_service_log_lines_dropped",
            "Lines the log file did not get (disk full, unwritable).",
            &dropped,
        )?;
        counters(
            e,
            "blackhole_service_probes",
            "Readiness and liveness check runs by result.",
            &probe_runs,
        )?;
        gauges(
            e,
            "blackhole_service_probe_duration_seconds",
            "How long the last check run took.",
            &probe_secs,
        )?;
        Ok(())
    }
}

impl Metrics {
    /// The Prometheus text exposition format (0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::error!("cannot render metrics: {e}");
        }
        out
    }
}
