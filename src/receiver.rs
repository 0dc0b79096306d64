//! The receive loop of one replication connection, on the receiver thread: START_REPLICATION,
//! XLogData and keepalive messages, standby status updates, end of timeline and the switch to
//! the next one. It never touches a file: WAL goes to the writer thread over a bounded channel,
//! and the durable position comes back through [`Progress`].
//!
//! As in PostgreSQL's `receivelog.c` (`HandleCopyStream`), reads are non-blocking: drain what
//! libpq has, hand it to the writer, then wait on the socket, the stop signal and the writer's
//! wake-up with a time-out no longer than the next status update is due, so a slow disk or an
//! idle server never makes us miss a status update.

use std::fmt;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use pgrw_ffi::sys::{poll, EventFd, Interest, StopSignals};
use pgrw_ffi::{CopyRead, Status};

use crate::cli::Durability;
use crate::lsn::Lsn;
use crate::protocol::{pg_now, ProtocolError, ServerMessage, StatusUpdate};
use crate::server::{Server, ServerError};
use crate::timeline::parse_history;
use crate::walfile::{history_file_name, Tli};
use crate::writer::{Progress, Writer, WriterConfig, WriterError, WriterMsg};

/// WAL is handed to the writer in batches of up to about this many bytes (a batch is also
/// sent as soon as the socket has nothing more). The channel holds at most `CHANNEL_BATCHES`
/// batches and `SPARE_BATCHES` written buffers wait for reuse, so memory stays under 48 MiB
/// however far the disk falls behind the network.
pub const MAX_BATCH: usize = 1 << 20;
pub const CHANNEL_BATCHES: usize = 32;
const SPARE_BATCHES: usize = 4;

/// How a stream ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The received position passed `--endpos`.
    EndPos(Lsn),
    /// SIGINT or SIGTERM.
    Stopped,
}

#[derive(Debug)]
pub enum StreamError {
    Server(ServerError),
    Protocol {
        server: String,
        err: ProtocolError,
    },
    /// The writer failed: its error is the cause.
    Writer(WriterError),
    /// The server ended the stream without a new timeline (it is shutting down).
    ServerClosed {
        server: String,
        at: Lsn,
    },
    Unexpected {
        server: String,
        message: String,
    },
}

impl StreamError {
    pub fn is_fatal(&self) -> bool {
        match self {
            StreamError::Server(e) => e.fatal,
            StreamError::Protocol { .. } | StreamError::Unexpected { .. } => true,
            StreamError::Writer(e) => e.is_fatal(),
            StreamError::ServerClosed { .. } => false,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Server(e) => e.fmt(f),
            StreamError::Protocol { server, err } => write!(f, "{err} (server {server})"),
            StreamError::Writer(e) => e.fmt(f),
            StreamError::ServerClosed { server, at } => {
                write!(f, "replication stream was terminated by the server at {at} (server {server})")
            }
            StreamError::Unexpected { server, message } => write!(f, "{message} (server {server})"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<ServerError> for StreamError {
    fn from(e: ServerError) -> StreamError {
        StreamError::Server(e)
    }
}

/// Settings of the receive loop.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub slot: Option<String>,
    pub endpos: Option<Lsn>,
    pub durability: Durability,
    pub status_interval: Option<Duration>,
    pub seg_size: u64,
}

impl StreamOptions {
    /// pg_receivewal reports a flush position only with a slot or --synchronous: without a
    /// slot the server does not keep WAL for us anyway, and a flush position would make a
    /// server that lists us in synchronous_standby_names wait on an archiver that did not ask
    /// to be synchronous.
    fn report_flush(&self) -> bool {
        self.slot.is_some() || self.durability == Durability::Synchronous
    }
}

/// One streaming session: a replication connection and the writer thread it feeds.
pub struct Receiver<'a> {
    server: &'a mut Server,
    opts: &'a StreamOptions,
    stop: &'a StopSignals,
    tx: Option<Sender<WriterMsg>>,
    writer: Option<JoinHandle<Result<(), WriterError>>>,
    /// Buffers the writer has written and handed back, reused for the next batches.
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    progress: Arc<Progress>,
    wake: Arc<EventFd>,
    /// End of the WAL received so far (`blockpos`): the `write` of status updates.
    received: Lsn,
    batch: Vec<u8>,
    batch_start: Lsn,
    tli: Tli,
    last_status: Option<Instant>,
    reported_flush: Lsn,
}

impl<'a> Receiver<'a> {
    /// Starts the writer thread for a session that begins at `start`.
    pub fn new(
        server: &'a mut Server,
        opts: &'a StreamOptions,
        stop: &'a StopSignals,
        writer_cfg: WriterConfig,
        start: Lsn,
    ) -> Result<Receiver<'a>, StreamError> {
        let progress = Arc::new(Progress::new(start));
        let unexpected = |message: String| StreamError::Unexpected { server: server.name.clone(), message };
        let wake =
            Arc::new(EventFd::new().map_err(|e| unexpected(format!("could not create eventfd: {e}")))?);
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(SPARE_BATCHES);
        let writer = Writer::new(writer_cfg, progress.clone(), wake.clone()).recycle_into(spare_tx);
        let handle = std::thread::Builder::new()
            .name("pgrw-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| unexpected(format!("could not start the writer thread: {e}")))?;
        Ok(Receiver {
            server,
            opts,
            stop,
            tx: Some(tx),
            writer: Some(handle),
            spare: spare_rx,
            progress,
            wake,
            received: start,
            batch: Vec::new(),
            batch_start: start,
            tli: 0,
            last_status: None,
            reported_flush: Lsn::INVALID,
        })
    }

    /// Closes the channel and waits for the writer, which then closes its open segment. A
    /// panic in the writer is reported as an error, never as a clean end.
    fn join_writer(&mut self) -> Result<(), StreamError> {
        self.tx = None;
        match self.writer.take() {
            None => Ok(()),
            Some(h) => match h.join() {
                Ok(r) => r.map_err(StreamError::Writer),
                Err(_) => Err(StreamError::Unexpected {
                    server: self.server.name.clone(),
                    message: "the writer thread panicked".into(),
                }),
            },
        }
    }

    /// The error of a writer that stopped early: its own, or a plain one if it somehow
    /// ended cleanly while the receiver still needed it.
    fn writer_failure(&mut self) -> StreamError {
        match self.join_writer() {
            Err(e) => e,
            Ok(()) => StreamError::Unexpected {
                server: self.server.name.clone(),
                message: "the writer thread stopped".into(),
            },
        }
    }

    fn send(&mut self, msg: WriterMsg) -> Result<(), StreamError> {
        if self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok()) {
            return Ok(());
        }
        // The writer dropped its end: it failed, and its error is the one to report.
        Err(self.writer_failure())
    }

    /// Runs the session: streams from `start` on `tli`, following timeline switches, until the
    /// end position, a stop signal, or an error. In every case the writer closes the open
    /// segment durably before this returns; on a clean end the server then gets a last status
    /// update with that durable position.
    pub fn run(mut self, start: Lsn, tli: Tli) -> Result<StreamEnd, StreamError> {
        let res = self.stream(start, tli);
        let joined = self.join_writer();
        let end = match (res, joined) {
            (_, Err(w)) => return Err(w),
            (Err(e), Ok(())) => return Err(e),
            (Ok(end), Ok(())) => end,
        };
        self.status_update()?;
        self.server.conn().put_copy_end().map_err(|e| self.server.wrap(e))?;
        Ok(end)
    }

    fn stream(&mut self, start: Lsn, tli: Tli) -> Result<StreamEnd, StreamError> {
        let (mut start, mut tli) = (start, tli);
        loop {
            self.fetch_history(tli)?;
            log::info!("starting log streaming at {start} (timeline {tli})");
            self.server.start_replication(self.opts.slot.as_deref(), start, tli)?;
            self.received = start;
            self.tli = tli;
            self.last_status = None;
            match self.copy_stream()? {
                Some(end) => return Ok(end),
                None => {
                    let (next_tli, next_start) = self.end_of_timeline()?;
                    // Always start a timeline at a segment boundary, as pg_receivewal does:
                    // the new timeline's copy of the switch segment is then complete.
                    log::info!("switched to timeline {next_tli} at {next_start}");
                    tli = next_tli;
                    start = next_start.segment_start(self.opts.seg_size);
                }
            }
        }
    }

    /// Writes the history file of a timeline other than 1 before any WAL of it, so the archive
    /// can always tell how its timelines connect.
    fn fetch_history(&mut self, tli: Tli) -> Result<(), StreamError> {
        if tli <= 1 {
            return Ok(());
        }
        let (name, content) = self.server.timeline_history(tli)?;
        let expected = history_file_name(tli);
        if name != expected {
            return Err(StreamError::Unexpected {
                server: self.server.name.clone(),
                message: format!(
                    "server sent history file \"{name}\" for timeline {tli}, expected \"{expected}\""
                ),
            });
        }
        parse_history(&content, tli).map_err(|e| StreamError::Unexpected {
            server: self.server.name.clone(),
            message: format!("history file \"{name}\" from the server is invalid: {e}"),
        })?;
        self.send(WriterMsg::History { name, content })
    }

    fn flush_batch(&mut self) -> Result<(), StreamError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.batch);
        self.send(WriterMsg::Wal { tli: self.tli, start: self.batch_start, data })
    }

    fn status_update(&mut self) -> Result<(), StreamError> {
        let flush = if self.opts.report_flush() { self.progress.flushed() } else { Lsn::INVALID };
        let msg = StatusUpdate {
            write: self.received,
            flush,
            apply: Lsn::INVALID,
            send_time: pg_now(),
            reply_requested: false,
        };
        self.server.conn().put_copy_data(&msg.encode()).map_err(|e| self.server.wrap(e))?;
        self.last_status = Some(Instant::now());
        self.reported_flush = flush;
        log::trace!("sent status update: write {} flush {flush}", self.received);
        Ok(())
    }

    /// The COPY BOTH loop. `Some` when we decided to stop, `None` when the server ended the
    /// timeline.
    fn copy_stream(&mut self) -> Result<Option<StreamEnd>, StreamError> {
        loop {
            // Drain everything libpq has buffered.
            loop {
                let buf = match self.server.conn().get_copy_data().map_err(|e| self.server.wrap(e))? {
                    CopyRead::Data(buf) => buf,
                    CopyRead::WouldBlock => break,
                    CopyRead::Done => {
                        self.flush_batch()?;
                        self.send(WriterMsg::Close)?;
                        return Ok(None);
                    }
                };
                match ServerMessage::parse(&buf) {
                    Ok(ServerMessage::XLogData { start, data, .. }) => {
                        if start != self.received {
                            return Err(StreamError::Unexpected {
                                server: self.server.name.clone(),
                                message: format!("received WAL at {start}, expected {}", self.received),
                            });
                        }
                        if self.batch.is_empty() {
                            self.batch_start = start;
                            if self.batch.capacity() == 0 {
                                if let Ok(spare) = self.spare.try_recv() {
                                    self.batch = spare;
                                }
                            }
                        }
                        self.batch.extend_from_slice(data);
                        self.received = Lsn(start.0 + data.len() as u64);
                        if self.batch.len() >= MAX_BATCH {
                            self.flush_batch()?;
                        }
                        if let Some(end) = self.opts.endpos {
                            if self.received > end {
                                log::info!(
                                    "stopped log streaming at {} (timeline {}): passed end position {end}",
                                    self.received,
                                    self.tli
                                );
                                return self.stop_stream(StreamEnd::EndPos(end)).map(Some);
                            }
                        }
                    }
                    Ok(ServerMessage::Keepalive { reply_requested, .. }) => {
                        if reply_requested {
                            // Answer at once so the server does not time us out; what the
                            // writer makes durable meanwhile is reported when it is done.
                            self.flush_batch()?;
                            if self.opts.durability != Durability::NoSync && self.opts.report_flush() {
                                self.send(WriterMsg::Flush)?;
                            }
                            self.status_update()?;
                        }
                    }
                    Err(err) => return Err(StreamError::Protocol { server: self.server.name.clone(), err }),
                }
            }
            // In --synchronous mode the writer fsyncs after every batch it takes.
            self.flush_batch()?;
            if self.stop.received().is_some() {
                log::info!("received stop signal; stopping at {} (timeline {})", self.received, self.tli);
                return self.stop_stream(StreamEnd::Stopped).map(Some);
            }

            // Report a new durable position at once: this is what releases synchronous commits.
            let flushed = self.progress.flushed();
            let due = match (self.opts.status_interval, self.last_status) {
                (_, None) => true,
                (Some(iv), Some(t)) => t.elapsed() >= iv,
                (None, Some(_)) => false,
            };
            if due || (self.opts.report_flush() && flushed > self.reported_flush) {
                self.status_update()?;
            }

            let timeout = match (self.opts.status_interval, self.last_status) {
                (Some(iv), Some(t)) => Some(iv.saturating_sub(t.elapsed())),
                _ => None,
            };
            let fds = [
                (self.server.socket(), Interest::Read),
                (self.stop.fd(), Interest::Read),
                (self.wake.fd(), Interest::Read),
            ];
            let ready = poll(&fds, timeout).map_err(|e| StreamError::Unexpected {
                server: self.server.name.clone(),
                message: format!("could not wait for the server: {e}"),
            })?;
            if ready[2] {
                self.wake.drain();
                // The writer wakes us when it publishes a position and when it stops; a
                // stopped writer (an fsync failure) must end the stream now, not at the next
                // WAL that arrives on a quiet server.
                if self.progress.writer_stopped() {
                    return Err(self.writer_failure());
                }
            }
            if ready[0] {
                self.server
                    .conn()
                    .consume_input()
                    .map_err(|e| self.server.error_or(e, "could not receive data from WAL stream"))?;
            }
        }
    }

    /// Our decision to stop: hand over what we have and close the open segment. The final
    /// status update, with the position the writer made durable, is sent by `finish_copy`.
    fn stop_stream(&mut self, end: StreamEnd) -> Result<StreamEnd, StreamError> {
        self.flush_batch()?;
        self.send(WriterMsg::Close)?;
        Ok(end)
    }

    /// After the server's CopyDone: end our side and read where the next timeline starts.
    fn end_of_timeline(&mut self) -> Result<(Tli, Lsn), StreamError> {
        let name = self.server.name.clone();
        // As receivelog.c's HandleEndOfCopyStream: a CopyDone from the server leaves our side
        // of the COPY open (COPY_IN), and we close it; a server that ended with an error or
        // CommandComplete has already left COPY mode, and its result says why.
        let mut res = self.server.conn().get_result();
        if res.as_ref().map(|r| r.status()) == Some(Status::CopyIn) {
            self.server.conn().put_copy_end().map_err(|e| self.server.wrap(e))?;
            res = self.server.conn().get_result();
        }
        let mut next: Option<(Tli, Lsn)> = None;
        while let Some(r) = res {
            match r.status() {
                Status::TuplesOk => {
                    // The next timeline and where it begins.
                    let tli = r.get(0, 0).and_then(|s| s.parse::<Tli>().ok());
                    let pos = r.get(0, 1).and_then(|s| s.parse::<Lsn>().ok());
                    match (tli, pos) {
                        (Some(t), Some(p)) if t > self.tli => next = Some((t, p)),
                        _ => {
                            return Err(StreamError::Unexpected {
                                server: name,
                                message: format!(
                                    "unexpected end-of-timeline result after timeline {}",
                                    self.tli
                                ),
                            })
                        }
                    }
                }
                // Without a next timeline first, CommandComplete means the walsender is
                // done (the server is shutting down) and about to close the connection.
                Status::CommandOk if next.is_none() => break,
                Status::CommandOk => {}
                Status::Error => {
                    return Err(StreamError::Server(self.server.wrap(r.to_error("replication stream"))))
                }
                other => {
                    return Err(StreamError::Unexpected {
                        server: name,
                        message: format!("unexpected result {other:?} at the end of the replication stream"),
                    })
                }
            }
            res = self.server.conn().get_result();
        }
        next.ok_or(StreamError::ServerClosed { server: name, at: self.received })
    }
}
