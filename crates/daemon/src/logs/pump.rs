//! Reading one run's stdout and stderr pipes until both reach end of file.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use super::decoder::LineDecoder;
use super::{ServiceLog, Stream};

const READ_SIZE: usize = 256 * 1024;
/// A pipe's size until it is grown (Linux's default).
const DEFAULT_PIPE: usize = 64 * 1024;
/// What a pipe that filled up grows to (Linux's default ceiling for
/// unprivileged processes, `fs.pipe-max-size`).
const FLOOD_PIPE: i32 = 1024 * 1024;

thread_local! {
    /// One read buffer per runtime thread, not per service: a pump
    /// processes each read completely before it awaits anything, so the
    /// buffer is never held across an await and hundreds of idle
    /// services cost no buffer memory.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_SIZE].into_boxed_slice());
}

struct Source {
    fd: AsyncFd<OwnedFd>,
    decoder: LineDecoder,
    stream: Stream,
    /// The pipe was found full once and made larger.
    grown: bool,
}

/// Copies lines from the pipes into `log` until both are closed (the
/// service and everything that inherited the pipes are gone).
pub async fn pump(
    log: Arc<ServiceLog>,
    pid: u32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
) {
    let open = |fd: Option<OwnedFd>, stream| {
        fd.and_then(|fd| match blackhole_os::asyncfd::register(fd) {
            Ok(fd) => Some(Source {
                fd,
                decoder: LineDecoder::default(),
                stream,
                grown: false,
            }),
            Err(e) => {
                tracing::error!(
                    service = log.name(),
                    "cannot watch the {} pipe: {e}",
                    stream.as_str()
                );
                None
            }
        })
    };
    let mut sources = [open(stdout, Stream::Stdout), open(stderr, Stream::Stderr)];
    loop {
        let which = match (&sources[0], &sources[1]) {
            (None, None) => return,
            (Some(a), None) => readable(a, 0).await,
            (None, Some(b)) => readable(b, 1).await,
            (Some(a), Some(b)) => tokio::select! {
                i = readable(a, 0) => i,
                i = readable(b, 1) => i,
            },
        };
        let Some(source) = &mut sources[which] else {
            continue;
        };
        if !drain(&log, pid, source).await {
            sources[which] = None;
        }
    }
}

async fn readable(source: &Source, index: usize) -> usize {
    // An error here (the fd was closed under us) is handled by the read.
    let _ = source.fd.readable().await;
    index
}

/// Reads what is available; false at end of file.
async fn drain(log: &ServiceLog, pid: u32, source: &mut Source) -> bool {
    // A few reads per wake-up, then give others a turn.
    for _ in 0..8 {
        let mut guard = match source.fd.readable().await {
            Ok(g) => g,
            Err(_) => return false,
        };
        let result = guard.try_io(|fd| {
            READ_BUF.with_borrow_mut(|buf| match nix::unistd::read(fd.get_ref(), buf) {
                Ok(0) => Ok(None),
                Ok(n) => {
                    if n >= DEFAULT_PIPE && !source.grown {
                        // A pipe found full
                        // belongs to a service that writes faster than it
                        // is read: a larger one lets it run longer between
                        // waits, which halves the wake-ups of both sides.
                        // Pages are only used as they fill; a quiet
                        // service's pipe never grows. Refused (not root,
                        // past `fs.pipe-max-size` or the user's pipe
                        // budget) it stays as it is.
                        source.grown = true;
                        let _ = nix::fcntl::fcntl(
                            fd.get_ref(),
                            nix::fcntl::FcntlArg::F_SETPIPE_SZ(FLOOD_PIPE),
                        );
                    }
                    Ok(Some(log.take_read(
                        source.stream,
                        pid,
                        &mut source.decoder,
                        &buf[..n],
                    )))
                }
                Err(nix::errno::Errno::EINTR) => Ok(Some(Vec::new())),
                Err(e) => Err(std::io::Error::from(e)),
            })
        });
        match result {
            Err(_would_block) => return true,
            Ok(Ok(Some(batches))) => {
                for b in batches {
                    log.writer().send(b).await;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                let batches = {
                    let mut batch = log.batch(source.stream, pid, source.decoder.pending());
                    source.decoder.finish(&mut |line| batch.push(line));
                    batch.finish()
                };
                for b in batches {
                    log.writer().send(b).await;
                }
                return false;
            }
        }
    }
    true
}
