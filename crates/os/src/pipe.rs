//! Pipes and descriptor flags.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
}

pub fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

pub fn set_blocking(fd: &OwnedFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Grows a pipe's kernel buffer (best effort; the kernel caps it at
/// `/proc/sys/fs/pipe-max-size`). A larger buffer lets a chatty service
/// write longer bursts without waiting for the orchestrator.
pub fn set_pipe_size(fd: &OwnedFd, bytes: i32) {
    // SAFETY: F_SETPIPE_SZ takes an int and only affects this pipe.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes);
    }
}
