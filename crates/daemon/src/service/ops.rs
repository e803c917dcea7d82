//! The seam between a service actor and the operating system.
//!
//! [`Processes`] is everything an actor does to processes: launch one,
//! signal or kill all of them, learn when none remains. [`OsProcesses`] is
//! the real thing; unit tests of the actor use a fake.

use std::ffi::CString;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use blackhole_core::config::ServiceSpec;
use blackhole_core::config::spec::RlimitKind;
use blackhole_core::machine::ExitStatus;
use blackhole_core::signal::Signal;
use blackhole_os::filewatch::{FileWatch, FileWatcher};
use blackhole_os::spawn::{
    Credentials, Output, Rlimit, SpawnError, SpawnPlan, Stage, decode_exec_status,
};
use blackhole_os::spawner::Spawner;
use blackhole_os::track::cgroup::ServiceCgroup;
use blackhole_os::track::{Controller, Limits};
use blackhole_os::track::{Group, Tracking};
use tokio::sync::oneshot;

use super::env::{self, BaseEnv};
use super::health::RunExtras;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A running process, after exec succeeded.
pub struct Launched {
    pub pid: u32,
    /// Resolves with the exit status once the process is reaped.
    pub exit: oneshot::Receiver<ExitStatus>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Why a launch did not produce a process.
#[derive(Debug)]
pub enum LaunchError {
    /// It may work next time (exec failed, a file was missing).
    Failed(String),
    /// It cannot work until something is changed by hand.
    Refused(String),
}

impl From<String> for LaunchError {
    fn from(s: String) -> Self {
        LaunchError::Failed(s)
    }
}

pub trait Processes: Send + 'static {
    /// Starts the service's main process; resolves once exec succeeded
    /// (or with why it did not, after the failed child is gone).
    fn launch<'a>(
        &'a mut self,
        spec: &'a ServiceSpec,
        extras: RunExtras,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>>;
    /// Whether `pid` is one of the service's processes (to trust what it
    /// says on the notify socket).
    fn contains(&mut self, pid: u32) -> bool;
    /// The orchestrator's context, for checks that run commands.
    fn context(&self) -> Option<Arc<OsContext>> {
        None
    }
    /// Signals every process of the service.
    fn signal_all(&mut self, sig: Signal);
    /// SIGKILLs every process of the service.
    fn kill_all(&mut self);
    /// No process of the service remains.
    fn is_empty(&mut self) -> bool;
    /// Starts reporting changes of the group through [`Processes::changed`].
    fn watch(&mut self);
    fn unwatch(&mut self);
    /// Resolves when the group may have changed (recheck `is_empty`).
    fn changed(&mut self) -> BoxFuture<'_, ()>;
    /// OOM kills counted for the service so far.
    fn oom_kills(&mut self) -> u64 {
        0
    }
    /// The cgroup holding the service's processes, and its CPU time so far
    /// in microseconds.
    fn cgroup(&self) -> Option<(std::path::PathBuf, u64)> {
        None
    }
    /// The service is stopped for good: release its cgroup.
    fn release(&mut self);
    /// Where the processes are tracked, for status.
    fn describe(&self) -> String;
}

/// Shared by every service's [`OsProcesses`].
pub struct OsContext {
    pub spawner: Spawner,
    pub tracking: Tracking,
    pub base_env: BaseEnv,
    /// The descriptor limit services get (the orchestrator raises its own).
    pub nofile: Option<(u64, u64)>,
    /// Names this orchestrator's notify sockets and cgroups.
    pub instance: String,
    /// `cgroups = "optional"`: limits without a controller are dropped
    /// (with a warning at start-up) instead of refusing the service.
    pub optional_limits: bool,
    /// Where running services are written down for the next orchestrator.
    pub records: Option<Arc<crate::records::Records>>,
    /// Wakes services whose cgroup may have emptied; `None`: they poll.
    pub file_watcher: Option<FileWatcher>,
    /// Removes cgroups of stopped services off the runtime thread while
    /// the orchestrator shuts down.
    pub reclaimer: Reclaimer,
}

/// During a shutdown, the emptied cgroups of stopped services are removed
/// by a thread of their own: a cgroup's removal is the kernel's costliest
/// step of a stop (about a tenth of the runtime thread's time in a
/// profile of a shutdown), and nothing needs the folder gone before the
/// orchestrator exits. Only then: no service can be started again, so no
/// new cgroup of the same name can be made while the old one waits.
#[derive(Default)]
pub struct Reclaimer {
    state: std::sync::Mutex<ReclaimState>,
}

#[derive(Default)]
enum ReclaimState {
    /// Removals are done by the caller.
    #[default]
    InLine,
    /// The shutdown began; the thread starts with the first removal (its
    /// start, a tenth of a millisecond, is then not on the way to the
    /// first stop signal).
    Due,
    Running {
        tx: std::sync::mpsc::Sender<Reclaim>,
        thread: std::thread::JoinHandle<()>,
    },
    /// Everything is queued (or the thread could not be started).
    Closed(Option<std::thread::JoinHandle<()>>),
}

enum Reclaim {
    Cgroups(Vec<ServiceCgroup>),
    /// The orchestrator's own folders, once every service's is queued.
    Bases(Vec<std::path::PathBuf>),
}

impl Reclaim {
    fn carry_out(self) {
        match self {
            Reclaim::Cgroups(cgroups) => blackhole_os::track::remove_all(cgroups),
            Reclaim::Bases(bases) => {
                for base in bases {
                    // Fails (busy) only if a service's folder could not
                    // be removed: it stays for the next start to clean.
                    if let Err(e) = std::fs::remove_dir(&base) {
                        tracing::debug!("cgroup {} not removed: {e}", base.display());
                    }
                }
            }
        }
    }
}

impl Reclaimer {
    /// The shutdown began: removals go to the thread from now on (or stay
    /// on the caller if the thread cannot be started).
    pub fn begin(&self) {
        let mut state = lock(&self.state);
        if matches!(*state, ReclaimState::InLine) {
            *state = ReclaimState::Due;
        }
    }

    /// Removes the cgroups, on the thread once the shutdown began.
    pub fn remove(&self, cgroups: Vec<ServiceCgroup>) {
        if !cgroups.is_empty() {
            self.queue(Reclaim::Cgroups(cgroups));
        }
    }

    fn queue(&self, work: Reclaim) {
        let work = {
            let mut state = lock(&self.state);
            if matches!(*state, ReclaimState::Due) {
                *state = start_thread();
            }
            match &*state {
                ReclaimState::Running { tx, .. } => match tx.send(work) {
                    Ok(()) => return,
                    Err(std::sync::mpsc::SendError(back)) => back,
                },
                _ => work,
            }
        };
        work.carry_out();
    }

    /// Every service has stopped: the orchestrator's folders `bases` go
    /// after the services' (the last removal, which drops every entry the
    /// services' left, about half a millisecond for 100), while the caller
    /// does what else its shutdown needs; [`Reclaimer::finish`] waits.
    pub fn remove_bases(&self, bases: Vec<std::path::PathBuf>) {
        if !bases.is_empty() {
            self.queue(Reclaim::Bases(bases));
        }
        self.close();
    }

    /// No more work: the thread ends once it has done what was queued.
    fn close(&self) {
        let mut state = lock(&self.state);
        let closed = match std::mem::take(&mut *state) {
            ReclaimState::Running { thread, .. } => ReclaimState::Closed(Some(thread)),
            ReclaimState::Closed(thread) => ReclaimState::Closed(thread),
            ReclaimState::InLine | ReclaimState::Due => ReclaimState::Closed(None),
        };
        *state = closed;
    }

    /// Waits until everything queued is removed.
    pub fn finish(&self) {
        self.close();
        let thread = match &mut *lock(&self.state) {
            ReclaimState::Closed(thread) => thread.take(),
            _ => None,
        };
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn start_thread() -> ReclaimState {
    let (tx, rx) = std::sync::mpsc::channel::<Reclaim>();
    let started = std::thread::Builder::new()
        .name("bh-reclaim".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for work in rx {
                work.carry_out();
            }
        });
    match started {
        Ok(thread) => ReclaimState::Running { tx, thread },
        Err(e) => {
            tracing::debug!("cgroups are removed in line: no thread ({e})");
            ReclaimState::Closed(None)
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OsContext {
    /// The cgroup limits a service runs with on this machine.
    pub fn limits_for(&self, spec: &ServiceSpec) -> Limits {
        let mut l = Limits {
            memory: spec.memory_limit,
            swap: spec.memory_swap_limit,
            cpu_quota: spec.cpu_quota,
            pids: spec.pids_limit,
        };
        if self.optional_limits {
            if !self.tracking.can_enforce(Controller::Memory) {
                l.memory = None;
                l.swap = None;
            }
            if !self.tracking.can_enforce(Controller::Cpu) {
                l.cpu_quota = None;
            }
            if !self.tracking.can_enforce(Controller::Pids) {
                l.pids = None;
            }
        }
        l
    }

    /// The settings of `spec` this machine cannot enforce, with why.
    pub fn unenforceable(&self, spec: &ServiceSpec) -> Vec<String> {
        let checks = [
            (
                "memory_limit",
                spec.memory_limit.is_some(),
                Controller::Memory,
            ),
            (
                "memory_swap_limit",
                spec.memory_swap_limit.is_some(),
                Controller::Memory,
            ),
            ("cpu_quota", spec.cpu_quota.is_some(), Controller::Cpu),
            ("pids_limit", spec.pids_limit.is_some(), Controller::Pids),
        ];
        checks
            .iter()
            .filter(|(_, set, c)| *set && !self.tracking.can_enforce(*c))
            .map(|(key, _, c)| {
                format!("{key} needs a writable {c} cgroup controller, and this machine has none")
            })
            .collect()
    }
}

pub struct OsProcesses {
    ctx: Arc<OsContext>,
    name: String,
    group: Group,
    watch: Option<Watch>,
}

enum Watch {
    /// inotify on `cgroup.events`: woken when `populated` changes.
    Events(FileWatch),
    /// No event source: recheck on a timer that slows down.
    Poll(Duration),
}

impl OsProcesses {
    pub fn new(ctx: Arc<OsContext>, service: &str) -> Self {
        let group = ctx.tracking.group(service);
        OsProcesses {
            ctx,
            name: service.to_string(),
            group,
            watch: None,
        }
    }

    fn plan(&mut self, spec: &ServiceSpec, extras: RunExtras) -> Result<SpawnPlan, LaunchError> {
        let mut env = env::build(spec, &self.ctx.base_env)?;
        env.extend(extras.env);
        make_data_dir(&spec.data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", spec.data_dir.display()))?;
        if let Some(c) = &spec.credentials {
            // The service owns its data dir (not what is inside: that is
            // its own business).
            std::os::unix::fs::chown(&spec.data_dir, Some(c.uid), Some(c.gid)).map_err(|e| {
                format!("cannot give {} to {}: {e}", spec.data_dir.display(), c.name)
            })?;
        }
        let program = cstring(spec.binary.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for a in &spec.args {
            argv.push(cstring(a.as_bytes())?);
        }
        let mut plan = SpawnPlan::new(program, argv);
        self.verify(spec, &mut plan)?;
        plan.envp = env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?;
        plan.cwd = Some(cstring(spec.data_dir.as_os_str().as_bytes())?);
        plan.output = Output::Capture;
        plan.extra_fds = extras.fds;
        let sets_nofile = spec
            .rlimits
            .iter()
            .any(|r| r.resource == RlimitKind::Nofile);
        if let (Some((soft, hard)), false) = (self.ctx.nofile, sets_nofile) {
            plan.rlimits.push(Rlimit {
                resource: libc::RLIMIT_NOFILE as i32,
                soft,
                hard,
            });
        }
        for r in &spec.rlimits {
            plan.rlimits.push(Rlimit {
                resource: rlimit_resource(r.resource),
                soft: r.soft,
                hard: r.hard,
            });
        }
        if let Some(c) = &spec.credentials {
            plan.credentials = Some(Credentials {
                uid: c.uid,
                gid: c.gid,
                groups: c.groups.clone(),
            });
        }
        plan.no_new_privs = spec.no_new_privileges;
        let limits = self.ctx.limits_for(spec);
        self.group.prepare(&mut plan, &limits).map_err(|e| {
            LaunchError::Refused(format!(
                "cannot set up the cgroup {}: {e}",
                self.group.describe()
            ))
        })?;
        Ok(plan)
    }

    /// Checks the binary: its checksum when pinned (and then runs exactly
    /// the file that was checked), and that nobody else can rewrite it
    /// when it would run as root.
    fn verify(&self, spec: &ServiceSpec, plan: &mut SpawnPlan) -> Result<(), LaunchError> {
        let root_run =
            blackhole_os::system::is_root() && spec.credentials.as_ref().is_none_or(|c| c.uid == 0);
        let guard_mode = |mode: u32| -> Result<(), LaunchError> {
            if root_run && !spec.allow_writable_binary && mode & 0o022 != 0 {
                return Err(LaunchError::Refused(format!(
                    "{} is writable by group or others (mode {:04o}) and would run as root; \
                     run `chmod go-w` on it or set allow_writable_binary = true",
                    spec.binary.display(),
                    mode & 0o7777
                )));
            }
            Ok(())
        };
        match &spec.sha256 {
            Some(expected) => {
                let opened = blackhole_os::verify::open_and_hash(&spec.binary)
                    .map_err(|e| format!("cannot read {}: {e}", spec.binary.display()))?;
                if &opened.sha256 != expected {
                    return Err(LaunchError::Refused(format!(
                        "sha256 mismatch for {}: expected {expected}, found {}",
                        spec.binary.display(),
                        opened.sha256
                    )));
                }
                guard_mode(opened.mode)?;
                plan.exec_fd_is_script = opened.script;
                plan.exec_fd = Some(opened.fd);
            }
            None => {
                if let Ok(meta) = std::fs::metadata(&spec.binary) {
                    use std::os::unix::fs::PermissionsExt;
                    guard_mode(meta.permissions().mode())?;
                }
            }
        }
        Ok(())
    }
}

fn rlimit_resource(kind: RlimitKind) -> i32 {
    (match kind {
        RlimitKind::Nofile => libc::RLIMIT_NOFILE,
        RlimitKind::Nproc => libc::RLIMIT_NPROC,
        RlimitKind::Core => libc::RLIMIT_CORE,
        RlimitKind::As => libc::RLIMIT_AS,
        RlimitKind::Cpu => libc::RLIMIT_CPU,
        RlimitKind::Fsize => libc::RLIMIT_FSIZE,
        RlimitKind::Memlock => libc::RLIMIT_MEMLOCK,
        RlimitKind::Stack => libc::RLIMIT_STACK,
    }) as i32
}

fn cstring(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes)
        .map_err(|_| format!("{:?} contains a NUL byte", String::from_utf8_lossy(bytes)))
}

impl Processes for OsProcesses {
    fn launch<'a>(
        &'a mut self,
        spec: &'a ServiceSpec,
        extras: RunExtras,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>> {
        Box::pin(async move {
            let plan = self.plan(spec, extras)?;
            let (exit_tx, exit_rx) = oneshot::channel();
            let (reply_tx, reply_rx) = oneshot::channel();
            self.ctx.spawner.submit(
                plan,
                Box::new(move |status| {
                    let _ = exit_tx.send(status);
                }),
                Box::new(move |result| {
                    let _ = reply_tx.send(result);
                }),
            );
            let spawned = reply_rx
                .await
                .map_err(|_| "the spawning thread is gone".to_string())?
                .map_err(|e| LaunchError::Failed(e.to_string()))?;
            self.group.started(spawned.pid);
            let program = spec.binary.display().to_string();
            let exec = read_exec_status(spawned.exec_status).await;
            if let Err(e) = exec.and_then(|bytes| {
                decode_exec_status(&program, &bytes).map_err(|e| match e {
                    // The folder is made only when missing (see
                    // `make_data_dir`): a file in its place shows here.
                    SpawnError::Child {
                        stage: Stage::Chdir,
                        errno,
                        ..
                    } => format!(
                        "{program}: cannot enter its data directory {}: {}",
                        spec.data_dir.display(),
                        std::io::Error::from_raw_os_error(errno)
                    ),
                    e => e.to_string(),
                })
            }) {
                // The child exits at once; wait so that nothing of the
                // failed attempt outlives this call.
                let _ = exit_rx.await;
                return Err(LaunchError::Failed(e));
            }
            // A service in a cgroup is found through the recorded cgroup
            // folders; only one tracked by its process tree needs its pid
            // and start time written down (reading the start time is an
            // open, a read and a close of `/proc/PID/stat` per start).
            if let Some(r) = &self.ctx.records
                && !self.group.in_cgroup()
            {
                r.started(&spec.name, spawned.pid);
            }
            Ok(Launched {
                pid: spawned.pid,
                exit: exit_rx,
                stdout: spawned.stdout,
                stderr: spawned.stderr,
            })
        })
    }

    fn signal_all(&mut self, sig: Signal) {
        self.group.signal_all(sig.number());
    }

    fn kill_all(&mut self) {
        self.group.kill_all();
    }

    fn is_empty(&mut self) -> bool {
        self.group.is_empty()
    }

    fn contains(&mut self, pid: u32) -> bool {
        self.group.members().contains(&(pid as i32))
    }

    fn context(&self) -> Option<Arc<OsContext>> {
        Some(self.ctx.clone())
    }

    fn watch(&mut self) {
        if self.watch.is_some() {
            return;
        }
        self.watch = Some(
            match self
                .group
                .watch_file()
                .and_then(|p| self.ctx.file_watcher.as_ref()?.watch(&p).ok())
            {
                Some(fd) => Watch::Events(fd),
                None => Watch::Poll(Duration::from_millis(5)),
            },
        );
    }

    fn unwatch(&mut self) {
        self.watch = None;
    }

    fn changed(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match &mut self.watch {
                Some(Watch::Events(w)) => w.changed().await,
                Some(Watch::Poll(delay)) => {
                    tokio::time::sleep(*delay).await;
                    *delay = (*delay * 2).min(Duration::from_millis(200));
                }
                None => std::future::pending().await,
            }
        })
    }

    fn oom_kills(&mut self) -> u64 {
        self.group.oom_kills()
    }

    fn cgroup(&self) -> Option<(std::path::PathBuf, u64)> {
        let dir = self
            .group
            .dirs()
            .first()
            .filter(|(c, _)| c.is_none())
            .map(|(_, p)| p.to_path_buf())?;
        Some((dir, self.group.cpu_usage_usec().unwrap_or(0)))
    }

    fn release(&mut self) {
        self.ctx.reclaimer.remove(self.group.take_cgroups());
        if let Some(r) = &self.ctx.records {
            r.ended(&self.name);
        }
    }

    fn describe(&self) -> String {
        self.group.describe()
    }
}

/// The service's data folder, made if missing (someone may have removed it
/// since the last start). One `mkdir` when it is there: `create_dir_all`
/// adds a `stat` to tell a folder from a file; a file in its place fails
/// the child's `chdir` instead, reported with the path.
fn make_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir),
        other => other,
    }
}

async fn read_exec_status(fd: OwnedFd) -> Result<Vec<u8>, String> {
    let mut got = Vec::with_capacity(8);
    // A child that shared our memory has exec'd or exited by the time the
    // spawn returns, so the answer is usually there already: read it
    // without registering the pipe with the runtime.
    loop {
        let mut buf = [0u8; 8];
        match nix::unistd::read(&fd, &mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= 8 {
                    return Ok(got);
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(format!("cannot read the exec status: {e}")),
        }
    }
    let fd = blackhole_os::asyncfd::register(fd)
        .map_err(|e| format!("cannot watch the exec-status pipe: {e}"))?;
    loop {
        let mut guard = fd.readable().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8];
        match guard
            .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from))
        {
            Ok(Ok(0)) => return Ok(got),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= 8 {
                    return Ok(got);
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(format!("cannot read the exec status: {e}")),
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folders standing in for emptied cgroups (an empty folder is removed
    /// the same way): removed in line before a shutdown, by the thread
    /// after it began, which starts with the first removal and not
    /// before; the orchestrator's own folder goes last.
    #[test]
    fn the_reclaimer_starts_its_thread_with_the_first_removal() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("instance");
        let folder = |name: &str| {
            let path = base.join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let r = Reclaimer::default();
        let before = folder("before");
        r.remove(vec![ServiceCgroup::open(before.clone())]);
        assert!(!before.exists(), "removed in line");
        r.begin();
        assert!(matches!(*lock(&r.state), ReclaimState::Due));
        let during = [folder("a"), folder("b")];
        r.remove(during.iter().cloned().map(ServiceCgroup::open).collect());
        assert!(matches!(*lock(&r.state), ReclaimState::Running { .. }));
        r.remove_bases(vec![base.clone()]);
        r.finish();
        assert!(during.iter().all(|p| !p.exists()));
        assert!(!base.exists(), "the base folder, after the services'");
        // Closed: later removals are done in line again.
        let after = folder("after");
        r.remove(vec![ServiceCgroup::open(after.clone())]);
        assert!(!after.exists());
    }
}
