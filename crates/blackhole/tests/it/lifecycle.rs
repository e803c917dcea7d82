//! The core promises, with real processes: start, stop, crash, backoff,
//! escalation, disabled and broken services, escaping children, the
//! orchestrator dying.

use std::time::{Duration, Instant};

use blackhole_api::State;
use hyper::StatusCode;
use nix::sys::signal::Signal;

use crate::harness::{Stack, alive, testsvc, wait_for};

const TERM_SCRIPT: &str = r#"trap 'echo "got TERM"; exit 0' TERM
echo "started pid=$$"
while :; do sleep 1 & wait $!; done"#;

#[test]
fn service_that_exits_on_sigterm_is_stopped_cleanly() {
    let mut s = Stack::new();
    s.script("web", TERM_SCRIPT);
    s.up();
    let running = s.wait_state("web", State::Running);
    let pid = running.pid.unwrap();
    // Its trap is set once it says it started.
    wait_for("the service to start", Duration::from_secs(10), || {
        s.log_lines("web")
            .iter()
            .any(|l| l.starts_with("started"))
            .then_some(())
    });
    let (code, body) = s.post("/v1/services/web/stop");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "stopped");
    assert_eq!(body["last_exit"]["reason"], "stopped");
    assert_eq!(body["last_exit"]["code"], 0);
    assert!(!alive(pid));
    wait_for(
        "the goodbye line in the log",
        Duration::from_secs(5),
        || {
            s.log_lines("web")
                .contains(&"got TERM".to_string())
                .then_some(())
        },
    );
}

#[test]
fn crashing_service_restarts_and_the_gaps_follow_the_backoff() {
    let mut s = Stack::new();
    s.script("crash", "echo started; exit 1");
    s.write_config(
        r#"
[services.crash.restart]
initial_delay = "200ms"
multiplier = 2.0
jitter = 0.0
max_attempts = 0
"#,
    );
    s.up();
    s.wait_status(
        "crash",
        "restarted 4 times",
        Duration::from_secs(20),
        |st| st.restarts >= 4,
    );
    // The file is written by the log writer, a moment after the fact.
    let text = wait_for(
        "five starts in the log file",
        Duration::from_secs(10),
        || {
            let t = std::fs::read_to_string(s.log_file("crash")).ok()?;
            (t.lines().filter(|l| l.ends_with(" started")).count() >= 5).then_some(t)
        },
    );
    let starts: Vec<f64> = text
        .lines()
        .filter(|l| l.ends_with(" started"))
        .map(|l| {
            let ts = l.split(' ').next().unwrap();
            let t = humantime::parse_rfc3339(ts).unwrap();
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        })
        .collect();
    assert!(starts.len() >= 5, "{text}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, expected) in [0.2, 0.4, 0.8, 1.6].iter().enumerate() {
        assert!(
            gaps[i] >= expected - 0.005 && gaps[i] < expected + 0.5,
            "gap {i} was {:.3}s, expected about {expected}s: {gaps:?}",
            gaps[i]
        );
    }
    let st = s.status("crash");
    assert!(st.restarts >= 4);
    assert_eq!(st.last_exit.unwrap().code, Some(1));
}

#[test]
fn service_ignoring_sigterm_is_killed_at_its_stop_timeout() {
    let mut s = Stack::new();
    let bin = testsvc();
    s.write_config(&format!(
        r#"
[services.stubborn]
binary_path = "{}"
args = ["ignore-term"]
stop_timeout = "400ms"
"#,
        bin.display()
    ));
    s.up();
    let pid = s.wait_state("stubborn", State::Running).pid.unwrap();
    // Let it install its handler before the stop.
    s.wait_log_line("stubborn", "ignoring SIGTERM");
    let t0 = Instant::now();
    let (code, body) = s.post("/v1/services/stubborn/stop");
    let took = t0.elapsed();
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        took >= Duration::from_millis(400),
        "stopped after {took:?}, before the timeout"
    );
    assert_eq!(body["last_exit"]["signal"], "SIGKILL");
    assert!(!alive(pid));

    // It can run again: a cgroup emptied with `cgroup.kill` kills every
    // child later cloned into it on some kernels, so the service must get
    // a fresh one. Its own line proves the new process got as far as main.
    let (code, body) = s.post("/v1/services/stubborn/start");
    assert_eq!(code, StatusCode::OK, "{body}");
    let again = body["pid"].as_u64().unwrap() as u32;
    s.wait_log_line("stubborn", &format!("started pid={again} ignoring SIGTERM"));
    let now = s.status("stubborn");
    assert_eq!((now.state, now.pid), (State::Running, Some(again)));
    assert!(alive(again));
}

#[test]
fn disabled_service_is_not_started_by_up_but_can_be_started_by_hand() {
    let mut s = Stack::new();
    s.script("on", TERM_SCRIPT);
    s.script("off", TERM_SCRIPT);
    s.write_config("[services.off]\nenabled = false\n");
    s.up();
    s.wait_state("on", State::Running);
    let off = s.status("off");
    assert_eq!(off.state, State::Stopped);
    assert!(!off.enabled);
    assert!(off.pid.is_none());
    let (code, body) = s.post("/v1/services/off/start");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "running");
}

#[test]
fn missing_binary_is_a_clear_error_and_the_others_still_run() {
    let mut s = Stack::new();
    s.script("good", TERM_SCRIPT);
    s.write_config(
        r#"
[services.ghost]
binary_path = "bin/does-not-exist"
[services.ghost.restart]
max_attempts = 2
initial_delay = "50ms"
"#,
    );
    s.up();
    s.wait_state("good", State::Running);
    let ghost = s.wait_state("ghost", State::Failed);
    let err = ghost.last_error.unwrap();
    assert!(
        err.contains("does-not-exist") && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(s.status("good").state, State::Running);
    // The startup output named the problem with its place in the file.
    let out = s.orchestrator_output();
    assert!(out.contains("blackhole.toml:3:15"), "{out}");
}

#[test]
fn invalid_service_configuration_does_not_stop_the_others() {
    let mut s = Stack::new();
    s.script("good", TERM_SCRIPT);
    s.script("bad", TERM_SCRIPT);
    s.write_config("[services.bad]\nstop_signal = \"SIGWHAT\"\n");
    s.up();
    s.wait_state("good", State::Running);
    let bad = s.status("bad");
    assert_eq!(bad.state, State::Failed);
    let err = bad.last_error.unwrap();
    assert!(
        err.contains("blackhole.toml:2:15") && err.contains("unknown signal"),
        "{err}"
    );
    let (code, body) = s.post("/v1/services/bad/start");
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
}

fn setsid_child_dies_with_its_service(cgroups: &str) {
    let mut s = Stack::new();
    s.write_config(&format!(
        r#"
[orchestrator]
cgroups = "{cgroups}"
[services.parent]
binary_path = "{}"
args = ["setsid-child"]
stop_timeout = "500ms"
"#,
        testsvc().display()
    ));
    s.up();
    let parent = s.wait_state("parent", State::Running).pid.unwrap();
    let child: u32 = wait_for(
        "the child's pid in the log",
        Duration::from_secs(10),
        || {
            s.log_lines("parent").iter().find_map(|l| {
                l.strip_prefix("child pid=")
                    .and_then(|p| p.trim().parse().ok())
            })
        },
    );
    assert!(alive(child));
    let (code, body) = s.post("/v1/services/parent/stop");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(!alive(parent), "the service itself is gone");
    assert!(
        !alive(child),
        "the setsid child escaped the stop ({cgroups})"
    );
}

#[test]
fn setsid_child_dies_with_its_service_tracked_by_cgroup() {
    setsid_child_dies_with_its_service("auto");
}

#[test]
fn setsid_child_dies_with_its_service_tracked_by_process_tree() {
    setsid_child_dies_with_its_service("off");
}

/// A stop signals each process of the service once: every member of its
/// cgroup (with cgroups), or the process group and then only the members
/// outside it (without). A second SIGTERM or SIGINT means "quit now" to
/// many programs.
fn each_process_gets_one_stop_signal(cgroups: &str) {
    let mut s = Stack::new();
    s.write_config(&format!(
        r#"
[orchestrator]
cgroups = "{cgroups}"
[services.counter]
binary_path = "{}"
args = ["count-term"]
"#,
        testsvc().display()
    ));
    s.up();
    s.wait_state("counter", State::Running);
    s.wait_log_line("counter", "main ready");
    s.wait_log_line("counter", "child ready");
    let (code, body) = s.post("/v1/services/counter/stop");
    assert_eq!(code, StatusCode::OK, "{body}");
    // Written by the log writer thread, maybe after the stop returned.
    s.wait_log_line("counter", "main got");
    s.wait_log_line("counter", "child got");
    let lines = s.log_lines("counter");
    for who in ["main", "child"] {
        let said: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{who} got")))
            .collect();
        assert_eq!(said, [&format!("{who} got 1")], "{cgroups}: {lines:?}");
    }
}

#[test]
fn each_process_gets_one_stop_signal_tracked_by_cgroup() {
    each_process_gets_one_stop_signal("auto");
}

#[test]
fn each_process_gets_one_stop_signal_tracked_by_process_tree() {
    each_process_gets_one_stop_signal("off");
}

#[test]
fn orchestrator_killed_with_sigkill_takes_its_services_along() {
    let mut s = Stack::new();
    for name in ["a", "b", "c"] {
        s.script(name, TERM_SCRIPT);
    }
    s.up();
    let pids: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| s.wait_state(n, State::Running).pid.unwrap())
        .collect();
    s.kill9();
    wait_for(
        "every service to die with the orchestrator",
        Duration::from_secs(2),
        || pids.iter().all(|p| !alive(*p)).then_some(()),
    );
}

#[test]
fn start_of_a_running_service_never_makes_a_second_instance() {
    let mut s = Stack::new();
    s.script("one", TERM_SCRIPT);
    s.up();
    let first = s.wait_state("one", State::Running).pid;
    for _ in 0..3 {
        let (code, body) = s.post("/v1/services/one/start");
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["pid"].as_u64().map(|p| p as u32), first);
    }
    assert_eq!(s.status("one").restarts, 0);
}

#[test]
fn sigterm_to_the_orchestrator_stops_everything_and_exits_zero() {
    let mut s = Stack::new();
    for name in ["a", "b"] {
        s.script(name, TERM_SCRIPT);
    }
    s.up();
    let pids: Vec<u32> = ["a", "b"]
        .iter()
        .map(|n| s.wait_state(n, State::Running).pid.unwrap())
        .collect();
    for name in ["a", "b"] {
        wait_for("the trap to be set", Duration::from_secs(10), || {
            s.log_lines(name)
                .iter()
                .any(|l| l.starts_with("started"))
                .then_some(())
        });
    }
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(!s.socket.exists(), "the socket is removed");
    for name in ["a", "b"] {
        assert!(
            s.log_lines(name).contains(&"got TERM".to_string()),
            "{name} got its stop signal"
        );
    }
}

#[test]
fn second_interrupt_kills_everything_at_once() {
    let mut s = Stack::new();
    s.write_config(&format!(
        r#"
[orchestrator]
shutdown_timeout = "60s"
[services.stubborn]
binary_path = "{}"
args = ["ignore-term"]
"#,
        testsvc().display()
    ));
    s.up();
    let pid = s.wait_state("stubborn", State::Running).pid.unwrap();
    s.wait_log_line("stubborn", "ignoring");
    s.signal(Signal::SIGINT);
    s.wait_state("stubborn", State::Stopping);
    let t0 = Instant::now();
    s.signal(Signal::SIGINT);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(!alive(pid));
}

#[test]
fn lines_written_just_before_exit_are_all_kept() {
    let mut s = Stack::new();
    s.script(
        "burst",
        "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo \"line $i\"; done; echo oops >&2; printf 'no newline at the end'; exit 3",
    );
    s.write_config("[services.burst.restart]\npolicy = \"never\"\n");
    s.up();
    s.wait_state("burst", State::Failed);
    let lines = wait_for("all lines in the file", Duration::from_secs(10), || {
        let l = s.log_lines("burst");
        (l.len() >= 2002).then_some(l)
    });
    assert_eq!(lines.len(), 2002);
    // stdout and stderr are separate pipes: only each one's order is kept.
    assert_eq!(lines.iter().filter(|l| *l == "oops").count(), 1);
    let stdout: Vec<&String> = lines.iter().filter(|l| *l != "oops").collect();
    assert_eq!(stdout[0], "line 1");
    assert_eq!(stdout[1999], "line 2000");
    assert_eq!(stdout[2000], "no newline at the end");
}

#[test]
fn service_lines_are_structured_events_in_the_orchestrators_log() {
    let mut s = Stack::new();
    s.script(
        "talker",
        "echo 'hello out'; echo 'hello err' >&2; exec sleep 60",
    );
    s.up_with(&["--log-format", "json"]);
    s.wait_state("talker", State::Running);
    let events = wait_for(
        "both lines in the orchestrator's log",
        Duration::from_secs(10),
        || {
            let out = s.orchestrator_output();
            let events: Vec<serde_json::Value> = out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let found = |text: &str| events.iter().any(|e| e["message"] == text);
            (found("hello out") && found("hello err")).then_some(events)
        },
    );
    let out = events.iter().find(|e| e["message"] == "hello out").unwrap();
    assert_eq!(out["service"], "talker");
    assert_eq!(out["stream"], "stdout");
    assert_eq!(out["level"], "INFO");
    assert!(out["pid"].as_u64().unwrap() > 0);
    let err = events.iter().find(|e| e["message"] == "hello err").unwrap();
    assert_eq!(err["stream"], "stderr");
    assert_eq!(err["level"], "WARN");
}

#[test]
fn clean_environment_and_working_directory() {
    let mut s = Stack::new();
    s.script(
        "env",
        "env | sort; echo \"cwd=$(pwd)\"; echo \"args=$*\"; exec sleep 60",
    );
    s.write_config(
        "[services.env]\nenvironment = { EXTRA = \"yes\", MULTI = \"a\\nb\" }\nmemory_limit = 64\nenv_file = [\"one.env\"]\n",
    );
    std::fs::write(
        s.path().join("one.env"),
        "FROM_FILE=1\nEXTRA=overridden-by-environment\n",
    )
    .unwrap();
    // SAFETY: tests in this binary do not read this variable concurrently.
    unsafe { std::env::set_var("BH_TEST_LEAK", "must-not-appear") };
    s.up();
    s.wait_state("env", State::Running);
    let lines = wait_for("the environment dump", Duration::from_secs(10), || {
        let l = s.log_lines("env");
        l.iter().any(|x| x.starts_with("args=")).then_some(l)
    });
    let data = s.services.join("env/data");
    let get = |k: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    assert_eq!(get("HOME").unwrap(), data.display().to_string());
    assert_eq!(get("cwd").unwrap(), data.display().to_string());
    assert_eq!(get("BLACKHOLE_SERVICE").unwrap(), "env");
    assert_eq!(get("EXTRA").unwrap(), "yes");
    assert_eq!(get("FROM_FILE").unwrap(), "1");
    assert_eq!(get("GOMEMLIMIT").unwrap(), "64MiB");
    assert_eq!(get("TMPDIR").unwrap(), get("TMP").unwrap());
    assert!(get("PATH").is_some());
    assert_eq!(get("args").unwrap(), "--service env --log-level info");
    assert!(get("MULTI").is_some(), "a value with a newline is passed");
    assert!(
        !lines.iter().any(|l| l.contains("BH_TEST_LEAK")),
        "the orchestrator's environment leaked"
    );
    assert!(data.is_dir(), "the data dir was created");
}

/// A clean shutdown leaves no cgroup folder of this orchestrator in any
/// hierarchy: the services' folders are removed (off the runtime thread,
/// during the shutdown) before the instance folder, and before `up`
/// exits. One service has a memory limit, so on a hybrid host it also has
/// a folder in the v1 memory hierarchy; one leaves a daemonized child, so
/// its stop ends by the group's emptiness, not the main exit.
#[test]
fn a_clean_shutdown_leaves_no_cgroup_folder() {
    let mut s = Stack::new();
    s.write_config(&format!(
        r#"
[services.plain]
binary_path = "{bin}"
args = ["pause"]

[services.limited]
binary_path = "{bin}"
args = ["pause"]
memory_limit = 64

[services.parent]
binary_path = "{bin}"
args = ["setsid-child"]
stop_timeout = "500ms"
"#,
        bin = testsvc().display()
    ));
    s.up();
    for name in ["plain", "limited", "parent"] {
        s.wait_state(name, State::Running);
    }
    let child: u32 = wait_for("the daemonized child", Duration::from_secs(10), || {
        s.log_lines("parent").iter().find_map(|l| {
            l.strip_prefix("child pid=")
                .and_then(|p| p.trim().parse().ok())
        })
    });
    let Some(base) = s.cgroup_base() else {
        eprintln!("no cgroups on this machine: nothing to check");
        return;
    };
    let state_dir = std::path::absolute(s.path().join(".blackhole")).unwrap();
    let name = blackhole_daemon::instance_name(&state_dir);
    let folders: Vec<std::path::PathBuf> = ["unified", "memory", "cpu", "pids", "freezer", ""]
        .iter()
        .map(|h| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(h)
                .join("blackhole")
                .join(&name)
        })
        .filter(|p| p.exists())
        .collect();
    assert!(folders.contains(&base), "{folders:?}");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!alive(child), "the daemonized child outlived the shutdown");
    for f in &folders {
        assert!(
            !f.exists(),
            "{} is still there after a clean shutdown",
            f.display()
        );
    }
}
