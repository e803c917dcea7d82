//! `blackhole events`.

use blackhole_api::Event;

use crate::cli::EventsArgs;
use crate::client::{Client, ClientError};
use crate::code;

pub async fn run(client: &Client, args: EventsArgs) -> Result<u8, ClientError> {
    client
        .lines("/v1/events", "application/x-ndjson", |raw| {
            if args.json {
                println!("{}", String::from_utf8_lossy(raw));
                return;
            }
            if let Ok(e) = serde_json::from_slice::<Event>(raw) {
                let change = match (e.from, e.to) {
                    (Some(f), Some(t)) => format!("{f} -> {t}"),
                    _ => e.kind.clone(),
                };
                let who = if e.service.is_empty() {
                    "*"
                } else {
                    &e.service
                };
                println!("{} {who} {change}: {}", e.time, e.message);
            }
        })
        .await?;
    Ok(code::OK)
}
