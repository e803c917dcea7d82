//! `blackhole top` in a real terminal (tmux): the dashboard shows the
//! stack, keys act on it, it rides out an orchestrator restart, `q` quits
//! and gives the terminal back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blackhole_api::State;

use crate::harness::{BLACKHOLE, Stack, output, wait_for};

const QUIET: &str = "trap 'exit 0' TERM\necho \"hello from $BLACKHOLE_SERVICE\"\nwhile :; do sleep 1 & wait $!; done";
const PATIENCE: Duration = Duration::from_secs(20);

/// `top` running in a tmux server of its own (its socket in the stack's
/// folder, no user configuration), killed however the test ends.
struct Tmux {
    socket: PathBuf,
    /// Unique across tests running at once, for whoever looks with `ps`.
    session: String,
    /// Where the shell writes top's exit code.
    rc: PathBuf,
}

impl Tmux {
    fn top(s: &Stack) -> Tmux {
        let rc = s.path().join("top.rc");
        let command = format!(
            "'{BLACKHOLE}' -c '{}' top; echo $? > '{}'",
            s.config.display(),
            rc.display()
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let session = format!(
            "bhtop-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let tmux = Tmux {
            socket: s.path().join("tmux.sock"),
            session,
            rc,
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            "120",
            "-y",
            "40",
            &command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        output(
            Command::new("tmux")
                .arg("-S")
                .arg(&self.socket)
                .args(["-f", "/dev/null"])
                .args(args)
                .env_remove("TMUX")
                .env_remove("BLACKHOLE_SOCKET")
                .env_remove("BLACKHOLE_CONFIG")
                .env("TERM", "xterm-256color"),
        )
    }

    /// The visible screen, or None once the session is gone.
    fn screen(&self) -> Option<String> {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", &self.session, keys]);
        assert!(out.status.success(), "tmux send-keys {keys}");
    }

    /// Polls the screen until it satisfies `pred`; shows the last screen
    /// if it never does.
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            if let Some(screen) = self.screen() {
                if pred(&screen) {
                    return screen;
                }
                last = screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {what}; the screen:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ended(&self) -> bool {
        !self
            .run(&["has-session", "-t", &self.session])
            .status
            .success()
    }

    fn exit_code(&self) -> Option<String> {
        read_trimmed(&self.rc)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-session", "-t", &self.session]);
        let _ = self.run(&["kill-server"]);
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// The table row of `name`, split in columns.
fn row(screen: &str, name: &str) -> Option<Vec<String>> {
    screen
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn top_shows_the_stack_restarts_a_service_and_quits() {
    assert!(tmux_available(), "these tests need tmux");
    let mut s = Stack::new();
    s.script("api", QUIET);
    s.script("web", QUIET);
    s.up();
    s.wait_state("api", State::Running);
    let old = s.wait_state("web", State::Running).pid.unwrap();

    let t = Tmux::top(&s);
    let screen = t.wait_screen("web to show as running", |screen| {
        row(screen, "web").is_some_and(|r| r.get(1).map(String::as_str) == Some("running"))
    });
    let web = row(&screen, "web").unwrap();
    assert_eq!(web[2], old.to_string(), "{screen}");
    for header in ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU%", "MEM"] {
        assert!(screen.contains(header), "no {header} in:\n{screen}");
    }
    assert!(screen.contains("? help"), "{screen}");

    // api comes first; one down is web, and the log pane follows it.
    t.keys("j");
    t.wait_screen("the log pane to follow web", |screen| {
        screen.contains("logs: web") && screen.contains("hello from web")
    });
    t.keys("r");
    let new = wait_for("web to run again with a new pid", PATIENCE, || {
        let st = s.status("web");
        (st.state == State::Running && st.pid.is_some_and(|p| p != old)).then(|| st.pid.unwrap())
    });
    let message = format!("restarted web (pid {new})");
    let screen = t.wait_screen(&message, |screen| screen.contains(&message));
    assert!(screen.contains("logs: web"), "{screen}");
    t.wait_screen("the new pid in the table", |screen| {
        row(screen, "web").is_some_and(|r| r.get(2) == Some(&new.to_string()))
    });

    t.keys("q");
    wait_for("top to quit and its session to end", PATIENCE, || {
        t.ended().then_some(())
    });
    assert_eq!(t.exit_code().as_deref(), Some("0"));
}

#[test]
fn top_waits_for_the_orchestrator_to_come_back() {
    assert!(tmux_available(), "these tests need tmux");
    let mut s = Stack::new();
    s.script("web", QUIET);
    s.up();
    s.wait_state("web", State::Running);
    let t = Tmux::top(&s);
    t.wait_screen("web to show as running", |screen| {
        row(screen, "web").is_some_and(|r| r.get(1).map(String::as_str) == Some("running"))
    });

    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.wait_exit(PATIENCE), Some(0));
    let socket = s.socket.display().to_string();
    t.wait_screen("the orchestrator to be reported gone", |screen| {
        screen.contains(&format!(
            "orchestrator not reachable on {socket} — retrying"
        ))
    });
    assert!(!t.ended(), "top quit when the orchestrator went away");

    s.up();
    let pid = s.wait_state("web", State::Running).pid.unwrap();
    let screen = t.wait_screen("the dashboard to resume", |screen| {
        !screen.contains("not reachable")
            && row(screen, "web").is_some_and(|r| r.get(2) == Some(&pid.to_string()))
    });
    assert!(screen.contains("blackhole top"), "{screen}");

    t.keys("C-c");
    wait_for("top to quit on Ctrl-C", PATIENCE, || {
        t.ended().then_some(())
    });
    assert_eq!(t.exit_code().as_deref(), Some("0"));
}
