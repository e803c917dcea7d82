//! Running one check: exec, http or tcp, bounded by its timeout.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use blackhole_core::config::{Check, ServiceSpec};
use blackhole_os::spawn::{Output, SpawnPlan};
use bytes::Bytes;
use http_body_util::Empty;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::env;
use super::ops::OsContext;

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    pub message: String,
    pub at: SystemTime,
    pub took: Duration,
}

/// Runs `check` once; never takes (much) longer than `timeout`.
pub async fn run(
    check: &Check,
    timeout: Duration,
    spec: &ServiceSpec,
    ctx: &Arc<OsContext>,
) -> ProbeResult {
    let at = SystemTime::now();
    let started = Instant::now();
    let outcome = match check {
        Check::Exec(argv) => exec(argv, timeout, spec, ctx).await,
        Check::Http {
            url,
            headers,
            status,
        } => match tokio::time::timeout(timeout, http(url, headers, *status)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "GET {url}: no answer within {}",
                humantime::format_duration(timeout)
            )),
        },
        Check::Tcp(address) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(_)) => Ok(format!("connected to {address}")),
                Ok(Err(e)) => Err(format!("connect {address}: {e}")),
                Err(_) => Err(format!(
                    "connect {address}: no answer within {}",
                    humantime::format_duration(timeout)
                )),
            }
        }
        // Signalled by the service, never run.
        Check::Notify | Check::Fd(_) | Check::Log(_) => Ok(String::new()),
    };
    let (ok, message) = match outcome {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    ProbeResult {
        ok,
        message,
        at,
        took: started.elapsed(),
    }
}

async fn http(
    url: &str,
    headers: &[(String, String)],
    (lo, hi): (u16, u16),
) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {url}"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = hyper::Request::get(path)
        .header("host", &host)
        .header("user-agent", "blackhole-probe");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let code = resp.status().as_u16();
    if (lo..=hi).contains(&code) {
        Ok(format!("GET {url}: {code}"))
    } else {
        Err(format!("GET {url}: status {code}, expected {lo}-{hi}"))
    }
}

/// Finds a command like a shell does: a name with a `/` is a path
/// (relative to the data dir), anything else is looked up in `PATH`.
fn resolve_program(name: &str, path: &str, cwd: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = cwd.join(name);
        return executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| executable(p))
}

/// Runs the command in its own session with the service's environment and
/// data dir; at the timeout the whole session is killed, so a hanging
/// check cannot pile up.
async fn exec(
    argv: &[String],
    timeout: Duration,
    spec: &ServiceSpec,
    ctx: &Arc<OsContext>,
) -> Result<String, String> {
    let env = env::build(spec, &ctx.base_env)?;
    let cs = |s: &[u8]| CString::new(s).map_err(|_| "a NUL byte in the command".to_string());
    let path = env
        .get("PATH")
        .map(String::as_str)
        .unwrap_or("/usr/bin:/bin");
    let resolved = resolve_program(&argv[0], path, &spec.data_dir)
        .ok_or_else(|| format!("{}: not found in PATH ({path})", argv[0]))?;
    let program = cs(resolved.as_os_str().as_bytes())?;
    let args = argv
        .iter()
        .map(|a| cs(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut plan = SpawnPlan::new(program, args);
    plan.envp = env
        .iter()
        .map(|(k, v)| cs(format!("{k}={v}").as_bytes()))
        .collect::<Result<_, _>>()?;
    if spec.data_dir.is_dir() {
        plan.cwd = Some(cs(spec.data_dir.as_os_str().as_bytes())?);
    }
    plan.output = Output::Capture;
    let (exit_tx, exit_rx) = oneshot::channel();
    let (reply_tx, reply_rx) = oneshot::channel();
    ctx.spawner.submit(
        plan,
        Box::new(move |status| {
            let _ = exit_tx.send(status);
        }),
        Box::new(move |r| {
            let _ = reply_tx.send(r);
        }),
    );
    let spawned = reply_rx
        .await
        .map_err(|_| "the spawning thread is gone".to_string())?
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let pid = spawned.pid;
    // What it printed, for the message: both pipes drained concurrently to
    // their end (so a chatty check cannot block on a full pipe), keeping
    // the first few hundred bytes.
    let read_output = async move {
        async fn drain(fd: Option<std::os::fd::OwnedFd>) -> Vec<u8> {
            let mut kept = Vec::new();
            let Some(Ok(mut pipe)) = fd.map(tokio::net::unix::pipe::Receiver::from_owned_fd) else {
                return kept;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if kept.len() < 512 {
                    kept.extend_from_slice(&buf[..n.min(512 - kept.len())]);
                }
            }
            kept
        }
        let (out, err) = tokio::join!(drain(spawned.stdout), drain(spawned.stderr));
        if err.is_empty() { out } else { err }
    };
    let waited = tokio::time::timeout(timeout, async {
        let (status, text) = tokio::join!(exit_rx, read_output);
        (status, text)
    })
    .await;
    // Whatever the check left running in its session goes with it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    match waited {
        Ok((Ok(blackhole_core::machine::ExitStatus::Code(0)), _)) => {
            Ok(format!("{} exited 0", argv[0]))
        }
        Ok((Ok(status), text)) => {
            let first = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            Err(format!(
                "{} ended with {status}{}",
                argv[0],
                if first.is_empty() {
                    String::new()
                } else {
                    format!(": {first}")
                }
            ))
        }
        Ok((Err(_), _)) => Err(format!("{}: lost track of the check", argv[0])),
        Err(_) => Err(format!(
            "{} did not finish within {} (killed)",
            argv[0],
            humantime::format_duration(timeout)
        )),
    }
}
