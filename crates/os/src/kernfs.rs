//! Reading the kernel's small text files (`/proc`, cgroupfs).
//!
//! `fs::read_to_string` asks for the file's size first (a `statx`, which
//! is always 0 here) and reads until a read returns nothing: five system
//! calls per file. The stop path reads two cgroup files per service, so
//! with 1000 services this adds up. These files are generated in one go
//! by the kernel, and a read that returns less than was asked for has
//! reached the end: open, one read, close.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The whole file as text.
pub fn read(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
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
        assert!(read(Path::new("/proc/self/stat")).unwrap().ends_with('\n'));
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..3000).map(|i| format!("{i}\n")).collect();
        assert!(big.len() > 8192);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        assert_eq!(read(&dir.path().join("big")).unwrap(), big);
        std::fs::write(dir.path().join("exact"), "x".repeat(4096)).unwrap();
        assert_eq!(read(&dir.path().join("exact")).unwrap().len(), 4096);
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
