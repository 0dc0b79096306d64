//! The messages of PostgreSQL's streaming replication protocol that travel inside COPY BOTH:
//! XLogData ('w') and primary keepalive ('k') from the server, standby status update ('r')
//! from us. Pure code: parsing never panics, whatever the bytes.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::lsn::Lsn;

/// Seconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_OFFSET_SECS: u64 = 946_684_800;

/// Microseconds since 2000-01-01 UTC (`TimestampTz`), the clock replication messages carry.
pub fn pg_now() -> i64 {
    to_pg_timestamp(SystemTime::now())
}

pub fn to_pg_timestamp(t: SystemTime) -> i64 {
    let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS);
    match t.duration_since(pg_epoch) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// A message received from the server inside the replication COPY stream.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// WAL bytes starting at `start`; `wal_end` is the server's current end of WAL.
    XLogData { start: Lsn, wal_end: Lsn, send_time: i64, data: &'a [u8] },
    /// Keepalive; when `reply_requested` the server wants a status update now (it is about to
    /// time us out, or a synchronous commit is waiting).
    Keepalive { wal_end: Lsn, send_time: i64, reply_requested: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    Empty,
    Truncated { kind: char, len: usize, need: usize },
    UnknownType(u8),
    BadFlag(u8),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Empty => write!(f, "empty replication message from the server"),
            ProtocolError::Truncated { kind, len, need } => {
                write!(f, "streaming header too small: '{kind}' message of {len} bytes, need at least {need}")
            }
            ProtocolError::UnknownType(b) => {
                write!(f, "unrecognized streaming header: \"{}\"", char::from(*b).escape_default())
            }
            ProtocolError::BadFlag(b) => write!(f, "invalid reply-requested flag {b} in keepalive message"),
        }
    }
}

impl std::error::Error for ProtocolError {}

const XLOGDATA_HEADER: usize = 1 + 8 + 8 + 8;
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;
pub const STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl<'a> ServerMessage<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<ServerMessage<'a>, ProtocolError> {
        let (&kind, _) = msg.split_first().ok_or(ProtocolError::Empty)?;
        match kind {
            b'w' => {
                if msg.len() < XLOGDATA_HEADER {
                    return Err(ProtocolError::Truncated {
                        kind: 'w',
                        len: msg.len(),
                        need: XLOGDATA_HEADER,
                    });
                }
                Ok(ServerMessage::XLogData {
                    start: Lsn(be_u64(&msg[1..])),
                    wal_end: Lsn(be_u64(&msg[9..])),
                    send_time: be_u64(&msg[17..]) as i64,
                    data: &msg[XLOGDATA_HEADER..],
                })
            }
            b'k' => {
                // Later versions could append fields; only a short message is an error.
                if msg.len() < KEEPALIVE_LEN {
                    return Err(ProtocolError::Truncated { kind: 'k', len: msg.len(), need: KEEPALIVE_LEN });
                }
                let reply_requested = match msg[17] {
                    0 => false,
                    1 => true,
                    b => return Err(ProtocolError::BadFlag(b)),
                };
                Ok(ServerMessage::Keepalive {
                    wal_end: Lsn(be_u64(&msg[1..])),
                    send_time: be_u64(&msg[9..]) as i64,
                    reply_requested,
                })
            }
            other => Err(ProtocolError::UnknownType(other)),
        }
    }
}

/// Our standby status update. PostgreSQL reads `flush` as "durably on the standby's disk": it
/// is what releases a synchronous commit and what advances a physical slot's restart_lsn, so
/// it must never be ahead of an fsync that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusUpdate {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    pub send_time: i64,
    pub reply_requested: bool,
}

impl StatusUpdate {
    pub fn encode(&self) -> [u8; STATUS_UPDATE_LEN] {
        let mut b = [0u8; STATUS_UPDATE_LEN];
        b[0] = b'r';
        b[1..9].copy_from_slice(&self.write.0.to_be_bytes());
        b[9..17].copy_from_slice(&self.flush.0.to_be_bytes());
        b[17..25].copy_from_slice(&self.apply.0.to_be_bytes());
        b[25..33].copy_from_slice(&self.send_time.to_be_bytes());
        b[33] = u8::from(self.reply_requested);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlogdata(start: u64, end: u64, t: i64, data: &[u8]) -> Vec<u8> {
        let mut m = vec![b'w'];
        m.extend_from_slice(&start.to_be_bytes());
        m.extend_from_slice(&end.to_be_bytes());
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(data);
        m
    }

    #[test]
    fn parses_xlogdata() {
        let m = xlogdata(0x1_0000_0028, 0x1_0000_1000, 42, b"abc");
        assert_eq!(
            ServerMessage::parse(&m).unwrap(),
            ServerMessage::XLogData {
                start: Lsn(0x1_0000_0028),
                wal_end: Lsn(0x1_0000_1000),
                send_time: 42,
                data: b"abc"
            }
        );
        // A header with no payload is legal.
        let m = xlogdata(1, 2, 3, b"");
        assert!(matches!(ServerMessage::parse(&m).unwrap(), ServerMessage::XLogData { data: [], .. }));
    }

    #[test]
    fn parses_keepalive() {
        let mut m = vec![b'k'];
        m.extend_from_slice(&0x3000u64.to_be_bytes());
        m.extend_from_slice(&(-5i64).to_be_bytes());
        m.push(1);
        assert_eq!(
            ServerMessage::parse(&m).unwrap(),
            ServerMessage::Keepalive { wal_end: Lsn(0x3000), send_time: -5, reply_requested: true }
        );
        m[17] = 7;
        assert_eq!(ServerMessage::parse(&m), Err(ProtocolError::BadFlag(7)));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(ServerMessage::parse(b""), Err(ProtocolError::Empty));
        assert_eq!(ServerMessage::parse(b"x123"), Err(ProtocolError::UnknownType(b'x')));
        for len in 0..XLOGDATA_HEADER {
            let m = &xlogdata(1, 2, 3, b"")[..len];
            assert!(ServerMessage::parse(m).is_err(), "len {len}");
        }
        assert!(matches!(ServerMessage::parse(b"k\0\0"), Err(ProtocolError::Truncated { kind: 'k', .. })));
        assert!(ProtocolError::UnknownType(0).to_string().contains("\\u{0}"));
    }

    #[test]
    fn parse_never_panics_on_any_short_input() {
        // Every prefix and single-byte mutation of valid messages: an answer, never a panic.
        let base = [xlogdata(1, 2, 3, b"payload"), {
            let mut k = vec![b'k'];
            k.extend_from_slice(&[0; 16]);
            k.push(0);
            k
        }];
        for m in &base {
            for len in 0..=m.len() {
                let _ = ServerMessage::parse(&m[..len]);
            }
            for i in 0..m.len() {
                for v in [0u8, 1, 0x7F, 0xFF, b'w', b'k'] {
                    let mut c = m.clone();
                    c[i] = v;
                    let _ = ServerMessage::parse(&c);
                }
            }
        }
    }

    #[test]
    fn encodes_status_update() {
        let s = StatusUpdate {
            write: Lsn(0x10),
            flush: Lsn(0x8),
            apply: Lsn::INVALID,
            send_time: 0x0102,
            reply_requested: false,
        };
        let b = s.encode();
        assert_eq!(b[0], b'r');
        assert_eq!(&b[1..9], &0x10u64.to_be_bytes());
        assert_eq!(&b[9..17], &0x8u64.to_be_bytes());
        assert_eq!(&b[17..25], &[0; 8]);
        assert_eq!(&b[25..33], &0x0102i64.to_be_bytes());
        assert_eq!(b[33], 0);
    }

    #[test]
    fn pg_epoch() {
        assert_eq!(to_pg_timestamp(UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS)), 0);
        assert_eq!(to_pg_timestamp(UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS + 1)), 1_000_000);
        assert_eq!(to_pg_timestamp(UNIX_EPOCH), -(PG_EPOCH_OFFSET_SECS as i64) * 1_000_000);
        assert!(pg_now() > 0);
    }
}
