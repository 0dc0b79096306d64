//! systemd's service notification protocol (`sd_notify(3)`), by hand: one datagram of
//! `NAME=value` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for a Linux
//! abstract socket). Without the variable every call does nothing, so the tools run the same
//! outside systemd.
//!
//! What is sent (from the session core, `crate::session`): `READY=1` once the first stream
//! began, `STATUS=` with the position and lag, `WATCHDOG=1` every half `$WATCHDOG_USEC` from
//! the receiver's own loop (so a stuck receiver stops pinging and systemd restarts it), and
//! `STOPPING=1` when the streaming ends. Sending never fails a run: systemd being away is
//! logged once.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::text::os_error;

/// A STATUS= text is cut to this many bytes: systemd shows one line of it.
const MAX_STATUS: usize = 512;

/// Where `$NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Path(std::path::PathBuf),
    /// A Linux abstract socket: `@name` in the variable, a leading NUL byte on the wire.
    Abstract(Vec<u8>),
}

/// Reads `$NOTIFY_SOCKET`. Empty means unset; systemd's other forms (`vsock:`) are not ours.
pub fn parse_address(value: &OsStr) -> Result<Option<Address>, String> {
    let b = value.as_bytes();
    match b.first() {
        None => Ok(None),
        Some(b'/') => Ok(Some(Address::Path(value.into()))),
        Some(b'@') if b.len() > 1 => Ok(Some(Address::Abstract(b[1..].to_vec()))),
        _ => Err(format!(
            "NOTIFY_SOCKET=\"{}\" is not an absolute path or an abstract socket (@name)",
            value.to_string_lossy().escape_default()
        )),
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends, when the watchdog is meant for this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval(usec: Option<&OsStr>, pid: Option<&OsStr>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.to_str()?.parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// `STATUS=text`: one line, whatever the text (it may quote the server, whose messages must
/// not add assignments of their own), at most [`MAX_STATUS`] bytes.
pub fn status_message(text: &str) -> String {
    let mut s = String::from("STATUS=");
    for c in text.chars() {
        if s.len() + c.len_utf8() > MAX_STATUS + "STATUS=".len() {
            break;
        }
        s.push(if c.is_control() { ' ' } else { c });
    }
    s
}

/// A notification socket, as systemd handed it to us.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    name: String,
    watchdog: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    stopping: bool,
    last_ping: Option<Instant>,
    failed: bool,
}

impl Notifier {
    pub fn new(addr: &Address, watchdog: Option<Duration>) -> std::io::Result<Notifier> {
        let (sa, name) = match addr {
            Address::Path(p) => (SocketAddr::from_pathname(p)?, p.display().to_string()),
            Address::Abstract(n) => {
                (SocketAddr::from_abstract_name(n)?, format!("@{}", String::from_utf8_lossy(n)))
            }
        };
        Ok(Notifier { sock: UnixDatagram::unbound()?, addr: sa, name, watchdog, state: Mutex::default() })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one message; a failure is logged once (then at debug level), never returned.
    pub fn send(&self, msg: &str) {
        match self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            Ok(_) => log::trace!("notified systemd: {msg}"),
            Err(e) => {
                let first = !std::mem::replace(&mut self.state().failed, true);
                let level = if first { log::Level::Warn } else { log::Level::Debug };
                log::log!(
                    level,
                    "could not notify systemd through socket \"{}\": {}",
                    self.name,
                    os_error(&e)
                );
            }
        }
    }

    /// `READY=1`, once in the life of the process.
    pub fn ready(&self, status: &str) {
        if !std::mem::replace(&mut self.state().ready, true) {
            self.send(&format!("READY=1\n{}", status_message(status)));
            self.ping(Instant::now());
        }
    }

    pub fn status(&self, text: &str) {
        self.send(&status_message(text));
    }

    /// `STOPPING=1`, once.
    pub fn stopping(&self, status: &str) {
        if !std::mem::replace(&mut self.state().stopping, true) {
            self.send(&format!("STOPPING=1\n{}", status_message(status)));
        }
    }

    fn ping(&self, now: Instant) {
        if self.watchdog.is_some() {
            self.state().last_ping = Some(now);
            self.send("WATCHDOG=1");
        }
    }

    /// Pings the watchdog if half its time-out has passed since the last ping.
    pub fn watchdog(&self, now: Instant) {
        if self.until_watchdog(now) == Some(Duration::ZERO) {
            self.ping(now);
        }
    }

    /// How long a wait may last before the next ping is due (`None`: no watchdog).
    pub fn until_watchdog(&self, now: Instant) -> Option<Duration> {
        let iv = self.watchdog?;
        Some(match self.state().last_ping {
            None => Duration::ZERO,
            Some(t) => (t + iv).saturating_duration_since(now),
        })
    }
}

/// The process's notifier, from the environment at first use; `None` outside systemd.
pub fn get() -> Option<&'static Notifier> {
    static N: OnceLock<Option<Notifier>> = OnceLock::new();
    N.get_or_init(|| {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        let addr = match parse_address(&value) {
            Ok(a) => a?,
            Err(e) => {
                log::warn!("{e}; not notifying systemd");
                return None;
            }
        };
        let wd = watchdog_interval(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match Notifier::new(&addr, wd) {
            Ok(n) => {
                log::debug!(
                    "notifying systemd through socket \"{}\"{}",
                    n.name,
                    wd.map(|d| format!(", watchdog ping every {d:?}")).unwrap_or_default()
                );
                Some(n)
            }
            Err(e) => {
                log::warn!(
                    "could not open the systemd notification socket: {}; not notifying systemd",
                    os_error(&e)
                );
                None
            }
        }
    })
    .as_ref()
}

/// [`Notifier::status`] of the process's notifier, if any.
pub fn status(text: &str) {
    if let Some(n) = get() {
        n.status(text);
    }
}

pub fn ready(status: &str) {
    if let Some(n) = get() {
        n.ready(status);
    }
}

pub fn stopping(status: &str) {
    if let Some(n) = get() {
        n.stopping(status);
    }
}

pub fn watchdog() {
    if let Some(n) = get() {
        n.watchdog(Instant::now());
    }
}

/// The longest a wait may last before the watchdog needs a ping.
pub fn until_watchdog() -> Option<Duration> {
    get().and_then(|n| n.until_watchdog(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let p = |s: &str| parse_address(OsStr::new(s));
        assert_eq!(p(""), Ok(None));
        assert_eq!(p("/run/systemd/notify"), Ok(Some(Address::Path("/run/systemd/notify".into()))));
        assert_eq!(
            p("@/org/freedesktop/systemd1/notify/1"),
            Ok(Some(Address::Abstract(b"/org/freedesktop/systemd1/notify/1".to_vec())))
        );
        assert!(p("@").is_err());
        assert!(p("relative/path").unwrap_err().contains("NOTIFY_SOCKET=\"relative/path\""));
        assert!(p("vsock:2:1234").is_err());
    }

    #[test]
    fn watchdog_settings() {
        let w =
            |u: Option<&str>, p: Option<&str>| watchdog_interval(u.map(OsStr::new), p.map(OsStr::new), 42);
        assert_eq!(w(Some("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(w(Some("30000000"), Some("42")), Some(Duration::from_secs(15)));
        assert_eq!(w(Some("30000000"), Some("43")), None, "another process's watchdog");
        assert_eq!(w(Some("30000000"), Some("x")), None);
        assert_eq!(w(Some("0"), None), None);
        assert_eq!(w(Some("-5"), None), None);
        assert_eq!(w(None, Some("42")), None);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_message("streaming at 0/3000000"), "STATUS=streaming at 0/3000000");
        // A server's message cannot add an assignment of its own.
        assert_eq!(status_message("reconnecting: boom\nREADY=1\r"), "STATUS=reconnecting: boom READY=1 ");
        let long = "é".repeat(1000);
        let s = status_message(&long);
        assert!(s.len() <= MAX_STATUS + 7 && s.ends_with('é'), "cut at a character boundary");
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Both address forms reach a listening socket; READY and STOPPING go out once.
    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let name = format!("pgrw-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let addr = parse_address(OsStr::new(&format!("@{name}"))).unwrap().unwrap();
        let n = Notifier::new(&addr, Some(Duration::from_secs(3600))).unwrap();
        n.ready("streaming at 0/10");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=streaming at 0/10");
        assert_eq!(recv(&listener), "WATCHDOG=1");
        n.ready("again");
        n.watchdog(Instant::now());
        assert!(n.until_watchdog(Instant::now()).unwrap() > Duration::from_secs(3000), "pinged just now");
        n.watchdog(Instant::now() + Duration::from_secs(3600));
        assert_eq!(recv(&listener), "WATCHDOG=1", "no second READY, no early ping, a ping when due");
        n.stopping("stopping");
        n.stopping("stopping");
        n.status("x");
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=stopping");
        assert_eq!(recv(&listener), "STATUS=x");

        let dir = std::env::temp_dir().join(format!("pgrw-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = Notifier::new(&Address::Path(path.clone()), None).unwrap();
        n.ready("r");
        n.watchdog(Instant::now());
        n.status("s");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=r");
        assert_eq!(recv(&listener), "STATUS=s", "no watchdog without WATCHDOG_USEC");
        assert_eq!(n.until_watchdog(Instant::now()), None);
        drop(listener);
        n.status("nobody listens: logged, not fatal");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
