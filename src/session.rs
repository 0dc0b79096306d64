//! The session core both tools share: the skeleton of a replication session, which differs
//! between the physical and the logical tool only in what is done with a message.
//!
//! - [`WriterHandle`]: the writer thread as the receiver sees it: spawn, send, join, and the
//!   positions it publishes ([`Progress`]). Whatever way the writer ends (an error, a clean
//!   end, a panic), it marks itself stopped *before* it wakes the receiver, so the receiver
//!   never misses a dead writer on a quiet server.
//! - [`Core::copy_stream`]: the COPY BOTH loop of PostgreSQL's `receivelog.c`
//!   (`HandleCopyStream`): drain what libpq has without blocking, hand it over, report a new
//!   durable position at once, then wait on the socket, the stop signal, SIGHUP and the
//!   writer's wake-up, never longer than the next status update is due.
//! - [`reconnect`]: sessions with back-off after anything transient, and the stopping rule:
//!   a stop signal turns only the errors a retry would cure into a clean stop; a writer
//!   failure (a failed fsync) never ends in exit status 0.
//!
//! - What the outside sees, once for both tools: the positions and lag line in the log
//!   (`crate::lag`), and systemd's notifications (`crate::notify`): READY=1 when the first
//!   stream begins, STATUS=, watchdog pings from this loop (its waits never outlast the next
//!   ping, so a stuck receiver stops pinging), STOPPING=1 when the run ends.
//!
//! Each tool supplies a [`Handler`] (its messages, its positions) and a [`WriterThread`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, Sender, TryRecvError};
use pgrw_ffi::sys::{poll, EventFd, Interest, StopSignals};
use pgrw_ffi::{CopyRead, Status};

use crate::lag::{self, Schedule, ServerClock, Shown};
use crate::logging::Hinted;
use crate::lsn::Lsn;
use crate::metrics::{self, ErrorKind};
use crate::notify;
use crate::protocol::{pg_now, ServerMessage, StatusUpdate};
use crate::server::{Server, ServerError};
use crate::text::os_error;

/// Reconnect delays grow from the first to the last, doubling.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that streamed this long resets the back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// While the writer cannot take more (a slow or full disk), the receiver stops reading but
/// looks at the stop signal this often, and sends a status update at least this often when
/// no status interval is set, so the server's wal_sender_timeout never ends a paused session.
const BLOCKED_POLL: Duration = Duration::from_millis(200);
const BLOCKED_STATUS_EVERY: Duration = Duration::from_secs(10);

/// How a stream ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Everything up to the end position (`--endpos`) is written.
    EndPos(Lsn),
    /// SIGINT or SIGTERM.
    Stopped,
}

/// Positions the writer publishes to the receiver.
#[derive(Debug, Default)]
pub struct Progress {
    written: AtomicU64,
    flushed: AtomicU64,
    stopped: AtomicBool,
    /// The server's WAL end, from its last message (for the disk-full warning).
    server_end: AtomicU64,
    /// The session is stopping: a writer waiting for disk space gives up instead.
    give_up: AtomicBool,
    /// The writer gave up: what it was handed after that is never written.
    gave_up: AtomicBool,
}

impl Progress {
    pub fn new(start: Lsn) -> Progress {
        Progress {
            written: AtomicU64::new(start.0),
            flushed: AtomicU64::new(start.0),
            stopped: AtomicBool::new(false),
            server_end: AtomicU64::new(0),
            give_up: AtomicBool::new(false),
            gave_up: AtomicBool::new(false),
        }
    }

    /// Output before this position has been handed to the kernel (written, maybe not durable):
    /// the `write` of status updates, which `synchronous_commit = remote_write` waits for.
    pub fn written(&self) -> Lsn {
        Lsn(self.written.load(Ordering::Acquire))
    }

    /// Output before this position is on disk (fsync'ed, or written with --no-sync): the
    /// `flush` of status updates.
    pub fn flushed(&self) -> Lsn {
        Lsn(self.flushed.load(Ordering::Acquire))
    }

    pub fn advance_written(&self, to: Lsn) {
        self.written.fetch_max(to.0, Ordering::AcqRel);
    }

    /// What is durable is also written.
    pub fn advance_flushed(&self, to: Lsn) {
        self.advance_written(to);
        self.flushed.fetch_max(to.0, Ordering::AcqRel);
    }

    /// The writer has stopped: its result (an error, unless the channel was closed) waits in
    /// its join handle.
    pub fn writer_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn saw_server_end(&self, end: Lsn) {
        self.server_end.fetch_max(end.0, Ordering::AcqRel);
    }

    /// The end of the server's WAL as far as we know (`Lsn::INVALID` before any message).
    pub fn server_end(&self) -> Lsn {
        Lsn(self.server_end.load(Ordering::Acquire))
    }

    /// Tells a writer that waits for disk space to stop waiting (see [`WriterHandle::give_up`]).
    pub fn give_up(&self) {
        self.give_up.store(true, Ordering::Release);
    }

    pub fn giving_up(&self) -> bool {
        self.give_up.load(Ordering::Acquire)
    }

    /// The writer says it gave up waiting for disk space (it wakes the receiver after this).
    pub fn mark_gave_up(&self) {
        self.gave_up.store(true, Ordering::Release);
    }

    pub fn gave_up(&self) -> bool {
        self.gave_up.load(Ordering::Acquire)
    }
}

/// A writer error, as the session needs to judge it.
pub trait WriterFailure: std::error::Error + Hinted + Send + 'static {
    /// Errors a restart cannot cure, which must stop the program instead of a reconnect.
    fn is_fatal(&self) -> bool;
}

/// The body of a writer thread: it handles messages until the channel closes, then makes
/// its output durable.
pub trait WriterThread: Send + 'static {
    type Msg: Send + 'static;
    type Output: Send + 'static;
    type Error: WriterFailure;
    fn run(self, rx: Inbox<Self::Msg>) -> Result<Self::Output, Self::Error>;
}

/// The writer's end of the channel, read on the writer thread only. A writer with nothing to
/// do parks its thread, and [`WriterHandle::send`] unparks it: one futex wait and one futex
/// wake, and no system call at all when the writer is busy. crossbeam's blocking `recv` spins
/// and calls `sched_yield` up to four times before it parks, which with --synchronous happens
/// on every commit, on the commit's path (docs/benchmarks.md, "Synchronous commit path").
pub struct Inbox<M> {
    rx: Receiver<M>,
}

impl<M> Inbox<M> {
    /// Only the thread that will read it may own an inbox: senders unpark that thread.
    pub fn new(rx: Receiver<M>) -> Inbox<M> {
        Inbox { rx }
    }

    /// The next message, waiting for one; an error once the channel is empty and closed.
    pub fn recv(&self) -> Result<M, RecvError> {
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                // park returns at once if an unpark came since the last park (a send that
                // raced with this check), and may return spuriously: the loop looks again.
                Err(TryRecvError::Empty) => std::thread::park(),
            }
        }
    }

    pub fn try_recv(&self) -> Result<M, TryRecvError> {
        self.rx.try_recv()
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<M, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    std::thread::park_timeout(left);
                }
            }
        }
    }
}

/// Errors of a streaming session, with the tool's writer error `W`.
#[derive(Debug)]
pub enum StreamError<W> {
    Server(ServerError),
    Protocol {
        server: String,
        message: String,
    },
    /// The writer failed: its error is the cause.
    Writer(W),
    /// The server ended the stream without an error and without a new timeline (it is
    /// shutting down).
    ServerClosed {
        server: String,
        at: Lsn,
    },
    Unexpected {
        server: String,
        message: String,
    },
    /// A stop came while the writer waited for disk space, before what the session waited
    /// for was durable.
    GaveUp {
        server: String,
    },
}

impl<W: WriterFailure> StreamError<W> {
    pub fn is_fatal(&self) -> bool {
        match self {
            StreamError::Server(e) => e.fatal,
            StreamError::Protocol { .. } | StreamError::Unexpected { .. } => true,
            StreamError::Writer(e) => e.is_fatal(),
            StreamError::ServerClosed { .. } | StreamError::GaveUp { .. } => false,
        }
    }

    pub fn is_writer_failure(&self) -> bool {
        matches!(self, StreamError::Writer(_))
    }

    /// The `kind` label of the errors metric.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StreamError::Server(e) => e.kind(),
            StreamError::ServerClosed { .. } => ErrorKind::Server,
            StreamError::Protocol { .. } | StreamError::Unexpected { .. } => ErrorKind::Protocol,
            // The writer stopped waiting for disk space (normally on a stop, not counted).
            StreamError::Writer(_) | StreamError::GaveUp { .. } => ErrorKind::Writer,
        }
    }
}

impl<W: fmt::Display> fmt::Display for StreamError<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Server(e) => e.fmt(f),
            StreamError::Protocol { server, message } => write!(f, "{message} (server {server})"),
            StreamError::Writer(e) => e.fmt(f),
            StreamError::ServerClosed { server, at } => {
                write!(f, "replication stream was terminated by the server at {at} (server {server})")
            }
            StreamError::Unexpected { server, message } => write!(f, "{message} (server {server})"),
            StreamError::GaveUp { server } => {
                write!(f, "stopped while waiting for disk space (server {server})")
            }
        }
    }
}

impl<W: Hinted> Hinted for StreamError<W> {
    fn detail(&self) -> Option<String> {
        match self {
            StreamError::Server(e) => e.detail(),
            StreamError::Writer(e) => e.detail(),
            StreamError::GaveUp { .. } => Some("What was not written is sent again by the next run.".into()),
            _ => None,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            StreamError::Server(e) => e.hint(),
            StreamError::Writer(e) => e.hint(),
            _ => None,
        }
    }
}

impl<W: std::error::Error + 'static> std::error::Error for StreamError<W> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Server(e) => Some(e),
            StreamError::Writer(e) => Some(e),
            _ => None,
        }
    }
}

impl<W> From<ServerError> for StreamError<W> {
    fn from(e: ServerError) -> StreamError<W> {
        StreamError::Server(e)
    }
}

/// Marks the writer stopped and wakes the receiver when the writer thread ends, by return or
/// by panic (tantivy's "bomb"): the order matters, the receiver reads the flag on wake-up.
struct StoppedOnDrop {
    progress: Arc<Progress>,
    wake: Arc<EventFd>,
}

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.progress.stopped.store(true, Ordering::Release);
        self.wake.notify();
    }
}

/// The writer thread as the receiver sees it.
pub struct WriterHandle<W: WriterThread> {
    server: String,
    tx: Option<Sender<W::Msg>>,
    thread: Option<JoinHandle<Result<W::Output, W::Error>>>,
    progress: Arc<Progress>,
    wake: Arc<EventFd>,
}

impl<W: WriterThread> WriterHandle<W> {
    /// Starts the writer that `make` builds from the shared progress and wake-up (or fails
    /// to), with a channel of `capacity` messages. `server` names the connection in errors.
    pub fn spawn(
        name: &str,
        server: &str,
        capacity: usize,
        start: Lsn,
        make: impl FnOnce(Arc<Progress>, Arc<EventFd>) -> Result<W, W::Error>,
    ) -> Result<WriterHandle<W>, StreamError<W::Error>> {
        let unexpected = |message: String| StreamError::Unexpected { server: server.to_owned(), message };
        let progress = Arc::new(Progress::new(start));
        let wake = Arc::new(
            EventFd::new().map_err(|e| unexpected(format!("could not create eventfd: {}", os_error(&e))))?,
        );
        let writer = make(progress.clone(), wake.clone()).map_err(StreamError::Writer)?;
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let guard = StoppedOnDrop { progress: progress.clone(), wake: wake.clone() };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _guard = guard;
                writer.run(Inbox::new(rx))
            })
            .map_err(|e| unexpected(format!("could not start the writer thread: {}", os_error(&e))))?;
        Ok(WriterHandle { server: server.to_owned(), tx: Some(tx), thread: Some(thread), progress, wake })
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn send(&mut self, msg: W::Msg) -> Result<(), StreamError<W::Error>> {
        if self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok()) {
            self.unpark_writer();
            return Ok(());
        }
        // The writer dropped its end: it failed, and its error is the one to report.
        Err(self.failure())
    }

    /// Like [`send`](Self::send), but gives the message back when the channel stays full for
    /// `timeout`.
    pub fn send_timeout(
        &mut self,
        msg: W::Msg,
        timeout: Duration,
    ) -> Result<Option<W::Msg>, StreamError<W::Error>> {
        let Some(tx) = &self.tx else { return Err(self.failure()) };
        // The common case, a channel with room, without reading the clock.
        // Every message sent unparks the writer (see [`Inbox`]).
        let msg = match tx.try_send(msg) {
            Ok(()) => {
                self.unpark_writer();
                return Ok(None);
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Err(self.failure()),
            Err(crossbeam_channel::TrySendError::Full(msg)) => msg,
        };
        match tx.send_timeout(msg, timeout) {
            Ok(()) => {
                self.unpark_writer();
                Ok(None)
            }
            Err(crossbeam_channel::SendTimeoutError::Timeout(msg)) => Ok(Some(msg)),
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => Err(self.failure()),
        }
    }

    /// The session is ending (a stop, an error): a writer paused for disk space stops waiting
    /// and drops what it could not write, which the next session streams again. A writer
    /// that can write is not affected.
    pub fn give_up(&self) {
        self.progress.give_up();
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Closes the channel and waits for the writer, which then makes its output durable. A
    /// panic is an error, never a clean end.
    pub fn join(&mut self) -> Result<Option<W::Output>, StreamError<W::Error>> {
        self.close();
        match self.thread.take() {
            None => Ok(None),
            Some(h) => match h.join() {
                Ok(r) => r.map(Some).map_err(StreamError::Writer),
                Err(_) => Err(self.unexpected("the writer thread panicked")),
            },
        }
    }

    /// Closes the channel: the writer ends once it has handled what the channel holds. A
    /// parked writer sees the closed channel only when it looks again, so this wakes it; every
    /// path that drops the sender goes through here (a drop without the wake-up left the
    /// writer parked and the session waiting for it for ever).
    fn close(&mut self) {
        self.tx = None;
        self.unpark_writer();
    }

    /// Wakes the writer if it is parked in [`Inbox`] (a futex wake); otherwise only marks it
    /// to look again, without a system call.
    fn unpark_writer(&self) {
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// The error of a writer that stopped while it was still needed: its own, or a plain one
    /// if it somehow ended cleanly.
    pub fn failure(&mut self) -> StreamError<W::Error> {
        match self.join() {
            Err(e) => e,
            Ok(_) => self.unexpected("the writer thread stopped"),
        }
    }

    /// Waits until the writer has made everything before `to` durable.
    pub fn wait_flushed(&mut self, to: Lsn) -> Result<(), StreamError<W::Error>> {
        while self.progress.flushed() < to {
            if self.progress.writer_stopped() {
                return Err(self.failure());
            }
            if self.progress.gave_up() {
                return Err(StreamError::GaveUp { server: self.server.clone() });
            }
            poll(&[(self.wake.fd(), Interest::Read)], None)
                .map_err(|e| self.unexpected(&format!("could not wait for the writer: {}", os_error(&e))))?;
            self.wake.drain();
        }
        Ok(())
    }

    /// One wait of [`wait_flushed`](Self::wait_flushed), at most `timeout`: true when done.
    fn wait_flushed_for(&mut self, to: Lsn, timeout: Duration) -> Result<bool, StreamError<W::Error>> {
        if self.progress.flushed() >= to {
            return Ok(true);
        }
        if self.progress.writer_stopped() {
            return Err(self.failure());
        }
        if self.progress.gave_up() {
            return Err(StreamError::GaveUp { server: self.server.clone() });
        }
        poll(&[(self.wake.fd(), Interest::Read)], Some(timeout))
            .map_err(|e| self.unexpected(&format!("could not wait for the writer: {}", os_error(&e))))?;
        self.wake.drain();
        Ok(self.progress.flushed() >= to)
    }

    fn unexpected(&self, message: &str) -> StreamError<W::Error> {
        StreamError::Unexpected { server: self.server.clone(), message: message.into() }
    }
}

impl<W: WriterThread> Drop for WriterHandle<W> {
    /// A handle dropped without a join (an early return, a panic) still closes the channel
    /// and wakes the writer, which then ends as on a join instead of staying parked.
    fn drop(&mut self) {
        self.close();
    }
}

/// When the next standby status update is due.
#[derive(Debug, Clone, Copy)]
struct StatusClock {
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl StatusClock {
    fn due(&self) -> bool {
        match (self.interval, self.last) {
            (_, None) => true,
            (Some(iv), Some(t)) => t.elapsed() >= iv,
            (None, Some(_)) => false,
        }
    }

    /// How long a wait may last before an update is due (`None`: no periodic updates).
    fn until_due(&self) -> Option<Duration> {
        match (self.interval, self.last) {
            (Some(iv), Some(t)) => Some(iv.saturating_sub(t.elapsed())),
            (Some(_), None) => Some(Duration::ZERO),
            (None, _) => None,
        }
    }
}

/// The positions of a standby status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    pub write: Lsn,
    /// `Lsn::INVALID` when the tool does not report a flush position.
    pub flush: Lsn,
    pub apply: Lsn,
}

/// What a tool does with the messages of its stream.
pub trait Handler<W: WriterThread> {
    /// The payload of one XLogData message. `Some` ends the stream (the end position).
    fn data(
        &mut self,
        core: &mut Core<'_, W>,
        start: Lsn,
        data: &[u8],
    ) -> SessionResult<Option<StreamEnd>, W>;
    /// A keepalive; when the server asks for a reply, hand over what is pending and ask the
    /// writer for durability: the core sends the status update right after.
    fn keepalive(
        &mut self,
        core: &mut Core<'_, W>,
        wal_end: Lsn,
        reply_requested: bool,
    ) -> SessionResult<Option<StreamEnd>, W>;
    /// libpq has nothing more for now: hand what is batched to the writer.
    fn hand_over(&mut self, core: &mut Core<'_, W>) -> SessionResult<(), W>;
    /// We decided to stop (`end`): what must reach the writer before it is closed.
    fn stopping(&mut self, core: &mut Core<'_, W>, end: StreamEnd) -> SessionResult<(), W>;
    /// The positions to report now.
    fn positions(&self, progress: &Progress) -> Positions;
    /// The positions the log and systemd show: received, written, and durable (for
    /// pgrecvlogical the confirmed position).
    fn shown(&self, progress: &Progress) -> Shown;
}

pub type SessionResult<T, W> = Result<T, StreamError<<W as WriterThread>::Error>>;

/// How the COPY BOTH loop ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEnd {
    /// We stopped it.
    Ours(StreamEnd),
    /// The server ended it (CopyDone): see [`Core::end_of_copy`].
    Server,
}

/// One replication session: the connection, the stop signal and the writer thread.
pub struct Core<'a, W: WriterThread> {
    pub server: &'a mut Server,
    pub stop: &'a StopSignals,
    pub writer: WriterHandle<W>,
    clock: StatusClock,
    /// Inside the COPY BOTH stream, where status updates may be sent (not, say, while
    /// pgrecvlogical writes its initial snapshot before START_REPLICATION).
    in_copy: bool,
    reported_flush: Lsn,
    /// The positions of the last status update, repeated while the writer is behind.
    reported: Option<Positions>,
    server_clock: ServerClock,
    schedule: Schedule,
}

impl<'a, W: WriterThread> Core<'a, W> {
    pub fn new(
        server: &'a mut Server,
        stop: &'a StopSignals,
        writer: WriterHandle<W>,
        status_interval: Option<Duration>,
    ) -> Core<'a, W> {
        Core {
            server,
            stop,
            writer,
            clock: StatusClock { interval: status_interval, last: None },
            in_copy: false,
            reported_flush: Lsn::INVALID,
            reported: None,
            server_clock: ServerClock::default(),
            schedule: Schedule::new(Instant::now()),
        }
    }

    /// Lag past `bytes` is logged at once (default [`lag::LAG_THRESHOLD`]).
    pub fn set_lag_threshold(&mut self, bytes: u64) {
        self.schedule.threshold = bytes;
    }

    pub fn server_name(&self) -> String {
        self.server.name.clone()
    }

    pub fn unexpected(&self, message: impl Into<String>) -> StreamError<W::Error> {
        StreamError::Unexpected { server: self.server.name.clone(), message: message.into() }
    }

    pub fn protocol(&self, message: impl fmt::Display) -> StreamError<W::Error> {
        StreamError::Protocol { server: self.server.name.clone(), message: message.to_string() }
    }

    /// Hands `msg` to the writer. When the channel is full (the disk is slow, or writing is
    /// paused for disk space) this stops reading the server but keeps the session alive:
    /// status updates with the positions already reported (nothing new is durable), the
    /// watchdog, and the stop signal, which makes a paused writer give up so the stop is not
    /// held up by a full disk.
    pub fn send(&mut self, msg: W::Msg) -> SessionResult<(), W> {
        // The writer drops everything now: stop producing (an initial snapshot, say) at once.
        if self.writer.progress.gave_up() {
            return Err(StreamError::GaveUp { server: self.server.name.clone() });
        }
        let mut msg = msg;
        loop {
            let timeout = [Some(BLOCKED_POLL), notify::until_watchdog()].into_iter().flatten().min();
            match self.writer.send_timeout(msg, timeout.unwrap_or(BLOCKED_POLL))? {
                None => return Ok(()),
                Some(back) => msg = back,
            }
            notify::watchdog();
            if self.stop.received().is_some() {
                self.writer.give_up();
            }
            log_hangup(self.stop);
            if self.blocked_status_due() {
                self.repeat_status()?;
            }
        }
    }

    fn blocked_status_due(&self) -> bool {
        if !self.in_copy {
            return false;
        }
        let every = self.clock.interval.unwrap_or(BLOCKED_STATUS_EVERY);
        self.clock.last.is_none_or(|t| t.elapsed() >= every)
    }

    /// A status update while the handler is in the middle of a message and cannot be asked:
    /// keeps the connection alive. Each position the handler reported moves on to what the
    /// writer has since written or made durable (a writer paused for disk space first makes
    /// what it wrote durable, and with --synchronous the commits in it must not wait for the
    /// pause to end); a position it reported as invalid stays so, as do all before the
    /// first report (the server ignores them). Positions never go back.
    fn repeat_status(&mut self) -> SessionResult<(), W> {
        let invalid = Positions { write: Lsn::INVALID, flush: Lsn::INVALID, apply: Lsn::INVALID };
        let last = self.reported.unwrap_or(invalid);
        let progress = self.writer.progress();
        let on = |reported: Lsn, now: Lsn| if reported.is_valid() { reported.max(now) } else { reported };
        let flushed = progress.flushed();
        let p = Positions {
            write: on(last.write, progress.written().max(flushed)),
            flush: on(last.flush, flushed),
            apply: on(last.apply, flushed),
        };
        self.send_status(p)
    }

    /// Whether the server's socket has more to read now (a poll that does not wait): the
    /// test pg_receivewal's CopyStreamReceive makes with a zero timeout.
    pub fn more_to_read(&self) -> bool {
        poll(&[(self.server.socket(), Interest::Read)], Some(Duration::ZERO)).is_ok_and(|r| r[0])
    }

    /// Sends a standby status update with the handler's positions.
    pub fn status_update(&mut self, handler: &impl Handler<W>) -> SessionResult<(), W> {
        let p = handler.positions(self.writer.progress());
        self.send_status(p)
    }

    fn send_status(&mut self, p: Positions) -> SessionResult<(), W> {
        let msg = StatusUpdate {
            write: p.write,
            flush: p.flush,
            apply: p.apply,
            send_time: pg_now(),
            reply_requested: false,
        };
        self.server.conn().put_copy_data(&msg.encode()).map_err(|e| self.server.wrap(e))?;
        self.clock.last = Some(Instant::now());
        self.reported_flush = p.flush;
        self.reported = Some(p);
        log::trace!("sent status update: write {} flush {}", p.write, p.flush);
        Ok(())
    }

    /// The COPY BOTH loop, after START_REPLICATION.
    pub fn copy_stream(&mut self, handler: &mut impl Handler<W>) -> SessionResult<CopyEnd, W> {
        self.in_copy = true;
        let res = self.copy_loop(handler);
        // After our end the COPY is still open from our side, for the last status update.
        self.in_copy = matches!(res, Ok(CopyEnd::Ours(_)));
        res
    }

    fn copy_loop(&mut self, handler: &mut impl Handler<W>) -> SessionResult<CopyEnd, W> {
        self.clock.last = None;
        let _streaming = metrics::streaming();
        // The stream has begun: systemd may now call the service started.
        let shown = handler.shown(self.writer.progress());
        notify::ready(&lag::status_text(&shown, None));
        loop {
            // Drain everything libpq has buffered.
            loop {
                let buf = match self.server.conn().get_copy_data().map_err(|e| self.server.wrap(e))? {
                    CopyRead::Data(buf) => buf,
                    CopyRead::WouldBlock => break,
                    CopyRead::Done => return Ok(CopyEnd::Server),
                };
                let end = match ServerMessage::parse(&buf) {
                    Ok(ServerMessage::XLogData { start, wal_end, send_time, data }) => {
                        self.server_clock.saw(wal_end, send_time);
                        self.writer.progress.saw_server_end(wal_end);
                        handler.data(self, start, data)?
                    }
                    Ok(ServerMessage::Keepalive { wal_end, send_time, reply_requested }) => {
                        self.server_clock.saw(wal_end, send_time);
                        self.writer.progress.saw_server_end(wal_end);
                        let end = handler.keepalive(self, wal_end, reply_requested)?;
                        if reply_requested && end.is_none() {
                            // Answer at once so the server does not time us out; what the writer
                            // makes durable meanwhile is reported when it is done.
                            self.status_update(handler)?;
                        }
                        end
                    }
                    Err(err) => return Err(self.protocol(err)),
                };
                if let Some(end) = end {
                    handler.stopping(self, end)?;
                    return Ok(CopyEnd::Ours(end));
                }
            }
            handler.hand_over(self)?;
            if self.stop.received().is_some() {
                notify::stopping("stopping: received stop signal");
                self.writer.give_up();
                handler.stopping(self, StreamEnd::Stopped)?;
                return Ok(CopyEnd::Ours(StreamEnd::Stopped));
            }
            // Report a new durable position at once: this is what releases synchronous commits.
            let flush = handler.positions(self.writer.progress()).flush;
            if self.clock.due() || flush > self.reported_flush {
                self.status_update(handler)?;
            }
            self.report(handler);
            self.wait()?;
        }
    }

    /// Pings systemd's watchdog, and shows positions and lag when due: systemd's STATUS=
    /// every few seconds, a log line every few minutes (with -v every few seconds) and at
    /// once when the lag crosses the threshold.
    fn report(&mut self, handler: &impl Handler<W>) {
        notify::watchdog();
        let shown = handler.shown(self.writer.progress());
        let lag = self.server_clock.lag(shown.flushed, pg_now());
        metrics::get().publish(&shown, self.writer.progress().flushed(), lag.as_ref());
        let debug = log::log_enabled!(log::Level::Debug);
        let due = self.schedule.tick(Instant::now(), lag.map(|l| l.bytes), debug);
        if due.status {
            notify::status(&lag::status_text(&shown, lag.as_ref()));
        }
        if let Some(level) = due.line {
            let line = lag::log_line(&shown, lag.as_ref());
            let threshold = self.schedule.threshold;
            match due.crossed {
                Some(true) => log::log!(level, "{line}; lag is over {}", lag::format_bytes(threshold)),
                Some(false) => {
                    log::log!(level, "{line}; lag is back under {}", lag::format_bytes(threshold / 2))
                }
                None => log::log!(level, "{line}"),
            }
        }
    }

    /// Waits for the server, a stop signal, SIGHUP or the writer, at most until the next status
    /// update, watchdog ping, STATUS= or positions line is due.
    fn wait(&mut self) -> SessionResult<(), W> {
        let fds = [
            (self.server.socket(), Interest::Read),
            (self.stop.fd(), Interest::Read),
            (self.writer.wake.fd(), Interest::Read),
            (self.stop.hangup_fd(), Interest::Read),
        ];
        // A wait past the watchdog's next ping would let systemd kill a receiver that is fine.
        let debug = log::log_enabled!(log::Level::Debug);
        let report = self.schedule.until_due(Instant::now(), debug, notify::get().is_some());
        let timeout =
            [self.clock.until_due(), notify::until_watchdog(), Some(report)].into_iter().flatten().min();
        let ready = poll(&fds, timeout)
            .map_err(|e| self.unexpected(format!("could not wait for the server: {}", os_error(&e))))?;
        if ready[2] {
            self.writer.wake.drain();
            // The writer wakes us when it publishes a position and when it stops; a stopped
            // writer (an fsync failure) must end the stream now, not at the next message that
            // arrives on a quiet server.
            if self.writer.progress.writer_stopped() {
                return Err(self.writer.failure());
            }
        }
        if ready[3] {
            log_hangup(self.stop);
        }
        if ready[0] {
            self.server
                .conn()
                .consume_input()
                .map_err(|e| self.server.error_or(e, "could not receive data from the replication stream"))?;
        }
        Ok(())
    }

    /// After the server's CopyDone: end our side and read what the server said. `Some` is the
    /// next timeline and where it starts (the end of a timeline); `None` means the server
    /// ended the stream cleanly (it is shutting down); a server error is returned as such, with
    /// its message.
    pub fn end_of_copy(&mut self, tli: u32) -> SessionResult<Option<(u32, Lsn)>, W> {
        // As receivelog.c's HandleEndOfCopyStream: a CopyDone from the server leaves our side
        // of the COPY open (COPY_IN), and we close it; a server that ended with an error or
        // CommandComplete has already left COPY mode, and its result says why.
        let mut res = self.server.conn().get_result();
        if res.as_ref().map(|r| r.status()) == Some(Status::CopyIn) {
            self.server.conn().put_copy_end().map_err(|e| self.server.wrap(e))?;
            res = self.server.conn().get_result();
        }
        let mut next: Option<(u32, Lsn)> = None;
        while let Some(r) = res {
            match r.status() {
                Status::TuplesOk => {
                    let t = r.get(0, 0).and_then(|s| s.parse::<u32>().ok());
                    let pos = r.get(0, 1).and_then(|s| s.parse::<Lsn>().ok());
                    match (t, pos) {
                        (Some(t), Some(p)) if t > tli => next = Some((t, p)),
                        _ => {
                            return Err(self.unexpected(format!(
                                "unexpected end-of-timeline result after timeline {tli}"
                            )))
                        }
                    }
                }
                // Without a next timeline first, CommandComplete means the walsender is done
                // (the server is shutting down) and about to close the connection.
                Status::CommandOk if next.is_none() => break,
                Status::CommandOk => {}
                Status::Error => {
                    return Err(StreamError::Server(self.server.wrap(r.to_error("replication stream"))))
                }
                other => {
                    return Err(self.unexpected(format!(
                        "unexpected result {other:?} at the end of the replication stream"
                    )))
                }
            }
            res = self.server.conn().get_result();
        }
        Ok(next)
    }

    /// Ends the session with the stream's result: waits for the writer to make its output
    /// durable (its error wins over the stream's), and on a clean end gives the server a last
    /// status update with that durable position and ends our side of the COPY.
    pub fn finish(
        mut self,
        handler: &impl Handler<W>,
        res: SessionResult<StreamEnd, W>,
    ) -> SessionResult<(StreamEnd, Option<W::Output>), W> {
        // Only an end position needs everything received written; after a stop or an error
        // a writer paused for disk space would hold the session for ever, and the next
        // session streams again what it could not write.
        if !matches!(res, Ok(StreamEnd::EndPos(_))) {
            self.writer.give_up();
        }
        self.wait_for_writer(res.is_ok());
        let joined = self.writer.join();
        let (end, output) = match (res, joined) {
            (_, Err(w)) => return Err(w),
            (Err(e), Ok(_)) => return Err(e),
            (Ok(end), Ok(output)) => (end, output),
        };
        self.status_update(handler)?;
        self.server.conn().put_copy_end().map_err(|e| self.server.wrap(e))?;
        Ok((end, output))
    }
}

impl<W: WriterThread> Core<'_, W> {
    /// Waits until the writer has made everything before `to` durable, hearing the stop
    /// signal meanwhile (a writer paused for disk space then gives up, and this fails).
    pub fn wait_flushed(&mut self, to: Lsn) -> SessionResult<(), W> {
        loop {
            if self.stop.received().is_some() {
                self.writer.give_up();
            }
            match self.writer.wait_flushed_for(to, BLOCKED_POLL) {
                Ok(true) => return Ok(()),
                Ok(false) => notify::watchdog(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the writer's channel and waits for the thread to end, as [`WriterHandle::join`]
    /// would, but keeps the watchdog fed and the stop signal heard; with `alive`, the
    /// connection too (a writer paused for disk space before an end position).
    fn wait_for_writer(&mut self, alive: bool) {
        self.writer.close();
        let mut alive = alive;
        while !self.writer.progress.writer_stopped() {
            let fds = [(self.writer.wake.fd(), Interest::Read), (self.stop.fd(), Interest::Read)];
            let timeout = [Some(BLOCKED_POLL), notify::until_watchdog()].into_iter().flatten().min();
            if poll(&fds, timeout).is_err() {
                // join() below still waits, only without the extras.
                return;
            }
            self.writer.wake.drain();
            notify::watchdog();
            if self.stop.received().is_some() {
                self.writer.give_up();
            }
            if alive && self.in_copy && self.blocked_status_due() {
                alive = self.repeat_status().is_ok();
            }
        }
    }
}

fn log_hangup(stop: &StopSignals) {
    if stop.take_hangup() {
        log::info!(hint = "Restart to change them."; "received SIGHUP; ignored: settings are read only at start");
    }
}

/// An error that ends a session, as the reconnect loop judges it.
pub trait SessionFailure: Hinted {
    /// No retry can cure it. `first`: the first session, where a connection error means the
    /// settings are wrong rather than the server away (pg_receivewal exits then too).
    fn is_fatal(&self, first: bool) -> bool;
    /// The `kind` label of the errors metric.
    fn kind(&self) -> ErrorKind;
}

/// Runs sessions until one ends cleanly, with back-off between them, until an error no retry
/// can fix (or any error with `no_loop`). While stopping, an error a retry would have cured
/// (the connection dropped, the connect interrupted) is part of stopping; any other error,
/// a writer failure above all, is returned.
pub fn reconnect<E: SessionFailure>(
    stop: &StopSignals,
    no_loop: bool,
    session: impl FnMut() -> Result<StreamEnd, E>,
) -> Result<StreamEnd, E> {
    let res = sessions(stop, no_loop, session);
    notify::stopping(&match &res {
        Ok(StreamEnd::EndPos(at)) => format!("stopping: reached end position {at}"),
        Ok(StreamEnd::Stopped) => "stopping: received stop signal".to_owned(),
        Err(e) => format!("stopping after an error: {e}"),
    });
    res
}

fn sessions<E: SessionFailure>(
    stop: &StopSignals,
    no_loop: bool,
    mut session: impl FnMut() -> Result<StreamEnd, E>,
) -> Result<StreamEnd, E> {
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    loop {
        let started = Instant::now();
        match session() {
            Ok(end) => return Ok(end),
            Err(e) if stop.received().is_some() && !e.is_fatal(false) => {
                crate::report!(log::Level::Info, e; "stopped; the session ended with: {e}");
                return Ok(StreamEnd::Stopped);
            }
            Err(e) => {
                metrics::get().errors.inc(e.kind());
                if e.is_fatal(first) || no_loop || stop.received().is_some() {
                    return Err(e);
                }
                metrics::get().reconnects.inc();
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_FIRST;
                }
                crate::report!(log::Level::Warn, e; "{e}; trying again in {} s", backoff.as_secs());
                notify::status(&format!("reconnecting in {} s: {e}", backoff.as_secs()));
                if sleep(stop, backoff) {
                    log::info!("received stop signal while waiting to reconnect; stopping");
                    return Ok(StreamEnd::Stopped);
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        first = false;
    }
}

/// Sleeps for `d`, waking early for a stop signal (then returns true); SIGHUP is logged.
/// systemd's watchdog is pinged meanwhile: waiting to reconnect is not being stuck.
pub fn sleep(stop: &StopSignals, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while stop.received().is_none() {
        notify::watchdog();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let left = notify::until_watchdog().map_or(left, |w| w.min(left));
        let fds = [(stop.fd(), Interest::Read), (stop.hangup_fd(), Interest::Read)];
        match poll(&fds, Some(left)) {
            Ok(ready) if ready[1] => log_hangup(stop),
            Ok(_) => {}
            Err(e) => {
                log::warn!("could not wait: {}", os_error(&e));
                break;
            }
        }
    }
    stop.received().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_flushed_implies_written() {
        let p = Progress::new(Lsn(10));
        p.advance_written(Lsn(30));
        assert_eq!((p.written(), p.flushed()), (Lsn(30), Lsn(10)));
        p.advance_flushed(Lsn(20));
        assert_eq!((p.written(), p.flushed()), (Lsn(30), Lsn(20)), "positions never go back");
        p.advance_flushed(Lsn(40));
        assert_eq!((p.written(), p.flushed()), (Lsn(40), Lsn(40)));
    }

    /// The `kind` label: what the server said (a SQLSTATE) is not a broken connection.
    #[test]
    fn error_kinds() {
        let server = |sqlstate: Option<&str>| ServerError {
            server: "s".into(),
            message: "m".into(),
            sqlstate: sqlstate.map(Into::into),
            fatal: false,
            detail: None,
            hint: None,
        };
        let kind = |e: StreamError<Boom>| e.kind();
        assert_eq!(kind(StreamError::Server(server(None))), ErrorKind::Connection);
        assert_eq!(kind(StreamError::Server(server(Some("58P01")))), ErrorKind::Server);
        assert_eq!(kind(StreamError::ServerClosed { server: "s".into(), at: Lsn(0) }), ErrorKind::Server);
        assert_eq!(
            kind(StreamError::Protocol { server: "s".into(), message: "m".into() }),
            ErrorKind::Protocol
        );
        assert_eq!(kind(StreamError::Writer(Boom)), ErrorKind::Writer);
    }

    #[test]
    fn status_clock() {
        let c = StatusClock { interval: Some(Duration::from_secs(10)), last: None };
        assert!(c.due());
        assert_eq!(c.until_due(), Some(Duration::ZERO));
        let c = StatusClock { interval: Some(Duration::from_secs(10)), last: Some(Instant::now()) };
        assert!(!c.due());
        assert!(c.until_due().unwrap() > Duration::from_secs(5));
        let c = StatusClock { interval: None, last: Some(Instant::now()) };
        assert!(!c.due());
        assert_eq!(c.until_due(), None);
    }

    struct Failing;
    #[derive(Debug)]
    struct Boom;
    impl fmt::Display for Boom {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("boom")
        }
    }
    impl std::error::Error for Boom {}
    impl Hinted for Boom {}
    impl WriterFailure for Boom {
        fn is_fatal(&self) -> bool {
            true
        }
    }
    impl WriterThread for Failing {
        type Msg = ();
        type Output = ();
        type Error = Boom;
        fn run(self, rx: Inbox<()>) -> Result<(), Boom> {
            let _ = rx.recv();
            Err(Boom)
        }
    }

    struct Panicking;
    impl WriterThread for Panicking {
        type Msg = ();
        type Output = ();
        type Error = Boom;
        fn run(self, _rx: Inbox<()>) -> Result<(), Boom> {
            panic!("writer bug")
        }
    }

    /// A writer that fails is marked stopped before the wake-up, so a receiver that wakes
    /// sees it; its own error is what the receiver reports.
    #[test]
    fn a_failed_writer_is_stopped_before_it_wakes_the_receiver() {
        let mut h = WriterHandle::spawn("t", "s", 1, Lsn(0), |_, _| Ok(Failing)).unwrap();
        h.send(()).unwrap();
        poll(&[(h.wake.fd(), Interest::Read)], None).unwrap();
        assert!(h.progress().writer_stopped(), "woken before it was marked stopped");
        assert!(matches!(h.failure(), StreamError::Writer(Boom)));
    }

    /// Reads until the channel closes, then ends cleanly.
    struct Draining;
    impl WriterThread for Draining {
        type Msg = u32;
        type Output = u32;
        type Error = Boom;
        fn run(self, rx: Inbox<u32>) -> Result<u32, Boom> {
            let mut sum = 0;
            while let Ok(n) = rx.recv() {
                sum += n;
            }
            Ok(sum)
        }
    }

    /// A writer parked in its inbox wakes for each message and for the closed channel.
    #[test]
    fn a_parked_writer_wakes_for_messages_and_for_the_end() {
        let mut h = WriterHandle::spawn("t", "s", 1, Lsn(0), |_, _| Ok(Draining)).unwrap();
        for n in 1..=100 {
            h.send(n).unwrap();
            if n % 10 == 0 {
                // Give the writer time to empty the channel and park.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(h.join().unwrap(), Some(5050));
    }

    /// Closing the channel without a join (the session core does so to keep the connection
    /// and the watchdog alive while the writer finishes) wakes a parked writer, which ends.
    /// The core used to drop the sender without the wake-up: the writer stayed parked and
    /// the session waited for it for ever (faults::network_cuts_* under CPU load).
    #[test]
    fn closing_the_channel_ends_a_parked_writer() {
        let mut h = WriterHandle::spawn("t", "s", 1, Lsn(0), |_, _| Ok(Draining)).unwrap();
        let (progress, wake) = (h.progress.clone(), h.wake.clone());
        h.send(1).unwrap();
        // A wake-up the writer consumes while it still has work (the session's give_up does
        // this) must not be the only one: wait until it has drained the channel and parked.
        std::thread::sleep(Duration::from_millis(50));
        h.close();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !progress.writer_stopped() {
            assert!(Instant::now() < deadline, "the parked writer never saw the closed channel");
            poll(&[(wake.fd(), Interest::Read)], Some(Duration::from_secs(1))).unwrap();
        }
        assert_eq!(h.join().unwrap(), Some(1));
    }

    /// A handle dropped without a join (an early return) still ends a parked writer.
    #[test]
    fn a_dropped_handle_ends_a_parked_writer() {
        let h = WriterHandle::spawn("t", "s", 1, Lsn(0), |_, _| Ok(Draining)).unwrap();
        let (progress, wake) = (h.progress.clone(), h.wake.clone());
        std::thread::sleep(Duration::from_millis(10));
        drop(h);
        while !progress.writer_stopped() {
            poll(&[(wake.fd(), Interest::Read)], Some(Duration::from_secs(60))).unwrap();
        }
    }

    #[test]
    fn a_panicking_writer_is_an_error() {
        let mut h = WriterHandle::spawn("t", "s", 1, Lsn(0), |_, _| Ok(Panicking)).unwrap();
        poll(&[(h.wake.fd(), Interest::Read)], None).unwrap();
        assert!(h.progress().writer_stopped());
        let e = h.join().unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        assert!(h.wait_flushed(Lsn(1)).is_err(), "waiting on a dead writer ends");
    }
}
