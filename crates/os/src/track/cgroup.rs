//! cgroup v2 membership: one cgroup per service, entered by the child before
//! exec, so that nothing the service starts (a `setsid`, a double fork)
//! escapes. Works on a pure v2 host (`/sys/fs/cgroup`) and on a hybrid one
//! whose v2 hierarchy is mounted at `/sys/fs/cgroup/unified` without
//! controllers: membership, `cgroup.kill` and `cgroup.events` need none.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A service's cgroup directory.
#[derive(Debug)]
pub struct ServiceCgroup {
    path: PathBuf,
    /// `cgroup.procs` and `cgroup.events`, opened on first use and read
    /// again from offset 0 each time: a stop reads both, and looking the
    /// path up through cgroupfs each time was most of the cost of reading
    /// them. A cgroup folder can only be removed once empty, so a kept
    /// descriptor never hides a live process.
    procs: OnceLock<Option<File>>,
    events: OnceLock<Option<File>>,
}

impl ServiceCgroup {
    /// Creates (or reuses) the directory.
    pub fn create(path: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&path)?;
        Ok(ServiceCgroup::open(path))
    }

    /// An existing cgroup (leftover handling).
    pub fn open(path: PathBuf) -> Self {
        ServiceCgroup {
            path,
            procs: OnceLock::new(),
            events: OnceLock::new(),
        }
    }

    fn reread(&self, file: &OnceLock<Option<File>>, name: &str) -> io::Result<String> {
        match file.get_or_init(|| File::open(self.path.join(name)).ok()) {
            Some(f) => crate::kernfs::reread(f),
            None => crate::kernfs::read(&self.path.join(name)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cgroup.procs` opened for the child to write `0` into.
    pub fn procs_for_child(&self) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.path.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// The directory opened for `clone3(CLONE_INTO_CGROUP)`.
    pub fn dir_for_clone(&self) -> io::Result<OwnedFd> {
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.path)?;
        Ok(dir.into())
    }

    /// Moves an existing process in (used for the orchestrator's own
    /// helpers, never for services: those enter before exec).
    pub fn add(&self, pid: u32) -> io::Result<()> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }

    pub fn pids(&self) -> Vec<i32> {
        self.reread(&self.procs, "cgroup.procs")
            .map(|t| parse_pids(&t))
            .unwrap_or_default()
    }

    /// Whether any live process is in the cgroup.
    pub fn populated(&self) -> bool {
        match self.reread(&self.events, "cgroup.events") {
            Ok(text) => text.lines().any(|l| l.trim() == "populated 1"),
            // No cgroup.events: fall back to the member list.
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// The file whose modification announces a change of `populated`.
    pub fn events_file(&self) -> PathBuf {
        self.path.join("cgroup.events")
    }

    /// Sends `sig` to every member; returns how many were signalled.
    pub fn signal_all(&self, sig: i32) -> usize {
        let mut sent = 0;
        for pid in self.pids() {
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(pid, sig) } == 0 {
                sent += 1;
            }
        }
        sent
    }

    /// SIGKILLs every member, including processes forked while this runs:
    /// `cgroup.kill` where the kernel has it (v2, 5.14+); in a v1 freezer
    /// cgroup, freeze, kill, thaw (nothing can fork while frozen); else a
    /// kill loop until the member list is empty.
    pub fn kill_all(&self) -> io::Result<()> {
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            let mut f = fs::OpenOptions::new().write(true).open(&kill_file)?;
            return f.write_all(b"1");
        }
        let freezer = self.path.join("freezer.state");
        if freezer.exists() {
            fs::write(&freezer, "FROZEN")?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while crate::kernfs::read(&freezer).is_ok_and(|s| s.trim() == "FREEZING")
                && Instant::now() < deadline
            {
                std::thread::yield_now();
            }
            self.signal_all(libc::SIGKILL);
            fs::write(&freezer, "THAWED")?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                return Ok(());
            }
            for pid in pids {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::yield_now();
        }
    }

    /// Removes the directory; fails with EBUSY while processes remain.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// mountinfo escapes spaces and a few others as octal `\040`.
pub(crate) fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }
}
