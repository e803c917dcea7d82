//! Streaming responses: logs (tail, then follow) and events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use blackhole_api::{Event, LogLine, rfc3339};
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use tokio::sync::broadcast;

use crate::logs::{Record, ServiceLog};

fn encode(service: &str, r: &Record, json: bool) -> Bytes {
    if json {
        let line = LogLine {
            time: rfc3339(r.time),
            service: service.to_string(),
            stream: r.stream.as_str().to_string(),
            pid: (r.pid > 0).then_some(r.pid),
            line: r.text.clone(),
        };
        let mut v = serde_json::to_vec(&line).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    } else {
        Bytes::from(format!("{}\n", r.text))
    }
}

/// The tail of every log in `logs` merged by time, then (with `follow`)
/// each new line as it arrives. A follower that falls behind is told how
/// many lines it missed instead of silently losing them.
pub fn logs(logs: Vec<Arc<ServiceLog>>, tail: usize, follow: bool, json: bool) -> Response {
    // Subscribe before reading the tails, then skip what the tail already
    // had: no line is lost or repeated at the seam.
    let subs: Vec<(Arc<ServiceLog>, broadcast::Receiver<Arc<Record>>)> = logs
        .iter()
        .filter(|_| follow)
        .map(|l| (l.clone(), l.follow()))
        .collect();
    let mut backlog: Vec<(String, Record)> = Vec::new();
    let mut last_seq = std::collections::HashMap::new();
    for log in &logs {
        let lines = log.tail(tail);
        if let Some(last) = lines.last() {
            last_seq.insert(log.name().to_string(), last.seq);
        }
        backlog.extend(lines.into_iter().map(|r| (log.name().to_string(), r)));
    }
    backlog.sort_by_key(|(_, r)| r.time);
    if backlog.len() > tail {
        backlog.drain(..backlog.len() - tail);
    }
    let head: Vec<Result<Bytes, Infallible>> = backlog
        .iter()
        .map(|(name, r)| Ok(encode(name, r, json)))
        .collect();
    let head = stream::iter(head);
    let content_type = if json {
        "application/x-ndjson"
    } else {
        "text/plain; charset=utf-8"
    };
    if !follow {
        return (
            [(header::CONTENT_TYPE, content_type)],
            Body::from_stream(head),
        )
            .into_response();
    }
    let live: Vec<BoxStream<'static, Result<Bytes, Infallible>>> = subs
        .into_iter()
        .map(|(log, rx)| {
            let skip_to = last_seq.get(log.name()).copied().unwrap_or(0);
            let name = log.name().to_string();
            stream::unfold((rx, name, skip_to), move |(mut rx, name, skip_to)| async move {
                loop {
                    match rx.recv().await {
                        Ok(r) if r.seq <= skip_to => continue,
                        Ok(r) => {
                            let bytes = encode(&name, &r, json);
                            return Some((Ok(bytes), (rx, name, skip_to)));
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let note = Record {
                                seq: 0,
                                time: std::time::SystemTime::now(),
                                stream: crate::logs::Stream::Note,
                                pid: 0,
                                text: format!("[{n} lines not shown: this reader fell behind; they are in the log file]"),
                            };
                            return Some((Ok(encode(&name, &note, json)), (rx, name, skip_to)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            })
            .boxed()
        })
        .collect();
    let body = head.chain(stream::select_all(live));
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

pub fn events(rx: broadcast::Receiver<Arc<Event>>, sse: bool) -> Response {
    let s = stream::unfold(rx, move |mut rx| async move {
        let event: Event = match rx.recv().await {
            Ok(e) => (*e).clone(),
            Err(broadcast::error::RecvError::Lagged(n)) => Event {
                seq: 0,
                time: rfc3339(std::time::SystemTime::now()),
                service: String::new(),
                kind: "lagged".into(),
                from: None,
                to: None,
                pid: None,
                message: format!("{n} events were not delivered: this reader fell behind"),
            },
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let json = serde_json::to_string(&event).unwrap_or_default();
        let bytes = if sse {
            Bytes::from(format!("data: {json}\n\n"))
        } else {
            Bytes::from(format!("{json}\n"))
        };
        Some((Ok::<_, Infallible>(bytes), rx))
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(s)).into_response()
}
