//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "blackhole",
    version,
    about = "Supervise a stack of services: start them in order, keep them running, capture their logs",
    long_about = None,
    propagate_version = true,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Configuration file [default: ./blackhole.toml]
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "BLACKHOLE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Control socket of a running orchestrator (instead of finding it from the config)
    #[arg(long, global = true, env = "BLACKHOLE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the orchestrator (in the foreground unless -d)
    Up(UpArgs),
    /// Validate the configuration and discovery; print the effective services
    Check,
    /// Show services: NAME, STATE, PID, UPTIME, RESTARTS, LAST EXIT
    #[command(visible_alias = "ps")]
    Status(StatusArgs),
    /// Start services (and wait until they run)
    Start(Targets),
    /// Stop services (and wait until nothing of them remains)
    Stop(Targets),
    /// Restart services (a pending backoff is skipped)
    Restart(Targets),
    /// Show service output, interleaved and prefixed with the service name
    Logs(LogsArgs),
    /// Re-read the configuration and apply what changed
    Reload,
    /// Stop every service, then the orchestrator
    Down,
    /// Follow state changes as they happen
    Events(EventsArgs),
    /// A live dashboard: services, resource use, logs; keys to start, stop, restart
    Top(TopArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Services folder (overrides `services_dir`)
    #[arg(long, value_name = "DIR")]
    pub services_dir: Option<PathBuf>,
    /// Start in the background and return once the control socket answers
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Format of the orchestrator's own log
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Level of the orchestrator's own log (overrides `log_level`)
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only these services
    pub names: Vec<String>,
    /// Print {"services": [...]} as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Targets {
    /// Services to act on
    #[arg(required_unless_present = "all")]
    pub names: Vec<String>,
    /// Every service
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Give up waiting after this long (the operation goes on)
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Only these services (default: all)
    pub names: Vec<String>,
    /// Keep printing new lines as they arrive
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines from the end of each log to show first (`all` for everything kept in memory)
    #[arg(short = 'n', long = "tail", default_value = "100")]
    pub tail: String,
    /// Print NDJSON records instead of text
    #[arg(long)]
    pub json: bool,
    /// Hide the service-name prefix
    #[arg(long)]
    pub no_prefix: bool,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// How often resource use is refreshed
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Print NDJSON records instead of text
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    blackhole_core::config::value::parse_duration(s)
}
