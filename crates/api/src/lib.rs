//! The control API's types: what the daemon serves and the CLI reads.
//! See `docs/API.md`. Every path is under [`PREFIX`]; errors are
//! [`ErrorBody`] with one of the [`codes`].
#![forbid(unsafe_code)]

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use blackhole_core::machine::State;

pub const API_VERSION: &str = "v1";
pub const PREFIX: &str = "/v1";

/// One service as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    pub enabled: bool,
    /// The main process, while there is one.
    pub pid: Option<u32>,
    /// Automatic and manual restarts since the orchestrator started.
    pub restarts: u32,
    /// When the service entered its current state (RFC 3339).
    pub since: String,
    /// Seconds since the current process started; null without one.
    pub uptime_secs: Option<u64>,
    pub last_exit: Option<LastExit>,
    pub last_error: Option<String>,
    /// Ready (readiness satisfied) right now.
    pub ready: bool,
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds until the next automatic start, in `restarting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_secs: Option<f64>,
    /// What a `blocked` service waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_on: Option<String>,
    /// Consecutive failed runs (the backoff exponent).
    #[serde(default)]
    pub failures: u32,
    /// The binary that runs.
    #[serde(default)]
    pub binary: String,
    /// The last readiness check, when one is configured and has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeStatus>,
    /// The last liveness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeStatus>,
    /// What the service last said with sd_notify `STATUS=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// The main process the service announced with `MAINPID=`, when it
    /// differs from `pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// The configured environment, with secret-looking values masked
    /// (only in the single-service view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<std::collections::BTreeMap<String, String>>,
    /// Resources used by every process of the service, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Resources a service uses, summed over all its processes (from its
/// cgroup where it has one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU use since the previous sample (or since the process started),
    /// in percent of one core.
    pub cpu_percent: f64,
    /// CPU time of the current run, user and system.
    pub cpu_seconds: f64,
    /// Resident memory.
    pub memory_bytes: u64,
    pub processes: u32,
    pub fds: u32,
    /// When this was measured (RFC 3339).
    pub sampled_at: String,
}

/// Whether a variable's value is kept out of status output: its name
/// contains SECRET, TOKEN, PASSWORD, PASSWD or KEY.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY"]
        .iter()
        .any(|s| k.contains(s))
}

/// What status shows instead of a secret value.
pub const MASK: &str = "********";

/// The last result of a readiness or liveness check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// `http`, `tcp`, `exec`, `notify`, `fd`, `log`.
    pub kind: String,
    pub ok: bool,
    pub message: String,
    /// When it ran (RFC 3339).
    pub at: String,
    /// Consecutive failures so far.
    pub failures: u32,
}

/// How the last run ended: `{"code": 1, ...}` or `{"signal": "SIGKILL", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `exited`, `killed`, `oom-killed`, `stopped`, `liveness-failed`,
    /// `start-timeout`, `watchdog-timeout`, `spawn-failed`.
    pub reason: String,
    /// The reason in words.
    pub message: String,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl LastExit {
    /// `code 1`, `SIGKILL`, `oom-killed`: the short form for tables.
    pub fn short(&self) -> String {
        match (&self.code, &self.signal, self.reason.as_str()) {
            (_, _, "oom-killed") => "oom-killed".into(),
            (_, _, "spawn-failed") => "spawn failed".into(),
            (_, _, "liveness-failed") => "liveness".into(),
            (_, _, "start-timeout") => "start timeout".into(),
            (_, _, "watchdog-timeout") => "watchdog".into(),
            (Some(c), _, _) => format!("code {c}"),
            (_, Some(s), _) => s.clone(),
            _ => self.reason.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
}

/// The body of `POST /v1/start`, `/v1/stop` and `/v1/restart`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The services to act on; absent or empty: every valid service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// One service's outcome in a [`BatchReport`]: its status, or the error it
/// would have had on its own (`status` is then in the error if known).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// What a batch start, stop or restart did, in the order it was done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    pub results: Vec<BatchResult>,
}

/// A state change or a notable happening, as `GET /v1/events` streams it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event of this orchestrator.
    pub seq: u64,
    pub time: String,
    /// Empty for orchestrator-wide events.
    pub service: String,
    /// `state`, `reload`, `orchestrator`, `lagged`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub message: String,
}

/// One captured output line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub time: String,
    pub service: String,
    /// `stdout`, `stderr`, or `blackhole` for the orchestrator's own notes
    /// about the service.
    pub stream: String,
    pub pid: Option<u32>,
    pub line: String,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    /// Changed only in settings applied in place.
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    /// Warnings found while loading (the reload still happened).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub services: usize,
    pub config: Option<String>,
    /// How service processes are tracked (a cgroup folder or "process tree").
    pub tracking: String,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of [`codes`].
    pub code: String,
    pub message: String,
    /// Configuration problems, one line each (reload, check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// The service's status after a failed operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<ServiceStatus>>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
                details: Vec::new(),
                status: None,
            },
        }
    }
}

/// Error codes.
pub mod codes {
    /// 404: no such service or route.
    pub const NOT_FOUND: &str = "not_found";
    /// 400: the request is malformed.
    pub const BAD_REQUEST: &str = "bad_request";
    /// 422: the configuration is invalid; nothing was changed.
    pub const INVALID_CONFIG: &str = "invalid_config";
    /// 409: the service cannot do that now (invalid configuration, shutting down).
    pub const CONFLICT: &str = "conflict";
    /// 500: the operation was carried out and failed (the service did not start).
    pub const FAILED: &str = "failed";
    /// 504: the operation did not finish in time; it goes on.
    pub const TIMEOUT: &str = "timeout";
    /// 503: the orchestrator is shutting down.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 500: a bug.
    pub const INTERNAL: &str = "internal";
}

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_exit_serialises_as_documented() {
        let code = LastExit {
            code: Some(1),
            signal: None,
            reason: "exited".into(),
            message: "exited with code 1".into(),
            at: None,
        };
        let v = serde_json::to_value(&code).unwrap();
        assert_eq!(v["code"], 1);
        assert!(v.get("signal").is_none());
        let sig = LastExit {
            code: None,
            signal: Some("SIGKILL".into()),
            reason: "oom-killed".into(),
            message: "oom".into(),
            at: None,
        };
        let v = serde_json::to_value(&sig).unwrap();
        assert_eq!(v["signal"], "SIGKILL");
        assert_eq!(sig.short(), "oom-killed");
        assert_eq!(code.short(), "code 1");
    }

    #[test]
    fn state_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&State::Restarting).unwrap(),
            "\"restarting\""
        );
    }
}
