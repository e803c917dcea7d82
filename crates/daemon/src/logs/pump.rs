//! Reading one run's stdout and stderr pipes until both reach end of file.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use super::decoder::{Line, LineDecoder};
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
                    let mut batch = log.batch(source.stream, pid, n);
                    let read = &buf[..n];
                    let text = std::str::from_utf8(read).ok();
                    let verbatim = text.is_some() && batch.is_plain();
                    source.decoder.feed_lines(read, &mut |line| match line {
                        Line::Verbatim(line) if verbatim => batch.push_verbatim(line),
                        other => match within(text, read, other.text()) {
                            Some(line) => batch.push_str(line),
                            None => batch.push(other.text()),
                        },
                    });
                    Ok(Some(batch.finish()))
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

/// `line` as text, when it is a slice of `read` (not assembled from an
/// earlier read's tail) and `read` is valid UTF-8 as a whole (`text`): a
/// slice of valid text between character boundaries is valid text. A
/// line cut at the length limit may end or begin inside a character; it
/// is then not at a boundary, and checked on its own.
fn within<'a>(text: Option<&'a str>, read: &[u8], line: &[u8]) -> Option<&'a str> {
    let text = text?;
    let start = (line.as_ptr() as usize).checked_sub(read.as_ptr() as usize)?;
    text.get(start..start.checked_add(line.len())?)
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn only_slices_of_a_valid_read_at_character_boundaries_skip_the_check() {
        let read = "ab\u{e9}c\n".as_bytes(); // 'é' is two bytes, at 2..4
        let text = std::str::from_utf8(read).ok();
        assert_eq!(within(text, read, &read[0..5]), Some("ab\u{e9}c"));
        // Cut inside 'é': not a boundary, so no shortcut.
        assert_eq!(within(text, read, &read[0..3]), None);
        assert_eq!(within(text, read, &read[3..5]), None);
        // Not part of the read (an earlier read's tail joined to it).
        let other = b"ab".to_vec();
        assert_eq!(within(text, read, &other), None);
        // The read is not valid text as a whole: every line is checked.
        let bad: Vec<u8> = [b"ok\n".as_slice(), &[0xff], b"\n"].concat();
        assert_eq!(
            within(std::str::from_utf8(&bad).ok(), &bad, &bad[0..2]),
            None
        );
    }
}
