//! Positions and lag as the log and systemd show them: how far the server is (the WAL end its
//! keepalives and XLogData carry), how far behind that the durable position is, in bytes and
//! in seconds, and when a line is due. Pure code: the session core (`crate::session`) feeds it
//! the messages and the clock, and sends what it returns.
//!
//! Seconds come from the server's clock: each message says when the server sent it, so the
//! oldest WAL not yet durable here was on the server at least since the send time of the first
//! message that reached past it. Comparing that with our clock is only as right as the two
//! clocks agree.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::lsn::Lsn;

/// systemd's STATUS= is refreshed at most this often.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// With -v (debug), the positions line this often.
pub const DEBUG_EVERY: Duration = Duration::from_secs(5);
/// At info level, the positions line this often.
pub const INFO_EVERY: Duration = Duration::from_secs(300);
/// Lag past this is logged at once (and again when it is back under half of it).
pub const LAG_THRESHOLD: u64 = 64 << 20;
/// Samples of the server's position are at least this far apart (the seconds' precision).
const SAMPLE_EVERY_US: i64 = 1_000_000;
/// At most this many samples (an hour of backlog at one a second); then the newest widens.
const MAX_SAMPLES: usize = 3600;

/// The positions a tool shows: received from the server, handed to the kernel, durable
/// (pgrecvlogical: confirmed to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    pub received: Lsn,
    pub written: Lsn,
    pub flushed: Lsn,
}

/// How far behind the server the durable position is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub server: Lsn,
    pub bytes: u64,
    /// `None` when no message tells since when (see the module comment).
    pub seconds: Option<f64>,
}

/// The server's position as its messages report it, with when it got there.
#[derive(Debug, Default)]
pub struct ServerClock {
    end: Lsn,
    /// (WAL end, send time): the server had passed the previous sample's end and reached this
    /// one's within the second after this time.
    samples: VecDeque<(Lsn, i64)>,
}

impl ServerClock {
    /// A message said the server's WAL ended at `wal_end` at `send_time` (its clock, µs since
    /// 2000). Positions never go back.
    pub fn saw(&mut self, wal_end: Lsn, send_time: i64) {
        if wal_end <= self.end {
            return;
        }
        self.end = wal_end;
        let full = self.samples.len() >= MAX_SAMPLES;
        match self.samples.back_mut() {
            Some(last) if full || send_time < last.1.saturating_add(SAMPLE_EVERY_US) => {
                // Keeping the older time says the new WAL is older than it is: the seconds
                // err by at most the sample spacing, and never towards "caught up".
                last.0 = wal_end;
            }
            _ => self.samples.push_back((wal_end, send_time)),
        }
    }

    /// The lag of `flushed` at `now` (our clock, µs since 2000); `None` before any message.
    pub fn lag(&mut self, flushed: Lsn, now: i64) -> Option<Lag> {
        if self.end == Lsn::INVALID {
            return None;
        }
        while self.samples.front().is_some_and(|s| s.0 <= flushed) {
            self.samples.pop_front();
        }
        let bytes = self.end.0.saturating_sub(flushed.0);
        let seconds = match (bytes, self.samples.front()) {
            (0, _) => Some(0.0),
            (_, Some(&(_, since))) => Some(now.saturating_sub(since).max(0) as f64 / 1e6),
            (_, None) => None,
        };
        Some(Lag { server: self.end, bytes, seconds })
    }
}

/// `1.0 MB`: bytes in PostgreSQL's units (`pg_size_pretty`: 1 MB is 1024 kB), one decimal.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn behind(lag: &Lag) -> String {
    match lag.seconds {
        Some(s) if lag.bytes > 0 => format!("{}, {s:.1} s behind", format_bytes(lag.bytes)),
        _ => format!("{} behind", format_bytes(lag.bytes)),
    }
}

/// `streaming: received 0/5000000, written 0/5000000, flushed 0/4000000; server at 0/5100000
/// (1.0 MB, 0.4 s behind)`.
pub fn log_line(s: &Shown, lag: Option<&Lag>) -> String {
    let mut line =
        format!("streaming: received {}, written {}, flushed {}", s.received, s.written, s.flushed);
    match lag {
        Some(l) => {
            let _ = write!(line, "; server at {} ({})", l.server, behind(l));
        }
        None => line.push_str("; server position not known yet"),
    }
    line
}

/// systemd's STATUS=: `streaming at 0/4000000, 1.0 MB, 0.4 s behind the server`.
pub fn status_text(s: &Shown, lag: Option<&Lag>) -> String {
    match lag {
        Some(l) => format!("streaming at {}, {} the server", s.flushed, behind(l)),
        None => format!("streaming at {}", s.flushed),
    }
}

/// What is due now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub status: bool,
    /// The positions line, at this level.
    pub line: Option<log::Level>,
    /// The lag just went over the threshold (`Some(true)`) or back under half of it.
    pub crossed: Option<bool>,
}

/// When the next status and positions line are due.
#[derive(Debug)]
pub struct Schedule {
    pub threshold: u64,
    last_status: Option<Instant>,
    last_line: Instant,
    over: bool,
}

impl Schedule {
    pub fn new(now: Instant) -> Schedule {
        Schedule { threshold: LAG_THRESHOLD, last_status: None, last_line: now, over: false }
    }

    fn line_every(debug: bool) -> Duration {
        if debug {
            DEBUG_EVERY
        } else {
            INFO_EVERY
        }
    }

    /// What to send and log at `now`, for a lag of `bytes`, with debug lines on or off.
    pub fn tick(&mut self, now: Instant, bytes: Option<u64>, debug: bool) -> Due {
        let mut due = Due::default();
        if self.last_status.is_none_or(|t| now.duration_since(t) >= STATUS_EVERY) {
            self.last_status = Some(now);
            due.status = true;
        }
        if let Some(b) = bytes {
            if !self.over && b > self.threshold {
                self.over = true;
                due.crossed = Some(true);
            } else if self.over && b < self.threshold / 2 {
                self.over = false;
                due.crossed = Some(false);
            }
        }
        if due.crossed.is_some() {
            due.line = Some(log::Level::Info);
        } else if now.duration_since(self.last_line) >= Self::line_every(debug) {
            due.line = Some(if debug { log::Level::Debug } else { log::Level::Info });
        }
        if due.line.is_some() {
            self.last_line = now;
        }
        due
    }

    /// How long a wait may last before a line or a status is due.
    pub fn until_due(&self, now: Instant, debug: bool, status: bool) -> Duration {
        let line = (self.last_line + Self::line_every(debug)).saturating_duration_since(now);
        match (status, self.last_status) {
            (true, Some(t)) => line.min((t + STATUS_EVERY).saturating_duration_since(now)),
            (true, None) => Duration::ZERO,
            (false, _) => line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0 bytes");
        assert_eq!(format_bytes(1023), "1023 bytes");
        assert_eq!(format_bytes(1024), "1.0 kB");
        assert_eq!(format_bytes(0x100000), "1.0 MB");
        assert_eq!(format_bytes(1536 << 20), "1.5 GB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PB");
    }

    #[test]
    fn lines() {
        let s = Shown { received: Lsn(0x5000000), written: Lsn(0x5000000), flushed: Lsn(0x4000000) };
        let lag = Lag { server: Lsn(0x5100000), bytes: 0x1100000, seconds: Some(1.25) };
        assert_eq!(
            log_line(&s, Some(&lag)),
            "streaming: received 0/5000000, written 0/5000000, flushed 0/4000000; server at 0/5100000 (17.0 MB, 1.2 s behind)"
        );
        let lag = Lag { seconds: None, bytes: 0x100000, ..lag };
        assert_eq!(status_text(&s, Some(&lag)), "streaming at 0/4000000, 1.0 MB behind the server");
        let caught_up = Lag { bytes: 0, seconds: Some(0.0), ..lag };
        assert_eq!(status_text(&s, Some(&caught_up)), "streaming at 0/4000000, 0 bytes behind the server");
        assert_eq!(
            log_line(&s, None),
            "streaming: received 0/5000000, written 0/5000000, flushed 0/4000000; server position not known yet"
        );
        assert_eq!(status_text(&s, None), "streaming at 0/4000000");
    }

    #[test]
    fn seconds_follow_the_oldest_wal_not_durable() {
        let mut c = ServerClock::default();
        assert_eq!(c.lag(Lsn(0), 0), None);
        c.saw(Lsn(100), 10 * S);
        c.saw(Lsn(200), 10 * S + S / 2); // within the second: joins the first sample
        c.saw(Lsn(300), 12 * S);
        c.saw(Lsn(250), 13 * S); // never back
        let l = c.lag(Lsn(50), 20 * S).unwrap();
        assert_eq!((l.server, l.bytes, l.seconds), (Lsn(300), 250, Some(10.0)));
        // Past the first sample: the WAL after 200 reached the server at 12 s.
        let l = c.lag(Lsn(200), 20 * S).unwrap();
        assert_eq!((l.bytes, l.seconds), (100, Some(8.0)));
        let l = c.lag(Lsn(300), 20 * S).unwrap();
        assert_eq!((l.bytes, l.seconds), (0, Some(0.0)));
        // A server clock ahead of ours is no negative lag.
        c.saw(Lsn(400), 30 * S);
        assert_eq!(c.lag(Lsn(300), 25 * S).unwrap().seconds, Some(0.0));
    }

    #[test]
    fn samples_are_bounded() {
        let mut c = ServerClock::default();
        for i in 1..=(MAX_SAMPLES as u64 * 2) {
            c.saw(Lsn(i * 10), i as i64 * S);
        }
        assert_eq!(c.samples.len(), MAX_SAMPLES);
        let l = c.lag(Lsn(0), (MAX_SAMPLES as i64 * 2) * S).unwrap();
        assert_eq!(l.seconds, Some((MAX_SAMPLES as f64 * 2.0) - 1.0), "the oldest sample kept its time");
        // The last sample widened: everything it covers counts from its first time (more lag,
        // never less).
        let l = c.lag(Lsn(MAX_SAMPLES as u64 * 10 + 5), (MAX_SAMPLES as i64 * 2) * S).unwrap();
        assert_eq!(l.seconds, Some(MAX_SAMPLES as f64));
    }

    #[test]
    fn schedule() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let d = s.tick(t0, Some(0), false);
        assert_eq!(d, Due { status: true, line: None, crossed: None });
        assert_eq!(s.tick(t0 + Duration::from_secs(1), Some(0), false), Due::default());
        assert!(s.tick(t0 + STATUS_EVERY, Some(0), false).status);
        // At info level every 5 minutes; at debug level every few seconds.
        assert_eq!(s.tick(t0 + DEBUG_EVERY, Some(0), false).line, None);
        assert_eq!(s.tick(t0 + DEBUG_EVERY, Some(0), true).line, Some(log::Level::Debug));
        assert_eq!(s.tick(t0 + DEBUG_EVERY * 2, Some(0), true).line, Some(log::Level::Debug));
        assert_eq!(s.tick(t0 + DEBUG_EVERY * 2 + INFO_EVERY, Some(0), false).line, Some(log::Level::Info));
        let t1 = t0 + DEBUG_EVERY * 2 + INFO_EVERY;
        // Over the threshold: at once, at info; once; back under half of it: at once again.
        let d = s.tick(t1, Some(LAG_THRESHOLD + 1), false);
        assert_eq!((d.line, d.crossed), (Some(log::Level::Info), Some(true)));
        assert_eq!(s.tick(t1, Some(LAG_THRESHOLD * 2), false).line, None);
        assert_eq!(s.tick(t1, Some(LAG_THRESHOLD / 2 + 1), false).crossed, None, "hysteresis");
        assert_eq!(s.tick(t1, Some(LAG_THRESHOLD / 2 - 1), false).crossed, Some(false));
        assert_eq!(s.tick(t1, None, false), Due::default());
        assert_eq!(s.until_due(t1, false, false), INFO_EVERY);
        assert_eq!(s.until_due(t1, true, false), DEBUG_EVERY);
        assert!(s.until_due(t1, false, true) <= STATUS_EVERY);
    }
}
