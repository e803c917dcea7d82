//! Registering descriptors with the async runtime.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Wraps an owned descriptor for readiness-based async I/O. The caller
/// must have made it non-blocking.
pub fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that it alone closes,
    // and its as_raw_fd returns that same descriptor for its whole life,
    // which is what registration requires.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
