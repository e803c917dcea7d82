//! A client for the control API over the Unix socket (hyper, HTTP/1.1).

use std::path::{Path, PathBuf};

use blackhole_api::ErrorBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

#[derive(Debug)]
pub enum ClientError {
    /// Nothing answers on the socket.
    NotRunning { socket: PathBuf, why: String },
    /// The API answered with an error.
    Api { body: ErrorBody },
    /// Anything else (a broken connection, a body that is not JSON).
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning { socket, why } => write!(
                f,
                "no orchestrator is running on {} ({why}); start one with `blackhole up -d`",
                socket.display()
            ),
            ClientError::Api { body, .. } => {
                write!(f, "{}", body.error.message)?;
                for d in &body.error.details {
                    write!(f, "\n  {d}")?;
                }
                Ok(())
            }
            ClientError::Other(s) => f.write_str(s),
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a request and returns the response, with error statuses
    /// turned into [`ClientError::Api`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &str,
    ) -> Result<Response<Incoming>, ClientError> {
        self.send_body(method, path, accept, Bytes::new()).await
    }

    /// [`Client::send`] with a JSON body (none when empty).
    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        accept: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::NotRunning {
                    socket: self.socket.clone(),
                    why: e.to_string(),
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Other(format!("cannot talk to the orchestrator: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "blackhole")
            .header("accept", accept);
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Other(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| {
            ClientError::Other(format!("the orchestrator closed the connection: {e}"))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
            .to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| {
            ErrorBody::new(
                "unknown",
                format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            )
        });
        Err(ClientError::Api { body })
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.json_with(method, path, Bytes::new()).await
    }

    /// Sends `body` (JSON) and reads a JSON answer.
    pub async fn json_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let resp = self
            .send_body(method, path, "application/json", body)
            .await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Other(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Other(format!("unexpected answer from the orchestrator: {e}"))
        })
    }

    /// Calls `each` with every line of a streaming response until it ends.
    pub async fn lines(
        &self,
        path: &str,
        accept: &str,
        each: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let resp = self.send(Method::GET, path, accept).await?;
        each_line(resp, each).await
    }
}

/// Calls `each` with every line of a response body until it ends.
pub async fn each_line(
    resp: Response<Incoming>,
    mut each: impl FnMut(&[u8]),
) -> Result<(), ClientError> {
    let mut body = resp.into_body();
    let mut partial: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Other(format!("stream ended: {e}")))?;
        if let Ok(data) = frame.into_data() {
            partial.extend_from_slice(&data);
            while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                each(&partial[..nl]);
                partial.drain(..=nl);
            }
        }
    }
    if !partial.is_empty() {
        each(&partial);
    }
    Ok(())
}
