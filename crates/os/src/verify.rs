//! Checking a binary before it runs, on the very file that will run: the
//! file is opened once, hashed and inspected through that descriptor, and
//! then executed through it (`execveat(fd, "", AT_EMPTY_PATH)`), so
//! replacing the file on disk in between changes nothing.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// A binary opened for verification and execution.
pub struct Opened {
    pub fd: OwnedFd,
    pub sha256: String,
    pub mode: u32,
    /// Starts with `#!`: the interpreter needs `/dev/fd/N` open across exec.
    pub script: bool,
}

/// Opens `path` and hashes it through the descriptor.
pub fn open_and_hash(path: &Path) -> io::Result<Opened> {
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = [0u8; 2];
    let mut seen = 0usize;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if seen < 2 {
            let take = (2 - seen).min(n);
            first[seen..seen + take].copy_from_slice(&buf[..take]);
            seen += take;
        }
        hasher.update(&buf[..n]);
    }
    file.rewind()?;
    Ok(Opened {
        sha256: hex::encode(hasher.finalize()),
        mode: meta.mode(),
        script: seen == 2 && &first == b"#!",
        fd: file.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        let o = open_and_hash(&p).unwrap();
        assert_eq!(
            o.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!o.script);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(open_and_hash(&p).unwrap().script);
        assert!(open_and_hash(dir.path()).is_err());
    }
}
