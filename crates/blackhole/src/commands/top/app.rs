//! The dashboard's state and everything that changes it, without I/O: the
//! loop in `mod.rs` feeds it what arrives, `input.rs` what is typed, and
//! `view.rs` draws it. Times are passed in so tests can pin them.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use blackhole_api::{Event, LogLine, ReloadReport, ServiceStatus, State};

/// Lines asked for when the log pane opens on a service.
pub const LOG_TAIL: usize = 100;
/// Lines kept in the log pane; older ones are dropped.
pub const LOG_KEEP: usize = 5000;
/// A longer line is cut: one runaway line must not make every frame slow.
const LINE_MAX: usize = 8 * 1024;
/// How long an action's result stays in the status line.
pub const FLASH_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }

    pub fn doing(self) -> &'static str {
        match self {
            Verb::Start => "starting",
            Verb::Stop => "stopping",
            Verb::Restart => "restarting",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Verb::Start => "started",
            Verb::Stop => "stopped",
            Verb::Restart => "restarted",
        }
    }
}

/// What a key asks of the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Quit,
    Act(Verb, String),
    Reload,
    /// Draw everything again (something else wrote on the screen).
    Repaint,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing the filter.
    Filter,
    /// Waiting for `y` before stopping this service.
    Confirm(String),
    Help,
}

/// Whether the orchestrator answers, as the event stream tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    Down { why: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Info,
    Good,
    Bad,
}

/// A message in the status line; `until: None` stays until replaced
/// (an action in progress).
#[derive(Clone, Debug)]
pub struct Flash {
    pub text: String,
    pub tone: Tone,
    pub until: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
    Note,
}

#[derive(Clone, Debug)]
pub struct LogEntry {
    /// `HH:MM:SS` (UTC, as the orchestrator stamped it).
    pub time: String,
    pub stream: Stream,
    /// Free of escapes and control characters: safe to draw.
    pub text: String,
}

#[derive(Debug, Default)]
pub struct LogPane {
    /// The service whose stream feeds the pane.
    pub service: Option<String>,
    pub lines: VecDeque<LogEntry>,
    /// Lines between the bottom of the view and the newest line; 0 follows.
    pub scroll: usize,
    /// Why the stream stopped, while it is stopped.
    pub ended: Option<String>,
    /// Whether the stream has answered since it was opened.
    pub open: bool,
}

pub struct App {
    pub socket: String,
    pub interval: Duration,
    /// As the orchestrator lists them: sorted by name.
    pub services: Vec<ServiceStatus>,
    /// By name, so that it survives refreshes that reorder or remove.
    pub selected: Option<String>,
    pub filter: String,
    pub mode: Mode,
    pub log: LogPane,
    pub full_log: bool,
    pub wrap: bool,
    pub timestamps: bool,
    pub flash: Option<Flash>,
    pub link: Link,
    /// Actions in flight, by service.
    pub busy: BTreeMap<String, Verb>,
    pub reloading: bool,
    /// First row of the table on screen; kept between frames so the view
    /// scrolls only when the selection leaves it.
    pub table_offset: usize,
    /// Rows of log text on screen at the last frame (a page for PgUp/PgDn).
    pub log_rows: usize,
}

impl App {
    pub fn new(socket: String, interval: Duration) -> App {
        App {
            socket,
            interval,
            services: Vec::new(),
            selected: None,
            filter: String::new(),
            mode: Mode::Normal,
            log: LogPane::default(),
            full_log: false,
            wrap: false,
            timestamps: false,
            flash: None,
            link: Link::Connecting,
            busy: BTreeMap::new(),
            reloading: false,
            table_offset: 0,
            log_rows: 10,
        }
    }

    /// The services the filter lets through, in table order.
    pub fn visible(&self) -> Vec<&ServiceStatus> {
        let needle = self.filter.to_lowercase();
        self.services
            .iter()
            .filter(|s| needle.is_empty() || s.name.to_lowercase().contains(&needle))
            .collect()
    }

    /// Where the selection is among the visible rows.
    pub fn selected_index(&self) -> Option<usize> {
        let name = self.selected.as_deref()?;
        self.visible().iter().position(|s| s.name == name)
    }

    pub fn set_services(&mut self, services: Vec<ServiceStatus>) {
        let old = self.selected_index();
        self.services = services;
        self.fix_selection(old);
    }

    /// Keeps the selection on a visible row: the same service if it is
    /// still there, else the one that took its place.
    fn fix_selection(&mut self, old_index: Option<usize>) {
        let visible: Vec<String> = self.visible().iter().map(|s| s.name.clone()).collect();
        if let Some(sel) = &self.selected
            && visible.contains(sel)
        {
            return;
        }
        self.selected = match visible.len() {
            0 => None,
            n => Some(visible[old_index.unwrap_or(0).min(n - 1)].clone()),
        };
    }

    /// Moves the selection by `delta` rows, stopping at the ends.
    pub fn select_by(&mut self, delta: isize) {
        let visible: Vec<String> = self.visible().iter().map(|s| s.name.clone()).collect();
        if visible.is_empty() {
            return;
        }
        let i = match self.selected_index() {
            Some(i) => i.saturating_add_signed(delta).min(visible.len() - 1),
            None => 0,
        };
        self.selected = Some(visible[i].clone());
    }

    pub fn select_edge(&mut self, last: bool) {
        let visible: Vec<String> = self.visible().iter().map(|s| s.name.clone()).collect();
        let pick = if last {
            visible.last()
        } else {
            visible.first()
        };
        self.selected = pick.cloned();
    }

    pub fn set_filter(&mut self, filter: String) {
        let old = self.selected_index();
        self.filter = filter;
        self.table_offset = 0;
        self.fix_selection(old);
    }

    /// Applies a state change at once, so the table moves with the events;
    /// the caller refetches for the rest (uptime, readiness, usage).
    pub fn apply_event(&mut self, e: &Event, now: Instant) {
        match e.kind.as_str() {
            "state" => {
                let Some(to) = e.to else { return };
                let Some(s) = self.services.iter_mut().find(|s| s.name == e.service) else {
                    return;
                };
                s.state = to;
                if e.pid.is_some() {
                    s.pid = e.pid;
                } else if !to.has_process() {
                    s.pid = None;
                    s.uptime_secs = None;
                    s.usage = None;
                    s.ready = false;
                }
            }
            "orchestrator" if !e.message.is_empty() => {
                self.say(format!("orchestrator: {}", e.message), Tone::Info, now);
            }
            _ => {}
        }
    }

    /// Starts a new pane for `service`: the stream replays its tail.
    pub fn open_log(&mut self, service: Option<String>) {
        self.log = LogPane {
            service,
            ..LogPane::default()
        };
    }

    /// The stream for the pane stopped; its lines stay readable.
    pub fn log_ended(&mut self, why: String) {
        self.log.ended = Some(why);
        self.log.open = false;
    }

    pub fn push_log(&mut self, line: LogLine) {
        self.log.open = true;
        let stream = match line.stream.as_str() {
            "stderr" => Stream::Err,
            "blackhole" => Stream::Note,
            _ => Stream::Out,
        };
        let mut text = sanitize(&line.line);
        if text.len() > LINE_MAX {
            let mut cut = LINE_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let time = line.time.get(11..19).unwrap_or_default().to_string();
        self.log.lines.push_back(LogEntry { time, stream, text });
        if self.log.lines.len() > LOG_KEEP {
            self.log.lines.pop_front();
        }
        if self.log.scroll > 0 {
            // Scrolled back: the view stays on the same lines.
            self.log.scroll += 1;
        }
        self.log.scroll = self.log.scroll.min(self.log.lines.len().saturating_sub(1));
    }

    /// Scrolls the log pane; positive goes back in time.
    pub fn scroll_log(&mut self, delta: isize) {
        let max = self.log.lines.len().saturating_sub(1);
        self.log.scroll = self.log.scroll.saturating_add_signed(delta).min(max);
    }

    pub fn page(&self) -> isize {
        self.log_rows.saturating_sub(1).max(1) as isize
    }

    pub fn say(&mut self, text: String, tone: Tone, now: Instant) {
        self.flash = Some(Flash {
            text,
            tone,
            until: Some(now + FLASH_FOR),
        });
    }

    /// When the status line next changes by itself.
    pub fn deadline(&self) -> Option<Instant> {
        self.flash.as_ref()?.until
    }

    /// Clears a message whose time is up; true if the screen changed.
    pub fn expire(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|t| t <= now) {
            self.flash = None;
            return true;
        }
        false
    }

    pub fn action_started(&mut self, verb: Verb, name: &str) {
        self.busy.insert(name.to_string(), verb);
        self.flash = Some(Flash {
            text: format!("{} {name}…", verb.doing()),
            tone: Tone::Info,
            until: None,
        });
    }

    pub fn action_done(
        &mut self,
        verb: Verb,
        name: &str,
        result: Result<ServiceStatus, String>,
        now: Instant,
    ) {
        self.busy.remove(name);
        match result {
            Ok(s) => {
                let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                let expected = match verb {
                    Verb::Stop => State::Stopped,
                    Verb::Start | Verb::Restart => State::Running,
                };
                let state = if s.state == expected {
                    String::new()
                } else {
                    format!(", now {}", s.state)
                };
                let text = format!("{} {name}{pid}{state}", verb.done());
                if let Some(row) = self.services.iter_mut().find(|r| r.name == s.name) {
                    *row = s;
                }
                self.say(text, Tone::Good, now);
            }
            Err(e) => self.say(format!("{} {name}: {e}", verb.as_str()), Tone::Bad, now),
        }
    }

    pub fn reload_started(&mut self) {
        self.reloading = true;
        self.flash = Some(Flash {
            text: "reloading the configuration…".into(),
            tone: Tone::Info,
            until: None,
        });
    }

    pub fn reload_done(&mut self, result: Result<ReloadReport, String>, now: Instant) {
        self.reloading = false;
        match result {
            Ok(r) => {
                let mut parts = Vec::new();
                for (label, names) in [
                    ("started", &r.started),
                    ("stopped", &r.stopped),
                    ("restarted", &r.restarted),
                    ("updated", &r.updated),
                ] {
                    if !names.is_empty() {
                        parts.push(format!("{label} {}", names.join(", ")));
                    }
                }
                let mut text = if parts.is_empty() {
                    "reloaded: nothing changed".to_string()
                } else {
                    format!("reloaded: {}", parts.join("; "))
                };
                if !r.warnings.is_empty() {
                    text.push_str(&format!(" ({} warnings)", r.warnings.len()));
                }
                self.say(text, Tone::Good, now);
            }
            Err(e) => self.say(format!("reload refused: {e}"), Tone::Bad, now),
        }
    }

    pub fn link_up(&mut self) {
        self.link = Link::Up;
    }

    pub fn link_down(&mut self, why: String) {
        self.link = Link::Down { why };
    }

    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// The service whose logs should stream now.
    pub fn wanted_log(&self) -> Option<&str> {
        if self.is_up() {
            self.selected.as_deref()
        } else {
            None
        }
    }
}

/// Text as it can be drawn: escape sequences (colours, cursor moves,
/// titles) and control characters removed, tabs expanded. A service's
/// colours would otherwise reach the terminal raw and wreck the screen.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut col = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC and the other strings end with BEL or ESC \.
                Some(']' | 'P' | '_' | '^' | 'X') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // Character set designations take one more byte.
                Some('(' | ')' | '*' | '+' | '-' | '.' | '/' | '#' | '%') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

/// A message on one line: the API's errors carry details on more.
pub fn one_line(s: &str) -> String {
    sanitize(
        &s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn status(name: &str, state: State) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            enabled: true,
            pid: None,
            restarts: 0,
            since: "2026-01-01T00:00:00.000Z".into(),
            uptime_secs: None,
            last_exit: None,
            last_error: None,
            ready: false,
            kind: "simple".into(),
            next_start_secs: None,
            blocked_on: None,
            failures: 0,
            binary: String::new(),
            readiness: None,
            liveness: None,
            status_text: None,
            main_pid: None,
            environment: None,
            usage: None,
        }
    }

    pub fn log(service: &str, stream: &str, line: &str) -> LogLine {
        LogLine {
            time: "2026-01-01T12:34:56.789Z".into(),
            service: service.into(),
            stream: stream.into(),
            pid: Some(1),
            line: line.into(),
        }
    }

    fn app(names: &[&str]) -> App {
        let mut app = App::new("/tmp/s.sock".into(), Duration::from_secs(2));
        app.set_services(names.iter().map(|n| status(n, State::Running)).collect());
        app
    }

    #[test]
    fn selection_follows_the_name_across_refreshes() {
        let mut a = app(&["api", "db", "web"]);
        assert_eq!(a.selected.as_deref(), Some("api"));
        a.select_by(1);
        assert_eq!(a.selected.as_deref(), Some("db"));
        // A new service sorts before it: still db.
        a.set_services(
            ["aaa", "api", "db", "web"]
                .iter()
                .map(|n| status(n, State::Running))
                .collect(),
        );
        assert_eq!(a.selected.as_deref(), Some("db"));
        // db goes: the row that takes its place is selected.
        a.set_services(
            ["aaa", "api", "web"]
                .iter()
                .map(|n| status(n, State::Running))
                .collect(),
        );
        assert_eq!(a.selected.as_deref(), Some("web"));
        a.select_by(10);
        assert_eq!(a.selected.as_deref(), Some("web"));
        a.select_by(-10);
        assert_eq!(a.selected.as_deref(), Some("aaa"));
    }

    #[test]
    fn the_filter_keeps_the_selection_visible() {
        let mut a = app(&["api", "db", "web", "worker"]);
        a.set_filter("W".into());
        assert_eq!(
            a.visible().iter().map(|s| &s.name[..]).collect::<Vec<_>>(),
            ["web", "worker"]
        );
        assert_eq!(a.selected.as_deref(), Some("web"));
        a.set_filter("zzz".into());
        assert_eq!(a.selected, None);
        a.set_filter(String::new());
        assert_eq!(a.selected.as_deref(), Some("api"));
    }

    #[test]
    fn events_change_the_table_at_once() {
        let mut a = app(&["web"]);
        a.services[0].pid = Some(10);
        a.services[0].uptime_secs = Some(5);
        let e = |to, pid| Event {
            seq: 1,
            time: String::new(),
            service: "web".into(),
            kind: "state".into(),
            from: None,
            to: Some(to),
            pid,
            message: String::new(),
        };
        let now = Instant::now();
        a.apply_event(&e(State::Restarting, None), now);
        assert_eq!(a.services[0].state, State::Restarting);
        assert_eq!(a.services[0].pid, None);
        assert_eq!(a.services[0].uptime_secs, None);
        a.apply_event(&e(State::Starting, Some(11)), now);
        assert_eq!(a.services[0].pid, Some(11));
    }

    #[test]
    fn scrolled_back_log_stays_put_and_is_bounded() {
        let mut a = app(&["web"]);
        for i in 0..10 {
            a.push_log(log("web", "stdout", &format!("line {i}")));
        }
        a.scroll_log(3);
        a.push_log(log("web", "stdout", "new"));
        assert_eq!(a.log.scroll, 4);
        a.scroll_log(-100);
        assert_eq!(a.log.scroll, 0);
        a.scroll_log(100);
        assert_eq!(a.log.scroll, 10);
        for i in 0..LOG_KEEP + 10 {
            a.push_log(log("web", "stdout", &format!("more {i}")));
        }
        assert_eq!(a.log.lines.len(), LOG_KEEP);
        assert!(a.log.scroll < LOG_KEEP);
    }

    #[test]
    fn sanitize_removes_what_would_reach_the_terminal_raw() {
        assert_eq!(sanitize("\x1b[1;31mred\x1b[0m plain"), "red plain");
        assert_eq!(sanitize("\x1b]0;title\x07after"), "after");
        assert_eq!(sanitize("\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(sanitize("a\tb"), "a       b");
        assert_eq!(sanitize("cr\rlf\nbell\x07"), "crlfbell");
        assert_eq!(sanitize("\x1b(Bok"), "ok");
        assert_eq!(sanitize("ünïcödé ✓"), "ünïcödé ✓");
        assert_eq!(
            one_line("bad config\n  a.toml:1: x\n"),
            "bad config; a.toml:1: x"
        );
    }

    #[test]
    fn actions_report_their_outcome() {
        let mut a = app(&["web"]);
        let now = Instant::now();
        a.action_started(Verb::Restart, "web");
        assert_eq!(a.busy.get("web"), Some(&Verb::Restart));
        assert_eq!(a.deadline(), None);
        let mut s = status("web", State::Running);
        s.pid = Some(123);
        a.action_done(Verb::Restart, "web", Ok(s), now);
        assert!(a.busy.is_empty());
        assert_eq!(a.flash.as_ref().unwrap().text, "restarted web (pid 123)");
        assert_eq!(a.services[0].pid, Some(123));
        assert!(!a.expire(now));
        assert!(a.expire(now + FLASH_FOR));
        assert!(a.flash.is_none());
        a.action_done(Verb::Start, "web", Err("no such service".into()), now);
        assert_eq!(a.flash.as_ref().unwrap().text, "start web: no such service");
        assert_eq!(a.flash.as_ref().unwrap().tone, Tone::Bad);
    }
}
