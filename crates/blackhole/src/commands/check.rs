//! `blackhole check`: validate without running anything.

use std::path::Path;

use blackhole_core::config::CgroupMode;
use blackhole_core::config::{self, LoadOptions, Origin};
use blackhole_os::host::SystemHost;
use blackhole_os::track::{Controller, Layout, Mounts, Place};

use crate::code;
use crate::render::table;

pub fn run(config: &Path, explicit: bool) -> u8 {
    let loaded = config::load(config, explicit, &LoadOptions::default(), &SystemHost);
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

    // What this machine can enforce, decided as `up` would, without
    // creating anything.
    let orch = &c.orchestrator;
    let allow = orch.cgroups != CgroupMode::Off;
    let instance = blackhole_daemon::instance_name(&orch.state_dir);
    let base_rel = std::path::Path::new(&orch.cgroup_parent).join(instance);
    let layout = Layout::probe(&Mounts::detect(), &base_rel, allow);
    println!("\nisolation on this machine:");
    for note in &layout.notes {
        println!("  {note}");
    }
    println!(
        "  users: {}",
        if blackhole_os::system::is_root() {
            "running as root: services may switch user and group"
        } else {
            "not root: `user` and `group` cannot be used"
        }
    );
    let mut limit_errors = 0;
    for (name, s) in &c.services {
        for key in s.cgroup_limits() {
            let controller = match key {
                "cpu_quota" => Controller::Cpu,
                "pids_limit" => Controller::Pids,
                _ => Controller::Memory,
            };
            match layout.controllers.get(&controller) {
                Some(Place::V2(p)) => {
                    println!("  {name}: {key} enforced by cgroup v2 ({})", p.display())
                }
                Some(Place::V1(p)) => println!(
                    "  {name}: {key} enforced by cgroup v1 {controller} ({})",
                    p.display()
                ),
                None if orch.cgroups == CgroupMode::Optional => {
                    println!(
                        "  {name}: {key} NOT enforced (no writable {controller} controller; cgroups = \"optional\")"
                    )
                }
                None => {
                    limit_errors += 1;
                    eprintln!(
                        "error: service `{name}`: {key} cannot be enforced: no writable {controller} cgroup controller; \
                         set cgroups = \"optional\" to run it without the limit"
                    );
                }
            }
        }
    }
    let errors = loaded.errors().count() + limit_errors;
    let warnings = loaded.diagnostics.len() - loaded.errors().count();
    println!(
        "\n{} services, {errors} error(s), {warnings} warning(s)",
        c.services.len() + c.invalid.len()
    );
    if errors > 0 { code::FAILED } else { code::OK }
}
