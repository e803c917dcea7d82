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
//! is a `seq_file`: the kernel fills a page of whole entries and hands out
//! what was asked for, so a 4 KiB read stops short when the entries run
//! out, or when the next entry would overflow that page. Entries are short
//! (a pid and a newline, 8 bytes at most), so a read that leaves room for
//! a long one has reached the end, and the read returning 0 that would
//! confirm it is skipped: one system call fewer per stop signal and per
//! emptiness check. Were a kernel to stop earlier, a member could miss the
//! stop signal; the kill at the stop timeout is cgroup-wide and ends it.

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

/// Longer than any entry of the lists read here (`cgroup.procs`,
/// `/proc/PID/task/TID/children`: a pid and a separator).
const LONGEST_ENTRY: usize = 64;

fn collect(kind: Kind, read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<String> {
    collect_in(kind, &mut [0u8; 4096], LONGEST_ENTRY, read)
}

/// [`collect`] through `chunk`, taking a list's entries to be at most
/// `longest` bytes.
fn collect_in(
    kind: Kind,
    chunk: &mut [u8],
    longest: usize,
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<String> {
    let mut out = Vec::new();
    loop {
        let n = match read(chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&chunk[..n]);
        let end = match kind {
            Kind::Record => n < chunk.len(),
            Kind::List => n + longest <= chunk.len(),
        };
        if n == 0 || end {
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

    /// The kernel's side of the bargain, on a long real `seq_file`
    /// (`/proc/kallsyms`, lines of a symbol's address, type and name, the
    /// name at most 512 bytes): reads through the 4 KiB buffer stop short
    /// inside the list, each by less than the next entry, so the one that
    /// leaves room for the longest entry is the last, and a read after it
    /// finds nothing.
    #[test]
    fn a_list_read_that_leaves_room_for_an_entry_is_the_last() {
        const LONGEST: usize = 640;
        let mut file = File::open("/proc/kallsyms").unwrap();
        let (mut reads, mut short) = (0, 0);
        let text = collect_in(Kind::List, &mut [0u8; 4096], LONGEST, |buf| {
            let n = file.read(buf)?;
            reads += 1;
            short += usize::from(n > 0 && n < buf.len());
            Ok(n)
        })
        .unwrap();
        assert!(
            short > 1,
            "no read stopped short inside the list ({reads} reads)"
        );
        assert!(text.lines().all(|l| l.len() < LONGEST));
        assert!(text.ends_with('\n'));
        let after = file.read(&mut [0u8; 4096]).unwrap();
        assert_eq!(after, 0, "{after} bytes left after {reads} reads");
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
