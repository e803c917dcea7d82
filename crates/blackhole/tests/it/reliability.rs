//! Faults, load and bad input, with real processes. Each scenario prints
//! its figures. The CI runs short versions; `docs/RELIABILITY.md` gives
//! the command for the long ones (the same tests with bigger numbers,
//! chosen by environment variables).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blackhole_api::State;
use hyper::{Method, StatusCode};

use crate::harness::{Stack, alive, testsvc, wait_for};

/// A knob for the long runs: `BH_<NAME>` or the CI default.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(format!("BH_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The orchestrator's open descriptors and resident memory.
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (fds, pages * 4096)
}

/// What each open descriptor of a process points at.
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of a process in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = text.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = text[close + 2..].split_whitespace().collect();
    (f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)) as f64 / 100.0
}

fn zombie_children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|t| {
            let Some(close) = t.rfind(')') else {
                return false;
            };
            let f: Vec<&str> = t[close + 2..].split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

/// Hammers `GET /v1/services` from another thread until stopped; returns
/// latencies in ms and how many requests failed.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Vec<f64>, usize)>,
}

impl Prober {
    fn start(socket: std::path::PathBuf) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut lat = Vec::new();
            let mut failed = 0;
            while !flag.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let ok = rt.block_on(async {
                    let Ok(stream) = tokio::net::UnixStream::connect(&socket).await else {
                        return false;
                    };
                    let Ok((mut tx, conn)) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                    else {
                        return false;
                    };
                    tokio::spawn(conn);
                    let req = hyper::Request::get("/v1/services")
                        .header("host", "x")
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    match tx.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status() == StatusCode::OK;
                            use http_body_util::BodyExt;
                            ok && resp.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    }
                });
                if ok {
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (lat, failed)
        });
        Prober { stop, handle }
    }

    fn finish(self) -> (Vec<f64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut lat, failed) = self.handle.join().unwrap();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (lat, failed)
    }
}

#[test]
fn chaos_random_kills_are_all_recovered() {
    let services = knob("CHAOS_SERVICES", 30) as usize;
    let seconds = knob("CHAOS_SECONDS", 5);
    let mut s = Stack::new();
    let mut text = String::from("[orchestrator]\nlog_service_output = false\n");
    for i in 0..services {
        text.push_str(&format!(
            "[services.s{i:03}]\nbinary_path = \"{}\"\nargs = [\"pause\"]\nrestart = {{ initial_delay = \"10ms\", jitter = 0.0, max_attempts = 0 }}\n",
            testsvc().display()
        ));
    }
    s.write_config(&text);
    s.up();
    let orch = s.pid();
    wait_for("every service running", Duration::from_secs(30), || {
        let (_, body) = s.get("/v1/services").ok()?;
        let running = body["services"]
            .as_array()?
            .iter()
            .filter(|x| x["state"] == "running")
            .count();
        (running == services).then_some(())
    });
    // The writer thread opens each service's log file with its first note,
    // a little after the state shows: on a loaded machine, later than the
    // look above. The baseline is taken once every file is open.
    wait_for("every service's log file", Duration::from_secs(30), || {
        (0..services)
            .all(|i| s.log_file(&format!("s{i:03}")).exists())
            .then_some(())
    });
    let before = footprint(orch);
    let fds_before = fd_targets(orch);
    let prober = Prober::start(s.socket.clone());
    let mut kills = 0u32;
    let mut rng = 0x2545F4914F6CDD1Du64;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let name = format!("s{:03}", rng % services as u64);
        if let Some(pid) = s.status(&name).pid
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        {
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (lat, failed) = prober.finish();
    let statuses = wait_for(
        "every service running again",
        Duration::from_secs(30),
        || {
            let all: Vec<_> = (0..services)
                .map(|i| s.status(&format!("s{i:03}")))
                .collect();
            all.iter()
                .all(|st| st.state == State::Running)
                .then_some(all)
        },
    );
    let restarts: u32 = statuses.iter().map(|st| st.restarts).sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let f = footprint(orch);
        if f.0 <= before.0 + 2 {
            break f;
        }
        if Instant::now() > deadline {
            let now = fd_targets(orch);
            let extra: Vec<&String> = now.iter().filter(|t| !fds_before.contains(t)).collect();
            panic!(
                "descriptors did not come back: {} -> {}; new: {extra:?}",
                before.0, f.0
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "chaos: {services} services, {kills} kills in {seconds} s; restarts {restarts}; zombies {}; \
         fds {} -> {}; RSS {:.1} -> {:.1} MiB; status p50 {:.2} ms p99 {:.2} ms over {} requests, {failed} failed",
        zombie_children(orch),
        before.0,
        after.0,
        before.1 as f64 / 1048576.0,
        after.1 as f64 / 1048576.0,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    assert_eq!(
        restarts, kills,
        "every kill was followed by exactly one restart"
    );
    assert_eq!(zombie_children(orch), 0);
    assert_eq!(failed, 0, "the API answered every status request");
    assert!(
        after.1 < before.1 + 8 * 1048576,
        "memory grew by more than 8 MiB"
    );
}

#[test]
fn crash_storm_is_bounded_and_the_api_stays_responsive() {
    let services = knob("STORM_SERVICES", 60) as usize;
    let mut s = Stack::new();
    let mut text = String::from("[orchestrator]\nlog_service_output = false\n");
    for i in 0..services {
        text.push_str(&format!(
            "[services.s{i:03}]\nbinary_path = \"{}\"\nargs = [\"exit\", \"--code\", \"1\"]\nrestart = {{ initial_delay = 0, max_attempts = 5 }}\n",
            testsvc().display()
        ));
    }
    s.write_config(&text);
    let prober_socket = s.socket.clone();
    s.up();
    let orch = s.pid();
    let cpu0 = cpu_seconds(orch);
    let t0 = Instant::now();
    let prober = Prober::start(prober_socket);
    let statuses = wait_for("every service to give up", Duration::from_secs(60), || {
        let all: Vec<_> = (0..services)
            .map(|i| s.status(&format!("s{i:03}")))
            .collect();
        all.iter()
            .all(|st| st.state == State::Failed)
            .then_some(all)
    });
    let took = t0.elapsed();
    let (lat, failed) = prober.finish();
    let cpu = cpu_seconds(orch) - cpu0;
    eprintln!(
        "crash storm: {services} services x 5 runs in {:.2} s; orchestrator CPU {cpu:.2} s; status p50 {:.2} ms p99 {:.2} ms ({} requests, {failed} failed)",
        took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );
    for st in &statuses {
        assert_eq!(st.restarts, 4, "{}: five runs, four restarts", st.name);
        assert!(
            st.last_error
                .as_deref()
                .unwrap_or("")
                .contains("gave up after 5"),
            "{st:?}"
        );
    }
    assert_eq!(failed, 0);
    // The figure to report is printed above (measured alone it is well
    // under 50 ms); on a machine shared with the rest of the suite only
    // gross unresponsiveness fails the test.
    assert!(
        percentile(&lat, 0.99) < 1000.0,
        "status p99 {:.1} ms",
        percentile(&lat, 0.99)
    );
    assert_eq!(zombie_children(orch), 0);
}

/// Running instances of each service, by the `--service NAME` every
/// process of it carries.
fn instances() -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if !args.first().is_some_and(|a| a.ends_with(b"bh-testsvc")) {
            continue;
        }
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        if let Some(i) = args.iter().position(|a| *a == b"--service")
            && let Some(name) = args.get(i + 1)
        {
            *out.entry(String::from_utf8_lossy(name).into_owned())
                .or_default() += 1;
        }
    }
    out
}

#[test]
fn killing_and_restarting_the_orchestrator_never_doubles_a_service() {
    let mut s = Stack::new();
    let tag = format!("dup{}", std::process::id());
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!(
            "[services.{tag}-{i}]\nbinary_path = \"{}\"\nargs = [\"run\"]\n",
            testsvc().display()
        ));
    }
    s.write_config(&text);
    s.up();
    for i in 0..5 {
        s.wait_state(&format!("{tag}-{i}"), State::Running);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let tag2 = tag.clone();
    // Watches for two processes of one service at any moment.
    let watcher = std::thread::spawn(move || {
        let mut worst = 0;
        while !flag.load(Ordering::Relaxed) {
            for (name, n) in instances() {
                if name.starts_with(&tag2) {
                    worst = worst.max(n);
                }
            }
        }
        worst
    });
    for _ in 0..3 {
        s.kill9();
        s.up();
        for i in 0..5 {
            s.wait_state(&format!("{tag}-{i}"), State::Running);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let worst = watcher.join().unwrap();
    eprintln!(
        "orchestrator SIGKILLed and restarted 3 times: at most {worst} instance(s) of a service at any moment"
    );
    assert_eq!(worst, 1);
    assert_eq!(
        s.cgroup_pids().len(),
        5,
        "one process per service, nothing left over"
    );
}

#[test]
fn binaries_data_and_services_folders_vanishing_are_survived() {
    let mut s = Stack::new();
    let bin = s.script(
        "app",
        "trap 'exit 0' TERM\necho up\nwhile :; do sleep 1 & wait $!; done",
    );
    s.script(
        "other",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.app.restart]\ninitial_delay = \"100ms\"\nmax_attempts = 0\njitter = 0.0\n",
    );
    s.up();
    let pid = s.wait_state("app", State::Running).pid.unwrap();
    // The shell reads its script after exec: wait until it has.
    wait_for("app's first line", Duration::from_secs(10), || {
        s.log_lines("app").iter().any(|l| l == "up").then_some(())
    });
    // Deleting the binary changes nothing for the running process...
    let saved = std::fs::read(&bin).unwrap();
    std::fs::remove_file(&bin).unwrap();
    std::fs::remove_dir_all(s.services.join("app/data")).unwrap();
    assert!(alive(pid));
    // ...until it has to start again: then it says why, and keeps trying.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = s.wait_status("app", "failing to start", Duration::from_secs(10), |st| {
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("No such file"))
    });
    assert!(st.last_error.unwrap().contains(&bin.display().to_string()));
    // The binary comes back: so does the service, data dir recreated.
    std::fs::write(&bin, &saved).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pid = s.wait_state("app", State::Running).pid.unwrap();
    let data = s.services.join("app/data");
    assert!(data.is_dir());
    // A file where the data dir goes: the error names it, and once it is
    // gone the folder is made again.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, "not a folder").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = s.wait_status(
        "app",
        "failing to enter its data dir",
        Duration::from_secs(10),
        |st| {
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("Not a directory"))
        },
    );
    let error = st.last_error.unwrap();
    assert!(error.contains(&data.display().to_string()), "{error}");
    std::fs::remove_file(&data).unwrap();
    s.wait_state("app", State::Running);
    assert!(data.is_dir());
    // The whole services folder goes: a reload refuses with a reason, and
    // everything keeps running as before.
    let other = s.status("other").pid;
    let moved = s.path().join("services.gone");
    std::fs::rename(&s.services, &moved).unwrap();
    let (code, body) = s.post("/v1/reload");
    std::fs::rename(&moved, &s.services).unwrap();
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("no binary found"), "{body}");
    assert_eq!(s.status("other").pid, other);
    assert_eq!(s.get("/v1/health").unwrap().0, StatusCode::OK);
}

#[test]
fn a_full_log_disk_drops_counted_lines_and_nothing_else() {
    let mut s = Stack::new();
    let logs = s.path().join("smalldisk");
    std::fs::create_dir(&logs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "tmpfs",
            logs.to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(mounted, "cannot mount a tmpfs (root is needed)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(logs.clone());
    s.write_config(&format!(
        "[orchestrator]\nlog_dir = \"smalldisk\"\nlog_service_output = false\nlog_max_files = 1\nlog_max_size = \"100MiB\"\n\
         [services.flood]\nbinary_path = \"{}\"\nargs = [\"print\", \"--lines\", \"20000\", \"--size\", \"100\", \"--then\", \"wait\"]\n",
        testsvc().display()
    ));
    s.up();
    s.wait_state("flood", State::Running);
    let dropped = wait_for(
        "dropped lines to be counted",
        Duration::from_secs(20),
        || {
            let (_, body) = s.raw(Method::GET, "/metrics", "text/plain").ok()?;
            let text = String::from_utf8(body).ok()?;
            let line = text.lines().find(|l| {
                l.starts_with("blackhole_service_log_lines_dropped_total{service=\"flood\"}")
            })?;
            let n: f64 = line.rsplit_once(' ')?.1.parse().ok()?;
            (n > 0.0).then_some(n)
        },
    );
    eprintln!("full disk: {dropped} lines dropped from the file, counted");
    assert!(
        s.orchestrator_output().contains("No space left on device"),
        "{}",
        s.orchestrator_output()
    );
    // Everything else goes on: the service runs, the API answers, and the
    // lines are still in memory.
    assert_eq!(s.status("flood").state, State::Running);
    wait_for("the last line in memory", Duration::from_secs(20), || {
        let (code, tail) = s
            .raw(Method::GET, "/v1/services/flood/logs?tail=1", "text/plain")
            .ok()?;
        (code == StatusCode::OK && String::from_utf8_lossy(&tail).starts_with("line 19999 "))
            .then_some(())
    });
}

#[test]
fn odd_pipe_behaviour_is_handled() {
    let mut s = Stack::new();
    let bin = testsvc();
    s.write_config(&format!(
        "[services.mute]\nbinary_path = \"{b}\"\nargs = [\"close-stdio\"]\n\
         [services.holder]\nbinary_path = \"{b}\"\nargs = [\"exit-with-grandchild-holding-pipes\", \"--hold-ms\", \"60000\"]\nrestart = {{ policy = \"never\" }}\n",
        b = bin.display()
    ));
    s.up();
    // Closing its output is not dying.
    let mute = s.wait_state("mute", State::Running).pid.unwrap();
    // The holder exits at once; its grandchild keeps the pipes open. The
    // run ends anyway, and the grandchild goes with it.
    let st = s.wait_state("holder", State::Exited);
    assert_eq!(st.last_exit.unwrap().code, Some(0));
    assert!(
        s.log_lines("holder")
            .contains(&"parent exiting".to_string())
    );
    assert!(alive(mute));
    assert_eq!(s.status("mute").state, State::Running);
    let holder_cgroup: Vec<u32> = {
        let base = s.cgroup_base().unwrap().join("holder/cgroup.procs");
        std::fs::read_to_string(base)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    assert!(
        holder_cgroup.is_empty(),
        "the grandchild was left: {holder_cgroup:?}"
    );
}

#[test]
fn a_huge_line_garbage_and_nul_floods_keep_memory_bounded() {
    let mut s = Stack::new();
    let bin = testsvc();
    let mib = knob("FLOOD_MIB", 32);
    s.write_config(&format!(
        "[orchestrator]\nlog_service_output = false\nlog_max_size = \"1GiB\"\n\
         [services.line]\nbinary_path = \"{b}\"\nargs = [\"flood\", \"--bytes\", \"{bytes}\"]\nrestart = {{ policy = \"never\" }}\n\
         [services.junk]\nbinary_path = \"{b}\"\nargs = [\"garbage\", \"--bytes\", \"1000000\"]\nrestart = {{ policy = \"never\" }}\n",
        b = bin.display(),
        bytes = mib << 20
    ));
    s.up();
    let orch = s.pid();
    let mut peak = 0u64;
    wait_for("all three to finish", Duration::from_secs(60), || {
        peak = peak.max(footprint(orch).1);
        ["line", "junk"]
            .iter()
            .all(|n| s.status(n).state == State::Exited)
            .then_some(())
    });
    // Every byte of the one giant line is in the file, cut into 16 KiB lines.
    let expected = mib << 20;
    let got = wait_for(
        "the whole line in the file",
        Duration::from_secs(30),
        || {
            let n: u64 = s.log_lines("line").iter().map(|l| l.len() as u64).sum();
            (n >= expected).then_some(n)
        },
    );
    let pieces = s.log_lines("line").len() as u64;
    eprintln!(
        "floods: a {mib} MiB line without a newline became {pieces} lines of 16 KiB; orchestrator RSS peak {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert_eq!(got, expected);
    assert_eq!(pieces, expected.div_ceil(16 * 1024));
    assert!(peak < 64 * 1048576, "RSS peaked at {peak} bytes");
    // NULs and invalid UTF-8 arrive as lines (invalid sequences replaced).
    let junk = wait_for("the garbage in the file", Duration::from_secs(10), || {
        let l = s.log_lines("junk");
        (!l.is_empty()).then_some(l)
    });
    assert!(junk.iter().any(|l| l.contains('\0')), "NUL bytes are kept");
    assert!(
        junk.iter().any(|l| l.contains('\u{fffd}')),
        "invalid UTF-8 is replaced, not dropped"
    );
}

#[test]
fn many_chatty_services_lose_no_line() {
    let services = knob("CHATTY_SERVICES", 20) as usize;
    let rate = knob("CHATTY_RATE", 10_000);
    let seconds = knob("CHATTY_SECONDS", 3);
    let lines = rate * seconds;
    let mut s = Stack::new();
    let mut text =
        String::from("[orchestrator]\nlog_service_output = false\nlog_max_size = \"1GiB\"\n");
    for i in 0..services {
        text.push_str(&format!(
            "[services.c{i:03}]\nbinary_path = \"{}\"\nargs = [\"print\", \"--lines\", \"{lines}\", \"--size\", \"80\", \"--rate\", \"{rate}\"]\nrestart = {{ policy = \"never\" }}\n",
            testsvc().display()
        ));
    }
    s.write_config(&text);
    s.up();
    let orch = s.pid();
    let mut peak = 0u64;
    wait_for(
        "every writer to finish",
        Duration::from_secs(seconds * 10 + 30),
        || {
            peak = peak.max(footprint(orch).1);
            (0..services)
                .all(|i| s.status(&format!("c{i:03}")).state == State::Exited)
                .then_some(())
        },
    );
    for i in 0..services {
        let name = format!("c{i:03}");
        let got = wait_for("every line in the file", Duration::from_secs(30), || {
            let n = s.log_lines(&name).len() as u64;
            (n >= lines).then_some(n)
        });
        assert_eq!(got, lines, "{name}");
    }
    eprintln!(
        "{services} services x {rate} lines/s for {seconds} s: {} lines, none lost; orchestrator RSS peak {:.1} MiB",
        services as u64 * lines,
        peak as f64 / 1048576.0
    );
}

#[test]
fn broken_binary_paths_fail_clearly() {
    let mut s = Stack::new();
    std::fs::create_dir(s.path().join("adir")).unwrap();
    nix::unistd::mkfifo(
        &s.path().join("afifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", s.path().join("dangling")).unwrap();
    s.script(
        "fine",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.dir]\nbinary_path = \"adir\"\nrestart = { max_attempts = 1 }\n\
         [services.fifo]\nbinary_path = \"afifo\"\nrestart = { max_attempts = 1 }\n\
         [services.link]\nbinary_path = \"dangling\"\nrestart = { max_attempts = 1 }\n\
         [services.multi]\nbinary_path = \"/bin/sh\"\nservice_args = false\nargs = [\"-c\", \"printf \\\"$V\\\"; exec sleep 60\"]\nenvironment = { V = \"line one\\nline two\\n\" }\n",
    );
    let out = s.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("binary path is a directory"), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains("symbolic link to nothing"), "{err}");
    s.up();
    for name in ["dir", "fifo", "link"] {
        let st = s.wait_state(name, State::Failed);
        assert!(st.last_error.is_some(), "{name}");
    }
    s.wait_state("fine", State::Running);
    wait_for("the two-line value", Duration::from_secs(10), || {
        let l = s.log_lines("multi");
        (l.contains(&"line one".to_string()) && l.contains(&"line two".to_string())).then_some(())
    });
}

/// Sends raw bytes on a fresh connection; returns the status code of the
/// answer (0: the connection was closed without one).
fn raw_exchange(socket: &std::path::Path, bytes: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(bytes);
    let _ = c.shutdown(std::net::Shutdown::Write);
    // The status line is enough (a stream such as /v1/events never ends).
    let mut resp = Vec::new();
    let mut buf = [0u8; 512];
    while !resp.windows(2).any(|w| w == b"\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_requests_get_answers_and_change_nothing() {
    let inputs = knob("API_FUZZ_INPUTS", 2000);
    let mut s = Stack::new();
    s.script(
        "web",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.up();
    let pid = s.wait_state("web", State::Running).pid;
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW", "G\u{0}T",
    ];
    let paths = [
        "/",
        "/v1",
        "/v1/",
        "/v1/services",
        "/v1/services/",
        "/v1/services/web",
        "/v1/services/web/logs",
        "/v1/services/../../etc/passwd",
        "/v1/services/%2e%2e",
        "/v1/services/web/start",
        "/v1/services/web/stop",
        "/v1/services/nope/restart",
        "/v1/events",
        "/v1/reload",
        "/v1/services/web/logs?tail=-1",
        "/v1/services/web/logs?tail=99999999999999999999",
        "/v1/services/web/logs?follow=yes",
        "/v1/logs?service=,,,",
        "/v1/services/web?x=%ff%fe",
        "//",
        "/v1/services/\u{1F600}",
        "*",
        "http://evil/v1/health",
    ];
    let mut rng = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut statuses: HashMap<u16, u32> = HashMap::new();
    let t0 = Instant::now();
    for _ in 0..inputs {
        let method = methods[(next() % methods.len() as u64) as usize];
        let mut path = paths[(next() % paths.len() as u64) as usize].to_string();
        // Mutate: random bytes in the path, odd headers, a body.
        if next() % 4 == 0 {
            let at = (next() % (path.chars().count() as u64 + 1)) as usize;
            let c = char::from((next() % 95 + 32) as u8);
            path = path
                .chars()
                .take(at)
                .chain(std::iter::once(c))
                .chain(path.chars().skip(at))
                .collect();
        }
        if path.contains("stop")
            || path.contains("shutdown")
            || path.contains("restart")
            || path.contains("reload")
        {
            // Still fuzzed, but not allowed to take the service away (that is
            // a legitimate request), so aim it elsewhere.
            path = path.replace("web", "nope");
        }
        let body_len = (next() % 3) * 1000;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        if next() % 3 == 0 {
            req.push_str(&format!("Content-Length: {body_len}\r\n"));
        }
        if next() % 5 == 0 {
            req.push_str("Transfer-Encoding: chunked\r\n");
        }
        if next() % 7 == 0 {
            req.push_str("Accept: application/x-ndjson, text/event-stream\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend(std::iter::repeat_n(b'x', body_len as usize));
        let code = raw_exchange(&s.socket, &bytes);
        *statuses.entry(code).or_default() += 1;
    }
    // Garbage, a header too big to accept, and an empty connection.
    assert_eq!(
        raw_exchange(&s.socket, b"\x00\x01\x02 nonsense\r\n\r\n"),
        400
    );
    let huge = format!(
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    assert_eq!(raw_exchange(&s.socket, huge.as_bytes()), 431);
    assert_eq!(raw_exchange(&s.socket, b""), 0);
    eprintln!(
        "API fuzz: {inputs} requests in {:.1} s; answers by status: {:?}",
        t0.elapsed().as_secs_f64(),
        {
            let mut v: Vec<_> = statuses.iter().collect();
            v.sort();
            v
        }
    );
    for code in statuses.keys() {
        assert!(
            [
                0, 200, 202, 400, 404, 405, 409, 414, 422, 431, 500, 501, 503
            ]
            .contains(code),
            "unexpected status {code}"
        );
    }
    // Nothing was changed by any of it.
    assert_eq!(s.status("web").pid, pid);
    assert_eq!(s.get("/v1/health").unwrap().0, StatusCode::OK);
}

#[test]
fn slow_clients_do_not_block_others() {
    let mut s = Stack::new();
    s.script(
        "web",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.up();
    s.wait_state("web", State::Running);
    // Two hundred connections that send half a request and stall.
    let mut stalled = Vec::new();
    for _ in 0..200 {
        use std::io::Write;
        let mut c = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
        c.write_all(b"GET /v1/services HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        stalled.push(c);
    }
    let t0 = Instant::now();
    for _ in 0..20 {
        assert_eq!(s.get("/v1/services").unwrap().0, StatusCode::OK);
    }
    let per = t0.elapsed().as_secs_f64() * 1000.0 / 20.0;
    eprintln!("with 200 stalled connections open, status took {per:.2} ms on average");
    assert!(per < 500.0);
    // The stalled ones, and one that never says anything, are closed by the
    // orchestrator once the header timeout (10 s) has passed.
    let silent = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    let t0 = Instant::now();
    for mut c in [silent, stalled.pop().unwrap()] {
        use std::io::Read;
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        let n = loop {
            // A signal to this test process (another test's child ending)
            // interrupts the read.
            match c.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.expect("the connection is closed, not left open"),
            }
        };
        assert_eq!(n, 0, "closed without an answer");
    }
    eprintln!(
        "stalled connections closed by the orchestrator after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(stalled);
    assert_eq!(s.get("/v1/health").unwrap().0, StatusCode::OK);
}

/// The long run (not in CI): `BH_SOAK_MINUTES=30 cargo test --release -p
/// blackhole --test it -- --ignored soak --nocapture`. Fifty services of
/// mixed behaviour under periodic reloads; the orchestrator's RSS,
/// descriptors and CPU are sampled every minute and must not trend up.
#[test]
#[ignore = "long run: see docs/RELIABILITY.md"]
fn soak() {
    let minutes = knob("SOAK_MINUTES", 30);
    let period = Duration::from_secs(knob("SOAK_SAMPLE_SECONDS", 60));
    let mut s = Stack::new();
    let bin = testsvc();
    let port_base = 47000 + (std::process::id() % 1000) as u16 * 2;
    // Small in-memory rings: the quiet services fill them within the
    // warm-up third, so a later rise of RSS is a leak, not a cache filling.
    let mut config = String::from(
        "[orchestrator]\nlog_service_output = false\nlog_max_size = \"1MiB\"\nlog_max_files = 2\nlog_memory = \"16KiB\"\n",
    );
    for i in 0..50 {
        let (args, extra) = match i % 5 {
            0 => (r#""run""#.to_string(), String::new()),
            1 => (
                r#""exit", "--after", "2000", "--code", "1""#.to_string(),
                "restart = { initial_delay = \"1s\", max_attempts = 0, reset_after = \"1s\" }"
                    .to_string(),
            ),
            2 => (
                r#""print", "--lines", "100000000", "--size", "100", "--rate", "2000""#.to_string(),
                String::new(),
            ),
            3 => (
                format!(r#""http", "--port", "{}""#, port_base + i as u16),
                format!(
                    "readiness = {{ kind = \"http\", url = \"http://127.0.0.1:{}/\", period = \"2s\" }}\nliveness = {{ kind = \"tcp\", address = \"127.0.0.1:{}\", period = \"2s\" }}",
                    port_base + i as u16,
                    port_base + i as u16
                ),
            ),
            _ => (
                r#""run", "--print-every", "500""#.to_string(),
                String::new(),
            ),
        };
        config.push_str(&format!(
            "[services.s{i:02}]\nbinary_path = \"{}\"\nargs = [{args}]\n{extra}\n",
            bin.display()
        ));
    }
    s.write_config(&config);
    s.up();
    let orch = s.pid();
    let mut rows = Vec::new();
    let start = Instant::now();
    let mut cpu_before = cpu_seconds(orch);
    let mut reloads = 0;
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        let minute_end = Instant::now() + period;
        while Instant::now() < minute_end {
            // A reload every 10 s: half of them change a service's args.
            std::thread::sleep(Duration::from_secs(10));
            let touched = config.replace(
                "\"--print-every\", \"500\"",
                if reloads % 2 == 0 {
                    "\"--print-every\", \"400\""
                } else {
                    "\"--print-every\", \"500\""
                },
            );
            s.write_config(&touched);
            let (code, body) = s.post("/v1/reload");
            assert_eq!(code, StatusCode::OK, "{body}");
            reloads += 1;
            let _ = s.get("/v1/services");
        }
        let (fds, rss) = footprint(orch);
        let cpu = cpu_seconds(orch);
        rows.push((start.elapsed().as_secs() / 60, rss, fds, cpu - cpu_before));
        cpu_before = cpu;
        eprintln!(
            "minute {:>3}: RSS {:>6.1} MiB, fds {:>4}, CPU {:>6.2} s in the last period",
            rows.len(),
            rss as f64 / 1048576.0,
            fds,
            rows.last().unwrap().3
        );
    }
    eprintln!("\n| minute | RSS MiB | fds | CPU s/period |\n|---|---|---|---|");
    for (m, rss, fds, cpu) in &rows {
        eprintln!(
            "| {m} | {:.1} | {fds} | {cpu:.2} |",
            *rss as f64 / 1048576.0
        );
    }
    // Trend: the last third against the second third (the first third is
    // warm-up: rings and buffers filling).
    let third = rows.len() / 3;
    if third >= 1 {
        let mean = |r: &[(u64, u64, usize, f64)], f: fn(&(u64, u64, usize, f64)) -> f64| {
            r.iter().map(f).sum::<f64>() / r.len() as f64
        };
        let mid = &rows[third..2 * third];
        let last = &rows[2 * third..];
        let (rss_mid, rss_last) = (mean(mid, |r| r.1 as f64), mean(last, |r| r.1 as f64));
        let (fd_mid, fd_last) = (mean(mid, |r| r.2 as f64), mean(last, |r| r.2 as f64));
        let (cpu_mid, cpu_last) = (mean(mid, |r| r.3), mean(last, |r| r.3));
        eprintln!(
            "trend (second third -> last third): RSS {:.1} -> {:.1} MiB, fds {fd_mid:.1} -> {fd_last:.1}, CPU {cpu_mid:.2} -> {cpu_last:.2} s/period; {reloads} reloads",
            rss_mid / 1048576.0,
            rss_last / 1048576.0
        );
        assert!(
            rss_last <= rss_mid * 1.10 + 2.0 * 1048576.0,
            "RSS trends up"
        );
        assert!(fd_last <= fd_mid + 5.0, "descriptors trend up");
        assert!(cpu_last <= cpu_mid * 1.5 + 0.5, "CPU trends up");
    }
}
