//! Reading `/proc`: process states, parents, sessions, start times.

use std::fs;

/// The fields of `/proc/PID/stat` the orchestrator uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, `T`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// User and system CPU time in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot; with the pid, identifies a process across
    /// pid reuse.
    pub starttime: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name may contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        utime: field(14)?.parse().ok()?,
        stime: field(15)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(
        &crate::kernfs::read(
            std::path::Path::new(&format!("/proc/{pid}/stat")),
            crate::kernfs::Kind::Record,
        )
        .ok()?,
    )
}

/// Every pid in `/proc` (processes, not threads).
pub fn list_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Every process's stat, once.
pub fn snapshot() -> Vec<Stat> {
    list_pids().into_iter().filter_map(stat).collect()
}

/// Direct children of `pid`, with their stat.
pub fn children_of(pid: u32) -> Vec<Stat> {
    if lists_children() {
        return children(pid)
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok().and_then(stat))
            .collect();
    }
    snapshot()
        .into_iter()
        .filter(|s| s.ppid == pid as i32)
        .collect()
}

/// Direct children of every thread of `pid` (a child is listed under the
/// thread that forked it, or that it was re-parented to), from
/// `/proc/PID/task/TID/children`: a process's own small files instead of
/// every process's stat. Empty when the process is gone. The list is
/// exact for a process whose children do not change while it is read;
/// one that changes meanwhile may miss a child that came or went.
pub fn children(pid: u32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tasks: Vec<_> = tasks.flatten().map(|t| t.path()).collect();
    // The children of a thread that exits go to the main thread: read it
    // last, so that none is missed by moving during the read.
    let main = pid.to_string();
    tasks.sort_by_key(|t| t.file_name().is_some_and(|n| *n == *main));
    let mut out = Vec::new();
    for task in tasks {
        if let Ok(text) = crate::kernfs::read(&task.join("children"), crate::kernfs::Kind::List) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Whether the kernel lists children (`CONFIG_PROC_CHILDREN`, on in
/// every mainstream distribution's kernel); asked once.
pub fn lists_children() -> bool {
    static LISTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LISTS.get_or_init(|| {
        let me = std::process::id();
        std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    })
}

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    live(pid).is_some()
}

/// The process's stat, if it exists and has not exited (not a zombie).
pub fn live(pid: u32) -> Option<Stat> {
    stat(pid).filter(|s| s.state != 'Z' && s.state != 'X')
}

/// Resident memory of a process in bytes (from `/proc/PID/statm`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = crate::kernfs::read(
        std::path::Path::new(&format!("/proc/{pid}/statm")),
        crate::kernfs::Kind::Record,
    )
    .ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Number of open descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5555 1000 42 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 1234);
        assert_eq!(s.comm, "a (b) c");
        assert_eq!((s.state, s.ppid, s.pgrp, s.session), ('S', 1, 1234, 1234));
        assert_eq!(
            (s.utime, s.stime, s.starttime, s.rss_pages),
            (7, 3, 5555, 42)
        );
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id()).unwrap();
        assert_eq!(me.pid as u32, std::process::id());
        assert!(is_alive(std::process::id()));
        assert!(fd_count(std::process::id()).unwrap() >= 3);
    }

    #[test]
    fn lists_the_children_of_every_thread() {
        if !lists_children() {
            eprintln!("skipped: this kernel does not list children");
            return;
        }
        // Forked from another thread than the main one, which stays alive
        // while the list is read: listed under it.
        let (forked_tx, forked_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            forked_tx.send(child.id() as i32).unwrap();
            let _ = done_rx.recv();
            child
        });
        let pid = forked_rx.recv().unwrap();
        let listed = children(std::process::id()).contains(&pid);
        done_tx.send(()).unwrap();
        let mut child = thread.join().unwrap();
        // Another test's reaper may take its status: errors do not matter.
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed, "the child of a second thread is listed");
        assert!(
            children(u32::MAX).is_empty(),
            "no such process: no children"
        );
    }
}
