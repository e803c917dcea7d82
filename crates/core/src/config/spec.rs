//! Resolved configuration: every default applied, every path absolute.
//! This is what the orchestrator runs; nothing here is optional by accident.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{CgroupMode, LogFormat, RestartPolicy, ServiceKind};
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
    pub cgroups: CgroupMode,
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
}

impl ServiceSpec {
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
    }
}
