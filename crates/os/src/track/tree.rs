//! Tracking without cgroups: a service's processes are its session and
//! process group (the main process is a session leader) plus every
//! descendant of a process known to belong to it.
//!
//! Known members are remembered with their start time, so that a member
//! whose parent died (and who was re-parented to the orchestrator) is still
//! found, and a reused pid is not mistaken for a member. A process that
//! leaves the session *and* loses its parent before it was ever seen can
//! escape; cgroups close that gap.

use std::collections::{HashMap, HashSet};

use crate::procfs::{self, Stat};

#[derive(Debug, Default)]
pub struct TreeGroup {
    leader: Option<i32>,
    /// pid -> start time of every process seen to belong to the service.
    known: HashMap<i32, u64>,
}

impl TreeGroup {
    pub fn new() -> Self {
        TreeGroup::default()
    }

    pub fn started(&mut self, pid: u32) {
        self.leader = Some(pid as i32);
        self.known.clear();
        if let Some(s) = procfs::stat(pid) {
            self.known.insert(s.pid, s.starttime);
        }
    }

    /// Live members (zombies excluded), refreshing what is known.
    pub fn members(&mut self) -> Vec<i32> {
        let Some(leader) = self.leader else {
            return Vec::new();
        };
        // Fast path: nothing left in the session's process group and no
        // other known member alive.
        let table = procfs::snapshot();
        let by_pid: HashMap<i32, &Stat> = table.iter().map(|s| (s.pid, s)).collect();
        let mut members: HashSet<i32> = HashSet::new();
        // Still alive and still the same process.
        self.known.retain(|pid, start| {
            by_pid
                .get(pid)
                .is_some_and(|s| s.starttime == *start && s.state != 'Z')
        });
        members.extend(self.known.keys().copied());
        for s in &table {
            if (s.session == leader || s.pgrp == leader) && s.state != 'Z' {
                members.insert(s.pid);
            }
        }
        // Descendants of members, to a fixed point.
        let mut children: HashMap<i32, Vec<&Stat>> = HashMap::new();
        for s in &table {
            children.entry(s.ppid).or_default().push(s);
        }
        let mut stack: Vec<i32> = members.iter().copied().collect();
        while let Some(pid) = stack.pop() {
            for child in children.get(&pid).into_iter().flatten() {
                if child.state != 'Z' && members.insert(child.pid) {
                    stack.push(child.pid);
                }
            }
        }
        for pid in &members {
            if let Some(s) = by_pid.get(pid) {
                self.known.insert(*pid, s.starttime);
            }
        }
        let mut out: Vec<i32> = members.into_iter().collect();
        out.sort_unstable();
        out
    }

    /// Sends `sig` to every member; returns how many were signalled.
    pub fn signal_all(&mut self, sig: i32) -> usize {
        let members = self.members();
        let mut sent = 0;
        if let Some(leader) = self.leader {
            // The process group in one call: catches what forks right now.
            // SAFETY: kill with a negative pid signals a process group.
            if unsafe { libc::kill(-leader, sig) } == 0 {
                sent += 1;
            }
        }
        for pid in members {
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(pid, sig) } == 0 {
                sent += 1;
            }
        }
        sent
    }

    pub fn is_empty(&mut self) -> bool {
        self.members().is_empty()
    }
}
