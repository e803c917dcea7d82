//! Isolation on this machine's real cgroups (v2 for tracking, v1 for
//! limits): memory, pids and CPU limits, escaping processes, users,
//! binary checks, leftovers, resource limits, the TCP API's token.

use std::time::{Duration, Instant};

use blackhole_api::State;
use hyper::StatusCode;

use crate::harness::{Stack, alive, testsvc, wait_for};

fn svc(name: &str, args: &str, extra: &str) -> String {
    format!(
        "[services.{name}]\nbinary_path = \"{}\"\nargs = [{args}]\n{extra}\n",
        testsvc().display()
    )
}

#[test]
fn memory_hog_is_oom_killed_and_restarted() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "hog",
        r#""hog", "--mib", "256", "--step", "16""#,
        "memory_limit = 48\nmemory_swap_limit = 0\n[services.hog.restart]\ninitial_delay = \"200ms\"",
    ));
    s.up();
    let st = s.wait_status("hog", "oom-killed", Duration::from_secs(30), |st| {
        st.last_exit
            .as_ref()
            .is_some_and(|x| x.reason == "oom-killed")
    });
    let exit = st.last_exit.unwrap();
    assert_eq!(exit.signal.as_deref(), Some("SIGKILL"));
    assert!(exit.message.contains("oom-killed"), "{}", exit.message);
    s.wait_status("hog", "restarted", Duration::from_secs(20), |st| {
        st.restarts >= 1
    });
    // It got about as far as the limit allows, not further.
    let lines = s.log_lines("hog");
    let most: u64 = lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix("allocated ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "memory_limit = 48 MiB: the hog reached {most} MiB, then {} ({}); restarted",
        exit.reason, exit.message
    );
    assert!(most < 48, "allocated {most} MiB under a 48 MiB limit");
}

#[test]
fn fork_bomb_is_capped_and_the_orchestrator_stays_responsive() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "bomb",
        r#""forkbomb""#,
        "pids_limit = 30\nstop_timeout = \"1s\"",
    ));
    s.up();
    s.wait_state("bomb", State::Running);
    let line = wait_for("the bomb to hit the limit", Duration::from_secs(30), || {
        s.log_lines("bomb")
            .into_iter()
            .find(|l| l.starts_with("fork failed after"))
    });
    let forked: u32 = line
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .parse()
        .unwrap();
    assert!(forked < 30, "{line}");
    eprintln!("pids_limit = 30: {line}");
    // Meanwhile every status request is answered promptly.
    for _ in 0..20 {
        let t0 = Instant::now();
        let (code, _) = s.get("/v1/services").unwrap();
        assert_eq!(code, StatusCode::OK);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "status took {:?}",
            t0.elapsed()
        );
    }
    let (code, body) = s.post("/v1/services/bomb/stop");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(s.cgroup_pids().is_empty(), "every forked child is gone");
}

#[test]
fn cpu_quota_holds_a_busy_service_to_its_share() {
    let mut s = Stack::new();
    s.write_config(&svc("busy", r#""burn""#, "cpu_quota = 0.25"));
    s.up();
    let pid = s.wait_state("busy", State::Running).pid.unwrap();
    let ticks = |pid: u32| -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest: Vec<&str> = text[text.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        (rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap()) as f64
    };
    // Let it settle into its quota first.
    std::thread::sleep(Duration::from_millis(300));
    let (t0, c0) = (Instant::now(), ticks(pid));
    std::thread::sleep(Duration::from_secs(3));
    let (t1, c1) = (Instant::now(), ticks(pid));
    let hz = 100.0;
    let share = (c1 - c0) / hz / (t1 - t0).as_secs_f64();
    eprintln!("cpu_quota = 0.25: measured {share:.3} of a core over 3 s");
    // Tolerance: ±0.10 core (scheduler slices are 100 ms periods; the
    // machine is shared).
    assert!((0.15..=0.35).contains(&share), "used {share:.3} of a core");
}

#[test]
fn a_daemonizing_grandchild_dies_with_its_service() {
    let mut s = Stack::new();
    s.write_config(&svc("d", r#""daemonize""#, ""));
    s.up();
    s.wait_state("d", State::Running);
    let grandchild: u32 = wait_for("the grandchild's pid", Duration::from_secs(10), || {
        s.log_lines("d").iter().find_map(|l| {
            l.strip_prefix("grandchild pid=")
                .and_then(|p| p.trim().parse().ok())
        })
    });
    assert!(alive(grandchild));
    let (code, _) = s.post("/v1/services/d/stop");
    assert_eq!(code, StatusCode::OK);
    assert!(!alive(grandchild), "the double-forked grandchild escaped");
}

#[test]
fn a_service_runs_as_nobody() {
    let mut s = Stack::new();
    // nobody must reach the binary: the checkout may sit in a folder only
    // root can enter, so the service gets a copy in the stack's folder,
    // opened to others.
    use std::os::unix::fs::PermissionsExt;
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::create_dir_all(s.services.join("who")).unwrap();
    for dir in [s.path(), s.services.as_path(), &s.services.join("who")] {
        std::fs::set_permissions(dir, open.clone()).unwrap();
    }
    let bin = s.services.join("who/who");
    std::fs::copy(testsvc(), &bin).unwrap();
    std::fs::set_permissions(&bin, open).unwrap();
    s.write_config("[services.who]\nargs = [\"id\", \"--then\", \"wait\"]\nuser = \"nobody\"\n");
    s.up();
    s.wait_state("who", State::Running);
    let line = wait_for("its id", Duration::from_secs(10), || {
        s.log_lines("who")
            .into_iter()
            .find(|l| l.starts_with("uid="))
    });
    assert!(
        line.starts_with("uid=65534 gid=65534 euid=65534 egid=65534"),
        "{line}"
    );
    // Its data dir is its own.
    let meta = std::fs::metadata(s.services.join("who/data")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_wrong_checksum_refuses_that_service_and_the_others_run() {
    let mut s = Stack::new();
    let bin = testsvc();
    let good = sha256(&bin);
    let bad = "0".repeat(64);
    let script = s.script(
        "scripted",
        "trap 'exit 0' TERM\necho script ran as $0\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config(&format!(
        "{}{}[services.scripted]\nsha256 = \"{}\"\n",
        svc("pinned", r#""run""#, &format!("sha256 = \"{good}\"")),
        svc("tampered", r#""run""#, &format!("sha256 = \"{bad}\"")),
        sha256(&script)
    ));
    s.up();
    assert!(s.wait_state("pinned", State::Running).ready);
    let st = s.wait_state("tampered", State::Failed);
    let err = st.last_error.unwrap();
    assert!(
        err.contains(&bad) && err.contains(&good),
        "both hashes: {err}"
    );
    assert_eq!(st.restarts, 0, "a checksum mismatch is not retried");
    s.wait_state("scripted", State::Running);
    wait_for("the script to run", Duration::from_secs(10), || {
        s.log_lines("scripted")
            .iter()
            .any(|l| l.starts_with("script ran as /dev/fd/"))
            .then_some(())
    });
}

#[test]
fn a_leftover_of_a_killed_orchestrator_is_killed_by_the_next_one() {
    let mut s = Stack::new();
    s.write_config(&svc("p", r#""setsid-child""#, ""));
    s.up();
    s.wait_state("p", State::Running);
    let child: u32 = wait_for("the child's pid", Duration::from_secs(10), || {
        s.log_lines("p").iter().find_map(|l| {
            l.strip_prefix("child pid=")
                .and_then(|x| x.trim().parse().ok())
        })
    });
    s.kill9();
    // The service itself dies with the orchestrator; its setsid child does
    // not (nothing can make it), but it is in the service's cgroup.
    assert!(alive(child));
    s.up();
    wait_for("the leftover to be killed", Duration::from_secs(10), || {
        (!alive(child)).then_some(())
    });
    assert!(
        s.orchestrator_output().contains("left running"),
        "{}",
        s.orchestrator_output()
    );
    let st = s.wait_state("p", State::Running);
    // Exactly one instance: the new main process and its new child (which
    // it forks after it is running).
    let members = wait_for("the new child", Duration::from_secs(10), || {
        let m = s.cgroup_pids();
        (m.len() >= 2).then_some(m)
    });
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.contains(&st.pid.unwrap()));
}

#[test]
fn resource_limits_reach_the_service() {
    let mut s = Stack::new();
    s.write_config(&svc(
        "lim",
        r#""limits", "--then", "wait""#,
        "rlimits = { nofile = 4242, core = [0, \"unlimited\"] }",
    ));
    s.up();
    s.wait_state("lim", State::Running);
    let lines = wait_for("its limits", Duration::from_secs(10), || {
        let l = s.log_lines("lim");
        l.iter()
            .any(|x| x.starts_with("Max open files"))
            .then_some(l)
    });
    let nofile = lines
        .iter()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4242", "4242"],
        "{nofile}"
    );
    let core = lines
        .iter()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "unlimited"],
        "{core}"
    );
}

#[test]
fn default_descriptor_limit_is_the_usual_soft_limit() {
    let mut s = Stack::new();
    s.write_config(&svc("lim", r#""limits", "--then", "wait""#, ""));
    s.up();
    let lines = wait_for("its limits", Duration::from_secs(10), || {
        let l = s.log_lines("lim");
        l.iter()
            .any(|x| x.starts_with("Max open files"))
            .then_some(l)
    });
    let nofile = lines
        .iter()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let ours = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .0;
    assert_eq!(
        nofile.split_whitespace().nth(3).unwrap(),
        ours.to_string(),
        "{nofile}"
    );
}

#[test]
fn tcp_api_needs_the_token() {
    let mut s = Stack::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(s.path().join("token"), "s3cret-token\n").unwrap();
    s.write_config(&format!(
        "[orchestrator]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\n"
    ));
    s.up();
    let get = |auth: Option<&str>| -> u16 {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let header = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            c,
            "GET /v1/health HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    wait_for("the TCP listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("Bearer wrong")), 401);
    assert_eq!(get(Some("Bearer s3cret-token")), 200);
}

#[test]
fn a_group_may_be_granted_the_socket() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut s = Stack::new();
    s.write_config("[orchestrator]\nsocket_group = \"daemon\"\n");
    s.up();
    let meta = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let daemon_gid = nix::unistd::Group::from_name("daemon")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(meta.gid(), daemon_gid);
}

#[test]
fn secret_looking_environment_values_are_masked_in_status() {
    let mut s = Stack::new();
    s.script(
        "app",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    s.write_config("[services.app]\nenvironment = { DB_PASSWORD = \"hunter2\", API_KEY = \"k\", MODE = \"prod\" }\n");
    s.up();
    let (_, body) = s.get("/v1/services/app").unwrap();
    assert_eq!(body["environment"]["MODE"], "prod");
    assert_eq!(body["environment"]["DB_PASSWORD"], "********");
    assert_eq!(body["environment"]["API_KEY"], "********");
    assert!(!body.to_string().contains("hunter2"));
}

#[test]
fn a_binary_others_can_write_is_refused_when_root() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Stack::new();
    let bin = s.script(
        "open",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).unwrap();
    let allowed = s.script(
        "allowed",
        "trap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done",
    );
    std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o777)).unwrap();
    s.write_config("[services.allowed]\nallow_writable_binary = true\n");
    s.up();
    let st = s.wait_state("open", State::Failed);
    assert!(
        st.last_error
            .unwrap()
            .contains("writable by group or others")
    );
    s.wait_state("allowed", State::Running);
}

#[test]
fn limits_without_cgroups_refuse_the_service_unless_optional() {
    let mut s = Stack::new();
    s.write_config(&format!(
        "[orchestrator]\ncgroups = \"off\"\n{}",
        svc("capped", r#""run""#, "memory_limit = 64")
    ));
    s.up();
    let st = s.wait_state("capped", State::Failed);
    assert!(
        st.last_error
            .unwrap()
            .contains("no writable memory controller")
    );
    assert!(
        s.orchestrator_output()
            .contains("memory_limit needs a writable memory cgroup controller")
    );
    drop(s);

    let mut s = Stack::new();
    s.write_config(&format!(
        "[orchestrator]\ncgroups = \"optional\"\n{}",
        svc("capped", r#""run""#, "memory_limit = 64\npids_limit = 50")
    ));
    s.up();
    s.wait_state("capped", State::Running);
}

#[test]
fn without_cgroups_the_records_find_a_leftover_too() {
    let mut s = Stack::new();
    // The shell dies with the orchestrator (parent-death signal); its
    // background `sleep` stays in its session and is found by the record.
    s.script("bg", "sleep 300 &\necho \"sleeper pid=$!\"\nwait");
    s.write_config("[orchestrator]\ncgroups = \"off\"\n");
    s.up();
    s.wait_state("bg", State::Running);
    let sleeper: u32 = wait_for("the sleeper's pid", Duration::from_secs(10), || {
        s.log_lines("bg").iter().find_map(|l| {
            l.strip_prefix("sleeper pid=")
                .and_then(|x| x.trim().parse().ok())
        })
    });
    // Let the record be written (it is coalesced).
    wait_for("the record", Duration::from_secs(5), || {
        std::fs::read_to_string(s.path().join(".blackhole/run.json"))
            .ok()
            .filter(|t| t.contains("\"bg\""))
    });
    s.kill9();
    assert!(
        alive(sleeper),
        "without cgroups the sleeper survives the SIGKILL"
    );
    s.up();
    wait_for("the leftover to be killed", Duration::from_secs(10), || {
        (!alive(sleeper)).then_some(())
    });
    assert!(
        s.orchestrator_output()
            .contains("left running: service `bg`"),
        "{}",
        s.orchestrator_output()
    );
}
