//! A service's log file, rotated by size at line boundaries.
//!
//! `NAME.log` is written; when the next lines would take it past the size
//! limit it becomes `NAME.log.1`, older ones shift up, and the oldest
//! beyond the file count is deleted. `max_files` counts every file,
//! the active one included. Rotation is written here rather than taken
//! from a crate because it must never cut a line in two.
//!
//! A file that takes a flood (writes of [`FLOOD_WRITE`] or more) gets its
//! disk space ahead of the writes, [`RESERVE_STEP`] at a time, with
//! `fallocate(FALLOC_FL_KEEP_SIZE)`: its size, and so what readers see,
//! is unchanged, but the write no longer reserves space page by page
//! (ext4's delayed-allocation bookkeeping was most of the log writer's
//! time in a flood). What is not used is given back when the file is
//! closed or rotated; a file left with some by a killed orchestrator
//! gives it back when it is opened again.
//!
//! A flood's batches are written several at a time, and cut where the
//! file reaches a multiple of [`ALIGN`] while more are on their way: ext4
//! caches a file in large folios only where a write covers them whole and
//! aligned. Batches cut at line ends made every write start and end
//! inside a 64 KiB block, and 140 MiB written that way in 64 KiB writes
//! took 49.6 ms instead of 30.3 aligned, or 21.7 in aligned writes of
//! 1 MiB (median of six, this kernel, space reserved ahead).

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::FallocateFlags;

/// A write at least this large is part of a flood (a full batch from the
/// pump); only those make the file reserve space, so a quiet service's
/// file never has any beyond its end.
pub const FLOOD_WRITE: usize = 32 * 1024;
/// How much is reserved past the end at a time: at most this is allocated
/// and unused per flooded file.
pub const RESERVE_STEP: u64 = 4 << 20;
/// Writes that may stop early stop where the file's size is a multiple
/// of this.
pub const ALIGN: u64 = 64 * 1024;

pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// Space is allocated up to this offset (0: none reserved).
    reserved_to: u64,
    /// The file system takes reservations: not tmpfs (where it would pin
    /// memory for nothing), and fallocate did not say it cannot.
    can_reserve: bool,
    /// The last write stopped inside a line (at an [`ALIGN`] boundary):
    /// the rest of it goes into this file before any rotation.
    mid_line: bool,
    /// Bytes appended since opened, across rotations: what a write that
    /// failed part-way did land.
    appended: u64,
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
            reserved_to: 0,
            can_reserve: false,
            mid_line: false,
            appended: 0,
        };
        f.reopen()?;
        Ok(f)
    }

    /// Bytes appended since the file was opened.
    pub fn appended(&self) -> u64 {
        self.appended
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
        // Readable too if it may be: the last byte is looked at below.
        let open = |read| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .read(read)
                .open(&self.path)
        };
        let file = open(true).or_else(|_| open(false))?;
        let meta = file.metadata()?;
        self.size = meta.len();
        self.reserved_to = 0;
        self.can_reserve = meta.is_file()
            && nix::sys::statfs::fstatfs(&file)
                .is_ok_and(|fs| fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC);
        // More blocks than the data needs: space an earlier run reserved
        // and could not give back (it was killed).
        if meta.blocks() * 512 > meta.len() + RESERVE_STEP / 2 {
            let _ = file.set_len(meta.len());
        }
        // A file left inside a line (a write cut by an error, or by a
        // crash while the rest was held back) gets its line ended, so the
        // next line does not continue it.
        let mut last = [0u8; 1];
        if self.size > 0
            && std::os::unix::fs::FileExt::read_at(&file, &mut last, self.size - 1).ok() == Some(1)
            && last[0] != b'\n'
            && (&file).write_all(b"\n").is_ok()
        {
            self.size += 1;
        }
        self.file = Some(file);
        Ok(())
    }

    /// Allocates the next [`RESERVE_STEP`] (never past the rotation point)
    /// when a flood's write would go beyond what is reserved. Failure
    /// (disk full, a file system without it) only means the write reserves
    /// its own space as usual.
    fn reserve_for(&mut self, len: usize) {
        if !self.can_reserve || len < FLOOD_WRITE || self.size + len as u64 <= self.reserved_to {
            return;
        }
        let Some(f) = &self.file else { return };
        let step = RESERVE_STEP.min(self.max_size.saturating_sub(self.size));
        if step < len as u64 {
            return;
        }
        match nix::fcntl::fallocate(
            f,
            FallocateFlags::FALLOC_FL_KEEP_SIZE,
            self.size as libc::off_t,
            step as libc::off_t,
        ) {
            Ok(()) => self.reserved_to = self.size + step,
            Err(
                nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::ESPIPE
                | nix::errno::Errno::ENODEV,
            ) => {
                self.can_reserve = false;
            }
            Err(_) => {}
        }
    }

    /// Gives back what was reserved and not written.
    pub fn release(&mut self) {
        if self.reserved_to > self.size
            && let Some(f) = &self.file
        {
            // The length on disk, not ours: nothing written is cut off.
            if let Ok(meta) = f.metadata() {
                let _ = f.set_len(meta.len());
            }
        }
        self.reserved_to = 0;
    }

    /// Appends whole lines (`bytes` ends with a newline), rotating between
    /// lines whenever the next one would not fit.
    pub fn write_lines(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        if self.mid_line {
            let end = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |nl| nl + 1);
            self.append(&bytes[..end])?;
            bytes = &bytes[end..];
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

    /// Appends `parts`, whole lines together (the first may end a line
    /// the last call began), in one `writev` when they fit before the
    /// size limit. While `more` are on their way, only what brings the
    /// file to a multiple of [`ALIGN`] is written; returns the bytes
    /// written, from the start of `parts`.
    pub fn write_gathered(&mut self, parts: &[&[u8]], more: bool) -> io::Result<usize> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.size + total as u64 > self.max_size {
            for part in parts {
                self.write_lines(part)?;
            }
            return Ok(total);
        }
        let len = if more {
            let end = (self.size + total as u64) / ALIGN * ALIGN;
            end.saturating_sub(self.size) as usize
        } else {
            total
        };
        if len == 0 {
            return Ok(0);
        }
        let mut left = len;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
        for part in parts {
            let take = part.len().min(left);
            if take > 0 {
                slices.push(IoSlice::new(&part[..take]));
            }
            left -= take;
        }
        self.reserve_for(len);
        let Some(f) = &mut self.file else {
            return Err(io::Error::other("log file is not open"));
        };
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match f.write_vectored(rest) {
                Ok(0) => return Err(self.failed(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.size += n as u64;
                    self.appended += n as u64;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(e)),
            }
        }
        let last = slices.iter().rev().find(|s| !s.is_empty());
        self.mid_line = last.is_some_and(|s| s.last() != Some(&b'\n'));
        Ok(len)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reserve_for(bytes.len());
        let Some(f) = &mut self.file else {
            return Err(io::Error::other("log file is not open"));
        };
        match f.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                self.appended += bytes.len() as u64;
                self.mid_line = bytes.last().is_some_and(|&b| b != b'\n');
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// After a failed write: part may have landed, and the size on disk
    /// is the truth.
    fn failed(&mut self, e: io::Error) -> io::Error {
        if let Some(f) = &self.file {
            let len = f.metadata().map(|m| m.len()).unwrap_or(self.size);
            self.appended += len.saturating_sub(self.size);
            self.size = len;
        }
        e
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.release();
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

impl Drop for LogFile {
    fn drop(&mut self) {
        self.release();
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

    /// Bytes allocated to the file on disk.
    fn allocated(path: &Path) -> u64 {
        fs::metadata(path).unwrap().blocks() * 512
    }

    /// A temporary folder on a file system that takes reservations, if
    /// the machine's temporary folder is one (not tmpfs).
    fn reserving_dir() -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        let ok = nix::fcntl::fallocate(&probe, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 4096)
            .is_ok()
            && nix::sys::statfs::fstatfs(&probe)
                .is_ok_and(|fs| fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC);
        if !ok {
            eprintln!("skipped: the temporary folder's file system takes no reservations");
        }
        ok.then_some(dir)
    }

    fn lines(total: usize) -> Vec<u8> {
        let line = [b"x".repeat(99), b"\n".to_vec()].concat();
        line.repeat(total / line.len())
    }

    /// Numbered lines of 100 bytes, `from` on, about `bytes` of them.
    fn numbered(from: usize, bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in from..from + bytes / 100 {
            let mut line = format!("line {i} ").into_bytes();
            line.resize(99, b'x');
            line.push(b'\n');
            out.extend_from_slice(&line);
        }
        out
    }

    #[test]
    fn a_gathered_write_with_more_to_come_stops_at_an_aligned_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut f = LogFile::open(path.clone(), u64::MAX, 1).unwrap();
        let (a, b) = (numbered(0, 40_000), numbered(400, 40_000));
        // 80,000 bytes: one boundary inside, in the middle of a line of b.
        assert_eq!(f.write_gathered(&[&a, &b], true).unwrap(), ALIGN as usize);
        assert_eq!(fs::metadata(&path).unwrap().len(), ALIGN);
        let rest = &b[ALIGN as usize - a.len()..];
        // Not enough for the next boundary: nothing.
        assert_eq!(f.write_gathered(&[rest], true).unwrap(), 0);
        assert_eq!(f.write_gathered(&[rest], false).unwrap(), rest.len());
        assert_eq!(fs::read(&path).unwrap(), [a, b].concat());
    }

    /// A write that stopped inside a line, then lines that need a
    /// rotation: the line is finished in the file it began in.
    #[test]
    fn a_line_cut_at_an_aligned_size_is_finished_before_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut f = LogFile::open(path.clone(), 100_000, 2).unwrap();
        let a = numbered(0, 70_000);
        assert_eq!(f.write_gathered(&[&a], true).unwrap(), ALIGN as usize);
        // A lower limit now leaves no room for the rest of the cut line.
        f.set_limits(ALIGN + 10, 2);
        let max = ALIGN + 10;
        let b = numbered(700, 40_000);
        let rest = &a[ALIGN as usize..];
        assert_eq!(
            f.write_gathered(&[rest, &b], true).unwrap(),
            rest.len() + b.len()
        );
        let old = fs::read(dir.path().join("svc.log.1")).unwrap();
        let new = fs::read(&path).unwrap();
        // Past the limit by less than the line, and ended by it.
        assert!(
            old.len() as u64 <= max + 100 && old.ends_with(b"\n"),
            "{}",
            old.len()
        );
        assert_eq!([old, new].concat(), [a, b].concat());
    }

    #[test]
    fn a_file_left_inside_a_line_gets_it_ended_before_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        fs::write(&path, b"whole\nhalf a li").unwrap();
        let mut f = LogFile::open(path.clone(), u64::MAX, 1).unwrap();
        f.write_lines(b"next\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole\nhalf a li\nnext\n");
        drop(f);
        // A file that ends a line is left as it is.
        LogFile::open(path.clone(), u64::MAX, 1)
            .unwrap()
            .write_lines(b"more\n")
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole\nhalf a li\nnext\nmore\n");
    }

    /// A flood's write reserves the next step; the size stays the data's;
    /// what was not used is given back on release and when the file is
    /// closed. A trickle reserves nothing.
    #[test]
    fn a_flood_reserves_space_ahead_and_gives_back_what_it_did_not_use() {
        let Some(dir) = reserving_dir() else { return };
        let path = dir.path().join("flood.log");
        let mut f = LogFile::open(path.clone(), 1 << 30, 2).unwrap();
        f.write_lines(b"a quiet line\n").unwrap();
        assert!(
            allocated(&path) < FLOOD_WRITE as u64,
            "a trickle reserved space"
        );
        let batch = lines(64 * 1024);
        f.write_lines(&batch).unwrap();
        let size = fs::metadata(&path).unwrap().len();
        assert_eq!(size, 13 + batch.len() as u64, "the size is the data's");
        assert!(
            allocated(&path) >= RESERVE_STEP,
            "{} allocated",
            allocated(&path)
        );
        // More floods inside the step reserve nothing more.
        for _ in 0..10 {
            f.write_lines(&batch).unwrap();
        }
        assert!(allocated(&path) < RESERVE_STEP + 2 * batch.len() as u64);
        f.release();
        let size = fs::metadata(&path).unwrap().len();
        assert!(allocated(&path) < size + 64 * 1024, "kept after release");
        f.write_lines(&batch).unwrap();
        assert!(allocated(&path) >= size + RESERVE_STEP);
        drop(f);
        let size = fs::metadata(&path).unwrap().len();
        assert!(allocated(&path) < size + 64 * 1024, "kept after close");
        assert_eq!(size, 13 + 12 * batch.len() as u64);
    }

    /// Reservations stop at the rotation point, and the rotated file keeps
    /// nothing beyond its end.
    #[test]
    fn reservations_never_pass_the_rotation_point() {
        let Some(dir) = reserving_dir() else { return };
        let path = dir.path().join("rot.log");
        let max = 1 << 20;
        let mut f = LogFile::open(path.clone(), max, 3).unwrap();
        let batch = lines(64 * 1024);
        for _ in 0..20 {
            f.write_lines(&batch).unwrap();
        }
        let rotated = dir.path().join("rot.log.1");
        let size = fs::metadata(&rotated).unwrap().len();
        assert!(size <= max);
        assert!(allocated(&rotated) < size + 64 * 1024);
        assert!(allocated(&path) <= max + 64 * 1024);
    }

    /// Space a killed orchestrator left reserved is given back when the
    /// file is opened again.
    #[test]
    fn opening_gives_back_what_an_earlier_run_left_reserved() {
        let Some(dir) = reserving_dir() else { return };
        let path = dir.path().join("left.log");
        let file = File::create(&path).unwrap();
        (&file).write_all(b"old\n").unwrap();
        nix::fcntl::fallocate(&file, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 8 << 20).unwrap();
        drop(file);
        assert!(allocated(&path) >= 8 << 20);
        let mut f = LogFile::open(path.clone(), 1 << 30, 2).unwrap();
        assert!(allocated(&path) < 64 * 1024);
        f.write_lines(b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\nnew\n");
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
