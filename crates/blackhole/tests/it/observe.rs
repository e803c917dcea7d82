//! Metrics and resource usage: exact counters after a scripted run, the
//! metrics listener, the exposition format, CPU and memory figures.

use std::collections::HashMap;
use std::time::Duration;

use blackhole_api::State;
use hyper::{Method, StatusCode};

use crate::harness::{Stack, testsvc, wait_for};

/// `name{labels} value` lines of a scrape, by the series' full text.
fn scrape(s: &Stack) -> HashMap<String, f64> {
    let (code, body) = s.raw(Method::GET, "/metrics", "text/plain").unwrap();
    assert_eq!(code, StatusCode::OK);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn counters_are_exact_after_a_scripted_run() {
    let mut s = Stack::new();
    let bin = testsvc();
    s.write_config(&format!(
        r#"
[services.crash]
binary_path = "{bin}"
args = ["exit", "--code", "3"]
restart = {{ policy = "never" }}
[services.victim]
binary_path = "{bin}"
args = ["run"]
restart = {{ policy = "never" }}
[services.sick]
binary_path = "{bin}"
args = ["run"]
restart = {{ policy = "never" }}
liveness = {{ kind = "exec", command = ["false"], period = "100ms", failure_threshold = 1 }}
[services.hog]
binary_path = "{bin}"
args = ["hog", "--mib", "128"]
memory_limit = 32
memory_swap_limit = 0
restart = {{ policy = "never" }}
"#,
        bin = bin.display()
    ));
    s.up();
    s.wait_state("crash", State::Failed);
    let victim = s.wait_state("victim", State::Running).pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    s.wait_state("victim", State::Failed);
    s.wait_state("sick", State::Failed);
    s.wait_state("hog", State::Failed);
    let m = scrape(&s);
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no series {k}"));
    assert_eq!(
        get(r#"blackhole_service_exits_total{service="crash",reason="exited"}"#),
        1.0
    );
    assert_eq!(
        get(r#"blackhole_service_last_exit_code{service="crash"}"#),
        3.0
    );
    assert_eq!(
        get(r#"blackhole_service_exits_total{service="victim",reason="killed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"blackhole_service_exits_total{service="sick",reason="liveness-failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"blackhole_service_probes_total{service="sick",probe="liveness",result="failure"}"#),
        1.0
    );
    assert_eq!(
        get(r#"blackhole_service_probes_total{service="sick",probe="liveness",result="success"}"#),
        0.0
    );
    assert_eq!(
        get(r#"blackhole_service_exits_total{service="hog",reason="oom-killed"}"#),
        1.0
    );
    for svc in ["crash", "victim", "sick", "hog"] {
        assert_eq!(
            get(&format!(
                r#"blackhole_service_restarts_total{{service="{svc}"}}"#
            )),
            0.0
        );
        assert_eq!(
            get(&format!(
                r#"blackhole_service_state{{service="{svc}",state="failed"}}"#
            )),
            1.0
        );
        assert_eq!(
            get(&format!(r#"blackhole_service_up{{service="{svc}"}}"#)),
            0.0
        );
    }
    assert_eq!(
        get(r#"blackhole_service_exits_total{service="crash",reason="killed"}"#),
        0.0
    );
    assert!(get(r#"blackhole_service_log_lines_total{service="crash",stream="stdout"}"#) >= 1.0);
    assert_eq!(get(r#"blackhole_build_info{version="0.1.0"}"#), 1.0);
    assert!(get("blackhole_resident_memory_bytes") > 1e6);
}

#[test]
fn the_exposition_passes_promtool() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(promtool) = promtool else {
        panic!("promtool is missing: install Debian's prometheus package (.ci/run does)");
    };
    let mut s = Stack::new();
    s.script(
        "web",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.up();
    s.wait_state("web", State::Running);
    let _ = s.get("/v1/services");
    let (_, body) = s.raw(Method::GET, "/metrics", "text/plain").unwrap();
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool says:\n{said}"
    );
}

#[test]
fn the_metrics_listener_serves_metrics_and_nothing_else() {
    let mut s = Stack::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.write_config(&format!(
        "[orchestrator]\nmetrics_listen = \"127.0.0.1:{port}\"\n"
    ));
    s.up();
    let get = |path: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        (
            resp.split_whitespace().nth(1).unwrap().parse().unwrap(),
            resp,
        )
    };
    wait_for("the metrics listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let (code, body) = get("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("blackhole_build_info"));
    for path in ["/v1/services", "/v1/health", "/", "/metrics/x"] {
        assert_eq!(get(path).0, 404, "{path}");
    }
}

#[test]
fn a_busy_service_shows_about_a_core_and_a_hog_its_memory() {
    let mut s = Stack::new();
    let bin = testsvc();
    s.write_config(&format!(
        "[orchestrator]\nsample_interval = \"500ms\"\n\
         [services.busy]\nbinary_path = \"{b}\"\nargs = [\"burn\"]\n\
         [services.fat]\nbinary_path = \"{b}\"\nargs = [\"hog\", \"--mib\", \"200\", \"--step\", \"50\"]\n",
        b = bin.display()
    ));
    s.up();
    s.wait_state("busy", State::Running);
    wait_for("the hog to hold 200 MiB", Duration::from_secs(20), || {
        s.log_lines("fat")
            .iter()
            .any(|l| l == "allocated 200 MiB")
            .then_some(())
    });
    // The reported figure against an independent one over the same two
    // seconds: the process's own CPU time from /proc. (On a machine shared
    // with the rest of the suite "one core" is not guaranteed, so the test
    // compares instead of expecting 100 %.)
    let busy_pid = s.status("busy").pid.unwrap();
    let ticks = || {
        let text = std::fs::read_to_string(format!("/proc/{busy_pid}/stat")).unwrap();
        let f: Vec<&str> = text[text.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64
    };
    let _ = s.status("busy");
    let (p0, t0) = (ticks(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let before = ticks() / 100.0;
    let busy = s.status("busy").usage.unwrap();
    let (p1, t1) = (ticks(), std::time::Instant::now());
    let independent = (p1 - p0) / 100.0 / (t1 - t0).as_secs_f64() * 100.0;
    let fat = s.status("fat").usage.unwrap();
    eprintln!(
        "busy: reported {:.1} % CPU, /proc says {independent:.1} %; fat: {:.1} MiB resident",
        busy.cpu_percent,
        fat.memory_bytes as f64 / (1 << 20) as f64
    );
    // The percentages above cover different windows (the sampler's last
    // interval, and these two seconds), which differ when the machine is
    // shared. The CPU time itself does not: the sample is at most one
    // interval (0.5 s) old, or a second more when the request gave up
    // waiting for a fresh one, so it lies between what /proc said that
    // long before the request and what it said after the reply.
    let after = p1 / 100.0;
    assert!(
        busy.cpu_seconds >= before - 1.55 && busy.cpu_seconds <= after + 0.02,
        "{busy:?}: /proc said {before:.2} s before the request and {after:.2} s after"
    );
    assert!(
        busy.cpu_percent > 20.0,
        "a spinning thread got almost nothing: {busy:?}"
    );
    // 200 MiB touched plus the program itself: within 10 %.
    let mib = fat.memory_bytes as f64 / (1 << 20) as f64;
    assert!((195.0..=220.0).contains(&mib), "{fat:?}");
    assert_eq!(busy.processes, 1);
}
