//! `start`, `stop`, `restart`, `reload`, `down`.

use blackhole_api::{Event, ReloadReport, ServiceList, ServiceStatus};
use hyper::Method;

use super::encode;
use crate::cli::Targets;
use crate::client::{Client, ClientError};
use crate::code;
use crate::render;

/// Acts on every target at once and reports each as it finishes.
pub async fn act(client: &Client, verb: &str, targets: Targets) -> Result<u8, ClientError> {
    let names = if targets.all {
        let list: ServiceList = client.json(Method::GET, "/v1/services").await?;
        list.services.into_iter().map(|s| s.name).collect()
    } else {
        targets.names
    };
    let timeout = humantime::format_duration(targets.timeout)
        .to_string()
        .replace(' ', "");
    let colour = render::colour_enabled();
    let requests = names.iter().map(|name| {
        let path = format!(
            "/v1/services/{}/{verb}?timeout={}",
            encode(name),
            encode(&timeout)
        );
        async move {
            (
                name,
                client.json::<ServiceStatus>(Method::POST, &path).await,
            )
        }
    });
    let mut failed = false;
    for (name, result) in futures_util::future::join_all(requests).await {
        match result {
            Ok(s) => {
                let pid = s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                println!("{name}: {}{pid}", render::state(s.state, colour));
            }
            Err(e @ ClientError::NotRunning { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("{name}: {e}");
            }
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
