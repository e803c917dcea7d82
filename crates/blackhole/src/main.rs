//! `blackhole`: the orchestrator (`up`) and its command-line client.

mod cli;
mod client;
mod commands;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use client::ClientError;

/// Exit codes: 0 success, 1 the operation failed, 2 usage error (clap),
/// 3 no orchestrator running.
pub mod code {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const NOT_RUNNING: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, explicit) = match &cli.global.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("blackhole.toml"), false),
    };
    let code = match cli.command {
        Command::Up(args) if args.detach => {
            commands::detach::run(&cli.global, &config, explicit, &args)
        }
        Command::Up(args) => commands::up(&config, explicit, args),
        Command::Check => commands::check::run(&config, explicit),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "blackhole",
                &mut std::io::stdout(),
            );
            code::OK
        }
        other => {
            let socket = commands::socket_path(&cli.global, &config);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("blackhole: cannot start: {e}");
                    return ExitCode::from(code::FAILED);
                }
            };
            let client = client::Client::new(socket);
            match runtime.block_on(commands::remote(&client, other)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("blackhole: {e}");
                    match e {
                        ClientError::NotRunning { .. } => code::NOT_RUNNING,
                        _ => code::FAILED,
                    }
                }
            }
        }
    };
    ExitCode::from(code)
}
