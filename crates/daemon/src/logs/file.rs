//! A service's log file, rotated by size at line boundaries.
//!
//! `NAME.log` is written; when the next lines would take it past the size
//! limit it becomes `NAME.log.1`, older ones shift up, and the oldest
//! beyond the file count is deleted. `max_files` counts every file,
//! the active one included. Rotation is written here rather than taken
//! from a crate because it must never cut a line in two.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogFile {
    /// Opens (appending) `path`; the directory is created if missing.
    pub fn open(path: PathBuf, max_size: u64, max_files: u32) -> io::Result<LogFile> {
        let mut f = LogFile {
            path,
            file: None,
            size: 0,
            max_size: max_size.max(1),
            max_files: max_files.max(1),
        };
        f.reopen()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_limits(&mut self, max_size: u64, max_files: u32) {
        self.max_size = max_size.max(1);
        self.max_files = max_files.max(1);
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends whole lines (`bytes` ends with a newline), rotating between
    /// lines whenever the next one would not fit.
    pub fn write_lines(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        while !bytes.is_empty() {
            let room = self.max_size.saturating_sub(self.size) as usize;
            if bytes.len() <= room {
                return self.append(bytes);
            }
            // As many whole lines as fit; at least one line into an empty
            // file, so a line longer than the limit still gets written.
            let cut = match memchr::memrchr(b'\n', &bytes[..room.min(bytes.len())]) {
                Some(nl) => nl + 1,
                None if self.size == 0 => {
                    memchr::memchr(b'\n', bytes).map_or(bytes.len(), |nl| nl + 1)
                }
                None => 0,
            };
            if cut > 0 {
                self.append(&bytes[..cut])?;
                bytes = &bytes[cut..];
            }
            if !bytes.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(f) = &mut self.file else {
            return Err(io::Error::other("log file is not open"));
        };
        match f.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Part may have landed; the size on disk is the truth.
                self.size = f.metadata().map(|m| m.len()).unwrap_or(self.size);
                Err(e)
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let keep = self.max_files - 1;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(numbered(keep));
            for n in (1..keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    fs::rename(&from, numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.reopen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_line_boundaries_and_keeps_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut f = LogFile::open(path.clone(), 100, 3).unwrap();
        let mut batch = String::new();
        for i in 0..100 {
            batch.push_str(&format!("line number {i:03}\n"));
            if i % 7 == 0 {
                f.write_lines(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        f.write_lines(batch.as_bytes()).unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["svc.log", "svc.log.1", "svc.log.2"]);
        for name in &names {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 100, "{name} is {} bytes", text.len());
            assert!(
                text.lines()
                    .all(|l| l.starts_with("line number ") && l.len() == 15),
                "{text}"
            );
        }
        let newest = fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("line number 099\n"));
        let older = fs::read_to_string(dir.path().join("svc.log.1")).unwrap();
        let last_of_older: u32 = older.lines().last().unwrap()[12..].parse().unwrap();
        let first_of_newest: u32 = newest.lines().next().unwrap()[12..].parse().unwrap();
        assert_eq!(
            last_of_older + 1,
            first_of_newest,
            "no line lost at rotation"
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_still_lands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut f = LogFile::open(path.clone(), 10, 2).unwrap();
        f.write_lines(b"0123456789abcdef\nxy\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "xy\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("big.log.1")).unwrap(),
            "0123456789abcdef\n"
        );
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "old\n").unwrap();
        let mut f = LogFile::open(path.clone(), 1 << 20, 5).unwrap();
        f.write_lines(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\nnew\n");
    }
}
