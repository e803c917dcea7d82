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

/// Grows this process's descriptor table to hold `count` descriptors (at
/// most the soft limit allows). Call it while the process has one thread:
/// Linux grows a table that threads share only after an RCU grace period
/// (`expand_fdtable`), and every thread that opens a descriptor meanwhile
/// waits too. On this project's 2-core VM a grace period took 9 to 13 ms,
/// and the start-up of 100 services crossed two such growths (128 to 256
/// to 1024 entries), with the spawning threads, the log writer and the
/// runtime all blocked. A table never shrinks, so growing it once up front
/// costs only its memory: 8 bytes an entry.
pub fn reserve_descriptor_table(count: usize) {
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let highest = count.min(soft.min(libc::c_int::MAX as u64) as usize);
    let Some(highest) = highest.checked_sub(1) else {
        return;
    };
    let Ok(anchor) = std::fs::File::open("/dev/null") else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own onto the
    // lowest free number at or above `highest`; the copy is ours alone
    // and closed at once.
    let copy = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&anchor),
            libc::F_DUPFD_CLOEXEC,
            highest as libc::c_int,
        )
    };
    if copy >= 0 {
        // SAFETY: `copy` was just returned by fcntl and nothing else holds it.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) });
    }
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

#[cfg(test)]
mod tests {
    /// The table's size, as the kernel reports it.
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_descriptor_table_grows_up_front_and_nothing_stays_open() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let want = 3000.min(soft as usize);
        super::reserve_descriptor_table(want);
        assert!(table_size() >= want, "FDSize {} < {want}", table_size());
        // The copy that made it grow was closed again.
        let high: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd as usize >= want - 1)
            .collect();
        assert_eq!(high, Vec::<i32>::new());
        // Beyond the soft limit it stops at the limit instead of failing.
        super::reserve_descriptor_table(usize::MAX);
    }
}
