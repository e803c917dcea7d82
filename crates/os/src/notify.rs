//! The sd_notify socket: one datagram socket per service, in the Linux
//! abstract namespace, whose address the service gets in `NOTIFY_SOCKET`.
//!
//! Each datagram carries the sender's credentials (SO_PASSCRED), so a
//! message is attributed to the process that sent it, never to whoever
//! happens to know the address. Descriptors passed along (systemd-notify
//! sends one with `BARRIER=1` and waits for it to be closed) are closed as
//! soon as the datagram is read, which is after every earlier datagram was
//! read: exactly the barrier's meaning.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    UnixCredentials, sockopt,
};

/// Datagrams larger than this are cut (and ignored): systemd's own limit
/// is far lower for sane messages.
const MAX_DATAGRAM: usize = 8192;
const MAX_FDS: usize = 16;

pub struct NotifySocket {
    fd: OwnedFd,
    address: String,
}

/// One message as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's pid from its credentials; `None` if the kernel sent none.
    pub pid: Option<u32>,
    pub text: String,
    /// Descriptors that came with it (already closed).
    pub fds: usize,
}

impl NotifySocket {
    /// Binds `@name` (abstract namespace: nothing on disk to clean up, gone
    /// when closed).
    pub fn bind(name: &str) -> io::Result<NotifySocket> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let addr = UnixAddr::new_abstract(name.as_bytes())?;
        socket::bind(fd.as_raw_fd(), &addr)?;
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        Ok(NotifySocket {
            fd,
            address: format!("@{name}"),
        })
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Reads one datagram without blocking; `Ok(None)` when none is waiting.
    pub fn recv(&self) -> io::Result<Option<Datagram>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match socket::recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut pid = None;
        let mut fds = 0;
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = u32::try_from(cred.pid()).ok(),
                ControlMessageOwned::ScmRights(received) => {
                    for raw in received {
                        // SAFETY: the kernel just installed this descriptor
                        // in our table for us; nothing else owns it.
                        drop(unsafe { OwnedFd::from_raw_fd(raw) });
                        fds += 1;
                    }
                }
                _ => {}
            }
        }
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let len = msg.bytes;
        if truncated {
            return Ok(Some(Datagram {
                pid,
                text: String::new(),
                fds,
            }));
        }
        Ok(Some(Datagram {
            pid,
            text: String::from_utf8_lossy(&buf[..len]).into_owned(),
            fds,
        }))
    }

    /// Registers the socket with the async runtime (readable interest).
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<NotifySocket>> {
        // SAFETY: the descriptor is owned by `self.fd` for the socket's whole
        // life and as_raw_fd always returns it, as registration requires.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)
    }
}

impl AsRawFd for NotifySocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(address: &str, text: &str) {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = UnixAddr::new_abstract(address.trim_start_matches('@').as_bytes()).unwrap();
        socket::sendto(fd.as_raw_fd(), text.as_bytes(), &addr, MsgFlags::empty()).unwrap();
    }

    #[test]
    fn receives_with_the_senders_pid() {
        let name = format!("blackhole-test/{}/{}", std::process::id(), "notify");
        let s = NotifySocket::bind(&name).unwrap();
        assert_eq!(s.recv().unwrap(), None);
        send(s.address(), "READY=1\nSTATUS=up\n");
        let d = s.recv().unwrap().unwrap();
        assert_eq!(d.pid, Some(std::process::id()));
        assert_eq!(d.text, "READY=1\nSTATUS=up\n");
        assert_eq!(d.fds, 0);
    }
}
