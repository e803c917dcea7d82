//! From file text to resolved specs, reporting every problem at once.
//!
//! The document is parsed into a span-carrying tree first; each service is
//! then deserialized on its own, so one bad service yields its own errors
//! and never hides another's. Orchestrator-level problems (syntax, the
//! `[orchestrator]` table, a missing services folder with nothing
//! configured) are fatal; service-level problems mark only that service
//! invalid.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::{Diagnostic, Severity, SourceText};
use super::discovery::{Account, Host, check_executable};
use super::raw::{
    Condition, IdOrName, ProbeKind, RawOrchestrator, RawProbe, RawRestart, RawService,
    RestartPolicy, ServiceKind,
};
use super::spec::{
    Check, Dependency, OrchestratorSpec, Origin, Probe, RestartSpec, Rlimit, RlimitKind,
    ServiceSpec,
};
use super::value::validate_service_name;
use crate::backoff::Backoff;
use crate::signal::Signal;

pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Each service's latest output kept in memory (`logs -n`, `logs -f`'s
/// start, `top`'s log pane).
pub const DEFAULT_LOG_MEMORY: usize = 256 * 1024;
/// The memory ring's unit: less cannot be kept.
pub const MIN_LOG_MEMORY: u64 = 16 * 1024;
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// Settings from the command line that override the file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--services-dir`, relative to the current directory.
    pub services_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `None` when running on discovery alone (no config file).
    pub file: Option<PathBuf>,
    /// Relative paths in the file resolve against this folder.
    pub base_dir: PathBuf,
    pub orchestrator: OrchestratorSpec,
    /// Every service that can run.
    /// Shared with the service that runs it (a reload replaces it).
    pub services: BTreeMap<String, Arc<ServiceSpec>>,
    /// Services whose configuration is wrong, with the first error; they
    /// are shown in status but never started until fixed.
    pub invalid: BTreeMap<String, String>,
}

impl Config {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.services
            .keys()
            .chain(self.invalid.keys())
            .map(String::as_str)
    }
}

#[derive(Debug)]
pub struct Loaded {
    /// `None` when an orchestrator-level error makes running impossible.
    pub config: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    fn fatal(diagnostics: Vec<Diagnostic>) -> Self {
        Loaded {
            config: None,
            diagnostics,
        }
    }
}

/// Loads `path`. When `explicit` is false and the file does not exist, runs
/// on the embedded default (discovery alone) with `path`'s folder as base.
pub fn load(path: &Path, explicit: bool, options: &LoadOptions, host: &dyn Host) -> Loaded {
    let path = absolute(path);
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_text(Some(SourceText::new(&path, text)), &base_dir, options, host),
            Err(e) => Loaded::fatal(vec![
                Diagnostic::error(format!(
                    "the file is not valid UTF-8 (byte {})",
                    e.utf8_error().valid_up_to()
                ))
                .path(&path),
            ]),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            load_text(None, &base_dir, options, host)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::fatal(vec![
            Diagnostic::error("configuration file not found")
                .path(&path)
                .help("check the path given with -c/--config or $BLACKHOLE_CONFIG"),
        ]),
        Err(e) => Loaded::fatal(vec![
            Diagnostic::error(format!("cannot read the configuration: {e}")).path(&path),
        ]),
    }
}

/// Loads configuration text (`None`: the embedded default, no services).
pub fn load_text(
    source: Option<SourceText>,
    base_dir: &Path,
    options: &LoadOptions,
    host: &dyn Host,
) -> Loaded {
    let base_dir = absolute(base_dir);
    let empty = SourceText::new(base_dir.join("blackhole.toml"), "");
    let src = source.as_ref().unwrap_or(&empty);
    let mut diags = Vec::new();

    let (root, syntax_errors) = DeTable::parse_recoverable(&src.text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            diags.push(
                Diagnostic::error(format!("invalid TOML: {}", e.message())).at(src, e.span()),
            );
        }
        return Loaded::fatal(diags);
    }
    let root = root.into_inner();

    let mut raw_orch = RawOrchestrator::default();
    let mut orch_spans: BTreeMap<&'static str, Range<usize>> = BTreeMap::new();
    let mut raw_services: Vec<(Spanned<String>, Spanned<DeValue>)> = Vec::new();
    for (key, value) in root {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "orchestrator" => match deserialize_orchestrator(value, &mut orch_spans) {
                Ok(o) => raw_orch = o,
                Err(e) => diags.push(
                    Diagnostic::error(format!("[orchestrator]: {}", e.message()))
                        .at(src, e.span())
                        .help("the keys of [orchestrator] are listed in the README's configuration reference"),
                ),
            },
            "services" => match value.into_inner() {
                DeValue::Table(table) => {
                    for (name, service) in table {
                        let span = name.span();
                        raw_services
                            .push((Spanned::new(span, name.into_inner().into_owned()), service));
                    }
                }
                other => diags.push(
                    Diagnostic::error(format!(
                        "`services` must be a table, found {}",
                        other.type_str()
                    ))
                    .at(src, Some(key_span)),
                ),
            },
            other => diags.push(
                Diagnostic::error(format!("unknown top-level key `{other}`"))
                    .at(src, Some(key_span))
                    .help("the file has two tables: [orchestrator] and [services.NAME]"),
            ),
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Loaded::fatal(diags);
    }

    let orchestrator = resolve_orchestrator(
        &raw_orch,
        &base_dir,
        options,
        host,
        src,
        &orch_spans,
        &mut diags,
    );
    if diags.iter().any(Diagnostic::is_error) {
        return Loaded::fatal(diags);
    }
    let discovery = host.discover(&orchestrator.services_dir);

    let mut services = BTreeMap::new();
    let mut invalid = BTreeMap::new();
    let mut configured = BTreeSet::new();
    let mut explicit_binary = BTreeSet::new();
    // Where each service's `depends_on` and `restart_with` are written,
    // for errors found once every service is known.
    let mut dep_spans: BTreeMap<String, DepSpans> = BTreeMap::new();

    for (name, value) in raw_services {
        let name_span = name.span();
        let name = name.into_inner();
        let mut service_diags = Vec::new();
        if let Err(why) = validate_service_name(&name) {
            // The name itself is unusable; it cannot even be shown safely.
            diags.push(Diagnostic::error(why).at(src, Some(name_span)));
            continue;
        }
        configured.insert(name.clone());
        let line = src.locate(name_span.clone()).map_or(0, |l| l.line);
        let spans = SpanIndex(Some(&value));
        dep_spans.insert(
            name.clone(),
            (spans.span(&["depends_on"]), spans.span(&["restart_with"])),
        );
        let value_span = value.span();
        let parsed = match value.get_ref() {
            DeValue::Table(_) => RawService::deserialize(ValueDeserializer::from(value.clone())),
            other => {
                service_diags.push(
                    Diagnostic::error(format!("must be a table, found {}", other.type_str()))
                        .at(src, Some(value_span)),
                );
                Err(serde::de::Error::custom(""))
            }
        };
        match parsed {
            Ok(raw) => {
                if raw.binary_path.is_some() {
                    explicit_binary.insert(name.clone());
                }
                let discovered = discovery.found.iter().any(|f| f.name == name);
                let origin = if discovered {
                    Origin::Both { line }
                } else {
                    Origin::Configured { line }
                };
                let ctx = ServiceCtx {
                    host,
                    name: &name,
                    src,
                    spans,
                    orch: &orchestrator,
                    base_dir: &base_dir,
                };
                match resolve_service(&ctx, &raw, origin, &mut service_diags) {
                    Some(spec) if !service_diags.iter().any(Diagnostic::is_error) => {
                        // Discovery already vetted its own binaries.
                        let vetted = discovered && raw.binary_path.is_none();
                        let problem = if vetted {
                            None
                        } else {
                            check_executable(&spec.binary).err()
                        };
                        let problem = problem.or_else(|| writable_binary(host, &spec));
                        if let Some(problem) = problem {
                            let span = spans.span(&["binary_path"]);
                            service_diags.push(Diagnostic {
                                severity: Severity::Error,
                                ..problem.service(&name).at(src, span)
                            });
                        }
                        services.insert(name.clone(), Arc::new(spec));
                    }
                    _ => {}
                }
            }
            Err(e) if !e.message().is_empty() => {
                service_diags.push(Diagnostic::error(e.message().to_string()).at(src, e.span()));
            }
            Err(_) => {}
        }
        for d in &mut service_diags {
            d.service = Some(name.clone());
        }
        if !services.contains_key(&name) {
            let first = service_diags
                .iter()
                .find(|d| d.is_error())
                .map(Diagnostic::short)
                .unwrap_or_else(|| "invalid configuration".into());
            invalid.insert(name.clone(), first);
        }
        diags.extend(service_diags);
    }

    for found in &discovery.found {
        if configured.contains(&found.name) {
            continue;
        }
        let raw = RawService::default();
        let ctx = ServiceCtx {
            host,
            name: &found.name,
            src,
            spans: SpanIndex::NONE,
            orch: &orchestrator,
            base_dir: &base_dir,
        };
        let mut service_diags = Vec::new();
        if let Some(spec) = resolve_service(&ctx, &raw, Origin::Discovered, &mut service_diags) {
            if let Some(d) = writable_binary(host, &spec) {
                service_diags.push(Diagnostic {
                    severity: Severity::Error,
                    ..d.service(&found.name)
                });
            }
            services.insert(found.name.clone(), Arc::new(spec));
        }
        diags.extend(service_diags);
    }

    for (name, diag) in discovery.skipped {
        // A configured binary_path elsewhere makes an empty folder harmless.
        if explicit_binary.contains(&name) || services.contains_key(&name) {
            continue;
        }
        diags.push(diag);
    }

    check_dependencies(src, &mut services, &mut invalid, &dep_spans, &mut diags);

    if discovery.dir_missing {
        let message = "services folder does not exist";
        let help = "create it, or set `services_dir` in [orchestrator] or --services-dir";
        if configured.is_empty() {
            diags.push(
                Diagnostic::error(message)
                    .path(&orchestrator.services_dir)
                    .help(help),
            );
            return Loaded::fatal(diags);
        }
        diags.push(
            Diagnostic::warning(message)
                .path(&orchestrator.services_dir)
                .help(help),
        );
    }

    Loaded {
        config: Some(Config {
            file: source.map(|s| s.file),
            base_dir,
            orchestrator,
            services,
            invalid,
        }),
        diagnostics: diags,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn resolve_path(base: &Path, value: &str) -> PathBuf {
    absolute(&base.join(value))
}

/// The state folder and the control socket, from `state_dir` and `socket`
/// as written.
fn state_and_socket(
    base_dir: &Path,
    state_dir: Option<&str>,
    socket: Option<&str>,
) -> (PathBuf, PathBuf) {
    let state_dir = state_dir.map_or_else(
        || base_dir.join(".blackhole"),
        |d| resolve_path(base_dir, d),
    );
    let socket = socket.map_or_else(
        || state_dir.join("control.sock"),
        |s| resolve_path(base_dir, s),
    );
    (state_dir, socket)
}

/// Where the orchestrator of the configuration at `path` listens, from
/// `state_dir` and `socket` alone (the defaults when the file is missing
/// or not TOML). A control command needs nothing else, and so works while
/// another part of the file is broken or a service's binary is gone; the
/// full [`load`] also checks every service (a `statx` of each binary).
pub fn control_socket(path: &Path) -> PathBuf {
    #[derive(Default, Deserialize)]
    struct Lean {
        #[serde(default)]
        orchestrator: LeanOrchestrator,
    }
    #[derive(Default, Deserialize)]
    struct LeanOrchestrator {
        state_dir: Option<String>,
        socket: Option<String>,
    }
    let path = absolute(path);
    let base_dir = path.parent().unwrap_or(Path::new("/"));
    let lean: Lean = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| match orchestrator_part(&text) {
            Some(part) => toml::from_str(&part).ok(),
            None => toml::from_str(&text).ok(),
        })
        .unwrap_or_default();
    let o = lean.orchestrator;
    state_and_socket(base_dir, o.state_dir.as_deref(), o.socket.as_deref()).1
}

/// The part of a document that can set `[orchestrator]`'s own keys: what
/// comes before the first table header (where `orchestrator.socket = ..`
/// or an inline `orchestrator = {..}` would be) and the `[orchestrator]`
/// section, to its next header. Found by the TOML lexer and parser's
/// events, which build nothing: decoding the whole document to read two
/// keys was a fifth of a `blackhole status` with 100 services (0.4 of
/// 1.8 ms of CPU). None when this cannot tell (the document is not valid
/// TOML, names `orchestrator` twice as a table, or has a header key with
/// escapes): the caller then decodes it all.
fn orchestrator_part(text: &str) -> Option<String> {
    use toml_parser::parser::EventReceiver;
    use toml_parser::{ErrorSink, Span};

    #[derive(Default)]
    struct Sections<'t> {
        text: &'t str,
        /// Inside a `[..]` or `[[..]]` header: its keys so far.
        header: Option<Vec<Span>>,
        /// Where each header begins, and whether it is `[orchestrator]`.
        starts: Vec<(usize, bool)>,
        /// A header key with escapes, which only decoding can name.
        escaped: bool,
    }
    impl EventReceiver for Sections<'_> {
        fn std_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
            self.starts.push((span.start(), false));
            self.header = Some(Vec::new());
        }
        fn array_table_open(&mut self, span: Span, _: &mut dyn ErrorSink) {
            self.starts.push((span.start(), false));
            self.header = Some(Vec::new());
        }
        fn simple_key(
            &mut self,
            span: Span,
            _: Option<toml_parser::decoder::Encoding>,
            _: &mut dyn ErrorSink,
        ) {
            if let Some(keys) = &mut self.header {
                keys.push(span);
            }
        }
        fn std_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            let keys = self.header.take().unwrap_or_default();
            let raw = |s: &Span| &self.text[s.start()..s.end()];
            self.escaped |= keys.iter().any(|k| raw(k).contains('\\'));
            if let ([key], Some(last)) = (keys.as_slice(), self.starts.last_mut()) {
                let key = raw(key);
                last.1 = ["orchestrator", "\"orchestrator\"", "'orchestrator'"].contains(&key);
            }
        }
        fn array_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
            self.header = None;
        }
    }

    let source = toml_parser::Source::new(text);
    let tokens: Vec<_> = source.lex().collect();
    let mut sections = Sections {
        text,
        ..Default::default()
    };
    let mut error: Option<toml_parser::ParseError> = None;
    toml_parser::parser::parse_document(&tokens, &mut sections, &mut error);
    if error.is_some() || sections.escaped {
        return None;
    }
    let starts = sections.starts;
    let root_end = starts.first().map_or(text.len(), |s| s.0);
    let mut part = text[..root_end].to_string();
    let mut found = starts.iter().enumerate().filter(|(_, s)| s.1);
    if let Some((i, (start, _))) = found.next() {
        if found.next().is_some() {
            return None;
        }
        let end = starts.get(i + 1).map_or(text.len(), |s| s.0);
        part.push('\n');
        part.push_str(&text[*start..end]);
    }
    Some(part)
}

fn resolve_orchestrator(
    raw: &RawOrchestrator,
    base_dir: &Path,
    options: &LoadOptions,
    host: &dyn Host,
    src: &SourceText,
    spans: &BTreeMap<&'static str, Range<usize>>,
    diags: &mut Vec<Diagnostic>,
) -> OrchestratorSpec {
    let error = |key: &'static str, message: String| {
        Diagnostic::error(format!("[orchestrator]: {message}")).at(src, spans.get(key).cloned())
    };
    let socket_group = match &raw.socket_group {
        None => None,
        Some(g) => match host.group(&IdOrName::Name(g.clone())) {
            Ok(Some(gid)) => Some(gid),
            Ok(None) => {
                diags.push(error("socket_group", format!("no group named `{g}`")));
                None
            }
            Err(e) => {
                diags.push(error(
                    "socket_group",
                    format!("cannot look up group `{g}`: {e}"),
                ));
                None
            }
        },
    };
    if let Some(listen) = &raw.listen {
        if listen.parse::<std::net::SocketAddr>().is_err() {
            diags.push(error(
                "listen",
                format!("listen must be an address and port such as \"127.0.0.1:7070\", got \"{listen}\""),
            ));
        } else if raw.token_file.is_none() {
            diags.push(error(
                "listen",
                "listen needs token_file: the TCP API only answers requests that carry its token"
                    .into(),
            ));
        }
    }
    if let Some(listen) = &raw.metrics_listen
        && listen.parse::<std::net::SocketAddr>().is_err()
    {
        diags.push(error(
            "metrics_listen",
            format!("metrics_listen must be an address and port such as \"127.0.0.1:9464\", got \"{listen}\""),
        ));
    }
    if raw.log_max_size.is_some_and(|s| s.0.0 < 4096) {
        diags.push(error(
            "log_max_size",
            "log_max_size must be at least 4KiB".into(),
        ));
    }
    if raw.log_max_files == Some(0) {
        diags.push(error(
            "log_max_files",
            "log_max_files must be at least 1".into(),
        ));
    }
    if raw.log_memory.is_some_and(|s| s.0.0 < MIN_LOG_MEMORY) {
        diags.push(error(
            "log_memory",
            "log_memory must be at least 16KiB".into(),
        ));
    }
    if raw
        .sample_interval
        .is_some_and(|s| s.0 < Duration::from_millis(100))
    {
        diags.push(error(
            "sample_interval",
            "sample_interval must be at least 100ms".into(),
        ));
    }
    let cgroup_parent = raw
        .cgroup_parent
        .clone()
        .unwrap_or_else(|| "blackhole".into());
    if cgroup_parent.is_empty()
        || cgroup_parent.starts_with('/')
        || cgroup_parent
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        diags.push(error(
            "cgroup_parent",
            format!("cgroup_parent must be a relative path such as \"blackhole\" or \"apps/blackhole\", got \"{cgroup_parent}\""),
        ));
    }
    let services_dir = match (&options.services_dir, &raw.services_dir) {
        (Some(dir), _) => absolute(dir),
        (None, Some(dir)) => resolve_path(base_dir, dir),
        (None, None) => base_dir.join("services"),
    };
    let (state_dir, socket) =
        state_and_socket(base_dir, raw.state_dir.as_deref(), raw.socket.as_deref());
    OrchestratorSpec {
        services_dir,
        log_level: raw.log_level.unwrap_or_default(),
        log_format: raw.log_format.unwrap_or_default(),
        auto_restart: raw.auto_restart.unwrap_or(true),
        shutdown_timeout: raw
            .shutdown_timeout
            .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |s| s.0),
        socket,
        log_dir: raw
            .log_dir
            .as_deref()
            .map_or_else(|| state_dir.join("logs"), |s| resolve_path(base_dir, s)),
        log_max_size: raw.log_max_size.map_or(DEFAULT_LOG_MAX_SIZE, |s| s.0.0),
        log_max_files: raw.log_max_files.unwrap_or(DEFAULT_LOG_MAX_FILES),
        log_service_output: raw.log_service_output.unwrap_or(true),
        log_memory: raw.log_memory.map_or(DEFAULT_LOG_MEMORY, |s| {
            usize::try_from(s.0.0).unwrap_or(usize::MAX)
        }),
        cgroups: raw.cgroups.unwrap_or_default(),
        cgroup_parent,
        require_sha256: raw.require_sha256.unwrap_or(false),
        socket_group,
        listen: raw.listen.clone(),
        token_file: raw.token_file.as_deref().map(|p| resolve_path(base_dir, p)),
        sample_interval: raw.sample_interval.map_or(Duration::from_secs(2), |s| s.0),
        metrics_listen: raw.metrics_listen.clone(),
        state_dir,
    }
}

/// Reads `[orchestrator]`, noting where the keys that are checked later
/// are written.
fn deserialize_orchestrator(
    value: Spanned<DeValue<'_>>,
    spans: &mut BTreeMap<&'static str, Range<usize>>,
) -> Result<RawOrchestrator, toml::de::Error> {
    for key in [
        "socket_group",
        "listen",
        "token_file",
        "cgroup_parent",
        "metrics_listen",
        "sample_interval",
        "log_max_size",
        "log_max_files",
        "log_memory",
    ] {
        if let Some(span) = SpanIndex(Some(&value)).span(&[key]) {
            spans.insert(key, span);
        }
    }
    RawOrchestrator::deserialize(ValueDeserializer::from(value))
}

/// Finds the span of a nested key inside one service's table, so that
/// semantic errors found after deserialization still point at their line.
#[derive(Clone, Copy)]
struct SpanIndex<'a, 'i>(Option<&'a Spanned<DeValue<'i>>>);

impl SpanIndex<'_, '_> {
    const NONE: SpanIndex<'static, 'static> = SpanIndex(None);

    fn span(&self, path: &[&str]) -> Option<Range<usize>> {
        let mut cur = self.0?;
        for key in path {
            cur = cur.get_ref().get(*key)?;
        }
        Some(cur.span())
    }
}

struct ServiceCtx<'a, 'i> {
    host: &'a dyn Host,
    name: &'a str,
    src: &'a SourceText,
    spans: SpanIndex<'a, 'i>,
    orch: &'a OrchestratorSpec,
    base_dir: &'a Path,
}

impl ServiceCtx<'_, '_> {
    fn error(&self, message: impl Into<String>, key: &[&str]) -> Diagnostic {
        Diagnostic::error(message)
            .service(self.name)
            .at(self.src, self.spans.span(key))
    }
}

fn resolve_service(
    ctx: &ServiceCtx,
    raw: &RawService,
    origin: Origin,
    diags: &mut Vec<Diagnostic>,
) -> Option<ServiceSpec> {
    let name = ctx.name;
    let orch = ctx.orch;
    let binary = raw.binary_path.as_deref().map_or_else(
        || orch.services_dir.join(name).join(name),
        |p| resolve_path(ctx.base_dir, p),
    );
    let data_dir = raw.data_dir.as_deref().map_or_else(
        || orch.services_dir.join(name).join("data"),
        |p| resolve_path(ctx.base_dir, p),
    );
    let log_level = raw.log_level.unwrap_or(orch.log_level);
    let service_args = raw.service_args.unwrap_or(true);

    let mut args = Vec::new();
    if service_args {
        args.extend([
            "--service".into(),
            name.to_string(),
            "--log-level".into(),
            log_level.to_string(),
        ]);
    }
    for (i, arg) in raw.args.iter().flatten().enumerate() {
        if arg.contains('\0') {
            diags.push(ctx.error(
                format!("argument {} contains a NUL character", i + 1),
                &["args"],
            ));
        }
        args.push(arg.clone());
    }

    let mut environment = BTreeMap::new();
    for (key, value) in raw.environment.iter().flatten() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            diags.push(ctx.error(
                format!("environment variable name `{}` is invalid: it must be non-empty and contain no `=` or NUL", key.escape_debug()),
                &["environment", key],
            ));
            continue;
        }
        environment.insert(key.clone(), value.0.clone());
    }

    let env_files = raw
        .env_file
        .iter()
        .flat_map(|f| f.0.iter())
        .map(|p| resolve_path(ctx.base_dir, p))
        .collect();

    let mut success_exit_codes = Vec::new();
    for code in raw.success_exit_codes.clone().unwrap_or_else(|| vec![0]) {
        match u8::try_from(code) {
            Ok(c) => success_exit_codes.push(i32::from(c)),
            Err(_) => diags.push(ctx.error(
                format!("exit code {code} is out of range; exit codes are 0 to 255"),
                &["success_exit_codes"],
            )),
        }
    }

    let restart = resolve_restart(ctx, raw.restart.as_ref(), orch.auto_restart, diags);

    // Inherited values were checked with [orchestrator].
    let log_max_files = raw.log_max_files.unwrap_or(orch.log_max_files);
    if raw.log_max_files == Some(0) {
        diags.push(ctx.error("log_max_files must be at least 1", &["log_max_files"]));
    }
    let log_max_size = raw.log_max_size.map_or(orch.log_max_size, |s| s.0.0);
    if raw.log_max_size.is_some() && log_max_size < 4096 {
        diags.push(ctx.error("log_max_size must be at least 4KiB", &["log_max_size"]));
    }
    if let Some(m) = raw.memory_limit
        && m.0.0 < 1024 * 1024
    {
        diags.push(ctx.error("memory_limit must be at least 1 MiB", &["memory_limit"]));
    }

    let kind = raw.kind.unwrap_or_default();
    let depends_on: Vec<Dependency> = raw
        .depends_on
        .iter()
        .flat_map(|d| d.0.iter())
        .map(|(name, condition)| Dependency {
            name: name.clone(),
            condition: *condition,
        })
        .collect();
    let readiness = raw
        .readiness
        .as_ref()
        .and_then(|p| resolve_probe(ctx, p, "readiness", diags));
    if readiness.is_some() && kind == ServiceKind::Oneshot {
        diags.push(ctx.error(
            "readiness does not apply to a oneshot service: it is ready when it completes",
            &["readiness"],
        ));
    }
    let liveness = raw
        .liveness
        .as_ref()
        .and_then(|p| resolve_probe(ctx, p, "liveness", diags));
    let start_timeout = match (raw.start_timeout, &readiness) {
        (Some(t), _) if t.0.is_zero() => {
            diags.push(ctx.error("start_timeout must be longer than zero", &["start_timeout"]));
            None
        }
        (Some(t), _) => Some(t.0),
        (None, Some(_)) => Some(DEFAULT_START_TIMEOUT),
        (None, None) => None,
    };
    let watchdog = raw.watchdog_timeout.map(|t| t.0);

    if let Some(q) = raw.cpu_quota
        && !(q.is_finite() && q > 0.0 && q <= 1024.0)
    {
        diags.push(ctx.error(
            format!("cpu_quota is a number of cores such as 0.5 or 2, more than 0; got {q}"),
            &["cpu_quota"],
        ));
    }
    if raw.pids_limit == Some(0) {
        diags.push(ctx.error("pids_limit must be at least 1", &["pids_limit"]));
    }
    let mut rlimits = Vec::new();
    for (key, value) in raw.rlimits.iter().flatten() {
        match RlimitKind::ALL.iter().find(|(n, _)| n == key) {
            Some((_, kind)) => rlimits.push(Rlimit {
                resource: *kind,
                soft: value.soft,
                hard: value.hard,
            }),
            None => diags.push(ctx.error(
                format!(
                    "unknown resource limit `{key}`, expected one of {}",
                    RlimitKind::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
                &["rlimits", key],
            )),
        }
    }
    rlimits.sort_by_key(|r| r.resource);

    let credentials = resolve_credentials(ctx, raw, diags);
    let no_new_privileges = raw.no_new_privileges.unwrap_or(raw.user.is_some());
    let sha256 = match &raw.sha256 {
        Some(h) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(h.to_ascii_lowercase())
        }
        Some(h) => {
            diags.push(ctx.error(
                format!("sha256 must be 64 hexadecimal digits (as `sha256sum` prints), got {} characters", h.len()),
                &["sha256"],
            ));
            None
        }
        None => {
            if ctx.orch.require_sha256 {
                diags.push(ctx.error(
                    "require_sha256 is on: pin this service's binary with sha256 = \"<hex>\" (`sha256sum` prints it)",
                    &[],
                ));
            }
            None
        }
    };
    let allow_writable_binary = raw.allow_writable_binary.unwrap_or(false);
    if watchdog.is_some_and(|w| w.is_zero()) {
        diags.push(ctx.error(
            "watchdog_timeout must be longer than zero",
            &["watchdog_timeout"],
        ));
    }

    Some(ServiceSpec {
        name: name.to_string(),
        origin,
        enabled: raw.enabled.unwrap_or(true),
        kind: raw.kind.unwrap_or_default(),
        binary,
        args,
        service_args,
        environment,
        env_files,
        data_dir,
        memory_limit: raw.memory_limit.map(|m| m.0.0),
        log_level,
        stop_signal: raw.stop_signal.map_or(Signal::TERM, |s| s.0),
        stop_timeout: raw.stop_timeout.map_or(orch.shutdown_timeout, |s| s.0),
        success_exit_codes,
        restart,
        log_max_size,
        log_max_files: log_max_files.max(1),
        depends_on,
        restart_with: raw.restart_with.clone().unwrap_or_default(),
        readiness,
        liveness,
        start_timeout,
        watchdog,
        memory_swap_limit: raw.memory_swap_limit.map(|m| m.0.0),
        cpu_quota: raw.cpu_quota,
        pids_limit: raw.pids_limit,
        rlimits,
        credentials,
        no_new_privileges,
        sha256,
        allow_writable_binary,
    })
}

/// `user` and `group` to ids, with the user's supplementary groups.
fn resolve_credentials(
    ctx: &ServiceCtx,
    raw: &RawService,
    diags: &mut Vec<Diagnostic>,
) -> Option<Account> {
    if raw.user.is_none() && raw.group.is_none() {
        return None;
    }
    if !ctx.host.is_root() {
        let key = if raw.user.is_some() { "user" } else { "group" };
        diags.push(ctx.error(
            "switching user or group needs the orchestrator to run as root; it does not",
            &[key],
        ));
        return None;
    }
    let mut account = match &raw.user {
        Some(who) => match ctx.host.user(who) {
            Ok(Some(a)) => a,
            Ok(None) => {
                diags.push(ctx.error(format!("unknown user `{who}`"), &["user"]));
                return None;
            }
            Err(e) => {
                diags.push(ctx.error(format!("cannot look up user `{who}`: {e}"), &["user"]));
                return None;
            }
        },
        // Only a group: keep root as the user.
        None => Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        },
    };
    if let Some(who) = &raw.group {
        match ctx.host.group(who) {
            Ok(Some(gid)) => {
                account.gid = gid;
                if raw.user.is_none() {
                    account.groups = vec![gid];
                }
            }
            Ok(None) => {
                diags.push(ctx.error(format!("unknown group `{who}`"), &["group"]));
                return None;
            }
            Err(e) => {
                diags.push(ctx.error(format!("cannot look up group `{who}`: {e}"), &["group"]));
                return None;
            }
        }
    }
    Some(account)
}

/// A binary that others can rewrite is refused when running as root: it
/// would run as root whatever anyone put there.
fn writable_binary(host: &dyn Host, spec: &ServiceSpec) -> Option<Diagnostic> {
    use std::os::unix::fs::PermissionsExt;
    if !host.is_root() || spec.allow_writable_binary {
        return None;
    }
    let mode = std::fs::metadata(&spec.binary).ok()?.permissions().mode();
    (mode & 0o022 != 0).then(|| {
        Diagnostic::warning(format!(
            "binary is writable by group or others (mode {:04o})",
            mode & 0o7777
        ))
        .path(&spec.binary)
        .help("run `chmod go-w` on it, or set allow_writable_binary = true for this service")
    })
}

/// Kubernetes' probe defaults.
const PROBE_PERIOD: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// systemd's default for a unit that signals readiness.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);

fn resolve_probe(
    ctx: &ServiceCtx,
    raw: &RawProbe,
    which: &'static str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Probe> {
    let errors_before = diags.len();
    let Some(kind) = raw.kind else {
        diags.push(ctx.error(
            format!("{which}.kind is required: one of notify, fd, exec, http, tcp, log"),
            &[which],
        ));
        return None;
    };
    if which == "liveness" && !matches!(kind, ProbeKind::Exec | ProbeKind::Http | ProbeKind::Tcp) {
        diags.push(ctx.error(
            format!(
                "liveness.kind = \"{kind}\" cannot detect a hang; use exec, http or tcp \
                 (for sd_notify services, watchdog_timeout is the liveness check)"
            ),
            &[which, "kind"],
        ));
        return None;
    }
    // Keys that belong to other kinds are mistakes, not no-ops.
    let periodic = matches!(kind, ProbeKind::Exec | ProbeKind::Http | ProbeKind::Tcp);
    let present: [(&str, bool, bool); 12] = [
        ("url", raw.url.is_some(), kind == ProbeKind::Http),
        ("headers", raw.headers.is_some(), kind == ProbeKind::Http),
        (
            "expected_status",
            raw.expected_status.is_some(),
            kind == ProbeKind::Http,
        ),
        ("command", raw.command.is_some(), kind == ProbeKind::Exec),
        ("address", raw.address.is_some(), kind == ProbeKind::Tcp),
        ("pattern", raw.pattern.is_some(), kind == ProbeKind::Log),
        ("fd", raw.fd.is_some(), kind == ProbeKind::Fd),
        ("period", raw.period.is_some(), periodic),
        ("timeout", raw.timeout.is_some(), periodic),
        (
            "success_threshold",
            raw.success_threshold.is_some(),
            periodic,
        ),
        (
            "failure_threshold",
            raw.failure_threshold.is_some(),
            periodic,
        ),
        ("initial_delay", raw.initial_delay.is_some(), periodic),
    ];
    for (key, set, applies) in present {
        if set && !applies {
            diags.push(ctx.error(
                format!("{which}.{key} does not apply to kind = \"{kind}\""),
                &[which, key],
            ));
        }
    }
    let require = |diags: &mut Vec<Diagnostic>, key: &str| {
        diags.push(ctx.error(
            format!("{which}.{key} is required for kind = \"{kind}\""),
            &[which],
        ));
    };
    let check = match kind {
        ProbeKind::Notify => Check::Notify,
        ProbeKind::Fd => {
            let fd = raw.fd.unwrap_or(3);
            if !(3..=1023).contains(&fd) {
                diags.push(ctx.error(
                    format!("{which}.fd must be between 3 and 1023 (0 to 2 are stdin, stdout and stderr), got {fd}"),
                    &[which, "fd"],
                ));
            }
            Check::Fd(fd)
        }
        ProbeKind::Exec => match &raw.command {
            Some(cmd) if !cmd.is_empty() && !cmd[0].is_empty() => Check::Exec(cmd.clone()),
            Some(_) => {
                diags.push(ctx.error(
                    format!("{which}.command cannot be empty"),
                    &[which, "command"],
                ));
                Check::Exec(Vec::new())
            }
            None => {
                require(diags, "command");
                Check::Exec(Vec::new())
            }
        },
        ProbeKind::Http => {
            let url = raw.url.clone().unwrap_or_default();
            if raw.url.is_none() {
                require(diags, "url");
            } else if !url.starts_with("http://") || url.len() <= "http://".len() {
                diags.push(ctx.error(
                    format!("{which}.url must be an http:// URL such as \"http://127.0.0.1:8080/health\", got \"{url}\""),
                    &[which, "url"],
                ));
            }
            let status = match raw.expected_status.as_deref().map(parse_status_range) {
                None => (200, 399),
                Some(Ok(r)) => r,
                Some(Err(why)) => {
                    diags.push(ctx.error(
                        format!("{which}.expected_status: {why}"),
                        &[which, "expected_status"],
                    ));
                    (200, 399)
                }
            };
            let headers = raw
                .headers
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Check::Http {
                url,
                headers,
                status,
            }
        }
        ProbeKind::Tcp => {
            let address = raw.address.clone().unwrap_or_default();
            if raw.address.is_none() {
                require(diags, "address");
            } else if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                diags.push(ctx.error(
                    format!("{which}.address must be host:port such as \"127.0.0.1:5432\", got \"{address}\""),
                    &[which, "address"],
                ));
            }
            Check::Tcp(address)
        }
        ProbeKind::Log => {
            let pattern = raw.pattern.clone().unwrap_or_default();
            if raw.pattern.is_none() {
                require(diags, "pattern");
            } else if let Err(e) = regex::Regex::new(&pattern) {
                // The regex error is a multi-line drawing; its last line says it.
                let text = e.to_string();
                let why = text
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ")
                    .to_string();
                diags.push(ctx.error(
                    format!("{which}.pattern is not a valid regular expression: {why}"),
                    &[which, "pattern"],
                ));
            }
            Check::Log(pattern)
        }
    };
    let probe = Probe {
        check,
        initial_delay: raw.initial_delay.map_or(Duration::ZERO, |d| d.0),
        period: raw.period.map_or(PROBE_PERIOD, |d| d.0),
        timeout: raw.timeout.map_or(PROBE_TIMEOUT, |d| d.0),
        success_threshold: raw.success_threshold.unwrap_or(1),
        failure_threshold: raw.failure_threshold.unwrap_or(3),
    };
    for (key, zero) in [
        ("period", probe.period.is_zero()),
        ("timeout", probe.timeout.is_zero()),
        ("success_threshold", probe.success_threshold == 0),
        ("failure_threshold", probe.failure_threshold == 0),
    ] {
        if zero {
            diags.push(ctx.error(
                format!("{which}.{key} must be more than zero"),
                &[which, key],
            ));
        }
    }
    if which == "liveness" && probe.success_threshold != 1 {
        diags.push(ctx.error(
            "liveness.success_threshold must be 1 (one success proves it is alive)",
            &[which, "success_threshold"],
        ));
    }
    (diags.len() == errors_before).then_some(probe)
}

/// `"200-399"` or `"204"`.
fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let parse = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("`{x}` is not an HTTP status (100 to 599)"))
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("range {lo}-{hi} is empty"));
            }
            Ok((lo, hi))
        }
        None => parse(s).map(|c| (c, c)),
    }
}

/// Where `depends_on` and `restart_with` are written in a service's table.
type DepSpans = (Option<Range<usize>>, Option<Range<usize>>);

/// Unknown dependencies and cycles make the services involved invalid,
/// each error naming the services.
fn check_dependencies(
    src: &SourceText,
    services: &mut BTreeMap<String, Arc<ServiceSpec>>,
    invalid: &mut BTreeMap<String, String>,
    spans: &BTreeMap<String, DepSpans>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut bad: BTreeMap<String, Diagnostic> = BTreeMap::new();
    let known = |n: &str| services.contains_key(n) || invalid.contains_key(n);
    for (name, spec) in services.iter() {
        let (deps_span, with_span) = spans.get(name).cloned().unwrap_or_default();
        for dep in &spec.depends_on {
            let problem = if !known(&dep.name) {
                Some(format!("depends on `{}`, which is not a service", dep.name))
            } else if dep.condition == Condition::Completed
                && services
                    .get(&dep.name)
                    .is_some_and(|d| d.kind != ServiceKind::Oneshot)
            {
                Some(format!(
                    "depends on `{}` being completed, but only a oneshot service completes (set type = \"oneshot\" on it, or wait for \"ready\")",
                    dep.name
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                bad.entry(name.clone()).or_insert_with(|| {
                    Diagnostic::error(message)
                        .service(name)
                        .at(src, deps_span.clone())
                });
            }
        }
        for other in &spec.restart_with {
            if !known(other) {
                bad.entry(name.clone()).or_insert_with(|| {
                    Diagnostic::error(format!(
                        "restart_with names `{other}`, which is not a service"
                    ))
                    .service(name)
                    .at(src, with_span.clone())
                });
            }
        }
    }
    let edges: crate::graph::Edges = services
        .iter()
        .map(|(n, s)| {
            (
                n.as_str(),
                s.depends_on.iter().map(|d| d.name.as_str()).collect(),
            )
        })
        .collect();
    for cycle in crate::graph::cycles(&edges) {
        let path = cycle.join(" -> ");
        for member in &cycle[..cycle.len() - 1] {
            let span = spans.get(member).and_then(|s| s.0.clone());
            bad.entry(member.clone()).or_insert_with(|| {
                Diagnostic::error(format!("dependency cycle: {path}"))
                    .service(member)
                    .at(src, span)
                    .help("a service cannot wait for itself; remove one of these dependencies")
            });
        }
    }
    for (name, diag) in bad {
        services.remove(&name);
        invalid.insert(name, diag.short());
        diags.push(diag);
    }
}

fn resolve_restart(
    ctx: &ServiceCtx,
    raw: Option<&RawRestart>,
    auto_restart: bool,
    diags: &mut Vec<Diagnostic>,
) -> RestartSpec {
    let default_policy = if auto_restart {
        RestartPolicy::OnFailure
    } else {
        RestartPolicy::Never
    };
    let d = Backoff::default();
    let Some(r) = raw else {
        return RestartSpec {
            policy: default_policy,
            backoff: d,
            max_attempts: 10,
            reset_after: Duration::from_secs(60),
        };
    };
    let backoff = Backoff {
        initial_delay: r.initial_delay.map_or(d.initial_delay, |s| s.0),
        max_delay: r.max_delay.map_or(d.max_delay, |s| s.0),
        multiplier: r.multiplier.unwrap_or(d.multiplier),
        jitter: r.jitter.unwrap_or(d.jitter),
    };
    if !(backoff.multiplier.is_finite() && backoff.multiplier >= 1.0) {
        diags.push(ctx.error(
            format!(
                "restart.multiplier must be a number of at least 1.0, got {}",
                backoff.multiplier
            ),
            &["restart", "multiplier"],
        ));
    }
    if !(0.0..=1.0).contains(&backoff.jitter) {
        diags.push(ctx.error(
            format!(
                "restart.jitter must be between 0.0 and 1.0 (a fraction: 0.1 = ±10 %), got {}",
                backoff.jitter
            ),
            &["restart", "jitter"],
        ));
    }
    if backoff.initial_delay > backoff.max_delay {
        diags.push(ctx.error(
            format!(
                "restart.initial_delay ({:?}) is longer than restart.max_delay ({:?})",
                backoff.initial_delay, backoff.max_delay
            ),
            // Point at whichever of the two is written.
            &[
                "restart",
                if r.initial_delay.is_some() {
                    "initial_delay"
                } else {
                    "max_delay"
                },
            ],
        ));
    }
    RestartSpec {
        policy: r.policy.unwrap_or(default_policy),
        backoff,
        max_attempts: r.max_attempts.unwrap_or(10),
        reset_after: r.reset_after.map_or(Duration::from_secs(60), |s| s.0),
    }
}
