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
        // Orphans come back to this process only if it is a subreaper.
        let found = if procfs::lists_children() && crate::system::is_subreaper() {
            self.by_descent(leader)
        } else {
            self.by_snapshot(leader)
        };
        self.known = found;
        let mut out: Vec<i32> = self.known.keys().copied().collect();
        out.sort_unstable();
        out
    }

    /// From the known members down their children, plus the orphans that
    /// were re-parented to this process (a subreaper) and are still in the
    /// leader's session or group. It reads the files of the service's own
    /// processes and of this one, where [`TreeGroup::by_snapshot`] reads
    /// every process's: with 100 services tracked so, a shutdown took
    /// 97 ms instead of 15, all of it reading `/proc`.
    ///
    /// Every process of the session descends from the leader, so one that
    /// is not a descendant of a live member lost its parent and was
    /// re-parented to the nearest subreaper, this process; a member that
    /// left the session was either seen before (known) or descends from a
    /// member. What it does not see, the snapshot does not either, but for
    /// one case: a process that left the session after forking, made
    /// itself a subreaper and was orphaned before it was ever seen keeps
    /// its children of the session out of reach; cgroups close that gap.
    fn by_descent(&self, leader: i32) -> HashMap<i32, u64> {
        let mut found: HashMap<i32, u64> = HashMap::new();
        let mut stack = Vec::new();
        for (&pid, &start) in &self.known {
            if live(pid).is_some_and(|s| s.starttime == start) {
                found.insert(pid, start);
                stack.push(pid);
            }
        }
        let me = std::process::id();
        let orphans = crate::spawner::Reaper::global().unregistered(procfs::children(me));
        for pid in orphans {
            if found.contains_key(&pid) {
                continue;
            }
            if let Some(s) = live(pid).filter(|s| s.session == leader || s.pgrp == leader) {
                found.insert(pid, s.starttime);
                stack.push(pid);
            }
        }
        while let Some(pid) = stack.pop() {
            for child in procfs::children(pid as u32) {
                if found.contains_key(&child) {
                    continue;
                }
                if let Some(s) = live(child) {
                    found.insert(child, s.starttime);
                    stack.push(child);
                }
            }
        }
        found
    }

    /// Every process's stat, for kernels that do not list children: the
    /// known members still alive, the leader's session and group, and
    /// their descendants.
    fn by_snapshot(&self, leader: i32) -> HashMap<i32, u64> {
        let table = procfs::snapshot();
        let by_pid: HashMap<i32, &Stat> = table.iter().map(|s| (s.pid, s)).collect();
        let mut members: HashSet<i32> = HashSet::new();
        // Still alive and still the same process.
        members.extend(self.known.iter().filter_map(|(pid, start)| {
            by_pid
                .get(pid)
                .is_some_and(|s| s.starttime == *start && s.state != 'Z')
                .then_some(*pid)
        }));
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
        members
            .into_iter()
            .filter_map(|pid| by_pid.get(&pid).map(|s| (pid, s.starttime)))
            .collect()
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

/// The process's stat, if it exists and has not exited.
fn live(pid: i32) -> Option<Stat> {
    u32::try_from(pid)
        .ok()
        .and_then(procfs::stat)
        .filter(|s| s.state != 'Z' && s.state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::{Output, SpawnPlan};
    use crate::spawner::Reaper;
    use std::ffi::CString;
    use std::time::{Duration, Instant};

    /// Kills what the group holds however the test ends.
    struct Held(TreeGroup);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.signal_all(libc::SIGKILL);
        }
    }

    #[test]
    fn members_are_found_down_the_tree_and_among_the_sessions_orphans() {
        crate::system::become_subreaper().unwrap();
        let reaper = Reaper::global();
        // The leader (a session leader, as every service) keeps a child,
        // orphans a second one (the subshell that started it exits; it
        // comes back to this process, the subreaper), keeps a grandchild
        // under a waiting subshell, starts a fourth in a session of its
        // own, and becomes a fifth `sleep`.
        let script =
            "sleep 300 & (sleep 301 &); (sleep 304 & wait) & setsid sleep 302 & exec sleep 303";
        let mut plan = SpawnPlan::new(
            CString::new("/bin/sh").unwrap(),
            ["sh", "-c", script]
                .iter()
                .map(|s| CString::new(*s).unwrap())
                .collect(),
        );
        plan.output = Output::Discard;
        let (spawned, rx) = reaper.spawn_and_watch(&plan).unwrap();
        let mut held = Held(TreeGroup::new());
        held.0.started(spawned.pid);
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        let members = loop {
            let members = held.0.members();
            let sleeps = members
                .iter()
                .filter_map(|p| procfs::stat(*p as u32))
                .filter(|s| s.comm == "sleep")
                .collect::<Vec<_>>();
            let orphan_back = sleeps
                .iter()
                .any(|s| s.ppid == me && s.pid != spawned.pid as i32);
            if sleeps.len() == 5 && orphan_back {
                break members;
            }
            assert!(
                Instant::now() < deadline,
                "expected five sleeps, one of them re-parented here: {sleeps:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // One look from the leader alone finds them all, as reading every
        // process does.
        let mut fresh = TreeGroup::new();
        fresh.started(spawned.pid);
        assert_eq!(fresh.members(), members);
        let leader = spawned.pid as i32;
        let mut by_snapshot: Vec<i32> = held.0.by_snapshot(leader).into_keys().collect();
        by_snapshot.sort_unstable();
        assert_eq!(members, by_snapshot);

        held.0.signal_all(libc::SIGKILL);
        assert!(matches!(
            reaper.wait_blocking(rx),
            crate::ExitStatus::Signal { .. }
        ));
        // The orphan is this process's child: reaped here.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !held.0.is_empty() {
            reaper.reap();
            assert!(
                Instant::now() < deadline,
                "members left: {:?}",
                held.0.members()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        reaper.reap();
    }
}
