use std::ffi::{c_char, c_int, c_void, CString};
use std::fmt;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use pq_sys::{ConnStatusType, PostgresPollingStatusType};

use crate::error::{os_error, tidy, Error};
use crate::result::{cstr, PgResult, Status};
use crate::sys::{poll, Interest};

/// libpq compiled without thread safety would share state between connections behind our back.
pub fn is_thread_safe() -> bool {
    // SAFETY: PQisthreadsafe has no preconditions.
    unsafe { pq_sys::PQisthreadsafe() != 0 }
}

/// The options of a libpq connection string or URI, parsed by `PQconninfoParse` (as
/// pg_receivewal parses its `-d`): `Err` carries libpq's message, such as
/// `missing "=" after "host" in connection info string`.
pub fn conninfo_parse(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let c = CString::new(conninfo).map_err(|_| "connection string contains a NUL byte".to_string())?;
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: NUL-terminated input; libpq allocates the options array (freed with
    // PQconninfoFree) or an error message (freed with PQfreemem).
    let opts = unsafe { pq_sys::PQconninfoParse(c.as_ptr(), &mut err) };
    if opts.is_null() {
        // SAFETY: err is null or a libpq-allocated message that we free after copying.
        let msg = unsafe {
            let m = tidy(cstr(err).unwrap_or("out of memory"));
            if !err.is_null() {
                pq_sys::PQfreemem(err.cast::<c_void>());
            }
            m
        };
        return Err(msg);
    }
    // SAFETY: a non-null array from PQconninfoParse, not used after this.
    Ok(unsafe { take_conninfo_options(opts) })
}

/// Copies the set options out of a `PQconninfoOption` array and frees it.
///
/// # Safety
/// `opts` is a non-null array from libpq, terminated by an entry with a null keyword, that
/// nothing else frees or uses afterwards.
unsafe fn take_conninfo_options(opts: *mut pq_sys::PQconninfoOption) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut p = opts;
    // SAFETY: as the caller promises: every entry up to the terminator is readable, its
    // strings are NUL-terminated or null, and the array is freed once, after the copies.
    unsafe {
        while !(*p).keyword.is_null() {
            if let (Some(k), Some(v)) = (cstr((*p).keyword), cstr((*p).val)) {
                out.push((k.to_owned(), v.to_owned()));
            }
            p = p.add(1);
        }
        pq_sys::PQconninfoFree(opts);
    }
    out
}

/// Whether `conninfo` is a valid connection string or URI (see [`conninfo_parse`]).
pub fn check_conninfo(conninfo: &str) -> Result<(), String> {
    conninfo_parse(conninfo).map(|_| ())
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub message: String,
    /// The server asked for a password and none was supplied (`PQconnectionNeedsPassword`).
    pub needs_password: bool,
    /// The stop descriptor became readable while connecting.
    pub interrupted: bool,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

/// Owner of one `PGconn`, finished on drop.
pub struct Conn {
    raw: NonNull<pq_sys::PGconn>,
}

/// One message read from a COPY stream, freed with `PQfreemem` when dropped.
pub struct CopyBuf {
    ptr: NonNull<c_char>,
    len: usize,
}

impl std::ops::Deref for CopyBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: PQgetCopyData returned `len` readable bytes at `ptr`, owned by us until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for CopyBuf {
    fn drop(&mut self) {
        // SAFETY: the buffer came from PQgetCopyData, which documents PQfreemem as its release.
        unsafe { pq_sys::PQfreemem(self.ptr.as_ptr().cast::<c_void>()) }
    }
}

/// What became of one statement of a pipeline ([`Conn::exec_prepared_pipeline`]).
pub enum Piped {
    /// It ran (tuples or command ok).
    Done(PgResult),
    /// The server refused it.
    Failed(Error),
    /// The server skipped it, since an earlier statement of the pipeline failed.
    Skipped,
}

/// The outcome of a non-blocking read from a COPY stream.
pub enum CopyRead {
    Data(CopyBuf),
    /// No complete message is buffered: wait for the socket, then `consume_input`.
    WouldBlock,
    /// The server ended the COPY; collect its result with `get_result`.
    Done,
}

fn c_string(s: &str, what: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::new(format!("{what} contains a NUL byte")))
}

/// libpq's reading of `connect_timeout` (`pqParseIntParam`, then "at least two seconds").
fn parse_connect_timeout(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else { return Ok(None) };
    let secs: i32 = v
        .trim()
        .parse()
        .map_err(|_| format!("invalid integer value \"{v}\" for connection option \"connect_timeout\""))?;
    Ok((secs > 0).then(|| Duration::from_secs(secs.max(2) as u64)))
}

/// The options to try the hosts after the one (`host`, `port`) that timed out: libpq's
/// comma-separated `host`, `hostaddr` and `port` lists without that entry. `None` when it was
/// the only one, or cannot be told apart.
fn without_host(opts: &[(String, String)], host: &str, port: &str) -> Option<Vec<(String, String)>> {
    let list = |key: &str| -> Vec<String> {
        opts.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (hosts, addrs, ports) = (list("host"), list("hostaddr"), list("port"));
    let n = hosts.len().max(addrs.len());
    if n < 2 {
        return None;
    }
    // PQhost names the host, or its hostaddr when the host entry is empty.
    let index = (0..n).find(|&i| {
        let name = hosts.get(i).filter(|h| !h.is_empty()).or(addrs.get(i)).map(String::as_str).unwrap_or("");
        let p =
            if ports.len() == 1 { ports[0].as_str() } else { ports.get(i).map(String::as_str).unwrap_or("") };
        name == host && (p.is_empty() || p == port)
    })?;
    let drop = |v: &[String]| -> Option<String> {
        (v.len() == n).then(|| {
            let mut v = v.to_vec();
            v.remove(index);
            v.join(",")
        })
    };
    let mut out: Vec<(String, String)> = opts.to_vec();
    for (key, values) in [("host", &hosts), ("hostaddr", &addrs), ("port", &ports)] {
        if let Some(rest) = drop(values) {
            if let Some(entry) = out.iter_mut().find(|(k, _)| k == key) {
                entry.1 = rest;
            }
        }
    }
    Some(out)
}

impl Conn {
    /// Connects with libpq keyword/value pairs. `dbname` may be a connection string or URI
    /// (libpq's `expand_dbname`), and libpq applies PG* variables, the service file and
    /// ~/.pgpass as usual. While connecting, `stop` (if any) is watched so a SIGTERM does not
    /// wait for a TCP time-out.
    ///
    /// `connect_timeout` (or PGCONNECT_TIMEOUT) is honoured as `PQconnectdb` honours it: a
    /// deadline per host, at least 2 s, none when 0 or absent. libpq applies it only in its own
    /// blocking wait, not to `PQconnectPoll`, so without this a host that accepts TCP but never
    /// answers (a hung server, a firewall) held us until the kernel gave up, and `host=a,b`
    /// never reached `b`. libpq offers no call to skip to its next host, so on a time-out the
    /// connection is started again without the host that timed out.
    pub fn connect(params: &[(&str, &str)], stop: Option<RawFd>) -> Result<Conn, ConnectError> {
        let fail = |message: String| ConnectError { message, needs_password: false, interrupted: false };
        let mut conn = Conn::start(params, true)?;
        let timeout = conn.connect_timeout().map_err(fail)?;
        // Earlier hosts that timed out, for the final message (libpq lists every host's error).
        let mut timed_out: Vec<String> = Vec::new();
        let with_earlier = |mut e: ConnectError, earlier: &[String]| {
            if !earlier.is_empty() {
                e.message = format!("{}; {}", earlier.join("; "), e.message);
            }
            e
        };
        loop {
            match conn.poll_connect(stop, timeout) {
                Ok(true) => return Ok(conn),
                Ok(false) => {}
                Err(e) => return Err(with_earlier(e, &timed_out)),
            }
            let (host, port) = (conn.host(), conn.port());
            timed_out
                .push(format!("connection to server at \"{host}\", port {port} failed: timeout expired"));
            let Some(rest) = without_host(&conn.conninfo(), &host, &port) else {
                return Err(fail(timed_out.join("; ")));
            };
            let rest: Vec<(&str, &str)> = rest.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            // The options are libpq's own, expanded: dbname is a plain name now.
            conn = Conn::start(&rest, false).map_err(|e| with_earlier(e, &timed_out))?;
        }
    }

    /// `PQconnectStartParams`, checked for an immediate failure.
    fn start(params: &[(&str, &str)], expand_dbname: bool) -> Result<Conn, ConnectError> {
        let fail = |message: String| ConnectError { message, needs_password: false, interrupted: false };
        let mut owned = Vec::with_capacity(params.len());
        for (k, v) in params {
            owned.push((
                c_string(k, "connection keyword").map_err(|e| fail(e.message))?,
                c_string(v, k).map_err(|e| fail(e.message))?,
            ));
        }
        let mut keys: Vec<*const c_char> = owned.iter().map(|(k, _)| k.as_ptr()).collect();
        let mut vals: Vec<*const c_char> = owned.iter().map(|(_, v)| v.as_ptr()).collect();
        keys.push(std::ptr::null());
        vals.push(std::ptr::null());
        // SAFETY: both arrays are NULL-terminated and point into `owned`, alive for the call;
        // libpq copies what it keeps.
        let raw =
            unsafe { pq_sys::PQconnectStartParams(keys.as_ptr(), vals.as_ptr(), c_int::from(expand_dbname)) };
        let Some(raw) = NonNull::new(raw) else {
            return Err(fail("out of memory allocating a libpq connection".into()));
        };
        // From here on Drop calls PQfinish, even if the connection fails (libpq requires it).
        let conn = Conn { raw };
        if conn.status_bad() {
            return Err(conn.connect_error());
        }
        Ok(conn)
    }

    /// Drives `PQconnectPoll` until the connection is made (`Ok(true)`), fails, is
    /// interrupted by `stop`, or the host being tried has had `timeout` (`Ok(false)`). The
    /// deadline restarts whenever libpq moves on to another host by itself (after a refused
    /// connection, say), as `PQconnectdb`'s does.
    fn poll_connect(&self, stop: Option<RawFd>, timeout: Option<Duration>) -> Result<bool, ConnectError> {
        let fail = |message: String| ConnectError { message, needs_password: false, interrupted: false };
        let mut interest = Interest::Write;
        let mut current = (self.host(), self.port());
        let mut deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut fds = vec![(self.socket(), interest)];
            if let Some(stop) = stop {
                fds.push((stop, Interest::Read));
            }
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ready = poll(&fds, wait)
                .map_err(|e| fail(format!("could not wait for the server: {}", os_error(&e))))?;
            if stop.is_some() && ready[1] {
                return Err(ConnectError {
                    message: "interrupted while connecting".into(),
                    needs_password: false,
                    interrupted: true,
                });
            }
            if !ready[0] {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
                continue;
            }
            // SAFETY: live connection in the connecting state, polled as libpq documents.
            match unsafe { pq_sys::PQconnectPoll(self.raw.as_ptr()) } {
                PostgresPollingStatusType::PGRES_POLLING_OK => return Ok(true),
                PostgresPollingStatusType::PGRES_POLLING_READING => interest = Interest::Read,
                PostgresPollingStatusType::PGRES_POLLING_WRITING => interest = Interest::Write,
                PostgresPollingStatusType::PGRES_POLLING_FAILED => return Err(self.connect_error()),
                PostgresPollingStatusType::PGRES_POLLING_ACTIVE => {}
            }
            let now = (self.host(), self.port());
            if now != current {
                current = now;
                deadline = timeout.map(|t| Instant::now() + t);
            }
        }
    }

    /// The connection's effective options (`PQconninfo`): what was given, PG* variables, the
    /// service file and libpq's defaults, with `dbname` already expanded.
    fn conninfo(&self) -> Vec<(String, String)> {
        // SAFETY: live connection; PQconninfo returns null (out of memory) or an array we own.
        let opts = unsafe { pq_sys::PQconninfo(self.raw.as_ptr()) };
        if opts.is_null() {
            return Vec::new();
        }
        // SAFETY: a non-null array from PQconninfo, not used after this.
        unsafe { take_conninfo_options(opts) }
    }

    /// `connect_timeout` as `PQconnectdb` reads it: an integer in seconds, at least 2 when
    /// positive, no limit when 0, negative or absent.
    fn connect_timeout(&self) -> Result<Option<Duration>, String> {
        let value = self.conninfo().into_iter().find(|(k, _)| k == "connect_timeout").map(|(_, v)| v);
        parse_connect_timeout(value.as_deref())
    }

    fn status_bad(&self) -> bool {
        // SAFETY: live connection.
        unsafe { pq_sys::PQstatus(self.raw.as_ptr()) == ConnStatusType::CONNECTION_BAD }
    }

    fn connect_error(&self) -> ConnectError {
        // SAFETY: live connection.
        let needs_password = unsafe { pq_sys::PQconnectionNeedsPassword(self.raw.as_ptr()) } != 0;
        ConnectError { message: self.error_message(), needs_password, interrupted: false }
    }

    /// libpq's latest error message for this connection, on one line.
    pub fn error_message(&self) -> String {
        // SAFETY: live connection; the message is owned by it and copied before we return.
        tidy(unsafe { cstr(pq_sys::PQerrorMessage(self.raw.as_ptr())) }.unwrap_or(""))
    }

    fn error(&self) -> Error {
        Error::new(self.error_message())
    }

    /// Runs one command and returns its result if it succeeded (tuples or command ok).
    pub fn exec(&mut self, sql: &str) -> Result<PgResult, Error> {
        let res = self.exec_raw(sql)?;
        command_ok(res, sql)
    }

    fn exec_raw(&mut self, sql: &str) -> Result<PgResult, Error> {
        let q = c_string(sql, "query")?;
        // SAFETY: live connection, NUL-terminated query; the returned result is owned by the
        // PgResult, or null on a connection-level failure (then PQerrorMessage explains).
        PgResult::from_raw(unsafe { pq_sys::PQexec(self.raw.as_ptr(), q.as_ptr()) })
            .ok_or_else(|| self.error())
    }

    /// Runs one command with text parameters (`$1`, `$2`...; `None` is SQL NULL), their types
    /// inferred by the server from where they stand. Values never become part of the SQL text,
    /// so no value can change what the statement means.
    pub fn exec_params(&mut self, sql: &str, params: &[Option<&str>]) -> Result<PgResult, Error> {
        let q = c_string(sql, "query")?;
        let params = Params::new(params)?;
        // SAFETY: live connection; the query and every non-null value are NUL-terminated and
        // live in `q` and `params` for the call; null types, lengths and formats mean "infer the
        // types, text values", as PQexecParams documents. The result is owned by the PgResult.
        let res = PgResult::from_raw(unsafe {
            pq_sys::PQexecParams(
                self.raw.as_ptr(),
                q.as_ptr(),
                params.n,
                std::ptr::null(),
                params.ptrs.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
            )
        })
        .ok_or_else(|| self.error())?;
        command_ok(res, sql)
    }

    /// Prepares `sql` as the named statement (`PQprepare`), parameter types inferred.
    pub fn prepare(&mut self, name: &str, sql: &str) -> Result<(), Error> {
        let (n, q) = (c_string(name, "statement name")?, c_string(sql, "query")?);
        // SAFETY: live connection; both strings are NUL-terminated and outlive the call; no
        // parameter types given (null, 0), so the server infers them.
        let res = PgResult::from_raw(unsafe {
            pq_sys::PQprepare(self.raw.as_ptr(), n.as_ptr(), q.as_ptr(), 0, std::ptr::null())
        })
        .ok_or_else(|| self.error())?;
        match res.status() {
            Status::CommandOk => Ok(()),
            _ => Err(res.to_error(sql)),
        }
    }

    /// Runs a statement made by [`Conn::prepare`] with text parameters (`None` is SQL NULL).
    pub fn exec_prepared(&mut self, name: &str, params: &[Option<&str>]) -> Result<PgResult, Error> {
        let stmt = c_string(name, "statement name")?;
        let params = Params::new(params)?;
        // SAFETY: as in exec_params: NUL-terminated strings alive for the call, text values.
        let res = PgResult::from_raw(unsafe {
            pq_sys::PQexecPrepared(
                self.raw.as_ptr(),
                stmt.as_ptr(),
                params.n,
                params.ptrs.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
            )
        })
        .ok_or_else(|| self.error())?;
        command_ok(res, name)
    }

    /// Runs statements made by [`Conn::prepare`] in libpq's pipeline mode: all are sent, then
    /// one Sync, then their results are read, so the whole batch costs one round trip. Returns
    /// one outcome per statement, in order. As in any pipeline, the server skips everything
    /// after a statement that fails, up to the Sync ([`Piped::Skipped`]); inside an explicit
    /// transaction block the transaction is then aborted and must be rolled back.
    ///
    /// The connection is in blocking mode, so libpq sends while the server answers only after
    /// reading: the caller keeps a batch to a size whose answers (a few dozen bytes per
    /// statement without RETURNING) fit in the socket buffers, or the two sides could wait on
    /// each other. An `Err` means the pipeline could not be run or read to its end (the
    /// connection is then usually lost; check [`Conn::is_ok`]).
    pub fn exec_prepared_pipeline(&mut self, stmts: &[(&str, &[Option<&str>])]) -> Result<Vec<Piped>, Error> {
        // Everything is converted before the pipeline starts: a name or value that cannot be
        // sent (a NUL byte) fails here, with nothing sent and the connection usable as before.
        let mut owned = Vec::with_capacity(stmts.len());
        for (name, params) in stmts {
            let stmt = c_string(name, "statement name")?;
            owned.push((stmt, Params::new(params)?));
        }
        // SAFETY: live connection; PQenterPipelineMode only checks that the connection is idle
        // (no query in progress), as it is between our synchronous calls.
        if unsafe { pq_sys::PQenterPipelineMode(self.raw.as_ptr()) } != 1 {
            return Err(self.error());
        }
        let out = self.run_pipeline(&owned);
        // Leaves pipeline mode only when every result was read (libpq refuses otherwise); after
        // a failure the connection is unusable for ordinary calls and the caller drops it.
        // SAFETY: live connection; PQexitPipelineMode checks the state itself and returns 0
        // when results are still pending.
        if unsafe { pq_sys::PQexitPipelineMode(self.raw.as_ptr()) } != 1 && out.is_ok() {
            return Err(self.error());
        }
        out
    }

    fn run_pipeline(&mut self, stmts: &[(CString, Params)]) -> Result<Vec<Piped>, Error> {
        for (stmt, params) in stmts {
            // SAFETY: live connection in pipeline mode; the name and every non-null value are
            // NUL-terminated and live in `stmts` for the call (libpq copies them into its output
            // buffer before returning); `n` is the number of values; null lengths and formats
            // mean text values.
            let sent = unsafe {
                pq_sys::PQsendQueryPrepared(
                    self.raw.as_ptr(),
                    stmt.as_ptr(),
                    params.n,
                    params.ptrs.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                )
            };
            if sent != 1 {
                return Err(self.error());
            }
        }
        // SAFETY: live connection in pipeline mode; PQpipelineSync queues a Sync and flushes.
        if unsafe { pq_sys::PQpipelineSync(self.raw.as_ptr()) } != 1 {
            return Err(self.error());
        }
        let mut out = Vec::with_capacity(stmts.len());
        for (stmt, _) in stmts {
            let name = stmt.to_string_lossy();
            // One result per statement, then a null that ends it (libpq's pipeline protocol).
            let res = self.get_result().ok_or_else(|| self.error())?;
            out.push(match res.status() {
                Status::TuplesOk | Status::CommandOk => Piped::Done(res),
                Status::PipelineAborted => Piped::Skipped,
                _ => Piped::Failed(res.to_error(&name)),
            });
            if self.get_result().is_some() {
                return Err(Error::new(format!("more than one result for statement {name} in a pipeline")));
            }
        }
        match self.get_result() {
            Some(r) if r.status() == Status::PipelineSync => Ok(out),
            Some(r) => Err(Error::new(format!("expected the end of a pipeline, got {:?}", r.status()))),
            None => Err(self.error()),
        }
    }

    /// Whether the connection is still usable (`PQstatus` is not `CONNECTION_BAD`).
    pub fn is_ok(&self) -> bool {
        !self.status_bad()
    }

    /// Runs a command that enters COPY BOTH mode (START_REPLICATION).
    pub fn start_copy_both(&mut self, sql: &str) -> Result<(), Error> {
        let res = self.exec_raw(sql)?;
        match res.status() {
            Status::CopyBoth => Ok(()),
            _ => Err(res.to_error(sql)),
        }
    }

    /// Reads one COPY message without blocking (libpq's async mode).
    pub fn get_copy_data(&mut self) -> Result<CopyRead, Error> {
        let mut buf: *mut c_char = std::ptr::null_mut();
        // SAFETY: live connection in COPY mode; on a positive return libpq hands us a buffer
        // that CopyBuf frees with PQfreemem.
        let n = unsafe { pq_sys::PQgetCopyData(self.raw.as_ptr(), &mut buf, 1) };
        match n {
            0 => Ok(CopyRead::WouldBlock),
            -1 => Ok(CopyRead::Done),
            n if n > 0 => match NonNull::new(buf) {
                Some(ptr) => Ok(CopyRead::Data(CopyBuf { ptr, len: n as usize })),
                None => Err(Error::new("libpq returned a COPY message without a buffer")),
            },
            _ => Err(self.error()),
        }
    }

    /// Queues one COPY message and pushes it to the server.
    pub fn put_copy_data(&mut self, data: &[u8]) -> Result<(), Error> {
        let len = c_int::try_from(data.len()).map_err(|_| Error::new("COPY message too large"))?;
        // SAFETY: live connection; libpq copies `len` bytes from `data` before returning.
        if unsafe { pq_sys::PQputCopyData(self.raw.as_ptr(), data.as_ptr().cast::<c_char>(), len) } != 1 {
            return Err(self.error());
        }
        self.flush()
    }

    /// Sends whatever libpq has queued; the connection is in blocking mode, so this waits.
    fn flush(&mut self) -> Result<(), Error> {
        // SAFETY: live connection.
        match unsafe { pq_sys::PQflush(self.raw.as_ptr()) } {
            0 => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// Ends our side of a COPY stream.
    pub fn put_copy_end(&mut self) -> Result<(), Error> {
        // SAFETY: live connection; a null error message means a normal end.
        if unsafe { pq_sys::PQputCopyEnd(self.raw.as_ptr(), std::ptr::null()) } != 1 {
            return Err(self.error());
        }
        self.flush()
    }

    /// The next result of the current command, `None` when there are no more.
    pub fn get_result(&mut self) -> Option<PgResult> {
        // SAFETY: live connection; the result (if any) is owned by the returned PgResult.
        PgResult::from_raw(unsafe { pq_sys::PQgetResult(self.raw.as_ptr()) })
    }

    /// Reads what the socket has into libpq's buffer.
    pub fn consume_input(&mut self) -> Result<(), Error> {
        // SAFETY: live connection.
        if unsafe { pq_sys::PQconsumeInput(self.raw.as_ptr()) } == 1 {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    pub fn socket(&self) -> RawFd {
        // SAFETY: live connection.
        unsafe { pq_sys::PQsocket(self.raw.as_ptr()) }
    }

    /// The server's version as an integer (180006 for 18.6).
    pub fn server_version(&self) -> u32 {
        // SAFETY: live connection.
        u32::try_from(unsafe { pq_sys::PQserverVersion(self.raw.as_ptr()) }).unwrap_or(0)
    }

    /// A parameter the server reported at start-up (`integer_datetimes`, `server_version`...).
    pub fn parameter_status(&self, name: &str) -> Option<String> {
        let n = CString::new(name).ok()?;
        // SAFETY: live connection; the value is owned by the connection and copied here.
        unsafe { cstr(pq_sys::PQparameterStatus(self.raw.as_ptr(), n.as_ptr())) }.map(str::to_owned)
    }

    pub fn host(&self) -> String {
        // SAFETY: live connection; the string is owned by it and copied here.
        unsafe { cstr(pq_sys::PQhost(self.raw.as_ptr())) }.unwrap_or("").to_owned()
    }

    pub fn port(&self) -> String {
        // SAFETY: as for host.
        unsafe { cstr(pq_sys::PQport(self.raw.as_ptr())) }.unwrap_or("").to_owned()
    }
}

/// Text parameters as libpq takes them: NUL-terminated copies and the array of pointers to
/// them (null for SQL NULL), valid while this value lives (moving it moves no string). A value
/// cannot hold a NUL byte (PostgreSQL's text types cannot either).
struct Params {
    _owned: Vec<Option<CString>>,
    ptrs: Vec<*const c_char>,
    n: c_int,
}

impl Params {
    fn new(params: &[Option<&str>]) -> Result<Params, Error> {
        let owned: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.map(|v| c_string(v, "query parameter")).transpose())
            .collect::<Result<_, _>>()?;
        let ptrs = owned.iter().map(|p| p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())).collect();
        let n = c_int::try_from(owned.len()).map_err(|_| Error::new("too many query parameters"))?;
        Ok(Params { _owned: owned, ptrs, n })
    }
}

/// A command's result if it succeeded (tuples or command ok), else its error naming `what`.
fn command_ok(res: PgResult, what: &str) -> Result<PgResult, Error> {
    match res.status() {
        Status::TuplesOk | Status::CommandOk => Ok(res),
        _ => Err(res.to_error(what)),
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: we own the connection and finish it exactly once; libpq requires PQfinish
        // even for a connection that failed.
        unsafe { pq_sys::PQfinish(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_is_thread_safe() {
        assert!(is_thread_safe());
    }

    #[test]
    fn parses_conninfo() {
        let kv = conninfo_parse("host=127.0.0.1 port=5433 password=secret").unwrap();
        assert!(kv.contains(&("host".into(), "127.0.0.1".into())));
        assert!(kv.contains(&("password".into(), "secret".into())));
        let kv = conninfo_parse("postgresql://u@h:1/db").unwrap();
        assert!(kv.contains(&("user".into(), "u".into())));
        assert!(conninfo_parse("host='unterminated").is_err());
        assert!(conninfo_parse("nosuchkey=1").unwrap_err().contains("nosuchkey"));
    }

    #[test]
    fn checks_conninfo_as_libpq_parses_it() {
        check_conninfo("host=127.0.0.1 port=5433").unwrap();
        check_conninfo("postgresql://u@h:1/db").unwrap();
        check_conninfo("").unwrap();
        assert_eq!(
            check_conninfo("host 127.0.0.1 port 5605").unwrap_err(),
            "missing \"=\" after \"host\" in connection info string"
        );
        assert!(check_conninfo("mydb").unwrap_err().contains("missing \"=\" after \"mydb\""));
        assert!(check_conninfo("nosuchkey=1").unwrap_err().contains("nosuchkey"));
        assert!(check_conninfo("host='unterminated").is_err());
        assert!(check_conninfo("a\0b").is_err());
    }

    #[test]
    fn connect_timeout_as_libpq_reads_it() {
        assert_eq!(parse_connect_timeout(None), Ok(None));
        assert_eq!(parse_connect_timeout(Some("")), Ok(None));
        assert_eq!(parse_connect_timeout(Some("0")), Ok(None));
        assert_eq!(parse_connect_timeout(Some("-5")), Ok(None));
        assert_eq!(parse_connect_timeout(Some("1")), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_connect_timeout(Some(" 10 ")), Ok(Some(Duration::from_secs(10))));
        assert_eq!(
            parse_connect_timeout(Some("ten")),
            Err("invalid integer value \"ten\" for connection option \"connect_timeout\"".into())
        );
    }

    fn opts(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn get<'a>(o: &'a [(String, String)], key: &str) -> &'a str {
        o.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap()
    }

    #[test]
    fn the_host_that_timed_out_is_dropped() {
        let o = opts(&[("host", "a,b,c"), ("port", "1,2,3"), ("user", "u")]);
        let rest = without_host(&o, "b", "2").unwrap();
        assert_eq!((get(&rest, "host"), get(&rest, "port"), get(&rest, "user")), ("a,c", "1,3", "u"));
        // One port for all hosts stays; the same host twice is told apart by its port.
        let o = opts(&[("host", "h,h"), ("port", "5")]);
        assert_eq!(get(&without_host(&o, "h", "5").unwrap(), "host"), "h");
        let o = opts(&[("host", "127.0.0.1,127.0.0.1"), ("port", "7,8")]);
        let rest = without_host(&o, "127.0.0.1", "7").unwrap();
        assert_eq!((get(&rest, "host"), get(&rest, "port")), ("127.0.0.1", "8"));
        // hostaddr names the host when the host entry is empty.
        let o = opts(&[("host", ",b"), ("hostaddr", "10.0.0.1,10.0.0.2"), ("port", "5")]);
        let rest = without_host(&o, "10.0.0.1", "5").unwrap();
        assert_eq!((get(&rest, "host"), get(&rest, "hostaddr")), ("b", "10.0.0.2"));
        // The last host, or one that is not in the list: nothing left to try.
        assert!(without_host(&opts(&[("host", "a"), ("port", "1")]), "a", "1").is_none());
        assert!(without_host(&opts(&[("host", "a,b"), ("port", "1")]), "c", "1").is_none());
    }

    /// A host that accepts TCP and never answers: with connect_timeout the attempt ends with
    /// "timeout expired" (before the fix it waited for ever); without it, a stop ends it.
    #[test]
    fn connect_timeout_ends_a_silent_host() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let err = Conn::connect(
            &[("host", "127.0.0.1"), ("port", &port), ("connect_timeout", "1"), ("sslmode", "disable")],
            None,
        )
        .err()
        .unwrap();
        assert_eq!(
            err.message,
            format!("connection to server at \"127.0.0.1\", port {port} failed: timeout expired")
        );
        let err = Conn::connect(&[("host", "127.0.0.1"), ("port", &port), ("connect_timeout", "x")], None)
            .err()
            .unwrap();
        assert!(err.message.contains("invalid integer value \"x\""), "{}", err.message);
    }

    #[test]
    fn connection_refused_is_an_error_not_a_panic() {
        // Port 1 on loopback: nothing listens there, so libpq fails fast.
        let err =
            Conn::connect(&[("host", "127.0.0.1"), ("port", "1"), ("dbname", "replication=true")], None)
                .err()
                .expect("connect to port 1 must fail");
        assert!(err.message.contains("127.0.0.1"), "{}", err.message);
        assert!(!err.needs_password && !err.interrupted);
    }

    #[test]
    fn stop_descriptor_interrupts_connect() {
        // A listening socket that never answers the start-up packet keeps libpq waiting for a
        // read; the stop descriptor must end the wait.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let wake = crate::sys::EventFd::new().unwrap();
        wake.notify();
        let err = Conn::connect(&[("host", "127.0.0.1"), ("port", &port)], Some(wake.fd())).err().unwrap();
        assert!(err.interrupted, "{}", err.message);
    }
}
