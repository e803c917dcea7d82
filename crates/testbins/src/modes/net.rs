//! Readiness over the network: sd_notify datagrams, a tiny HTTP health
//! endpoint and a bare TCP port. Servers run on a thread; the main thread
//! stays in `sigtimedwait` so SIGTERM is answered while a client is served.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Cli;
use crate::{complain, die, sig};

pub fn notify(cli: &Cli) -> ! {
    let delay = cli.ms("delay", 0);
    let shown = cli.get("message").unwrap_or("READY=1");
    let message = unescape(shown);
    let every = cli.opt_num("watchdog-every").map(Duration::from_millis);
    let count: Option<u32> = cli.opt_num("watchdog-count");
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        complain(format_args!("NOTIFY_SOCKET is not set"));
        std::process::exit(3)
    };
    let addr = notify_addr(path.as_bytes())
        .unwrap_or_else(|e| die(format_args!("NOTIFY_SOCKET={path:?}: {e}")));
    let sock = UnixDatagram::unbound().unwrap_or_else(|e| die(format_args!("socket: {e}")));
    let send = |msg: &str| {
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), &addr) {
            die(format_args!("send to {path:?}: {e}"));
        }
    };
    sig::sleep(cli, delay);
    send(&message);
    // Printed as given, escapes and all, so a multi-line message stays one log line.
    say!("sent {shown}");
    let Some(every) = every else {
        sig::run_until_term(cli)
    };
    let t0 = Instant::now();
    let mut sent = 0;
    // After the last ping the service keeps running: a hang, as the watchdog sees it.
    while count.is_none_or(|c| sent < c) {
        sent += 1;
        sig::sleep(
            cli,
            (t0 + every * sent).saturating_duration_since(Instant::now()),
        );
        send("WATCHDOG=1");
        say!("sent WATCHDOG=1");
    }
    sig::run_until_term(cli)
}

/// `@name` is the Linux abstract namespace: std puts the NUL in sun_path and
/// passes the exact length, as sd_notify does.
fn notify_addr(raw: &[u8]) -> io::Result<SocketAddr> {
    match raw.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(OsStr::from_bytes(raw)),
    }
}

/// Only `\n` and `\\` mean something; other backslashes stay as they are.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => out.extend(['\\', other]),
            None => out.push('\\'),
        }
    }
    out
}

pub fn http(cli: &Cli) -> ! {
    let port = cli.num("port", 0);
    let status: u16 = cli.num("status", 200);
    let fail_after: Option<usize> = cli.opt_num("fail-after");
    let delay = cli.ms("delay", 0);
    serve(port, delay, move |conn, n| {
        let status = if fail_after.is_some_and(|f| n >= f) {
            500
        } else {
            status
        };
        answer(conn, status);
    });
    sig::run_until_term(cli)
}

fn answer(mut conn: TcpStream, status: u16) {
    // Reading the whole request head first: closing with unread input would
    // reset the connection and the client could lose the reply.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let (mut head, mut buf) = (Vec::new(), [0; 1024]);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let reply = format!("HTTP/1.0 {status} X\r\nContent-Length: 2\r\n\r\nok");
    let _ = conn.write_all(reply.as_bytes());
}

pub fn tcp(cli: &Cli) -> ! {
    let port = cli.num("port", 0);
    let delay = cli.ms("delay", 0);
    serve(port, delay, |conn, _| drop(conn));
    sig::run_until_term(cli)
}

/// Port 0 picks a free port; the one actually bound is printed.
fn serve(port: u16, delay: Duration, mut handle: impl FnMut(TcpStream, usize) + Send + 'static) {
    let server = move || {
        thread::sleep(delay);
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| die(format_args!("bind 127.0.0.1:{port}: {e}")));
        let port = listener.local_addr().map_or(port, |a| a.port());
        say!("listening on {port}");
        for (n, conn) in listener.incoming().filter_map(Result::ok).enumerate() {
            handle(conn, n);
        }
    };
    if let Err(e) = thread::Builder::new().spawn(server) {
        die(format_args!("spawn: {e}"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescape_newlines() {
        assert_eq!(
            super::unescape(r"READY=1\nSTATUS=a\\b\t"),
            "READY=1\nSTATUS=a\\b\\t"
        );
    }
}
