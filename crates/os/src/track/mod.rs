//! Knowing every process of a service, signalling them all, and learning
//! when none remains.
//!
//! [`Tracking`] is decided once at start-up: a cgroup v2 hierarchy we can
//! write to (pure v2, or the `unified` mount of a hybrid host), else the
//! process tree. [`Group`] is one service's view.

pub mod cgroup;
pub mod tree;

use std::io;
use std::path::{Path, PathBuf};

use crate::spawn::SpawnPlan;
use cgroup::ServiceCgroup;
use tree::TreeGroup;

/// How the orchestrator finds a service's processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// One cgroup per service under `base`.
    Cgroup { base: PathBuf },
    /// Session, process group and descendants.
    Tree,
}

impl Tracking {
    /// Picks the best available method; the string says why, for the log.
    /// `base_rel` is the orchestrator's cgroup folder relative to the v2
    /// mount (`blackhole/<instance>`).
    pub fn detect(base_rel: &Path, allow_cgroups: bool) -> (Tracking, String) {
        if !allow_cgroups {
            return (
                Tracking::Tree,
                "cgroups are turned off in the configuration".into(),
            );
        }
        let Some(v2) = cgroup::find_v2_mount() else {
            return (Tracking::Tree, "no cgroup v2 hierarchy is mounted".into());
        };
        let base = v2.mount.join(base_rel);
        match std::fs::create_dir_all(&base) {
            Ok(()) => {
                let why = if v2.controllers.is_empty() {
                    format!(
                        "cgroup v2 at {} (no controllers there: membership and kill only)",
                        v2.mount.display()
                    )
                } else {
                    format!("cgroup v2 at {}", v2.mount.display())
                };
                (Tracking::Cgroup { base }, why)
            }
            Err(e) => (
                Tracking::Tree,
                format!(
                    "cannot create {} ({e}); tracking by process tree",
                    base.display()
                ),
            ),
        }
    }

    pub fn group(&self, service: &str) -> Group {
        match self {
            Tracking::Cgroup { base } => Group::Cgroup {
                path: base.join(service),
                cgroup: None,
                tree: TreeGroup::new(),
            },
            Tracking::Tree => Group::Tree(TreeGroup::new()),
        }
    }

    /// The cgroup folder of this orchestrator instance, if any.
    pub fn base(&self) -> Option<&Path> {
        match self {
            Tracking::Cgroup { base } => Some(base),
            Tracking::Tree => None,
        }
    }
}

/// One service's processes.
#[derive(Debug)]
pub enum Group {
    Cgroup {
        path: PathBuf,
        cgroup: Option<ServiceCgroup>,
        /// Used when the cgroup could not be created for this run.
        tree: TreeGroup,
    },
    Tree(TreeGroup),
}

impl Group {
    /// Gets the plan ready to put the child in this group.
    pub fn prepare(&mut self, plan: &mut SpawnPlan) -> io::Result<()> {
        if let Group::Cgroup { path, cgroup, .. } = self {
            let cg = match cgroup {
                Some(cg) => cg.clone(),
                None => ServiceCgroup::create(path.clone())?,
            };
            plan.cgroup_dir = Some(cg.dir_for_clone()?);
            plan.cgroup_dir_procs = Some(cg.procs_for_child()?);
            *cgroup = Some(cg);
        }
        Ok(())
    }

    /// The main process exists.
    pub fn started(&mut self, pid: u32) {
        match self {
            Group::Cgroup { tree, .. } | Group::Tree(tree) => tree.started(pid),
        }
    }

    fn cgroup(&self) -> Option<&ServiceCgroup> {
        match self {
            Group::Cgroup { cgroup, .. } => cgroup.as_ref(),
            Group::Tree(_) => None,
        }
    }

    /// Live processes of the service.
    pub fn members(&mut self) -> Vec<i32> {
        match self {
            Group::Cgroup {
                cgroup: Some(cg), ..
            } => cg.pids(),
            Group::Cgroup { tree, .. } | Group::Tree(tree) => tree.members(),
        }
    }

    pub fn signal_all(&mut self, sig: i32) -> usize {
        match self {
            Group::Cgroup {
                cgroup: Some(cg), ..
            } => cg.signal_all(sig),
            Group::Cgroup { tree, .. } | Group::Tree(tree) => tree.signal_all(sig),
        }
    }

    pub fn kill_all(&mut self) {
        match self {
            Group::Cgroup {
                cgroup: Some(cg), ..
            } => {
                if let Err(e) = cg.kill_all() {
                    tracing::warn!("cannot kill cgroup {}: {e}", cg.path().display());
                    cg.signal_all(libc::SIGKILL);
                }
            }
            Group::Cgroup { tree, .. } | Group::Tree(tree) => {
                tree.signal_all(libc::SIGKILL);
            }
        }
    }

    pub fn is_empty(&mut self) -> bool {
        match self {
            Group::Cgroup {
                cgroup: Some(cg), ..
            } => !cg.populated(),
            Group::Cgroup { tree, .. } | Group::Tree(tree) => tree.is_empty(),
        }
    }

    /// A file that is modified when the group may have become empty, for
    /// event-driven waiting; `None` means the caller has to poll.
    pub fn watch_file(&self) -> Option<PathBuf> {
        self.cgroup().map(ServiceCgroup::events_file)
    }

    /// Removes the cgroup once the service is stopped for good.
    pub fn release(&mut self) {
        if let Group::Cgroup { cgroup, .. } = self
            && let Some(cg) = cgroup.take()
            && let Err(e) = cg.remove()
        {
            tracing::debug!("cgroup {} not removed: {e}", cg.path().display());
        }
    }

    /// Where the service's processes are tracked, for status.
    pub fn describe(&self) -> String {
        match self {
            Group::Cgroup { path, .. } => path.display().to_string(),
            Group::Tree(_) => "process tree".into(),
        }
    }
}
