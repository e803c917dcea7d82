//! Value types of the configuration that validate themselves while being
//! deserialized, so that a bad value is reported by the TOML reader with its
//! exact line and column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// A duration written as integer seconds (`10`), fractional seconds (`0.5`)
/// or a string with units (`"1500ms"`, `"1m 30s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: integer seconds such as 10, or a string such as \"1500ms\" or \"2m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v).map(Seconds).map_err(|_| {
                    E::custom(format!(
                        "a duration must be a finite, non-negative number of seconds, got {v}"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v).map(Seconds).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"10s"`, `"1500ms"`, `"1m 30s"`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration \"{s}\" ({e}); write it like \"500ms\", \"10s\", \"2m\" or as integer seconds")
    })
}

/// A size in bytes, written as an integer of a default unit or as a string
/// with a unit (`"10MiB"`, `"512K"`, `"1G"`; K/M/G are powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub u64);

/// A byte size whose bare integers count bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteSize(pub Bytes);

/// A byte size whose bare integers count MiB (the platform's `memory_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MebiSize(pub Bytes);

fn size_visitor<'de, D: Deserializer<'de>>(
    d: D,
    integer_unit: u64,
    unit_name: &'static str,
) -> Result<Bytes, D::Error> {
    struct V(u64, &'static str);
    impl Visitor<'_> for V {
        type Value = Bytes;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a size: an integer number of {} or a string such as \"512MiB\"",
                self.1
            )
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
            let v = u64::try_from(v)
                .map_err(|_| E::custom(format!("a size cannot be negative, got {v}")))?;
            self.visit_u64(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
            v.checked_mul(self.0)
                .map(Bytes)
                .ok_or_else(|| E::custom(format!("size {v} {} is too large", self.1)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
            parse_size(v).map(Bytes).map_err(E::custom)
        }
    }
    d.deserialize_any(V(integer_unit, unit_name))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        size_visitor(d, 1, "bytes").map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for MebiSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        size_visitor(d, 1024 * 1024, "MiB").map(MebiSize)
    }
}

/// Parses `"10MiB"`, `"10M"`, `"10 MB"`, `"4096"`, `"1.5G"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size \"{s}\": unknown unit `{unit}`, use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size \"{s}\": write it like \"512MiB\" or \"10M\""))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size \"{s}\": out of range"));
    }
    Ok(bytes as u64)
}

/// A signal written as `"SIGTERM"`, `"TERM"` or its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalSetting(pub Signal);

impl<'de> Deserialize<'de> for SignalSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SignalSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a signal name such as \"SIGTERM\" or its number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SignalSetting, E> {
                i32::try_from(v)
                    .ok()
                    .and_then(Signal::from_number)
                    .map(SignalSetting)
                    .ok_or_else(|| E::custom(format!("{v} is not a signal number")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SignalSetting, E> {
                v.parse().map(SignalSetting).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The orchestrator's and services' log level.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "unknown log level `{s}`, expected error, warn, info, debug or trace"
            )),
        }
    }
}

/// Service names become folder and file names: `[A-Za-z0-9_.-]`, 1 to 64
/// characters, not starting with `.`, so that no name can point outside the
/// services or log directories.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a service name cannot be empty".into());
    }
    if name.len() > 64 {
        return Err(format!(
            "service name `{}…` is {} characters long; the limit is 64",
            name.chars().take(20).collect::<String>(),
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("service name `{name}` cannot start with `.`"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "service name `{}` contains {:?}; use only letters, digits, `_`, `.` and `-`",
            name.escape_debug(),
            bad
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn names() {
        for ok in ["web", "a", "api-v2", "db_1.primary", &"x".repeat(64)] {
            validate_service_name(ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "a b",
            "caf\u{e9}",
            "nul\0",
            &"x".repeat(65),
        ] {
            assert!(validate_service_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
