//! One service: its actor (the task that owns its state and its process),
//! the handle others use to talk to it, and the OS seam.

mod actor;
pub mod counters;
pub mod deps;
pub mod env;
pub mod health;
pub mod ops;
pub mod probe;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blackhole_api::ServiceStatus;
use tokio::sync::{mpsc, oneshot, watch};

pub use actor::{Actor, Clock, invalid_status};
pub use ops::{Launched, OsContext, OsProcesses, Processes};

use blackhole_core::config::ServiceSpec;

use crate::logs::ServiceLog;

/// The result of a start, stop or restart: the status once the transition
/// is done, or why it failed (with the status then).
#[derive(Debug)]
pub enum Outcome {
    Done(ServiceStatus),
    Failed(ServiceStatus, String),
}

pub type Reply = oneshot::Sender<Outcome>;

/// Messages to a service actor. Each may carry a reply sent when the
/// transition is complete.
pub enum Command {
    Start(Option<Reply>),
    Stop(Option<Reply>),
    Restart(Option<Reply>),
    /// New settings that do not need a new process.
    Update(Arc<ServiceSpec>),
    /// Stop, then end the actor.
    Shutdown(Option<Reply>),
    /// What it depends on and restarts with (at start and after a reload).
    SetDeps(Box<deps::Deps>),
    /// SIGKILL everything of the service now.
    Kill,
}

/// What the actor publishes after every change. Uptime and the backoff
/// countdown are derived when read, so an idle service publishes nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub status: ServiceStatus,
    pub started: Option<SystemTime>,
    pub next_start_at: Option<SystemTime>,
    /// Processes this service has had: a dependent with `restart_with`
    /// restarts when it grows.
    pub runs: u64,
    /// The configured environment, secrets masked, for the detail view.
    pub environment: Arc<BTreeMap<String, String>>,
    /// The cgroup holding the service's processes, if any.
    pub cgroup: Option<Arc<std::path::PathBuf>>,
    /// The cgroup's CPU time when the current run started (µs).
    pub cpu_base_usec: u64,
}

/// The environment as status shows it.
pub fn masked_environment(
    spec: &blackhole_core::config::ServiceSpec,
) -> Arc<BTreeMap<String, String>> {
    Arc::new(
        spec.environment
            .iter()
            .map(|(k, v)| {
                let shown = if blackhole_api::looks_secret(k) {
                    blackhole_api::MASK.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect(),
    )
}

impl Snapshot {
    /// The status as of now.
    pub fn view(&self) -> ServiceStatus {
        let now = SystemTime::now();
        let mut s = self.status.clone();
        s.uptime_secs = self
            .started
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO).as_secs());
        s.next_start_secs = self.next_start_at.map(|t| {
            t.duration_since(now)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        });
        s
    }
}

/// How the rest of the orchestrator reaches one service.
#[derive(Clone)]
pub struct ServiceHandle {
    pub name: String,
    pub commands: mpsc::Sender<Command>,
    pub snapshot: watch::Receiver<Snapshot>,
    pub log: Arc<ServiceLog>,
    pub counters: Arc<counters::ServiceCounters>,
}

impl ServiceHandle {
    pub fn status(&self) -> ServiceStatus {
        let mut s = self.snapshot.borrow().view();
        if s.pid.is_some()
            && let Some(sample) = self.counters.sampled()
            && Some(sample.run.0) == s.pid
        {
            s.usage = Some(sample.usage);
        }
        s
    }
}

#[cfg(test)]
mod tests;
