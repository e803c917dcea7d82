//! Hand-rolled argument parsing: `[--service NAME] [--log-level LEVEL] MODE
//! [--key value | --flag]...`, kept dependency-free so the binary stays tiny.

use std::str::FromStr;
use std::time::Duration;

/// Options that take no value; every other option takes exactly one.
const FLAGS: &[&str] = &["stderr", "both", "no-final-newline", "exit-after-fork"];
/// Options every mode accepts.
const COMMON: &[&str] = &["term-exit-code", "term-delay"];

#[derive(Debug)]
pub struct Cli {
    pub argv: Vec<String>,
    pub service: Option<String>,
    pub mode: String,
    /// Exit code and delay used when SIGTERM ends the process.
    pub term_code: i32,
    pub term_delay: Duration,
    opts: Vec<(String, Option<String>)>,
}

pub fn parse(argv: Vec<String>) -> Result<Cli, String> {
    let mut it = argv.iter().skip(1);
    let mut service = None;
    let mut mode = None;
    while let Some(arg) = it.next() {
        let Some(opt) = arg.strip_prefix("--") else {
            mode = Some(arg.clone());
            break;
        };
        let (key, val) = split_value(opt, &mut it)?;
        match key {
            "service" => service = val,
            "log-level" => {}
            _ => return Err(format!("unknown option --{key} before the mode")),
        }
    }
    let mode = mode.ok_or("missing MODE")?;
    let mut opts = Vec::new();
    while let Some(arg) = it.next() {
        let opt = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        let (key, val) = split_value(opt, &mut it)?;
        opts.push((key.to_string(), val));
    }
    let mut cli = Cli {
        argv,
        service,
        mode,
        term_code: 0,
        term_delay: Duration::ZERO,
        opts,
    };
    cli.term_code = cli.try_num("term-exit-code", 0)?;
    cli.term_delay = Duration::from_millis(cli.try_num("term-delay", 0)?);
    Ok(cli)
}

/// Splits `key=value`, or takes the value from the next argument unless `key` is a flag.
fn split_value<'a>(
    opt: &'a str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<(&'a str, Option<String>), String> {
    let (key, inline) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (opt, None),
    };
    if FLAGS.contains(&key) {
        return match inline {
            Some(_) => Err(format!("--{key} takes no value")),
            None => Ok((key, None)),
        };
    }
    match inline.or_else(|| rest.next().cloned()) {
        Some(v) => Ok((key, Some(v))),
        None => Err(format!("--{key} needs a value")),
    }
}

impl Cli {
    /// Rejects options the mode does not know, so a typo never silently does nothing.
    pub fn check(&self, allowed: &[&str]) -> Result<(), String> {
        match self
            .opts
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()) && !COMMON.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("mode {} has no option --{k}", self.mode)),
            None => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let found = self.opts.iter().rev().find(|(k, _)| k == key);
        found.and_then(|(_, v)| v.as_deref())
    }

    pub fn required(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| usage(&format!("mode {} needs --{key}", self.mode)))
    }

    pub fn flag(&self, key: &str) -> bool {
        self.opts.iter().any(|(k, _)| k == key)
    }

    fn try_num<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        self.get(key).map_or(Ok(default), |v| parse_value(key, v))
    }

    pub fn num<T: FromStr>(&self, key: &str, default: T) -> T {
        self.try_num(key, default).unwrap_or_else(|e| usage(&e))
    }

    pub fn opt_num<T: FromStr>(&self, key: &str) -> Option<T> {
        let v = self.get(key)?;
        Some(parse_value(key, v).unwrap_or_else(|e| usage(&e)))
    }

    pub fn ms(&self, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.num(key, default))
    }

    /// `--then exit|wait`: whether to stay up until SIGTERM after the work is done.
    pub fn then_wait(&self) -> bool {
        match self.get("then") {
            None | Some("exit") => false,
            Some("wait") => true,
            Some(v) => usage(&format!("--then: expected exit or wait, got {v:?}")),
        }
    }
}

fn parse_value<T: FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("--{key}: bad number {v:?}"))
}

/// Exit code 2: the command line is wrong.
pub fn usage(msg: &str) -> ! {
    crate::complain(format_args!(
        "{msg}\nusage: bh-testsvc [--service NAME] [--log-level LEVEL] MODE [--option value]..."
    ));
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &str) -> Result<Cli, String> {
        parse(args.split(' ').map(String::from).collect())
    }

    #[test]
    fn globals_before_the_mode_are_taken_out() {
        let cli =
            p("bin --service web --log-level=debug print --lines 5 --stderr --size=9").unwrap();
        assert_eq!(cli.service.as_deref(), Some("web"));
        assert_eq!(cli.mode, "print");
        assert_eq!(cli.num("lines", 0u64), 5);
        assert_eq!(cli.num("size", 0u64), 9);
        assert!(cli.flag("stderr") && !cli.flag("both"));
        assert!(cli.check(&["lines", "size", "stderr"]).is_ok());
        assert!(cli.check(&["lines"]).is_err());
        assert_eq!(cli.argv.len(), 9);
    }

    #[test]
    fn term_options_and_errors() {
        let cli = p("bin run --term-exit-code 7 --term-delay 250").unwrap();
        assert_eq!(
            (cli.term_code, cli.term_delay),
            (7, Duration::from_millis(250))
        );
        assert!(p("bin").is_err());
        assert!(p("bin --bogus x run").is_err());
        assert!(p("bin run --print-every").is_err());
        assert!(p("bin run stray").is_err());
        assert!(p("bin run --stderr=1").is_err());
        assert!(p("bin run --term-delay soon").is_err());
    }
}
