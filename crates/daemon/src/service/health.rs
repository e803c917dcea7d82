//! Readiness and liveness of one service: the sd_notify socket, the
//! readiness descriptor, a log line to wait for, periodic probes, and the
//! watchdog. [`Health::next`] waits on all of them at once and reports
//! what happened as a [`Signal`]; the actor decides what it means.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use blackhole_core::config::{Check, Probe, ServiceSpec};
use blackhole_os::notify::{Datagram, NotifySocket};
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, Sleep};

use super::ops::OsContext;
use super::probe::{self, ProbeResult};
use crate::logs::{LogWatch, ServiceLog};

/// Something the service or a check said.
#[derive(Debug)]
pub enum Signal {
    /// A datagram on the notify socket.
    Notify(Datagram),
    /// The readiness descriptor got its newline.
    FdReady,
    /// A line matched the readiness pattern.
    LogMatched(String),
    /// A periodic readiness check finished.
    Readiness(ProbeResult),
    /// A periodic liveness check finished.
    Liveness(ProbeResult),
    /// No `WATCHDOG=1` within the watchdog timeout.
    WatchdogExpired,
}

type ProbeFuture = Pin<Box<dyn Future<Output = ProbeResult> + Send>>;

/// One periodic check: never more than one run in flight, each bounded by
/// its timeout, the next one `period` after the previous ended.
struct Prober {
    probe: Probe,
    next: Pin<Box<Sleep>>,
    running: Option<ProbeFuture>,
    successes: u32,
    failures: u32,
}

impl Prober {
    fn new(probe: Probe) -> Self {
        let first = probe.initial_delay;
        Prober {
            probe,
            next: Box::pin(tokio::time::sleep(first)),
            running: None,
            successes: 0,
            failures: 0,
        }
    }

    async fn next(&mut self, spec: &Arc<ServiceSpec>, ctx: &Arc<OsContext>) -> ProbeResult {
        if self.running.is_none() {
            self.next.as_mut().await;
            let (check, timeout, spec, ctx) = (
                self.probe.check.clone(),
                self.probe.timeout,
                spec.clone(),
                ctx.clone(),
            );
            self.running = Some(Box::pin(async move {
                probe::run(&check, timeout, &spec, &ctx).await
            }));
        }
        let result = self.running.as_mut().expect("set above").await;
        self.running = None;
        self.next.as_mut().reset(Instant::now() + self.probe.period);
        if result.ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        result
    }
}

pub struct Health {
    spec: Arc<ServiceSpec>,
    ctx: Option<Arc<OsContext>>,
    log: Arc<ServiceLog>,
    /// Lives as long as the service, across runs.
    notify: Option<AsyncFd<NotifySocket>>,
    /// Per run.
    ready_fd: Option<AsyncFd<OwnedFd>>,
    log_watch: Option<Arc<LogWatch>>,
    readiness: Option<Prober>,
    liveness: Option<Prober>,
    watchdog: Option<Pin<Box<Sleep>>>,
    watchdog_every: Option<Duration>,
    /// Whether the readiness check currently says ready.
    pub ready: bool,
    pub status_text: Option<String>,
    pub main_pid: Option<u32>,
    pub last_readiness: Option<ProbeResult>,
    pub last_liveness: Option<ProbeResult>,
}

/// What a run needs from health before it starts.
#[derive(Default)]
pub struct RunExtras {
    pub env: Vec<(String, String)>,
    pub fds: Vec<(OwnedFd, i32)>,
}

impl Health {
    /// `ctx` is needed for exec checks; tests without an OS pass `None`.
    pub fn new(spec: Arc<ServiceSpec>, ctx: Option<Arc<OsContext>>, log: Arc<ServiceLog>) -> Self {
        Health {
            spec,
            ctx,
            log,
            notify: None,
            ready_fd: None,
            log_watch: None,
            readiness: None,
            liveness: None,
            watchdog: None,
            watchdog_every: None,
            ready: false,
            status_text: None,
            main_pid: None,
            last_readiness: None,
            last_liveness: None,
        }
    }

    pub fn set_spec(&mut self, spec: Arc<ServiceSpec>) {
        self.spec = spec;
    }

    /// Prepares a run: the notify socket and readiness descriptor the
    /// process gets, and the environment that names them.
    pub fn prepare(&mut self) -> Result<RunExtras, String> {
        let mut extras = RunExtras::default();
        if self.spec.wants_notify() {
            if self.notify.is_none() {
                let instance = self.ctx.as_ref().map_or("test", |c| c.instance.as_str());
                let name = format!("blackhole/{instance}/{}", self.spec.name);
                let socket = NotifySocket::bind(&name)
                    .map_err(|e| format!("cannot bind the notify socket @{name}: {e}"))?;
                let fd = socket
                    .into_async()
                    .map_err(|e| format!("cannot watch the notify socket: {e}"))?;
                self.notify = Some(fd);
            }
            if let Some(n) = &self.notify {
                extras
                    .env
                    .push(("NOTIFY_SOCKET".into(), n.get_ref().address().to_string()));
            }
            if let Some(w) = self.spec.watchdog {
                extras
                    .env
                    .push(("WATCHDOG_USEC".into(), w.as_micros().to_string()));
            }
        }
        if let Some(fd) = self.spec.readiness_fd() {
            let (r, w) = blackhole_os::pipe::for_reading()
                .map_err(|e| format!("cannot create the readiness pipe: {e}"))?;
            self.ready_fd = Some(
                blackhole_os::asyncfd::register(r).map_err(|e| format!("readiness pipe: {e}"))?,
            );
            extras.fds.push((w, fd));
        }
        Ok(extras)
    }

    /// The process exists: start watching it.
    pub fn started(&mut self, pid: u32) {
        self.ready = false;
        self.main_pid = Some(pid);
        self.status_text = None;
        self.liveness = None;
        self.readiness = None;
        self.watchdog = None;
        if let Some(probe) = &self.spec.readiness {
            match &probe.check {
                Check::Log(pattern) => {
                    if let Ok(watch) = LogWatch::new(pattern) {
                        let watch = Arc::new(watch);
                        self.log.set_watch(Some(watch.clone()));
                        self.log_watch = Some(watch);
                    }
                }
                c if c.is_periodic() => self.readiness = Some(Prober::new(probe.clone())),
                _ => {}
            }
        }
        self.watchdog_every = self.spec.watchdog;
        if let Some(every) = self.watchdog_every {
            self.watchdog = Some(Box::pin(tokio::time::sleep(every)));
        }
    }

    /// The service became ready: liveness checks begin.
    pub fn became_ready(&mut self) {
        self.ready = true;
        self.log.set_watch(None);
        self.log_watch = None;
        self.ready_fd = None;
        if let Some(probe) = &self.spec.liveness
            && self.liveness.is_none()
        {
            self.liveness = Some(Prober::new(probe.clone()));
        }
    }

    /// The run is over: stop every per-run watch.
    pub fn ended(&mut self) {
        self.ready = false;
        self.main_pid = None;
        self.ready_fd = None;
        self.readiness = None;
        self.liveness = None;
        self.watchdog = None;
        if self.log_watch.take().is_some() {
            self.log.set_watch(None);
        }
    }

    /// `WATCHDOG=1`: the service is alive; `WATCHDOG_USEC=` may change the
    /// interval.
    pub fn pet_watchdog(&mut self, every: Option<Duration>) {
        if let Some(e) = every {
            self.watchdog_every = Some(e);
        }
        if let Some(e) = self.watchdog_every {
            self.watchdog = Some(Box::pin(tokio::time::sleep(e)));
        }
    }

    /// Failures in a row of the readiness and liveness checks.
    pub fn failures(&self) -> (u32, u32) {
        (
            self.readiness.as_ref().map_or(0, |p| p.failures),
            self.liveness.as_ref().map_or(0, |p| p.failures),
        )
    }

    pub fn readiness_successes(&self) -> u32 {
        self.readiness.as_ref().map_or(0, |p| p.successes)
    }

    /// Nothing can produce a signal until the next run starts.
    pub fn watches_nothing(&self) -> bool {
        self.notify.is_none()
            && self.ready_fd.is_none()
            && self.log_watch.is_none()
            && self.readiness.is_none()
            && self.liveness.is_none()
            && self.watchdog.is_none()
    }

    /// Waits for the next signal; pends forever when nothing is watched.
    pub async fn next(&mut self) -> Signal {
        let ctx = self.ctx.clone();
        let spec = self.spec.clone();
        tokio::select! {
            d = recv_notify(&self.notify) => Signal::Notify(d),
            () = ready_fd(&mut self.ready_fd) => Signal::FdReady,
            line = log_match(&self.log_watch) => Signal::LogMatched(line),
            r = prober(&mut self.readiness, &spec, &ctx) => Signal::Readiness(r),
            r = prober(&mut self.liveness, &spec, &ctx) => Signal::Liveness(r),
            () = expire(&mut self.watchdog) => {
                self.watchdog = None;
                Signal::WatchdogExpired
            }
        }
    }
}

async fn recv_notify(socket: &Option<AsyncFd<NotifySocket>>) -> Datagram {
    let Some(fd) = socket else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return std::future::pending().await;
        };
        match guard.try_io(|s| s.get_ref().recv()) {
            Ok(Ok(Some(d))) => return d,
            Ok(Ok(None)) => guard.clear_ready(),
            Ok(Err(e)) => tracing::debug!("notify socket: {e}"),
            Err(_would_block) => {}
        }
    }
}

/// Resolves once a newline arrives; a closed descriptor without one means
/// the service will never say it is ready this way.
async fn ready_fd(fd: &mut Option<AsyncFd<OwnedFd>>) {
    loop {
        let Some(afd) = fd.as_ref() else {
            return std::future::pending().await;
        };
        let Ok(mut guard) = afd.readable().await else {
            *fd = None;
            continue;
        };
        let mut buf = [0u8; 256];
        match guard
            .try_io(|f| nix::unistd::read(f.get_ref(), &mut buf).map_err(std::io::Error::from))
        {
            Ok(Ok(0)) | Ok(Err(_)) => *fd = None,
            Ok(Ok(n)) if buf[..n].contains(&b'\n') => {
                *fd = None;
                return;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

async fn log_match(watch: &Option<Arc<LogWatch>>) -> String {
    match watch {
        Some(w) => w.matched().await,
        None => std::future::pending().await,
    }
}

async fn prober(
    p: &mut Option<Prober>,
    spec: &Arc<ServiceSpec>,
    ctx: &Option<Arc<OsContext>>,
) -> ProbeResult {
    match (p, ctx) {
        (Some(p), Some(ctx)) => p.next(spec, ctx).await,
        _ => std::future::pending().await,
    }
}

async fn expire(t: &mut Option<Pin<Box<Sleep>>>) {
    match t {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// One sd_notify assignment.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Reloading,
    Stopping,
    Status(String),
    Watchdog,
    WatchdogTrigger,
    WatchdogUsec(Duration),
    MainPid(u32),
    Errno(i32),
    ExtendTimeout(Duration),
}

/// Parses a datagram: newline-separated `KEY=VALUE`; unknown keys and
/// malformed values are ignored, as systemd does.
pub fn parse_notify(text: &str) -> Vec<Notice> {
    let usec = |v: &str| v.parse::<u64>().ok().map(Duration::from_micros);
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            Some(match k {
                "READY" if v == "1" => Notice::Ready,
                "RELOADING" if v == "1" => Notice::Reloading,
                "STOPPING" if v == "1" => Notice::Stopping,
                "STATUS" => Notice::Status(v.to_string()),
                "WATCHDOG" if v == "1" => Notice::Watchdog,
                "WATCHDOG" if v == "trigger" => Notice::WatchdogTrigger,
                "WATCHDOG_USEC" => Notice::WatchdogUsec(usec(v)?),
                "MAINPID" => Notice::MainPid(v.parse().ok()?),
                "ERRNO" => Notice::Errno(v.parse().ok()?),
                "EXTEND_TIMEOUT_USEC" => Notice::ExtendTimeout(usec(v)?),
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_systemd_services_send() {
        let got = parse_notify(
            "READY=1\nSTATUS=Processing requests: 5\nMAINPID=42\nWATCHDOG=1\nBARRIER=1\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=2\nbogus\nREADY=0\n",
        );
        assert_eq!(
            got,
            [
                Notice::Ready,
                Notice::Status("Processing requests: 5".into()),
                Notice::MainPid(42),
                Notice::Watchdog,
                Notice::ExtendTimeout(Duration::from_secs(5)),
                Notice::Errno(2),
            ]
        );
    }
}
