//! `blackhole status` / `ps`.

use blackhole_api::{ServiceList, ServiceStatus};
use hyper::Method;

use super::encode;
use crate::cli::StatusArgs;
use crate::client::{Client, ClientError};
use crate::code;
use crate::render::{self, table};

pub async fn run(client: &Client, args: StatusArgs) -> Result<u8, ClientError> {
    let services: Vec<ServiceStatus> = if args.names.is_empty() {
        client
            .json::<ServiceList>(Method::GET, "/v1/services")
            .await?
            .services
    } else {
        let mut out = Vec::new();
        for name in &args.names {
            out.push(
                client
                    .json(Method::GET, &format!("/v1/services/{}", encode(name)))
                    .await?,
            );
        }
        out
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&ServiceList { services }).unwrap_or_default()
        );
        return Ok(code::OK);
    }
    let colour = render::colour_enabled();
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let mut state = render::state(s.state, colour);
            if !s.enabled {
                state.push_str(" (disabled)");
            }
            let note = note(s);
            vec![
                s.name.clone(),
                state,
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.uptime_secs.map_or("-".into(), render::duration),
                s.restarts.to_string(),
                s.last_exit.as_ref().map_or("-".into(), |x| x.short()),
                s.usage
                    .as_ref()
                    .map_or("-".into(), |u| format!("{:.1}", u.cpu_percent)),
                s.usage
                    .as_ref()
                    .map_or("-".into(), |u| render::bytes(u.memory_bytes)),
                note,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "STATE",
                "PID",
                "UPTIME",
                "RESTARTS",
                "LAST EXIT",
                "CPU%",
                "MEM",
                "NOTE"
            ],
            &rows
        )
    );
    Ok(code::OK)
}

/// The one thing worth knowing about a service beyond its state.
fn note(s: &ServiceStatus) -> String {
    use blackhole_api::State;
    match s.state {
        State::Blocked => s.blocked_on.clone().unwrap_or_default(),
        State::Restarting => match (s.next_start_secs, &s.last_error) {
            (Some(n), Some(e)) => format!("{e}; next start in {n:.1}s"),
            (Some(n), None) => format!("next start in {n:.1}s"),
            (None, e) => e.clone().unwrap_or_default(),
        },
        State::Running if !s.ready => format!(
            "not ready: {}",
            s.readiness
                .as_ref()
                .map_or("readiness lost", |r| r.message.as_str())
        ),
        State::Running | State::Starting => s.status_text.clone().unwrap_or_default(),
        State::Failed | State::Exited => s.last_error.clone().unwrap_or_default(),
        State::Stopped | State::Stopping => String::new(),
    }
}
