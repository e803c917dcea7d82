//! Property tests of the loader: whatever the text, it never panics, and
//! every error it reports says where. `PROPTEST_CASES` sets how many
//! inputs each property tries (the CI uses the default below; the long
//! run in docs/RELIABILITY.md uses a million).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

struct NoFs;

impl Host for NoFs {
    fn discover(&self, _: &Path) -> Discovery {
        Discovery::default()
    }
    fn user(&self, who: &IdOrName) -> Result<Option<Account>, String> {
        Ok(match who {
            IdOrName::Name(n) if n == "nobody" => Some(Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            }),
            _ => None,
        })
    }
    fn group(&self, _: &IdOrName) -> Result<Option<u32>, String> {
        Ok(Some(100))
    }
    fn is_root(&self) -> bool {
        true
    }
}

fn check(text: &str) {
    let base = PathBuf::from("/srv/fuzz");
    let loaded = load_text(
        Some(SourceText::new(base.join("blackhole.toml"), text)),
        &base,
        &LoadOptions::default(),
        &NoFs,
    );
    for d in loaded.errors() {
        assert!(
            d.location.is_some() || d.path.is_some(),
            "an error without a place: {d}\n--- input ---\n{text}"
        );
        assert!(!d.message.is_empty());
        // Rendering never panics either.
        let _ = d.to_string();
    }
}

/// Keys the loader knows, at every level, so that generated documents get
/// past the parser and into validation.
const SERVICE_KEYS: &[&str] = &[
    "enabled",
    "type",
    "binary_path",
    "args",
    "environment",
    "env_file",
    "data_dir",
    "memory_limit",
    "service_args",
    "log_level",
    "stop_signal",
    "stop_timeout",
    "success_exit_codes",
    "depends_on",
    "restart_with",
    "start_timeout",
    "watchdog_timeout",
    "memory_swap_limit",
    "cpu_quota",
    "pids_limit",
    "rlimits",
    "user",
    "group",
    "no_new_privileges",
    "sha256",
    "allow_writable_binary",
    "log_max_size",
    "log_max_files",
    "bogus",
];
const TABLE_KEYS: &[&str] = &["restart", "readiness", "liveness"];
const INNER_KEYS: &[&str] = &[
    "policy",
    "initial_delay",
    "max_delay",
    "multiplier",
    "jitter",
    "max_attempts",
    "reset_after",
    "kind",
    "period",
    "timeout",
    "url",
    "command",
    "address",
    "pattern",
    "fd",
    "expected_status",
    "headers",
    "success_threshold",
    "failure_threshold",
    "initial_delay",
];
const ORCH_KEYS: &[&str] = &[
    "services_dir",
    "log_level",
    "auto_restart",
    "shutdown_timeout",
    "socket",
    "log_dir",
    "log_max_size",
    "log_memory",
    "cgroups",
    "cgroup_parent",
    "listen",
    "token_file",
    "sample_interval",
    "metrics_listen",
    "socket_group",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| if v.is_finite() {
            format!("{v:?}")
        } else {
            "1.5".into()
        }),
        any::<bool>().prop_map(|v| v.to_string()),
        "[ -~]{0,20}".prop_map(|s| format!("{:?}", s)),
        prop::sample::select(vec![
            "\"10s\"",
            "\"1500ms\"",
            "\"-1s\"",
            "\"SIGTERM\"",
            "\"SIGFOO\"",
            "\"always\"",
            "\"oneshot\"",
            "\"http\"",
            "\"tcp\"",
            "\"notify\"",
            "\"log\"",
            "\"512MiB\"",
            "\"nobody\"",
            "[]",
            "[\"a\", \"b\"]",
            "[1, 2]",
            "{}",
            "{ a = \"ready\" }",
            "{ nofile = [1, 2] }",
            "\"(unclosed\"",
            "\"http://127.0.0.1:1/\"",
            "\"200-100\"",
            "\"unlimited\"",
            "[0, \"unlimited\"]",
            "\"ab\"",
        ])
        .prop_map(String::from),
    ]
}

fn document() -> impl Strategy<Value = String> {
    let orch = prop::collection::vec((prop::sample::select(ORCH_KEYS.to_vec()), value()), 0..4);
    let name = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "web",
        "../x",
        ".h",
        "long-name-1",
        "x y",
    ]);
    let service = (
        name,
        prop::collection::vec((prop::sample::select(SERVICE_KEYS.to_vec()), value()), 0..5),
        prop::collection::vec(
            (
                prop::sample::select(TABLE_KEYS.to_vec()),
                prop::collection::vec((prop::sample::select(INNER_KEYS.to_vec()), value()), 0..4),
            ),
            0..2,
        ),
    );
    (orch, prop::collection::vec(service, 0..4)).prop_map(|(orch, services)| {
        let mut out = String::from("[orchestrator]\n");
        for (k, v) in orch {
            out.push_str(&format!("{k} = {v}\n"));
        }
        for (name, keys, tables) in services {
            out.push_str(&format!("[services.{name:?}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
            for (t, inner) in tables {
                out.push_str(&format!("[services.{name:?}.{t}]\n"));
                for (k, v) in inner {
                    out.push_str(&format!("{k} = {v}\n"));
                }
            }
        }
        out
    })
}

/// `PROPTEST_CASES`, or 2000 (an explicit `cases` would override the
/// variable, which proptest reads only into its default).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn any_structured_document_never_panics_and_locates_its_errors(text in document()) {
        check(&text);
    }
}
