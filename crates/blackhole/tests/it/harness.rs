//! A real orchestrator in a temporary folder, driven like a user would:
//! its binary, its socket, its files. Everything waits by polling with a
//! deadline; nothing passes because of a fixed sleep.
//!
//! The test process is a child subreaper, so processes orphaned by a test
//! (an orchestrator killed with SIGKILL leaves its services' children)
//! come to it and are reaped here instead of lingering as zombies; and
//! dropping a [`Stack`] kills everything it started.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, Once, RwLock};
use std::time::{Duration, Instant};

use blackhole_api::{ServiceStatus, State};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

pub const BLACKHOLE: &str = env!("CARGO_BIN_EXE_blackhole");

/// Children started by tests (orchestrators, CLI runs): reaped by their
/// own `Child`, never by the orphan sweep.
static OWN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);
/// Spawning holds it shared, the sweep exclusively: a child that exits at
/// once cannot be swept before it is known as our own.
static GATE: RwLock<()> = RwLock::new(());

/// Spawns a command as a known child of the test (see [`reap_orphans`]).
pub fn spawn(cmd: &mut Command) -> Child {
    let _gate = GATE.read().unwrap();
    let child = cmd.spawn().unwrap();
    OWN.lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(child.id());
    child
}

/// Forgets a child once it has been waited for.
pub fn forget(pid: u32) {
    if let Some(set) = OWN.lock().unwrap().as_mut() {
        set.remove(&pid);
    }
}

/// Runs a command to completion, like `Command::output`.
pub fn output(cmd: &mut Command) -> Output {
    let child = spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    forget(pid);
    out
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    });
}

/// Reaps zombies re-parented to this test process, never its own children.
pub fn reap_orphans() {
    let _gate = GATE.write().unwrap();
    let me = std::process::id() as i32;
    let keep = OWN.lock().unwrap().clone().unwrap_or_default();
    for pid in list_pids() {
        if keep.contains(&pid) {
            continue;
        }
        if let Some((state, ppid)) = state_and_ppid(pid)
            && ppid == me
            && state == 'Z'
        {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

fn list_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn state_and_ppid(pid: u32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Alive means it exists and is not a zombie (PID 1 here never reaps, so a
/// zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    matches!(state_and_ppid(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Polls `f` until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The fake-service binary from `crates/testbins`.
pub fn testsvc() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("bh-testsvc");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds crates/testbins)",
        bin.display()
    );
    bin
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub services: PathBuf,
    pub socket: PathBuf,
    pub output: PathBuf,
    child: Option<Child>,
}

impl Stack {
    pub fn new() -> Stack {
        init();
        // Short path: the socket must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("bh")
            .tempdir_in("/tmp")
            .unwrap();
        let services = dir.path().join("services");
        fs::create_dir(&services).unwrap();
        let config = dir.path().join("blackhole.toml");
        fs::write(&config, "").unwrap();
        Stack {
            socket: dir.path().join(".blackhole/control.sock"),
            output: dir.path().join("orchestrator.out"),
            config,
            services,
            dir,
            child: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, text: &str) {
        fs::write(&self.config, text).unwrap();
    }

    /// A shell-script service discovered at `services/NAME/NAME`.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let folder = self.services.join(name);
        fs::create_dir_all(&folder).unwrap();
        let path = folder.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Starts `blackhole up` and waits until its API answers.
    pub fn up(&mut self) -> &mut Self {
        self.up_with(&[])
    }

    pub fn up_with(&mut self, extra: &[&str]) -> &mut Self {
        let out = fs::File::create(&self.output).unwrap();
        let err = out.try_clone().unwrap();
        let child = spawn(
            Command::new(BLACKHOLE)
                .arg("up")
                .arg("-c")
                .arg(&self.config)
                .args(extra)
                .env_remove("BLACKHOLE_SOCKET")
                .env_remove("BLACKHOLE_CONFIG")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        );
        self.child = Some(child);
        let pid = self.pid();
        wait_for("the orchestrator's API", Duration::from_secs(30), || {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "orchestrator exited during start-up ({status}):\n{}",
                    self.orchestrator_output()
                );
            }
            let (code, body) = self.get("/v1/health").ok()?;
            (code == StatusCode::OK && body["pid"] == pid).then_some(())
        });
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not up").id()
    }

    pub fn orchestrator_output(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits for the orchestrator to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("not up");
        let status = wait_for("the orchestrator to exit", timeout, || {
            child.try_wait().ok().flatten()
        });
        self.forget_child();
        status.code()
    }

    fn forget_child(&mut self) {
        if let Some(child) = self.child.take() {
            forget(child.id());
        }
    }

    /// Sends a signal to the orchestrator.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// SIGKILLs the orchestrator and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            forget(child.id());
        }
    }

    /// Runs the CLI against this stack.
    pub fn cli(&self, args: &[&str]) -> Output {
        output(
            Command::new(BLACKHOLE)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env_remove("BLACKHOLE_SOCKET")
                .env_remove("BLACKHOLE_CONFIG")
                .env("NO_COLOR", "1"),
        )
    }

    /// One HTTP request over the control socket: status and JSON body
    /// (`null` when the body is not JSON).
    pub fn request(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let (code, bytes) = self.raw(method, path, "application/json")?;
        Ok((
            code,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }

    pub fn get(&self, path: &str) -> Result<(StatusCode, serde_json::Value), String> {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.request(Method::POST, path).unwrap()
    }

    /// POSTs a JSON body; status and JSON answer.
    pub fn post_json(&self, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let (code, bytes) = self
            .raw_with(Method::POST, path, "application/json", body.as_bytes())
            .unwrap();
        (
            code,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn raw(
        &self,
        method: Method,
        path: &str,
        accept: &str,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        self.raw_with(method, path, accept, b"")
    }

    pub fn raw_with(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: &[u8],
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let body = Bytes::copy_from_slice(body);
        let socket = self.socket.clone();
        let path = path.to_string();
        let accept = accept.to_string();
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .map_err(|e| e.to_string())?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "x")
                .header("accept", accept)
                .body(Full::new(body))
                .unwrap();
            let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
            let code = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((code, body.to_vec()))
        })
    }

    /// Reads a streaming response line by line until `done` says so.
    pub fn stream_until(
        &self,
        path: &str,
        accept: &str,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let socket = self.socket.clone();
        let path = path.to_string();
        let accept = accept.to_string();
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::builder()
                .uri(path)
                .header("host", "x")
                .header("accept", accept)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            let mut body = resp.into_body();
            let mut lines = Vec::new();
            let mut partial = Vec::new();
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let frame = tokio::time::timeout_at(deadline, body.frame())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("stream did not finish within {timeout:?}; got {lines:?}")
                    });
                let Some(Ok(frame)) = frame else { return lines };
                if let Ok(data) = frame.into_data() {
                    partial.extend_from_slice(&data);
                    while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                        let line = String::from_utf8_lossy(&partial[..nl]).into_owned();
                        partial.drain(..=nl);
                        let stop = done(&line);
                        lines.push(line);
                        if stop {
                            return lines;
                        }
                    }
                }
            }
        })
    }

    pub fn status(&self, name: &str) -> ServiceStatus {
        let (code, body) = self.get(&format!("/v1/services/{name}")).unwrap();
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Waits until `name` satisfies `pred`; returns that status.
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        wait_for(&format!("{name} to be {what}"), timeout, || {
            let (code, body) = self.get(&format!("/v1/services/{name}")).ok()?;
            let s: ServiceStatus =
                (code == StatusCode::OK).then(|| serde_json::from_value(body).ok())??;
            pred(&s).then_some(s)
        })
    }

    pub fn wait_state(&self, name: &str, state: State) -> ServiceStatus {
        self.wait_status(name, state.as_str(), Duration::from_secs(20), |s| {
            s.state == state
        })
    }

    /// The service's log file.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.path()
            .join(".blackhole/logs")
            .join(format!("{name}.log"))
    }

    /// Output lines (stdout and stderr) in the service's log file, without
    /// the timestamp/stream/pid prefix.
    pub fn log_lines(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.log_file(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(4, ' ');
                let (_ts, stream, _pid, text) = (
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                    parts.next().unwrap_or(""),
                );
                (stream == "stdout" || stream == "stderr").then(|| text.to_string())
            })
            .collect()
    }

    /// Waits (5 s at most) until the service's log has a line containing
    /// `text`.
    pub fn wait_log_line(&self, name: &str, text: &str) {
        wait_for(
            &format!("`{text}` in {name}'s log"),
            Duration::from_secs(5),
            || {
                self.log_lines(name)
                    .iter()
                    .any(|l| l.contains(text))
                    .then_some(())
            },
        );
    }

    /// The cgroup folder of this orchestrator's services, if it uses one.
    pub fn cgroup_base(&self) -> Option<PathBuf> {
        let state_dir = std::path::absolute(self.path().join(".blackhole")).unwrap();
        let name = blackhole_daemon::instance_name(&state_dir);
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(|m| Path::new(m).join("blackhole").join(&name))
            .find(|p| p.exists())
    }

    /// Every process in this stack's cgroups.
    pub fn cgroup_pids(&self) -> Vec<u32> {
        let Some(base) = self.cgroup_base() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(base).into_iter().flatten().flatten() {
            let procs = fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.forget_child();
        // Whatever the orchestrator left (it was killed): kill it here.
        for pid in self.cgroup_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.cgroup_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // This stack's folders in every hierarchy (v2 and v1 controllers).
        let state_dir = std::path::absolute(self.path().join(".blackhole")).unwrap();
        let name = blackhole_daemon::instance_name(&state_dir);
        for h in ["unified", "memory", "cpu", "pids", "freezer", ""] {
            let base = Path::new("/sys/fs/cgroup")
                .join(h)
                .join("blackhole")
                .join(&name);
            for entry in fs::read_dir(&base).into_iter().flatten().flatten() {
                let _ = fs::remove_dir(entry.path());
            }
            let _ = fs::remove_dir(&base);
        }
        reap_orphans();
        if std::thread::panicking() {
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "--- orchestrator output ---\n{}",
                self.orchestrator_output()
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
