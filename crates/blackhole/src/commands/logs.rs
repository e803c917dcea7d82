//! `blackhole logs`: like `docker compose logs`.

use std::io::Write;

use blackhole_api::LogLine;

use super::encode;
use crate::cli::LogsArgs;
use crate::client::{Client, ClientError};
use crate::code;
use crate::render;

pub async fn run(client: &Client, args: LogsArgs) -> Result<u8, ClientError> {
    let mut query = vec![format!("tail={}", encode(&args.tail))];
    if args.follow {
        query.push("follow=true".into());
    }
    if !args.names.is_empty() {
        query.push(format!(
            "service={}",
            args.names
                .iter()
                .map(|n| encode(n))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    let path = format!("/v1/logs?{}", query.join("&"));
    let colour = render::colour_enabled();
    let width = args
        .names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(12)
        .max(4);
    let stdout = std::io::stdout();
    let mut result = Ok(());
    client
        .lines(&path, "application/x-ndjson", |raw| {
            let mut out = stdout.lock();
            if args.json {
                let _ = out.write_all(raw);
                let _ = out.write_all(b"\n");
                return;
            }
            let Ok(line) = serde_json::from_slice::<LogLine>(raw) else {
                result = Err(ClientError::Other(
                    "unexpected log record from the orchestrator".into(),
                ));
                return;
            };
            let text = if line.stream == "blackhole" {
                format!("[{}]", line.line)
            } else {
                line.line
            };
            let written = if args.no_prefix {
                writeln!(out, "{text}")
            } else if colour {
                let c = render::name_colour(&line.service);
                writeln!(out, "\x1b[{c}m{:<width$}\x1b[0m | {text}", line.service)
            } else {
                writeln!(out, "{:<width$} | {text}", line.service)
            };
            if written.is_err() {
                // stdout closed (`| head`): stop quietly.
                std::process::exit(0);
            }
        })
        .await?;
    result.map(|()| code::OK)
}
