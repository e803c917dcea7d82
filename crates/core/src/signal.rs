//! Signal names as they appear in configuration and status output.
//!
//! The numbers are Linux's generic ABI (x86, arm, riscv); this crate has no
//! libc, so the table lives here and the OS layer uses the number as is.

use std::fmt;
use std::str::FromStr;

/// A POSIX signal by its Linux number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(i32);

const NAMES: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGILL", 4),
    ("SIGTRAP", 5),
    ("SIGABRT", 6),
    ("SIGBUS", 7),
    ("SIGFPE", 8),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGSEGV", 11),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGSTKFLT", 16),
    ("SIGCHLD", 17),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGTSTP", 20),
    ("SIGTTIN", 21),
    ("SIGTTOU", 22),
    ("SIGURG", 23),
    ("SIGXCPU", 24),
    ("SIGXFSZ", 25),
    ("SIGVTALRM", 26),
    ("SIGPROF", 27),
    ("SIGWINCH", 28),
    ("SIGIO", 29),
    ("SIGPWR", 30),
    ("SIGSYS", 31),
];

impl Signal {
    pub const HUP: Signal = Signal(1);
    pub const INT: Signal = Signal(2);
    pub const QUIT: Signal = Signal(3);
    pub const KILL: Signal = Signal(9);
    pub const USR1: Signal = Signal(10);
    pub const USR2: Signal = Signal(12);
    pub const TERM: Signal = Signal(15);

    /// A signal from its number; real-time signals (34..=64) are accepted too.
    pub fn from_number(n: i32) -> Option<Signal> {
        if (1..=31).contains(&n) || (34..=64).contains(&n) {
            Some(Signal(n))
        } else {
            None
        }
    }

    /// Any signal a process can die of, for exit statuses: also 32 and 33,
    /// which glibc keeps for itself and configuration refuses, but which
    /// `kill -32` still delivers.
    pub fn from_exit(n: i32) -> Option<Signal> {
        (1..=64).contains(&n).then_some(Signal(n))
    }

    pub fn number(self) -> i32 {
        self.0
    }

    /// `SIGTERM`, or `SIGRTMIN+3` for real-time signals.
    pub fn name(self) -> String {
        match NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => (*name).to_string(),
            None if self.0 >= 34 => format!("SIGRTMIN+{}", self.0 - 34),
            None => format!("signal {}", self.0),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Accepts `SIGTERM`, `TERM`, `sigterm` and `15`.
impl FromStr for Signal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(|| format!("{n} is not a signal number"));
        }
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        NAMES
            .iter()
            .find(|(name, _)| *name == full)
            .map(|(_, n)| Signal(*n))
            .ok_or_else(|| {
                format!("unknown signal `{s}`, expected a name such as SIGTERM or SIGINT")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!("SIGTERM".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("term".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::KILL);
        assert_eq!(Signal::KILL.name(), "SIGKILL");
        assert_eq!(Signal::from_number(35).unwrap().name(), "SIGRTMIN+1");
        assert!("SIGFOO".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("32".parse::<Signal>().is_err());
        // An exit by it is still named, not taken for another signal.
        assert_eq!(Signal::from_exit(32).unwrap().name(), "signal 32");
        assert_eq!(Signal::from_exit(40), Signal::from_number(40));
        assert_eq!(Signal::from_exit(65), None);
    }
}
