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

    /// From the known members down their children, plus whatever of the
    /// leader's session or group is among or below the orphans that were
    /// re-parented to this process (a subreaper). It reads the files of
    /// the service's own processes and of this one, where
    /// [`TreeGroup::by_snapshot`] reads every process's: with 100 services
    /// tracked so, a shutdown took 101 ms instead of 25, nearly all of it
    /// reading `/proc`.
    ///
    /// Every process of the session was forked inside it, from the leader
    /// down. One that is not below a live member lost a parent on the way,
    /// and was re-parented (or its nearest living ancestor was) to the
    /// nearest subreaper: this process, or one below it. So the session
    /// and group are found among and below this process's orphans, of
    /// which there are seldom any. A member that left the session was
    /// either seen before (known) or is below a member. Neither this nor
    /// the snapshot finds a process that left the session and lost its
    /// parent before it was ever seen; cgroups close that gap.
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
        let mut searched: HashSet<i32> = HashSet::new();
        loop {
            descend(&mut found, &mut stack);
            // Looked at after each walk: a member that exited during it
            // handed its children to this process after its own list was
            // read.
            let orphans = crate::spawner::Reaper::global().unregistered(procfs::children(me));
            for orphan in orphans {
                if found.contains_key(&orphan) || !searched.insert(orphan) {
                    continue;
                }
                let mut below = vec![orphan];
                while let Some(pid) = below.pop() {
                    let Some(s) = live(pid) else { continue };
                    if s.session == leader || s.pgrp == leader {
                        found.insert(pid, s.starttime);
                        stack.push(pid);
                    } else {
                        // Left the session after forking: its children may
                        // still be in it.
                        below.extend(procfs::children(pid as u32));
                    }
                }
            }
            if stack.is_empty() {
                return found;
            }
        }
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

    /// Sends `sig` to every member; returns how many were signalled. The
    /// members are listed first, while the leader lives: a member that
    /// left the session (a `setsid` child) is found through the process it
    /// was forked by, and once that process is gone only if it was seen
    /// before. Then the leader's process group in one call
    /// (it catches what forks right now), then the members not in that
    /// group at that point: one still in it got the signal already, and
    /// sent again once the first was taken it would count twice (a second
    /// SIGTERM or SIGINT means "quit now" to many programs).
    pub fn signal_all(&mut self, sig: i32) -> usize {
        let members = self.members();
        let mut sent = 0;
        if let Some(leader) = self.leader {
            // SAFETY: kill with a negative pid signals a process group.
            if unsafe { libc::kill(-leader, sig) } == 0 {
                sent += 1;
            }
        }
        for pid in members {
            // Looked at after the group's signal (a stat read each).
            let in_group = self
                .leader
                .is_some_and(|l| live(pid).is_some_and(|s| s.pgrp == l));
            if in_group {
                continue;
            }
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

/// Adds every live descendant of the processes on `stack` to `found`.
fn descend(found: &mut HashMap<i32, u64>, stack: &mut Vec<i32>) {
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
}

/// [`procfs::live`] for a pid as the kernel's lists give it.
fn live(pid: i32) -> Option<Stat> {
    u32::try_from(pid).ok().and_then(procfs::live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawner::Reaper;
    use std::time::{Duration, Instant};

    /// Kills what the group holds however the test ends.
    struct Held(TreeGroup);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.signal_all(libc::SIGKILL);
        }
    }

    /// Kills this test's `sleep 31`/`sleep 32` however it ends: the ones
    /// it found, and any other with those command lines at most two levels
    /// below this process (parallel tests and test runs have their own),
    /// then waits until they are reaped (a zombie left to PID 1 stays).
    #[derive(Default)]
    struct Sleeps(Vec<u32>);
    impl Drop for Sleeps {
        fn drop(&mut self) {
            let mut mine = std::mem::take(&mut self.0);
            let me = std::process::id() as i32;
            let ours = |pid: u32| {
                procfs::stat(pid).is_some_and(|s| {
                    s.ppid == me || procfs::stat(s.ppid as u32).is_some_and(|p| p.ppid == me)
                })
            };
            mine.extend(procfs::list_pids().into_iter().filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                (cmd == b"sleep\x0031\x00" || cmd == b"sleep\x0032\x00") && ours(*pid)
            }));
            for pid in &mine {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while mine.iter().any(|p| procfs::stat(*p).is_some()) && Instant::now() < deadline {
                Reaper::global().reap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn a_member_that_left_the_session_after_forking_still_leads_to_its_child() {
        crate::system::become_subreaper().unwrap();
        let reaper = Reaper::global();
        let mut sleeps = Sleeps::default();
        // A subshell forks a `sleep` inside the leader's session, then
        // leaves it (a `sleep` in a session of its own), and the leader
        // exits before anything was looked at. Orphaned, the subshell
        // comes back to this process, outside the session; its child is
        // still in the session.
        let script = "(sleep 31 & exec setsid sleep 32) & exit 0";
        let plan = crate::spawn::shell(script);
        let (spawned, rx) = reaper.spawn_and_watch(&plan).unwrap();
        let leader = spawned.pid as i32;
        let mut held = Held(TreeGroup::new());
        held.0.started(spawned.pid);
        assert_eq!(reaper.wait_blocking(rx), crate::ExitStatus::Code(0));
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        let inner = loop {
            let members = held.0.members();
            let inner = members
                .iter()
                .filter_map(|p| procfs::stat(*p as u32))
                .find(|s| s.comm == "sleep" && s.session == leader);
            if let Some(inner) = inner
                && procfs::stat(inner.ppid as u32)
                    .is_some_and(|o| o.ppid == me && o.session == o.pid)
            {
                sleeps.0.extend([inner.pid as u32, inner.ppid as u32]);
                break inner.pid;
            }
            assert!(
                Instant::now() < deadline,
                "the session's sleep was not found below the orphan: {members:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        held.0.signal_all(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while procfs::is_alive(inner as u32) {
            assert!(Instant::now() < deadline, "the member survived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
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
        let plan = crate::spawn::shell(script);
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
