//! Drawing the state: a title bar, the table, the log pane, a status line
//! and a help line. Everything fits any size; columns go when narrow.

use blackhole_api::{ServiceStatus, State, Usage};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table};

use super::app::{App, LogEntry, Mode, Stream, Tone, Verb};
use super::input::KEYS;
use crate::render;

/// Room between columns; a narrow terminal gets one space.
fn spacing(width: u16) -> u16 {
    if width >= 100 { 2 } else { 1 }
}
/// Below this, the note column is not worth its place.
const NOTE_MIN: u16 = 10;
/// The log pane keeps this many rows when services fill the screen.
const LOG_MIN: u16 = 10;

pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    if area.is_empty() {
        return;
    }
    let [top, body, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(status_height(app, area.width)),
        Constraint::Length(1),
    ])
    .areas(area);
    title_bar(frame, top, app);
    if app.full_log {
        log_pane(frame, body, app);
    } else {
        let rows = app.visible().len().max(1) as u16 + 1;
        let cap = (body.height / 2).max(body.height.saturating_sub(LOG_MIN));
        let [table_area, log_area] =
            Layout::vertical([Constraint::Length(rows.min(cap)), Constraint::Fill(1)]).areas(body);
        table(frame, table_area, app);
        log_pane(frame, log_area, app);
    }
    status_line(frame, status, app);
    help_line(frame, help, app);
    if app.mode == Mode::Help {
        help_overlay(frame, area);
    }
}

pub fn state_style(s: State) -> Style {
    match s {
        State::Running => Style::new().fg(Color::Green),
        State::Failed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        State::Restarting | State::Blocked => Style::new().fg(Color::Yellow),
        State::Starting | State::Stopping => Style::new().fg(Color::Blue),
        State::Exited => Style::new().fg(Color::Cyan),
        State::Stopped => Style::new().add_modifier(Modifier::DIM),
    }
}

fn tone_style(t: Tone) -> Style {
    match t {
        Tone::Info => Style::new(),
        Tone::Good => Style::new().fg(Color::Green),
        Tone::Bad => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

fn title_bar(frame: &mut Frame, area: Rect, app: &App) {
    use super::app::Link;
    let line = match &app.link {
        Link::Down { why } => Line::from(format!(
            " orchestrator not reachable on {} — retrying ({why})",
            app.socket
        ))
        .style(Style::new().fg(Color::White).bg(Color::Red).bold()),
        Link::Connecting => Line::from(format!(" connecting to {}…", app.socket))
            .style(Style::new().fg(Color::Yellow)),
        Link::Up => {
            let mut spans = vec![
                Span::from(" blackhole top ").bold(),
                Span::from(match app.services.len() {
                    1 => " 1 service".to_string(),
                    n => format!(" {n} services"),
                }),
            ];
            let mut room = (area.width as usize).saturating_sub(Line::from(spans.clone()).width());
            let mut first = true;
            // Most telling first: the end may not fit.
            for state in [
                State::Running,
                State::Failed,
                State::Restarting,
                State::Starting,
                State::Blocked,
                State::Stopping,
                State::Exited,
                State::Stopped,
            ] {
                let n = app.services.iter().filter(|s| s.state == state).count();
                if n > 0 {
                    let count = format!("{n} {state}");
                    // A count is shown whole or not at all.
                    if count.len() + 2 > room {
                        break;
                    }
                    room -= count.len() + 2;
                    spans.push(Span::from(if first { ": " } else { ", " }));
                    spans.push(Span::styled(count, state_style(state)));
                    first = false;
                }
            }
            Line::from(spans)
        }
    };
    if matches!(app.link, Link::Down { .. }) {
        // The whole bar, so that it cannot be missed.
        frame.render_widget(
            Paragraph::new(line).style(Style::new().bg(Color::Red)),
            area,
        );
        return;
    }
    let right = format!("every {} ", humantime::format_duration(app.interval));
    let right_w = right.len() as u16;
    if area.width > line.width() as u16 + right_w + 2 {
        let [l, r] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_w)]).areas(area);
        frame.render_widget(Paragraph::new(line), l);
        frame.render_widget(Paragraph::new(right).dim(), r);
    } else {
        frame.render_widget(Paragraph::new(line), area);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    Name,
    State,
    Pid,
    Uptime,
    Restarts,
    Cpu,
    Mem,
    Ready,
    Note,
}

impl Col {
    const ALL: [Col; 9] = [
        Col::Name,
        Col::State,
        Col::Pid,
        Col::Uptime,
        Col::Restarts,
        Col::Cpu,
        Col::Mem,
        Col::Ready,
        Col::Note,
    ];
    /// What goes first when the terminal is narrow.
    const DROP: [Col; 7] = [
        Col::Note,
        Col::Ready,
        Col::Mem,
        Col::Cpu,
        Col::Restarts,
        Col::Uptime,
        Col::Pid,
    ];

    fn header(self) -> &'static str {
        match self {
            Col::Name => "NAME",
            Col::State => "STATE",
            Col::Pid => "PID",
            Col::Uptime => "UPTIME",
            Col::Restarts => "RESTARTS",
            Col::Cpu => "CPU%",
            Col::Mem => "MEM",
            Col::Ready => "READY",
            Col::Note => "NOTE",
        }
    }
}

pub fn cpu(u: Option<&Usage>) -> String {
    u.map(|u| format!("{:.1}", u.cpu_percent))
        .unwrap_or_else(|| "-".into())
}

pub fn mem(u: Option<&Usage>) -> String {
    u.map(|u| render::bytes(u.memory_bytes))
        .unwrap_or_else(|| "-".into())
}

fn ready(s: &ServiceStatus) -> Span<'static> {
    if s.ready {
        Span::styled("✓", Style::new().fg(Color::Green))
    } else if s.state.has_process() {
        Span::styled("✗", Style::new().fg(Color::Red))
    } else {
        Span::from("-").dim()
    }
}

/// What a row needs to say beyond the numbers: an action in flight, what
/// it waits for, why it stopped, what it last said.
pub fn note(s: &ServiceStatus, busy: Option<Verb>) -> String {
    if let Some(v) = busy {
        return format!("{}…", v.doing());
    }
    let error = || {
        s.last_error
            .clone()
            .or_else(|| s.last_exit.as_ref().map(|e| e.message.clone()))
    };
    let failing = |p: &Option<blackhole_api::ProbeStatus>, what: &str| {
        p.as_ref()
            .filter(|p| !p.ok && !p.message.is_empty())
            .map(|p| format!("{what}: {}", p.message))
    };
    let text = match s.state {
        State::Blocked => s.blocked_on.as_ref().map(|b| format!("waiting for {b}")),
        State::Restarting => {
            let when = s
                .next_start_secs
                .map(|t| format!("next start in {t:.1}s"))
                .unwrap_or_else(|| "next start soon".into());
            Some(match error() {
                Some(e) => format!("{when} ({e})"),
                None => when,
            })
        }
        State::Failed | State::Exited => error(),
        State::Starting | State::Running | State::Stopping => failing(&s.liveness, "liveness")
            .or_else(|| failing(&s.readiness, "readiness"))
            .or_else(|| s.status_text.clone()),
        State::Stopped if !s.enabled => Some("disabled".into()),
        State::Stopped => None,
    };
    super::app::one_line(&text.unwrap_or_default())
}

fn cell_text(c: Col, s: &ServiceStatus) -> String {
    match c {
        Col::Name => s.name.clone(),
        Col::State => s.state.to_string(),
        Col::Pid => s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        Col::Uptime => s
            .uptime_secs
            .map(render::duration)
            .unwrap_or_else(|| "-".into()),
        Col::Restarts => s.restarts.to_string(),
        Col::Cpu => cpu(s.usage.as_ref()),
        Col::Mem => mem(s.usage.as_ref()),
        Col::Ready | Col::Note => String::new(),
    }
}

/// The columns that fit in `width`, each with its width (the note takes
/// what is left).
pub fn columns(width: u16, rows: &[&ServiceStatus]) -> Vec<(Col, u16)> {
    let content = |c: Col, cap: u16| {
        let longest = rows
            .iter()
            .map(|s| Span::from(cell_text(c, s)).width())
            .max()
            .unwrap_or(0) as u16;
        longest.max(c.header().len() as u16).min(cap)
    };
    let mut cols: Vec<(Col, u16)> = Col::ALL
        .iter()
        .map(|&c| {
            let w = match c {
                Col::Name => content(c, 24),
                Col::Ready => 5,
                Col::Note => NOTE_MIN,
                _ => content(c, 12),
            };
            (c, w)
        })
        .collect();
    let need = |cols: &[(Col, u16)]| {
        cols.iter().map(|(_, w)| w).sum::<u16>() + spacing(width) * (cols.len() as u16 - 1)
    };
    for drop in Col::DROP {
        if need(&cols) <= width {
            break;
        }
        cols.retain(|(c, _)| *c != drop);
    }
    let over = need(&cols).saturating_sub(width);
    if over > 0 {
        // Only NAME and STATE are left: the name gives way.
        cols[0].1 = cols[0].1.saturating_sub(over).max(4);
    }
    cols
}

fn table(frame: &mut Frame, area: Rect, app: &mut App) {
    if area.is_empty() {
        return;
    }
    let stale = !app.is_up();
    let selected = app.selected_index();
    let visible = app.visible();
    let cols = columns(area.width, &visible);
    let header = Row::new(cols.iter().map(|(c, _)| Cell::from(c.header())))
        .style(Style::new().bold().add_modifier(Modifier::UNDERLINED));
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|(c, w)| match c {
            Col::Note => Constraint::Fill(1),
            _ => Constraint::Length(*w),
        })
        .collect();
    let height = area.height.saturating_sub(1) as usize;
    // Scroll only as far as needed to keep the selection in view.
    let mut offset = app.table_offset;
    if let Some(sel) = selected {
        if sel < offset {
            offset = sel;
        } else if height > 0 && sel >= offset + height {
            offset = sel + 1 - height;
        }
    }
    offset = offset.min(visible.len().saturating_sub(height));
    let mut rows: Vec<Row> = Vec::new();
    for (i, s) in visible.iter().enumerate().skip(offset).take(height) {
        let busy = app.busy.get(&s.name).copied();
        let cells = cols.iter().map(|(c, _)| match c {
            Col::State => Cell::from(Span::styled(s.state.to_string(), state_style(s.state))),
            Col::Name if !s.enabled => Cell::from(Span::from(s.name.clone()).dim()),
            Col::Name => Cell::from(Span::from(s.name.clone()).bold()),
            Col::Ready => Cell::from(ready(s)),
            Col::Note => Cell::from(Span::from(note(s, busy)).dim()),
            Col::Cpu | Col::Mem if s.usage.is_none() => {
                Cell::from(Span::from(cell_text(*c, s)).dim())
            }
            _ => Cell::from(cell_text(*c, s)),
        });
        let mut style = Style::new();
        if stale {
            style = style.add_modifier(Modifier::DIM);
        }
        if Some(i) == selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        rows.push(Row::new(cells).style(style));
    }
    let empty = visible.is_empty();
    let total = visible.len();
    drop(visible);
    app.table_offset = offset;
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(spacing(area.width)),
        area,
    );
    if height > 0 && height < total {
        // Say which rows are on screen, where the header has room.
        let shown = (offset + height).min(total);
        let text = format!(" {}-{shown} of {total} ", offset + 1);
        let used: u16 = cols
            .iter()
            .map(|(c, w)| if *c == Col::Note { 4 } else { *w })
            .sum::<u16>()
            + spacing(area.width) * (cols.len() as u16 - 1);
        let w = text.len() as u16;
        if area.width > used + w {
            let at = Rect {
                x: area.right() - w,
                width: w,
                height: 1,
                ..area
            };
            frame.render_widget(Paragraph::new(text).dim(), at);
        }
    }
    if empty && area.height > 1 {
        let text = if app.filter.is_empty() {
            "no services".to_string()
        } else {
            format!("no service matches “{}”", app.filter)
        };
        let row = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        frame.render_widget(Paragraph::new(format!(" {text}")).dim(), row);
    }
}

fn entry_line(e: &LogEntry, timestamps: bool) -> Line<'static> {
    let style = match e.stream {
        Stream::Out => Style::new(),
        Stream::Err => Style::new().fg(Color::LightRed),
        Stream::Note => Style::new().fg(Color::Cyan).add_modifier(Modifier::ITALIC),
    };
    let mut spans = Vec::with_capacity(2);
    if timestamps {
        spans.push(Span::from(format!("{} ", e.time)).dim());
    }
    spans.push(Span::styled(e.text.clone(), style));
    Line::from(spans)
}

/// Cuts a line into rows of `width` columns, by character rather than by
/// word: the pane is filled from the bottom up, which needs to know
/// exactly how many rows each line takes.
fn wrap(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    let mut rows = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for span in &line.spans {
        let mut piece = String::new();
        for g in span.styled_graphemes(Style::new()) {
            let w = Span::from(g.symbol).width();
            if used + w > width && used > 0 {
                if !piece.is_empty() {
                    row.push(Span::styled(std::mem::take(&mut piece), span.style));
                }
                rows.push(Line::from(std::mem::take(&mut row)));
                used = 0;
            }
            piece.push_str(g.symbol);
            used += w;
        }
        if !piece.is_empty() {
            row.push(Span::styled(piece, span.style));
        }
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(Line::from(row));
    }
    rows
}

/// The rows on screen: the newest lines that fit above the scroll point.
fn log_rows(app: &App, width: u16, height: u16) -> Vec<Line<'static>> {
    let (width, height) = (width as usize, height as usize);
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let log = &app.log;
    let mut rows: Vec<Line<'static>> = Vec::new();
    if log.scroll == 0
        && let Some(why) = &log.ended
    {
        rows.push(Line::from(format!("— {why} —")).dim());
    }
    let end = log.lines.len().saturating_sub(log.scroll);
    for e in log.lines.range(..end).rev() {
        let line = entry_line(e, app.timestamps);
        if app.wrap {
            rows.extend(wrap(line, width).into_iter().rev());
        } else {
            rows.push(line);
        }
        if rows.len() >= height {
            break;
        }
    }
    if log.lines.is_empty() && log.ended.is_none() {
        let text = match &log.service {
            None if app.is_up() => "no service selected",
            None => "logs resume when the orchestrator is back",
            Some(_) if log.open => "no output yet",
            Some(_) => "waiting for output…",
        };
        rows.push(Line::from(text).dim());
    }
    rows.truncate(height);
    rows.reverse();
    rows
}

fn log_pane(frame: &mut Frame, area: Rect, app: &mut App) {
    if area.is_empty() {
        return;
    }
    let name = app
        .log
        .service
        .as_deref()
        .or(app.selected.as_deref())
        .unwrap_or("-");
    let mut right = Vec::new();
    if app.wrap {
        right.push("wrap".to_string());
    }
    if app.log.scroll > 0 {
        right.push(format!(
            "{} newer lines below · End follows",
            app.log.scroll
        ));
    } else if app.log.ended.is_none() && app.log.service.is_some() {
        right.push("following".to_string());
    }
    let right = if right.is_empty() {
        String::new()
    } else {
        format!(" {} ", right.join(" · "))
    };
    let block = Block::new()
        .borders(Borders::TOP)
        .border_style(Style::new().dim())
        .title(Line::from(format!(" logs: {name} ")).bold().not_dim())
        .title(Line::from(right).right_aligned().not_dim());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    app.log_rows = inner.height as usize;
    let rows = log_rows(app, inner.width, inner.height);
    frame.render_widget(Paragraph::new(rows), inner);
}

fn status_line(frame: &mut Frame, area: Rect, app: &App) {
    let line = match &app.mode {
        Mode::Confirm(name) => Line::from(vec![
            Span::styled(
                format!(" stop {name}? "),
                Style::new().fg(Color::Yellow).bold(),
            ),
            Span::from("y to confirm, any other key cancels"),
        ]),
        Mode::Filter => {
            let line = Line::from(vec![
                Span::from(" filter: /").bold(),
                Span::from(app.filter.clone()),
            ]);
            let x = area.x + line.width() as u16;
            if x < area.right() {
                frame.set_cursor_position((x, area.y));
            }
            let hint = "  Enter keeps · Esc clears";
            let mut spans = line.spans;
            spans.push(Span::from(hint).dim());
            Line::from(spans)
        }
        _ => match flash_rows(app, area.width) {
            Some(rows) => {
                frame.render_widget(Paragraph::new(rows), area);
                return;
            }
            None if !app.filter.is_empty() => Line::from(vec![
                Span::from(" filter: /").dim(),
                Span::from(app.filter.clone()).bold(),
                Span::from("  (/ edits, Esc clears)").dim(),
            ]),
            None => Line::default(),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The status message, wrapped: an error's useful part is often at its end
/// (the file and line of a bad setting).
fn flash_rows(app: &App, width: u16) -> Option<Vec<Line<'static>>> {
    let f = app.flash.as_ref()?;
    let line = Line::from(Span::styled(format!(" {}", f.text), tone_style(f.tone)));
    Some(wrap(line, width.max(1) as usize))
}

/// Rows for the status line: a long message takes up to three.
fn status_height(app: &App, width: u16) -> u16 {
    match app.mode {
        Mode::Normal | Mode::Help => {
            flash_rows(app, width).map_or(1, |r| r.len().clamp(1, 3) as u16)
        }
        Mode::Filter | Mode::Confirm(_) => 1,
    }
}

/// The key hints that fit, most important first; `? help` always shows.
fn help_line(frame: &mut Frame, area: Rect, app: &App) {
    let items: &[(&str, &str)] = if app.full_log {
        &[
            ("q", "quit"),
            ("⏎/Esc", "back"),
            ("↑↓", "scroll"),
            ("PgUp/PgDn", "page"),
            ("End", "follow"),
            ("w", "wrap"),
            ("t", "time"),
            ("r", "restart"),
        ]
    } else {
        &[
            ("q", "quit"),
            ("↑↓", "move"),
            ("s", "start"),
            ("x", "stop"),
            ("r", "restart"),
            ("R", "reload"),
            ("/", "filter"),
            ("⏎", "logs"),
            ("PgUp/PgDn", "scroll"),
            ("w", "wrap"),
            ("t", "time"),
        ]
    };
    let key = Style::new().fg(Color::Cyan).bold();
    let width = |(k, d): &(&str, &str)| Span::from(*k).width() + 1 + d.len();
    let last = ("?", "help");
    let mut budget = (area.width as usize).saturating_sub(width(&last));
    let mut spans = Vec::new();
    for item in items {
        let w = width(item) + 2;
        if w > budget {
            break;
        }
        budget -= w;
        spans.push(Span::styled(item.0, key));
        spans.push(Span::from(format!(" {}  ", item.1)));
    }
    spans.push(Span::styled(last.0, key));
    spans.push(Span::from(format!(" {}", last.1)));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn help_overlay(frame: &mut Frame, area: Rect) {
    let key_w = KEYS
        .iter()
        .map(|(k, _)| Span::from(*k).width())
        .max()
        .unwrap_or(0);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<key_w$}  "),
                    Style::new().fg(Color::Cyan).bold(),
                ),
                Span::from(*d),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.push(Line::from(" any key closes this").dim());
    let w = (lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 3).min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use blackhole_api::{LastExit, Usage};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::commands::top::app::tests::{log, status};
    use crate::commands::top::app::{App, Tone, Verb};

    fn usage(cpu: f64, mem: u64) -> Option<Usage> {
        Some(Usage {
            cpu_percent: cpu,
            cpu_seconds: 1.0,
            memory_bytes: mem,
            processes: 1,
            fds: 4,
            sampled_at: String::new(),
        })
    }

    /// Four services in different states, `web` selected, a few log lines.
    fn sample() -> App {
        let mut app = App::new(
            "/srv/app/.blackhole/control.sock".into(),
            Duration::from_secs(2),
        );
        let mut web = status("web", State::Running);
        web.pid = Some(4242);
        web.uptime_secs = Some(307);
        web.restarts = 2;
        web.ready = true;
        web.usage = usage(12.5, 12_897_485);
        let mut api = status("api", State::Running);
        api.pid = Some(4100);
        api.uptime_secs = Some(7980);
        api.ready = true;
        api.usage = usage(0.3, 48 * 1024 * 1024);
        let mut db = status("db", State::Failed);
        db.restarts = 5;
        db.last_exit = Some(LastExit {
            code: Some(1),
            signal: None,
            reason: "exited".into(),
            message: "exited with code 1".into(),
            at: None,
        });
        db.last_error = Some("exited with code 1".into());
        let mut queue = status("queue", State::Restarting);
        queue.next_start_secs = Some(3.2);
        let mut worker = status("worker", State::Blocked);
        worker.blocked_on = Some("db".into());
        let cache = status("cache", State::Stopped);
        app.set_services(vec![api, cache, db, queue, web, worker]);
        app.link_up();
        app.selected = Some("web".into());
        app.open_log(Some("web".into()));
        app.push_log(log("web", "stdout", "listening on :8080"));
        app.push_log(log("web", "stderr", "\x1b[33mwarning\x1b[0m: slow request"));
        app.push_log(log("web", "blackhole", "started (pid 4242)"));
        app
    }

    fn render(app: &mut App, w: u16, h: u16) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| draw(f, app)).unwrap();
        let buf = term.backend().buffer();
        (0..h)
            .map(|y| {
                let mut line = String::new();
                let mut x = 0;
                while x < w {
                    let cell = &buf[(x, y)];
                    line.push_str(cell.symbol());
                    x += Span::from(cell.symbol()).width().max(1) as u16;
                }
                line
            })
            .collect()
    }

    fn row<'a>(screen: &'a [String], name: &str) -> &'a str {
        screen
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", screen.join("\n")))
    }

    #[test]
    fn dashboard_at_80x24() {
        let mut app = sample();
        let screen = render(&mut app, 80, 24);
        let text = screen.join("\n");
        assert!(screen[0].contains("blackhole top"), "{text}");
        assert!(screen[0].contains("6 services"), "{text}");
        let header: Vec<&str> = screen[1].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU%", "MEM", "READY", "NOTE"
            ]
        );
        let web: Vec<&str> = row(&screen, "web").split_whitespace().collect();
        assert_eq!(
            web,
            ["web", "running", "4242", "5m07s", "2", "12.5", "12.3M", "✓"]
        );
        let api: Vec<&str> = row(&screen, "api").split_whitespace().collect();
        assert_eq!(
            api,
            ["api", "running", "4100", "2h13m", "0", "0.3", "48.0M", "✓"]
        );
        let db = row(&screen, "db");
        assert!(
            db.contains("failed") && db.contains("exited with code 1"),
            "{db}"
        );
        let cache: Vec<&str> = row(&screen, "cache").split_whitespace().collect();
        assert_eq!(cache, ["cache", "stopped", "-", "-", "0", "-", "-", "-"]);
        assert!(row(&screen, "worker").contains("waiting for db"), "{text}");
        assert!(row(&screen, "queue").contains("restarting"), "{text}");
        // The selected row is highlighted.
        let y = screen.iter().position(|l| l.starts_with("web ")).unwrap() as u16;
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        term.draw(|f| draw(f, &mut app)).unwrap();
        let buf = term.backend().buffer();
        assert!(buf[(0, y)].modifier.contains(Modifier::REVERSED));
        assert_eq!(buf[(10, y)].fg, Color::Green);
        // The log pane shows the selection's lines, escapes removed.
        assert!(text.contains("logs: web"), "{text}");
        assert!(text.contains("following"), "{text}");
        assert!(text.contains("listening on :8080"), "{text}");
        assert!(text.contains("warning: slow request"), "{text}");
        assert!(text.contains("started (pid 4242)"), "{text}");
        // Status and help lines at the bottom.
        let help = &screen[23];
        for k in [
            "q quit",
            "s start",
            "x stop",
            "r restart",
            "R reload",
            "/ filter",
            "? help",
        ] {
            assert!(help.contains(k), "help line lacks {k}: {help}");
        }
        app.say(
            "restarted web (pid 4243)".into(),
            Tone::Good,
            Instant::now(),
        );
        let screen = render(&mut app, 80, 24);
        assert!(
            screen[22].contains("restarted web (pid 4243)"),
            "{screen:?}"
        );
        // A long error wraps onto more rows, the end included.
        let long = format!("reload refused: {} the end", "details ".repeat(15));
        app.say(long, Tone::Bad, Instant::now());
        let screen = render(&mut app, 80, 24);
        assert!(screen[21].contains("reload refused"), "{screen:?}");
        assert!(screen[22].contains("the end"), "{screen:?}");
        assert!(screen[23].contains("? help"), "{screen:?}");
    }

    #[test]
    fn dashboard_at_200x50_has_room_for_notes_and_more_keys() {
        let mut app = sample();
        app.action_started(Verb::Restart, "api");
        let screen = render(&mut app, 200, 50);
        let text = screen.join("\n");
        assert!(row(&screen, "api").contains("restarting…"), "{text}");
        assert!(
            row(&screen, "queue").contains("next start in 3.2s"),
            "{text}"
        );
        assert!(screen[49].contains("PgUp/PgDn scroll"), "{text}");
        assert!(screen[48].contains("restarting api…"), "{text}");
        assert!(screen[0].contains("every 2s"), "{text}");
        // Full-screen logs: no table.
        app.full_log = true;
        let screen = render(&mut app, 200, 50);
        assert!(!screen.iter().any(|l| l.starts_with("NAME")));
        assert!(screen.join("\n").contains("listening on :8080"));
    }

    #[test]
    fn narrow_terminals_drop_columns_in_order() {
        let mut app = sample();
        let mut dropped = 0;
        for w in (15..=120).rev() {
            let header: Vec<String> = render(&mut app, w, 24)[1]
                .split_whitespace()
                .map(String::from)
                .collect();
            // What is gone is always the first few of the drop order.
            let gone: Vec<Col> = Col::ALL
                .into_iter()
                .filter(|c| !header.iter().any(|h| h == c.header()))
                .collect();
            let n = gone.len();
            assert!(n >= dropped, "{w} columns: {header:?}");
            assert!(
                Col::DROP[..n].iter().all(|c| gone.contains(c)),
                "{w} columns: {header:?}"
            );
            assert!(header.starts_with(&["NAME".to_string(), "STATE".to_string()]));
            dropped = n;
        }
        assert_eq!(dropped, Col::DROP.len());
        let header = |app: &mut App, w| render(app, w, 24)[1].clone();
        assert!(header(&mut app, 80).contains("NOTE"));
        let h60 = header(&mut app, 60);
        assert!(h60.contains("READY") && !h60.contains("NOTE"), "{h60}");
    }

    #[test]
    fn tiny_and_degenerate_sizes_do_not_panic() {
        for (w, h) in [(40, 10), (20, 5), (1, 1), (80, 2), (3, 40), (0, 0)] {
            let mut app = sample();
            app.wrap = true;
            app.timestamps = true;
            render(&mut app, w, h);
            app.mode = Mode::Help;
            render(&mut app, w, h);
            app.mode = Mode::Filter;
            app.filter = "w".into();
            render(&mut app, w, h);
            app.full_log = true;
            app.log.scroll = 2;
            render(&mut app, w, h);
        }
        let mut app = sample();
        let screen = render(&mut app, 40, 10);
        assert!(screen[1].starts_with("NAME"), "{screen:?}");
        assert!(screen[9].contains("? help"), "{screen:?}");
    }

    #[test]
    fn many_services_scroll_to_keep_the_selection_visible() {
        let mut app = sample();
        app.set_services(
            (0..60)
                .map(|i| status(&format!("svc{i:02}"), State::Running))
                .collect(),
        );
        app.select_edge(true);
        let screen = render(&mut app, 80, 24);
        assert!(screen.iter().any(|l| l.starts_with("svc59")), "{screen:?}");
        assert!(!screen.iter().any(|l| l.starts_with("svc00")));
        assert!(screen[1].ends_with(" 51-60 of 60 "), "{screen:?}");
        // Moving up a little does not scroll.
        app.select_by(-3);
        let screen = render(&mut app, 80, 24);
        assert!(screen.iter().any(|l| l.starts_with("svc59")), "{screen:?}");
        // The log pane keeps its rows.
        assert!(app.log_rows >= 9, "{}", app.log_rows);
    }

    #[test]
    fn wrapped_and_scrolled_logs() {
        let mut app = sample();
        app.open_log(Some("web".into()));
        for i in 0..30 {
            app.push_log(log(
                "web",
                "stdout",
                &format!("line {i:02} {}", "x".repeat(100)),
            ));
        }
        app.full_log = true;
        let screen = render(&mut app, 60, 12);
        let text = screen.join("\n");
        assert!(text.contains("line 29"), "{text}");
        app.wrap = true;
        let screen = render(&mut app, 60, 12);
        assert!(screen[8].starts_with("line 29"), "{screen:?}");
        app.scroll_log(5);
        let screen = render(&mut app, 60, 12);
        let text = screen.join("\n");
        assert!(
            text.contains("line 24") && !text.contains("line 29"),
            "{text}"
        );
        assert!(text.contains("5 newer lines below"), "{text}");
    }

    #[test]
    fn unreachable_orchestrator_is_said_on_top() {
        let mut app = sample();
        app.link_down("connection refused".into());
        let screen = render(&mut app, 120, 24);
        assert!(
            screen[0].contains(
                "orchestrator not reachable on /srv/app/.blackhole/control.sock — retrying"
            ),
            "{screen:?}"
        );
        // The last known table stays.
        row(&screen, "web");
    }

    #[test]
    fn usage_unknown_shows_a_dash() {
        assert_eq!(cpu(None), "-");
        assert_eq!(mem(None), "-");
        assert_eq!(mem(usage(0.0, 12_897_485).as_ref()), "12.3M");
        assert_eq!(cpu(usage(153.26, 0).as_ref()), "153.3");
    }
}
