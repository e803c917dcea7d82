//! Dependencies: start order, stop order, waiting through restarts,
//! cycles, blocked services, pulling dependencies in, restart_with.

use std::time::{Duration, UNIX_EPOCH};

use blackhole_api::State;
use hyper::StatusCode;
use nix::sys::signal::Signal;

use crate::harness::{Stack, testsvc, wait_for};

/// A service that appends `NAME start|stop NANOS` to `file`.
fn stamping(name: &str, file: &std::path::Path, ready_line: bool) -> String {
    let ready = if ready_line { "echo ready\n" } else { "" };
    format!(
        "stamp() {{ echo \"{name} $1 $(date +%s%N)\" >> {f}; }}\ntrap 'stamp stop; exit 0' TERM\nstamp start\n{ready}while :; do sleep 1 & wait $!; done",
        f = file.display()
    )
}

fn stamps(file: &std::path::Path) -> Vec<(String, String, u128)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut p = l.split(' ');
            let mut field = || p.next().unwrap_or_default().to_string();
            let (who, what, when) = (field(), field(), field());
            let when = when
                .parse()
                .unwrap_or_else(|_| panic!("bad stamp line {l:?} in:\n{text}"));
            (who, what, when)
        })
        .collect()
}

/// Waits until each of `names` has stamped its start: `running` means
/// exec'd, and a stop before the stamp would find nothing to order.
fn wait_started(file: &std::path::Path, names: &[&str]) {
    wait_for("every start stamp", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        names
            .iter()
            .all(|n| {
                text.lines().any(|l| {
                    l.strip_prefix(&format!("{n} start "))
                        .is_some_and(|t| t.parse::<u128>().is_ok())
                })
            })
            .then_some(())
    });
}

fn at(stamps: &[(String, String, u128)], who: &str, what: &str) -> u128 {
    stamps
        .iter()
        .find(|(n, w, _)| n == who && w == what)
        .unwrap_or_else(|| panic!("no `{who} {what}` in {stamps:?}"))
        .2
}

#[test]
fn chain_starts_in_order_and_stops_in_reverse() {
    let mut s = Stack::new();
    let file = s.path().join("order.log");
    s.script(
        "migrate",
        &format!(
            "echo \"migrate start $(date +%s%N)\" >> {f}\nsleep 0.2\necho \"migrate stop $(date +%s%N)\" >> {f}",
            f = file.display()
        ),
    );
    s.script("db", &stamping("db", &file, true));
    s.write_config(&format!(
        r#"
[services.migrate]
type = "oneshot"
[services.db]
depends_on = {{ migrate = "completed" }}
readiness = {{ kind = "log", pattern = "^ready$" }}
[services.api]
binary_path = "{}"
args = ["stamp", "--file", "{}", "--name", "api"]
depends_on = ["db"]
"#,
        testsvc().display(),
        file.display()
    ));
    s.up();
    s.wait_state("api", State::Running);
    assert_eq!(s.status("migrate").state, State::Exited);
    wait_started(&file, &["db", "api"]);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    let st = stamps(&file);
    let (m0, m1) = (at(&st, "migrate", "start"), at(&st, "migrate", "stop"));
    let (db0, db1) = (at(&st, "db", "start"), at(&st, "db", "stop"));
    let (api0, api1) = (at(&st, "api", "start"), at(&st, "api", "stop"));
    assert!(
        m0 < m1 && m1 < db0,
        "db started before migrate completed: {st:?}"
    );
    assert!(db0 < api0, "api started before db: {st:?}");
    assert!(api1 < db1, "db stopped before api: {st:?}");

    // How long from db being ready to api running its first instruction,
    // measured from the log (db's line is stamped when read).
    let text = std::fs::read_to_string(s.log_file("db")).unwrap();
    let ready_line = text.lines().find(|l| l.ends_with(" ready")).unwrap();
    let t = humantime::parse_rfc3339(ready_line.split(' ').next().unwrap()).unwrap();
    let ready_ns = t.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let delay_ms = (api0 as f64 - ready_ns as f64) / 1e6;
    eprintln!("dependency ready -> dependent running its first instruction: {delay_ms:.2} ms");
    assert!(
        delay_ms > -1.0,
        "api started before db was ready ({delay_ms} ms)"
    );
}

#[test]
fn stopping_many_goes_dependents_first_in_one_request() {
    let mut s = Stack::new();
    let file = s.path().join("order.log");
    for name in ["db", "api", "web", "lone"] {
        s.script(name, &stamping(name, &file, false));
    }
    s.write_config(
        "[services.api]\ndepends_on = [\"db\"]\n[services.web]\ndepends_on = [\"api\"]\n",
    );
    s.up();
    for name in ["db", "api", "web", "lone"] {
        s.wait_state(name, State::Running);
    }
    wait_started(&file, &["db", "api", "web", "lone"]);
    let (code, body) = s.post_json("/v1/stop", r#"{"services": ["db", "web", "api", "nope"]}"#);
    assert_eq!(code, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nope", "web", "api", "db"], "{body}");
    assert_eq!(results[0]["error"]["code"], "not_found", "{body}");
    for r in &results[1..] {
        assert_eq!(r["status"]["state"], "stopped", "{body}");
    }
    let st = stamps(&file);
    let (web1, api1, db1) = (
        at(&st, "web", "stop"),
        at(&st, "api", "stop"),
        at(&st, "db", "stop"),
    );
    assert!(
        web1 < api1 && api1 < db1,
        "not stopped dependents first: {st:?}"
    );
    assert_eq!(
        s.status("lone").state,
        State::Running,
        "an unnamed service was touched"
    );

    // A body that is not the documented shape is refused, with the shape.
    let (code, body) = s.post_json("/v1/stop", "[1, 2]");
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"services\""),
        "{body}"
    );

    // No body: every service.
    let (code, body) = s.post_json("/v1/start", "");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 4, "{body}");
    for name in ["db", "api", "web", "lone"] {
        assert_eq!(s.status(name).state, State::Running);
    }
}

#[test]
fn a_dependency_that_restarts_is_waited_for_through_its_restart() {
    let mut s = Stack::new();
    let file = s.path().join("order.log");
    // db fails its first run before it is ready, succeeds on the second.
    s.script(
        "db",
        &format!(
            "if [ ! -e first-run-done ]; then touch first-run-done; echo crashing; exit 1; fi\n{}",
            stamping("db", &file, true)
        ),
    );
    s.script("api", &stamping("api", &file, false));
    s.write_config(
        "[services.db]\nreadiness = { kind = \"log\", pattern = \"^ready$\" }\n[services.db.restart]\ninitial_delay = \"300ms\"\n\
         [services.api]\ndepends_on = [\"db\"]\n",
    );
    s.up();
    s.wait_state("api", State::Running);
    assert_eq!(s.status("db").restarts, 1);
    let st = wait_for("api's stamp", Duration::from_secs(10), || {
        let st = stamps(&file);
        st.iter().any(|(n, _, _)| n == "api").then_some(st)
    });
    assert!(at(&st, "db", "start") < at(&st, "api", "start"));
    assert_eq!(
        st.iter().filter(|(n, _, _)| n == "api").count(),
        1,
        "api started once: {st:?}"
    );
}

#[test]
fn cycles_are_reported_with_their_members() {
    let mut s = Stack::new();
    for n in ["a", "b", "c"] {
        s.script(n, "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done");
    }
    s.write_config("[services.a]\ndepends_on = [\"b\"]\n[services.b]\ndepends_on = [\"a\"]\n");
    let out = s.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service `a`: dependency cycle: a -> b -> a"),
        "{err}"
    );
    assert!(
        err.contains("service `b`: dependency cycle: a -> b -> a"),
        "{err}"
    );
    s.up();
    s.wait_state("c", State::Running);
    assert!(
        s.status("a")
            .last_error
            .unwrap()
            .contains("dependency cycle")
    );
}

#[test]
fn a_permanently_failing_dependency_blocks_its_dependent_until_it_recovers() {
    let mut s = Stack::new();
    let db = s.script("db", "echo 'no disk'; exit 1");
    s.script(
        "api",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.db]\nreadiness = { kind = \"log\", pattern = \"^ready$\" }\n[services.db.restart]\nmax_attempts = 2\ninitial_delay = \"100ms\"\n[services.api]\ndepends_on = [\"db\"]\n",
    );
    s.up();
    s.wait_state("db", State::Failed);
    let api = s.wait_status("api", "blocked on db", Duration::from_secs(10), |st| {
        st.state == State::Blocked
            && st
                .blocked_on
                .as_deref()
                .is_some_and(|b| b.contains("`db` failed"))
    });
    assert!(api.blocked_on.unwrap().contains("gave up after 2"));
    // Fix db and start it by hand: api follows on its own.
    std::fs::write(
        &db,
        "#!/bin/sh\ntrap 'exit 0' TERM\necho ready\nwhile :; do sleep 1 & wait $!; done\n",
    )
    .unwrap();
    let (code, body) = s.post("/v1/services/db/start");
    assert_eq!(code, StatusCode::OK, "{body}");
    s.wait_state("api", State::Running);
    // Shutdown never waits on a blocked service either.
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn shutdown_with_a_blocked_dependent_is_prompt() {
    let mut s = Stack::new();
    s.script("db", "exit 1");
    s.script(
        "api",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.db]\nreadiness = { kind = \"log\", pattern = \"^ready$\" }\n[services.db.restart]\nmax_attempts = 1\n[services.api]\ndepends_on = [\"db\"]\n",
    );
    s.up();
    s.wait_state("api", State::Blocked);
    let t0 = std::time::Instant::now();
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn starting_a_service_by_hand_starts_what_it_needs_first() {
    let mut s = Stack::new();
    let file = s.path().join("order.log");
    s.script("db", &stamping("db", &file, true));
    s.script("api", &stamping("api", &file, false));
    s.write_config(
        "[services.db]\nenabled = false\nreadiness = { kind = \"log\", pattern = \"^ready$\" }\n[services.api]\nenabled = false\ndepends_on = [\"db\"]\n",
    );
    s.up();
    assert_eq!(s.status("db").state, State::Stopped);
    let (code, body) = s.post("/v1/services/api/start");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "running");
    assert_eq!(s.status("db").state, State::Running);
    let st = wait_for("both stamps", Duration::from_secs(10), || {
        let st = stamps(&file);
        (st.len() >= 2).then_some(st)
    });
    assert!(at(&st, "db", "start") < at(&st, "api", "start"));
}

#[test]
fn restart_with_follows_its_dependency() {
    let mut s = Stack::new();
    s.script(
        "db",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.script(
        "api",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.script(
        "other",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config("[services.api]\ndepends_on = [\"db\"]\nrestart_with = [\"db\"]\n[services.other]\ndepends_on = [\"db\"]\n");
    s.up();
    let api = s.wait_state("api", State::Running).pid;
    let other = s.wait_state("other", State::Running).pid;
    let (code, _) = s.post("/v1/services/db/restart");
    assert_eq!(code, StatusCode::OK);
    let st = s.wait_status("api", "restarted with db", Duration::from_secs(10), |st| {
        st.state == State::Running && st.pid != api
    });
    assert_eq!(st.restarts, 1);
    assert_eq!(
        s.status("other").pid,
        other,
        "without restart_with a dependent is left alone"
    );
}

#[test]
fn dependency_ready_to_dependent_spawned_delay() {
    // The figure for the record: over a few runs, how long the orchestrator
    // takes from a dependency's readiness to spawning its dependent.
    let mut s = Stack::new();
    let file = s.path().join("stamps");
    s.write_config(&format!(
        r#"
[orchestrator]
log_service_output = false
[services.db]
binary_path = "{bin}"
args = ["notify", "--delay", "100"]
readiness = {{ kind = "notify" }}
[services.api]
binary_path = "{bin}"
args = ["stamp", "--file", "{f}", "--name", "api"]
depends_on = ["db"]
"#,
        bin = testsvc().display(),
        f = file.display()
    ));
    s.up();
    s.wait_state("api", State::Running);
    let text = std::fs::read_to_string(s.log_file("db")).unwrap();
    let running = text
        .lines()
        .find(|l| l.contains(" blackhole ") && l.contains("running (pid"))
        .unwrap();
    let t = humantime::parse_rfc3339(running.split(' ').next().unwrap()).unwrap();
    let ready_ns = t.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let api_start = wait_for("api's stamp", Duration::from_secs(5), || {
        stamps(&file)
            .iter()
            .find(|(n, w, _)| n == "api" && w == "start")
            .map(|x| x.2)
    });
    let ms = (api_start as f64 - ready_ns as f64) / 1e6;
    eprintln!(
        "db ready -> api's first instruction: {ms:.3} ms (includes fork, exec and the program's start)"
    );
    assert!(ms >= 0.0);
}
