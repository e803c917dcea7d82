//! Discovery: every `<services_dir>/<name>/<name>` that is an executable
//! regular file is a service. Problems are warnings naming the path; they
//! never stop the other services.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::diag::Diagnostic;
use super::raw::IdOrName;
use super::value::validate_service_name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub binary: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub found: Vec<Found>,
    /// Folders that look like services but cannot run, with the reason.
    pub skipped: Vec<(String, Diagnostic)>,
    pub dir_missing: bool,
}

/// What the loader needs to know about the machine: the services folder
/// and the user accounts. A seam, so that tests of the loader can describe
/// a machine without having one; the real one is `blackhole_os::host`.
pub trait Host {
    fn discover(&self, services_dir: &Path) -> Discovery;

    /// Looks up a user: `Ok(None)` when there is no such user.
    fn user(&self, who: &IdOrName) -> Result<Option<Account>, String> {
        let _ = who;
        Err("user accounts cannot be looked up here".into())
    }

    /// Looks up a group's id: `Ok(None)` when there is no such group.
    fn group(&self, who: &IdOrName) -> Result<Option<u32>, String> {
        let _ = who;
        Err("groups cannot be looked up here".into())
    }

    /// Whether the orchestrator runs as root (needed to switch users).
    fn is_root(&self) -> bool {
        false
    }
}

/// A user account as a service runs under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups from the group database (the primary included).
    pub groups: Vec<u32>,
}

/// Reads the real services folder.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsDiscovery;

impl Host for FsDiscovery {
    fn discover(&self, dir: &Path) -> Discovery {
        let mut out = Discovery::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.dir_missing = true;
                return out;
            }
            Err(e) => {
                out.dir_missing = true;
                out.skipped.push((
                    String::new(),
                    Diagnostic::warning(format!("cannot read the services folder: {e}")).path(dir),
                ));
                return out;
            }
        };
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                out.skipped.push((
                    String::new(),
                    Diagnostic::warning("folder name is not valid UTF-8; skipped")
                        .path(entry.path()),
                ));
                continue;
            };
            // Hidden folders (.git, .blackhole) are not services.
            if name.starts_with('.') {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => names.push((name, entry.path())),
                Ok(t) if t.is_symlink() && entry.path().is_dir() => {
                    names.push((name, entry.path()))
                }
                _ => {}
            }
        }
        names.sort();
        for (name, folder) in names {
            if let Err(why) = validate_service_name(&name) {
                out.skipped.push((
                    name.clone(),
                    Diagnostic::warning(format!("folder is not a valid service name: {why}"))
                        .path(&folder),
                ));
                continue;
            }
            let binary = folder.join(&name);
            match check_executable(&binary) {
                Ok(()) => out.found.push(Found { name, binary }),
                Err(diag) => out.skipped.push((name.clone(), diag.service(name))),
            }
        }
        out
    }
}

/// Whether `path` is something we can exec, with a warning that says what
/// to do when it is not.
pub fn check_executable(path: &Path) -> Result<(), Diagnostic> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dangling = std::fs::symlink_metadata(path).is_ok();
            let message = if dangling {
                "binary is a symbolic link to nothing".to_string()
            } else {
                "no binary found".to_string()
            };
            return Err(Diagnostic::warning(message)
                .path(path)
                .help("put an executable there or set `binary_path` for this service"));
        }
        Err(e) => return Err(Diagnostic::warning(format!("cannot inspect binary: {e}")).path(path)),
    };
    if meta.is_dir() {
        return Err(Diagnostic::warning("binary path is a directory, not a program").path(path));
    }
    if !meta.is_file() {
        return Err(Diagnostic::warning(
            "binary path is not a regular file (a fifo, socket or device)",
        )
        .path(path));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(Diagnostic::warning(format!(
            "binary is not executable (mode {:04o})",
            mode & 0o7777
        ))
        .path(path)
        .help(format!("run `chmod +x {}`", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn exe(path: &Path) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn finds_executables_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["api", "noexec", "empty", "dirbin", ".hidden", "bad name"] {
            fs::create_dir(root.join(name)).unwrap();
        }
        exe(&root.join("api/api"));
        fs::write(root.join("noexec/noexec"), "x").unwrap();
        fs::create_dir(root.join("dirbin/dirbin")).unwrap();
        fs::write(root.join("stray-file"), "x").unwrap();

        let d = FsDiscovery.discover(root);
        assert_eq!(
            d.found.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["api"]
        );
        let skipped: Vec<_> = d
            .skipped
            .iter()
            .map(|(n, diag)| (n.as_str(), diag.message.as_str()))
            .collect();
        assert!(
            skipped.contains(&("noexec", "binary is not executable (mode 0644)")),
            "{skipped:?}"
        );
        assert!(
            skipped.contains(&("empty", "no binary found")),
            "{skipped:?}"
        );
        assert!(
            skipped
                .iter()
                .any(|(n, m)| *n == "dirbin" && m.contains("directory"))
        );
        assert!(skipped.iter().any(|(n, _)| *n == "bad name"));
        assert!(!d.dir_missing);
    }

    #[test]
    fn missing_dir_is_flagged() {
        let d = FsDiscovery.discover(Path::new("/nonexistent/blackhole/services"));
        assert!(d.dir_missing);
        assert!(d.found.is_empty());
    }
}
