use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A services folder described in memory.
struct Fake {
    found: Vec<&'static str>,
    missing: bool,
}

impl Host for Fake {
    fn discover(&self, dir: &Path) -> Discovery {
        Discovery {
            found: self
                .found
                .iter()
                .map(|n| Found {
                    name: n.to_string(),
                    binary: dir.join(n).join(n),
                })
                .collect(),
            skipped: Vec::new(),
            dir_missing: self.missing,
        }
    }

    fn user(&self, who: &IdOrName) -> Result<Option<Account>, String> {
        Ok(match who {
            IdOrName::Name(n) if n == "nobody" => Some(Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            }),
            IdOrName::Id(1000) => Some(Account {
                name: "dev".into(),
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 27],
            }),
            _ => None,
        })
    }

    fn group(&self, who: &IdOrName) -> Result<Option<u32>, String> {
        Ok(match who {
            IdOrName::Name(n) if n == "staff" => Some(50),
            IdOrName::Id(id) => Some(*id),
            _ => None,
        })
    }

    fn is_root(&self) -> bool {
        true
    }
}

fn load_with(text: &str, found: Vec<&'static str>) -> Loaded {
    let base = PathBuf::from("/srv/app");
    load_text(
        Some(SourceText::new(base.join("blackhole.toml"), text)),
        &base,
        &LoadOptions::default(),
        &Fake {
            found,
            missing: false,
        },
    )
}

fn errors(l: &Loaded) -> Vec<String> {
    l.errors().map(Diagnostic::short).collect()
}

#[test]
fn empty_config_with_discovery_gives_defaults() {
    let l = load_with("", vec!["api", "worker"]);
    let c = l.config.unwrap();
    assert_eq!(c.services.len(), 2);
    let api = &c.services["api"];
    assert_eq!(api.binary, Path::new("/srv/app/services/api/api"));
    assert_eq!(api.data_dir, Path::new("/srv/app/services/api/data"));
    assert_eq!(api.args, ["--service", "api", "--log-level", "info"]);
    assert_eq!(api.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(api.restart.max_attempts, 10);
    assert_eq!(api.stop_timeout, Duration::from_secs(10));
    assert_eq!(api.origin, Origin::Discovered);
    assert_eq!(
        c.orchestrator.socket,
        Path::new("/srv/app/.blackhole/control.sock")
    );
    assert_eq!(
        c.orchestrator.log_dir,
        Path::new("/srv/app/.blackhole/logs")
    );
}

#[test]
fn configured_settings_merge_over_discovery() {
    let text = r#"
[orchestrator]
services_dir = "svc"
log_level = "debug"
auto_restart = false
shutdown_timeout = "1500ms"

[services.api]
args = ["--port", "80"]
environment = { MODE = "prod", PORT = 8080 }
stop_signal = "INT"
success_exit_codes = [0, 3]
memory_limit = 256

[services.api.restart]
policy = "always"
initial_delay = "250ms"
max_attempts = 0
"#;
    let l = load_with(text, vec!["api", "other"]);
    assert!(!l.has_errors(), "{:?}", errors(&l));
    let c = l.config.unwrap();
    let api = &c.services["api"];
    assert_eq!(api.binary, Path::new("/srv/app/svc/api/api"));
    assert_eq!(
        api.args,
        ["--service", "api", "--log-level", "debug", "--port", "80"]
    );
    assert_eq!(api.environment["PORT"], "8080");
    assert_eq!(api.stop_signal, crate::signal::Signal::INT);
    assert_eq!(api.stop_timeout, Duration::from_millis(1500));
    assert_eq!(api.memory_limit, Some(256 << 20));
    assert_eq!(api.restart.policy, RestartPolicy::Always);
    assert_eq!(
        api.restart.backoff.initial_delay,
        Duration::from_millis(250)
    );
    assert_eq!(api.restart.max_attempts, 0);
    assert!(matches!(api.origin, Origin::Both { line: 8 }));
    // auto_restart = false makes `never` the default for the others.
    assert_eq!(c.services["other"].restart.policy, RestartPolicy::Never);
}

#[test]
fn unknown_keys_name_file_line_and_column() {
    let text = "[services.web]\nbinray_path = \"/bin/true\"\n";
    let l = load_with(text, vec![]);
    let e = errors(&l);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/srv/app/blackhole.toml:2:1: service `web`: unknown field `binray_path`"),
        "{e:?}"
    );
    assert!(e[0].contains("expected one of"), "{e:?}");
    let c = l.config.unwrap();
    assert!(c.invalid.contains_key("web"));
}

#[test]
fn wrong_types_and_values_are_located() {
    let text = r#"[services.a]
enabled = "yes"

[services.b]
stop_timeout = "ten seconds"

[services.c]
stop_signal = "SIGNOPE"

[services.d.restart]
policy = "sometimes"

[services.e]
binary_path = "/bin/true"
success_exit_codes = [0, 300]
[services.e.restart]
jitter = 2.0
"#;
    let l = load_with(text, vec![]);
    let e = errors(&l);
    let find = |svc: &str| {
        e.iter()
            .find(|m| m.contains(&format!("service `{svc}`")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        find("a").starts_with("/srv/app/blackhole.toml:2:11:"),
        "{e:?}"
    );
    assert!(
        find("a").contains("expected a boolean") || find("a").contains("invalid type"),
        "{e:?}"
    );
    assert!(
        find("b").starts_with("/srv/app/blackhole.toml:5:16:"),
        "{e:?}"
    );
    assert!(find("b").contains("invalid duration"), "{e:?}");
    assert!(
        find("c").contains(":8:15:") && find("c").contains("unknown signal"),
        "{e:?}"
    );
    assert!(
        find("d").contains(":11:10:") && find("d").contains("unknown variant `sometimes`"),
        "{e:?}"
    );
    // Service e has two problems; both are reported.
    let e_errors: Vec<_> = e.iter().filter(|m| m.contains("service `e`")).collect();
    assert_eq!(e_errors.len(), 2, "{e:?}");
    assert!(
        e_errors
            .iter()
            .any(|m| m.contains(":15:") && m.contains("exit code 300")),
        "{e:?}"
    );
    assert!(
        e_errors
            .iter()
            .any(|m| m.contains(":17:") && m.contains("jitter")),
        "{e:?}"
    );
    let c = l.config.unwrap();
    assert_eq!(c.invalid.len(), 5);
}

#[test]
fn bad_names_are_rejected() {
    let text = "[services.\"../etc\"]\n[services.\".hidden\"]\n[services.\"a b\"]\n";
    let l = load_with(text, vec![]);
    let e = errors(&l);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("/srv/app/blackhole.toml:1:11:"), "{e:?}");
}

#[test]
fn syntax_errors_are_fatal_and_located() {
    let l = load_with("[services.a\nx = 1\n", vec![]);
    assert!(l.config.is_none());
    assert!(
        errors(&l)[0].starts_with("/srv/app/blackhole.toml:1:"),
        "{:?}",
        errors(&l)
    );
}

#[test]
fn log_memory_has_a_default_a_floor_and_takes_sizes() {
    let l = load_with("", vec!["api"]);
    assert_eq!(l.config.unwrap().orchestrator.log_memory, 256 * 1024);
    let l = load_with("[orchestrator]\nlog_memory = \"64KiB\"\n", vec!["api"]);
    assert_eq!(l.config.unwrap().orchestrator.log_memory, 64 * 1024);
    let l = load_with("[orchestrator]\nlog_memory = \"1KiB\"\n", vec!["api"]);
    assert!(l.config.is_none());
    let e = errors(&l);
    assert!(
        e[0].starts_with(
            "/srv/app/blackhole.toml:2:14: [orchestrator]: log_memory must be at least 16KiB"
        ),
        "{e:?}"
    );
}

#[test]
fn orchestrator_errors_are_fatal() {
    let l = load_with("[orchestrator]\nlog_level = \"loud\"\n", vec![]);
    assert!(l.config.is_none());
    let e = errors(&l);
    assert!(
        e[0].starts_with("/srv/app/blackhole.toml:2:13: [orchestrator]: unknown variant `loud`"),
        "{e:?}"
    );
    let l = load_with("[orchestra]\n", vec![]);
    assert!(errors(&l)[0].contains("unknown top-level key `orchestra`"));
}

#[test]
fn missing_services_dir() {
    let base = PathBuf::from("/srv/app");
    let fake = Fake {
        found: vec![],
        missing: true,
    };
    let l = load_text(None, &base, &LoadOptions::default(), &fake);
    assert!(l.config.is_none());
    assert!(errors(&l)[0].contains("services folder does not exist"));
    // With something configured it is only a warning.
    let text = "[services.x]\nbinary_path = \"/bin/true\"\n";
    let l = load_text(
        Some(SourceText::new(base.join("b.toml"), text)),
        &base,
        &LoadOptions::default(),
        &fake,
    );
    assert!(!l.has_errors(), "{:?}", errors(&l));
    assert!(
        l.diagnostics
            .iter()
            .any(|d| d.message.contains("does not exist"))
    );
}

#[test]
fn explicit_missing_file_is_an_error_implicit_is_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("services")).unwrap();
    let path = dir.path().join("blackhole.toml");
    let l = load(&path, true, &LoadOptions::default(), &FsDiscovery);
    assert!(errors(&l)[0].contains("configuration file not found"));
    let l = load(&path, false, &LoadOptions::default(), &FsDiscovery);
    assert!(!l.has_errors());
    let c = l.config.unwrap();
    assert!(c.file.is_none());
    assert!(c.services.is_empty());
}

#[test]
fn configured_binary_problems_are_errors_for_that_service_only() {
    let text = "[services.ok]\nbinary_path = \"/bin/true\"\n[services.gone]\nbinary_path = \"/nonexistent/x\"\n";
    let l = load_with(text, vec![]);
    let e = errors(&l);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("service `gone`") && e[0].contains("no binary found"),
        "{e:?}"
    );
    assert!(e[0].starts_with("/srv/app/blackhole.toml:4:15:"), "{e:?}");
    // Both still exist: the missing binary is a runtime failure of that
    // service, with the binary perhaps appearing later.
    let c = l.config.unwrap();
    assert!(c.services.contains_key("ok") && c.services.contains_key("gone"));
}

#[test]
fn service_args_can_be_turned_off() {
    let text = "[services.redis]\nbinary_path = \"/bin/true\"\nservice_args = false\nargs = [\"--port\", \"6380\"]\n";
    let l = load_with(text, vec![]);
    assert_eq!(l.config.unwrap().services["redis"].args, ["--port", "6380"]);
}

#[test]
fn dependencies_and_probes_resolve() {
    let text = r#"
[services.migrate]
type = "oneshot"
[services.db]
depends_on = { migrate = "completed" }
[services.db.readiness]
kind = "log"
pattern = "ready to accept"
[services.api]
depends_on = ["db"]
restart_with = ["db"]
start_timeout = "20s"
[services.api.readiness]
kind = "http"
url = "http://127.0.0.1:8080/health"
expected_status = "200-299"
period = "2s"
[services.api.liveness]
kind = "tcp"
address = "127.0.0.1:8080"
failure_threshold = 5
"#;
    let l = load_with(text, vec!["migrate", "db", "api"]);
    assert!(!l.has_errors(), "{:?}", errors(&l));
    let c = l.config.unwrap();
    let api = &c.services["api"];
    assert_eq!(
        api.depends_on,
        [spec::Dependency {
            name: "db".into(),
            condition: raw::Condition::Ready
        }]
    );
    assert_eq!(api.restart_with, ["db"]);
    assert_eq!(api.start_timeout, Some(Duration::from_secs(20)));
    let r = api.readiness.as_ref().unwrap();
    assert!(matches!(
        &r.check,
        spec::Check::Http {
            status: (200, 299),
            ..
        }
    ));
    assert_eq!(
        (r.period, r.timeout, r.failure_threshold),
        (Duration::from_secs(2), Duration::from_secs(1), 3)
    );
    let live = api.liveness.as_ref().unwrap();
    assert_eq!(live.failure_threshold, 5);
    let db = &c.services["db"];
    assert_eq!(
        db.start_timeout,
        Some(Duration::from_secs(90)),
        "the default once readiness is set"
    );
    assert!(
        matches!(&db.readiness.as_ref().unwrap().check, spec::Check::Log(p) if p == "ready to accept")
    );
}

#[test]
fn dependency_cycles_name_every_member() {
    let text = "[services.a]\ndepends_on = [\"b\"]\n[services.b]\ndepends_on = [\"c\"]\n[services.c]\ndepends_on = [\"a\"]\n[services.d]\ndepends_on = [\"a\"]\n";
    let l = load_with(text, vec!["a", "b", "c", "d"]);
    let e = errors(&l);
    assert_eq!(e.len(), 3, "{e:?}");
    for (member, line) in [("a", 2), ("b", 4), ("c", 6)] {
        assert!(
            e.iter().any(|m| m.contains(&format!("service `{member}`"))
                && m.contains("dependency cycle: a -> b -> c -> a")
                && m.contains(&format!("blackhole.toml:{line}:"))),
            "{e:?}"
        );
    }
    let c = l.config.unwrap();
    assert!(c.invalid.contains_key("a") && c.invalid.contains_key("c"));
    // d depends on a member of the cycle but is not in it: it stays valid
    // and will wait (blocked) at run time.
    assert!(c.services.contains_key("d"));
}

#[test]
fn unknown_dependencies_and_bad_conditions_are_errors() {
    let text = "[services.api]\ndepends_on = [\"dbb\"]\n[services.web]\ndepends_on = { api = \"completed\" }\nrestart_with = [\"ghost\"]\n";
    let l = load_with(text, vec!["api", "web"]);
    let e = errors(&l);
    assert!(
        e.iter().any(|m| m.contains("service `api`")
            && m.contains("`dbb`, which is not a service")
            && m.contains(":2:14:")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("service `web`") && m.contains("only a oneshot service completes")),
        "{e:?}"
    );
}

#[test]
fn probe_mistakes_are_located() {
    let text = r#"[services.a.readiness]
kind = "tcp"
url = "http://x/"
[services.b.readiness]
kind = "http"
[services.c.liveness]
kind = "notify"
[services.d.readiness]
kind = "log"
pattern = "(unclosed"
[services.e.readiness]
kind = "fd"
fd = 1
[services.f.readiness]
kind = "http"
url = "http://x/"
expected_status = "600"
[services.g]
type = "oneshot"
[services.g.readiness]
kind = "notify"
"#;
    let l = load_with(text, vec!["a", "b", "c", "d", "e", "f", "g"]);
    let e = errors(&l);
    let about = |svc: &str| {
        e.iter()
            .filter(|m| m.contains(&format!("service `{svc}`")))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        about("a").contains("readiness.url does not apply to kind = \"tcp\"")
            && about("a").contains(":3:7:"),
        "{e:?}"
    );
    assert!(
        about("a").contains("readiness.address is required"),
        "{e:?}"
    );
    assert!(about("b").contains("readiness.url is required"), "{e:?}");
    assert!(about("c").contains("cannot detect a hang"), "{e:?}");
    assert!(
        about("d").contains("not a valid regular expression") && about("d").contains(":10:11:"),
        "{e:?}"
    );
    assert!(about("e").contains("between 3 and 1023"), "{e:?}");
    assert!(about("f").contains("`600` is not an HTTP status"), "{e:?}");
    assert!(about("g").contains("does not apply to a oneshot"), "{e:?}");
}

#[test]
fn isolation_settings_resolve() {
    let text = r#"
[orchestrator]
cgroup_parent = "apps/blackhole"
socket_group = "staff"
listen = "127.0.0.1:7070"
token_file = "token"
[services.api]
memory_limit = "512MiB"
memory_swap_limit = 0
cpu_quota = 0.5
pids_limit = 64
user = "nobody"
group = "staff"
sha256 = "AB0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
rlimits = { nofile = 4096, core = [0, "unlimited"] }
[services.dev]
user = 1000
no_new_privileges = false
"#;
    let l = load_with(text, vec!["api", "dev"]);
    assert!(!l.has_errors(), "{:?}", errors(&l));
    let c = l.config.unwrap();
    assert_eq!(c.orchestrator.cgroup_parent, "apps/blackhole");
    assert_eq!(c.orchestrator.socket_group, Some(50));
    assert_eq!(
        c.orchestrator.token_file.as_deref(),
        Some(Path::new("/srv/app/token"))
    );
    let api = &c.services["api"];
    assert_eq!(api.memory_limit, Some(512 << 20));
    assert_eq!(api.memory_swap_limit, Some(0));
    assert_eq!((api.cpu_quota, api.pids_limit), (Some(0.5), Some(64)));
    let cred = api.credentials.as_ref().unwrap();
    assert_eq!(
        (cred.uid, cred.gid, cred.groups.as_slice()),
        (65534, 50, &[65534][..])
    );
    assert!(api.no_new_privileges, "on by default with a user");
    assert_eq!(
        api.sha256.as_deref().unwrap(),
        "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
    );
    assert_eq!(
        api.rlimits,
        [
            spec::Rlimit {
                resource: spec::RlimitKind::Nofile,
                soft: 4096,
                hard: 4096
            },
            spec::Rlimit {
                resource: spec::RlimitKind::Core,
                soft: 0,
                hard: RLIM_INFINITY
            },
        ]
    );
    let dev = &c.services["dev"];
    assert_eq!(dev.credentials.as_ref().unwrap().groups, [1000, 27]);
    assert!(!dev.no_new_privileges);
}

#[test]
fn isolation_mistakes_are_located() {
    let text = r#"[services.a]
user = "ghost"
[services.b]
cpu_quota = -1.0
[services.c]
rlimits = { nofiles = 10 }
[services.d]
rlimits = { nofile = [10, 5] }
[services.e]
sha256 = "abc"
"#;
    let l = load_with(text, vec!["a", "b", "c", "d", "e"]);
    let e = errors(&l);
    let about = |svc: &str| {
        e.iter()
            .filter(|m| m.contains(&format!("service `{svc}`")))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        about("a").contains(":2:8:") && about("a").contains("unknown user `ghost`"),
        "{e:?}"
    );
    assert!(
        about("b").contains("cpu_quota is a number of cores"),
        "{e:?}"
    );
    assert!(
        about("c").contains("unknown resource limit `nofiles`"),
        "{e:?}"
    );
    assert!(
        about("d").contains("soft limit (10) is above the hard limit (5)"),
        "{e:?}"
    );
    assert!(about("e").contains("64 hexadecimal digits"), "{e:?}");
    let l = load_with("[orchestrator]\nlisten = \"localhost\"\n", vec![]);
    let e = errors(&l);
    assert!(
        e.iter()
            .any(|m| m.contains("listen must be an address and port")),
        "{e:?}"
    );
    let l = load_with("[orchestrator]\nrequire_sha256 = true\n", vec!["x"]);
    assert!(
        errors(&l)
            .iter()
            .any(|m| m.contains("service `x`") && m.contains("require_sha256 is on"))
    );
}

/// The control commands' look-up of the socket reads `state_dir` and
/// `socket` only: the same answer as a full load, and one still when a
/// service's section is broken or the file is missing.
#[test]
fn the_control_socket_comes_from_the_orchestrator_table_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let at = |text: &str| {
        let path = root.join("blackhole.toml");
        std::fs::write(&path, text).unwrap();
        control_socket(&path)
    };
    assert_eq!(at(""), root.join(".blackhole/control.sock"));
    assert_eq!(
        at("[orchestrator]\nstate_dir = \"run/state\"\n"),
        root.join("run/state/control.sock")
    );
    let text = "[orchestrator]\nstate_dir = \"/var/lib/bh\"\nsocket = \"ctl/bh.sock\"\n";
    assert_eq!(at(text), root.join("ctl/bh.sock"));
    let full = load(
        &root.join("blackhole.toml"),
        true,
        &LoadOptions::default(),
        &Fake {
            found: vec![],
            missing: false,
        },
    );
    assert_eq!(
        full.config.expect("loads").orchestrator.socket,
        root.join("ctl/bh.sock")
    );
    let broken = format!("{text}[services.web]\nbinary_path = 7\nno_such_key = true\n");
    assert_eq!(at(&broken), root.join("ctl/bh.sock"));
    assert_eq!(at("this is not toml"), root.join(".blackhole/control.sock"));
    // Wherever TOML lets the keys be written, and nothing that only
    // looks like the table.
    let svc = "[services.web]\nbinary_path = \"/bin/true\"\n";
    let want = root.join("s.sock");
    let placed = [
        format!("{svc}[orchestrator]\nsocket = \"s.sock\"\n"),
        format!("orchestrator.socket = \"s.sock\"\n{svc}"),
        format!("orchestrator = {{ socket = \"s.sock\" }}\n{svc}"),
        format!("[\"orchestrator\"]\nsocket = \"s.sock\"\n{svc}"),
        format!("['orchestrator']\nsocket = \"s.sock\"\n{svc}"),
        format!("[\"orch\\u0065strator\"]\nsocket = \"s.sock\"\n{svc}"),
        format!("[orchestrator]\nsocket = \"s.sock\"\n[orchestrator.sub]\nsocket = \"no\"\n{svc}"),
    ];
    for text in &placed {
        assert_eq!(at(text), want, "{text}");
    }
    let lookalikes = format!(
        "[orchestrator]\nsocket = \"s.sock\"\n{svc}args = [\n[\"x\"],\n]\n\
         description = '''\n[orchestrator]\nsocket = \"evil.sock\"\n'''\n"
    );
    assert_eq!(at(&lookalikes), want);
    assert_eq!(
        at(&format!(
            "{svc}description = \"\"\"\n[orchestrator]\nsocket = \"evil.sock\"\n\"\"\"\n"
        )),
        root.join(".blackhole/control.sock")
    );
    assert_eq!(
        control_socket(&root.join("missing/blackhole.toml")),
        root.join("missing/.blackhole/control.sock")
    );
}
