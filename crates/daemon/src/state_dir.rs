//! The orchestrator's state folder (`.blackhole/` beside the config): the
//! lock that makes one orchestrator per folder, and the control socket.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// Held for the orchestrator's lifetime; released by the kernel when the
/// process ends, however it ends, so a stale lock cannot exist.
pub struct StateLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Creates the state folder and takes its lock, or says who holds it.
///
/// A process forked by a dead orchestrator can hold the lock for a moment
/// after its death (between its fork and exec, the lock's descriptor is
/// still open in it, and it is about to die from the parent-death
/// signal); so when the pid recorded in the lock is gone, the lock is
/// retried for a short while before giving up.
pub fn acquire(state_dir: &Path) -> Result<StateLock, String> {
    fs::create_dir_all(state_dir).map_err(|e| {
        format!(
            "cannot create the state folder {}: {e}",
            state_dir.display()
        )
    })?;
    let path = state_dir.join("lock");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = writeln!(lock, "{}", std::process::id());
                return Ok(StateLock { _lock: lock, path });
            }
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().to_string();
                let holder_alive = pid.parse::<u32>().is_ok_and(blackhole_os::procfs::is_alive);
                if !holder_alive && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                return Err(format!(
                    "another orchestrator{} is already running on {}; \
                     use `blackhole status` to talk to it or `blackhole down` to stop it",
                    if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                    state_dir.display()
                ));
            }
        }
    }
}

/// Binds the control socket with mode 0600. It is bound under a temporary
/// name, restricted, then renamed into place, so it is never reachable
/// with wider permissions. A socket file left by a dead orchestrator is
/// replaced (the lock proves it is dead).
pub fn bind_socket(
    path: &Path,
    group: Option<u32>,
) -> Result<std::os::unix::net::UnixListener, String> {
    // Owner only, or owner and one group.
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    const MAX: usize = 107;
    let len = path.as_os_str().len();
    if len > MAX {
        return Err(format!(
            "the socket path {} is {len} bytes long; Unix sockets allow {MAX}: set `socket` in [orchestrator] to a shorter path",
            path.display()
        ));
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_file_name(format!(".{}.{}", std::process::id(), "sock-new"));
    let _ = fs::remove_file(&tmp);
    if tmp.as_os_str().len() > MAX {
        return Err(format!("the socket path {} is too long", tmp.display()));
    }
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .map_err(|e| format!("cannot bind the control socket {}: {e}", path.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot restrict the control socket: {e}"))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(&tmp, None, Some(gid))
            .map_err(|e| format!("cannot give the control socket to group {gid}: {e}"))?;
    }
    fs::rename(&tmp, path)
        .map_err(|e| format!("cannot put the control socket at {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot configure the control socket: {e}"))?;
    Ok(listener)
}
