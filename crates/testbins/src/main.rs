//! `bh-testsvc`: a real fake service for blackhole's integration tests and
//! benchmarks. One binary, many behaviours (modes); see `modes` for the list.

use std::fmt;
use std::io::{self, Write};

/// `println!` that flushes at once and never panics on a closed stdout.
macro_rules! say {
    ($($t:tt)*) => { $crate::say(format_args!($($t)*)) };
}

mod args;
mod modes;
mod sig;

fn main() {
    let argv = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = args::parse(argv).unwrap_or_else(|e| args::usage(&e));
    let Some(mode) = modes::MODES.iter().find(|m| m.name == cli.mode) else {
        let names: Vec<_> = modes::MODES.iter().map(|m| m.name).collect();
        args::usage(&format!(
            "unknown mode {:?}; modes: {}",
            cli.mode,
            names.join(", ")
        ))
    };
    cli.check(mode.opts).unwrap_or_else(|e| args::usage(&e));
    sig::block_term();
    (mode.run)(&cli)
}

/// Output errors are ignored: the supervisor under test may close our pipes,
/// and the service must keep behaving as its mode says.
pub fn say(line: fmt::Arguments) {
    let mut out = io::stdout().lock();
    let _ = out.write_fmt(format_args!("{line}\n"));
    let _ = out.flush();
}

pub fn complain(msg: fmt::Arguments) {
    let _ = writeln!(io::stderr(), "bh-testsvc: {msg}");
}

/// Exit code 1: the mode could not do its job (a file, socket or fork failed).
pub fn die(msg: impl fmt::Display) -> ! {
    complain(format_args!("{msg}"));
    std::process::exit(1)
}
