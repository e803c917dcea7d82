//! The control API: HTTP/JSON over the Unix socket (see `docs/API.md`).
//!
//! Reads (status, logs, events) are served from what the services publish,
//! without a round trip through the dispatcher; changes (start, stop,
//! restart, reload, shutdown) go to the dispatcher, whose reply comes back
//! when the transition is done.

mod handlers;
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
    pub requests: mpsc::Sender<Request>,
    pub registry: watch::Receiver<Arc<Registry>>,
    pub events: EventBus,
    pub started: Instant,
    pub config: Option<String>,
    pub tracking: String,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(handlers::health))
        .route("/v1/services", get(handlers::list))
        .route("/v1/services/{name}", get(handlers::one))
        .route("/v1/services/{name}/start", post(handlers::start))
        .route("/v1/services/{name}/stop", post(handlers::stop))
        .route("/v1/services/{name}/restart", post(handlers::restart))
        .route("/v1/services/{name}/logs", get(handlers::service_logs))
        .route("/v1/logs", get(handlers::all_logs))
        .route("/v1/events", get(handlers::events))
        .route("/v1/reload", post(handlers::reload))
        .route("/v1/shutdown", post(handlers::shutdown))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

/// Serves until the task is aborted.
pub async fn serve(listener: tokio::net::UnixListener, state: AppState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("control server stopped: {e}");
    }
}
