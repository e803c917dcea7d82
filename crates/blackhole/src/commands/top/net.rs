//! The talking to the orchestrator: each request or stream is a task of
//! its own that reports to the loop over one channel, so the screen never
//! waits on the network and a slow action blocks nothing else.

use std::path::PathBuf;
use std::time::Duration;

use blackhole_api::{Event, LogLine, ReloadReport, ServiceList, ServiceStatus};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Response};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

use super::app::{LOG_TAIL, Verb, one_line};
use crate::client::{Client, ClientError};
use crate::commands::encode;

const NDJSON: &str = "application/x-ndjson";
/// How long to wait between attempts to reach a vanished orchestrator.
pub const RETRY: Duration = Duration::from_secs(1);

pub enum Net {
    /// The event stream is open: the orchestrator answers.
    Connected,
    /// The event stream could not open or ended; why.
    Disconnected(String),
    Event(Event),
    Services(Result<Vec<ServiceStatus>, ClientError>),
    /// A line for the log stream of this generation.
    Log(u64, LogLine),
    LogEnded(u64, String),
    Acted(Verb, String, Result<Box<ServiceStatus>, String>),
    Reloaded(Result<ReloadReport, String>),
}

/// A task that stops when this is dropped: replacing the log stream or
/// leaving the loop cancels what was running.
pub struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(f: impl Future<Output = ()> + Send + 'static) -> Task {
    Task(tokio::spawn(f))
}

/// An error as a short reason for the screen.
fn reason(e: &ClientError) -> String {
    match e {
        ClientError::NotRunning { why, .. } => why.clone(),
        e => one_line(&e.to_string()),
    }
}

/// An error as the status line says it after an action.
fn failure(e: ClientError) -> String {
    match e {
        ClientError::NotRunning { .. } => "the orchestrator is not reachable".into(),
        e => one_line(&e.to_string()),
    }
}

/// The lines of a streaming body, read as they come (with backpressure:
/// a line is read only once the previous one was handed on).
struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    start: usize,
    done: bool,
}

impl Lines {
    fn new(resp: Response<Incoming>) -> Lines {
        Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            start: 0,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(nl) = self.buf[self.start..].iter().position(|b| *b == b'\n') {
                let line = self.buf[self.start..self.start + nl].to_vec();
                self.start += nl + 1;
                return Ok(Some(line));
            }
            self.buf.drain(..self.start);
            self.start = 0;
            if self.done {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => return Err(format!("the stream broke: {e}")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Follows `/v1/events` for as long as the loop listens, reconnecting
/// every [`RETRY`] while the orchestrator is away.
pub async fn watch_events(socket: PathBuf, tx: Sender<Net>) {
    let client = Client::new(socket);
    loop {
        let why = match client.send(Method::GET, "/v1/events", NDJSON).await {
            Ok(resp) => {
                if tx.send(Net::Connected).await.is_err() {
                    return;
                }
                let mut lines = Lines::new(resp);
                loop {
                    match lines.next().await {
                        Ok(Some(raw)) => {
                            let Ok(e) = serde_json::from_slice::<Event>(&raw) else {
                                continue;
                            };
                            if tx.send(Net::Event(e)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the event stream ended".to_string(),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => reason(&e),
        };
        if tx.send(Net::Disconnected(why)).await.is_err() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Streams one service's log: its last [`LOG_TAIL`] lines, then new ones.
pub async fn follow_logs(socket: PathBuf, name: String, generation: u64, tx: Sender<Net>) {
    let client = Client::new(socket);
    let path = format!(
        "/v1/services/{}/logs?tail={LOG_TAIL}&follow=true",
        encode(&name)
    );
    let why = match client.send(Method::GET, &path, NDJSON).await {
        Ok(resp) => {
            let mut lines = Lines::new(resp);
            loop {
                match lines.next().await {
                    Ok(Some(raw)) => {
                        let Ok(line) = serde_json::from_slice::<LogLine>(&raw) else {
                            continue;
                        };
                        if tx.send(Net::Log(generation, line)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the log stream ended".to_string(),
                    Err(e) => break e,
                }
            }
        }
        Err(e) => format!("no logs: {}", reason(&e)),
    };
    let _ = tx.send(Net::LogEnded(generation, why)).await;
}

pub async fn fetch(socket: PathBuf, tx: Sender<Net>) {
    let list = Client::new(socket)
        .json::<ServiceList>(Method::GET, "/v1/services")
        .await
        .map(|l| l.services);
    let _ = tx.send(Net::Services(list)).await;
}

pub async fn act(socket: PathBuf, verb: Verb, name: String, tx: Sender<Net>) {
    let path = format!("/v1/services/{}/{}", encode(&name), verb.as_str());
    let result = Client::new(socket)
        .json::<ServiceStatus>(Method::POST, &path)
        .await
        .map(Box::new)
        .map_err(failure);
    let _ = tx.send(Net::Acted(verb, name, result)).await;
}

pub async fn reload(socket: PathBuf, tx: Sender<Net>) {
    let result = Client::new(socket)
        .json::<ReloadReport>(Method::POST, "/v1/reload")
        .await
        .map_err(failure);
    let _ = tx.send(Net::Reloaded(result)).await;
}
