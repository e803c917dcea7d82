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

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::kernfs::{self, Kind};

/// A service's cgroup directory.
#[derive(Debug)]
pub struct ServiceCgroup {
    path: PathBuf,
    /// `cgroup.events` and `cgroup.procs`, opened on first use and read
    /// again from offset 0 each time: a stop reads both, and looking the
    /// path up through cgroupfs each time was most of the cost of reading
    /// them. A cgroup folder can only be removed once empty, so a kept
    /// descriptor never hides a live process. v2 only (where
    /// `cgroup.events` exists): v1 hands an open `cgroup.procs` the pid
    /// list it made for it earlier, for as long as it is read again within
    /// a second.
    events: OnceLock<File>,
    procs: OnceLock<File>,
    /// The folder itself, kept from when the child was cloned into it:
    /// the files above are then opened relative to it, a look-up of one
    /// name instead of a walk down the whole cgroupfs path (which was the
    /// larger part of each open, a fifth of the runtime thread's time in
    /// a profile of a shutdown).
    dir: OnceLock<OwnedFd>,
    /// `cpu.stat`, read at every start of the service (the run's CPU is
    /// counted from there): one `pread` instead of an open, two reads and
    /// a close.
    cpu_stat: OnceLock<File>,
    // `cgroup.kill` is opened only when a SIGKILL is due. Opening it when
    // each stop began made the kill at the timeout one write sooner, but
    // cost every stop a third cgroupfs open: a tenth of the runtime
    // thread's time in a shutdown, for a kill that stays well inside its
    // ±20 ms bound without it.
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
            events: OnceLock::new(),
            procs: OnceLock::new(),
            dir: OnceLock::new(),
            cpu_stat: OnceLock::new(),
        }
    }

    /// Reads `name` through the descriptor kept in `slot`, opening it
    /// first; a failed open is not remembered.
    fn reread(&self, slot: &OnceLock<File>, name: &str, kind: Kind) -> io::Result<String> {
        let file = match slot.get() {
            Some(f) => f,
            None => {
                let f = self.open_file(name, OFlag::O_RDONLY)?;
                slot.get_or_init(|| f)
            }
        };
        kernfs::reread(file, kind)
    }

    /// Opens `name` in the folder: relative to its kept descriptor when
    /// there is one (a look-up of one name), else by path.
    fn open_file(&self, name: &str, access: OFlag) -> io::Result<File> {
        let flags = access | OFlag::O_CLOEXEC;
        let fd = match self.dir.get() {
            Some(dir) => nix::fcntl::openat(dir, name, flags, Mode::empty())?,
            None => nix::fcntl::open(&self.path.join(name), flags, Mode::empty())?,
        };
        Ok(File::from(fd))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cgroup.procs` for the child to write `0` into, from a descriptor
    /// opened for reading too and kept for the member list (v2 only): the
    /// stop signal then needs no open and no close. Those were a quarter
    /// of the runtime thread's time in a shutdown's signalling phase, on
    /// the path to the last service's exit.
    pub fn procs_kept_for_child(&self) -> io::Result<OwnedFd> {
        let file = match self.procs.get() {
            Some(f) => f,
            None => {
                let f = self.open_file("cgroup.procs", OFlag::O_RDWR)?;
                self.procs.get_or_init(|| f)
            }
        };
        Ok(file.try_clone()?.into())
    }

    /// `cgroup.procs` opened for the child to write `0` into.
    pub fn procs_for_child(&self) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.path.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// The directory opened for `clone3(CLONE_INTO_CGROUP)` (a copy of
    /// the descriptor kept here).
    pub fn dir_for_clone(&self) -> io::Result<OwnedFd> {
        let dir = match self.dir.get() {
            Some(d) => d,
            None => {
                let d: OwnedFd = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(&self.path)?
                    .into();
                self.dir.get_or_init(|| d)
            }
        };
        dir.try_clone()
    }

    /// Moves an existing process in (used for the orchestrator's own
    /// helpers, never for services: those enter before exec).
    pub fn add(&self, pid: u32) -> io::Result<()> {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }

    pub fn pids(&self) -> Vec<i32> {
        self.read_pids().unwrap_or_default()
    }

    fn read_pids(&self) -> io::Result<Vec<i32>> {
        let text = if self.procs.get().is_some() || self.events.get().is_some() {
            self.reread(&self.procs, "cgroup.procs", Kind::List)?
        } else {
            kernfs::read(&self.path.join("cgroup.procs"), Kind::List)?
        };
        Ok(parse_pids(&text))
    }

    /// Whether any live process is in the cgroup. When that cannot be
    /// read, yes: a service is never declared stopped on a guess. A cgroup
    /// that no longer exists is empty (it could only be removed so).
    pub fn populated(&self) -> bool {
        if let Some(answer) = self.populated_by_members() {
            return answer;
        }
        let gone = |e: &io::Error| {
            e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
        };
        match self.reread(&self.events, "cgroup.events", Kind::Record) {
            Ok(text) => text.lines().any(|l| l.trim() == "populated 1"),
            // No cgroup.events (v1), or no cgroup: the member list.
            Err(e) if gone(&e) => match self.read_pids() {
                Ok(pids) => !pids.is_empty(),
                Err(e) => !gone(&e),
            },
            Err(_) => true,
        }
    }

    /// `populated` from descriptors already open, without opening
    /// `cgroup.events` (whose first open, a kernfs inode made for it, was
    /// a tenth of the runtime thread's samples in a shutdown): a cgroup
    /// without sub-folders is populated exactly when its member list is
    /// not empty. A folder's link count is 2 plus its sub-folders; it is
    /// read after the list, so a process that moved into a new sub-folder
    /// before the list was read is seen as that sub-folder. `None`: ask
    /// `cgroup.events`.
    fn populated_by_members(&self) -> Option<bool> {
        let dir = self.dir.get()?;
        self.procs.get()?;
        let pids = self.read_pids().ok()?;
        if !pids.is_empty() {
            return Some(true);
        }
        let links = nix::sys::stat::fstat(dir).ok()?.st_nlink;
        (links == 2).then_some(false)
    }

    /// `usage_usec` of `cpu.stat`: the CPU time of every process that has
    /// been in the cgroup (v2, where the file exists without controllers).
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        let text = self.reread(&self.cpu_stat, "cpu.stat", Kind::Record).ok()?;
        super::key_value(&text, "usage_usec")
    }

    /// The file whose modification announces a change of `populated`.
    pub fn events_file(&self) -> PathBuf {
        self.path.join("cgroup.events")
    }

    /// The folder was opened (for a clone into it) and has not been
    /// removed since: its files are still found through the kept
    /// descriptor (a look-up, no open; a removed cgroup keeps its link
    /// count).
    pub fn still_there(&self) -> bool {
        self.dir.get().is_some_and(|dir| {
            self.procs.get().is_some()
                && nix::unistd::faccessat(
                    dir,
                    "cgroup.procs",
                    nix::unistd::AccessFlags::F_OK,
                    nix::fcntl::AtFlags::empty(),
                )
                .is_ok()
        })
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
        match fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.kill"))
        {
            Ok(mut f) => return f.write_all(b"1"),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let freezer = self.path.join("freezer.state");
        if freezer.exists() {
            fs::write(&freezer, "FROZEN")?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while kernfs::read(&freezer, Kind::Record).is_ok_and(|s| s.trim() == "FREEZING")
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

    /// A folder standing in for a cgroup: what `populated` concludes from
    /// each thing it may find there.
    #[test]
    fn cpu_usage_is_read_afresh_through_the_kept_descriptor() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("svc");
        let cg = ServiceCgroup::create(dir.clone()).unwrap();
        assert_eq!(cg.cpu_usage_usec(), None);
        fs::write(dir.join("cpu.stat"), "usage_usec 2244\nuser_usec 2000\n").unwrap();
        assert_eq!(cg.cpu_usage_usec(), Some(2244));
        // Rewritten in place (the same file, as cgroupfs regenerates it).
        fs::write(dir.join("cpu.stat"), "usage_usec 91000\nuser_usec 2000\n").unwrap();
        assert_eq!(cg.cpu_usage_usec(), Some(91000));
        fs::write(dir.join("cpu.stat"), "user_usec 2000\n").unwrap();
        assert_eq!(cg.cpu_usage_usec(), None);
    }

    #[test]
    fn populated_is_yes_unless_known_empty() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("svc");
        let cg = ServiceCgroup::create(dir.clone()).unwrap();
        // v1: no cgroup.events, so the member list decides.
        fs::write(dir.join("cgroup.procs"), "12\n34\n").unwrap();
        assert!(cg.populated());
        assert_eq!(cg.pids(), [12, 34]);
        fs::write(dir.join("cgroup.procs"), "").unwrap();
        assert!(!cg.populated());
        // v2: cgroup.events decides, read again through the kept descriptor.
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(cg.populated());
        fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(!cg.populated());
        // Gone: empty, since a cgroup can only be removed so.
        fs::remove_dir_all(&dir).unwrap();
        assert!(!ServiceCgroup::open(dir.clone()).populated());
        // There but unreadable (here: a folder where the file should be):
        // never declared empty on a guess.
        fs::create_dir_all(dir.join("cgroup.events")).unwrap();
        assert!(ServiceCgroup::open(dir).populated());
    }

    /// Once the folder's descriptor is kept (for the clone), its files are
    /// opened relative to it: the same answers as by path.
    #[test]
    fn files_are_read_relative_to_the_kept_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("svc");
        let cg = ServiceCgroup::create(dir.clone()).unwrap();
        let for_clone = cg.dir_for_clone().unwrap();
        // Moved away: by path there would be nothing to read (and the
        // answer would be "empty"); through the folder's descriptor the
        // files are still there.
        let moved = root.path().join("moved");
        fs::rename(&dir, &moved).unwrap();
        fs::write(moved.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        fs::write(moved.join("cgroup.procs"), "12\n34\n").unwrap();
        assert!(cg.populated());
        assert_eq!(cg.pids(), [12, 34]);
        // The clone's copy is a descriptor of its own: closing it leaves
        // the kept one working.
        drop(for_clone);
        fs::write(moved.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        fs::write(moved.join("cgroup.procs"), "").unwrap();
        assert!(!cg.populated());
    }

    /// With the folder and `cgroup.procs` kept (a child was prepared), an
    /// empty member list answers for a folder without sub-folders, and
    /// `cgroup.events` (which here says otherwise) is not consulted; a
    /// sub-folder may hold members, so then it is.
    #[test]
    fn an_empty_member_list_answers_only_without_sub_folders() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("svc");
        let cg = ServiceCgroup::create(dir.clone()).unwrap();
        fs::write(dir.join("cgroup.procs"), "").unwrap();
        fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        let _for_clone = cg.dir_for_clone().unwrap();
        let _for_child = cg.procs_kept_for_child().unwrap();
        assert!(!cg.populated(), "decided by the empty member list");
        fs::write(dir.join("cgroup.procs"), "12\n").unwrap();
        assert!(cg.populated());
        fs::write(dir.join("cgroup.procs"), "").unwrap();
        fs::create_dir(dir.join("child")).unwrap();
        assert!(cg.populated(), "a sub-folder: cgroup.events decides");
        fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(!cg.populated());
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }
}
