//! The receive loop of one replication connection, on the receiver thread: START_REPLICATION,
//! XLogData and keepalive messages, standby status updates, end of timeline and the switch to
//! the next one. It never touches a file: WAL goes to the writer thread over a bounded channel,
//! and the durable position comes back through [`Progress`].
//!
//! The loop itself (non-blocking reads, waits bounded by the next status update, stopping)
//! is the session core's, shared with pgrecvlogical (`crate::session`); this module is what
//! the physical tool does with each message.

use std::time::Duration;

use crate::config::Durability;
use crate::lag::{Shown, LAG_THRESHOLD};
use crate::lsn::Lsn;
use crate::physical::timeline::parse_history;
use crate::physical::walfile::{history_file_name, Tli};
use crate::physical::writer::{Writer, WriterConfig, WriterError, WriterMsg};
use crate::server::Server;
use crate::session::{
    CopyEnd, Core, Handler, Positions, Progress, SessionResult, WriterHandle, WriterThread,
};
use pgrw_ffi::sys::StopSignals;

pub use crate::session::StreamEnd;

/// WAL is handed to the writer in batches of at most this many bytes (a batch is also sent as
/// soon as the socket has nothing more). Each batch buffer is allocated once at this size and
/// never grows: a message that would not fit starts the next batch. The channel holds at most
/// `CHANNEL_BATCHES` batches and `SPARE_BATCHES` written buffers wait for reuse, so with the
/// batch being filled and the one being written, WAL in memory stays under
/// `(CHANNEL_BATCHES + SPARE_BATCHES + 2) * MAX_BATCH` = 1.5 MiB however far the disk falls
/// behind the network. One batch holds one of the server's largest messages (128 KiB, its
/// MAX_SEND_SIZE with 8 kB pages). The channel holds 1 MiB, what the receiver can take in
/// while the writer fsyncs: 4 batches of 256 KiB held as much but peaked 0.3-0.4 MiB higher,
/// and 4 of 128 KiB (0.6 MiB lower) made --synchronous catch-up slower (docs/benchmarks.md,
/// memory).
pub const MAX_BATCH: usize = 128 << 10;
pub const CHANNEL_BATCHES: usize = 8;
const SPARE_BATCHES: usize = 2;
/// With --synchronous, the most WAL handed to the writer without asking for an fsync.
const SYNC_EVERY: usize = 1 << 20;
/// A turn of the receive loop that brought at least this much WAL is taken for a catch-up.
const LARGE_TURN: usize = 64 << 10;

pub type StreamError = crate::session::StreamError<WriterError>;

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

/// The physical tool's part of a session: WAL batches for the writer, timeline switches.
pub struct Receiver<'a> {
    core: Core<'a, Writer>,
    wal: WalStream<'a>,
}

/// What the physical session does with messages (the [`Handler`] of the session core).
struct WalStream<'a> {
    opts: &'a StreamOptions,
    /// Buffers the writer has written and handed back, reused for the next batches.
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    /// End of the WAL received so far (`blockpos`).
    received: Lsn,
    batch: Vec<u8>,
    batch_start: Lsn,
    /// Bytes handed to the writer since the last fsync asked for (--synchronous).
    unsynced: usize,
    /// Bytes received in this turn of the receive loop (since the last hand-over).
    turn: usize,
    tli: Tli,
}

impl WriterThread for Writer {
    type Msg = WriterMsg;
    type Output = ();
    type Error = WriterError;
    fn run(self, rx: crate::session::Inbox<WriterMsg>) -> Result<(), WriterError> {
        Writer::run(self, rx)
    }
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
        let (spare_tx, spare) = crossbeam_channel::bounded(SPARE_BATCHES);
        let writer =
            WriterHandle::spawn("pgrw-writer", &server.name, CHANNEL_BATCHES, start, |progress, wake| {
                Ok(Writer::new(writer_cfg, progress, wake).recycle_into(spare_tx))
            })?;
        let mut core = Core::new(server, stop, writer, opts.status_interval);
        // Without --synchronous a segment is made durable when it is complete: a lag of up to
        // a segment is normal, and only more than that is news.
        core.set_lag_threshold(LAG_THRESHOLD.max(2 * opts.seg_size));
        Ok(Receiver {
            core,
            wal: WalStream {
                opts,
                spare,
                received: start,
                batch: Vec::new(),
                batch_start: start,
                unsynced: 0,
                turn: 0,
                tli: 0,
            },
        })
    }

    /// Runs the session: streams from `start` on `tli`, following timeline switches, until the
    /// end position, a stop signal, or an error. In every case the writer closes the open
    /// segment durably before this returns; on a clean end the server then gets a last status
    /// update with that durable position.
    pub fn run(mut self, start: Lsn, tli: Tli) -> Result<StreamEnd, StreamError> {
        let res = self.stream(start, tli);
        self.core.finish(&self.wal, res).map(|(end, _)| end)
    }

    fn stream(&mut self, start: Lsn, tli: Tli) -> Result<StreamEnd, StreamError> {
        let (mut start, mut tli) = (start, tli);
        let (core, wal) = (&mut self.core, &mut self.wal);
        loop {
            wal.fetch_history(core, tli)?;
            log::info!("starting log streaming at {start} (timeline {tli})");
            core.server.start_replication(wal.opts.slot.as_deref(), start, tli)?;
            wal.received = start;
            wal.tli = tli;
            if let CopyEnd::Ours(end) = core.copy_stream(wal)? {
                return Ok(end);
            }
            wal.flush_batch(core)?;
            core.send(WriterMsg::Close)?;
            let Some((next_tli, next_start)) = core.end_of_copy(wal.tli)? else {
                return Err(StreamError::ServerClosed { server: core.server_name(), at: wal.received });
            };
            // Always start a timeline at a segment boundary, as pg_receivewal does: the new
            // timeline's copy of the switch segment is then complete.
            log::info!("switched to timeline {next_tli} at {next_start}");
            tli = next_tli;
            start = next_start.segment_start(wal.opts.seg_size);
        }
    }
}

impl WalStream<'_> {
    /// Writes the history file of a timeline other than 1 before any WAL of it, so the archive
    /// can always tell how its timelines connect.
    fn fetch_history(&mut self, core: &mut Core<'_, Writer>, tli: Tli) -> Result<(), StreamError> {
        if tli <= 1 {
            return Ok(());
        }
        let (name, content) = core.server.timeline_history(tli)?;
        let expected = history_file_name(tli);
        if name != expected {
            return Err(core.unexpected(format!(
                "server sent history file \"{name}\" for timeline {tli}, expected \"{expected}\""
            )));
        }
        parse_history(&content, tli).map_err(|e| {
            core.unexpected(format!("history file \"{name}\" from the server is invalid: {e}"))
        })?;
        core.send(WriterMsg::History { name, content })
    }

    fn flush_batch(&mut self, core: &mut Core<'_, Writer>) -> Result<(), StreamError> {
        self.hand_batch(core, false)
    }

    /// Hands the batch to the writer; `sync`: and asks for an fsync after it (--synchronous),
    /// in the same message, so a commit costs one channel send and one wake-up of the writer.
    /// Without a batch, an fsync still asked for goes alone.
    fn hand_batch(&mut self, core: &mut Core<'_, Writer>, sync: bool) -> Result<(), StreamError> {
        if self.batch.is_empty() {
            if sync && self.unsynced > 0 {
                self.unsynced = 0;
                core.send(WriterMsg::Flush)?;
            }
            return Ok(());
        }
        let data = std::mem::take(&mut self.batch);
        self.unsynced += data.len();
        // A burst that never pauses (a catch-up) still gets its flush position advanced (and
        // the commits in it released) every SYNC_EVERY bytes, not only at segment ends.
        let flush = self.opts.durability == Durability::Synchronous && (sync || self.unsynced >= SYNC_EVERY);
        if flush {
            self.unsynced = 0;
        }
        core.send(WriterMsg::Wal { tli: self.tli, start: self.batch_start, data, flush })
    }
}

impl Handler<Writer> for WalStream<'_> {
    fn data(
        &mut self,
        core: &mut Core<'_, Writer>,
        start: Lsn,
        data: &[u8],
    ) -> SessionResult<Option<StreamEnd>, Writer> {
        if start != self.received {
            return Err(core.unexpected(format!("received WAL at {start}, expected {}", self.received)));
        }
        if self.batch.len() + data.len() > MAX_BATCH {
            self.flush_batch(core)?;
        }
        if self.batch.is_empty() {
            self.batch_start = start;
            if self.batch.capacity() == 0 {
                // A fresh buffer only when the writer has none to give back: after the first
                // few batches, WAL moves through the same buffers.
                self.batch = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(MAX_BATCH));
            }
        }
        self.batch.extend_from_slice(data);
        self.received = Lsn(start.0 + data.len() as u64);
        self.turn += data.len();
        if self.batch.len() == MAX_BATCH {
            self.flush_batch(core)?;
        }
        match self.opts.endpos {
            Some(end) if self.received > end => {
                log::info!(
                    "stopped log streaming at {} (timeline {}): passed end position {end}",
                    self.received,
                    self.tli
                );
                Ok(Some(StreamEnd::EndPos(end)))
            }
            _ => Ok(None),
        }
    }

    fn keepalive(
        &mut self,
        core: &mut Core<'_, Writer>,
        _wal_end: Lsn,
        reply_requested: bool,
    ) -> SessionResult<Option<StreamEnd>, Writer> {
        if reply_requested {
            self.flush_batch(core)?;
            if self.opts.durability != Durability::NoSync && self.opts.report_flush() {
                core.send(WriterMsg::Flush)?;
            }
        }
        Ok(None)
    }

    /// What the server has sent so far goes to the writer once the socket is drained, and with
    /// --synchronous is made durable then, as pg_receivewal fsyncs: one fsync for a whole
    /// burst. A small turn is a commit waiting for us, handed over at once with no extra
    /// system call; after a large one (a catch-up) the socket is asked whether more is
    /// waiting, so that a burst fills whole batches and one fsync covers it.
    fn hand_over(&mut self, core: &mut Core<'_, Writer>) -> SessionResult<(), Writer> {
        // In a burst, batches are handed over when full: the channel's few batches then hold
        // all they can while the writer is in an fsync.
        if std::mem::take(&mut self.turn) >= LARGE_TURN && core.more_to_read() {
            return Ok(());
        }
        let sync = self.opts.durability == Durability::Synchronous;
        self.hand_batch(core, sync)
    }

    /// Hand over what we have and close the open segment; the final status update, with the
    /// position the writer made durable, is sent when the session finishes.
    fn stopping(&mut self, core: &mut Core<'_, Writer>, end: StreamEnd) -> SessionResult<(), Writer> {
        if end == StreamEnd::Stopped {
            log::info!("received stop signal; stopping at {} (timeline {})", self.received, self.tli);
        }
        self.flush_batch(core)?;
        core.send(WriterMsg::Close)
    }

    /// What the writer wrote and made durable, never what is only received: with
    /// `synchronous_commit = remote_write` the server releases commits on `write`.
    fn positions(&self, progress: &Progress) -> Positions {
        let flush = if self.opts.report_flush() { progress.flushed() } else { Lsn::INVALID };
        Positions { write: progress.written(), flush, apply: Lsn::INVALID }
    }

    /// What is durable, whether or not the server is told.
    fn shown(&self, progress: &Progress) -> Shown {
        Shown { received: self.received, written: progress.written(), flushed: progress.flushed() }
    }
}
