//! What this orchestrator runs, written down in its state folder
//! (`.blackhole/run.json`): its cgroup folders and each service's main
//! pid with the process's start time. If the orchestrator dies without
//! cleaning up (SIGKILL, power loss), the next one on the same folder
//! reads this before starting anything and kills what is left, so a
//! service never runs twice.
//!
//! Writes are coalesced by a task that sleeps when nothing changed, so
//! hundreds of services starting at once cost one write, and an idle
//! orchestrator none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

pub struct Records {
    path: PathBuf,
    state: Mutex<State>,
    dirty: Notify,
}

#[derive(Default)]
struct State {
    bases: Vec<PathBuf>,
    /// service -> (pid, start time in clock ticks after boot)
    pids: BTreeMap<String, (u32, u64)>,
}

impl Records {
    pub fn start(state_dir: &Path, bases: Vec<PathBuf>) -> Arc<Records> {
        let records = Arc::new(Records {
            path: state_dir.join("run.json"),
            state: Mutex::new(State {
                bases,
                pids: BTreeMap::new(),
            }),
            dirty: Notify::new(),
        });
        records.write();
        let flusher = records.clone();
        tokio::spawn(async move {
            loop {
                flusher.dirty.notified().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                flusher.write();
            }
        });
        records
    }

    pub fn started(&self, service: &str, pid: u32) {
        let Some(stat) = blackhole_os::procfs::stat(pid) else {
            return;
        };
        self.lock()
            .pids
            .insert(service.to_string(), (pid, stat.starttime));
        self.dirty.notify_one();
    }

    pub fn ended(&self, service: &str) {
        if self.lock().pids.remove(service).is_some() {
            self.dirty.notify_one();
        }
    }

    /// A clean shutdown: nothing is left to find.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) {
        let body = {
            let s = self.lock();
            let pids: serde_json::Map<String, serde_json::Value> = s
                .pids
                .iter()
                .map(|(k, (pid, start))| (k.clone(), json!({"pid": pid, "starttime": start})))
                .collect();
            json!({
                "orchestrator": std::process::id(),
                "cgroup_bases": s.bases,
                "services": pids,
            })
        };
        let tmp = self.path.with_extension("json.new");
        let written =
            std::fs::write(&tmp, body.to_string()).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(
                "cannot record running services in {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Kills what a dead orchestrator recorded and left running: processes
/// whose pid and start time still match (with their sessions and process
/// groups), and everything in its recorded cgroups. Returns what it found.
pub fn kill_recorded(state_dir: &Path) -> Vec<String> {
    let path = state_dir.join("run.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(services) = v["services"].as_object() {
        for (name, rec) in services {
            let (Some(pid), Some(start)) = (rec["pid"].as_u64(), rec["starttime"].as_u64()) else {
                continue;
            };
            let pid = pid as u32;
            // A live process with this pid and another start time is not
            // ours: the pid was reused. A dead one leaves its session and
            // process group ids to its children, and the kernel does not
            // hand out a pid still used as such an id, so members of them
            // are the service's.
            if blackhole_os::procfs::stat(pid)
                .is_some_and(|s| s.starttime != start && s.state != 'Z')
            {
                continue;
            }
            // Its session and process group: the service and its own
            // children (without cgroups, that is all that can be found).
            let members: Vec<i32> = blackhole_os::procfs::snapshot()
                .into_iter()
                .filter(|s| (s.session == pid as i32 || s.pgrp == pid as i32) && s.state != 'Z')
                .map(|s| s.pid)
                .collect();
            if members.is_empty() {
                continue;
            }
            for m in &members {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*m),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            found.push(format!(
                "service `{name}`: {} process(es) of its session (pids {members:?})",
                members.len()
            ));
        }
    }
    if let Some(bases) = v["cgroup_bases"].as_array() {
        for base in bases.iter().filter_map(|b| b.as_str()) {
            let Ok(dir) = std::fs::read_dir(base) else {
                continue;
            };
            for entry in dir.flatten() {
                let cg = blackhole_os::track::cgroup::ServiceCgroup::open(entry.path());
                let pids = cg.pids();
                if !pids.is_empty() {
                    let _ = cg.kill_all();
                    found.push(format!(
                        "cgroup {}: {} process(es)",
                        entry.path().display(),
                        pids.len()
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    found
}
