//! The configuration file exactly as written: every key optional, unknown
//! keys rejected. [`super::load`] turns it into resolved specs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::value::{ByteSize, LogLevel, MebiSize, Seconds, SignalSetting};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrchestrator {
    pub services_dir: Option<String>,
    pub log_level: Option<LogLevel>,
    pub log_format: Option<LogFormat>,
    pub auto_restart: Option<bool>,
    pub shutdown_timeout: Option<Seconds>,
    pub state_dir: Option<String>,
    pub socket: Option<String>,
    pub log_dir: Option<String>,
    pub log_max_size: Option<ByteSize>,
    pub log_max_files: Option<u32>,
    pub log_service_output: Option<bool>,
    pub log_memory: Option<ByteSize>,
    pub cgroups: Option<CgroupMode>,
    pub cgroup_parent: Option<String>,
    pub require_sha256: Option<bool>,
    pub socket_group: Option<String>,
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub sample_interval: Option<Seconds>,
    pub metrics_listen: Option<String>,
}

/// Whether services get cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Use cgroups where they can be written; settings that need them are
    /// errors where they cannot.
    #[default]
    Auto,
    /// Like `auto`, but settings that need cgroups become warnings.
    Optional,
    /// Never: processes are tracked by session, group and descendants.
    Off,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub enabled: Option<bool>,
    #[serde(rename = "type")]
    pub kind: Option<ServiceKind>,
    pub binary_path: Option<String>,
    pub args: Option<Vec<String>>,
    pub environment: Option<BTreeMap<String, EnvValue>>,
    pub env_file: Option<OneOrMany>,
    pub data_dir: Option<String>,
    pub memory_limit: Option<MebiSize>,
    pub service_args: Option<bool>,
    pub log_level: Option<LogLevel>,
    pub stop_signal: Option<SignalSetting>,
    pub stop_timeout: Option<Seconds>,
    pub success_exit_codes: Option<Vec<i64>>,
    pub restart: Option<RawRestart>,
    pub log_max_size: Option<ByteSize>,
    pub log_max_files: Option<u32>,
    pub depends_on: Option<RawDepends>,
    pub restart_with: Option<Vec<String>>,
    pub readiness: Option<RawProbe>,
    pub liveness: Option<RawProbe>,
    pub start_timeout: Option<Seconds>,
    pub watchdog_timeout: Option<Seconds>,
    pub memory_swap_limit: Option<MebiSize>,
    pub cpu_quota: Option<f64>,
    pub pids_limit: Option<u64>,
    pub rlimits: Option<BTreeMap<String, RawRlimit>>,
    pub user: Option<IdOrName>,
    pub group: Option<IdOrName>,
    pub no_new_privileges: Option<bool>,
    pub sha256: Option<String>,
    pub allow_writable_binary: Option<bool>,
}

/// A user or group: a name, or a numeric id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

impl fmt::Display for IdOrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdOrName::Id(id) => write!(f, "{id}"),
            IdOrName::Name(n) => f.write_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for IdOrName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdOrName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name or a numeric id")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdOrName, E> {
                u32::try_from(v)
                    .map(IdOrName::Id)
                    .map_err(|_| E::custom(format!("{v} is not a valid id")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdOrName, E> {
                if v.is_empty() {
                    return Err(E::custom("the name cannot be empty"));
                }
                Ok(match v.parse::<u32>() {
                    Ok(id) => IdOrName::Id(id),
                    Err(_) => IdOrName::Name(v.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One resource limit: a number for both soft and hard, `[soft, hard]`,
/// or `"unlimited"` (also inside the pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRlimit {
    pub soft: u64,
    pub hard: u64,
}

/// The value that means no limit.
pub const RLIM_INFINITY: u64 = u64::MAX;

impl<'de> Deserialize<'de> for RawRlimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn one<E: de::Error>(v: &toml::Value) -> Result<u64, E> {
            match v {
                toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
                toml::Value::String(s) if s == "unlimited" || s == "infinity" => Ok(RLIM_INFINITY),
                other => Err(E::custom(format!(
                    "a limit is a non-negative integer or \"unlimited\", got {}",
                    other.type_str()
                ))),
            }
        }
        let v = toml::Value::deserialize(d)?;
        match &v {
            toml::Value::Array(pair) if pair.len() == 2 => {
                let (soft, hard) = (one::<D::Error>(&pair[0])?, one::<D::Error>(&pair[1])?);
                if soft > hard {
                    return Err(de::Error::custom(format!(
                        "the soft limit ({soft}) is above the hard limit ({hard})"
                    )));
                }
                Ok(RawRlimit { soft, hard })
            }
            toml::Value::Array(_) => Err(de::Error::custom(
                "write a limit as N, \"unlimited\" or [soft, hard]",
            )),
            other => {
                let n = one::<D::Error>(other)?;
                Ok(RawRlimit { soft: n, hard: n })
            }
        }
    }
}

/// `depends_on = ["db"]` (each must be ready) or
/// `depends_on = { db = "ready", migrate = "completed", cache = "started" }`.
#[derive(Debug)]
pub struct RawDepends(pub Vec<(String, Condition)>);

/// What a dependent waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Its process runs (or it completed).
    Started,
    /// It is ready (readiness satisfied).
    Ready,
    /// A oneshot that completed successfully.
    Completed,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Completed => "completed",
        })
    }
}

impl<'de> Deserialize<'de> for RawDepends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDepends;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of service names, or a table of name = \"started\" | \"ready\" | \"completed\"")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawDepends, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push((name, Condition::Ready));
                }
                Ok(RawDepends(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawDepends, A::Error> {
                let mut out = Vec::new();
                while let Some((name, cond)) = map.next_entry::<String, Condition>()? {
                    out.push((name, cond));
                }
                Ok(RawDepends(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A readiness or liveness check, with Kubernetes' names and defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub kind: Option<ProbeKind>,
    pub initial_delay: Option<Seconds>,
    pub period: Option<Seconds>,
    pub timeout: Option<Seconds>,
    pub success_threshold: Option<u32>,
    pub failure_threshold: Option<u32>,
    /// http
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub expected_status: Option<String>,
    /// exec
    pub command: Option<Vec<String>>,
    /// tcp: `host:port`
    pub address: Option<String>,
    /// log: a regular expression
    pub pattern: Option<String>,
    /// fd: the descriptor number the service writes a newline to
    pub fd: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Notify,
    Fd,
    Exec,
    Http,
    Tcp,
    Log,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Notify => "notify",
            ProbeKind::Fd => "fd",
            ProbeKind::Exec => "exec",
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Log => "log",
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub policy: Option<RestartPolicy>,
    pub initial_delay: Option<Seconds>,
    pub max_delay: Option<Seconds>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
    pub max_attempts: Option<u32>,
    pub reset_after: Option<Seconds>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Runs until stopped.
    #[default]
    Simple,
    /// Runs to completion; a successful exit is `exited` (completed).
    Oneshot,
}

/// An environment value: strings as they are; numbers and booleans are
/// accepted and written in their TOML form, so `PORT = 8080` works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (or a number or boolean)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                if v.contains('\0') {
                    return Err(E::custom(
                        "an environment value cannot contain a NUL character",
                    ));
                }
                Ok(EnvValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}
