//! The control API: HTTP/JSON over the Unix socket (see `docs/API.md`).
//!
//! Reads (status, logs, events) are served from what the services publish,
//! without a round trip through the dispatcher; changes (start, stop,
//! restart, reload, shutdown) go to the dispatcher, whose reply comes back
//! when the transition is done.

mod handlers;
pub mod serve;
mod stream;
pub mod tcp;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::{mpsc, watch};

use crate::events::EventBus;
use crate::supervisor::{Registry, Request};

#[derive(Clone)]
pub struct AppState {
    pub sampler: Arc<crate::usage::Sampler>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub counters: Arc<crate::metrics::OrchestratorCounters>,
    pub requests: mpsc::Sender<Request>,
    pub registry: watch::Receiver<Arc<Registry>>,
    pub events: EventBus,
    pub started: Instant,
    pub config: Option<String>,
    pub tracking: String,
}

pub fn router(state: AppState) -> Router {
    let counters = state.counters.clone();
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/v1/health", get(handlers::health))
        .route("/v1/services", get(handlers::list))
        .route("/v1/services/{name}", get(handlers::one))
        .route("/v1/services/{name}/start", post(handlers::start))
        .route("/v1/services/{name}/stop", post(handlers::stop))
        .route("/v1/services/{name}/restart", post(handlers::restart))
        .route("/v1/services/{name}/logs", get(handlers::service_logs))
        .route("/v1/logs", get(handlers::all_logs))
        .route("/v1/events", get(handlers::events))
        .route("/v1/start", post(handlers::start_many))
        .route("/v1/stop", post(handlers::stop_many))
        .route("/v1/restart", post(handlers::restart_many))
        .route("/v1/reload", post(handlers::reload))
        .route("/v1/shutdown", post(handlers::shutdown))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            counters,
            count_requests,
        ))
        .with_state(state)
}

/// Counts requests by route (the pattern, not the path: names of services
/// must not become metric labels without bound) and status.
async fn count_requests(
    axum::extract::State(counters): axum::extract::State<Arc<crate::metrics::OrchestratorCounters>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let resp = next.run(req).await;
    counters.request(&route, resp.status().as_u16());
    resp
}

/// The read-only metrics listener: `/metrics` and nothing else.
pub async fn serve_metrics(
    addr: &str,
    metrics: Arc<crate::metrics::Metrics>,
    sampler: Arc<crate::usage::Sampler>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let (metrics, sampler) = (metrics.clone(), sampler.clone());
                async move {
                    sampler.fresh().await;
                    handlers::metrics_response(&metrics)
                }
            }),
        )
        .fallback(handlers::not_found);
    Ok(tokio::spawn(serve::serve(
        listener,
        app,
        "metrics listener",
    )))
}

/// Serves until the task is aborted.
pub async fn serve(listener: tokio::net::UnixListener, state: AppState) {
    serve::serve(listener, router(state), "control socket").await;
}
