//! Process-wide settings of the orchestrator.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Makes orphaned descendants re-parent to this process instead of PID 1,
/// so that a service's daemonizing grandchildren are reaped by us.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft descriptor limit to the hard one: each service costs the
/// orchestrator a few descriptors (pipes, readiness), and hundreds of
/// services exceed the usual soft limit of 1024. Services get the original
/// soft limit back unless configured otherwise. Returns (old soft, new soft).
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
