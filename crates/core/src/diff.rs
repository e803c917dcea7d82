//! What a reload changes: services added, removed, changed in a way that
//! needs a new process, changed in place, or left alone.

use std::collections::BTreeMap;

use crate::config::{Config, ServiceSpec};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New services (enabled ones are started).
    pub added: Vec<String>,
    /// Services no longer configured or discovered: stopped and forgotten.
    pub removed: Vec<String>,
    /// Process-shaping settings changed: restarted.
    pub restart: Vec<String>,
    /// Only settings that apply in place changed (policy, timeouts, logs).
    pub update: Vec<String>,
    /// `enabled` changed: started or stopped.
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Compares the services of two configurations.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut p = Plan::default();
    let old_all: BTreeMap<&str, Option<&ServiceSpec>> = all(old);
    let new_all: BTreeMap<&str, Option<&ServiceSpec>> = all(new);
    for (name, spec) in &new_all {
        match (old_all.get(name), spec) {
            (None, _) => p.added.push(name.to_string()),
            (Some(Some(a)), Some(b)) => {
                if a.enabled != b.enabled {
                    if b.enabled {
                        p.enable.push(name.to_string());
                    } else {
                        p.disable.push(name.to_string());
                    }
                } else if !a.same_process(b) {
                    p.restart.push(name.to_string());
                } else if a != b {
                    p.update.push(name.to_string());
                } else {
                    p.unchanged.push(name.to_string());
                }
            }
            // Invalid before or after: replace the service wholesale.
            (Some(_), _) => p.restart.push(name.to_string()),
        }
    }
    for name in old_all.keys() {
        if !new_all.contains_key(name) {
            p.removed.push(name.to_string());
        }
    }
    p
}

fn all(c: &Config) -> BTreeMap<&str, Option<&ServiceSpec>> {
    c.services
        .iter()
        .map(|(k, v)| (k.as_str(), Some(&**v)))
        .chain(c.invalid.keys().map(|k| (k.as_str(), None)))
        .collect()
}
