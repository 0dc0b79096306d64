use std::fmt;
use std::io;

/// An `io::Error` the way PostgreSQL's `%m` prints it: "No such file or directory", without
/// the " (os error 2)" Rust's `Display` adds. Every message of ours that shows an `io::Error`
/// goes through here (the main crate as `text::os_error`).
pub fn os_error(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text.strip_suffix(&format!(" (os error {code})")).map(str::to_owned).unwrap_or(text),
        None => text,
    }
}

/// An error reported by libpq or by the server through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// libpq's message, trimmed of its trailing newline.
    pub message: String,
    /// The server's SQLSTATE when the error came from the server (`PG_DIAG_SQLSTATE`), so callers
    /// can tell "undefined object" from "insufficient privilege" without matching message text.
    pub sqlstate: Option<String>,
    /// The server's DETAIL and HINT (`PG_DIAG_MESSAGE_DETAIL`, `PG_DIAG_MESSAGE_HINT`), kept
    /// apart from the primary message as PostgreSQL sends them.
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error { message: tidy(&message.into()), sqlstate: None, detail: None, hint: None }
    }
}

/// libpq messages end in a newline and sometimes carry a second "DETAIL"-like line; keep them on
/// one line so every log entry stays one line.
pub(crate) fn tidy(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("ERROR:").map(str::trim_start).unwrap_or(s);
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_like_postgres() {
        assert_eq!(os_error(&io::Error::from_raw_os_error(2)), "No such file or directory");
        assert_eq!(os_error(&io::Error::other("custom")), "custom");
    }

    #[test]
    fn tidy_joins_lines() {
        assert_eq!(
            tidy("ERROR:  replication slot \"x\" does not exist\n"),
            "replication slot \"x\" does not exist"
        );
        assert_eq!(
            tidy("could not connect\n\tIs the server running?\n"),
            "could not connect; Is the server running?"
        );
        assert_eq!(tidy(""), "");
    }
}
