//! The fake service behaves as its modes say. Having an integration test here
//! also makes `cargo test --workspace` build the `bh-testsvc` executable
//! itself (cargo builds a package's binaries only for its integration tests),
//! which blackhole's own integration tests run.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bh-testsvc");

#[test]
fn print_writes_numbered_lines_of_the_asked_size() {
    let out = Command::new(BIN)
        .args(["print", "--lines", "3", "--size", "20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert!(lines.iter().all(|l| l.len() == 20), "{text:?}");
}

#[test]
fn an_unknown_mode_is_a_usage_error_listing_the_modes() {
    let out = Command::new(BIN).arg("no-such-mode").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pause") && err.contains("print"), "{err}");
}

#[test]
fn exit_uses_the_asked_code() {
    let out = Command::new(BIN)
        .args(["exit", "--code", "7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}
