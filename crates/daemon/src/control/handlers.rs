//! Route handlers. Every error is a JSON [`ErrorBody`] with a fitting
//! HTTP status.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use blackhole_api::{
    BatchReport, BatchRequest, BatchResult, ErrorBody, Health, ServiceList, ServiceStatus, codes,
};
use blackhole_core::config::value::parse_duration;
use tokio::sync::oneshot;

use super::AppState;
use super::stream;
use crate::service::Outcome;
use crate::supervisor::{Action, ApiError, Entry, Request};

/// How long a start/stop/restart waits for its transition by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(120);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.details = self.details;
        body.error.status = self.status;
        (status, Json(body)).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, codes::BAD_REQUEST, message)
}

fn entry(state: &AppState, name: &str) -> Result<Entry, ApiError> {
    state
        .registry
        .borrow()
        .services
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(name))
}

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_secs: state.started.elapsed().as_secs(),
        services: state.registry.borrow().services.len(),
        config: state.config.clone(),
        tracking: state.tracking.clone(),
    })
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    state.sampler.fresh().await;
    metrics_response(&state.metrics)
}

pub fn metrics_response(metrics: &std::sync::Arc<crate::metrics::Metrics>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

pub async fn list(State(state): State<AppState>) -> Json<ServiceList> {
    state.sampler.fresh().await;
    let registry = state.registry.borrow().clone();
    Json(ServiceList {
        services: registry.services.values().map(Entry::status).collect(),
    })
}

pub async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let entry = entry(&state, &name)?;
    state.sampler.fresh().await;
    let mut status = entry.status();
    if let Entry::Live(h) = &entry {
        status.environment = Some((*h.snapshot.borrow().environment).clone());
    }
    Ok(Json(status).into_response())
}

pub async fn start(
    state: State<AppState>,
    name: Path<String>,
    q: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    act(state, name, q, Action::Start).await
}

pub async fn stop(
    state: State<AppState>,
    name: Path<String>,
    q: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    act(state, name, q, Action::Stop).await
}

pub async fn restart(
    state: State<AppState>,
    name: Path<String>,
    q: Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    act(state, name, q, Action::Restart).await
}

async fn act(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    action: Action,
) -> Result<Response, ApiError> {
    let wait = wait_param(&q)?;
    act_one(
        &state,
        &name,
        action,
        wait,
        tokio::time::Instant::now() + wait,
    )
    .await
    .map(|status| Json(status).into_response())
}

fn wait_param(q: &HashMap<String, String>) -> Result<Duration, ApiError> {
    match q.get("timeout") {
        Some(t) => parse_duration(t).map_err(bad_request),
        None => Ok(DEFAULT_WAIT),
    }
}

/// Asks for the action and waits until it is done, failed, or `deadline`.
async fn act_one(
    state: &AppState,
    name: &str,
    action: Action,
    wait: Duration,
    deadline: tokio::time::Instant,
) -> Result<ServiceStatus, ApiError> {
    let outcome = ask(state, name, action).await?;
    match tokio::time::timeout_at(deadline, outcome).await {
        Ok(done) => settle(name, done),
        Err(_) => Err(timed_out(state, name, wait)),
    }
}

/// Asks the orchestrator for the action; the receiver of its outcome.
async fn ask(
    state: &AppState,
    name: &str,
    action: Action,
) -> Result<oneshot::Receiver<Outcome>, ApiError> {
    // Only whether it exists: a batch asks this for every service, and a
    // copy of each handle was a measurable part of stopping 1000.
    if !state.registry.borrow().services.contains_key(name) {
        return Err(ApiError::not_found(name));
    }
    let (tx, rx) = oneshot::channel();
    state
        .requests
        .send(Request::Action {
            name: name.to_string(),
            action,
            reply: tx,
        })
        .await
        .map_err(|_| ApiError::new(503, codes::UNAVAILABLE, "the orchestrator is shutting down"))?;
    rx.await
        .map_err(|_| ApiError::new(503, codes::UNAVAILABLE, "the orchestrator is shutting down"))?
}

/// What an outcome that came means for the caller.
fn settle(
    name: &str,
    done: Result<Outcome, oneshot::error::RecvError>,
) -> Result<ServiceStatus, ApiError> {
    match done {
        Ok(Outcome::Done(status)) => Ok(status),
        Ok(Outcome::Failed(status, why)) => {
            let mut e = ApiError::new(500, codes::FAILED, format!("service `{name}`: {why}"));
            e.status = Some(Box::new(status));
            Err(e)
        }
        Err(_) => Err(ApiError::new(
            503,
            codes::UNAVAILABLE,
            format!(
                "service `{name}` went away before the operation finished (removed by a reload, or shutdown)"
            ),
        )),
    }
}

fn timed_out(state: &AppState, name: &str, wait: Duration) -> ApiError {
    let mut e = ApiError::new(
        504,
        codes::TIMEOUT,
        format!(
            "service `{name}` did not finish within {}; the operation goes on",
            humantime::format_duration(wait)
        ),
    );
    e.status = entry(state, name)
        .ok()
        .map(|entry| Box::new(entry.status()));
    e
}

/// Acts on every service of a wave at once and waits for them all, or
/// until `deadline` (one timer for the wave, not one per service: each
/// timer armed while the runtime is busy wakes its driver, a write to an
/// eventfd, and a stop of 100 armed 100).
async fn act_wave(
    state: &AppState,
    names: &[String],
    action: Action,
    wait: Duration,
    deadline: tokio::time::Instant,
) -> Vec<Result<ServiceStatus, ApiError>> {
    use futures_util::StreamExt;
    // Every service is asked, whatever the deadline: a time-out says the
    // operation goes on.
    let asked = futures_util::future::join_all(names.iter().map(|n| ask(state, n, action))).await;
    let mut results: Vec<Option<Result<ServiceStatus, ApiError>>> =
        names.iter().map(|_| None).collect();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for (i, asked) in asked.into_iter().enumerate() {
        match asked {
            Ok(outcome) => pending.push(async move { (i, outcome.await) }),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            next = pending.next() => match next {
                Some((i, done)) => results[i] = Some(settle(&names[i], done)),
                None => break,
            },
            _ = &mut timer => break,
        }
    }
    names
        .iter()
        .zip(results)
        .map(|(name, result)| result.unwrap_or_else(|| Err(timed_out(state, name, wait))))
        .collect()
}

pub async fn start_many(
    state: State<AppState>,
    q: Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<BatchReport>, ApiError> {
    batch(state, q, body, Action::Start).await
}

pub async fn stop_many(
    state: State<AppState>,
    q: Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<BatchReport>, ApiError> {
    batch(state, q, body, Action::Stop).await
}

pub async fn restart_many(
    state: State<AppState>,
    q: Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<BatchReport>, ApiError> {
    batch(state, q, body, Action::Restart).await
}

/// Acts on many services in one request (every valid one when none is
/// named). Stops go in waves, dependents first, like a shutdown; starts
/// and restarts are asked for at once (each service waits for what it
/// depends on). The timeout bounds the whole batch.
async fn batch(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
    action: Action,
) -> Result<Json<BatchReport>, ApiError> {
    let wait = wait_param(&q)?;
    let deadline = tokio::time::Instant::now() + wait;
    let registry = state.registry.borrow().clone();
    let named = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        serde_json::from_slice::<BatchRequest>(&body)
            .map_err(|e| {
                bad_request(format!(
                    "the body must be {{\"services\": [\"name\", ...]}} (or empty for all): {e}"
                ))
            })?
            .services
    };
    let names: Vec<String> = if named.is_empty() {
        registry
            .services
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Live(_)))
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        named
    };
    let waves: Vec<Vec<String>> = if action == Action::Stop {
        let wanted: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut waves: Vec<Vec<String>> = registry
            .stop_waves
            .iter()
            .map(|w| {
                w.iter()
                    .filter(|n| wanted.contains(n.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|w| !w.is_empty())
            .collect();
        let placed: std::collections::BTreeSet<&String> = waves.iter().flatten().collect();
        let rest: Vec<String> = names
            .iter()
            .filter(|n| !placed.contains(n))
            .cloned()
            .collect();
        if !rest.is_empty() {
            waves.insert(0, rest);
        }
        waves
    } else {
        vec![names]
    };
    let mut results = Vec::new();
    for wave in waves {
        let outcomes = act_wave(&state, &wave, action, wait, deadline).await;
        for (name, outcome) in wave.into_iter().zip(outcomes) {
            results.push(match outcome {
                Ok(status) => BatchResult {
                    name,
                    status: Some(status),
                    error: None,
                },
                Err(e) => {
                    let mut body = ErrorBody::new(e.code, e.message);
                    body.error.details = e.details;
                    body.error.status = e.status;
                    BatchResult {
                        name,
                        status: None,
                        error: Some(body.error),
                    }
                }
            });
        }
    }
    Ok(Json(BatchReport { results }))
}

/// `?tail=N&follow=true`: N lines from memory (all by default), then
/// new lines as they come.
fn log_params(q: &HashMap<String, String>) -> Result<(usize, bool), ApiError> {
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("all") => usize::MAX,
        Some(n) => n
            .parse()
            .map_err(|_| bad_request(format!("tail must be a number or `all`, got `{n}`")))?,
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(bad_request(format!(
                "follow must be true or false, got `{other}`"
            )));
        }
    };
    Ok((tail, follow))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("json"))
}

pub async fn service_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (tail, follow) = log_params(&q)?;
    let log = match entry(&state, &name)? {
        Entry::Live(h) => h.log,
        Entry::Invalid(_) => {
            return Ok(stream::logs(Vec::new(), tail, follow, wants_json(&headers)));
        }
    };
    Ok(stream::logs(vec![log], tail, follow, wants_json(&headers)))
}

/// All services, or those in `?service=a,b`, interleaved by time.
pub async fn all_logs(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (tail, follow) = log_params(&q)?;
    let registry = state.registry.borrow().clone();
    let wanted: Option<Vec<&str>> = q
        .get("service")
        .map(|s| s.split(',').filter(|s| !s.is_empty()).collect());
    let mut logs = Vec::new();
    match wanted {
        Some(names) => {
            for name in names {
                match registry.services.get(name) {
                    Some(Entry::Live(h)) => logs.push(h.log.clone()),
                    Some(Entry::Invalid(_)) => {}
                    None => return Err(ApiError::not_found(name)),
                }
            }
        }
        None => {
            for e in registry.services.values() {
                if let Entry::Live(h) = e {
                    logs.push(h.log.clone());
                }
            }
        }
    }
    Ok(stream::logs(logs, tail, follow, wants_json(&headers)))
}

pub async fn events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    stream::events(state.events.subscribe(), sse)
}

pub async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .requests
        .send(Request::Reload { reply: tx })
        .await
        .map_err(|_| ApiError::new(503, codes::UNAVAILABLE, "the orchestrator is shutting down"))?;
    let report = rx.await.map_err(|_| {
        ApiError::new(503, codes::UNAVAILABLE, "the orchestrator is shutting down")
    })??;
    Ok(Json(report).into_response())
}

pub async fn shutdown(State(state): State<AppState>) -> Response {
    let _ = state.requests.send(Request::Shutdown).await;
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "shutting down"})),
    )
        .into_response()
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        404,
        codes::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        405,
        codes::BAD_REQUEST,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
