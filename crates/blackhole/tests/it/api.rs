//! The control API over its real socket: every endpoint, its errors, the
//! socket's protection, one orchestrator per state folder.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use blackhole_api::State;
use hyper::{Method, StatusCode};

use crate::harness::{BLACKHOLE, Stack, output, testsvc, wait_for};

const TICKER: &str = r#"trap 'exit 0' TERM
echo "started pid=$$"
n=0
while :; do n=$((n+1)); echo "tick $n"; sleep 0.1 & wait $!; done"#;

const QUIET: &str = "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done";

#[test]
fn status_endpoints_have_the_documented_fields() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    s.wait_state("web", State::Running);

    let (code, h) = s.get("/v1/health").unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["services"], 1);
    assert!(h["tracking"].is_string());

    let (code, list) = s.get("/v1/services").unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["services"].as_array().unwrap().len(), 1);

    let (code, web) = s.get("/v1/services/web").unwrap();
    assert_eq!(code, StatusCode::OK);
    for key in [
        "name",
        "state",
        "pid",
        "restarts",
        "since",
        "uptime_secs",
        "last_exit",
        "last_error",
        "enabled",
    ] {
        assert!(web.get(key).is_some(), "missing {key}: {web}");
    }
    assert_eq!(web["state"], "running");
    assert!(web["pid"].as_u64().unwrap() > 1);
    assert!(web["last_exit"].is_null());
    assert!(
        humantime::parse_rfc3339(web["since"].as_str().unwrap()).is_ok(),
        "{web}"
    );
}

#[test]
fn errors_are_json_with_fitting_statuses() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    let cases: &[(Method, &str, StatusCode, &str)] = &[
        (
            Method::GET,
            "/v1/services/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/services/nope/start",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/services/nope/logs",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (Method::GET, "/", StatusCode::NOT_FOUND, "not_found"),
        (
            Method::DELETE,
            "/v1/services",
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/services/web/start",
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/services/web/logs?tail=lots",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/services/web/logs?follow=maybe",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/services/web/stop?timeout=soon",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (method, path, want, code) in cases {
        let (got, body) = s.request(method.clone(), path).unwrap();
        assert_eq!(got, *want, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], *code, "{method} {path}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn start_stop_restart_return_when_done() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    let first = s.wait_state("web", State::Running).pid.unwrap();
    let (code, body) = s.post("/v1/services/web/restart");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "running");
    let second = body["pid"].as_u64().unwrap() as u32;
    assert_ne!(first, second);
    assert_eq!(body["restarts"], 1);
    let (code, body) = s.post("/v1/services/web/stop");
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["state"], "stopped");
    assert!(body["pid"].is_null());
    let (code, body) = s.post("/v1/services/web/stop");
    assert_eq!(code, StatusCode::OK, "stopping a stopped service is fine");
    assert_eq!(body["state"], "stopped");
    let (code, body) = s.post("/v1/services/web/start");
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["state"], "running");
}

#[test]
fn a_start_that_fails_says_why() {
    let mut s = Stack::new();
    s.write_config(
        "[services.broken]\nbinary_path = \"missing/program\"\nenabled = false\n[services.broken.restart]\npolicy = \"never\"\n",
    );
    s.up();
    let (code, body) = s.post("/v1/services/broken/start");
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("missing/program") && message.contains("No such file"),
        "{body}"
    );
    assert_eq!(body["error"]["status"]["state"], "failed");
}

#[test]
fn logs_tail_and_follow() {
    let mut s = Stack::new();
    s.script("ticker", TICKER);
    s.up();
    s.wait_state("ticker", State::Running);
    wait_for("a few ticks", Duration::from_secs(10), || {
        (s.log_lines("ticker").len() >= 4).then_some(())
    });

    let (code, text) = s
        .raw(Method::GET, "/v1/services/ticker/logs?tail=2", "text/plain")
        .unwrap();
    assert_eq!(code, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.starts_with("tick ")), "{text}");

    // Follow: new lines keep coming, in order, none repeated.
    let lines = s.stream_until(
        "/v1/services/ticker/logs?tail=1&follow=true",
        "application/x-ndjson",
        Duration::from_secs(10),
        {
            let mut n = 0;
            move |_| {
                n += 1;
                n == 6
            }
        },
    );
    let ticks: Vec<u64> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .inspect(|v| {
            assert_eq!(v["service"], "ticker");
            assert_eq!(v["stream"], "stdout");
            assert!(v["pid"].as_u64().is_some() && v["time"].is_string());
        })
        .map(|v| {
            v["line"]
                .as_str()
                .unwrap()
                .trim_start_matches("tick ")
                .parse()
                .unwrap()
        })
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
}

#[test]
fn events_stream_state_changes() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    s.wait_state("web", State::Running);
    let socket = s.socket.clone();
    let restarter = std::thread::spawn(move || {
        // Let the subscription start first.
        std::thread::sleep(Duration::from_millis(300));
        let out = output(Command::new(BLACKHOLE).args([
            "--socket",
            socket.to_str().unwrap(),
            "restart",
            "web",
        ]));
        assert!(out.status.success());
    });
    let lines = s.stream_until(
        "/v1/events",
        "application/x-ndjson",
        Duration::from_secs(15),
        |l| l.contains("\"to\":\"running\""),
    );
    restarter.join().unwrap();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let changes: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "state")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("running".to_string(), "stopping".to_string()),
            ("stopping".into(), "starting".into()),
            ("starting".into(), "running".into())
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));
}

#[test]
fn shutdown_endpoint_stops_the_orchestrator() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    let pid = s.wait_state("web", State::Running).pid.unwrap();
    let (code, _) = s.post("/v1/shutdown");
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!crate::harness::alive(pid));
}

#[test]
fn control_socket_is_owner_only() {
    let mut s = Stack::new();
    s.up();
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_second_orchestrator_on_the_same_folder_is_refused() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    s.wait_state("web", State::Running);
    let out = output(Command::new(BLACKHOLE).args(["up", "-c", s.config.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&s.pid().to_string()),
        "{err}"
    );
    // The first one is untouched.
    assert_eq!(s.get("/v1/health").unwrap().0, StatusCode::OK);
    assert_eq!(s.status("web").state, State::Running);
}

#[test]
fn a_stale_socket_from_a_dead_orchestrator_is_replaced() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    s.kill9();
    assert!(
        s.socket.exists(),
        "a SIGKILLed orchestrator leaves its socket"
    );
    s.up();
    assert_eq!(s.wait_state("web", State::Running).state, State::Running);
}

#[test]
fn reload_endpoint_reports_what_it_did() {
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    s.wait_state("web", State::Running);
    let (code, body) = s.post("/v1/reload");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["unchanged"], serde_json::json!(["web"]));
    s.write_config("[services.web]\nstop_signal = \"SIGNOPE\"\n");
    let (code, body) = s.post("/v1/reload");
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_config");
    assert!(
        body["error"]["details"][0]
            .as_str()
            .unwrap()
            .contains("blackhole.toml:2:15"),
        "{body}"
    );
}

/// A batch stop that times out reports each service on its own: the one
/// that stopped as stopped, the one still stopping as a time-out with its
/// status; the stop goes on and ends at its stop timeout.
#[test]
fn a_batch_that_times_out_reports_each_service() {
    let mut s = Stack::new();
    let bin = testsvc();
    s.write_config(&format!(
        r#"
[services.quick]
binary_path = "{bin}"
args = ["pause"]
[services.stubborn]
binary_path = "{bin}"
args = ["ignore-term"]
stop_timeout = "3s"
"#,
        bin = bin.display()
    ));
    s.up();
    s.wait_state("quick", State::Running);
    s.wait_state("stubborn", State::Running);
    s.wait_log_line("stubborn", "ignoring SIGTERM");
    let (code, body) = s.post_json("/v1/stop?timeout=500ms", "");
    assert_eq!(code, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    let of = |name: &str| results.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(of("quick")["status"]["state"], "stopped", "{body}");
    let stubborn = of("stubborn");
    assert_eq!(stubborn["error"]["code"], "timeout", "{body}");
    assert_eq!(stubborn["error"]["status"]["state"], "stopping", "{body}");
    s.wait_state("stubborn", State::Stopped);
}
