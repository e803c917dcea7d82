//! Where cgroups live on this machine, and what each can enforce.
//!
//! A pure cgroup v2 host has one hierarchy with every controller. A hybrid
//! host (these machines) has a v2 hierarchy without controllers at
//! `/sys/fs/cgroup/unified` and v1 hierarchies for `memory`, `cpu`, `pids`
//! and `freezer`. A v1-only host has no v2 hierarchy at all. blackhole
//! tracks processes in v2 when it can (membership, `cgroup.kill` and
//! `cgroup.events` need no controller), else in a v1 hierarchy, and
//! enforces each limit with the v2 controller when the v2 hierarchy has
//! it, else with the v1 controller.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// A resource controller blackhole uses for limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Mount points, as found in `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The cgroup v2 mount, if any.
    pub v2: Option<PathBuf>,
    /// v1 hierarchies by controller (`memory`, `cpu`, `pids`, `freezer`).
    pub v1: BTreeMap<String, PathBuf>,
}

impl Mounts {
    pub fn detect() -> Mounts {
        fs::read_to_string("/proc/self/mountinfo")
            .map(|t| Mounts::parse(&t))
            .unwrap_or_default()
    }

    pub fn parse(mountinfo: &str) -> Mounts {
        let mut m = Mounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let point = PathBuf::from(super::cgroup::unescape_mount(point));
            let mut r = right.split_whitespace();
            match r.next() {
                Some("cgroup2") if m.v2.is_none() || point == Path::new("/sys/fs/cgroup") => {
                    m.v2 = Some(point);
                }
                Some("cgroup") => {
                    let options = r.nth(1).unwrap_or("");
                    for opt in options.split(',') {
                        if matches!(opt, "memory" | "cpu" | "pids" | "freezer") {
                            m.v1.entry(opt.to_string()).or_insert_with(|| point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        m
    }
}

/// Where a controller is used, with this orchestrator's folder in that
/// hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    V2(PathBuf),
    V1(PathBuf),
}

/// The decided layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Where services' processes are tracked (their own folder each).
    pub tracking: Option<Place>,
    pub controllers: BTreeMap<Controller, Place>,
    /// One line per decision, for the log and `blackhole check`.
    pub notes: Vec<String>,
}

impl Layout {
    /// Creates this orchestrator's folders (`base_rel` under each
    /// hierarchy's root) and decides what is used where. `writable` lets
    /// tests run on a fake cgroupfs: it creates folders like the kernel
    /// would (the kernel adds the interface files itself).
    pub fn build(mounts: &Mounts, base_rel: &Path, allow: bool) -> Layout {
        Layout::decide(mounts, base_rel, allow, true)
    }

    /// The same decisions without creating anything (for `blackhole
    /// check`): a folder counts as creatable when its nearest existing
    /// ancestor is writable.
    pub fn probe(mounts: &Mounts, base_rel: &Path, allow: bool) -> Layout {
        Layout::decide(mounts, base_rel, allow, false)
    }

    fn decide(mounts: &Mounts, base_rel: &Path, allow: bool, create: bool) -> Layout {
        let make = |dir: &Path| -> std::io::Result<()> {
            if create {
                return fs::create_dir_all(dir);
            }
            let mut existing = dir;
            while !existing.exists() {
                existing = existing.parent().unwrap_or(Path::new("/"));
            }
            nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK)
                .map_err(std::io::Error::from)
        };
        let mut out = Layout::default();
        if !allow {
            out.notes
                .push("cgroups are turned off in the configuration".into());
            return out;
        }
        let mut v2_controllers = Vec::new();
        if let Some(mount) = &mounts.v2 {
            let base = mount.join(base_rel);
            match make(&base) {
                Ok(()) => {
                    let available: Vec<String> =
                        fs::read_to_string(mount.join("cgroup.controllers"))
                            .map(|t| t.split_whitespace().map(String::from).collect())
                            .unwrap_or_default();
                    for c in Controller::ALL {
                        if available.iter().any(|a| a == c.name())
                            && (!create || enable_down(mount, base_rel, c))
                        {
                            v2_controllers.push(c);
                            out.controllers.insert(c, Place::V2(base.clone()));
                        }
                    }
                    out.notes.push(if v2_controllers.is_empty() {
                        format!(
                            "processes tracked with cgroup v2 at {} (no controllers there: membership and kill only)",
                            base.display()
                        )
                    } else {
                        format!(
                            "processes tracked with cgroup v2 at {} ({} controllers)",
                            base.display(),
                            v2_controllers.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                        )
                    });
                    out.tracking = Some(Place::V2(base));
                }
                Err(e) => out.notes.push(format!(
                    "cgroup v2 at {} is not writable ({e})",
                    mount.display()
                )),
            }
        } else {
            out.notes.push("no cgroup v2 hierarchy is mounted".into());
        }
        for c in Controller::ALL {
            if out.controllers.contains_key(&c) {
                continue;
            }
            let Some(mount) = mounts.v1.get(c.name()) else {
                continue;
            };
            let base = mount.join(base_rel);
            match make(&base) {
                Ok(()) => {
                    out.notes.push(format!(
                        "{c} limits through cgroup v1 at {}",
                        base.display()
                    ));
                    out.controllers.insert(c, Place::V1(base));
                }
                Err(e) => out.notes.push(format!(
                    "cgroup v1 {c} at {} is not writable ({e})",
                    mount.display()
                )),
            }
        }
        if out.tracking.is_none() {
            // No usable v2: track in a v1 hierarchy, freezer first (it can
            // stop a fork storm while killing).
            for name in ["freezer", "pids", "memory", "cpu"] {
                let Some(mount) = mounts.v1.get(name) else {
                    continue;
                };
                let base = mount.join(base_rel);
                if make(&base).is_ok() {
                    out.notes.push(format!(
                        "processes tracked with cgroup v1 ({name}) at {}",
                        base.display()
                    ));
                    out.tracking = Some(Place::V1(base));
                    break;
                }
            }
        }
        if out.tracking.is_none() {
            out.notes.push(
                "no writable cgroup: processes tracked by session, process group and descendants"
                    .into(),
            );
        }
        for c in Controller::ALL {
            if !out.controllers.contains_key(&c) {
                out.notes.push(format!(
                    "{c} limits cannot be enforced: no writable {c} controller"
                ));
            }
        }
        out
    }
}

/// Enables a v2 controller in every folder from the mount's root down to
/// `base_rel`'s parent folders, so `base_rel`'s children get it.
fn enable_down(mount: &Path, base_rel: &Path, c: Controller) -> bool {
    let mut dir = mount.to_path_buf();
    let mut levels = vec![dir.clone()];
    for part in base_rel.components() {
        dir.push(part);
        levels.push(dir.clone());
    }
    for level in levels {
        let file = level.join("cgroup.subtree_control");
        let already = fs::read_to_string(&file)
            .map(|t| t.split_whitespace().any(|x| x == c.name()))
            .unwrap_or(false);
        if already {
            continue;
        }
        if let Err(e) = fs::write(&file, format!("+{}", c.name())) {
            tracing::warn!(
                "cannot enable the {c} controller in {}: {e}",
                level.display()
            );
            return false;
        }
    }
    true
}

/// The limits of one service, in bytes, cores and processes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub swap: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub pids: Option<u64>,
}

impl Limits {
    pub fn controllers(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        if self.memory.is_some() || self.swap.is_some() {
            out.push(Controller::Memory);
        }
        if self.cpu_quota.is_some() {
            out.push(Controller::Cpu);
        }
        if self.pids.is_some() {
            out.push(Controller::Pids);
        }
        out
    }
}

/// The CFS period used for `cpu_quota` (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The files to write for `limits` on a controller, in order.
pub fn limit_files(c: Controller, v2: bool, limits: &Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match (c, v2) {
        (Controller::Memory, true) => {
            if let Some(m) = limits.memory {
                out.push(("memory.max", m.to_string()));
            }
            if let Some(s) = limits.swap {
                out.push(("memory.swap.max", s.to_string()));
            }
        }
        (Controller::Memory, false) => {
            if let Some(m) = limits.memory {
                out.push(("memory.limit_in_bytes", m.to_string()));
                // v1 limits memory and swap together.
                if let Some(s) = limits.swap {
                    out.push(("memory.memsw.limit_in_bytes", (m + s).to_string()));
                }
            }
        }
        (Controller::Cpu, true) => {
            if let Some(q) = limits.cpu_quota {
                let quota = ((q * CPU_PERIOD_US as f64).round() as u64).max(1000);
                out.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            }
        }
        (Controller::Cpu, false) => {
            if let Some(q) = limits.cpu_quota {
                let quota = ((q * CPU_PERIOD_US as f64).round() as u64).max(1000);
                out.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                out.push(("cpu.cfs_quota_us", quota.to_string()));
            }
        }
        (Controller::Pids, _) => {
            if let Some(p) = limits.pids {
                out.push(("pids.max", p.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
38 35 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
40 35 0:35 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
41 35 0:36 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
";

    #[test]
    fn parses_a_hybrid_host() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(m.v1["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(m.v1["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["freezer"], Path::new("/sys/fs/cgroup/freezer"));
    }

    /// A fake v2 hierarchy: a folder with the root's interface files.
    fn fake_v2(controllers: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("cgroup.controllers"), controllers).unwrap();
        fs::write(d.path().join("cgroup.subtree_control"), "").unwrap();
        d
    }

    #[test]
    fn pure_v2_enables_controllers_down_to_the_instance() {
        let root = fake_v2("cpuset cpu io memory pids");
        // The kernel creates these files in new folders; the fake does not,
        // so make them as the kernel would.
        let base_rel = Path::new("blackhole/inst");
        for p in ["blackhole", "blackhole/inst"] {
            fs::create_dir_all(root.path().join(p)).unwrap();
            fs::write(root.path().join(p).join("cgroup.subtree_control"), "").unwrap();
        }
        let mounts = Mounts {
            v2: Some(root.path().to_path_buf()),
            v1: BTreeMap::new(),
        };
        let layout = Layout::build(&mounts, base_rel, true);
        let base = root.path().join(base_rel);
        assert_eq!(layout.tracking, Some(Place::V2(base.clone())));
        for c in Controller::ALL {
            assert_eq!(layout.controllers[&c], Place::V2(base.clone()), "{c}");
        }
        // A fake file keeps only the last write; the kernel would keep all.
        let top = fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(top, "+pids");
    }

    #[test]
    fn hybrid_limits_go_to_v1() {
        let v2 = fake_v2("");
        let v1 = tempfile::tempdir().unwrap();
        let mut mounts = Mounts {
            v2: Some(v2.path().to_path_buf()),
            v1: BTreeMap::new(),
        };
        for c in ["memory", "cpu", "pids", "freezer"] {
            fs::create_dir(v1.path().join(c)).unwrap();
            mounts.v1.insert(c.into(), v1.path().join(c));
        }
        let layout = Layout::build(&mounts, Path::new("bh/x"), true);
        assert_eq!(layout.tracking, Some(Place::V2(v2.path().join("bh/x"))));
        assert_eq!(
            layout.controllers[&Controller::Memory],
            Place::V1(v1.path().join("memory/bh/x"))
        );
        assert_eq!(
            layout.controllers[&Controller::Pids],
            Place::V1(v1.path().join("pids/bh/x"))
        );
    }

    #[test]
    fn v1_only_tracks_in_the_freezer() {
        let v1 = tempfile::tempdir().unwrap();
        let mut mounts = Mounts::default();
        for c in ["memory", "freezer"] {
            fs::create_dir(v1.path().join(c)).unwrap();
            mounts.v1.insert(c.into(), v1.path().join(c));
        }
        let layout = Layout::build(&mounts, Path::new("bh/x"), true);
        assert_eq!(
            layout.tracking,
            Some(Place::V1(v1.path().join("freezer/bh/x")))
        );
        assert!(!layout.controllers.contains_key(&Controller::Cpu));
        assert!(
            layout
                .notes
                .iter()
                .any(|n| n.contains("cpu limits cannot be enforced"))
        );
    }

    #[test]
    fn limit_files_for_each_version() {
        let l = Limits {
            memory: Some(256 << 20),
            swap: Some(64 << 20),
            cpu_quota: Some(0.25),
            pids: Some(32),
        };
        assert_eq!(
            limit_files(Controller::Memory, true, &l),
            [
                ("memory.max", "268435456".into()),
                ("memory.swap.max", "67108864".into())
            ]
        );
        assert_eq!(
            limit_files(Controller::Memory, false, &l),
            [
                ("memory.limit_in_bytes", "268435456".into()),
                ("memory.memsw.limit_in_bytes", "335544320".into())
            ]
        );
        assert_eq!(
            limit_files(Controller::Cpu, true, &l),
            [("cpu.max", "25000 100000".into())]
        );
        assert_eq!(
            limit_files(Controller::Cpu, false, &l),
            [
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "25000".into())
            ]
        );
        assert_eq!(
            limit_files(Controller::Pids, false, &l),
            [("pids.max", "32".into())]
        );
    }
}
