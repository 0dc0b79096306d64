//! Metrics for Prometheus (`--metrics-address=HOST:PORT`): one registry of atomics that the
//! tools fill where the facts arise, and a small HTTP thread of its own that serves them as
//! Prometheus' text format on `GET /metrics`, and `GET /health` (200 while streaming, or for
//! pgapplylogical while connected to its target and not stuck; 503 otherwise).
//!
//! - The registry ([`Metrics`], reached through [`get`]) is a process-wide table of counters,
//!   gauges and a histogram, each an atomic: filling it never takes a lock, and the HTTP thread
//!   only reads it, so a scrape can never hold up the receiver or the writer. Positions and lag
//!   are the session core's (`crate::session`), published on each pass of its loop from the
//!   same numbers the log line and systemd's STATUS= show (`crate::lag`).
//! - The table is declared once in `registry!`: a field, its kind, which tools have it, its
//!   name after the tool's prefix, and its help. A new metric is one line there, plus the
//!   line that fills it. Two fields may share a name when no tool has both (each tool's
//!   `lag_bytes` means its own lag, with its own help).
//! - The server answers one connection at a time, each with a deadline for reading the
//!   request and writing the answer, so a slow or stuck client delays others by at most that.
//!   It speaks just enough HTTP/1.x for Prometheus, curl and load balancers' health checks.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lag::{Lag, Shown};
use crate::logging::{Hinted, Message};
use crate::lsn::Lsn;
use crate::text::os_error;

/// How long one client may take to send its request, and again to take the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// A request head longer than this is refused: ours are a line and a few headers.
const MAX_REQUEST: usize = 8192;

/// Which tool an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// pgreceivewal.
    Physical,
    /// pgrecvlogical.
    Logical,
    /// pgapplylogical.
    Apply,
}

/// Which tools a metric belongs to: a set of [`Scope`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tools(u8);

impl Tools {
    pub const PHYSICAL: Tools = Tools::of(Scope::Physical);
    pub const LOGICAL: Tools = Tools::of(Scope::Logical);
    pub const APPLY: Tools = Tools::of(Scope::Apply);
    /// The two that stream from a server's replication connection.
    pub const STREAMING: Tools = Tools(Tools::PHYSICAL.0 | Tools::LOGICAL.0);
    pub const ALL: Tools = Tools(Tools::STREAMING.0 | Tools::APPLY.0);

    const fn of(s: Scope) -> Tools {
        Tools(1 << s as u8)
    }

    pub fn includes(self, s: Scope) -> bool {
        self.0 & Tools::of(s).0 != 0
    }
}

/// A gauge of whole numbers (positions, bytes, 0/1 states); absent until first set.
#[derive(Debug)]
pub struct Gauge(AtomicU64);

const UNSET: u64 = u64::MAX;

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicU64::new(UNSET))
    }
    pub fn set(&self, v: u64) {
        self.0.store(v.min(UNSET - 1), Relaxed);
    }
    pub fn set_lsn(&self, lsn: Lsn) {
        self.set(lsn.0);
    }
    pub fn set_flag(&self, on: bool) {
        self.set(u64::from(on));
    }
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Relaxed)).filter(|&v| v != UNSET)
    }
}

/// A gauge of seconds (or any fraction); absent until first set, and again after `clear`.
#[derive(Debug)]
pub struct Seconds(AtomicU64);

impl Seconds {
    pub const fn new() -> Seconds {
        Seconds(AtomicU64::new(UNSET))
    }
    pub fn set(&self, v: f64) {
        self.0.store(if v.is_finite() { v.to_bits() } else { UNSET }, Relaxed);
    }
    pub fn clear(&self) {
        self.0.store(UNSET, Relaxed);
    }
    pub fn get(&self) -> Option<f64> {
        Some(self.0.load(Relaxed)).filter(|&v| v != UNSET).map(f64::from_bits)
    }
    /// Now, in seconds since the Unix epoch (Prometheus' `time()`).
    pub fn set_now(&self) {
        self.set(unix_now());
    }
}

/// A counter: only goes up (Prometheus' `rate()` turns it into "per second").
#[derive(Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// What kind of error ended a session (the `kind` label of `..._errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connecting failed, or the connection broke (no SQLSTATE).
    Connection,
    /// The server reported an error (with a SQLSTATE), or ended the stream.
    Server,
    /// The server sent something we do not accept, or the session met anything else it did
    /// not expect.
    Protocol,
    /// The writer failed: a file could not be written, synced or renamed.
    Writer,
    /// A local check failed: the archive or output directory, the slot, the publication.
    Setup,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] =
        [ErrorKind::Connection, ErrorKind::Server, ErrorKind::Protocol, ErrorKind::Writer, ErrorKind::Setup];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Server => "server",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Writer => "writer",
            ErrorKind::Setup => "setup",
        }
    }
}

/// A counter per [`ErrorKind`]; every kind is shown, 0 included, so `rate()` has a series.
#[derive(Debug)]
pub struct ByKind([AtomicU64; ErrorKind::ALL.len()]);

impl ByKind {
    pub const fn new() -> ByKind {
        ByKind([const { AtomicU64::new(0) }; ErrorKind::ALL.len()])
    }
    pub fn inc(&self, kind: ErrorKind) {
        self.0[kind as usize].fetch_add(1, Relaxed);
    }
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind as usize].load(Relaxed)
    }
}

/// Upper bounds of the fsync latency buckets, in seconds: from a fast SSD's cache flush to a
/// disk in trouble.
pub const FSYNC_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram over [`FSYNC_BUCKETS`]. Each observation lands in one slot (the last
/// slot is "more than the largest bound"); the cumulative buckets and the count are summed at
/// render time, so a scrape during an update never shows a bucket above the count.
#[derive(Debug)]
pub struct Histogram {
    slots: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { slots: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len() + 1], sum_ns: AtomicU64::new(0) }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = FSYNC_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(FSYNC_BUCKETS.len());
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.slots[slot].fetch_add(1, Relaxed);
    }

    /// Runs `f` (an fsync) and records how long it took, whatever it returned.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.observe(t.elapsed());
        r
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Relaxed)).sum()
    }
}

/// `build_info`: always 1, with the version as a label (Prometheus' convention for facts that
/// are text), so a dashboard can tell which build runs where.
#[derive(Debug)]
pub struct BuildInfo;

impl BuildInfo {
    pub const fn new() -> BuildInfo {
        BuildInfo
    }
}

/// `new` is `const` (the registry is a `static`); `Default` is the same.
macro_rules! default_is_new {
    ($($t:ident),*) => {
        $(impl Default for $t {
            fn default() -> $t {
                $t::new()
            }
        })*
    };
}

default_is_new!(Gauge, Seconds, Counter, ByKind, Histogram, BuildInfo, Metrics);

/// Writes one metric's samples.
trait Render {
    fn kind(&self) -> &'static str;
    fn samples(&self, out: &mut String, name: &str);
}

impl Render for Gauge {
    fn kind(&self) -> &'static str {
        "gauge"
    }
    fn samples(&self, out: &mut String, name: &str) {
        if let Some(v) = self.get() {
            let _ = writeln!(out, "{name} {v}");
        }
    }
}

impl Render for Seconds {
    fn kind(&self) -> &'static str {
        "gauge"
    }
    fn samples(&self, out: &mut String, name: &str) {
        if let Some(v) = self.get() {
            let _ = writeln!(out, "{name} {v}");
        }
    }
}

impl Render for Counter {
    fn kind(&self) -> &'static str {
        "counter"
    }
    fn samples(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "{name} {}", self.get());
    }
}

impl Render for ByKind {
    fn kind(&self) -> &'static str {
        "counter"
    }
    fn samples(&self, out: &mut String, name: &str) {
        for k in ErrorKind::ALL {
            let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", k.label(), self.get(k));
        }
    }
}

impl Render for BuildInfo {
    fn kind(&self) -> &'static str {
        "gauge"
    }
    fn samples(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "{name}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    }
}

impl Render for Histogram {
    fn kind(&self) -> &'static str {
        "histogram"
    }
    fn samples(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, bound) in FSYNC_BUCKETS.iter().enumerate() {
            cumulative += self.slots[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.slots[FSYNC_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Declares the registry: `field: Kind, TOOLS, "name after the prefix", "help";`.
macro_rules! registry {
    ($($field:ident: $kind:ident, $tools:ident, $name:literal, $help:literal;)*) => {
        /// Every metric of every tool (see the module comment); docs/monitoring.md lists them.
        #[derive(Debug)]
        pub struct Metrics {
            $(pub $field: $kind,)*
        }

        impl Metrics {
            pub const fn new() -> Metrics {
                Metrics { $($field: $kind::new(),)* }
            }

            fn each(&self, mut f: impl FnMut(Tools, &'static str, &'static str, &dyn Render)) {
                $(f(Tools::$tools, $name, $help, &self.$field);)*
            }
        }
    };
}

registry! {
    build_info: BuildInfo, ALL, "build_info",
        "always 1; the label version is the version of the running program";
    streaming: Gauge, STREAMING, "streaming",
        "1 while a replication stream is open, 0 while connecting or waiting to reconnect";
    server_lsn: Gauge, STREAMING, "server_lsn_bytes",
        "the server's WAL end position, from its keepalives and WAL messages (bytes since 0/0)";
    received_lsn: Gauge, STREAMING, "received_lsn_bytes",
        "position up to which the stream was received (bytes since 0/0)";
    written_lsn: Gauge, STREAMING, "written_lsn_bytes",
        "position up to which output was handed to the kernel, maybe not yet durable (bytes since 0/0)";
    flushed_lsn: Gauge, STREAMING, "flushed_lsn_bytes",
        "position up to which output is durable on disk (bytes since 0/0)";
    confirmed_lsn: Gauge, LOGICAL, "confirmed_lsn_bytes",
        "position confirmed to the server, which becomes the slot's confirmed_flush_lsn (bytes since 0/0)";
    lag_bytes: Gauge, STREAMING, "lag_bytes",
        "how far the durable position is behind the server's WAL end, in bytes";
    lag_seconds: Seconds, STREAMING, "lag_seconds",
        "how long the oldest WAL not yet durable here has been on the server (by the server's clock)";
    last_segment_lsn: Gauge, PHYSICAL, "last_segment_start_lsn_bytes",
        "start position of the last segment completed (fsync'ed and renamed) in the archive";
    last_segment_timeline: Gauge, PHYSICAL, "last_segment_timeline",
        "timeline of the last segment completed in the archive";
    last_segment_time: Seconds, PHYSICAL, "last_segment_timestamp_seconds",
        "when the last segment was completed, in seconds since the Unix epoch";
    segments: Counter, PHYSICAL, "segments_completed_total",
        "segments completed (fsync'ed and renamed to their final name) since start";
    ship_queue: Gauge, PHYSICAL, "segment_command_queue_files",
        "completed files --segment-command has not shipped yet";
    reconnects: Counter, ALL, "reconnects_total",
        "sessions that ended in an error and were retried after a back-off";
    errors: ByKind, ALL, "errors_total",
        "errors that ended a session, by kind";
    fsync: Histogram, STREAMING, "fsync_duration_seconds",
        "time taken by each fsync of an output file or directory";
    written_bytes: Counter, STREAMING, "written_bytes_total",
        "bytes of output written (WAL, or encoded lines) since start";
    synchronous_standby: Gauge, STREAMING, "synchronous_standby",
        "1 when the server's synchronous_standby_names names this tool's application_name (checked at each connect)";
    changes: Counter, LOGICAL, "changes_total",
        "row changes received (insert, update, delete, truncate), streamed transactions' included";
    transactions: Counter, LOGICAL, "transactions_total",
        "transactions received that committed (COMMIT, streamed commit, COMMIT PREPARED)";
    spill_bytes: Counter, LOGICAL, "spill_bytes_total",
        "bytes of streamed transactions written to spill files (over --memory-limit)";
    connected: Gauge, APPLY, "connected",
        "1 while connected to the target database, 0 while connecting or waiting to reconnect";
    applied_lsn: Gauge, APPLY, "applied_lsn_bytes",
        "source position up to which transactions are committed on the target (bytes since 0/0)";
    directory_end_lsn: Gauge, APPLY, "directory_end_lsn_bytes",
        "source position where the last complete transaction in the output directory ends (bytes since 0/0)";
    apply_lag_bytes: Gauge, APPLY, "lag_bytes",
        "how far the applied position is behind the end of the directory's complete transactions, in bytes";
    applied_transactions: Counter, APPLY, "transactions_total",
        "source transactions applied (committed on the target) since start";
    applied_rows: Counter, APPLY, "rows_total",
        "rows inserted, updated or deleted on the target by the transactions applied since start";
    last_applied_time: Seconds, APPLY, "last_applied_timestamp_seconds",
        "when the last transaction was committed on the target, in seconds since the Unix epoch";
    last_commit_time: Seconds, APPLY, "last_commit_timestamp_seconds",
        "when the last transaction applied committed on the source, in seconds since the Unix epoch (the source's clock)";
}

static METRICS: Metrics = Metrics::new();

/// The process's registry. Always there and always filled (a store costs a few nanoseconds);
/// served only with `--metrics-address`.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// What the session core shows in the log and systemd's STATUS=, published: the positions,
    /// the durable position the writer reached, and the lag.
    pub fn publish(&self, shown: &Shown, durable: Lsn, lag: Option<&Lag>) {
        self.received_lsn.set_lsn(shown.received);
        self.written_lsn.set_lsn(shown.written);
        self.flushed_lsn.set_lsn(durable);
        self.confirmed_lsn.set_lsn(shown.flushed);
        if let Some(l) = lag {
            self.server_lsn.set_lsn(l.server);
            self.lag_bytes.set(l.bytes);
            match l.seconds {
                Some(s) => self.lag_seconds.set(s),
                None => self.lag_seconds.clear(),
            }
        }
    }

    /// The text Prometheus scrapes: `tool`'s metrics, named `<tool>_<name>`, with the free space
    /// where the output goes (`free`, read by the caller at scrape time).
    pub fn render(&self, tool: &str, scope: Scope, free: Option<(&str, &str, u64)>) -> String {
        let mut out = String::with_capacity(4096);
        self.each(|tools, name, help, m| {
            if tools.includes(scope) {
                let full = format!("{tool}_{name}");
                let _ = writeln!(out, "# HELP {full} {help}\n# TYPE {full} {}", m.kind());
                m.samples(&mut out, &full);
            }
        });
        if let Some((name, help, bytes)) = free {
            let _ = writeln!(
                out,
                "# HELP {tool}_{name} {help}\n# TYPE {tool}_{name} gauge\n{tool}_{name} {bytes}"
            );
        }
        out
    }
}

/// Marks the stream open until dropped: `..._streaming` and `/health` follow it.
pub struct StreamingGuard(());

pub fn streaming() -> StreamingGuard {
    get().streaming.set_flag(true);
    StreamingGuard(())
}

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        get().streaming.set_flag(false);
    }
}

/// pgapplylogical's `/health` calls it stuck when it is behind and has done nothing on the
/// target for this long: no statement run, no transaction committed, not caught up. A single
/// statement that runs longer (waiting for a lock another session holds, DDL rewriting a big
/// table) counts as stuck too.
pub const APPLY_STALL: Duration = Duration::from_secs(300);

/// When pgapplylogical last made progress, for `/health` (not a metric: it moves with every
/// statement).
static PROGRESS: Seconds = Seconds::new();

/// The applier connected, ran a statement on the target, committed a transaction, or found
/// nothing more to apply.
pub fn progress() {
    PROGRESS.set_now();
}

/// Marks the applier connected to its target until dropped: `..._connected` and `/health`
/// follow it.
pub struct ConnectedGuard(());

pub fn connected() -> ConnectedGuard {
    get().connected.set_flag(true);
    progress();
    ConnectedGuard(())
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        get().connected.set_flag(false);
    }
}

/// What one tool's endpoint serves.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The prefix of every name: `pgreceivewal`, `pgrecvlogical` or `pgapplylogical`.
    pub tool: &'static str,
    pub scope: Scope,
    /// The directory whose filesystem's free space is shown, with the metric's name and help.
    pub free_space: Option<(PathBuf, &'static str, &'static str)>,
}

/// The metrics address could not be used: a primary message naming the address and the
/// system's words, and what to do about it as the hint.
#[derive(Debug)]
pub struct ServeError(Message);

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Hinted for ServeError {
    fn detail(&self) -> Option<String> {
        Hinted::detail(&self.0)
    }
    fn hint(&self) -> Option<String> {
        Hinted::hint(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// Why `address` cannot be listened on, with the fix the error's kind points to.
pub(crate) fn listen_error(address: &str, e: &io::Error) -> ServeError {
    let m = Message::new(format!("could not listen on --metrics-address \"{address}\": {}", os_error(e)));
    ServeError(match e.kind() {
        io::ErrorKind::AddrInUse => m.hint("Another process listens on that port: choose another port."),
        io::ErrorKind::AddrNotAvailable => m
            .detail("It is not an address of this host.")
            .hint("Give an address of this host, such as 127.0.0.1 for this host only."),
        io::ErrorKind::PermissionDenied => m.hint("Ports below 1024 need privileges: choose another port."),
        _ => m,
    })
}

/// Binds `address` (HOST:PORT, checked by the command line) and serves `ep` from a thread of
/// its own until the process ends. Returns the address bound.
pub fn serve(address: &str, ep: Endpoint) -> Result<SocketAddr, ServeError> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| {
            ServeError(
                Message::new(format!("could not resolve --metrics-address \"{address}\": {}", os_error(&e)))
                    .hint("Give a host name this host can resolve, or an IP address such as 127.0.0.1."),
            )
        })?
        .collect();
    let listener = TcpListener::bind(&addrs[..]).map_err(|e| listen_error(address, &e))?;
    let local = listener.local_addr().map_err(|e| listen_error(address, &e))?;
    match ep.scope {
        Scope::Apply => get().connected.set_flag(false),
        Scope::Physical | Scope::Logical => get().streaming.set_flag(false),
    }
    std::thread::Builder::new().name("metrics".into()).spawn(move || accept_loop(listener, ep)).map_err(
        |e| ServeError(Message::new(format!("could not start the metrics thread: {}", os_error(&e)))),
    )?;
    log::info!("serving metrics on http://{local}/metrics and health on http://{local}/health");
    Ok(local)
}

fn accept_loop(listener: TcpListener, ep: Endpoint) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = handle(stream, &ep) {
                    log::debug!("metrics client: {}", os_error(&e));
                }
            }
            // Out of descriptors, a connection reset before accept: the next may work.
            Err(e) => {
                log::warn!("could not accept a metrics connection: {}", os_error(&e));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One request, one answer, then the connection is closed.
fn handle(mut stream: TcpStream, ep: &Endpoint) -> io::Result<()> {
    let head = read_head(&mut stream, Instant::now() + CLIENT_DEADLINE)?;
    let reply = match parse_request(&head) {
        Ok((method, path)) => answer(method, path, ep),
        Err(r) => r,
    };
    stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
    stream.write_all(&reply.encode())?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Reads up to the blank line that ends a request's head, by the deadline.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head_complete(&head) && head.len() <= MAX_REQUEST {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request not complete in time"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// An HTTP answer.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    /// HEAD: the headers of a GET, without its body.
    head_only: bool,
}

const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus' text exposition format.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply { status, content_type: TEXT, body: format!("{body}\n"), head_only: false }
    }

    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Unknown",
        };
        let allow = if self.status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The method and path of a request head (`GET /metrics?x HTTP/1.1`); the headers are not
/// needed. Anything else is the error reply.
fn parse_request(head: &[u8]) -> Result<(Method, &str), Reply> {
    if head.len() > MAX_REQUEST {
        return Err(Reply::text(431, "request head too large"));
    }
    let line_end =
        head.iter().position(|&b| b == b'\n').ok_or_else(|| Reply::text(400, "incomplete request"))?;
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| Reply::text(400, "request line is not UTF-8"))?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reply::text(400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Reply::text(400, "only HTTP/1.0 and HTTP/1.1 are spoken here"));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return Err(Reply::text(405, "only GET and HEAD are allowed")),
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    Ok((method, path))
}

fn answer(method: Method, path: &str, ep: &Endpoint) -> Reply {
    let m = get();
    let mut reply = match path {
        "/metrics" => {
            let free = ep.free_space.as_ref().and_then(|(dir, name, help)| {
                // Read now, on this thread: a slow filesystem delays the scrape, never the tool.
                pgrw_ffi::sys::free_space(dir).ok().map(|b| (*name, *help, b))
            });
            Reply {
                status: 200,
                content_type: EXPOSITION,
                body: m.render(ep.tool, ep.scope, free),
                head_only: false,
            }
        }
        "/health" => {
            let idle = PROGRESS.get().map(|t| unix_now() - t);
            health(m, ep.scope, idle)
        }
        _ => Reply::text(404, "not found: try /metrics or /health"),
    };
    reply.head_only = method == Method::Head;
    reply
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `/health`: the streaming tools are healthy while a stream is open; the applier while it is
/// connected to its target and not stuck (behind, and `idle` seconds since its last progress
/// are over [`APPLY_STALL`]).
fn health(m: &Metrics, scope: Scope, idle: Option<f64>) -> Reply {
    match scope {
        Scope::Physical | Scope::Logical => match m.streaming.get() {
            Some(1) => Reply::text(200, "streaming"),
            _ => Reply::text(503, "not streaming"),
        },
        Scope::Apply => {
            if m.connected.get() != Some(1) {
                return Reply::text(503, "not connected to the target");
            }
            match (m.apply_lag_bytes.get(), idle) {
                (Some(0), _) => Reply::text(200, "caught up"),
                (Some(behind), Some(idle)) if idle > APPLY_STALL.as_secs_f64() => Reply::text(
                    503,
                    &format!(
                        "stuck: {} behind and nothing done on the target for {idle:.0} s",
                        crate::lag::format_bytes(behind)
                    ),
                ),
                _ => Reply::text(200, "applying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
    }

    #[test]
    fn renders_prometheus_text_per_tool() {
        let m = Metrics::new();
        let shown = Shown { received: Lsn(0x3000100), written: Lsn(0x3000000), flushed: Lsn(0x2000000) };
        let lag = Lag { server: Lsn(0x3000200), bytes: 0x1000200, seconds: Some(1.5) };
        m.publish(&shown, Lsn(0x2000000), Some(&lag));
        m.errors.inc(ErrorKind::Connection);
        m.errors.inc(ErrorKind::Connection);
        m.reconnects.inc();
        m.changes.add(7);
        let t = m.render("pgreceivewal", Scope::Physical, Some(("archive_free_bytes", "free", 12345)));
        assert_eq!(sample(&t, "pgreceivewal_flushed_lsn_bytes"), Some("33554432"));
        assert_eq!(sample(&t, "pgreceivewal_received_lsn_bytes"), Some("50331904"));
        assert_eq!(sample(&t, "pgreceivewal_server_lsn_bytes"), Some("50332160"));
        assert_eq!(sample(&t, "pgreceivewal_lag_bytes"), Some("16777728"));
        assert_eq!(sample(&t, "pgreceivewal_lag_seconds"), Some("1.5"));
        assert_eq!(sample(&t, "pgreceivewal_errors_total{kind=\"connection\"}"), Some("2"));
        assert_eq!(sample(&t, "pgreceivewal_errors_total{kind=\"writer\"}"), Some("0"));
        assert_eq!(sample(&t, "pgreceivewal_reconnects_total"), Some("1"));
        assert_eq!(sample(&t, "pgreceivewal_archive_free_bytes"), Some("12345"));
        assert!(t.contains("# TYPE pgreceivewal_lag_bytes gauge\n"));
        assert!(t.contains("# TYPE pgreceivewal_reconnects_total counter\n"));
        // Another tool's metrics are not shown; unset gauges are absent, not 0.
        assert!(!t.contains("changes_total") && !t.contains("confirmed_lsn"), "{t}");
        assert!(sample(&t, "pgreceivewal_last_segment_timestamp_seconds").is_none());
        assert!(sample(&t, "pgreceivewal_synchronous_standby").is_none());
        let l = m.render("pgrecvlogical", Scope::Logical, None);
        assert_eq!(sample(&l, "pgrecvlogical_changes_total"), Some("7"));
        assert_eq!(sample(&l, "pgrecvlogical_confirmed_lsn_bytes"), Some("33554432"));
        assert!(!l.contains("segment") && !l.contains("free_bytes"), "{l}");
        // Unknown seconds are absent again.
        m.publish(&shown, Lsn(0x2000000), Some(&Lag { seconds: None, ..lag }));
        let t = m.render("x", Scope::Physical, None);
        assert!(sample(&t, "x_lag_seconds").is_none() && sample(&t, "x_lag_bytes").is_some());
    }

    /// The exposition format's rules: names, one TYPE per family before its samples, counters
    /// end in `_total`, every sample value parses as a number.
    #[test]
    fn every_line_follows_the_format() {
        let m = Metrics::new();
        m.publish(
            &Shown { received: Lsn(3), written: Lsn(2), flushed: Lsn(1) },
            Lsn(1),
            Some(&Lag { server: Lsn(4), bytes: 3, seconds: Some(0.25) }),
        );
        m.last_segment_time.set_now();
        m.synchronous_standby.set_flag(true);
        m.fsync.observe(Duration::from_micros(300));
        m.apply_lag_bytes.set(5);
        m.last_applied_time.set_now();
        for (tool, scope) in [
            ("pgreceivewal", Scope::Physical),
            ("pgrecvlogical", Scope::Logical),
            ("pgapplylogical", Scope::Apply),
        ] {
            let t = m.render(tool, scope, Some(("archive_free_bytes", "h", 1)));
            let mut types = std::collections::HashMap::new();
            for line in t.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').unwrap();
                    assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "two TYPEs: {line}");
                    assert!(name.starts_with(&format!("{tool}_")), "{line}");
                    assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{line}");
                    assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                    continue;
                }
                if line.starts_with("# HELP ") {
                    continue;
                }
                let (series, value) = line.rsplit_once(' ').unwrap();
                let family = series.split('{').next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        family.strip_suffix(s).filter(|b| types.get(*b).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(family);
                assert!(types.contains_key(base), "sample before its TYPE: {line}");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    /// The applier's own metrics, and what it shares with the others (build, errors,
    /// reconnects); none of the streaming tools' positions, and its `lag_bytes` is its own.
    #[test]
    fn renders_the_applier() {
        let m = Metrics::new();
        m.publish(
            &Shown { received: Lsn(3), written: Lsn(2), flushed: Lsn(1) },
            Lsn(1),
            Some(&Lag { server: Lsn(0x9000), bytes: 0x8fff, seconds: Some(2.0) }),
        );
        m.connected.set_flag(true);
        m.applied_lsn.set_lsn(Lsn(0x1_0000_0100));
        m.directory_end_lsn.set_lsn(Lsn(0x1_0000_0300));
        m.apply_lag_bytes.set(0x200);
        m.applied_transactions.add(3);
        m.applied_rows.add(40);
        m.errors.inc(ErrorKind::Connection);
        m.reconnects.inc();
        m.transactions.add(99);
        let t = m.render("pgapplylogical", Scope::Apply, None);
        assert_eq!(sample(&t, "pgapplylogical_connected"), Some("1"), "{t}");
        assert_eq!(sample(&t, "pgapplylogical_applied_lsn_bytes"), Some("4294967552"));
        assert_eq!(sample(&t, "pgapplylogical_directory_end_lsn_bytes"), Some("4294968064"));
        assert_eq!(sample(&t, "pgapplylogical_lag_bytes"), Some("512"));
        assert_eq!(sample(&t, "pgapplylogical_transactions_total"), Some("3"));
        assert_eq!(sample(&t, "pgapplylogical_rows_total"), Some("40"));
        assert_eq!(sample(&t, "pgapplylogical_errors_total{kind=\"connection\"}"), Some("1"));
        assert_eq!(sample(&t, "pgapplylogical_reconnects_total"), Some("1"));
        let version = format!("pgapplylogical_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
        assert_eq!(sample(&t, &version), Some("1"));
        assert!(sample(&t, "pgapplylogical_last_applied_timestamp_seconds").is_none(), "unset: absent");
        m.last_commit_time.set(1_700_000_000.25);
        let t = m.render("pgapplylogical", Scope::Apply, None);
        assert_eq!(sample(&t, "pgapplylogical_last_commit_timestamp_seconds"), Some("1700000000.25"));
        assert_eq!(t.matches("# TYPE pgapplylogical_lag_bytes gauge\n").count(), 1);
        for other in
            ["streaming", "server_lsn", "flushed_lsn", "lag_seconds", "fsync", "changes_total", "segment"]
        {
            assert!(!t.contains(other), "{other} is not the applier's: {t}");
        }
        // The streaming tools do not show the applier's.
        let l = m.render("pgrecvlogical", Scope::Logical, None);
        assert_eq!(sample(&l, "pgrecvlogical_lag_bytes"), Some("36863"));
        assert_eq!(sample(&l, "pgrecvlogical_transactions_total"), Some("99"));
        assert!(!l.contains("applied") && !l.contains("connected") && !l.contains("rows_total"), "{l}");
        assert!(l.contains("pgrecvlogical_build_info{"), "{l}");
    }

    #[test]
    fn applier_health() {
        let m = Metrics::new();
        let status = |idle| {
            let r = health(&m, Scope::Apply, idle);
            (r.status, r.body.trim_end().to_owned())
        };
        assert_eq!(status(None), (503, "not connected to the target".into()));
        m.connected.set_flag(true);
        assert_eq!(status(Some(1.0)), (200, "applying".into()), "lag not known yet");
        m.apply_lag_bytes.set(0);
        assert_eq!(status(Some(3600.0)), (200, "caught up".into()), "idle with nothing to do");
        m.apply_lag_bytes.set(2048);
        assert_eq!(status(Some(299.0)), (200, "applying".into()));
        assert_eq!(status(None), (200, "applying".into()));
        assert_eq!(
            status(Some(301.0)),
            (503, "stuck: 2.0 kB behind and nothing done on the target for 301 s".into())
        );
        m.connected.set_flag(false);
        assert_eq!(status(Some(1.0)).0, 503);
        // The streaming tools' health is the stream, whatever the applier's gauges say.
        assert_eq!(health(&m, Scope::Logical, None).status, 503);
        m.streaming.set_flag(true);
        assert_eq!(health(&m, Scope::Physical, None).body, "streaming\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(400)); // <= 0.0005
        h.observe(Duration::from_millis(1)); // <= 0.001, the bound itself
        h.observe(Duration::from_millis(30)); // <= 0.05
        h.observe(Duration::from_secs(20)); // only +Inf
        assert_eq!(h.time(|| 5), 5);
        let mut t = String::new();
        h.samples(&mut t, "f");
        assert_eq!(sample(&t, "f_bucket{le=\"0.0005\"}"), Some("2"), "{t}"); // `time` was instant
        assert_eq!(sample(&t, "f_bucket{le=\"0.001\"}"), Some("3"));
        assert_eq!(sample(&t, "f_bucket{le=\"0.025\"}"), Some("3"));
        assert_eq!(sample(&t, "f_bucket{le=\"0.05\"}"), Some("4"));
        assert_eq!(sample(&t, "f_bucket{le=\"10\"}"), Some("4"));
        assert_eq!(sample(&t, "f_bucket{le=\"+Inf\"}"), Some("5"));
        assert_eq!(sample(&t, "f_count"), Some("5"));
        let sum: f64 = sample(&t, "f_sum").unwrap().parse().unwrap();
        assert!((20.0314..20.04).contains(&sum), "{sum}");
    }

    #[test]
    fn parses_requests() {
        fn ok(s: &str) -> Result<(Method, &str), u16> {
            parse_request(s.as_bytes()).map_err(|r| r.status)
        }
        assert_eq!(ok("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Ok((Method::Get, "/metrics")));
        assert_eq!(ok("GET /metrics?name[]=x HTTP/1.0\r\n\r\n"), Ok((Method::Get, "/metrics")));
        assert_eq!(ok("HEAD /health HTTP/1.1\n\n"), Ok((Method::Head, "/health")));
        assert_eq!(ok("POST /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(ok("GET /metrics\r\n\r\n"), Err(400), "HTTP/0.9");
        assert_eq!(ok("GET /metrics HTTP/2.0\r\n\r\n"), Err(400));
        assert_eq!(ok("GET  /metrics HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(ok(""), Err(400));
        assert_eq!(ok("GET /\u{fffd} HTTP/1.1\r\n\r\n").map(|(_, p)| p.len()), Ok(4));
        assert_eq!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n").map_err(|r| r.status), Err(400));
        assert_eq!(parse_request(&vec![b'a'; MAX_REQUEST + 1]).map_err(|r| r.status), Err(431));
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n") && !head_complete(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn replies() {
        let ep = Endpoint { tool: "t", scope: Scope::Physical, free_space: None };
        let r = answer(Method::Get, "/nothing", &ep);
        assert_eq!(r.status, 404);
        let r = answer(Method::Head, "/metrics", &ep);
        assert_eq!((r.status, r.content_type), (200, EXPOSITION));
        let bytes = String::from_utf8(r.encode()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n"), "{bytes}");
        assert!(bytes.contains(&format!("Content-Length: {}\r\n", r.body.len())));
        assert!(bytes.ends_with("\r\n\r\n"), "HEAD has no body: {bytes}");
        let r = Reply::text(405, "no");
        assert!(String::from_utf8(r.encode()).unwrap().contains("Allow: GET, HEAD\r\n"));
    }

    /// A real socket: a client that sends nothing does not keep the next one waiting for
    /// longer than the deadline, and both ends see whole answers.
    #[test]
    fn serves_over_tcp_and_a_silent_client_is_dropped() {
        let addr = serve(
            "127.0.0.1:0",
            Endpoint {
                tool: "pgreceivewal",
                scope: Scope::Physical,
                free_space: Some((".".into(), "archive_free_bytes", "h")),
            },
        )
        .unwrap();
        let _silent = TcpStream::connect(addr).unwrap();
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let r = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\npgreceivewal_archive_free_bytes "), "{r}");
        assert!(r.contains("\npgreceivewal_reconnects_total "), "{r}");
        let r = get("GET /nope HTTP/1.0\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let taken = serve(&addr.to_string(), Endpoint { tool: "t", scope: Scope::Logical, free_space: None });
        let e = taken.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("could not listen on --metrics-address \"{addr}\": Address already in use")
        );
        assert_eq!(e.hint().as_deref(), Some("Another process listens on that port: choose another port."));
        // Not a port but an address: the detail says why, the hint what to give instead.
        let e = serve("192.0.2.1:9187", Endpoint { tool: "t", scope: Scope::Logical, free_space: None })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not listen on --metrics-address \"192.0.2.1:9187\": Cannot assign requested address"
        );
        assert_eq!(e.detail().as_deref(), Some("It is not an address of this host."));
    }
}
