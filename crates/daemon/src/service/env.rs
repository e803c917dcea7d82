//! The environment a service starts with: nothing of the orchestrator's
//! own environment but what is listed here.
//!
//! In order, later entries winning: `PATH`, `HOME` (the data dir),
//! `TMPDIR`/`TEMP`/`TMP`, `LANG` when the orchestrator has it,
//! `BLACKHOLE_SERVICE`, the `env_file`s in order (read at each start),
//! the service's `environment`, then `GOMEMLIMIT` when `memory_limit` is
//! set.

use std::collections::BTreeMap;

use blackhole_core::config::{ServiceSpec, dotenv};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the orchestrator passes through from its own environment.
#[derive(Clone, Debug, Default)]
pub struct BaseEnv {
    pub path: Option<String>,
    pub tmpdir: Option<String>,
    pub lang: Option<String>,
}

impl BaseEnv {
    pub fn from_process() -> Self {
        BaseEnv {
            path: std::env::var("PATH").ok(),
            tmpdir: std::env::var("TMPDIR").ok(),
            lang: std::env::var("LANG").ok(),
        }
    }
}

/// Builds the environment, reading env files now. An error names the file
/// and line.
pub fn build(spec: &ServiceSpec, base: &BaseEnv) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        base.path.clone().unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    env.insert("HOME".into(), spec.data_dir.display().to_string());
    let tmp = base.tmpdir.clone().unwrap_or_else(|| "/tmp".into());
    for key in ["TMPDIR", "TEMP", "TMP"] {
        env.insert(key.into(), tmp.clone());
    }
    if let Some(lang) = &base.lang {
        env.insert("LANG".into(), lang.clone());
    }
    env.insert("BLACKHOLE_SERVICE".into(), spec.name.clone());
    for file in &spec.env_files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("env_file {}: {e}", file.display()))?;
        let pairs = dotenv::parse(&text)
            .map_err(|(line, why)| format!("env_file {}:{line}: {why}", file.display()))?;
        env.extend(pairs);
    }
    env.extend(spec.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(bytes) = spec.memory_limit {
        env.insert("GOMEMLIMIT".into(), format!("{}MiB", bytes / (1024 * 1024)));
    }
    Ok(env)
}
