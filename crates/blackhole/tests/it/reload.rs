//! Hot reload: only what changed is touched.

use std::time::Duration;

use blackhole_api::State;
use hyper::StatusCode;
use nix::sys::signal::Signal;

use crate::harness::{Stack, alive, wait_for};

const QUIET: &str = "trap 'exit 0' TERM\necho \"args: $*\"\nwhile :; do sleep 1 & wait $!; done";

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn reload_adds_removes_changes_and_leaves_the_rest_alone() {
    let mut s = Stack::new();
    for n in ["keep", "change", "remove"] {
        s.script(n, QUIET);
    }
    s.write_config("[services.change]\nargs = [\"v1\"]\n");
    s.up();
    let keep = s.wait_state("keep", State::Running).pid.unwrap();
    let change = s.wait_state("change", State::Running).pid.unwrap();
    let remove = s.wait_state("remove", State::Running).pid.unwrap();

    s.script("added", QUIET);
    std::fs::remove_dir_all(s.services.join("remove")).unwrap();
    s.write_config("[services.change]\nargs = [\"v2\"]\n");
    let (code, report) = s.post("/v1/reload");
    assert_eq!(code, StatusCode::OK, "{report}");
    assert_eq!(names(&report, "started"), ["added"]);
    assert_eq!(names(&report, "stopped"), ["remove"]);
    assert_eq!(names(&report, "restarted"), ["change"]);
    assert_eq!(names(&report, "unchanged"), ["keep"]);

    s.wait_state("added", State::Running);
    let changed = s.wait_status("change", "restarted", Duration::from_secs(10), |st| {
        st.state == State::Running && st.pid != Some(change)
    });
    assert_ne!(changed.pid, Some(change));
    wait_for(
        "the removed service to be gone",
        Duration::from_secs(10),
        || {
            (s.get("/v1/services/remove").unwrap().0 == StatusCode::NOT_FOUND && !alive(remove))
                .then_some(())
        },
    );
    assert!(!alive(change));
    assert_eq!(
        s.status("keep").pid,
        Some(keep),
        "untouched service keeps its pid"
    );
    wait_for(
        "the new arguments in the log",
        Duration::from_secs(10),
        || {
            s.log_lines("change")
                .iter()
                .any(|l| l.ends_with("v2"))
                .then_some(())
        },
    );
}

#[test]
fn invalid_configuration_changes_nothing() {
    let mut s = Stack::new();
    s.script("a", QUIET);
    s.script("b", QUIET);
    s.up();
    let a = s.wait_state("a", State::Running).pid;
    let b = s.wait_state("b", State::Running).pid;
    // Running means exec'd; the shell opens its script only after that, so
    // wait for its first line before taking the script away.
    wait_for("b's first line", Duration::from_secs(10), || {
        s.log_lines("b")
            .iter()
            .any(|l| l.starts_with("args:"))
            .then_some(())
    });
    std::fs::remove_dir_all(s.services.join("b")).unwrap();
    s.write_config("[services.a]\nargs = [\"new\"]\n[services.a.restart]\njitter = 7\n");
    let (code, body) = s.post("/v1/reload");
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let details = body["error"]["details"].to_string();
    assert!(details.contains("jitter"), "{details}");
    assert_eq!(s.status("a").pid, a);
    assert_eq!(s.status("b").pid, b, "the removal was not applied either");
}

#[test]
fn sighup_reloads() {
    let mut s = Stack::new();
    s.script("a", QUIET);
    s.up();
    s.wait_state("a", State::Running);
    s.script("late", QUIET);
    s.signal(Signal::SIGHUP);
    s.wait_state("late", State::Running);
}

#[test]
fn disabling_stops_and_enabling_starts() {
    let mut s = Stack::new();
    s.script("svc", QUIET);
    s.up();
    let pid = s.wait_state("svc", State::Running).pid.unwrap();
    s.write_config("[services.svc]\nenabled = false\n");
    let (_, report) = s.post("/v1/reload");
    assert_eq!(names(&report, "stopped"), ["svc"]);
    s.wait_state("svc", State::Stopped);
    assert!(!alive(pid));
    s.write_config("");
    let (_, report) = s.post("/v1/reload");
    assert_eq!(names(&report, "started"), ["svc"]);
    s.wait_state("svc", State::Running);
}

#[test]
fn settings_applied_in_place_keep_the_process() {
    let mut s = Stack::new();
    s.script("svc", QUIET);
    s.up();
    let pid = s.wait_state("svc", State::Running).pid;
    s.write_config(
        "[services.svc]\nstop_timeout = \"3s\"\n[services.svc.restart]\nmax_attempts = 3\n",
    );
    let (_, report) = s.post("/v1/reload");
    assert_eq!(names(&report, "updated"), ["svc"]);
    assert_eq!(s.status("svc").pid, pid);
}

#[test]
fn log_level_changes_live() {
    let mut s = Stack::new();
    s.script(
        "svc",
        "trap 'exit 0' TERM\nwhile :; do echo visible-line; sleep 0.05 & wait $!; done",
    );
    s.up();
    s.wait_state("svc", State::Running);
    wait_for(
        "service lines in the orchestrator's log",
        Duration::from_secs(10),
        || {
            s.orchestrator_output()
                .contains("visible-line")
                .then_some(())
        },
    );
    s.write_config("[orchestrator]\nlog_level = \"warn\"\n");
    let (code, _) = s.post("/v1/reload");
    assert_eq!(code, StatusCode::OK);
    let mark = s.orchestrator_output().len();
    // The service keeps printing; at warn level its stdout is not echoed.
    wait_for(
        "more lines in the service's own log",
        Duration::from_secs(10),
        || (s.log_lines("svc").len() > 40).then_some(()),
    );
    let after = &s.orchestrator_output()[mark..];
    assert!(!after.contains("visible-line"), "{after}");
}

#[test]
fn log_memory_shrinks_live_and_keeps_the_newest_lines() {
    let mut s = Stack::new();
    s.write_config(&format!(
        "[orchestrator]\nlog_service_output = false\n[services.talk]\nbinary_path = \"{}\"\nargs = [\"print\", \"--lines\", \"20000\", \"--size\", \"50\", \"--then\", \"wait\"]\n",
        crate::harness::testsvc().display()
    ));
    s.up();
    let tail = |s: &Stack| -> Vec<String> {
        let (code, body) = s
            .raw(
                hyper::Method::GET,
                "/v1/services/talk/logs?tail=all",
                "text/plain",
            )
            .unwrap();
        assert_eq!(code, StatusCode::OK);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("line "))
            .map(str::to_string)
            .collect()
    };
    let before = wait_for("the last line in memory", Duration::from_secs(20), || {
        let t = tail(&s);
        t.last()
            .is_some_and(|l| l.starts_with("line 19999 "))
            .then_some(t.len())
    });
    let pid = s.status("talk").pid;
    s.write_config(&format!(
        "[orchestrator]\nlog_service_output = false\nlog_memory = \"16KiB\"\n[services.talk]\nbinary_path = \"{}\"\nargs = [\"print\", \"--lines\", \"20000\", \"--size\", \"50\", \"--then\", \"wait\"]\n",
        crate::harness::testsvc().display()
    ));
    let (code, report) = s.post("/v1/reload");
    assert_eq!(code, StatusCode::OK, "{report}");
    let after = tail(&s);
    assert!(
        after.len() * 4 < before,
        "{before} lines in memory before, {} after",
        after.len()
    );
    assert!(after.last().unwrap().starts_with("line 19999 "));
    assert_eq!(s.status("talk").pid, pid, "the service was not restarted");
}
