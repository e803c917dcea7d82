//! The command-line client, run as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use blackhole_api::State;

use crate::harness::{BLACKHOLE, Stack, alive, forget, output, spawn, wait_for};

const QUIET: &str = "trap 'exit 0' TERM\necho \"hello from $BLACKHOLE_SERVICE\"\nwhile :; do sleep 1 & wait $!; done";

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn status_table_and_json() {
    let mut s = Stack::new();
    s.script("api", QUIET);
    s.script("worker", QUIET);
    s.up();
    s.wait_state("api", State::Running);
    s.wait_state("worker", State::Running);
    let out = s.cli(&["status"]);
    assert!(out.status.success());
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..6],
        ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "api");
    assert_eq!(rows[0][1], "running");
    assert!(rows[0][2].parse::<u32>().is_ok());

    let out = s.cli(&["ps", "--json", "worker"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
    assert_eq!(v["services"][0]["name"], "worker");
    assert_eq!(v["services"][0]["state"], "running");
}

#[test]
fn start_stop_restart_by_name_and_all() {
    let mut s = Stack::new();
    s.script("a", QUIET);
    s.script("b", QUIET);
    s.up();
    let a1 = s.wait_state("a", State::Running).pid.unwrap();
    let out = s.cli(&["stop", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("a: stopped") && text(&out.stdout).contains("b: stopped"));
    assert!(!alive(a1));
    let out = s.cli(&["start", "a"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with("a: running (pid "),
        "{}",
        text(&out.stdout)
    );
    let a2 = s.status("a").pid.unwrap();
    let out = s.cli(&["restart", "a", "b"]);
    assert!(out.status.success());
    assert_ne!(s.status("a").pid.unwrap(), a2);
    assert_eq!(s.status("b").state, State::Running);
    let out = s.cli(&["restart", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no service named `nope`"));
}

#[test]
fn logs_tail_prefixes_the_service_name() {
    let mut s = Stack::new();
    s.script("api", QUIET);
    s.script("db", QUIET);
    s.up();
    wait_for("both greetings", Duration::from_secs(10), || {
        (!s.log_lines("api").is_empty() && !s.log_lines("db").is_empty()).then_some(())
    });
    let out = s.cli(&["logs", "-n", "50"]);
    assert!(out.status.success());
    let t = text(&out.stdout);
    assert!(
        t.lines()
            .any(|l| l.starts_with("api") && l.ends_with("| hello from api")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("db") && l.ends_with("| hello from db")),
        "{t}"
    );
    let out = s.cli(&["logs", "db", "-n", "1", "--no-prefix"]);
    assert_eq!(text(&out.stdout).lines().count(), 1);
}

#[test]
fn logs_follow_prints_new_lines() {
    let mut s = Stack::new();
    s.script("chatty", "trap 'exit 0' TERM\nn=0\nwhile :; do n=$((n+1)); echo \"msg $n\"; sleep 0.05 & wait $!; done");
    s.up();
    s.wait_state("chatty", State::Running);
    let mut child = spawn(
        Command::new(BLACKHOLE)
            .args([
                "-c",
                s.config.to_str().unwrap(),
                "logs",
                "-f",
                "-n",
                "0",
                "chatty",
            ])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped()),
    );
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("logs -f printed nothing new"),
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    forget(child.id());
    assert!(
        got.iter()
            .all(|l| l.starts_with("chatty") && l.contains("| msg ")),
        "{got:?}"
    );
}

#[test]
fn down_stops_everything() {
    let mut s = Stack::new();
    s.script("a", QUIET);
    s.up();
    let pid = s.wait_state("a", State::Running).pid.unwrap();
    let out = s.cli(&["down"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("orchestrator stopped"));
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!alive(pid));
}

#[test]
fn exit_code_3_when_nothing_runs() {
    let s = Stack::new();
    let out = s.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains(s.socket.to_str().unwrap()) && err.contains("blackhole up"),
        "{err}"
    );
    let out = output(Command::new(BLACKHOLE).args(["--socket", "/nonexistent/x.sock", "down"]));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn usage_errors_exit_2() {
    let out = output(Command::new(BLACKHOLE).arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
    let out = output(Command::new(BLACKHOLE).arg("start"));
    assert_eq!(out.status.code(), Some(2), "start needs names or --all");
}

#[test]
fn up_detach_returns_once_the_socket_answers() {
    let s = Stack::new();
    s.script("bg", QUIET);
    let out = s.cli(&["up", "-d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("blackhole is up") && said.contains("blackhole.log"),
        "{said}"
    );
    // It answers right away: no waiting needed.
    let st = s.cli(&["status", "--json"]);
    assert!(st.status.success());
    let pid = wait_for("bg to run", Duration::from_secs(10), || {
        let st = s.cli(&["status", "--json", "bg"]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).ok()?;
        (v["services"][0]["state"] == "running")
            .then(|| v["services"][0]["pid"].as_u64().unwrap() as u32)
    });
    let out = s.cli(&["down"]);
    assert!(out.status.success());
    wait_for("bg to stop", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    crate::harness::reap_orphans();
}

#[test]
fn check_reports_services_and_errors() {
    let s = Stack::new();
    s.script("api", QUIET);
    s.write_config(
        "[services.worker]\nbinary_path = \"/bin/sleep\"\nargs = [\"60\"]\nservice_args = false\n",
    );
    let out = s.cli(&["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.contains("api") && t.contains("worker") && t.contains("/bin/sleep"),
        "{t}"
    );
    s.write_config("[services.worker]\nbinary_pth = \"/bin/sleep\"\n");
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("blackhole.toml:2:1") && err.contains("unknown field `binary_pth`"),
        "{err}"
    );
}

#[test]
fn completions_are_generated() {
    let out = output(Command::new(BLACKHOLE).args(["completions", "bash"]));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("_blackhole"));
}
