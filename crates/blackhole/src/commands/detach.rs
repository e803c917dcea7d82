//! `blackhole up -d`: start the orchestrator in the background and return
//! once its control socket answers.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blackhole_core::config::{self, LoadOptions};
use blackhole_os::host::SystemHost;

use crate::cli::{Global, UpArgs};
use crate::client::Client;
use crate::code;

pub fn run(global: &Global, config_path: &Path, explicit: bool, args: &UpArgs) -> u8 {
    let options = LoadOptions {
        services_dir: args.services_dir.clone(),
    };
    let loaded = config::load(config_path, explicit, &options, &SystemHost);
    let Some(config) = loaded.config else {
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        return code::FAILED;
    };
    let state_dir = &config.orchestrator.state_dir;
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        eprintln!("blackhole: cannot create {}: {e}", state_dir.display());
        return code::FAILED;
    }
    let log_path = state_dir.join("blackhole.log");
    let log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("blackhole: cannot open {}: {e}", log_path.display());
            return code::FAILED;
        }
    };
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("blackhole: cannot find my own executable");
        return code::FAILED;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("up");
    if explicit {
        cmd.arg("-c").arg(config_path);
    }
    if let Some(dir) = &args.services_dir {
        cmd.arg("--services-dir").arg(dir);
    }
    if let Some(level) = &args.log_level {
        cmd.arg("--log-level").arg(level);
    }
    if let Some(f) = args.log_format {
        cmd.arg("--log-format").arg(match f {
            crate::cli::LogFormatArg::Text => "text",
            crate::cli::LogFormatArg::Json => "json",
        });
    }
    let stderr = match log.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("blackhole: {e}");
            return code::FAILED;
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("blackhole: cannot start the orchestrator: {e}");
            return code::FAILED;
        }
    };
    let socket = super::socket_path(global, config_path);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blackhole: {e}");
            return code::FAILED;
        }
    };
    let client = Client::new(socket.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("blackhole: the orchestrator exited during start-up ({status}); its log:");
            if let Ok(text) = std::fs::read_to_string(&log_path) {
                let lines: Vec<&str> = text.lines().collect();
                for l in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("  {l}");
                }
            }
            return code::FAILED;
        }
        let healthy = runtime
            .block_on(client.json::<blackhole_api::Health>(hyper::Method::GET, "/v1/health"));
        if let Ok(h) = healthy
            && h.pid == child.id()
        {
            println!(
                "blackhole is up (pid {}); control socket {}",
                h.pid,
                socket.display()
            );
            println!("its log: {}", log_path.display());
            return code::OK;
        }
        if Instant::now() > deadline {
            eprintln!(
                "blackhole: the orchestrator did not answer on {} within 30 s; see {}",
                socket.display(),
                log_path.display()
            );
            return code::FAILED;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
