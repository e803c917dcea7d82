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

/// Whether this process is a subreaper (orphans of its descendants come
/// back to it).
pub fn is_subreaper() -> bool {
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer,
    // which points at a live local.
    let rc = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut flag as *mut libc::c_int) };
    rc == 0 && flag != 0
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

/// Allocator settings for a long-running process with spiky large buffers
/// (a status list of 1000 services, a reload): blocks of 64 KiB and more
/// are mapped and unmapped on their own instead of staying in the heap
/// after they are freed (the allocator's default raises that threshold as
/// it sees such blocks freed, and then keeps them). One arena: a heap per
/// runtime thread costs a few hundred KiB each, and the orchestrator
/// allocates too little for threads to contend.
pub fn tune_allocator() {
    // SAFETY: mallopt sets allocator parameters; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Gives the memory that start-up allocated and freed (the parsed
/// configuration document, the first records) back to the system: the
/// allocator keeps freed memory inside its heap otherwise.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}
