//! Creating a service process.
//!
//! Everything the child needs is prepared in the parent as a [`SpawnPlan`]
//! and turned into raw pointers and integers by [`Prepared`] before the
//! fork: between `fork` and `exec` another thread of the orchestrator may
//! hold the allocator's lock, so the child only makes system calls on
//! memory that already exists.
//!
//! Order in the child, each step needing what the previous one left:
//! join the cgroup (accounting starts before anything else runs), new
//! session, parent-death signal (and a check that the parent is still
//! there), resource limits (while still root), a private descriptor table
//! (see [`shared`]), file descriptors, working
//! directory, groups then gid then uid, `no_new_privs`, signal dispositions
//! and mask, exec. A failing step writes its number and `errno` to a
//! close-on-exec pipe and exits 127; the parent reads that pipe, so "exec
//! succeeded" is the pipe closing with nothing in it.

use std::ffi::{CString, c_char, c_int};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pipe;

/// A resource limit to set in the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// `libc::RLIMIT_*`.
    pub resource: c_int,
    pub soft: u64,
    pub hard: u64,
}

/// Who the process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Where the process's standard output and error go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Two pipes read by the orchestrator.
    Capture,
    /// `/dev/null`.
    Discard,
}

/// Everything needed to start one process.
#[derive(Debug)]
pub struct SpawnPlan {
    /// Path passed to `execve` (ignored when `exec_fd` is set, but still
    /// used in error messages).
    pub program: CString,
    /// Exec this opened file instead of the path, so that what was verified
    /// is what runs (`execveat` with `AT_EMPTY_PATH`).
    pub exec_fd: Option<OwnedFd>,
    /// The file is a script: its interpreter opens it again through
    /// `/dev/fd/N`, so the descriptor must stay open across exec.
    pub exec_fd_is_script: bool,
    /// `argv`, including `argv[0]`.
    pub argv: Vec<CString>,
    /// `envp`, as `KEY=VALUE`.
    pub envp: Vec<CString>,
    pub cwd: Option<CString>,
    pub output: Output,
    /// A cgroup v2 directory to create the child in, atomically, with
    /// `clone3(CLONE_INTO_CGROUP)`: no moment outside it, and none of the
    /// cost of migrating a running process (which waits for an RCU grace
    /// period, milliseconds per process).
    pub cgroup_dir: Option<OwnedFd>,
    /// `cgroup.procs` files opened for writing; the child writes `0` to each
    /// to move itself in before exec (cgroup v1 hierarchies, and v2 on
    /// kernels without clone3).
    pub cgroup_procs: Vec<OwnedFd>,
    /// The `cgroup.procs` of `cgroup_dir`, written only when clone3 is not
    /// available.
    pub cgroup_dir_procs: Option<OwnedFd>,
    pub rlimits: Vec<Rlimit>,
    pub credentials: Option<Credentials>,
    pub no_new_privs: bool,
    /// Extra descriptors for the child: `(source, number in the child)`.
    pub extra_fds: Vec<(OwnedFd, RawFd)>,
    /// Signal the child gets when the spawning thread dies.
    pub parent_death_signal: Option<c_int>,
}

/// `sh -c SCRIPT` with its output discarded, for tests that need a small
/// process tree.
#[cfg(test)]
pub(crate) fn shell(script: &str) -> SpawnPlan {
    let mut plan = SpawnPlan::new(
        CString::new("/bin/sh").unwrap(),
        ["sh", "-c", script]
            .iter()
            .map(|s| CString::new(*s).unwrap())
            .collect(),
    );
    plan.output = Output::Discard;
    plan
}

impl SpawnPlan {
    /// A plan that runs `program` with `argv` and an empty environment.
    pub fn new(program: CString, argv: Vec<CString>) -> Self {
        SpawnPlan {
            program,
            exec_fd: None,
            exec_fd_is_script: false,
            argv,
            envp: Vec::new(),
            cwd: None,
            output: Output::Capture,
            cgroup_dir: None,
            cgroup_procs: Vec::new(),
            cgroup_dir_procs: None,
            rlimits: Vec::new(),
            credentials: None,
            no_new_privs: false,
            extra_fds: Vec::new(),
            parent_death_signal: Some(libc::SIGKILL),
        }
    }
}

/// A process that was forked. Whether exec succeeded is learned by reading
/// `exec_status` to end-of-file ([`read_exec_status`]).
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    /// Read ends, non-blocking; `None` with [`Output::Discard`].
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Non-blocking read end of the exec-status pipe.
    pub exec_status: OwnedFd,
}

/// The step of the child setup that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Cgroup = 1,
    Session = 2,
    ParentDeath = 3,
    Rlimit = 4,
    Stdio = 5,
    Chdir = 6,
    Groups = 7,
    Gid = 8,
    Uid = 9,
    NoNewPrivs = 10,
    Signals = 11,
    Exec = 12,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Cgroup,
            Session,
            ParentDeath,
            Rlimit,
            Stdio,
            Chdir,
            Groups,
            Gid,
            Uid,
            NoNewPrivs,
            Signals,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::Cgroup => "join its cgroup",
            Stage::Session => "create a session",
            Stage::ParentDeath => "set the parent-death signal",
            Stage::Rlimit => "set a resource limit",
            Stage::Stdio => "set up standard input and output",
            Stage::Chdir => "enter its data directory",
            Stage::Groups => "set supplementary groups",
            Stage::Gid => "set group id",
            Stage::Uid => "set user id",
            Stage::NoNewPrivs => "set no_new_privs",
            Stage::Signals => "reset signal handling",
            Stage::Exec => "execute",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot {}: {}", program, stage.describe(), std::io::Error::from_raw_os_error(*errno))]
    Child {
        program: String,
        stage: Stage,
        errno: i32,
    },
}

impl SpawnError {
    /// `errno` of a failure in the child.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SpawnError::Child { errno, .. } => Some(*errno),
            SpawnError::Setup { source, .. } => source.raw_os_error(),
        }
    }
}

/// Decodes what the child wrote to the exec-status pipe: nothing means exec
/// succeeded.
pub fn decode_exec_status(program: &str, bytes: &[u8]) -> Result<(), SpawnError> {
    if bytes.len() < 8 {
        return Ok(());
    }
    let stage = u32::from_ne_bytes(bytes[0..4].try_into().unwrap_or_default());
    let errno = i32::from_ne_bytes(bytes[4..8].try_into().unwrap_or_default());
    Err(SpawnError::Child {
        program: program.to_string(),
        stage: Stage::from_u32(stage).unwrap_or(Stage::Exec),
        errno,
    })
}

/// Blocking read of the exec-status pipe (for callers without a runtime).
pub fn read_exec_status(program: &str, fd: &OwnedFd) -> Result<(), SpawnError> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    loop {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() {
                    break;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(fd),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => {
                return Err(SpawnError::Setup {
                    what: "read the exec status",
                    source: e.into(),
                });
            }
        }
    }
    decode_exec_status(program, &buf[..got])
}

/// The plan turned into what the child reads: raw pointers into memory the
/// plan owns, fixed-size integers, no allocation left to do.
struct Prepared<'a> {
    plan: &'a SpawnPlan,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// `(source, target)` pairs; no source is on any target's number.
    fds: Vec<(RawFd, RawFd)>,
    /// The write end of the exec-status pipe, by its number in the child.
    status_fd: RawFd,
    /// The file to execute, by its number in the child.
    exec_fd: Option<RawFd>,
    /// The child shares the orchestrator's descriptor table and must first
    /// take a private copy of the descriptors below this number.
    unshare_below: Option<RawFd>,
    /// Set by this child if its kernel refused to unshare: read by this
    /// spawn only (another spawning thread's child may set the process-wide
    /// mark at any moment, which must not fail a spawn whose child exec'd).
    unshare_refused: AtomicBool,
    dev_null: &'static [u8],
    parent_pid: libc::pid_t,
}

impl fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("plan", &self.plan)
            .finish()
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn setup_err(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> SpawnError {
    move |e| SpawnError::Setup {
        what,
        source: e.into(),
    }
}

/// Forks and execs `plan`. Call it through [`crate::spawner::Reaper::spawn`],
/// which delivers the child's exit even if it is reaped before the pid is
/// known, and
/// should call this from a thread with every signal blocked, so that no
/// handler of the orchestrator runs in the child before it resets them.
pub fn spawn(plan: &SpawnPlan) -> Result<Spawned, SpawnError> {
    let (out_r, out_w) = match plan.output {
        Output::Capture => {
            let (r, w) = pipe::for_reading().map_err(setup_err("create the stdout pipe"))?;
            (Some(r), Some(w))
        }
        Output::Discard => (None, None),
    };
    let (err_r, err_w) = match plan.output {
        Output::Capture => {
            let (r, w) = pipe::for_reading().map_err(setup_err("create the stderr pipe"))?;
            (Some(r), Some(w))
        }
        Output::Discard => (None, None),
    };
    let (status_r, status_w) =
        pipe::for_reading().map_err(setup_err("create the exec-status pipe"))?;

    let mut sources: Vec<(RawFd, RawFd)> = Vec::with_capacity(2 + plan.extra_fds.len());
    if let Some(w) = &out_w {
        sources.push((w.as_raw_fd(), 1));
    }
    if let Some(w) = &err_w {
        sources.push((w.as_raw_fd(), 2));
    }
    for (src, target) in &plan.extra_fds {
        sources.push((src.as_raw_fd(), *target));
    }
    let status = status_w.as_raw_fd();
    let exec = plan.exec_fd.as_ref().map(|f| f.as_raw_fd());

    let mut pid = None;
    if let Some(mut slots) = shared::Slots::acquire(sources.len() + 2, &sources) {
        let placed = slots.place(&sources, status, exec)?;
        // An error here is the kernel refusing to unshare (close_range
        // older than 5.9, or a seccomp filter; that child exited at once
        // and the reaper collects it), or this way not being available at
        // all. Either way the copying way below is tried, and after a
        // refusal every later spawn goes that way directly.
        pid = start_child(plan, placed).ok();
        // `slots` goes back to holding placeholders here, which closes its
        // copies of the child's descriptors.
    }
    let pid = match pid {
        Some(pid) => pid,
        None => {
            let moved = MovedSources::new(&sources, status, exec)?;
            start_child(plan, moved.placed())?
        }
    };
    drop(out_w);
    drop(err_w);
    drop(status_w);
    Ok(Spawned {
        pid: pid as u32,
        stdout: out_r,
        stderr: err_r,
        exec_status: status_r,
    })
}

/// The descriptor numbers the child works with.
struct Placed {
    fds: Vec<(RawFd, RawFd)>,
    status: RawFd,
    exec: Option<RawFd>,
    unshare_below: Option<RawFd>,
}

/// Starts the child: sharing memory when possible, else by fork.
fn start_child(plan: &SpawnPlan, placed: Placed) -> Result<libc::pid_t, SpawnError> {
    let prepared = Prepared {
        plan,
        argv: null_terminated(&plan.argv),
        envp: null_terminated(&plan.envp),
        fds: placed.fds,
        status_fd: placed.status,
        exec_fd: placed.exec,
        unshare_below: placed.unshare_below,
        unshare_refused: AtomicBool::new(false),
        dev_null: b"/dev/null\0",
        // SAFETY: getpid has no preconditions.
        parent_pid: unsafe { libc::getpid() },
    };
    let discard_output = plan.output == Output::Discard;
    let cgroup_dir = plan.cgroup_dir.as_ref().map(|d| d.as_raw_fd());
    let pid = match clone_vfork(&prepared, discard_output, cgroup_dir) {
        Ok(pid) => pid,
        // A child that shares the descriptor table must share memory too
        // (it unshares before anything else touches the table).
        Err(e) if prepared.unshare_below.is_some() => {
            return Err(SpawnError::Setup {
                what: "start the process",
                source: e,
            });
        }
        // Into the cgroup without sharing memory, else a plain fork.
        Err(_) => {
            let (pid, in_cgroup) = match cgroup_dir {
                Some(dir) => match clone_into_cgroup(dir) {
                    Ok(pid) => (pid, true),
                    // No clone3 or no CLONE_INTO_CGROUP: fork, and join by writing.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG)
                        ) =>
                    {
                        (fork()?, false)
                    }
                    Err(e) => {
                        return Err(SpawnError::Setup {
                            what: "create the process in its cgroup",
                            source: e,
                        });
                    }
                },
                None => (fork()?, false),
            };
            if pid == 0 {
                child_main(&prepared, discard_output, in_cgroup);
            }
            pid
        }
    };
    if prepared.unshare_refused.load(Ordering::Relaxed) {
        return Err(SpawnError::Setup {
            what: "give the process its own descriptor table",
            source: std::io::Error::from_raw_os_error(libc::ENOSYS),
        });
    }
    Ok(pid)
}

/// The child gets a copy of the whole descriptor table: each source is
/// duplicated above every target number first, so that a source that
/// happens to sit on a target slot (fd 1 when the orchestrator was started
/// with stdout closed) is not overwritten before it is used.
struct MovedSources {
    /// The copies, closed when the child has started.
    _copies: Vec<OwnedFd>,
    fds: Vec<(RawFd, RawFd)>,
    status: RawFd,
    exec: Option<RawFd>,
}

impl MovedSources {
    fn new(
        sources: &[(RawFd, RawFd)],
        status: RawFd,
        exec: Option<RawFd>,
    ) -> Result<Self, SpawnError> {
        let highest_target = sources.iter().map(|(_, t)| *t).max().unwrap_or(2).max(2);
        let floor = highest_target + 1;
        let mut moved = Vec::with_capacity(sources.len() + 2);
        let mut dup_above = |src: RawFd| -> Result<RawFd, SpawnError> {
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller owns; the
            // new descriptor is owned by `moved`.
            let dup = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor) };
            if dup < 0 {
                return Err(SpawnError::Setup {
                    what: "duplicate a descriptor for the child",
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: `dup` was just returned by fcntl and is owned by nobody else.
            moved.push(unsafe { OwnedFd::from_raw_fd(dup) });
            Ok(dup)
        };
        let mut fds = Vec::with_capacity(sources.len());
        for &(src, target) in sources {
            fds.push((dup_above(src)?, target));
        }
        // The status pipe and the program may sit on a target number too.
        let status = if status <= highest_target {
            dup_above(status)?
        } else {
            status
        };
        let exec = match exec {
            Some(e) if e <= highest_target => Some(dup_above(e)?),
            other => other,
        };
        Ok(MovedSources {
            _copies: moved,
            fds,
            status,
            exec,
        })
    }

    fn placed(&self) -> Placed {
        Placed {
            fds: self.fds.clone(),
            status: self.status,
            exec: self.exec,
            unshare_below: None,
        }
    }
}

fn fork() -> Result<libc::pid_t, SpawnError> {
    // SAFETY: fork is called with everything the child needs prepared; the
    // child only runs `child_main`, which makes async-signal-safe system
    // calls on that memory and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Setup {
            what: "fork",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(pid)
}

/// `struct clone_args` of linux/sched.h, up to `cgroup` (version 2).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork whose child starts life in the cgroup `dir` (Linux 5.7+).
fn clone_into_cgroup(dir: RawFd) -> std::io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: dir as u64,
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like
    // fork (the child gets a copy of this stack); `args` outlives the call
    // and its size is passed. The child then runs only `child_main`, as
    // after fork.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as libc::pid_t)
}

/// What the child started by [`clone_vfork`] is handed, by pointer.
struct ChildArgs<'a, 'p> {
    prepared: &'a Prepared<'p>,
    discard_output: bool,
    in_cgroup: bool,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` is the `ChildArgs` that `clone_vfork` keeps alive on
    // its stack while this child runs (the parent is suspended until the
    // child execs or exits).
    let a = unsafe { &*(arg as *const ChildArgs) };
    child_main(a.prepared, a.discard_output, a.in_cgroup)
}

/// The child's stack for [`clone_vfork`]: one per spawning thread, reused
/// (the thread is suspended while its child uses it). Never freed.
struct ChildStack {
    top: usize,
}

const CHILD_STACK_SIZE: usize = 256 * 1024;

thread_local! {
    static CHILD_STACK: Option<ChildStack> = ChildStack::new();
}

impl ChildStack {
    fn new() -> Option<ChildStack> {
        let page = 4096;
        // SAFETY: a fresh anonymous private mapping; nothing else refers
        // to it. The lowest page is made a guard.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK_SIZE + page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return None;
            }
            libc::mprotect(base, page, libc::PROT_NONE);
            Some(ChildStack {
                top: base as usize + page + CHILD_STACK_SIZE,
            })
        }
    }
}

/// Creates the child the way `posix_spawn` does: sharing this address space
/// (`CLONE_VM`) with this thread suspended until the child has exec'd or
/// exited (`CLONE_VFORK`), and in its cgroup from the start
/// (`CLONE_INTO_CGROUP`) when `cgroup_dir` is given.
///
/// Why: a fork copies the page tables of the whole orchestrator and marks
/// its memory copy-on-write (with TLB shootdowns to the other threads),
/// only for the child to throw it all away at exec. That cost grows with
/// the orchestrator's memory, so with it starting 1000 services was
/// quadratic; sharing the address space costs the same at any size.
///
/// Err: not available here (another architecture, no clone3, no stack);
/// the caller then forks.
#[cfg(target_arch = "x86_64")]
fn clone_vfork(
    prepared: &Prepared,
    discard_output: bool,
    cgroup_dir: Option<RawFd>,
) -> std::io::Result<libc::pid_t> {
    let unavailable = || std::io::Error::from_raw_os_error(libc::ENOSYS);
    let top = CHILD_STACK
        .with(|s| s.as_ref().map(|s| s.top))
        .ok_or_else(unavailable)?;
    let args = ChildArgs {
        prepared,
        discard_output,
        in_cgroup: cgroup_dir.is_some(),
    };
    let clone_args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64
            | if cgroup_dir.is_some() {
                CLONE_INTO_CGROUP
            } else {
                0
            }
            | if prepared.unshare_below.is_some() {
                libc::CLONE_FILES as u64
            } else {
                0
            },
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: (top - CHILD_STACK_SIZE) as u64,
        stack_size: CHILD_STACK_SIZE as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_dir.unwrap_or(0) as u64,
    };
    // A handler of the orchestrator must not run in the child, which
    // shares its memory: every signal stays blocked until the child has
    // reset all dispositions (child_main unblocks them last).
    // SAFETY: sigset operations on local, initialised sets.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pthread_sigmask only reads `all` and writes `previous`.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    let ret: isize;
    // SAFETY: clone3 with CLONE_VM starts the child on the separate stack
    // given in `clone_args`, right after the `syscall` instruction with
    // rax = 0; it calls `child_entry(&args)`, which never returns (it
    // execs or _exits), so the child never touches this function's frame.
    // The parent is suspended until then, so `args`, `prepared` and the
    // stack stay valid for the child's whole life. With CLONE_FILES the
    // child also shares the descriptor table, and `child_main` neither
    // opens, closes nor duplicates a descriptor before it has unshared it.
    // The parent's path only reads rax; the syscall clobbers rcx and r11,
    // declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &clone_args as *const CloneArgs,
            in("rsi") size_of::<CloneArgs>(),
            in("r12") child_entry as extern "C" fn(*mut libc::c_void) -> !,
            in("r13") &args as *const ChildArgs as *mut libc::c_void,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret as libc::pid_t)
}

#[cfg(not(target_arch = "x86_64"))]
fn clone_vfork(
    _prepared: &Prepared,
    _discard_output: bool,
    _cgroup_dir: Option<RawFd>,
) -> std::io::Result<libc::pid_t> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Children that share the orchestrator's descriptor table until they
/// unshare it (`CLONE_FILES`, then `close_range(CLOSE_RANGE_UNSHARE)`).
///
/// Why: a child that gets a copy of the table takes a reference to every
/// open file of the orchestrator, two pipes and a log file per service,
/// and exec drops them all again. At 1000 services that was about 3000
/// descriptors per spawn, 5 % of a whole start-up's samples. Unsharing
/// with a limit copies only the descriptors below it, so the child's
/// descriptors are first placed in a few slots reserved at low numbers.
mod shared {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use super::{Placed, SpawnError};

    /// stdout, stderr, the status pipe, the program and a few extra
    /// descriptors (readiness pipes).
    const SLOT_COUNT: usize = 8;
    /// Slots sit at this number or just above: above what services are
    /// given (0-2, then socket-activation style 3, 4, ...), and low enough
    /// that the child's private table stays small.
    const SLOT_BASE: RawFd = 64;

    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    /// Set by a child whose kernel refused to unshare (before 5.9, or a
    /// seccomp filter), or when a slot could not be given back. An atomic
    /// store: safe in the child, which shares this memory with the
    /// waiting parent.
    pub(super) fn mark_unsupported() {
        UNSUPPORTED.store(true, Ordering::Relaxed);
    }

    pub(super) fn unsupported() -> bool {
        UNSUPPORTED.load(Ordering::Relaxed)
    }

    struct Reserved {
        /// `/dev/null`; every idle slot is a copy of it.
        placeholder: OwnedFd,
        /// One set of slots per spawn that can be in progress at once
        /// ([`super::CONCURRENT_SPAWNS`]), each held for a whole spawn.
        groups: [Mutex<[RawFd; SLOT_COUNT]>; super::CONCURRENT_SPAWNS],
        lowest: RawFd,
        /// Above every slot of every group: a child's private table holds
        /// the other groups' slots too (placeholders, or another child's
        /// descriptors, all close-on-exec).
        limit: RawFd,
    }

    fn reserved() -> Option<&'static Reserved> {
        static RESERVED: OnceLock<Option<Reserved>> = OnceLock::new();
        RESERVED.get_or_init(reserve).as_ref()
    }

    fn reserve() -> Option<Reserved> {
        let placeholder: OwnedFd = std::fs::File::open("/dev/null").ok()?.into();
        let total = SLOT_COUNT * super::CONCURRENT_SPAWNS;
        let mut taken: Vec<OwnedFd> = Vec::with_capacity(total);
        for _ in 0..total {
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
            let fd =
                unsafe { libc::fcntl(placeholder.as_raw_fd(), libc::F_DUPFD_CLOEXEC, SLOT_BASE) };
            if fd < 0 {
                // `taken` closes the slots made so far.
                return None;
            }
            // SAFETY: just returned by fcntl, owned by nobody else.
            taken.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let lowest = taken.iter().map(|fd| fd.as_raw_fd()).min()?;
        let limit = taken.iter().map(|fd| fd.as_raw_fd()).max()? + 1;
        // From here the reservation owns them for the life of the process.
        let mut numbers = taken.into_iter().map(IntoRawFd::into_raw_fd);
        let groups = std::array::from_fn(|_| {
            Mutex::new(std::array::from_fn(|_| numbers.next().unwrap_or(-1)))
        });
        Some(Reserved {
            placeholder,
            groups,
            lowest,
            limit,
        })
    }

    pub(super) fn available() -> bool {
        cfg!(target_arch = "x86_64") && !unsupported() && reserved().is_some()
    }

    /// Takes the slots at start-up, while the table is short, so they end
    /// up at the low numbers.
    pub fn reserve_early() {
        let _ = reserved();
    }

    /// One group of slots, held for one spawn.
    pub(super) struct Slots {
        reserved: &'static Reserved,
        slots: MutexGuard<'static, [RawFd; SLOT_COUNT]>,
        used: usize,
    }

    impl Slots {
        /// None when this spawn must copy the table instead: not
        /// available here, too many descriptors, or a target number that
        /// would land on a slot, or every group in use (by spawns from
        /// more threads than the spawning ones: tests, tools).
        pub(super) fn acquire(needed: usize, sources: &[(RawFd, RawFd)]) -> Option<Slots> {
            if !available() || needed > SLOT_COUNT {
                return None;
            }
            let reserved = reserved()?;
            if sources.iter().any(|&(_, target)| target >= reserved.lowest) {
                return None;
            }
            let slots = reserved.groups.iter().find_map(|g| match g.try_lock() {
                Ok(slots) => Some(slots),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            })?;
            Some(Slots {
                reserved,
                slots,
                used: 0,
            })
        }

        fn put(&mut self, fd: RawFd) -> Result<RawFd, SpawnError> {
            let slot = self.slots[self.used];
            // SAFETY: dup3 onto a slot this reservation owns (it replaces
            // and closes the placeholder copy there); `fd` is owned by the
            // caller and open.
            if unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) } < 0 {
                return Err(SpawnError::Setup {
                    what: "place a descriptor for the child",
                    source: std::io::Error::last_os_error(),
                });
            }
            self.used += 1;
            Ok(slot)
        }

        /// Copies the child's descriptors into the slots.
        pub(super) fn place(
            &mut self,
            sources: &[(RawFd, RawFd)],
            status: RawFd,
            exec: Option<RawFd>,
        ) -> Result<Placed, SpawnError> {
            let status = self.put(status)?;
            let exec = exec.map(|e| self.put(e)).transpose()?;
            let mut fds = Vec::with_capacity(sources.len());
            for &(src, target) in sources {
                fds.push((self.put(src)?, target));
            }
            Ok(Placed {
                fds,
                status,
                exec,
                unshare_below: Some(self.reserved.limit),
            })
        }
    }

    impl Drop for Slots {
        fn drop(&mut self) {
            let placeholder = self.reserved.placeholder.as_raw_fd();
            for &slot in &self.slots[..self.used] {
                // SAFETY: as in `put`; this closes the slot's copy of the
                // child's descriptor (the child has exec'd or exited).
                if unsafe { libc::dup3(placeholder, slot, libc::O_CLOEXEC) } < 0 {
                    // It must not keep a pipe's write end open (its reader
                    // would never see the end): close it, and give up the
                    // reservation, whose numbers are no longer all ours.
                    mark_unsupported();
                    // SAFETY: the slot is ours; nothing uses it after this.
                    unsafe { libc::close(slot) };
                }
            }
        }
    }
}

pub use shared::reserve_early as reserve_descriptor_slots;

/// How many spawns can be in progress at once: the spawning threads, and
/// the groups of descriptor slots. A spawn waits (`CLONE_VFORK`) while its
/// child runs up to exec, which costs more than the fork itself; with two
/// in progress the start-up of 100 services took 94 instead of 123 ms on
/// 2 cores, and four did no better than two.
pub const CONCURRENT_SPAWNS: usize = 2;

/// Whether children get a private table copied from the reserved slots
/// (false: they get a copy of the whole table).
pub fn shares_descriptor_table() -> bool {
    shared::available()
}

/// Reports a failed step to the parent and exits. Never returns.
fn fail(status_fd: RawFd, stage: Stage) -> ! {
    // SAFETY: __errno_location is async-signal-safe and returns this
    // thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    let mut msg = [0u8; 8];
    msg[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    msg[4..8].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe; `msg` lives on this
    // stack. A short write cannot be helped and the parent then reports
    // a generic exec failure from the exit code.
    unsafe {
        libc::write(status_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The child between fork and exec. Only system calls on prepared memory.
fn child_main(p: &Prepared, discard_output: bool, in_cgroup: bool) -> ! {
    let plan = p.plan;
    let status_fd = p.status_fd;
    // SAFETY (whole function): every call below is an async-signal-safe
    // system call wrapper; every pointer refers to memory owned by `plan`
    // or `p`, which the fork copied, or which the parent (suspended until
    // exec, with CLONE_VM) keeps alive. Until the unshare below, the only
    // descriptor calls are writes: the table may be the parent's.
    unsafe {
        let v2_fallback = plan.cgroup_dir_procs.iter().filter(|_| !in_cgroup);
        for fd in plan.cgroup_procs.iter().chain(v2_fallback) {
            if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                fail(status_fd, Stage::Cgroup);
            }
        }
        if libc::setsid() < 0 {
            fail(status_fd, Stage::Session);
        }
        if let Some(sig) = plan.parent_death_signal {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) < 0 {
                fail(status_fd, Stage::ParentDeath);
            }
            // The parent may have died before the prctl: then nobody will
            // ever signal us.
            if libc::getppid() != p.parent_pid {
                libc::_exit(127);
            }
        }
        // Until here the child may share the orchestrator's descriptor
        // table, and has only written to descriptors in it. Now it takes a
        // private table holding only the descriptors below the limit: the
        // standard ones and the reserved slots its own descriptors were
        // placed in. The rest are not copied at all, so neither this nor
        // exec pays for the orchestrator's thousands of pipes and files.
        if let Some(limit) = p.unshare_below
            && libc::syscall(
                libc::SYS_close_range,
                limit as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) < 0
        {
            // Quietly: the parent sees the mark and starts another child
            // the copying way, on the same status pipe.
            let errno = *libc::__errno_location();
            if matches!(errno, libc::ENOSYS | libc::EINVAL | libc::EPERM) {
                p.unshare_refused.store(true, Ordering::Relaxed);
                shared::mark_unsupported();
                libc::_exit(127);
            }
            // Out of memory or descriptors: this spawn fails like any
            // other setup step; the next one tries again.
            fail(status_fd, Stage::Stdio);
        }

        // Nothing the orchestrator inherited without close-on-exec reaches
        // the service: everything above the standard descriptors is marked
        // first, and the service's own descriptors are then put in place by
        // dup2, which leaves them open across exec. Errors (old kernels)
        // are ignored: our own descriptors are all close-on-exec already.
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        let null = libc::open(p.dev_null.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 {
            fail(status_fd, Stage::Stdio);
        }
        if discard_output && (libc::dup2(null, 1) < 0 || libc::dup2(null, 2) < 0) {
            fail(status_fd, Stage::Stdio);
        }
        for &(src, target) in &p.fds {
            if libc::dup2(src, target) < 0 {
                fail(status_fd, Stage::Stdio);
            }
        }

        // Limits after the descriptors are in place: a small `nofile`
        // would otherwise leave no number free for `/dev/null` while the
        // table still holds the orchestrator's descriptors below the slots.
        for r in &plan.rlimits {
            let lim = libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            if libc::setrlimit(r.resource as _, &lim) < 0 {
                fail(status_fd, Stage::Rlimit);
            }
        }

        if let Some(cwd) = &plan.cwd
            && libc::chdir(cwd.as_ptr()) < 0
        {
            fail(status_fd, Stage::Chdir);
        }
        // Raw system calls: the C library's wrappers change the ids of
        // every thread of the process they believe they run in, which for
        // a child sharing the orchestrator's memory is the orchestrator.
        if let Some(c) = &plan.credentials {
            if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) < 0 {
                fail(status_fd, Stage::Groups);
            }
            if libc::syscall(libc::SYS_setgid, c.gid) < 0 {
                fail(status_fd, Stage::Gid);
            }
            if libc::syscall(libc::SYS_setuid, c.uid) < 0 {
                fail(status_fd, Stage::Uid);
            }
        }
        if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(status_fd, Stage::NoNewPrivs);
        }

        // Dispositions: ignored signals stay ignored across exec (Rust
        // ignores SIGPIPE), so reset every one; then unblock everything
        // the spawning thread blocked.
        // The raw system call, because the C library refuses to touch the
        // signals it reserves for itself (32 and 33), which can arrive
        // ignored from whoever started the orchestrator. An all-zero
        // kernel sigaction is SIG_DFL with no flags on every architecture.
        let default_action = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(status_fd, Stage::Signals);
        }

        match p.exec_fd {
            Some(fd) => {
                if plan.exec_fd_is_script && libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    fail(status_fd, Stage::Exec);
                }
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c"".as_ptr(),
                    p.argv.as_ptr(),
                    p.envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            None => {
                libc::execve(plan.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            }
        }
        fail(status_fd, Stage::Exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawner::Reaper;

    fn cs(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn sh(script: &str) -> SpawnPlan {
        let mut plan = SpawnPlan::new(cs("/bin/sh"), vec![cs("sh"), cs("-c"), cs(script)]);
        plan.envp = vec![cs("PATH=/usr/bin:/bin"), cs("GREETING=hi there")];
        plan.cwd = Some(cs("/tmp"));
        plan
    }

    fn read_all(fd: OwnedFd) -> String {
        pipe::set_blocking(&fd).unwrap();
        let mut f = std::fs::File::from(fd);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        s
    }

    #[test]
    fn runs_with_exactly_the_given_environment() {
        let reaper = Reaper::global();
        let plan = sh("echo \"$GREETING\" in \"$(pwd)\"; env | wc -l; echo oops >&2; exit 3");
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        read_exec_status("sh", &spawned.exec_status).unwrap();
        let out = read_all(spawned.stdout.unwrap());
        let err = read_all(spawned.stderr.unwrap());
        // sh adds PWD, SHLVL and _ of its own: 2 given + those.
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("hi there in /tmp"));
        let count: usize = lines.next().unwrap().trim().parse().unwrap();
        assert!(count <= 5, "environment leaked: {count} variables");
        assert_eq!(err, "oops\n");
        assert_eq!(reaper.wait_blocking(exit), crate::ExitStatus::Code(3));
    }

    #[test]
    fn exec_failure_is_reported_with_its_errno() {
        let reaper = Reaper::global();
        let plan = SpawnPlan::new(cs("/nonexistent/binary"), vec![cs("x")]);
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        let err = read_exec_status("/nonexistent/binary", &spawned.exec_status).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(err.to_string().contains("cannot execute"), "{err}");
        assert_eq!(reaper.wait_blocking(exit), crate::ExitStatus::Code(127));
    }

    #[test]
    fn bad_working_directory_names_the_step() {
        let reaper = Reaper::global();
        let mut plan = sh("true");
        plan.cwd = Some(cs("/nonexistent/dir"));
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        let err = read_exec_status("sh", &spawned.exec_status).unwrap_err();
        assert!(
            err.to_string().contains("cannot enter its data directory"),
            "{err}"
        );
        reaper.wait_blocking(exit);
    }

    #[test]
    fn child_gets_its_own_session_and_default_signals() {
        let reaper = Reaper::global();
        // SIGPIPE must be default (not ignored as in the Rust parent):
        // `yes | head -1` then ends normally.
        let plan = sh(
            "ps -o sid= -o pgid= -p $$; yes | head -1 >/dev/null; grep -E '^SigIgn' /proc/self/status",
        );
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        let out = read_all(spawned.stdout.unwrap());
        let pid = spawned.pid.to_string();
        let mut lines = out.lines();
        let ids: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            ids,
            [pid.as_str(), pid.as_str()],
            "sid and pgid are the child's pid"
        );
        assert_eq!(
            lines.next().unwrap().split_whitespace().nth(1),
            Some("0000000000000000")
        );
        assert_eq!(reaper.wait_blocking(exit), crate::ExitStatus::Code(0));
    }

    /// The descriptors in a `ls -l /proc/self/fd` listing, without the
    /// one `ls` reads the folder with.
    fn listed_fds(listing: &str) -> Vec<i32> {
        let mut fds: Vec<i32> = listing
            .lines()
            .filter_map(|l| l.split_once(" -> "))
            .filter(|(_, target)| !target.starts_with("/proc/"))
            .map(|(left, _)| left.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        fds.sort();
        fds
    }

    #[test]
    fn a_small_descriptor_limit_binds_the_service_not_its_set_up() {
        // Every number below the reserved slots in use, as in an
        // orchestrator with many services: the child's own table holds
        // them until exec.
        let mut held: Vec<OwnedFd> = Vec::new();
        loop {
            let f: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
            let n = f.as_raw_fd();
            held.push(f);
            if n >= 64 {
                break;
            }
        }
        let reaper = Reaper::global();
        let mut plan = sh("ulimit -n");
        plan.rlimits.push(Rlimit {
            resource: libc::RLIMIT_NOFILE as i32,
            soft: 16,
            hard: 16,
        });
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        let started = read_exec_status("sh", &spawned.exec_status);
        drop(held);
        started.unwrap();
        assert_eq!(read_all(spawned.stdout.unwrap()).trim(), "16");
        assert_eq!(reaper.wait_blocking(exit), crate::ExitStatus::Code(0));
    }

    #[test]
    fn child_sees_none_of_the_parents_descriptors() {
        // Plenty of them, some without close-on-exec, as a library might
        // leave them.
        let mut held = Vec::new();
        for i in 0..300 {
            let (r, w) = if i % 2 == 0 {
                pipe::pipe().unwrap()
            } else {
                let mut fds = [0; 2];
                // SAFETY: pipe writes two new descriptors into `fds`,
                // which are owned right below.
                assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
                // SAFETY: just created, owned by nobody else.
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
            };
            held.push(r);
            held.push(w);
        }
        let reaper = Reaper::global();
        let plan = sh("exec ls -l /proc/self/fd");
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        read_exec_status("sh", &spawned.exec_status).unwrap();
        let listing = read_all(spawned.stdout.unwrap());
        assert_eq!(reaper.wait_blocking(exit), crate::ExitStatus::Code(0));
        assert_eq!(listed_fds(&listing), [0, 1, 2], "{listing}");
        if cfg!(target_arch = "x86_64") {
            assert!(shares_descriptor_table(), "the table was copied");
        }
        drop(held);
    }

    #[test]
    fn extra_fds_on_or_above_the_reserved_slots_still_arrive() {
        let reaper = Reaper::global();
        let (r, w) = pipe::pipe().unwrap();
        // dash takes only single-digit descriptors in redirections.
        let mut plan = SpawnPlan::new(
            cs("/bin/bash"),
            vec![
                cs("bash"),
                cs("-c"),
                cs("echo far >&70; exec ls -l /proc/self/fd"),
            ],
        );
        plan.extra_fds.push((w, 70));
        let (spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        drop(plan);
        let listing = read_all(spawned.stdout.unwrap());
        let errors = read_all(spawned.stderr.unwrap());
        assert_eq!(read_all(r), "far\n", "{errors}");
        assert_eq!(listed_fds(&listing), [0, 1, 2, 70], "{listing}");
        reaper.wait_blocking(exit);
    }

    #[test]
    fn extra_fds_land_on_their_numbers() {
        let reaper = Reaper::global();
        let (r, w) = pipe::pipe().unwrap();
        let mut plan = sh("echo ready >&3");
        plan.extra_fds.push((w, 3));
        let (_spawned, exit) = reaper.spawn_and_watch(&plan).unwrap();
        drop(plan);
        assert_eq!(read_all(r), "ready\n");
        reaper.wait_blocking(exit);
    }
}
