//! Knowing every process of a service, limiting them, signalling them
//! all, and learning when none remains.
//!
//! [`Tracking`] is decided once at start-up from the machine's cgroup
//! [`layout`]; [`Group`] is one service's view: its tracking cgroup (v2,
//! or v1 without v2), its limit cgroups (v1 controllers on hybrid hosts),
//! or, without cgroups, its process tree.

pub mod cgroup;
pub mod layout;
pub mod tree;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::spawn::SpawnPlan;
use cgroup::ServiceCgroup;
pub use layout::{Controller, Layout, Limits, Mounts, Place};
use tree::TreeGroup;

/// How the orchestrator finds and limits services' processes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    pub layout: Layout,
    controllers: Arc<BTreeMap<Controller, Place>>,
}

impl Tracking {
    /// Decides from the machine's mounts; `base_rel` is the orchestrator's
    /// folder relative to each hierarchy's root (`blackhole/<instance>`).
    pub fn detect(base_rel: &Path, allow_cgroups: bool) -> Tracking {
        Tracking::from_layout(Layout::build(&Mounts::detect(), base_rel, allow_cgroups))
    }

    pub fn from_layout(layout: Layout) -> Tracking {
        Tracking {
            controllers: Arc::new(layout.controllers.clone()),
            layout,
        }
    }

    /// Process-tree tracking only.
    pub fn tree() -> Tracking {
        Tracking::default()
    }

    pub fn group(&self, service: &str) -> Group {
        Group {
            service: service.to_string(),
            tracking: self.layout.tracking.clone(),
            controllers: self.controllers.clone(),
            cgroup: None,
            limit_dirs: BTreeMap::new(),
            tree: TreeGroup::new(),
            killed: false,
        }
    }

    /// The folder holding the services' tracking cgroups, if any.
    pub fn base(&self) -> Option<&Path> {
        match &self.layout.tracking {
            Some(Place::V2(p) | Place::V1(p)) => Some(p),
            None => None,
        }
    }

    /// Every folder of this orchestrator in every hierarchy (for cleaning
    /// up what a previous run left).
    pub fn all_bases(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.base().map(Path::to_path_buf).into_iter().collect();
        for place in self.layout.controllers.values() {
            let (Place::V2(p) | Place::V1(p)) = place;
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    pub fn can_enforce(&self, c: Controller) -> bool {
        self.layout.controllers.contains_key(&c)
    }
}

/// One service's processes.
#[derive(Debug)]
pub struct Group {
    service: String,
    tracking: Option<Place>,
    /// Shared by every service: decided once for the machine.
    controllers: Arc<BTreeMap<Controller, Place>>,
    /// The tracking cgroup, once created.
    cgroup: Option<ServiceCgroup>,
    /// v1 folders holding limits (hybrid and v1 hosts).
    limit_dirs: BTreeMap<Controller, ServiceCgroup>,
    /// Used when there is no cgroup.
    tree: TreeGroup,
    /// The tracking cgroup was emptied with a kill since it was made.
    killed: bool,
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

impl Group {
    /// Gets the plan ready to start the child inside this group, with
    /// `limits` in force from its first instruction.
    pub fn prepare(&mut self, plan: &mut SpawnPlan, limits: &Limits) -> io::Result<()> {
        match &self.tracking {
            Some(Place::V2(base)) => {
                // The folder of the run before, not killed and still
                // there: its kept descriptors serve the next child as they
                // are. Making it again cost every restart a `mkdir`, a
                // `stat` and two opens on cgroupfs, and closing the old
                // descriptors (8 % of the runtime thread's samples in a
                // loop of restarts).
                if !self.killed
                    && let Some(cg) = self.cgroup.as_ref().filter(|cg| cg.still_there())
                {
                    plan.cgroup_dir = Some(cg.dir_for_clone()?);
                    plan.cgroup_dir_procs = Some(cg.procs_kept_for_child()?);
                    return self.prepare_limits(plan, limits);
                }
                // Once `cgroup.kill` has been written, Linux (6.18 on
                // this machine) SIGKILLs every child later created in
                // that cgroup by CLONE_INTO_CGROUP, at birth; a process
                // that moves itself in by writing `cgroup.procs` is
                // spared. So a cgroup this group killed, or one it did not
                // make (left by an earlier run, whose leftovers were
                // killed at start-up), is replaced by a fresh one. Removal
                // fails while processes remain, so nothing is lost; then
                // the child moves itself in instead.
                let path = base.join(&self.service);
                let mut fresh = true;
                if self.killed || self.cgroup.is_none() {
                    drop(self.cgroup.take());
                    if let Err(e) = std::fs::remove_dir(&path)
                        && e.kind() != io::ErrorKind::NotFound
                    {
                        tracing::debug!("cgroup {} not replaced: {e}", path.display());
                        fresh = false;
                    }
                }
                self.killed = !fresh;
                let cg = ServiceCgroup::create(path)?;
                if fresh {
                    plan.cgroup_dir = Some(cg.dir_for_clone()?);
                    plan.cgroup_dir_procs = Some(cg.procs_kept_for_child()?);
                } else {
                    plan.cgroup_procs.push(cg.procs_kept_for_child()?);
                }
                self.cgroup = Some(cg);
            }
            Some(Place::V1(base)) => {
                let cg = ServiceCgroup::create(base.join(&self.service))?;
                plan.cgroup_procs.push(cg.procs_for_child()?);
                self.cgroup = Some(cg);
            }
            None => {}
        }
        self.prepare_limits(plan, limits)
    }

    /// The limits part of [`Group::prepare`], once the tracking cgroup is
    /// ready.
    fn prepare_limits(&mut self, plan: &mut SpawnPlan, limits: &Limits) -> io::Result<()> {
        let wanted = limits.controllers();
        for (c, place) in self.controllers.iter().map(|(c, p)| (*c, p.clone())) {
            let on = wanted.contains(&c);
            match place {
                Place::V2(_) => {
                    let Some(cg) = &self.cgroup else { continue };
                    // Written every start, so that a limit removed by a
                    // reload is lifted too.
                    let files = if on {
                        layout::limit_files(c, true, limits)
                    } else {
                        unlimited(c)
                    };
                    for (file, value) in files {
                        write(cg.path(), file, &value)?;
                    }
                }
                Place::V1(base) if on => {
                    let dir = base.join(&self.service);
                    let cg = ServiceCgroup::create(dir)?;
                    if c == Controller::Memory {
                        // memsw may not be below the memory limit: lift it
                        // first, then set both in order.
                        let _ = write(cg.path(), "memory.memsw.limit_in_bytes", "-1");
                        let _ = write(cg.path(), "memory.limit_in_bytes", "-1");
                    }
                    for (file, value) in layout::limit_files(c, false, limits) {
                        write(cg.path(), file, &value)?;
                    }
                    if self.cgroup.as_ref().map(ServiceCgroup::path) != Some(cg.path()) {
                        plan.cgroup_procs.push(cg.procs_for_child()?);
                    }
                    self.limit_dirs.insert(c, cg);
                }
                Place::V1(_) => {
                    if let Some(old) = self.limit_dirs.remove(&c) {
                        let _ = old.remove();
                    }
                }
            }
        }
        for c in wanted {
            if !self.controllers.contains_key(&c) {
                return Err(io::Error::other(format!(
                    "no writable {c} controller to enforce the limit"
                )));
            }
        }
        Ok(())
    }

    /// The main process exists.
    pub fn started(&mut self, pid: u32) {
        if self.cgroup.is_none() {
            self.tree.started(pid);
        }
    }

    /// The service's processes are tracked by a cgroup (not by their
    /// process tree).
    pub fn in_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// Live processes of the service.
    pub fn members(&mut self) -> Vec<i32> {
        match &self.cgroup {
            Some(cg) => cg.pids(),
            None => self.tree.members(),
        }
    }

    pub fn signal_all(&mut self, sig: i32) -> usize {
        match &self.cgroup {
            Some(cg) => cg.signal_all(sig),
            None => self.tree.signal_all(sig),
        }
    }

    pub fn kill_all(&mut self) {
        match &self.cgroup {
            Some(cg) => {
                self.killed = true;
                if let Err(e) = cg.kill_all() {
                    tracing::warn!("cannot kill cgroup {}: {e}", cg.path().display());
                    cg.signal_all(libc::SIGKILL);
                }
            }
            None => {
                self.tree.signal_all(libc::SIGKILL);
            }
        }
    }

    pub fn is_empty(&mut self) -> bool {
        match &self.cgroup {
            Some(cg) => !cg.populated(),
            None => self.tree.is_empty(),
        }
    }

    /// A file that is modified when the group may have become empty, for
    /// event-driven waiting; `None`, or a file that cannot be watched (v1
    /// has no `cgroup.events`), means the caller has to poll.
    pub fn watch_file(&self) -> Option<PathBuf> {
        self.cgroup.as_ref().map(ServiceCgroup::events_file)
    }

    /// OOM kills the kernel counted for this service so far.
    pub fn oom_kills(&self) -> u64 {
        match self.controllers.get(&Controller::Memory) {
            Some(Place::V2(_)) => self.cgroup.as_ref().map_or(0, |cg| {
                read_key(&cg.path().join("memory.events"), "oom_kill")
            }),
            Some(Place::V1(_)) => self.limit_dirs.get(&Controller::Memory).map_or(0, |cg| {
                read_key(&cg.path().join("memory.oom_control"), "oom_kill")
            }),
            None => 0,
        }
    }

    /// The service's cgroup folders (tracking first), for resource usage.
    pub fn dirs(&self) -> Vec<(Option<Controller>, &Path)> {
        let mut out: Vec<(Option<Controller>, &Path)> =
            self.cgroup.iter().map(|c| (None, c.path())).collect();
        out.extend(self.limit_dirs.iter().map(|(c, cg)| (Some(*c), cg.path())));
        out
    }

    /// CPU time of the tracking cgroup's processes so far, when the
    /// service has one (see [`ServiceCgroup::cpu_usage_usec`]).
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        self.cgroup.as_ref()?.cpu_usage_usec()
    }

    /// The service's cgroups once it is stopped for good, for the caller
    /// to remove (with [`remove_all`]) when it suits it; the group forgets
    /// them.
    pub fn take_cgroups(&mut self) -> Vec<ServiceCgroup> {
        self.cgroup
            .take()
            .into_iter()
            .chain(std::mem::take(&mut self.limit_dirs).into_values())
            .collect()
    }

    /// Where the service's processes are tracked, for status.
    pub fn describe(&self) -> String {
        match &self.tracking {
            Some(Place::V2(b) | Place::V1(b)) => b.join(&self.service).display().to_string(),
            None => "process tree".into(),
        }
    }
}

/// Removes emptied service cgroups (what is still populated stays, and is
/// reported at debug level).
pub fn remove_all(cgroups: Vec<ServiceCgroup>) {
    for cg in cgroups {
        if let Err(e) = cg.remove() {
            tracing::debug!("cgroup {} not removed: {e}", cg.path().display());
        }
    }
}

/// The values that mean "no limit" for a v2 controller.
fn unlimited(c: Controller) -> Vec<(&'static str, String)> {
    match c {
        Controller::Memory => vec![
            ("memory.max", "max".into()),
            ("memory.swap.max", "max".into()),
        ],
        Controller::Cpu => vec![("cpu.max", format!("max {}", layout::CPU_PERIOD_US))],
        Controller::Pids => vec![("pids.max", "max".into())],
    }
}

/// Reads `key N` from a flat keyed file (`memory.events`, `memory.oom_control`).
pub fn read_key(path: &Path, key: &str) -> u64 {
    crate::kernfs::read(path, crate::kernfs::Kind::List)
        .ok()
        .and_then(|t| key_value(&t, key))
        .unwrap_or(0)
}

/// The number after `key ` in a `key value` per line file.
fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v2 service cgroup folder (the interface files the kernel
    /// would create), to check what is written where.
    #[test]
    fn writes_v2_limits_and_lifts_removed_ones() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("blackhole/inst");
        let svc = base.join("api");
        std::fs::create_dir_all(&svc).unwrap();
        for f in [
            "cgroup.procs",
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "pids.max",
        ] {
            std::fs::write(svc.join(f), "").unwrap();
        }
        let layout = Layout {
            tracking: Some(Place::V2(base.clone())),
            controllers: Controller::ALL
                .iter()
                .map(|c| (*c, Place::V2(base.clone())))
                .collect(),
            notes: vec![],
        };
        let tracking = Tracking::from_layout(layout);
        let mut g = tracking.group("api");
        let mut plan = SpawnPlan::new(c"/bin/true".into(), vec![c"true".into()]);
        let limits = Limits {
            memory: Some(64 << 20),
            swap: None,
            cpu_quota: Some(1.5),
            pids: Some(100),
        };
        g.prepare(&mut plan, &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(svc.join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("pids.max"), "100");
        // The folder was there before this group (a real one would be a
        // leftover); unlike a real cgroup, this one cannot be removed (it
        // holds files), so the child is told to move itself in rather
        // than be cloned into a cgroup that may have been killed.
        assert!(plan.cgroup_dir.is_none() && plan.cgroup_procs.len() == 1);
        // A reload took the limits away: the next start lifts them.
        let mut plan = SpawnPlan::new(c"/bin/true".into(), vec![c"true".into()]);
        g.prepare(&mut plan, &Limits::default()).unwrap();
        assert_eq!(read("memory.max"), "max");
        assert_eq!(read("cpu.max"), "max 100000");
        assert_eq!(read("pids.max"), "max");
        std::fs::write(
            svc.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(g.oom_kills(), 2);
    }

    /// Tracking on the machine's cgroup v2 hierarchy in a folder of this
    /// test's own, its base folder, and a guard that kills what is left in
    /// its `svc` cgroup should an assertion fail; `None` (said) when there
    /// is no writable v2 hierarchy.
    fn v2_tracking(test: &str) -> Option<(Tracking, PathBuf, KillOnDrop)> {
        let Some(v2) = Mounts::detect().v2 else {
            eprintln!("skipped: no cgroup v2 hierarchy");
            return None;
        };
        let mounts = Mounts {
            v2: Some(v2),
            ..Mounts::default()
        };
        let rel = PathBuf::from(format!("blackhole/test-{test}-{}", std::process::id()));
        let tracking = Tracking::from_layout(Layout::build(&mounts, &rel, true));
        let Some(base) = tracking.base().map(Path::to_path_buf) else {
            eprintln!("skipped: cgroup v2 not writable");
            return None;
        };
        let guard = KillOnDrop(base.join("svc"));
        Some((tracking, base, guard))
    }

    struct KillOnDrop(PathBuf);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        }
    }

    /// On the machine's cgroup v2 hierarchy: a first child cloned into a
    /// fresh cgroup, then a second one (a new group for the same service,
    /// so the busy folder cannot be replaced) that moves itself in by
    /// writing `0` to the `cgroup.procs` descriptor the group keeps for
    /// reading the members. Both are listed through it, and the group is
    /// empty once they are killed.
    #[test]
    fn members_are_read_through_the_descriptor_the_child_entered_by() {
        let Some((tracking, base, _guard)) = v2_tracking("track") else {
            return;
        };
        let reaper = crate::spawner::Reaper::global();
        let sleeper = || SpawnPlan::new(c"/bin/sleep".into(), vec![c"sleep".into(), c"60".into()]);
        let spawn = |g: &mut Group| {
            let mut plan = sleeper();
            g.prepare(&mut plan, &Limits::default()).unwrap();
            let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
            g.started(spawned.pid);
            (spawned.pid as i32, exit)
        };
        let mut first = tracking.group("svc");
        let (a, exit_a) = spawn(&mut first);
        assert_eq!(first.members(), [a]);
        let mut second = tracking.group("svc");
        let (b, exit_b) = spawn(&mut second);
        let mut both = second.members();
        both.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(both, want, "listed through the descriptor the child wrote");
        assert!(!second.is_empty());
        second.kill_all();
        reaper.wait_blocking(exit_a);
        reaper.wait_blocking(exit_b);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !second.is_empty() {
            assert!(std::time::Instant::now() < deadline, "cgroup never emptied");
            std::thread::yield_now();
        }
        assert!(second.members().is_empty());
        drop(first);
        remove_all(second.take_cgroups());
        let _ = std::fs::remove_dir(&base);
    }

    /// On the machine's cgroup v2 hierarchy: a restart reuses the folder
    /// of the run before and its kept descriptors (the same folder, no
    /// new one made), and a folder removed from outside between two runs
    /// is made again rather than cloned into through a stale descriptor.
    #[test]
    fn a_restart_reuses_the_folder_unless_it_was_removed() {
        use std::os::unix::fs::MetadataExt;
        let Some((tracking, base, _guard)) = v2_tracking("reuse") else {
            return;
        };
        let reaper = crate::spawner::Reaper::global();
        let mut group = tracking.group("svc");
        // Runs `true` in the group; the folder's inode once it has exited.
        let run = |g: &mut Group| {
            let mut plan = SpawnPlan::new(c"/bin/true".into(), vec![c"true".into()]);
            g.prepare(&mut plan, &Limits::default()).unwrap();
            assert!(plan.cgroup_dir.is_some(), "cloned into the folder");
            let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
            g.started(spawned.pid);
            reaper.wait_blocking(exit);
            std::fs::metadata(base.join("svc")).unwrap().ino()
        };
        let first = run(&mut group);
        assert_eq!(run(&mut group), first, "the same folder again");
        // Removed from outside (it is empty): made again, and usable.
        std::fs::remove_dir(base.join("svc")).unwrap();
        let third = run(&mut group);
        assert_ne!(third, first, "a new folder");
        assert!(group.is_empty());
        remove_all(group.take_cgroups());
        let _ = std::fs::remove_dir(&base);
    }

    #[test]
    fn a_limit_without_its_controller_is_refused() {
        let tracking = Tracking::tree();
        let mut g = tracking.group("api");
        let mut plan = SpawnPlan::new(c"/bin/true".into(), vec![c"true".into()]);
        let err = g
            .prepare(
                &mut plan,
                &Limits {
                    pids: Some(5),
                    ..Limits::default()
                },
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("no writable pids controller"),
            "{err}"
        );
    }
}
