//! The modes, each a function that never returns: every exit is explicit.

use crate::args::Cli;

mod basic;
mod load;
mod net;
mod output;
mod procs;

pub struct Mode {
    pub name: &'static str,
    /// Options the mode accepts besides `--term-exit-code` and `--term-delay`.
    pub opts: &'static [&'static str],
    pub run: fn(&Cli) -> !,
}

const fn m(name: &'static str, opts: &'static [&'static str], run: fn(&Cli) -> !) -> Mode {
    Mode { name, opts, run }
}

const PRINT: &[&str] = &[
    "lines",
    "size",
    "stderr",
    "both",
    "no-final-newline",
    "then",
    "rate",
];

pub const MODES: &[Mode] = &[
    m("pause", &[], basic::pause),
    m("run", &["print-every"], basic::run),
    m("ignore-term", &[], basic::ignore_term),
    m("exit", &["after", "code", "signal"], basic::exit),
    m("setsid-child", &[], procs::setsid_child),
    m("count-term", &[], procs::count_term),
    m("daemonize", &["exit-after-fork"], procs::daemonize),
    m("print", PRINT, output::print),
    m("flood", &["bytes", "byte", "then"], output::flood),
    m("garbage", &["bytes"], output::garbage),
    m("env", &["then"], output::env),
    m("id", &["then"], output::id),
    m("limits", &["then"], output::limits),
    m("hog", &["mib", "step", "hold-ms"], load::hog),
    m("burn", &["threads"], load::burn),
    m("forkbomb", &[], procs::forkbomb),
    m(
        "notify",
        &["delay", "message", "watchdog-every", "watchdog-count"],
        net::notify,
    ),
    m("ready-fd", &["delay", "fd"], basic::ready_fd),
    m(
        "http",
        &["port", "status", "fail-after", "delay"],
        net::http,
    ),
    m("tcp", &["port", "delay"], net::tcp),
    m("stamp", &["file", "name"], basic::stamp),
    m("close-stdio", &[], basic::close_stdio),
    m(
        "exit-with-grandchild-holding-pipes",
        &["hold-ms"],
        procs::grandchild_holding_pipes,
    ),
    m("pidfile", &["file"], basic::pidfile),
];

fn started() {
    say!("started pid={}", std::process::id());
}

/// `--then exit|wait`, read up front so a bad value fails before any output.
fn finish(cli: &Cli, wait: bool) -> ! {
    if wait {
        crate::sig::run_until_term(cli)
    }
    std::process::exit(0)
}
