//! Reading the kernel's small text files (`/proc`, cgroupfs).
//!
//! `fs::read_to_string` asks for the file's size first (a `statx`, which
//! is always 0 here) and then reads: five system calls per file. The stop
//! path reads two cgroup files per service, so with 1000 services this
//! adds up.
//!
//! Two kinds of file: a *record* (`/proc/PID/stat`, `cgroup.events`) is
//! generated in one piece, so a read that returns less than was asked for
//! has reached the end: open, one read, close. A *list* (`cgroup.procs`)
//! is handed out in whole lines that fit the buffer, so a short read says
//! nothing, and only a read returning 0 ends it.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Record,
    List,
}

/// The whole file as text.
pub fn read(path: &Path, kind: Kind) -> io::Result<String> {
    let mut file = File::open(path)?;
    collect(kind, |buf| file.read(buf))
}

/// The whole file again, from the start, through a descriptor kept open
/// (`pread` at offset 0 makes the kernel generate the text afresh).
pub fn reread(file: &File, kind: Kind) -> io::Result<String> {
    let mut offset = 0u64;
    collect(kind, |buf| {
        let n = file.read_at(buf, offset)?;
        offset += n as u64;
        Ok(n)
    })
}

fn collect(kind: Kind, mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<String> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&chunk[..n]);
        if n == 0 || (kind == Kind::Record && n < chunk.len()) {
            break;
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_and_multi_chunk_files_whole() {
        assert!(
            read(Path::new("/proc/self/stat"), Kind::Record)
                .unwrap()
                .ends_with('\n')
        );
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..3000).map(|i| format!("{i}\n")).collect();
        assert!(big.len() > 8192);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        assert_eq!(read(&dir.path().join("big"), Kind::List).unwrap(), big);
        std::fs::write(dir.path().join("exact"), "x".repeat(4096)).unwrap();
        assert_eq!(
            read(&dir.path().join("exact"), Kind::List).unwrap().len(),
            4096
        );
        assert!(read(&dir.path().join("missing"), Kind::Record).is_err());
    }

    #[test]
    fn reread_sees_the_current_text_each_time() {
        let file = File::open("/proc/self/stat").unwrap();
        let utime = |text: String| -> u64 {
            let after = &text[text.rfind(')').unwrap() + 2..];
            after.split(' ').nth(11).unwrap().parse().unwrap()
        };
        let before = utime(reread(&file, Kind::Record).unwrap());
        let start = std::time::Instant::now();
        // Burn CPU until the kernel's count of it moves.
        while utime(reread(&file, Kind::Record).unwrap()) == before {
            assert!(start.elapsed().as_secs() < 10, "utime never moved");
        }
    }
}
