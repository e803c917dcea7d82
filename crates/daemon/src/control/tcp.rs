//! The optional TCP listener: the same API, for requests that carry the
//! bearer token from `token_file`. Without a usable token it does not
//! start at all: an open TCP port must never be an unauthenticated one.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use super::AppState;
use crate::supervisor::ApiError;

pub async fn start(addr: &str, token_file: &Path, app: AppState) -> Result<JoinHandle<()>, String> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the token file {}: {e}", token_file.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", token_file.display()));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let token = Arc::new(token);
    let router = super::router(app).layer(middleware::from_fn_with_state(token, require_token));
    Ok(tokio::spawn(super::serve::serve(
        listener,
        router,
        "TCP control listener",
    )))
}

async fn require_token(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(401, "unauthorized", "a valid bearer token is required")
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp
        }
    }
}

/// Compares in time that depends only on the length, so the token cannot
/// be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_whole_tokens() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret!"));
    }
}
