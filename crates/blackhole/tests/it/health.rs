//! Readiness and liveness with real programs: sd_notify (our helper and
//! Debian's systemd-notify), the readiness descriptor, http, tcp, exec and
//! log checks, the watchdog, liveness failures and hanging checks.

use std::time::Duration;

use blackhole_api::State;

use crate::harness::{Stack, alive, testsvc, wait_for};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn svc(name: &str, args: &str, extra: &str) -> String {
    format!(
        "[services.{name}]\nbinary_path = \"{}\"\nargs = [{args}]\n{extra}\n",
        testsvc().display()
    )
}

#[test]
fn notify_ready_after_a_delay_with_status_text() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "n",
        r#""notify", "--delay", "400", "--message", "READY=1\nSTATUS=serving 3 clients""#,
        "readiness = { kind = \"notify\" }\nstart_timeout = \"20s\"",
    ));
    s.up();
    let early = s.wait_status("n", "started", Duration::from_secs(10), |st| {
        st.pid.is_some()
    });
    assert_eq!(early.state, State::Starting, "not running before READY=1");
    assert!(!early.ready);
    let st = s.wait_state("n", State::Running);
    assert!(st.ready);
    assert_eq!(st.status_text.as_deref(), Some("serving 3 clients"));
    assert!(
        s.log_lines("n")
            .iter()
            .any(|l| l.starts_with("sent READY=1"))
    );
}

#[test]
fn systemd_notify_from_a_shell_script_works() {
    let mut s = Stack::new();
    assert!(
        std::path::Path::new("/usr/bin/systemd-notify").exists()
            || std::path::Path::new("/bin/systemd-notify").exists(),
        "systemd-notify is missing: install Debian's systemd package (.ci/run does)"
    );
    s.script(
        "sd",
        "trap 'exit 0' TERM\nsleep 0.2\nsystemd-notify --ready --status=\"warm and ready\"\necho notified\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config("[services.sd]\nreadiness = { kind = \"notify\" }\n");
    s.up();
    let st = s.wait_state("sd", State::Running);
    assert_eq!(st.status_text.as_deref(), Some("warm and ready"));
    // systemd-notify waits for its barrier fd to be closed before exiting:
    // it does not hang.
    wait_for("systemd-notify to return", Duration::from_secs(10), || {
        s.log_lines("sd")
            .contains(&"notified".to_string())
            .then_some(())
    });
}

#[test]
fn a_stranger_cannot_make_a_service_ready() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "quiet",
        r#""run""#,
        "readiness = { kind = \"notify\" }",
    ));
    s.up();
    s.wait_status("quiet", "started", Duration::from_secs(10), |st| {
        st.pid.is_some()
    });
    // The test process is no process of the service.
    let state_dir = std::path::absolute(s.path().join(".blackhole")).unwrap();
    let name = format!(
        "blackhole/{}/quiet",
        blackhole_daemon::instance_name(&state_dir)
    );
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let addr = nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()).unwrap();
    nix::sys::socket::sendto(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        b"READY=1",
        &addr,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    wait_for(
        "the orchestrator to reject the message",
        Duration::from_secs(10),
        || {
            s.orchestrator_output()
                .contains("ignored a notify message from pid")
                .then_some(())
        },
    );
    let st = s.status("quiet");
    assert_eq!(st.state, State::Starting);
    assert!(!st.ready);
}

#[test]
fn a_service_that_stops_petting_the_watchdog_is_restarted() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "dog",
        r#""notify", "--watchdog-every", "100", "--watchdog-count", "5""#,
        "readiness = { kind = \"notify\" }\nwatchdog_timeout = \"600ms\"\n[services.dog.restart]\ninitial_delay = \"100ms\"",
    ));
    s.up();
    let st = s.wait_status(
        "dog",
        "restarted by the watchdog",
        Duration::from_secs(20),
        |st| st.restarts >= 1,
    );
    let exit = s.status("dog").last_exit.or(st.last_exit).unwrap();
    assert_eq!(exit.reason, "watchdog-timeout", "{exit:?}");
    assert!(
        s.log_lines("dog").iter().any(|l| l == "sent WATCHDOG=1"),
        "it did pet the watchdog at first"
    );
}

#[test]
fn readiness_descriptor() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "s6",
        r#""ready-fd", "--fd", "5", "--delay", "300""#,
        "readiness = { kind = \"fd\", fd = 5 }",
    ));
    s.up();
    let early = s.wait_status("s6", "started", Duration::from_secs(10), |st| {
        st.pid.is_some()
    });
    assert_eq!(early.state, State::Starting);
    assert!(s.wait_state("s6", State::Running).ready);
}

#[test]
fn http_readiness_and_liveness() {
    let mut s = Stack::new();
    let port = free_port();
    s.write_config(&svc(
        "web",
        &format!(r#""http", "--port", "{port}", "--delay", "300", "--fail-after", "6""#),
        &format!(
            "[services.web.readiness]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/health\"\nperiod = \"100ms\"\n\
             [services.web.liveness]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/health\"\nperiod = \"100ms\"\nfailure_threshold = 2\n\
             [services.web.restart]\ninitial_delay = \"100ms\"\n"
        ),
    ));
    s.up();
    let st = s.wait_state("web", State::Running);
    let r = st.readiness.unwrap();
    assert!(
        r.ok && r.kind == "http" && r.message.contains("200"),
        "{r:?}"
    );
    // After 6 answers the server says 500: liveness fails twice, restart.
    let st = s.wait_status(
        "web",
        "restarted by liveness",
        Duration::from_secs(20),
        |st| st.restarts >= 1,
    );
    let exit = st.last_exit.unwrap();
    assert_eq!(exit.reason, "liveness-failed");
    assert!(exit.message.contains("status 500"), "{}", exit.message);
}

#[test]
fn tcp_readiness() {
    let mut s = Stack::new();
    let port = free_port();
    s.write_config(&svc(
        "db",
        &format!(r#""tcp", "--port", "{port}", "--delay", "300""#),
        &format!(
            "readiness = {{ kind = \"tcp\", address = \"127.0.0.1:{port}\", period = \"100ms\" }}"
        ),
    ));
    s.up();
    let early = s.wait_status("db", "started", Duration::from_secs(10), |st| {
        st.pid.is_some()
    });
    assert_eq!(early.state, State::Starting);
    let st = s.wait_state("db", State::Running);
    assert!(st.readiness.unwrap().message.contains("connected"));
}

#[test]
fn exec_readiness_can_be_lost_and_regained_without_a_restart() {
    let mut s = Stack::new();
    s.script(
        "app",
        "trap 'exit 0' TERM\nsleep 0.2\ntouch ready\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.app.readiness]\nkind = \"exec\"\ncommand = [\"test\", \"-e\", \"ready\"]\nperiod = \"100ms\"\nfailure_threshold = 2\n",
    );
    s.up();
    let pid = s.wait_state("app", State::Running).pid;
    let marker = s.services.join("app/data/ready");
    std::fs::remove_file(&marker).unwrap();
    let st = s.wait_status("app", "unready", Duration::from_secs(10), |st| !st.ready);
    assert_eq!(st.state, State::Running, "unready is not a restart");
    assert_eq!(st.pid, pid);
    assert!(!st.readiness.unwrap().ok);
    std::fs::write(&marker, "").unwrap();
    let st = s.wait_status("app", "ready again", Duration::from_secs(10), |st| st.ready);
    assert_eq!(st.pid, pid);
    assert_eq!(st.restarts, 0);
}

#[test]
fn log_line_readiness() {
    let mut s = Stack::new();
    s.script(
        "srv",
        "trap 'exit 0' TERM\necho booting\nsleep 0.3\necho 'listening on port 8080'\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.srv]\nreadiness = { kind = \"log\", pattern = 'listening on port \\d+' }\n",
    );
    s.up();
    let early = s.wait_status("srv", "started", Duration::from_secs(10), |st| {
        st.pid.is_some()
    });
    assert_eq!(early.state, State::Starting);
    s.wait_state("srv", State::Running);
}

#[test]
fn liveness_failure_restarts_the_service_as_a_failure() {
    let mut s = Stack::new();
    s.script(
        "app",
        // Each run starts healthy, and says so once it has cleared the
        // mark: a mark made before that would be cleared.
        "trap 'exit 0' TERM\nrm -f sick\necho $$ > healthy\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.app.liveness]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"! test -e sick\"]\nperiod = \"100ms\"\nfailure_threshold = 2\n[services.app.restart]\ninitial_delay = \"200ms\"\n",
    );
    s.up();
    let first = s.wait_state("app", State::Running).pid;
    let data = s.services.join("app/data");
    wait_for(
        "the first run to clear the mark",
        Duration::from_secs(10),
        || {
            let said = std::fs::read_to_string(data.join("healthy")).ok()?;
            (said.trim().parse::<u32>().ok()? == first?).then_some(())
        },
    );
    // Healthy at first: the check runs and passes.
    let st = s.wait_status("app", "checked", Duration::from_secs(10), |st| {
        st.liveness.is_some()
    });
    assert!(st.liveness.as_ref().unwrap().ok, "{:?}", st.liveness);
    std::fs::write(data.join("sick"), "").unwrap();
    let st = s.wait_status("app", "restarted", Duration::from_secs(10), |st| {
        st.state == State::Running && st.pid != first
    });
    assert_eq!(st.restarts, 1);
    assert_eq!(st.failures, 1, "counted as a failure for backoff");
    let exit = st.last_exit.unwrap();
    assert_eq!(exit.reason, "liveness-failed");
    assert!(
        exit.message
            .starts_with("liveness probe failed: sh ended with exit code 1"),
        "{}",
        exit.message
    );
}

#[test]
fn a_hanging_exec_check_is_killed_at_its_timeout() {
    let mut s = Stack::new();
    s.script(
        "app",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(
        "[services.app.liveness]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo $$ >> probes; exec sleep 60\"]\ntimeout = \"300ms\"\nperiod = \"50ms\"\nfailure_threshold = 2\n",
    );
    s.up();
    s.wait_state("app", State::Running);
    let st = s.wait_status("app", "restarted", Duration::from_secs(20), |st| {
        st.restarts >= 1
    });
    let message = st.last_exit.unwrap().message;
    assert!(
        message.contains("sh did not finish within 300ms (killed)"),
        "{message}"
    );
    let pids: Vec<u32> = std::fs::read_to_string(s.services.join("app/data/probes"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(pids.len() >= 2);
    wait_for(
        "every timed-out check to be gone",
        Duration::from_secs(5),
        || pids.iter().all(|p| !alive(*p)).then_some(()),
    );
}

#[test]
fn not_ready_in_time_is_a_failed_start() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "slow",
        r#""run""#,
        "readiness = { kind = \"notify\" }\nstart_timeout = \"400ms\"\n[services.slow.restart]\nmax_attempts = 1",
    ));
    s.up();
    let st = s.wait_state("slow", State::Failed);
    assert_eq!(st.last_exit.unwrap().reason, "start-timeout");
    assert!(st.last_error.unwrap().contains("not ready within 400ms"));
}
