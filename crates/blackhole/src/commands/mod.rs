//! One module per verb.

pub mod check;
pub mod detach;
mod events;
mod logs;
mod manage;
mod status;
pub mod top;

use std::path::{Path, PathBuf};

use blackhole_core::config;

use crate::cli::{Command, Global, LogFormatArg, UpArgs};
use crate::client::{Client, ClientError};
use crate::code;

/// `blackhole up` in the foreground.
pub fn up(config: &Path, explicit: bool, args: UpArgs) -> u8 {
    let log_level = match args.log_level.as_deref().map(str::parse) {
        None => None,
        Some(Ok(level)) => Some(level),
        Some(Err(e)) => {
            eprintln!("blackhole: --log-level: {e}");
            return 2;
        }
    };
    let opts = blackhole_daemon::UpOptions {
        config: config.to_path_buf(),
        explicit,
        services_dir: args.services_dir,
        log_format: args.log_format.map(|f| match f {
            LogFormatArg::Text => config::LogFormat::Text,
            LogFormatArg::Json => config::LogFormat::Json,
        }),
        log_level,
    };
    blackhole_daemon::up(opts).clamp(0, 255) as u8
}

/// Where the orchestrator for this config listens: `--socket` or
/// `$BLACKHOLE_SOCKET`, else the config's `socket`, else
/// `.blackhole/control.sock` beside the config (or its `state_dir`).
pub fn socket_path(global: &Global, config: &Path) -> PathBuf {
    match &global.socket {
        Some(s) => s.clone(),
        None => config::control_socket(config),
    }
}

/// The verbs that talk to a running orchestrator.
pub async fn remote(client: &Client, command: Command) -> Result<u8, ClientError> {
    match command {
        Command::Status(args) => status::run(client, args).await,
        Command::Start(t) => manage::act(client, "start", t).await,
        Command::Stop(t) => manage::act(client, "stop", t).await,
        Command::Restart(t) => manage::act(client, "restart", t).await,
        Command::Reload => manage::reload(client).await,
        Command::Down => manage::down(client).await,
        Command::Logs(args) => logs::run(client, args).await,
        Command::Events(args) => events::run(client, args).await,
        Command::Top(args) => top::run(client, args).await,
        Command::Up(_) | Command::Check | Command::Completions { .. } => Ok(code::OK),
    }
}

/// Percent-encodes a path segment or query value (service names are
/// restricted, but users type anything).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
