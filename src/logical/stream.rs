//! The receive loop of pgrecvlogical, on the receiver thread: START_REPLICATION ... LOGICAL,
//! pgoutput messages inside XLogData, keepalives, standby status updates. The loop (reads
//! without blocking, batches to the writer thread over a bounded channel, waits no longer than
//! the next status update is due, stopping) is the session core's, shared with pgreceivewal
//! (`crate::session`); this module is what pgrecvlogical does with each message.
//!
//! Ordinary transactions arrive whole, in commit order: their messages are encoded here, at
//! once, and the lines handed to the writer in pieces, so a transaction of any size costs no
//! memory. Streamed transactions (Stream Start ... Stop blocks, interleaved, before their
//! commit) are encoded here too as they arrive, each with an encoder of its own (the schema
//! its stream describes, its change count), and go to the writer's spools as lines lacking
//! only what the commit knows; the writer writes them out at their Stream Commit, a copy.
//!
//! What the server is told (the flush position, which becomes the slot's
//! `confirmed_flush_lsn`): the end of the last unit of output the writer made durable. When
//! nothing is pending (no transaction open, everything handed over durable) the position of the
//! last keepalive is confirmed too, so a slot whose publication is idle still advances and
//! never pins WAL.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pgrw_ffi::sys::StopSignals;

use crate::lag::Shown;
use crate::lsn::Lsn;
use crate::metrics;
use crate::server::Server;
use crate::session::{
    CopyEnd, Core, Handler, Positions, Progress, SessionResult, WriterHandle, WriterThread,
};
use crate::sql::{literal, publication_list};

use super::config::Streaming;
use super::output::{Effect, Encoder, Format, DEFERRED};
use super::pgoutput::{Begin, BeginPrepare, Commit, Context, Decoder, Message, Prepare};
use super::spool::push_frame;
use super::writer::{Writer, WriterConfig, WriterError, WriterMsg, WriterStats};

pub use crate::session::StreamEnd;

/// Lines and spooled messages are handed over in batches of up to this many bytes; the
/// channel holds at most `CHANNEL_BATCHES` of them.
pub const MAX_BATCH: usize = 1 << 20;
pub const CHANNEL_BATCHES: usize = 16;

pub type StreamError = crate::session::StreamError<WriterError>;

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
    /// `--ddl`: the prefix our event trigger signs its messages with (a secret: never
    /// written or logged); only those messages are DDL records.
    pub ddl_prefix: Option<String>,
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
struct OpenStream {
    /// Encodes its changes as they arrive. Its schema holds the relations its stream
    /// described: the global schema learns them at its commit, as pgoutput then counts them
    /// as sent.
    enc: Encoder,
    /// (Sub)transactions seen so far, so the writer learns where each one's changes start.
    subxids: HashSet<u32>,
    /// Each (sub)transaction in the order it appeared, with the changes before its first:
    /// when it aborts, the numbering continues from there, as if it never was.
    marks: Vec<(u32, u64)>,
}

impl OpenStream {
    fn new(opts: &StreamOptions, xid: u32) -> OpenStream {
        let mut enc = Encoder::new(opts.format).with_ddl_prefix(opts.ddl_prefix.clone());
        enc.begin_streamed(xid).expect("a new encoder has no open transaction");
        OpenStream { enc, subxids: HashSet::new(), marks: Vec::new() }
    }
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
    core: Core<'a, Writer>,
    dec: Decoding<'a>,
}

/// What the logical session does with messages (the [`Handler`] of the session core).
struct Decoding<'a> {
    opts: &'a StreamOptions,
    decoder: Decoder,
    encoder: Encoder,
    streams: HashMap<u32, OpenStream>,
    /// The transaction whose streamed block is being received.
    cur_stream: Option<u32>,
    lines: Vec<u8>,
    spool: Vec<u8>,
    spool_marks: Vec<(u32, usize)>,
    /// One streamed record being encoded.
    record: Vec<u8>,
    /// End of the last unit handed to the writer.
    handed: Lsn,
    /// A keepalive position received while nothing was pending.
    idle_pos: Lsn,
    /// The position of the last message received.
    received: Lsn,
    stats: SessionStats,
    counts: Counts,
}

impl WriterThread for Writer {
    type Msg = WriterMsg;
    type Output = WriterStats;
    type Error = WriterError;
    fn run(self, rx: crate::session::Inbox<WriterMsg>) -> Result<WriterStats, WriterError> {
        Writer::run(self, rx)
    }
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
        let parse = writer_cfg.parse;
        let writer =
            WriterHandle::spawn("pgrl-writer", &server.name, CHANNEL_BATCHES, start, |progress, wake| {
                Writer::new(writer_cfg, progress, wake)
            })?;
        Ok(Session {
            core: Core::new(server, stop, writer, opts.status_interval),
            dec: Decoding {
                opts,
                decoder: Decoder::new(Context { in_stream: false, ..parse }),
                encoder: Encoder::new(opts.format).with_ddl_prefix(opts.ddl_prefix.clone()),
                streams: HashMap::new(),
                cur_stream: None,
                lines: Vec::new(),
                spool: Vec::new(),
                spool_marks: Vec::new(),
                record: Vec::new(),
                handed: start,
                idle_pos: start,
                received: start,
                stats: SessionStats::default(),
                counts: Counts::default(),
            },
        })
    }

    /// Hands lines the caller encoded (the initial snapshot) to the writer; `end` when they
    /// complete a unit.
    pub fn write_lines(&mut self, data: Vec<u8>, end: Option<Lsn>) -> Result<(), StreamError> {
        if let Some(e) = end {
            self.dec.handed = self.dec.handed.max(e);
            self.dec.idle_pos = self.dec.idle_pos.max(e);
        }
        self.core.send(WriterMsg::Lines { data, end })
    }

    /// Waits until the writer made everything handed over so far durable.
    pub fn wait_durable(&mut self) -> Result<(), StreamError> {
        self.core.send(WriterMsg::Flush)?;
        self.core.wait_flushed(self.dec.handed)
    }

    /// Runs the session from `start` until the end position, a stop signal, or an error. The
    /// writer makes its output durable (and cuts off an incomplete transaction) before this
    /// returns; on a clean end the server then gets a last status update.
    pub fn run(mut self, start: Lsn) -> Result<(StreamEnd, SessionStats), StreamError> {
        let res = self.stream(start);
        let (end, writer) = self.core.finish(&self.dec, res)?;
        let mut stats = self.dec.stats;
        stats.writer = writer.unwrap_or_default();
        Ok((end, stats))
    }

    fn stream(&mut self, start: Lsn) -> Result<StreamEnd, StreamError> {
        let opts = self.dec.opts;
        let cmd = start_replication_command(opts, start);
        log::info!(
            "starting logical decoding of slot \"{}\" at {start} (protocol version {}, streaming {:?})",
            opts.slot,
            opts.version,
            opts.streaming
        );
        log::debug!("{cmd}");
        let server = &mut *self.core.server;
        server.conn().start_copy_both(&cmd).map_err(|e| server.wrap(e))?;
        match self.core.copy_stream(&mut self.dec)? {
            CopyEnd::Ours(end) => Ok(end),
            // The server ended the stream: with an error (its message is the cause, e.g. a
            // publication that was dropped), or because it is shutting down.
            CopyEnd::Server => match self.core.end_of_copy(0)? {
                None => {
                    Err(StreamError::ServerClosed { server: self.core.server_name(), at: self.dec.handed })
                }
                Some((tli, _)) => Err(self
                    .core
                    .unexpected(format!("server ended logical decoding with a switch to timeline {tli}"))),
            },
        }
    }
}

/// The changes and committed transactions metrics (Prometheus' `rate()` makes them "per
/// second"), counted as received (a streamed transaction's changes before its commit), here,
/// and added to the shared counters once per batch: an atomic per message would bounce its
/// cache line between the receiver and the writer hundreds of thousands of times a second.
#[derive(Debug, Default)]
struct Counts {
    changes: u64,
    transactions: u64,
}

impl Counts {
    fn count(&mut self, msg: &Message<'_>) {
        match msg {
            Message::Insert(_) | Message::Update(_) | Message::Delete(_) | Message::Truncate(_) => {
                self.changes += 1
            }
            Message::Commit(_) | Message::StreamCommit(_) | Message::CommitPrepared(_) => {
                self.transactions += 1
            }
            _ => {}
        }
    }

    fn publish(&mut self) {
        let m = metrics::get();
        m.changes.add(std::mem::take(&mut self.changes));
        m.transactions.add(std::mem::take(&mut self.transactions));
    }
}

impl Decoding<'_> {
    fn idle(&self) -> bool {
        !self.encoder.in_transaction()
            && self.cur_stream.is_none()
            && self.lines.is_empty()
            && self.spool.is_empty()
    }

    fn flush_lines(&mut self, core: &mut Core<'_, Writer>, end: Option<Lsn>) -> Result<(), StreamError> {
        if self.lines.is_empty() && end.is_none() {
            return Ok(());
        }
        if let Some(e) = end {
            self.handed = self.handed.max(e);
        }
        let data = std::mem::take(&mut self.lines);
        core.send(WriterMsg::Lines { data, end })
    }

    fn flush_spool(&mut self, core: &mut Core<'_, Writer>) -> Result<(), StreamError> {
        if self.spool.is_empty() {
            return Ok(());
        }
        let xid = self.cur_stream.expect("spooled data belongs to the open stream");
        let data = std::mem::take(&mut self.spool);
        let subxacts = std::mem::take(&mut self.spool_marks);
        core.send(WriterMsg::Spool { xid, data, subxacts })
    }

    fn past_endpos(&self, lsn: Lsn) -> bool {
        self.opts.endpos.is_some_and(|e| lsn > e)
    }

    /// One pgoutput message. `Some` when the end position is reached.
    fn handle_message(
        &mut self,
        core: &mut Core<'_, Writer>,
        at: Lsn,
        data: &[u8],
    ) -> Result<Option<StreamEnd>, StreamError> {
        self.stats.messages += 1;
        self.stats.bytes += data.len() as u64;
        let msg = self.decoder.decode(data).map_err(|e| core.protocol(e))?;
        self.counts.count(&msg);
        if let Some(top) = self.cur_stream {
            self.spool_message(core, top, at, &msg)?;
            return Ok(None);
        }
        match msg {
            Message::StreamStart(s) => {
                if self.encoder.in_transaction() {
                    return Err(core.protocol("pgoutput started a stream inside a transaction"));
                }
                self.flush_lines(core, None)?;
                let opts = self.opts;
                self.streams.entry(s.xid).or_insert_with(|| OpenStream::new(opts, s.xid));
                self.cur_stream = Some(s.xid);
                Ok(None)
            }
            Message::StreamStop => Err(core.protocol("pgoutput sent Stream Stop outside of a stream")),
            Message::StreamCommit(c) => self.stream_commit(core, &c),
            Message::StreamAbort(a) => {
                if a.xid == a.subxid {
                    self.streams.remove(&a.xid);
                } else if let Some(st) = self.streams.get_mut(&a.xid) {
                    // The writer cuts the spool at the subtransaction's first change.
                    if let Some(i) = st.marks.iter().position(|&(s, _)| s == a.subxid) {
                        st.enc.rewind_seq(st.marks[i].1);
                        for (s, _) in st.marks.drain(i..) {
                            st.subxids.remove(&s);
                        }
                    }
                }
                core.send(WriterMsg::StreamAbort { xid: a.xid, subxid: a.subxid })?;
                Ok(None)
            }
            Message::StreamPrepare(p) => self.stream_prepare(core, &p),
            other => self.encode_message(core, at, &other),
        }
    }

    /// A message inside a streamed block: encoded by the stream's own encoder and spooled (the
    /// writer writes it at the stream's commit), after noting where each subtransaction's
    /// changes start, so an abort of one subtransaction can cut them off.
    fn spool_message(
        &mut self,
        core: &mut Core<'_, Writer>,
        top: u32,
        at: Lsn,
        msg: &Message<'_>,
    ) -> Result<(), StreamError> {
        let sub = match msg {
            Message::StreamStop => {
                self.flush_spool(core)?;
                self.cur_stream = None;
                return Ok(());
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
                return Err(core.protocol(format!(
                    "unexpected pgoutput message '{}' inside a streamed block of transaction {top}",
                    char::from(other.kind())
                )))
            }
        };
        let opts = self.opts;
        let st = self.streams.entry(top).or_insert_with(|| OpenStream::new(opts, top));
        if let Some(sub) = sub {
            if st.subxids.insert(sub) {
                self.spool_marks.push((sub, self.spool.len()));
                st.marks.push((sub, st.enc.seq()));
            }
        }
        self.record.clear();
        // Like the replay this replaces, a unit end inside a stream (never sent) ends nothing.
        st.enc.encode(&mut self.record, at, msg).map_err(|e| core.protocol(e))?;
        if !self.record.is_empty() {
            let split = match opts.format {
                Format::Json => self.record.iter().position(|&b| b == DEFERRED),
                Format::Text => None,
            };
            if let Some(i) = split {
                self.record.remove(i);
            }
            push_frame(&mut self.spool, split, &self.record);
        }
        if self.spool.len() >= MAX_BATCH {
            self.flush_spool(core)?;
        }
        Ok(())
    }

    /// A streamed transaction committed: the writer replays its spool as one unit.
    fn stream_commit(
        &mut self,
        core: &mut Core<'_, Writer>,
        c: &super::pgoutput::StreamCommit,
    ) -> Result<Option<StreamEnd>, StreamError> {
        if self.past_endpos(c.commit_lsn) {
            return Ok(self.opts.endpos.map(StreamEnd::EndPos));
        }
        let head = Message::Begin(Begin { final_lsn: c.commit_lsn, commit_time: c.commit_time, xid: c.xid });
        let tail = Message::Commit(Commit {
            flags: 0,
            commit_lsn: c.commit_lsn,
            end_lsn: c.end_lsn,
            commit_time: c.commit_time,
        });
        self.end_stream(core, c.xid, &head, c.commit_lsn, &tail)?;
        self.stats.streamed_commits += 1;
        self.handed = self.handed.max(c.end_lsn);
        if self.past_endpos(c.end_lsn) {
            return Ok(self.opts.endpos.map(StreamEnd::EndPos));
        }
        Ok(None)
    }

    /// A streamed transaction prepared: the writer replays its spool as one prepared unit.
    fn stream_prepare(
        &mut self,
        core: &mut Core<'_, Writer>,
        p: &super::pgoutput::Prepare<'_>,
    ) -> Result<Option<StreamEnd>, StreamError> {
        if self.past_endpos(p.prepare_lsn) {
            return Ok(self.opts.endpos.map(StreamEnd::EndPos));
        }
        let head = Message::BeginPrepare(BeginPrepare {
            prepare_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            prepare_time: p.prepare_time,
            xid: p.xid,
            gid: p.gid,
        });
        let tail = Message::Prepare(Prepare {
            flags: 0,
            prepare_lsn: p.prepare_lsn,
            end_lsn: p.end_lsn,
            prepare_time: p.prepare_time,
            xid: p.xid,
            gid: p.gid,
        });
        self.end_stream(core, p.xid, &head, p.prepare_lsn, &tail)?;
        self.handed = self.handed.max(p.end_lsn);
        Ok(None)
    }

    /// The end of streamed transaction `xid` (`head`/`tail` its Begin and Commit, or Begin
    /// Prepare and Prepare): its begin and end lines and the fields its change lines lack go
    /// to the writer, which writes the spool between them as one unit.
    fn end_stream(
        &mut self,
        core: &mut Core<'_, Writer>,
        xid: u32,
        head: &Message<'_>,
        at: Lsn,
        tail: &Message<'_>,
    ) -> Result<(), StreamError> {
        let opts = self.opts;
        let mut st = self.streams.remove(&xid).unwrap_or_else(|| OpenStream::new(opts, xid));
        let (mut head_out, mut fields, mut tail_out) = (Vec::new(), Vec::new(), Vec::new());
        let end = match st
            .enc
            .end_streamed(head, tail, at, &mut head_out, &mut fields, &mut tail_out)
            .map_err(|e| core.protocol(e))?
        {
            Effect::UnitEnd(end) => end,
            Effect::None => unreachable!("a commit or prepare ends a unit"),
        };
        self.encoder.schema.merge(st.enc.schema);
        core.send(WriterMsg::StreamEnd { xid, head: head_out, fields, tail: tail_out, end })
    }

    /// Any other message: encoded into lines, handed to the writer when a unit ends (or the
    /// batch is full).
    fn encode_message(
        &mut self,
        core: &mut Core<'_, Writer>,
        at: Lsn,
        msg: &Message<'_>,
    ) -> Result<Option<StreamEnd>, StreamError> {
        // A unit that starts past the end position is not written.
        if !self.encoder.in_transaction() {
            let starts_at = match msg {
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
        match self.encoder.encode(&mut self.lines, at, msg).map_err(|e| core.protocol(e))? {
            Effect::UnitEnd(end) => {
                self.flush_lines(core, Some(end))?;
                if self.past_endpos(end) {
                    return Ok(self.opts.endpos.map(StreamEnd::EndPos));
                }
            }
            Effect::None => {
                if self.lines.len() >= MAX_BATCH {
                    self.flush_lines(core, None)?;
                }
            }
        }
        Ok(None)
    }
}

impl Handler<Writer> for Decoding<'_> {
    fn data(
        &mut self,
        core: &mut Core<'_, Writer>,
        start: Lsn,
        data: &[u8],
    ) -> SessionResult<Option<StreamEnd>, Writer> {
        self.received = self.received.max(start);
        let end = self.handle_message(core, start, data)?;
        if end.is_some() {
            log::info!("reached end position {}", self.opts.endpos.unwrap_or_default());
        }
        Ok(end)
    }

    fn keepalive(
        &mut self,
        core: &mut Core<'_, Writer>,
        wal_end: Lsn,
        reply_requested: bool,
    ) -> SessionResult<Option<StreamEnd>, Writer> {
        if self.idle() {
            self.idle_pos = self.idle_pos.max(wal_end);
            if let Some(e) = self.opts.endpos.filter(|&e| wal_end >= e) {
                log::info!("server sent everything up to end position {e}");
                return Ok(Some(StreamEnd::EndPos(e)));
            }
        }
        if reply_requested {
            self.hand_over(core)?;
            core.send(WriterMsg::Flush)?;
        }
        Ok(None)
    }

    fn hand_over(&mut self, core: &mut Core<'_, Writer>) -> SessionResult<(), Writer> {
        self.counts.publish();
        self.flush_lines(core, None)?;
        if self.cur_stream.is_some() {
            self.flush_spool(core)?;
        }
        Ok(())
    }

    /// Hand over the complete units; an open transaction is not written (the writer cuts off
    /// its start when it closes).
    fn stopping(&mut self, core: &mut Core<'_, Writer>, end: StreamEnd) -> SessionResult<(), Writer> {
        self.counts.publish();
        if end == StreamEnd::Stopped {
            log::info!("received stop signal; stopping at {}", self.handed);
        }
        self.flush_lines(core, None)
    }

    /// The flush position becomes the slot's `confirmed_flush_lsn`: see the module comment.
    /// The logical writer publishes what it wrote when it is durable, so `write` is the same.
    fn positions(&self, progress: &Progress) -> Positions {
        let durable = progress.flushed();
        let flush = if self.idle() && durable >= self.handed { durable.max(self.idle_pos) } else { durable };
        Positions { write: progress.written().max(flush), flush, apply: flush }
    }

    /// Durable is what the server is told: the confirmed position.
    fn shown(&self, progress: &Progress) -> Shown {
        let p = self.positions(progress);
        Shown { received: self.received.max(self.idle_pos), written: p.write, flushed: p.flush }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_changes_and_committed_transactions() {
        use crate::logical::pgoutput::{Begin, Commit, Truncate};
        let mut c = Counts::default();
        c.count(&Message::Begin(Begin { final_lsn: Lsn(1), commit_time: 0, xid: 7 }));
        c.count(&Message::Truncate(Truncate { xid: None, options: 0, relations: vec![1, 2] }));
        c.count(&Message::StreamStop);
        c.count(&Message::Commit(Commit { flags: 0, commit_lsn: Lsn(1), end_lsn: Lsn(2), commit_time: 0 }));
        assert_eq!((c.changes, c.transactions), (1, 1));
        let before = (metrics::get().changes.get(), metrics::get().transactions.get());
        c.publish();
        assert_eq!((c.changes, c.transactions), (0, 0), "published once");
        assert!(metrics::get().changes.get() > before.0 && metrics::get().transactions.get() > before.1);
    }

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
            ddl_prefix: None,
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
