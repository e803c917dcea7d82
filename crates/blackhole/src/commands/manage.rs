//! `start`, `stop`, `restart`, `reload`, `down`.

use blackhole_api::{BatchReport, BatchRequest, Event, ReloadReport};
use hyper::Method;

use super::encode;
use crate::cli::Targets;
use crate::client::{Client, ClientError};
use crate::code;
use crate::render;

/// Acts on every target in one request and reports each service.
pub async fn act(client: &Client, verb: &str, targets: Targets) -> Result<u8, ClientError> {
    let timeout = humantime::format_duration(targets.timeout)
        .to_string()
        .replace(' ', "");
    // No names (with --all) means every service, decided by the orchestrator.
    let request = BatchRequest {
        services: if targets.all {
            Vec::new()
        } else {
            targets.names
        },
    };
    let body = serde_json::to_vec(&request).map_err(|e| ClientError::Other(e.to_string()))?;
    let report: BatchReport = client
        .json_with(
            Method::POST,
            &format!("/v1/{verb}?timeout={}", encode(&timeout)),
            body.into(),
        )
        .await?;
    let colour = render::colour_enabled();
    let mut failed = false;
    for r in report.results {
        match (r.status, r.error) {
            (_, Some(e)) => {
                failed = true;
                eprintln!("{}: {}", r.name, e.message);
                for d in &e.details {
                    eprintln!("  {d}");
                }
            }
            (Some(s), None) => {
                let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                println!("{}: {}{pid}", r.name, render::state(s.state, colour));
            }
            (None, None) => {}
        }
    }
    Ok(if failed { code::FAILED } else { code::OK })
}

pub async fn reload(client: &Client) -> Result<u8, ClientError> {
    match client
        .json::<ReloadReport>(Method::POST, "/v1/reload")
        .await
    {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let show = |label: &str, names: &[String]| {
                if !names.is_empty() {
                    println!("{label:<10} {}", names.join(", "));
                }
            };
            show("started", &r.started);
            show("stopped", &r.stopped);
            show("restarted", &r.restarted);
            show("updated", &r.updated);
            show("unchanged", &r.unchanged);
            Ok(code::OK)
        }
        Err(ClientError::Api { body, .. }) => {
            eprintln!("blackhole: reload refused: {}", body.error.message);
            for d in &body.error.details {
                eprintln!("  {d}");
            }
            Ok(code::FAILED)
        }
        Err(e) => Err(e),
    }
}

/// Asks for shutdown and follows the events until the orchestrator is gone.
pub async fn down(client: &Client) -> Result<u8, ClientError> {
    // Subscribed once the response headers are here: no change is missed.
    let events = client
        .send(Method::GET, "/v1/events", "application/x-ndjson")
        .await?;
    client
        .send(Method::POST, "/v1/shutdown", "application/json")
        .await?;
    // The stream ends when the orchestrator exits; a broken stream is the
    // same thing seen from here.
    let _ = crate::client::each_line(events, |line| {
        if let Ok(e) = serde_json::from_slice::<Event>(line)
            && let (Some(to), false) = (e.to, e.service.is_empty())
        {
            println!("{}: {}", e.service, to);
        }
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while client.socket().exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!("orchestrator stopped");
    Ok(code::OK)
}
