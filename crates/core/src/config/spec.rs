//! Resolved configuration: every default applied, every path absolute.
//! This is what the orchestrator runs; nothing here is optional by accident.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::discovery::Account;
use super::raw::{CgroupMode, Condition, LogFormat, RestartPolicy, ServiceKind};
use super::value::LogLevel;
use crate::backoff::Backoff;
use crate::signal::Signal;

#[derive(Clone, Debug, PartialEq)]
pub struct OrchestratorSpec {
    pub services_dir: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub auto_restart: bool,
    pub shutdown_timeout: Duration,
    /// `.blackhole/` beside the config file: lock, socket, logs, records.
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub log_dir: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Also print every service line in the orchestrator's own log.
    pub log_service_output: bool,
    /// Bytes of each service's latest output kept in memory.
    pub log_memory: usize,
    pub cgroups: CgroupMode,
    /// The orchestrator's cgroup folder, relative to each hierarchy's root.
    pub cgroup_parent: String,
    /// Every service must pin its binary with `sha256`.
    pub require_sha256: bool,
    /// A group that may use the control socket (mode 0660 instead of 0600).
    pub socket_group: Option<u32>,
    /// An extra TCP listener for the API (`host:port`), token required.
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    /// How often resource use is sampled while someone is looking.
    pub sample_interval: Duration,
    /// A read-only TCP listener serving only `/metrics`.
    pub metrics_listen: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff: Backoff,
    /// Consecutive failed runs before giving up; 0 = never give up.
    pub max_attempts: u32,
    /// A run that lasted this long resets the attempt counter.
    pub reset_after: Duration,
}

/// Where a service came from, for `check` and diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Discovered,
    Configured { line: usize },
    Both { line: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub origin: Origin,
    pub enabled: bool,
    pub kind: ServiceKind,
    pub binary: PathBuf,
    /// Arguments after argv\[0\], with the platform's `--service NAME
    /// --log-level LEVEL` prefix already applied when `service_args` is on.
    pub args: Vec<String>,
    pub service_args: bool,
    pub environment: BTreeMap<String, String>,
    pub env_files: Vec<PathBuf>,
    pub data_dir: PathBuf,
    pub memory_limit: Option<u64>,
    pub log_level: LogLevel,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub success_exit_codes: Vec<i32>,
    pub restart: RestartSpec,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub depends_on: Vec<Dependency>,
    /// Restart this service whenever one of these restarts.
    pub restart_with: Vec<String>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    /// Not ready within this long: a failed start.
    pub start_timeout: Option<Duration>,
    /// sd_notify `WATCHDOG=1` must arrive at least this often.
    pub watchdog: Option<Duration>,
    /// Memory plus swap the service may use beyond `memory_limit`, bytes.
    pub memory_swap_limit: Option<u64>,
    /// CPU time as a number of cores (`0.5` = half of one core).
    pub cpu_quota: Option<f64>,
    pub pids_limit: Option<u64>,
    pub rlimits: Vec<Rlimit>,
    /// Who the service runs as; `None` keeps the orchestrator's identity.
    pub credentials: Option<Account>,
    pub no_new_privileges: bool,
    /// Lowercase hex SHA-256 the binary must have.
    pub sha256: Option<String>,
    pub allow_writable_binary: bool,
}

/// A resource limit set before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: RlimitKind,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RlimitKind {
    Nofile,
    Nproc,
    Core,
    As,
    Cpu,
    Fsize,
    Memlock,
    Stack,
}

impl RlimitKind {
    pub const ALL: [(&'static str, RlimitKind); 8] = [
        ("nofile", RlimitKind::Nofile),
        ("nproc", RlimitKind::Nproc),
        ("core", RlimitKind::Core),
        ("as", RlimitKind::As),
        ("cpu", RlimitKind::Cpu),
        ("fsize", RlimitKind::Fsize),
        ("memlock", RlimitKind::Memlock),
        ("stack", RlimitKind::Stack),
    ];

    pub fn name(self) -> &'static str {
        RlimitKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

impl ServiceSpec {
    /// Settings that need a cgroup controller to be enforced.
    pub fn cgroup_limits(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memory_limit.is_some() {
            out.push("memory_limit");
        }
        if self.memory_swap_limit.is_some() {
            out.push("memory_swap_limit");
        }
        if self.cpu_quota.is_some() {
            out.push("cpu_quota");
        }
        if self.pids_limit.is_some() {
            out.push("pids_limit");
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub condition: Condition,
}

/// A readiness or liveness check.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// sd_notify `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// A newline written to this descriptor (the s6 protocol).
    Fd(i32),
    /// A command that exits 0 (argv; run with the service's environment).
    Exec(Vec<String>),
    /// An HTTP GET answered with a status in `status` (inclusive).
    Http {
        url: String,
        headers: Vec<(String, String)>,
        status: (u16, u16),
    },
    /// A TCP connection that succeeds.
    Tcp(String),
    /// A line of the service's output that matches this regular expression.
    Log(String),
}

impl Check {
    /// Checks run on a timer (as opposed to signalled by the service).
    pub fn is_periodic(&self) -> bool {
        matches!(self, Check::Exec(_) | Check::Http { .. } | Check::Tcp(_))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Check::Notify => "notify",
            Check::Fd(_) => "fd",
            Check::Exec(_) => "exec",
            Check::Http { .. } => "http",
            Check::Tcp(_) => "tcp",
            Check::Log(_) => "log",
        }
    }
}

impl ServiceSpec {
    /// Whether the service needs the sd_notify socket.
    pub fn wants_notify(&self) -> bool {
        matches!(
            self.readiness.as_ref().map(|p| &p.check),
            Some(Check::Notify)
        ) || self.watchdog.is_some()
    }

    pub fn is_success(&self, code: i32) -> bool {
        self.success_exit_codes.contains(&code)
    }

    /// Settings that shape the process itself: changing one needs a new
    /// process. Everything else applies to the running service in place.
    pub fn same_process(&self, other: &ServiceSpec) -> bool {
        self.kind == other.kind
            && self.binary == other.binary
            && self.args == other.args
            && self.environment == other.environment
            && self.env_files == other.env_files
            && self.data_dir == other.data_dir
            && self.memory_limit == other.memory_limit
            && self.memory_swap_limit == other.memory_swap_limit
            && self.cpu_quota == other.cpu_quota
            && self.pids_limit == other.pids_limit
            && self.rlimits == other.rlimits
            && self.credentials == other.credentials
            && self.no_new_privileges == other.no_new_privileges
            && self.sha256 == other.sha256
            && self.wants_notify() == other.wants_notify()
            && self.watchdog == other.watchdog
            && self.readiness_fd() == other.readiness_fd()
    }

    /// The descriptor a `fd` readiness check hands the service.
    pub fn readiness_fd(&self) -> Option<i32> {
        match self.readiness.as_ref().map(|p| &p.check) {
            Some(Check::Fd(fd)) => Some(*fd),
            _ => None,
        }
    }
}
