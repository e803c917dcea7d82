//! Keys: what each one does in each mode, and the thread that reads them.

use std::time::Instant;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use super::app::{App, Effect, Link, Mode, Tone, Verb};

/// Reads the terminal on its own thread: crossterm's async stream needs a
/// feature this build does not have, and a blocking read must not stall
/// the runtime's only thread. The thread is never joined: it sits in
/// `read()` until the process exits, or stops when nobody listens or the
/// terminal fails (that error is its last message).
pub fn spawn_reader(tx: mpsc::Sender<std::io::Result<TermEvent>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("top-input".into())
        .spawn(move || {
            loop {
                let ev = crossterm::event::read();
                let failed = ev.is_err();
                if tx.blocking_send(ev).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok(())
}

/// The keys, for the help overlay: (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  k j", "select a service (scroll in the full log view)"),
    ("g G", "first, last service"),
    ("s", "start the selected service"),
    ("x", "stop it (asks: y to confirm)"),
    ("r", "restart it"),
    ("R", "reload the configuration"),
    ("/", "filter services by name (Esc clears)"),
    ("Enter", "full-screen log view (Esc back)"),
    ("PgUp PgDn", "scroll the log"),
    ("Home End", "oldest line, follow new lines"),
    ("w", "wrap long log lines"),
    ("t", "show log timestamps (UTC)"),
    ("Ctrl-L", "repaint the screen"),
    ("q  Ctrl-C", "quit"),
];

/// Applies a key to the state; returns what the loop must do about it.
pub fn on_key(app: &mut App, key: KeyEvent, now: Instant) -> Option<Effect> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Effect::Quit);
    }
    if ctrl && key.code == KeyCode::Char('l') {
        return Some(Effect::Repaint);
    }
    match app.mode.clone() {
        Mode::Help => {
            app.mode = Mode::Normal;
            None
        }
        Mode::Confirm(name) => {
            app.mode = Mode::Normal;
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                act(app, Verb::Stop, Some(name), now)
            } else {
                app.say(format!("{name} not stopped"), Tone::Info, now);
                None
            }
        }
        Mode::Filter => {
            filter_key(app, key);
            None
        }
        Mode::Normal => normal_key(app, key, now),
    }
}

fn filter_key(app: &mut App, key: KeyEvent) {
    let ctrl = key
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    match key.code {
        KeyCode::Esc => {
            app.set_filter(String::new());
            app.mode = Mode::Normal;
        }
        KeyCode::Enter => app.mode = Mode::Normal,
        KeyCode::Backspace => {
            let mut f = app.filter.clone();
            f.pop();
            app.set_filter(f);
        }
        KeyCode::Char('u') if ctrl => app.set_filter(String::new()),
        KeyCode::Up => app.select_by(-1),
        KeyCode::Down => app.select_by(1),
        KeyCode::Char(c) if !ctrl => {
            let mut f = app.filter.clone();
            f.push(c);
            app.set_filter(f);
        }
        _ => {}
    }
}

fn normal_key(app: &mut App, key: KeyEvent, now: Instant) -> Option<Effect> {
    if key
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
    {
        return None;
    }
    let full = app.full_log;
    match key.code {
        KeyCode::Char('q') => return Some(Effect::Quit),
        KeyCode::Esc if full => app.full_log = false,
        KeyCode::Esc if !app.filter.is_empty() => app.set_filter(String::new()),
        KeyCode::Esc => {}
        KeyCode::Char('?') | KeyCode::F(1) => app.mode = Mode::Help,
        KeyCode::Char('/') => app.mode = Mode::Filter,
        KeyCode::Enter => app.full_log = !full,
        KeyCode::Up | KeyCode::Char('k') if full => app.scroll_log(1),
        KeyCode::Down | KeyCode::Char('j') if full => app.scroll_log(-1),
        KeyCode::Up | KeyCode::Char('k') => app.select_by(-1),
        KeyCode::Down | KeyCode::Char('j') => app.select_by(1),
        KeyCode::Char('g') if full => app.scroll_log(isize::MAX),
        KeyCode::Char('G') if full => app.scroll_log(isize::MIN),
        KeyCode::Char('g') => app.select_edge(false),
        KeyCode::Char('G') => app.select_edge(true),
        KeyCode::PageUp => app.scroll_log(app.page()),
        KeyCode::PageDown => app.scroll_log(-app.page()),
        KeyCode::Home => app.scroll_log(isize::MAX),
        KeyCode::End => app.scroll_log(isize::MIN),
        KeyCode::Char('w') => app.wrap = !app.wrap,
        KeyCode::Char('t') => app.timestamps = !app.timestamps,
        KeyCode::Char('s') => return act(app, Verb::Start, app.selected.clone(), now),
        KeyCode::Char('r') => return act(app, Verb::Restart, app.selected.clone(), now),
        KeyCode::Char('x') => {
            if let Some(name) = reachable_target(app, app.selected.clone(), now) {
                app.mode = Mode::Confirm(name);
            }
        }
        KeyCode::Char('R') => {
            if !app.is_up() {
                unreachable(app, now);
            } else if app.reloading {
                app.say("a reload is already running".into(), Tone::Info, now);
            } else {
                app.reload_started();
                return Some(Effect::Reload);
            }
        }
        _ => {}
    }
    None
}

/// The service an action applies to, or why there is none (said in the
/// status line).
fn reachable_target(app: &mut App, name: Option<String>, now: Instant) -> Option<String> {
    let Some(name) = name else {
        app.say("no service selected".into(), Tone::Bad, now);
        return None;
    };
    if !app.is_up() {
        unreachable(app, now);
        return None;
    }
    if let Some(verb) = app.busy.get(&name) {
        let text = format!("{name} is busy: {} in progress", verb.as_str());
        app.say(text, Tone::Info, now);
        return None;
    }
    Some(name)
}

fn act(app: &mut App, verb: Verb, name: Option<String>, now: Instant) -> Option<Effect> {
    let name = reachable_target(app, name, now)?;
    app.action_started(verb, &name);
    Some(Effect::Act(verb, name))
}

fn unreachable(app: &mut App, now: Instant) {
    let text = match &app.link {
        Link::Connecting => "not connected yet".to_string(),
        _ => "the orchestrator is not reachable".to_string(),
    };
    app.say(text, Tone::Bad, now);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use blackhole_api::State;

    use super::*;
    use crate::commands::top::app::tests::status;

    fn press(app: &mut App, code: KeyCode) -> Option<Effect> {
        on_key(app, KeyEvent::new(code, KeyModifiers::NONE), Instant::now())
    }

    fn app() -> App {
        let mut app = App::new("/s".into(), Duration::from_secs(2));
        app.set_services(vec![
            status("api", State::Running),
            status("web", State::Running),
        ]);
        app.link_up();
        app
    }

    #[test]
    fn stop_asks_first() {
        let mut a = app();
        assert_eq!(press(&mut a, KeyCode::Char('x')), None);
        assert_eq!(a.mode, Mode::Confirm("api".into()));
        assert_eq!(press(&mut a, KeyCode::Char('n')), None);
        assert_eq!(a.mode, Mode::Normal);
        assert!(a.busy.is_empty());
        press(&mut a, KeyCode::Char('x'));
        assert_eq!(
            press(&mut a, KeyCode::Char('y')),
            Some(Effect::Act(Verb::Stop, "api".into()))
        );
        assert_eq!(a.busy.get("api"), Some(&Verb::Stop));
        // Busy: a second action on it is refused.
        assert_eq!(press(&mut a, KeyCode::Char('r')), None);
    }

    #[test]
    fn actions_need_the_orchestrator() {
        let mut a = app();
        a.link_down("gone".into());
        assert_eq!(press(&mut a, KeyCode::Char('r')), None);
        assert_eq!(press(&mut a, KeyCode::Char('R')), None);
        assert_eq!(
            a.flash.as_ref().unwrap().text,
            "the orchestrator is not reachable"
        );
        a.link_up();
        assert_eq!(
            press(&mut a, KeyCode::Char('r')),
            Some(Effect::Act(Verb::Restart, "api".into()))
        );
        assert_eq!(press(&mut a, KeyCode::Char('R')), Some(Effect::Reload));
    }

    #[test]
    fn filter_typing_and_escape() {
        let mut a = app();
        press(&mut a, KeyCode::Char('/'));
        press(&mut a, KeyCode::Char('w'));
        press(&mut a, KeyCode::Char('e'));
        assert_eq!(a.filter, "we");
        assert_eq!(a.selected.as_deref(), Some("web"));
        // q is text while typing, not quit.
        assert_eq!(press(&mut a, KeyCode::Char('q')), None);
        press(&mut a, KeyCode::Backspace);
        press(&mut a, KeyCode::Enter);
        assert_eq!(a.mode, Mode::Normal);
        assert_eq!(a.filter, "we");
        press(&mut a, KeyCode::Esc);
        assert_eq!(a.filter, "");
        assert_eq!(press(&mut a, KeyCode::Char('q')), Some(Effect::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        a.mode = Mode::Filter;
        assert_eq!(on_key(&mut a, ctrl_c, Instant::now()), Some(Effect::Quit));
    }

    #[test]
    fn arrows_select_in_the_table_and_scroll_in_the_full_log() {
        let mut a = app();
        press(&mut a, KeyCode::Down);
        assert_eq!(a.selected.as_deref(), Some("web"));
        for i in 0..50 {
            a.push_log(crate::commands::top::app::tests::log(
                "web",
                "stdout",
                &i.to_string(),
            ));
        }
        press(&mut a, KeyCode::Enter);
        assert!(a.full_log);
        press(&mut a, KeyCode::Up);
        assert_eq!(a.log.scroll, 1);
        assert_eq!(a.selected.as_deref(), Some("web"));
        press(&mut a, KeyCode::PageUp);
        assert_eq!(a.log.scroll, 1 + a.page() as usize);
        press(&mut a, KeyCode::End);
        assert_eq!(a.log.scroll, 0);
        press(&mut a, KeyCode::Esc);
        assert!(!a.full_log);
        press(&mut a, KeyCode::Char('?'));
        assert_eq!(a.mode, Mode::Help);
        press(&mut a, KeyCode::Char('q'));
        assert_eq!(a.mode, Mode::Normal);
    }
}
