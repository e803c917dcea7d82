//! The orchestrator's own log: `tracing`, as text for people or JSON for
//! machines, with a level that a reload can change.
//!
//! Service lines (target `service`) read like `docker compose`:
//! `2026-11-29T03:32:54.123Z web     | the line`.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use blackhole_core::config::{LogFormat, LogLevel};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

/// Changes the level while running.
#[derive(Clone)]
pub struct Telemetry {
    handle: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
}

fn filter(level: LogLevel) -> EnvFilter {
    // BLACKHOLE_LOG takes full directives for debugging
    // (`BLACKHOLE_LOG=debug,service=off`).
    match std::env::var("BLACKHOLE_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        _ => EnvFilter::new(level.as_str()),
    }
}

impl Telemetry {
    /// Installs the global subscriber writing to stderr. Safe to call
    /// twice (the second call changes nothing), which tests rely on.
    pub fn init(level: LogLevel, format: LogFormat) -> Telemetry {
        let (filter_layer, handle) = reload::Layer::new(filter(level));
        let ansi = std::io::stderr().is_terminal();
        let result = match format {
            LogFormat::Json => tracing_subscriber::registry()
                .with(filter_layer)
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(false)
                        .with_writer(StderrWriter),
                )
                .try_init(),
            LogFormat::Text => tracing_subscriber::registry()
                .with(filter_layer)
                .with(
                    tracing_subscriber::fmt::layer()
                        .event_format(TextFormat)
                        .with_ansi(ansi)
                        .with_writer(StderrWriter),
                )
                .try_init(),
        };
        Telemetry {
            handle: result.is_ok().then_some(handle),
        }
    }

    /// No subscriber (library use, tests).
    pub fn none() -> Telemetry {
        Telemetry { handle: None }
    }

    pub fn set_level(&self, level: LogLevel) {
        if let Some(h) = &self.handle {
            // Said before the change, so that it shows at any new level.
            tracing::info!("log level changes to {level}");
            if let Err(e) = h.reload(filter(level)) {
                tracing::warn!("cannot change the log level: {e}");
            }
        }
    }
}

/// The orchestrator's lines from the runtime thread are held and written
/// together when that thread runs out of work ([`flush_held`], from the
/// runtime's park hook), or once [`HOLD_BYTES`] are held or the first has
/// waited [`HOLD_FOR`] (looked at when the next line comes): a stop of
/// hundreds of services logs a line or two for each, and an echo of
/// service output one per line, each a write of its own before. Warnings
/// and errors are written at once (after what is held), so that the lines
/// that explain a hang or a crash are out before it; so are other
/// threads' lines.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

const HOLD_BYTES: usize = 8 * 1024;
const HOLD_FOR: Duration = Duration::from_millis(50);

impl Held {
    /// Adds a line; whether what is held is due to be written.
    fn hold(&mut self, line: &[u8], now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        self.bytes.extend_from_slice(line);
        self.bytes.len() >= HOLD_BYTES || now.duration_since(since) >= HOLD_FOR
    }

    fn write_to(&mut self, out: &mut impl Write) {
        if !self.bytes.is_empty() {
            // Nowhere to report a failed write of the log itself.
            let _ = out.write_all(&self.bytes);
        }
        self.bytes.clear();
        self.since = None;
    }
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Holds this thread's lines from now on (the runtime thread's).
pub fn hold_on_this_thread() {
    HELD.with(|h| *h.borrow_mut() = Some(Held::default()));
}

/// Writes what this thread holds (nothing if it is being written: a
/// panic inside the write itself).
pub fn flush_held() {
    let _ = HELD.try_with(|h| {
        if let Ok(mut h) = h.try_borrow_mut()
            && let Some(held) = h.as_mut()
        {
            held.write_to(&mut io::stderr());
        }
    });
}

/// Writes what is held before a panic's message.
pub fn flush_held_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_held();
        previous(info);
    }));
}

/// Makes a [`Stderr`] for each event: urgent for warnings and errors.
struct StderrWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrWriter {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr { urgent: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Stderr {
        Stderr {
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Standard error, through [`Held`] on a thread that holds.
struct Stderr {
    urgent: bool,
}

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let held = HELD
            .try_with(|h| match h.try_borrow_mut().as_deref_mut() {
                Ok(Some(held)) => {
                    if held.hold(line, Instant::now()) || self.urgent {
                        held.write_to(&mut io::stderr());
                    }
                    true
                }
                _ => false,
            })
            .unwrap_or(false);
        if held {
            Ok(line.len())
        } else {
            io::stderr().write(line)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Collects the fields the text format shows specially.
#[derive(Default)]
struct Fields {
    message: String,
    service: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "service" => self.service = Some(value.to_string()),
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message.push_str(&format!("{value:?}")),
            "service" => self.service = Some(format!("{value:?}").trim_matches('"').to_string()),
            name => self.rest.push_str(&format!(" {name}={value:?}")),
        }
    }
}

struct TextFormat;

const COLOURS: [u8; 6] = [36, 32, 33, 35, 34, 31];

fn colour_of(name: &str) -> u8 {
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    COLOURS[h as usize % COLOURS.len()]
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut f = Fields::default();
        event.record(&mut f);
        let ts = humantime::format_rfc3339_millis(SystemTime::now());
        let ansi = w.has_ansi_escapes();
        if meta.target() == crate::logs::ECHO_TARGET {
            let name = f.service.unwrap_or_default();
            if ansi {
                let c = colour_of(&name);
                let bar = if *meta.level() == tracing::Level::WARN {
                    "\x1b[1m!\x1b[0m"
                } else {
                    "|"
                };
                return writeln!(
                    w,
                    "\x1b[2m{ts}\x1b[0m \x1b[{c}m{name:<12}\x1b[0m {bar} {}",
                    f.message
                );
            }
            let bar = if *meta.level() == tracing::Level::WARN {
                "!"
            } else {
                "|"
            };
            return writeln!(w, "{ts} {name:<12} {bar} {}", f.message);
        }
        let level = meta.level();
        let service = f.service.map(|s| format!("{s}: ")).unwrap_or_default();
        if ansi {
            let c = match *level {
                tracing::Level::ERROR => 31,
                tracing::Level::WARN => 33,
                tracing::Level::INFO => 32,
                _ => 34,
            };
            writeln!(
                w,
                "\x1b[2m{ts}\x1b[0m \x1b[{c}m{level:>5}\x1b[0m {service}{}\x1b[2m{}\x1b[0m",
                f.message, f.rest
            )
        } else {
            writeln!(w, "{ts} {level:>5} {service}{}{}", f.message, f.rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_held_until_enough_bytes_or_time() {
        let t0 = Instant::now();
        let mut held = Held::default();
        let line = [b'x'; 100];
        let mut n = 0;
        while !held.hold(&line, t0 + Duration::from_millis(1)) {
            n += 1;
        }
        assert_eq!(
            n + 1,
            HOLD_BYTES.div_ceil(100),
            "due once {HOLD_BYTES} bytes are held"
        );
        let mut out = Vec::new();
        held.write_to(&mut out);
        assert_eq!(out.len(), (n + 1) * 100);
        assert!(held.bytes.is_empty() && held.since.is_none());
        assert!(!held.hold(b"one\n", t0));
        assert!(!held.hold(b"two\n", t0 + HOLD_FOR / 2));
        assert!(
            held.hold(b"three\n", t0 + HOLD_FOR),
            "due once the first waited {HOLD_FOR:?}"
        );
        out.clear();
        held.write_to(&mut out);
        assert_eq!(out, b"one\ntwo\nthree\n");
    }
}
