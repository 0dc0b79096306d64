use std::fmt;

/// An error reported by libpq or by the server through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// libpq's message, trimmed of its trailing newline.
    pub message: String,
    /// The server's SQLSTATE when the error came from the server (`PG_DIAG_SQLSTATE`), so callers
    /// can tell "undefined object" from "insufficient privilege" without matching message text.
    pub sqlstate: Option<String>,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error { message: tidy(&message.into()), sqlstate: None }
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
