//! The libc calls std does not offer: poll(2) on several descriptors, an eventfd to wake a
//! polling thread, SIGINT/SIGTERM delivered to a descriptor, statvfs(3), posix_fadvise(2) and
//! reading a password without echo.

use std::ffi::{c_int, CString};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no limit). Returns, for each
/// descriptor, whether it is ready (errors and hang-ups count as ready so the caller's next
/// read reports them). EINTR is retried.
pub fn poll(fds: &[(RawFd, Interest)], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, i)| libc::pollfd {
            fd,
            events: if i == Interest::Read { libc::POLLIN } else { libc::POLLOUT },
            revents: 0,
        })
        .collect();
    let ms: c_int = match timeout {
        None => -1,
        // Round up so a 0.5 ms wait does not become a busy loop.
        Some(d) => c_int::try_from(d.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX),
    };
    loop {
        // SAFETY: pfds is a valid array of nfds pollfd structs that poll may write revents into.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(pfds.iter().map(|p| p.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A Linux eventfd: a counter another thread can bump to wake a thread blocked in `poll`,
/// without ever blocking the notifier (a pipe can fill up).
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory preconditions; a non-negative return is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by eventfd and is owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the descriptor readable. Never blocks; a saturated counter is already readable.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd, as eventfd(2) requires.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter so the next poll waits again.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (not readable) is fine to ignore.
        unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static HANGUP_FD: AtomicI32 = AtomicI32::new(-1);

/// SIGHUP only wakes the loop, which logs it: systemd's `reload` (or a closed terminal) must
/// not stop archiving, and a daemon says what it did with every signal it got.
extern "C" fn on_hangup(_sig: c_int) {
    let fd = HANGUP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; fd is an eventfd that lives for the process.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

extern "C" fn on_stop_signal(sig: c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; fd is an eventfd that lives for the process.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// SIGINT and SIGTERM turned into a readable descriptor, so the receive loop can stop cleanly
/// from its poll instead of being killed in the middle of a write.
pub struct StopSignals {
    event: &'static EventFd,
    hangup: &'static EventFd,
}

impl StopSignals {
    /// Installs the handlers (once per process; later calls return the same descriptor).
    pub fn install() -> io::Result<StopSignals> {
        static EVENT: std::sync::OnceLock<EventFd> = std::sync::OnceLock::new();
        static HANGUP: std::sync::OnceLock<EventFd> = std::sync::OnceLock::new();
        if let (Some(event), Some(hangup)) = (EVENT.get(), HANGUP.get()) {
            return Ok(StopSignals { event, hangup });
        }
        let event = EVENT.get_or_init(|| EventFd::new().expect("eventfd"));
        let hangup = HANGUP.get_or_init(|| EventFd::new().expect("eventfd"));
        SIGNAL_FD.store(event.fd(), Ordering::SeqCst);
        HANGUP_FD.store(hangup.fd(), Ordering::SeqCst);
        let handlers: [(c_int, extern "C" fn(c_int)); 3] =
            [(libc::SIGINT, on_stop_signal), (libc::SIGTERM, on_stop_signal), (libc::SIGHUP, on_hangup)];
        for (sig, handler) in handlers {
            // SAFETY: sigaction with a zeroed struct, an empty mask and an extern "C" handler
            // that only does async-signal-safe work (atomic stores and write(2)). SA_RESTART
            // keeps other threads' blocking calls from failing with EINTR.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(StopSignals { event, hangup })
    }

    /// Readable once a stop signal has arrived.
    pub fn fd(&self) -> RawFd {
        self.event.fd()
    }

    /// The signal that asked us to stop, if any (it stays set: stopping is not undone).
    pub fn received(&self) -> Option<i32> {
        match LAST_SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Readable once SIGHUP has arrived (until [`StopSignals::take_hangup`]).
    pub fn hangup_fd(&self) -> RawFd {
        self.hangup.fd()
    }

    /// Whether SIGHUP arrived since the last call.
    pub fn take_hangup(&self) -> bool {
        let ready = poll(&[(self.hangup.fd(), Interest::Read)], Some(Duration::ZERO)).is_ok_and(|r| r[0]);
        self.hangup.drain();
        ready
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    // SAFETY: zeroed statvfs is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types differ between 32- and 64-bit targets.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// Tells the kernel a finished segment will not be read again, so archiving a large backlog
/// does not evict the page cache the database host needs. Advice only: errors are ignored.
pub fn drop_from_page_cache(file: &File) {
    // SAFETY: posix_fadvise on a live descriptor has no memory effects.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Prompts on the terminal and reads a line with echo off (what `-W` does in PostgreSQL's
/// tools). Falls back to standard input when there is no terminal.
///
/// The wait watches `stop` (the stop-signal descriptor) too: our SIGINT/SIGTERM handlers use
/// SA_RESTART, so a blocking read of the terminal would carry on after Ctrl-C until Enter. A
/// stop ends the prompt at once with an error of kind `Interrupted`.
pub fn read_password(prompt: &str, stop: Option<RawFd>) -> io::Result<String> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty");
    let Ok(mut tty) = tty else {
        wait_readable(libc::STDIN_FILENO, stop)?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    };
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let fd = tty.as_raw_fd();
    // SAFETY: tcgetattr/tcsetattr on a live terminal descriptor with a valid termios struct;
    // the original settings are restored before returning.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSAFLUSH, &t);
        saved
    };
    let mut line = String::new();
    // In canonical mode the terminal is readable once a whole line (or end of file) is there.
    let res = wait_readable(fd, stop).and_then(|()| io::BufReader::new(&tty).read_line(&mut line));
    // SAFETY: as above.
    unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &saved) };
    let _ = tty.write_all(b"\n");
    res?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Waits until `fd` is readable, or fails with `Interrupted` once `stop` is.
fn wait_readable(fd: RawFd, stop: Option<RawFd>) -> io::Result<()> {
    let mut fds = vec![(fd, Interest::Read)];
    fds.extend(stop.map(|s| (s, Interest::Read)));
    let ready = poll(&fds, None)?;
    if ready.get(1) == Some(&true) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted by a stop signal"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_wakes_poll() {
        let e = EventFd::new().unwrap();
        assert_eq!(poll(&[(e.fd(), Interest::Read)], Some(Duration::from_millis(1))).unwrap(), vec![false]);
        e.notify();
        e.notify();
        assert_eq!(poll(&[(e.fd(), Interest::Read)], Some(Duration::ZERO)).unwrap(), vec![true]);
        e.drain();
        assert_eq!(poll(&[(e.fd(), Interest::Read)], Some(Duration::ZERO)).unwrap(), vec![false]);
    }

    #[test]
    fn a_stop_ends_the_wait_for_input() {
        // A pipe nobody writes to stands for a terminal nobody types at.
        let mut fds = [0 as c_int; 2];
        // SAFETY: pipe(2) fills two descriptors we then own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned only here.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let stop = EventFd::new().unwrap();
        stop.notify();
        let e = wait_readable(r.as_raw_fd(), Some(stop.fd())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        stop.drain();
        // SAFETY: writes one byte from a live buffer to the pipe's write end.
        assert_eq!(unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) }, 1);
        wait_readable(r.as_raw_fd(), Some(stop.fd())).unwrap();
    }

    #[test]
    fn free_space_of_tmp() {
        assert!(free_space(Path::new("/tmp")).unwrap() > 0);
        assert!(free_space(Path::new("/nonexistent/dir")).is_err());
    }
}
