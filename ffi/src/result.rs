use std::ffi::{c_int, CStr};
use std::ptr::NonNull;

use pq_sys::ExecStatusType;

use crate::error::{tidy, Error};

/// What a `PGresult` says happened, reduced to the cases this project acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    CommandOk,
    TuplesOk,
    CopyBoth,
    CopyOut,
    /// The server ended its side of a COPY BOTH (CopyDone): ours is still open.
    CopyIn,
    Error,
    /// The end of a pipeline's Sync (`PGRES_PIPELINE_SYNC`).
    PipelineSync,
    /// A statement of a pipeline that the server skipped because an earlier one failed.
    PipelineAborted,
    Other,
}

/// Owner of one `PGresult`, cleared on drop.
pub struct PgResult {
    raw: NonNull<pq_sys::PGresult>,
}

impl PgResult {
    /// Takes ownership of a result returned by libpq, or `None` for the null pointer it returns
    /// when it is out of memory or has no more results.
    pub(crate) fn from_raw(raw: *mut pq_sys::PGresult) -> Option<PgResult> {
        NonNull::new(raw).map(|raw| PgResult { raw })
    }

    pub fn status(&self) -> Status {
        // SAFETY: `raw` is a live result owned by self (cleared only in Drop).
        match unsafe { pq_sys::PQresultStatus(self.raw.as_ptr()) } {
            ExecStatusType::PGRES_COMMAND_OK => Status::CommandOk,
            ExecStatusType::PGRES_TUPLES_OK => Status::TuplesOk,
            ExecStatusType::PGRES_COPY_BOTH => Status::CopyBoth,
            ExecStatusType::PGRES_COPY_OUT => Status::CopyOut,
            ExecStatusType::PGRES_COPY_IN => Status::CopyIn,
            ExecStatusType::PGRES_BAD_RESPONSE
            | ExecStatusType::PGRES_NONFATAL_ERROR
            | ExecStatusType::PGRES_FATAL_ERROR => Status::Error,
            ExecStatusType::PGRES_PIPELINE_SYNC => Status::PipelineSync,
            ExecStatusType::PGRES_PIPELINE_ABORTED => Status::PipelineAborted,
            _ => Status::Other,
        }
    }

    pub fn ntuples(&self) -> usize {
        // SAFETY: live result; PQntuples never fails.
        let n = unsafe { pq_sys::PQntuples(self.raw.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    pub fn nfields(&self) -> usize {
        // SAFETY: live result; PQnfields never fails.
        let n = unsafe { pq_sys::PQnfields(self.raw.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// The text value at (row, col), `None` for SQL NULL or out of range.
    pub fn get(&self, row: usize, col: usize) -> Option<&str> {
        self.get_bytes(row, col).map(|b| std::str::from_utf8(b).unwrap_or(""))
    }

    /// The raw value at (row, col): replication commands return file contents this way.
    pub fn get_bytes(&self, row: usize, col: usize) -> Option<&[u8]> {
        if row >= self.ntuples() || col >= self.nfields() {
            return None;
        }
        let (r, c) = (row as c_int, col as c_int);
        // SAFETY: row and col are in range (checked above), which is PQgetisnull's and
        // PQgetvalue's only precondition. The value lives as long as the result, which the
        // returned borrow of self guarantees; PQgetlength gives its length in bytes.
        unsafe {
            if pq_sys::PQgetisnull(self.raw.as_ptr(), r, c) != 0 {
                return None;
            }
            let p = pq_sys::PQgetvalue(self.raw.as_ptr(), r, c);
            let len = usize::try_from(pq_sys::PQgetlength(self.raw.as_ptr(), r, c)).unwrap_or(0);
            Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
        }
    }

    /// The number of rows a command affected (`PQcmdTuples`), `None` when it does not say.
    pub fn cmd_tuples(&self) -> Option<u64> {
        // SAFETY: live result; PQcmdTuples returns a string owned by the result ("" when the
        // command reports no count).
        unsafe { cstr(pq_sys::PQcmdTuples(self.raw.as_ptr())) }.and_then(|s| s.parse().ok())
    }

    /// The server's SQLSTATE for an error result.
    pub fn sqlstate(&self) -> Option<String> {
        self.error_field(pq_sys::PG_DIAG_SQLSTATE)
    }

    /// One field of an error result (`PG_DIAG_*`), if the server sent it.
    fn error_field(&self, field: u8) -> Option<String> {
        // SAFETY: live result; PQresultErrorField returns null when the field is absent, and the
        // text is owned by the result and copied before we return.
        unsafe { cstr(pq_sys::PQresultErrorField(self.raw.as_ptr(), c_int::from(field))) }.map(str::to_owned)
    }

    pub fn error_message(&self) -> String {
        // SAFETY: live result; the message is owned by the result (empty when there is none).
        tidy(unsafe { cstr(pq_sys::PQresultErrorMessage(self.raw.as_ptr())) }.unwrap_or(""))
    }

    /// This result as an `Error`, for results whose status is not the one expected. A server
    /// error keeps its parts apart: the primary message, its DETAIL and its HINT.
    pub fn to_error(&self, what: &str) -> Error {
        let sqlstate = self.sqlstate();
        if let Some(primary) = self.error_field(pq_sys::PG_DIAG_MESSAGE_PRIMARY) {
            let part = |field| self.error_field(field).map(|t| tidy(&t)).filter(|t| !t.is_empty());
            return Error {
                message: tidy(&primary),
                sqlstate,
                detail: part(pq_sys::PG_DIAG_MESSAGE_DETAIL),
                hint: part(pq_sys::PG_DIAG_MESSAGE_HINT),
            };
        }
        let message = self.error_message();
        let message = if message.is_empty() {
            format!("{what}: unexpected result {:?}", self.status())
        } else {
            message
        };
        Error { message, sqlstate, detail: None, hint: None }
    }
}

impl Drop for PgResult {
    fn drop(&mut self) {
        // SAFETY: we own the result and drop it once; nothing borrows it any more.
        unsafe { pq_sys::PQclear(self.raw.as_ptr()) }
    }
}

/// Borrows a NUL-terminated string owned by libpq; `None` for null or non-UTF-8.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn cstr<'a>(p: *const std::ffi::c_char) -> Option<&'a str> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null, and the caller guarantees termination and lifetime.
        unsafe { CStr::from_ptr(p) }.to_str().ok()
    }
}
