//! `blackhole top`: a live dashboard over the control API.
//!
//! One loop owns the state ([`app::App`]) and waits on four sources: keys
//! (read on a thread of their own), what the network tasks report (event
//! stream, log stream, fetches, actions), the usage refresh tick, and the
//! moment a status message expires. It redraws only when one of them
//! changed something, at most [`FRAME`] apart when lines pour in.

mod app;
mod input;
mod net;
mod term;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blackhole_api::ServiceList;
use crossterm::event::Event as TermEvent;
use hyper::Method;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::TopArgs;
use crate::client::{Client, ClientError};
use crate::code;
use app::{App, Effect};
use net::{Net, Task};

/// The shortest time between two frames drawn for network news; keys are
/// answered at once.
const FRAME: Duration = Duration::from_millis(40);
/// Network messages handled before the next frame, so a flood of log lines
/// cannot keep the screen from updating.
const BATCH: usize = 2000;

pub async fn run(client: &Client, args: TopArgs) -> Result<u8, ClientError> {
    if !std::io::stdout().is_terminal() {
        eprintln!(
            "blackhole: top draws a live dashboard and needs a terminal; stdout is not one \
             (for scripts: `blackhole status --json`, `blackhole events --json`)"
        );
        return Ok(code::FAILED);
    }
    // Fail like every other verb when nothing runs at all; once started,
    // the dashboard waits for the orchestrator to come back instead.
    let first: ServiceList = client.json(Method::GET, "/v1/services").await?;
    let interval = args.interval.max(Duration::from_millis(100));
    let mut app = App::new(client.socket().display().to_string(), interval);
    app.set_services(first.services);
    let terminal_error = |e: std::io::Error| ClientError::Other(format!("terminal: {e}"));
    let mut screen = term::Screen::enter().map_err(terminal_error)?;
    let result = Dashboard::new(client.socket().to_path_buf())
        .run(&mut screen.terminal, &mut app, interval)
        .await
        .map_err(terminal_error);
    drop(screen);
    result
}

/// What the loop keeps besides the state: the tasks it started.
struct Dashboard {
    socket: PathBuf,
    tx: mpsc::Sender<Net>,
    rx: mpsc::Receiver<Net>,
    /// The log stream feeding the pane, if any.
    log: Option<LogStream>,
    generation: u64,
    fetching: bool,
    /// Something changed while a fetch was in flight: its answer may be
    /// older than the change, so fetch once more.
    fetch_again: bool,
}

struct LogStream {
    service: String,
    generation: u64,
    _task: Task,
}

impl Dashboard {
    fn new(socket: PathBuf) -> Dashboard {
        let (tx, rx) = mpsc::channel(1024);
        Dashboard {
            socket,
            tx,
            rx,
            log: None,
            generation: 0,
            fetching: false,
            fetch_again: false,
        }
    }

    async fn run(
        mut self,
        terminal: &mut term::Term,
        app: &mut App,
        interval: Duration,
    ) -> std::io::Result<u8> {
        let (keys_tx, mut keys) = mpsc::channel(64);
        input::spawn_reader(keys_tx)?;
        let _events = net::spawn(net::watch_events(self.socket.clone(), self.tx.clone()));
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(start + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut term_signal = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut interrupt = signal(SignalKind::interrupt())?;

        let mut dirty = true;
        let mut urgent = true;
        let mut last_draw = Instant::now();
        loop {
            if !term::is_active() {
                return Err(std::io::Error::other(
                    "the terminal was restored after a panic",
                ));
            }
            self.follow_selection(app);
            if dirty && (urgent || last_draw.elapsed() >= FRAME) {
                terminal.draw(|f| view::draw(f, app))?;
                last_draw = Instant::now();
                dirty = false;
                urgent = false;
            }
            let draw_at = dirty.then(|| tokio::time::Instant::from_std(last_draw + FRAME));
            let flash_at = app.deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                key = keys.recv() => {
                    let Some(first) = key else {
                        return Err(std::io::Error::other("the key reader stopped"));
                    };
                    let mut next = Some(first);
                    while let Some(ev) = next {
                        if self.on_input(ev?, app, terminal)? {
                            return Ok(code::OK);
                        }
                        next = keys.try_recv().ok();
                    }
                    dirty = true;
                    urgent = true;
                }
                Some(first) = self.rx.recv() => {
                    self.on_net(first, app);
                    for _ in 0..BATCH {
                        let Ok(msg) = self.rx.try_recv() else { break };
                        self.on_net(msg, app);
                    }
                    dirty = true;
                }
                _ = tick.tick() => {
                    // While the orchestrator is away, the event task retries.
                    if app.is_up() {
                        self.fetch();
                    }
                }
                _ = sleep_until(flash_at), if flash_at.is_some() => {
                    dirty |= app.expire(Instant::now());
                }
                _ = sleep_until(draw_at), if draw_at.is_some() => {}
                _ = term_signal.recv() => return Ok(code::OK),
                _ = hangup.recv() => return Ok(code::OK),
                _ = interrupt.recv() => return Ok(code::OK),
            }
        }
    }

    /// Handles one terminal event; true to quit.
    fn on_input(
        &mut self,
        ev: TermEvent,
        app: &mut App,
        terminal: &mut term::Term,
    ) -> std::io::Result<bool> {
        let TermEvent::Key(key) = ev else {
            // A resize is drawn by the next frame; nothing else matters.
            return Ok(false);
        };
        match input::on_key(app, key, Instant::now()) {
            Some(Effect::Quit) => return Ok(true),
            Some(Effect::Act(verb, name)) => {
                // Detached: the answer comes back as a message, and an
                // action goes on in the orchestrator even if we quit.
                drop(tokio::spawn(net::act(
                    self.socket.clone(),
                    verb,
                    name,
                    self.tx.clone(),
                )));
            }
            Some(Effect::Reload) => {
                drop(tokio::spawn(net::reload(
                    self.socket.clone(),
                    self.tx.clone(),
                )));
            }
            Some(Effect::Repaint) => terminal.clear()?,
            None => {}
        }
        Ok(false)
    }

    fn on_net(&mut self, msg: Net, app: &mut App) {
        let now = Instant::now();
        match msg {
            Net::Connected => {
                app.link_up();
                // Subscribed first, then listed: no change falls between.
                self.fetch();
            }
            Net::Disconnected(why) => app.link_down(why),
            Net::Event(e) => {
                app.apply_event(&e, now);
                self.fetch();
            }
            Net::Services(result) => {
                self.fetching = false;
                match result {
                    Ok(list) => app.set_services(list),
                    // The event stream says when the orchestrator is gone.
                    Err(ClientError::NotRunning { .. }) => {}
                    Err(e) => app.say(
                        format!("cannot list services: {}", app::one_line(&e.to_string())),
                        app::Tone::Bad,
                        now,
                    ),
                }
                if std::mem::take(&mut self.fetch_again) {
                    self.fetch();
                }
            }
            Net::Log(generation, line) => {
                if self
                    .log
                    .as_ref()
                    .is_some_and(|l| l.generation == generation)
                {
                    app.push_log(line);
                }
            }
            Net::LogEnded(generation, why) => {
                if self
                    .log
                    .as_ref()
                    .is_some_and(|l| l.generation == generation)
                {
                    app.log_ended(why);
                }
            }
            Net::Acted(verb, name, result) => {
                app.action_done(verb, &name, result.map(|s| *s), now);
                self.fetch();
            }
            Net::Reloaded(result) => {
                app.reload_done(result, now);
                self.fetch();
            }
        }
    }

    /// Lists the services again, unless a listing is already on its way.
    fn fetch(&mut self) {
        if self.fetching {
            self.fetch_again = true;
            return;
        }
        self.fetching = true;
        drop(tokio::spawn(net::fetch(
            self.socket.clone(),
            self.tx.clone(),
        )));
    }

    /// Points the log stream at the selected service: a new stream when
    /// the selection changed or the orchestrator came back, none while
    /// it is away (the pane keeps the last lines seen).
    fn follow_selection(&mut self, app: &mut App) {
        let want = app.wanted_log();
        if want == self.log.as_ref().map(|l| l.service.as_str()) {
            return;
        }
        let want = want.map(str::to_owned);
        self.log = None;
        match want {
            Some(service) => {
                self.generation += 1;
                app.open_log(Some(service.clone()));
                let task = net::spawn(net::follow_logs(
                    self.socket.clone(),
                    service.clone(),
                    self.generation,
                    self.tx.clone(),
                ));
                self.log = Some(LogStream {
                    service,
                    generation: self.generation,
                    _task: task,
                });
            }
            None if app.is_up() => app.open_log(None),
            None => {
                if app.log.ended.is_none() {
                    app.log_ended("the orchestrator is not reachable".into());
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
