//! The receive loop of pgrecvlogical, on the receiver thread: START_REPLICATION ... LOGICAL,
//! pgoutput messages inside XLogData, keepalives, standby status updates. Like pgreceivewal's
//! `receiver.rs` (and PostgreSQL's `receivelog.c`) it reads without blocking, hands batches to
//! the writer thread over a bounded channel, and waits on the socket, the stop signal and the
//! writer's wake-up with a time-out no longer than the next status update is due.
//!
//! Ordinary transactions arrive whole, in commit order: their messages are encoded here, at
//! once, and the lines handed to the writer in pieces, so a transaction of any size costs no
//! memory. Streamed transactions (Stream Start ... Stop blocks, interleaved, before their
//! commit) go to the writer's spools as raw messages and are written at their Stream Commit.
//!
//! What the server is told (the flush position, which becomes the slot's
//! `confirmed_flush_lsn`): the end of the last unit of output the writer made durable. When
//! nothing is pending (no transaction open, everything handed over durable) the position of the
//! last keepalive is confirmed too, so a slot whose publication is idle still advances and
//! never pins WAL.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use pgrw_ffi::sys::{poll, EventFd, Interest, StopSignals};
use pgrw_ffi::CopyRead;

use crate::lsn::Lsn;
use crate::protocol::{pg_now, ServerMessage, StatusUpdate};
use crate::server::{Server, ServerError};
use crate::writer::Progress;

use super::cli::Streaming;
use super::output::{Effect, Encoder, Format, Schema};
use super::pgoutput::{Context, Decoder, Message};
use super::spool::push_frame;
use super::writer::{Writer, WriterConfig, WriterError, WriterMsg, WriterStats};

/// Lines and spooled messages are handed over in batches of up to this many bytes; the
/// channel holds at most `CHANNEL_BATCHES` of them.
pub const MAX_BATCH: usize = 1 << 20;
pub const CHANNEL_BATCHES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Everything up to `--endpos` is written.
    EndPos(Lsn),
    /// SIGINT or SIGTERM.
    Stopped,
}

#[derive(Debug)]
pub enum StreamError {
    Server(ServerError),
    Protocol { server: String, message: String },
    Writer(WriterError),
    ServerClosed { server: String },
    Unexpected { server: String, message: String },
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
            StreamError::Protocol { server, message } => write!(f, "{message} (server {server})"),
            StreamError::Writer(e) => e.fmt(f),
            StreamError::ServerClosed { server } => {
                write!(f, "replication stream was terminated by the server (server {server})")
            }
            StreamError::Unexpected { server, message } => write!(f, "{message} (server {server})"),
        }
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamError::Server(e) => Some(e),
            StreamError::Writer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ServerError> for StreamError {
    fn from(e: ServerError) -> StreamError {
        StreamError::Server(e)
    }
}

/// What START_REPLICATION asks pgoutput for, and how the loop behaves.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub slot: String,
    pub version: u32,
    pub streaming: Streaming,
    pub two_phase: bool,
    pub messages: bool,
    pub binary: bool,
    pub publications: Vec<String>,
    pub endpos: Option<Lsn>,
    pub status_interval: Option<Duration>,
    pub format: Format,
    /// The server's version number (options pgoutput does not know are left out).
    pub server_version: u32,
}

/// `"a","B"`: publication names as pgoutput's `SplitIdentifierString` reads them.
pub fn publication_list(names: &[String]) -> String {
    names.iter().map(|n| format!("\"{}\"", n.replace('"', "\"\""))).collect::<Vec<_>>().join(",")
}

/// A SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The START_REPLICATION command.
pub fn start_replication_command(opts: &StreamOptions, start: Lsn) -> String {
    let mut o = vec![
        format!("proto_version '{}'", opts.version),
        format!("publication_names {}", literal(&publication_list(&opts.publications))),
    ];
    if opts.server_version >= 140000 {
        if opts.binary {
            o.push("binary 'true'".into());
        }
        if opts.messages {
            o.push("messages 'true'".into());
        }
        match opts.streaming {
            Streaming::Off => {}
            Streaming::On => o.push("streaming 'on'".into()),
            Streaming::Parallel => o.push("streaming 'parallel'".into()),
        }
    }
    if opts.two_phase {
        o.push("two_phase 'on'".into());
    }
    format!("START_REPLICATION SLOT {} LOGICAL {start} ({})", opts.slot, o.join(", "))
}

/// A streamed transaction between its blocks.
#[derive(Default)]
struct OpenStream {
    /// Relations its stream described: the global schema learns them at its commit, as
    /// pgoutput then counts them as sent.
    schema: Schema,
    /// (Sub)transactions seen so far, so the writer learns where each one's changes start.
    subxids: HashSet<u32>,
}

/// Counters for the log and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    pub messages: u64,
    pub bytes: u64,
    pub streamed_commits: u64,
    pub writer: WriterStats,
}

/// One streaming session: a replication connection and the writer thread it feeds.
pub struct Session<'a> {
    server: &'a mut Server,
    opts: &'a StreamOptions,
    stop: &'a StopSignals,
    tx: Option<Sender<WriterMsg>>,
    writer: Option<JoinHandle<Result<WriterStats, WriterError>>>,
    progress: Arc<Progress>,
    wake: Arc<EventFd>,
    decoder: Decoder,
    encoder: Encoder,
    streams: HashMap<u32, OpenStream>,
    /// The transaction whose streamed block is being received.
    cur_stream: Option<u32>,
    lines: Vec<u8>,
    spool: Vec<u8>,
    spool_marks: Vec<(u32, usize)>,
    /// End of the last unit handed to the writer.
    written: Lsn,
    /// A keepalive position received while nothing was pending.
    idle_pos: Lsn,
    last_status: Option<Instant>,
    reported_flush: Lsn,
    pub stats: SessionStats,
}

impl<'a> Session<'a> {
    /// Starts the writer thread for a session resuming at `start`.
    pub fn new(
        server: &'a mut Server,
        opts: &'a StreamOptions,
        stop: &'a StopSignals,
        writer_cfg: WriterConfig,
        start: Lsn,
    ) -> Result<Session<'a>, StreamError> {
        let progress = Arc::new(Progress::new(start));
        let unexpected = |message: String| StreamError::Unexpected { server: server.name.clone(), message };
        let wake =
            Arc::new(EventFd::new().map_err(|e| unexpected(format!("could not create eventfd: {e}")))?);
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let parse = writer_cfg.parse;
        let writer = Writer::new(writer_cfg, progress.clone(), wake.clone()).map_err(StreamError::Writer)?;
        let handle = std::thread::Builder::new()
            .name("pgrl-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| unexpected(format!("could not start the writer thread: {e}")))?;
        Ok(Session {
            server,
            opts,
            stop,
            tx: Some(tx),
            writer: Some(handle),
            progress,
            wake,
            decoder: Decoder::new(Context { in_stream: false, ..parse }),
            encoder: Encoder::new(opts.format),
            streams: HashMap::new(),
            cur_stream: None,
            lines: Vec::new(),
            spool: Vec::new(),
            spool_marks: Vec::new(),
            written: start,
            idle_pos: start,
            last_status: None,
            reported_flush: Lsn::INVALID,
            stats: SessionStats::default(),
        })
    }

    /// Hands lines the caller encoded (the initial snapshot) to the writer; `end` when they
    /// complete a unit.
    pub fn write_lines(&mut self, data: Vec<u8>, end: Option<Lsn>) -> Result<(), StreamError> {
        if let Some(e) = end {
            self.written = self.written.max(e);
            self.idle_pos = self.idle_pos.max(e);
        }
        self.send(WriterMsg::Lines { data, end })
    }

    /// Waits until the writer made everything handed over so far durable.
    pub fn wait_durable(&mut self) -> Result<(), StreamError> {
        self.send(WriterMsg::Flush)?;
        while self.progress.flushed() < self.written {
            let _ = poll(&[(self.wake.fd(), Interest::Read)], Some(Duration::from_millis(100)));
            self.wake.drain();
            if self.writer.as_ref().is_some_and(|h| h.is_finished()) {
                self.join_writer()?;
                return Err(self.unexpected("the writer thread stopped"));
            }
        }
        Ok(())
    }

    fn unexpected(&self, message: impl Into<String>) -> StreamError {
        StreamError::Unexpected { server: self.server.name.clone(), message: message.into() }
    }

    fn protocol(&self, message: impl fmt::Display) -> StreamError {
        StreamError::Protocol { server: self.server.name.clone(), message: message.to_string() }
    }

    fn join_writer(&mut self) -> Result<(), StreamError> {
        self.tx = None;
        match self.writer.take() {
            None => Ok(()),
            Some(h) => match h.join() {
                Ok(Ok(stats)) => {
                    self.stats.writer = stats;
                    Ok(())
                }
                Ok(Err(e)) => Err(StreamError::Writer(e)),
                Err(_) => Err(self.unexpected("the writer thread panicked")),
            },
        }
    }

    fn send(&mut self, msg: WriterMsg) -> Result<(), StreamError> {
        if self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok()) {
            return Ok(());
        }
        // The writer dropped its end: it failed, and its error is the one to report.
        self.join_writer()?;
        Err(self.unexpected("the writer thread stopped"))
    }

    /// Runs the session from `start` until the end position, a stop signal, or an error. The
    /// writer makes its output durable (and cuts off an incomplete transaction) before this
    /// returns; on a clean end the server then gets a last status update.
    pub fn run(mut self, start: Lsn) -> Result<(StreamEnd, SessionStats), StreamError> {
        let res = self.stream(start);
        let joined = self.join_writer();
        let end = match (res, joined) {
            (_, Err(w)) => return Err(w),
            (Err(e), Ok(())) => return Err(e),
            (Ok(end), Ok(())) => end,
        };
        self.status_update()?;
        self.server.conn().put_copy_end().map_err(|e| self.server.wrap(e))?;
        Ok((end, self.stats))
    }

    fn stream(&mut self, start: Lsn) -> Result<StreamEnd, StreamError> {
        let cmd = start_replication_command(self.opts, start);
        log::info!(
            "starting logical decoding of slot \"{}\" at {start} (protocol version {}, streaming {:?})",
            self.opts.slot,
            self.opts.version,
            self.opts.streaming
        );
        log::debug!("{cmd}");
        self.server.conn().start_copy_both(&cmd).map_err(|e| self.server.wrap(e))?;
        self.copy_stream()
    }

    fn idle(&self) -> bool {
        !self.encoder.in_transaction()
            && self.cur_stream.is_none()
            && self.lines.is_empty()
            && self.spool.is_empty()
    }

    /// The position the server may consider ours: see the module comment.
    fn flush_position(&self) -> Lsn {
        let durable = self.progress.flushed();
        if self.idle() && durable >= self.written {
            durable.max(self.idle_pos)
        } else {
            durable
        }
    }

    fn status_update(&mut self) -> Result<(), StreamError> {
        let flush = self.flush_position();
        let write = if self.idle() { self.written.max(self.idle_pos) } else { self.written }.max(flush);
        let msg = StatusUpdate { write, flush, apply: flush, send_time: pg_now(), reply_requested: false };
        self.server.conn().put_copy_data(&msg.encode()).map_err(|e| self.server.wrap(e))?;
        self.last_status = Some(Instant::now());
        self.reported_flush = flush;
        log::trace!("sent status update: write {write} flush {flush}");
        Ok(())
    }

    fn flush_lines(&mut self, end: Option<Lsn>) -> Result<(), StreamError> {
        if self.lines.is_empty() && end.is_none() {
            return Ok(());
        }
        if let Some(e) = end {
            self.written = self.written.max(e);
        }
        let data = std::mem::take(&mut self.lines);
        self.send(WriterMsg::Lines { data, end })
    }

    fn flush_spool(&mut self) -> Result<(), StreamError> {
        if self.spool.is_empty() {
            return Ok(());
        }
        let xid = self.cur_stream.expect("spooled data belongs to the open stream");
        let data = std::mem::take(&mut self.spool);
        let subxacts = std::mem::take(&mut self.spool_marks);
        self.send(WriterMsg::Spool { xid, data, subxacts })
    }

    fn flush_batches(&mut self) -> Result<(), StreamError> {
        self.flush_lines(None)?;
        if self.cur_stream.is_some() {
            self.flush_spool()?;
        }
        Ok(())
    }

    fn past_endpos(&self, lsn: Lsn) -> bool {
        self.opts.endpos.is_some_and(|e| lsn > e)
    }

    /// One pgoutput message. `Some` when the end position is reached.
    fn handle_message(&mut self, at: Lsn, data: &[u8]) -> Result<Option<StreamEnd>, StreamError> {
        self.stats.messages += 1;
        self.stats.bytes += data.len() as u64;
        let msg = self.decoder.decode(data).map_err(|e| self.protocol(e))?;
        if let Some(top) = self.cur_stream {
            let sub = match &msg {
                Message::StreamStop => {
                    self.flush_spool()?;
                    self.cur_stream = None;
                    return Ok(None);
                }
                Message::Relation(r) => r.xid,
                Message::Type(t) => t.xid,
                Message::Insert(i) => i.xid,
                Message::Update(u) => u.xid,
                Message::Delete(d) => d.xid,
                Message::Truncate(t) => t.xid,
                Message::Message(m) => m.xid,
                Message::Origin { .. } => None,
                other => {
                    return Err(self.protocol(format!(
                        "unexpected pgoutput message '{}' inside a streamed block of transaction {top}",
                        char::from(other.kind())
                    )))
                }
            };
            let st = self.streams.entry(top).or_default();
            st.schema.learn(&msg);
            if let Some(sub) = sub {
                if st.subxids.insert(sub) {
                    self.spool_marks.push((sub, self.spool.len()));
                }
            }
            push_frame(&mut self.spool, at, data);
            if self.spool.len() >= MAX_BATCH {
                self.flush_spool()?;
            }
            return Ok(None);
        }
        match msg {
            Message::StreamStart(s) => {
                if self.encoder.in_transaction() {
                    return Err(self.protocol("pgoutput started a stream inside a transaction"));
                }
                self.flush_lines(None)?;
                self.streams.entry(s.xid).or_default();
                self.cur_stream = Some(s.xid);
            }
            Message::StreamStop => return Err(self.protocol("pgoutput sent Stream Stop outside of a stream")),
            Message::StreamCommit(c) => {
                if self.past_endpos(c.commit_lsn) {
                    return Ok(self.opts.endpos.map(StreamEnd::EndPos));
                }
                let st = self.streams.remove(&c.xid).unwrap_or_default();
                self.encoder.schema.merge(st.schema);
                self.send(WriterMsg::StreamCommit {
                    xid: c.xid,
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: c.commit_time,
                })?;
                self.stats.streamed_commits += 1;
                self.written = self.written.max(c.end_lsn);
                if self.past_endpos(c.end_lsn) {
                    return Ok(self.opts.endpos.map(StreamEnd::EndPos));
                }
            }
            Message::StreamAbort(a) => {
                if a.xid == a.subxid {
                    self.streams.remove(&a.xid);
                }
                self.send(WriterMsg::StreamAbort { xid: a.xid, subxid: a.subxid })?;
            }
            Message::StreamPrepare(p) => {
                if self.past_endpos(p.prepare_lsn) {
                    return Ok(self.opts.endpos.map(StreamEnd::EndPos));
                }
                let st = self.streams.remove(&p.xid).unwrap_or_default();
                self.encoder.schema.merge(st.schema);
                self.send(WriterMsg::StreamPrepare {
                    xid: p.xid,
                    prepare_lsn: p.prepare_lsn,
                    end_lsn: p.end_lsn,
                    prepare_time: p.prepare_time,
                    gid: p.gid.to_owned(),
                })?;
                self.written = self.written.max(p.end_lsn);
            }
            other => {
                // A unit that starts past the end position is not written.
                if !self.encoder.in_transaction() {
                    let starts_at = match &other {
                        Message::Begin(b) => Some(b.final_lsn),
                        Message::BeginPrepare(b) => Some(b.prepare_lsn),
                        Message::CommitPrepared(c) => Some(c.commit_lsn),
                        Message::RollbackPrepared(_) => Some(at),
                        Message::Message(m) if !m.transactional => Some(m.lsn),
                        _ => None,
                    };
                    if starts_at.is_some_and(|l| self.past_endpos(l)) {
                        return Ok(self.opts.endpos.map(StreamEnd::EndPos));
                    }
                }
                match self.encoder.encode(&mut self.lines, at, &other).map_err(|e| self.protocol(e))? {
                    Effect::UnitEnd(end) => {
                        self.flush_lines(Some(end))?;
                        if self.past_endpos(end) {
                            return Ok(self.opts.endpos.map(StreamEnd::EndPos));
                        }
                    }
                    Effect::None => {
                        if self.lines.len() >= MAX_BATCH {
                            self.flush_lines(None)?;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// The COPY BOTH loop.
    fn copy_stream(&mut self) -> Result<StreamEnd, StreamError> {
        loop {
            loop {
                let buf = match self.server.conn().get_copy_data().map_err(|e| self.server.wrap(e))? {
                    CopyRead::Data(buf) => buf,
                    CopyRead::WouldBlock => break,
                    CopyRead::Done => {
                        return Err(StreamError::ServerClosed { server: self.server.name.clone() });
                    }
                };
                match ServerMessage::parse(&buf) {
                    Ok(ServerMessage::XLogData { start, data, .. }) => {
                        if let Some(end) = self.handle_message(start, data)? {
                            log::info!("reached end position {}", self.opts.endpos.unwrap_or_default());
                            return self.stop_stream(end);
                        }
                    }
                    Ok(ServerMessage::Keepalive { wal_end, reply_requested, .. }) => {
                        if self.idle() {
                            self.idle_pos = self.idle_pos.max(wal_end);
                            if self.opts.endpos.is_some_and(|e| wal_end >= e) {
                                log::info!(
                                    "server sent everything up to end position {}",
                                    self.opts.endpos.unwrap_or_default()
                                );
                                return self
                                    .stop_stream(StreamEnd::EndPos(self.opts.endpos.unwrap_or_default()));
                            }
                        }
                        if reply_requested {
                            self.flush_batches()?;
                            self.send(WriterMsg::Flush)?;
                            self.status_update()?;
                        }
                    }
                    Err(err) => return Err(self.protocol(err)),
                }
            }
            self.flush_batches()?;
            if self.stop.received().is_some() {
                log::info!("received stop signal; stopping");
                return self.stop_stream(StreamEnd::Stopped);
            }

            let flush = self.flush_position();
            let due = match (self.opts.status_interval, self.last_status) {
                (_, None) => true,
                (Some(iv), Some(t)) => t.elapsed() >= iv,
                (None, Some(_)) => false,
            };
            if due || flush > self.reported_flush {
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
            let ready = poll(&fds, timeout)
                .map_err(|e| self.unexpected(format!("could not wait for the server: {e}")))?;
            if ready[2] {
                self.wake.drain();
                if self.writer.as_ref().is_some_and(|h| h.is_finished()) {
                    self.join_writer()?;
                    return Err(self.unexpected("the writer thread stopped"));
                }
            }
            if ready[0] {
                self.server.conn().consume_input().map_err(|e| {
                    let mut err = self.server.wrap(e);
                    err.message =
                        format!("could not receive data from the replication stream: {}", err.message);
                    err
                })?;
            }
        }
    }

    /// Our decision to stop: hand over the complete units (an open transaction is not written;
    /// the writer cuts off its start), then let `run` close the writer and report.
    fn stop_stream(&mut self, end: StreamEnd) -> Result<StreamEnd, StreamError> {
        self.flush_lines(None)?;
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> StreamOptions {
        StreamOptions {
            slot: "s".into(),
            version: 4,
            streaming: Streaming::On,
            two_phase: false,
            messages: false,
            binary: false,
            publications: vec!["p".into(), "Q\"x".into()],
            endpos: None,
            status_interval: None,
            format: Format::Json,
            server_version: 160000,
        }
    }

    #[test]
    fn start_command() {
        assert_eq!(
            start_replication_command(&opts(), Lsn(0x10)),
            "START_REPLICATION SLOT s LOGICAL 0/10 (proto_version '4', publication_names '\"p\",\"Q\"\"x\"', streaming 'on')"
        );
        let o = StreamOptions {
            version: 3,
            streaming: Streaming::Parallel,
            two_phase: true,
            messages: true,
            binary: true,
            publications: vec!["it's".into()],
            ..opts()
        };
        assert_eq!(
            start_replication_command(&o, Lsn(0)),
            "START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '3', publication_names '\"it''s\"', binary 'true', messages 'true', streaming 'parallel', two_phase 'on')"
        );
        // PostgreSQL 13's pgoutput knows only the protocol version and the publications.
        let old = StreamOptions { version: 1, server_version: 130000, messages: true, ..opts() };
        assert_eq!(
            start_replication_command(&old, Lsn(0)),
            "START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1', publication_names '\"p\",\"Q\"\"x\"')"
        );
    }
}
