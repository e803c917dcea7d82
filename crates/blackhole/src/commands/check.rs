//! `blackhole check`: validate without running anything.

use std::path::Path;

use blackhole_core::config::{self, FsDiscovery, LoadOptions, Origin};

use crate::code;
use crate::render::table;

pub fn run(config: &Path, explicit: bool) -> u8 {
    let loaded = config::load(config, explicit, &LoadOptions::default(), &FsDiscovery);
    for d in &loaded.diagnostics {
        eprintln!("{d}\n");
    }
    let Some(c) = &loaded.config else {
        eprintln!("blackhole: the configuration cannot be used");
        return code::FAILED;
    };
    match &c.file {
        Some(f) => println!("config:   {}", f.display()),
        None => println!("config:   none (discovery only, defaults)"),
    }
    println!("services: {}", c.orchestrator.services_dir.display());
    println!("socket:   {}", c.orchestrator.socket.display());
    println!("logs:     {}\n", c.orchestrator.log_dir.display());
    let mut rows = Vec::new();
    for (name, s) in &c.services {
        let origin = match s.origin {
            Origin::Discovered => "discovered".to_string(),
            Origin::Configured { line } => format!("config:{line}"),
            Origin::Both { line } => format!("discovered+config:{line}"),
        };
        let restart = match s.restart.max_attempts {
            0 => format!("{}", s.restart.policy),
            n => format!("{} (max {n})", s.restart.policy),
        };
        rows.push(vec![
            name.clone(),
            if s.enabled { "yes" } else { "no" }.to_string(),
            restart,
            s.binary.display().to_string(),
            origin,
        ]);
    }
    for (name, error) in &c.invalid {
        rows.push(vec![
            name.clone(),
            "INVALID".into(),
            "-".into(),
            error.clone(),
            "-".into(),
        ]);
    }
    print!(
        "{}",
        table(&["NAME", "ENABLED", "RESTART", "BINARY", "ORIGIN"], &rows)
    );
    let errors = loaded.errors().count();
    let warnings = loaded.diagnostics.len() - errors;
    println!(
        "\n{} services, {errors} error(s), {warnings} warning(s)",
        c.services.len() + c.invalid.len()
    );
    if errors > 0 { code::FAILED } else { code::OK }
}
