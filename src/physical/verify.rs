//! `pgrestorewal --verify`: a read-only check of a whole archive, before a restore needs it.
//!
//! Per timeline, from its first segment to its newest: every gap, every file of the wrong size,
//! whose first page is not this segment of this cluster (walcheck.rs, as serving it would
//! check), every page header and every record on the chain as PostgreSQL's reader walks it
//! (xlogrecord.rs: CRC-32C and `xl_prev` of each record), the `.partial` that ends the
//! timeline, and history files that contradict the segments. Each segment is streamed in
//! chunks; nothing is opened for writing.
//!
//! A `.partial` ends where its valid WAL ends: there the server's WAL stopped, and PostgreSQL
//! ends recovery at the same place. Only written WAL pages after that point make it damage
//! rather than the end (pgreceivewal writes a segment in order and pads it with zeros).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::logging::Hinted;
use crate::lsn::{valid_segment_size, Lsn};
use crate::physical::restore::{read_meta, RestoreError};
use crate::physical::timeline::{parse_history, HistoryEntry};
use crate::physical::walcheck::{check_stored_segment, StoredSegment, WalCheckError, STORED_HEADER_LEN};
use crate::physical::walfile::{history_file_name, SegmentId, Tli, WalName, PARTIAL_SUFFIX};
use crate::physical::xlogrecord::{RecordError, Stop, WalShape, Walker};
use crate::text::{os_error, push_json_string};

/// Exit status when every timeline is restorable from its first segment to its end.
pub const EXIT_VERIFIED: u8 = 0;
/// Exit status when the check found an error (a gap, a damaged file or record, a history that
/// contradicts the segments): some WAL in the archive cannot be restored.
pub const EXIT_DAMAGED: u8 = 1;

/// Bytes read at a time: a whole number of pages, and of segments' worth of chunks.
const CHUNK: usize = 1 << 20;
const DEFAULT_BLCKSZ: u32 = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The archive is not restorable end to end.
    Error,
    /// Worth knowing, harmless to a restore.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One thing the check found.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    /// For scripts: `gap`, `wrong_size`, `page_header`, `system_identifier`, `crc`,
    /// `prev_link`, `record`, `end_of_wal`, `unreadable`, `partial_not_last`, `history`,
    /// `history_missing`, `leftover_partial`, `empty_partial`, `timeline_continues`.
    pub kind: &'static str,
    pub tli: Option<Tli>,
    pub file: Option<String>,
    pub lsn: Option<Lsn>,
    pub message: String,
}

impl Finding {
    /// What to do about it, PostgreSQL's `errhint` apart from the message, by kind.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self.kind {
            "gap" => "Put the missing segments back into the archive (the base backup's pg_wal may have them).",
            "wrong_size" | "page_header" | "system_identifier" | "crc" | "prev_link" | "record" | "end_of_wal"
            | "unreadable" => "Restore the file from a copy of the archive, or from the server's pg_wal if it still has it.",
            "partial_not_last" => "Check the archive for missing segments.",
            "history_missing" => "Copy the timeline's history file into the archive from the server's pg_wal.",
            "history" => {
                "Compare it with the server's copy in pg_wal: a history file of another history of this cluster does \
                 not belong in this archive."
            }
            "leftover_partial" => "Remove it once no recovery is reading the archive.",
            _ => return None,
        })
    }
}

/// Missing WAL between two files of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub from: Lsn,
    pub to: Lsn,
    pub first_missing: String,
    pub last_missing: String,
}

#[derive(Debug, Clone)]
pub struct TimelineReport {
    pub tli: Tli,
    /// Where its first segment starts.
    pub start: Lsn,
    /// Where its valid WAL ends: after the last record read whole (None: no record read).
    pub end: Option<Lsn>,
    /// How far a recovery from `start` gets: the first gap or damage, else `end`.
    pub restorable_to: Option<Lsn>,
    pub first_file: String,
    pub newest_file: String,
    /// The `.partial` that ends the timeline, if it does.
    pub partial: Option<String>,
    pub files: u64,
    pub records: u64,
    pub gaps: Vec<Gap>,
    pub errors: usize,
}

impl TimelineReport {
    fn empty(tli: Tli, start: Lsn) -> TimelineReport {
        TimelineReport {
            tli,
            start,
            end: None,
            restorable_to: None,
            first_file: String::new(),
            newest_file: String::new(),
            partial: None,
            files: 0,
            records: 0,
            gaps: Vec::new(),
            errors: 0,
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub archive: PathBuf,
    pub system_id: Option<u64>,
    pub seg_size: u64,
    pub timelines: Vec<TimelineReport>,
    pub findings: Vec<Finding>,
    /// WAL bytes read.
    pub bytes: u64,
}

/// Why the check could not run at all (as opposed to what it found).
#[derive(Debug)]
pub enum VerifyError {
    Io { action: &'static str, path: PathBuf, source: io::Error },
    Meta(RestoreError),
    SegmentSize { dir: PathBuf },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Io { action, path, source } => {
                write!(f, "could not {action} \"{}\": {}", path.display(), os_error(source))
            }
            VerifyError::Meta(e) => write!(f, "{e}"),
            VerifyError::SegmentSize { dir } => write!(
                f,
                "cannot tell the WAL segment size of archive \"{}\": it has no metadata file and no segment \
                 with a readable long page header",
                dir.display()
            ),
        }
    }
}

impl Hinted for VerifyError {
    fn detail(&self) -> Option<String> {
        match self {
            VerifyError::Meta(e) => e.detail(),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            VerifyError::Meta(e) => e.hint(),
            _ => None,
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::Io { source, .. } => Some(source),
            VerifyError::Meta(e) => Some(e),
            VerifyError::SegmentSize { .. } => None,
        }
    }
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }

    /// Every timeline restorable from its first segment to its end.
    pub fn restorable(&self) -> bool {
        self.errors() == 0 && !self.timelines.is_empty()
    }

    pub fn exit_code(&self) -> u8 {
        if self.restorable() {
            EXIT_VERIFIED
        } else {
            EXIT_DAMAGED
        }
    }

    /// One line per finding, then one per timeline, then the verdict.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(out, "{}: {}", f.severity.as_str(), f.message);
            if let Some(h) = f.hint() {
                let _ = writeln!(out, "hint: {h}");
            }
        }
        for t in &self.timelines {
            let end = t.end.map_or("no complete record".to_owned(), |e| e.to_string());
            let _ = write!(
                out,
                "timeline {}: {} to {end}, \"{}\" to \"{}\" ({} files, {} records)",
                t.tli, t.start, t.first_file, t.newest_file, t.files, t.records
            );
            if !t.gaps.is_empty() {
                let _ = write!(out, ", {} gaps", t.gaps.len());
            }
            match (t.errors, t.restorable_to) {
                (0, _) => out.push_str(": restorable\n"),
                (n, Some(to)) => {
                    let _ = writeln!(out, ": {n} errors, restorable from {} to {to} only", t.start);
                }
                (n, None) => {
                    let _ = writeln!(out, ": {n} errors, not restorable");
                }
            }
        }
        let (e, w) = (self.errors(), self.warnings());
        let verdict = if self.restorable() {
            "restorable end to end".to_owned()
        } else if self.timelines.is_empty() {
            "holds no WAL".to_owned()
        } else {
            "NOT restorable end to end".to_owned()
        };
        let _ = writeln!(
            out,
            "archive \"{}\": {verdict}: {e} errors, {w} warnings, {} timelines, {} MB of WAL read",
            self.archive.display(),
            self.timelines.len(),
            self.bytes >> 20
        );
        out
    }

    /// One JSON document.
    pub fn to_json(&self) -> String {
        let mut o = String::from("{\"archive\":");
        push_json_string(&mut o, &self.archive.to_string_lossy());
        let _ = write!(
            o,
            ",\"restorable\":{},\"errors\":{},\"warnings\":{},\"system_identifier\":{},\"wal_segment_size\":{},\"bytes_read\":{}",
            self.restorable(),
            self.errors(),
            self.warnings(),
            self.system_id.map_or("null".to_owned(), |s| format!("\"{s}\"")),
            self.seg_size,
            self.bytes
        );
        o.push_str(",\"timelines\":[");
        for (i, t) in self.timelines.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            push_timeline_json(&mut o, t);
        }
        o.push_str("],\"findings\":[");
        for (i, f) in self.findings.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            push_finding_json(&mut o, f);
        }
        o.push_str("]}\n");
        o
    }
}

fn push_timeline_json(o: &mut String, t: &TimelineReport) {
    let _ = write!(o, "{{\"timeline\":{},\"start\":", t.tli);
    push_lsn(o, Some(t.start));
    o.push_str(",\"end\":");
    push_lsn(o, t.end);
    o.push_str(",\"restorable_to\":");
    push_lsn(o, t.restorable_to);
    o.push_str(",\"first_file\":");
    push_json_string(o, &t.first_file);
    o.push_str(",\"newest_file\":");
    push_json_string(o, &t.newest_file);
    o.push_str(",\"partial\":");
    match &t.partial {
        Some(p) => push_json_string(o, p),
        None => o.push_str("null"),
    }
    let _ = write!(
        o,
        ",\"files\":{},\"records\":{},\"errors\":{},\"restorable\":{},\"gaps\":[",
        t.files,
        t.records,
        t.errors,
        t.errors == 0
    );
    for (j, g) in t.gaps.iter().enumerate() {
        if j > 0 {
            o.push(',');
        }
        o.push_str("{\"from\":");
        push_lsn(o, Some(g.from));
        o.push_str(",\"to\":");
        push_lsn(o, Some(g.to));
        o.push_str(",\"first_missing\":");
        push_json_string(o, &g.first_missing);
        o.push_str(",\"last_missing\":");
        push_json_string(o, &g.last_missing);
        o.push('}');
    }
    o.push_str("]}");
}

fn push_finding_json(o: &mut String, f: &Finding) {
    let _ = write!(o, "{{\"severity\":\"{}\",\"kind\":\"{}\",\"timeline\":", f.severity.as_str(), f.kind);
    match f.tli {
        Some(t) => {
            let _ = write!(o, "{t}");
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"file\":");
    match &f.file {
        Some(n) => push_json_string(o, n),
        None => o.push_str("null"),
    }
    o.push_str(",\"lsn\":");
    push_lsn(o, f.lsn);
    o.push_str(",\"message\":");
    push_json_string(o, &f.message);
    o.push_str(",\"hint\":");
    match f.hint() {
        Some(h) => push_json_string(o, h),
        None => o.push_str("null"),
    }
    o.push('}');
}

fn push_lsn(o: &mut String, lsn: Option<Lsn>) {
    match lsn {
        Some(l) => {
            let _ = write!(o, "\"{l}\"");
        }
        None => o.push_str("null"),
    }
}

/// The files of one segment of one timeline.
#[derive(Debug, Default, Clone)]
struct SegFiles {
    complete: Option<(String, u64)>,
    partial: Option<(String, u64)>,
}

/// What the walk of one timeline leaves for the history checks.
struct Walked {
    report: TimelineReport,
    first_segno: u64,
    newest_segno: u64,
    /// Watched switch points where a record of this timeline ends.
    seen: Vec<Lsn>,
    first_record_at: Option<Lsn>,
}

struct Ctx<'a> {
    dir: &'a Path,
    shape: WalShape,
    findings: Vec<Finding>,
    bytes: u64,
    buf: Vec<u8>,
}

impl Ctx<'_> {
    fn add(
        &mut self,
        severity: Severity,
        kind: &'static str,
        tli: Tli,
        file: Option<&str>,
        lsn: Option<Lsn>,
        message: String,
    ) {
        self.findings.push(Finding {
            severity,
            kind,
            tli: Some(tli),
            file: file.map(str::to_owned),
            lsn,
            message,
        });
    }
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> VerifyError + 'p {
    move |source| VerifyError::Io { action, path: path.to_path_buf(), source }
}

/// Checks the archive in `dir`, reading only.
pub fn verify(dir: &Path) -> Result<Report, VerifyError> {
    let (wal, histories) = list_archive(dir)?;
    let meta = read_meta(dir).map_err(VerifyError::Meta)?;
    let votes = header_votes(dir, &wal);
    let majority = votes.iter().max_by_key(|(_, &n)| n).map(|(&k, _)| k);
    let (system_id, seg_size) = match (meta, majority) {
        (Some(m), _) => (Some(m.system_id), m.seg_size),
        (None, Some((sysid, seg, _))) if valid_segment_size(seg) => (Some(sysid), seg),
        (None, _) if wal.is_empty() => (None, 16 << 20),
        (None, _) => return Err(VerifyError::SegmentSize { dir: dir.to_path_buf() }),
    };
    let blcksz = voted_blcksz(&votes, system_id, seg_size);

    let mut ctx = Ctx {
        dir,
        shape: WalShape { seg_size, blcksz, system_id },
        findings: Vec::new(),
        bytes: 0,
        buf: vec![0u8; CHUNK.min(seg_size as usize)],
    };
    let timelines = group_by_timeline(&mut ctx, wal);
    let parsed = parse_histories(&mut ctx, &histories);
    // Switch points to look for on each parent timeline.
    let mut watch: BTreeMap<Tli, Vec<Lsn>> = BTreeMap::new();
    for entries in parsed.values() {
        if let Some(last) = entries.last() {
            watch.entry(last.tli).or_default().push(last.switchpoint);
        }
    }

    let mut walked: BTreeMap<Tli, Walked> = BTreeMap::new();
    for (&tli, files) in &timelines {
        let w = walk_timeline(&mut ctx, tli, files, watch.get(&tli).map_or(&[][..], |v| v));
        walked.insert(tli, w);
    }

    check_histories(&mut ctx, &histories, &parsed, &timelines, &walked);

    let reports: Vec<TimelineReport> =
        walked.into_values().map(|w| with_restorable_to(w.report, &ctx.findings)).collect();
    let mut findings = ctx.findings;
    findings.sort_by_key(|f| (f.tli, f.lsn, f.severity == Severity::Warning));
    if reports.is_empty() {
        findings.push(Finding {
            severity: Severity::Error,
            kind: "empty",
            tli: None,
            file: None,
            lsn: None,
            message: format!("archive \"{}\" holds no WAL segment", dir.display()),
        });
    }
    Ok(Report {
        archive: dir.to_path_buf(),
        system_id,
        seg_size,
        timelines: reports,
        findings,
        bytes: ctx.bytes,
    })
}

/// WAL files (name, parsed name, size) sorted by name, and history files by timeline.
type Listing = (Vec<(String, WalName, u64)>, BTreeMap<Tli, String>);

fn list_archive(dir: &Path) -> Result<Listing, VerifyError> {
    let mut wal: Vec<(String, WalName, u64)> = Vec::new();
    let mut histories: BTreeMap<Tli, String> = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err("open archive directory", dir))? {
        let entry = entry.map_err(io_err("read archive directory", dir))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        match WalName::parse(&name) {
            Some(WalName::History { tli }) => {
                histories.insert(tli, name);
            }
            Some(w) => {
                let path = entry.path();
                let size = match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    // Renamed by a live archiver since the directory was read (a `.partial`
                    // completed): what it became is in this listing or after its end.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("stat file", &path)(e)),
                };
                wal.push((name, w, size));
            }
            None => {}
        }
    }
    wal.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((wal, histories))
}

/// Without metadata (an archive of pg_receivewal), the cluster is what most segments' long
/// headers say: 40 bytes of each file, counted by (system identifier, segment size, page size).
fn header_votes(dir: &Path, wal: &[(String, WalName, u64)]) -> BTreeMap<(u64, u64, u32), usize> {
    let mut votes: BTreeMap<(u64, u64, u32), usize> = BTreeMap::new();
    for (name, _, size) in wal {
        if *size < STORED_HEADER_LEN as u64 {
            continue;
        }
        let path = dir.join(name);
        let mut h = [0u8; STORED_HEADER_LEN];
        if File::open(&path).and_then(|mut f| f.read_exact(&mut h)).is_err() {
            continue;
        }
        let long = u16::from_le_bytes([h[2], h[3]]) & 2 != 0;
        if !long || !matches!(h[1], 0xD0 | 0xD1) {
            continue;
        }
        let sysid = u64::from_le_bytes(h[24..32].try_into().expect("8 bytes"));
        let seg = u64::from(u32::from_le_bytes(h[32..36].try_into().expect("4 bytes")));
        let blck = u32::from_le_bytes(h[36..40].try_into().expect("4 bytes"));
        *votes.entry((sysid, seg, blck)).or_default() += 1;
    }
    votes
}

/// The page size most headers of this cluster agree on. XLOG_BLCKSZ is a power of two from
/// 1 kB to 64 kB (configure's --with-wal-blocksize).
fn voted_blcksz(votes: &BTreeMap<(u64, u64, u32), usize>, system_id: Option<u64>, seg_size: u64) -> u32 {
    votes
        .iter()
        .filter(|((s, seg, b), _)| {
            Some(*s) == system_id && *seg == seg_size && b.is_power_of_two() && (1024..=65536).contains(b)
        })
        .max_by_key(|(_, &n)| n)
        .map_or(DEFAULT_BLCKSZ, |((_, _, b), _)| *b)
}

fn group_by_timeline(
    ctx: &mut Ctx<'_>,
    wal: Vec<(String, WalName, u64)>,
) -> BTreeMap<Tli, BTreeMap<u64, SegFiles>> {
    let seg_size = ctx.shape.seg_size;
    let mut timelines: BTreeMap<Tli, BTreeMap<u64, SegFiles>> = BTreeMap::new();
    for (name, w, size) in wal {
        let Some(SegmentId { tli, segno }) = w.segment(seg_size) else {
            ctx.findings.push(Finding {
                severity: Severity::Warning,
                kind: "not_a_segment",
                tli: None,
                file: Some(name.clone()),
                lsn: None,
                message: format!("\"{name}\" names no segment of {seg_size}-byte segments; ignored"),
            });
            continue;
        };
        let files = timelines.entry(tli).or_default().entry(segno).or_default();
        if w.is_partial() {
            files.partial = Some((name, size));
        } else {
            files.complete = Some((name, size));
        }
    }
    timelines
}

fn parse_histories(ctx: &mut Ctx<'_>, histories: &BTreeMap<Tli, String>) -> BTreeMap<Tli, Vec<HistoryEntry>> {
    let mut parsed: BTreeMap<Tli, Vec<HistoryEntry>> = BTreeMap::new();
    for (&tli, name) in histories {
        let path = ctx.dir.join(name);
        let content = match fs::read(&path) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("could not read history file \"{name}\": {}", os_error(&e));
                ctx.add(Severity::Error, "unreadable", tli, Some(name), None, msg);
                continue;
            }
        };
        match parse_history(&content, tli) {
            Ok(entries) => {
                parsed.insert(tli, entries);
            }
            Err(e) => {
                let msg = format!("history file \"{name}\" is damaged: {e}");
                ctx.add(Severity::Error, "history", tli, Some(name), None, msg);
            }
        }
    }
    parsed
}

/// Counts the timeline's errors and sets how far a recovery from its start gets: to its first
/// error or the end of its WAL, whichever is earlier.
fn with_restorable_to(mut report: TimelineReport, findings: &[Finding]) -> TimelineReport {
    let tli = report.tli;
    let errors: Vec<&Finding> =
        findings.iter().filter(|f| f.tli == Some(tli) && f.severity == Severity::Error).collect();
    report.errors = errors.len();
    let first_problem = errors.iter().filter_map(|f| f.lsn).min();
    report.restorable_to = match (first_problem, report.end) {
        (Some(p), Some(e)) => Some(p.min(e)),
        (Some(p), None) => Some(p),
        (None, e) => e,
    };
    if report.restorable_to.is_some_and(|r| r <= report.start) {
        report.restorable_to = None;
    }
    report
}

fn walk_timeline(ctx: &mut Ctx<'_>, tli: Tli, files: &BTreeMap<u64, SegFiles>, watch: &[Lsn]) -> Walked {
    let seg_size = ctx.shape.seg_size;
    let mut walker = Walker::new(ctx.shape);
    for &w in watch {
        walker.watch(w);
    }
    let first = *files.keys().next().expect("a timeline has files");
    let newest = *files.keys().next_back().expect("a timeline has files");
    let name_of = |segno: u64| SegmentId { tli, segno }.file_name(seg_size);
    let mut report = TimelineReport::empty(tli, Lsn(first * seg_size));
    let mut first_record_at = None;
    let mut expected = first;
    for (&segno, f) in files {
        let start = Lsn(segno * seg_size);
        if segno > expected {
            report_gap(ctx, &mut report, &name_of, expected, segno);
            walker.restart();
        }
        expected = segno + 1;
        let is_newest = segno == newest;
        let (name, size, partial) = segment_file(ctx, tli, f, start);
        report.files += 1;
        if report.first_file.is_empty() {
            report.first_file = name.clone();
        }
        report.newest_file = name.clone();
        if partial {
            if is_newest {
                report.partial = Some(name.clone());
            } else {
                let msg = format!(
                    "\"{name}\" is a .partial segment but later WAL of timeline {tli} follows it (\"{}\"): the WAL \
                     after its end is missing",
                    report_later(files, segno, &name_of)
                );
                ctx.add(Severity::Error, "partial_not_last", tli, Some(&name), Some(start), msg);
            }
        }
        if size != seg_size {
            if partial && size == 0 {
                empty_partial(ctx, tli, &name, start, is_newest);
            } else {
                let msg = format!(
                    "\"{name}\" has {size} bytes, but the archive's segment size is {seg_size} bytes"
                );
                ctx.add(Severity::Error, "wrong_size", tli, Some(&name), Some(start), msg);
            }
            walker.restart();
            continue;
        }
        let walked = walk_segment_or_reread(ctx, &mut walker, &mut report, &name, start, partial, is_newest);
        match walked {
            Ok(SegmentEnd::Whole) => {}
            Ok(SegmentEnd::Empty) => {
                empty_partial(ctx, tli, &name, start, is_newest);
                walker.restart();
            }
            Ok(SegmentEnd::EndOfWal) => walker.restart(),
            Ok(SegmentEnd::Broken) => walker.restart(),
            Err(e) => {
                let msg = format!("could not read \"{name}\": {}", os_error(&e));
                ctx.add(Severity::Error, "unreadable", tli, Some(&name), Some(start), msg);
                walker.restart();
            }
        }
        if first_record_at.is_none() && walker.records() > 0 {
            first_record_at = Some(start);
        }
        report.end = walker.end().or(report.end);
    }
    report.records = walker.records();
    Walked { report, first_segno: first, newest_segno: newest, seen: walker.seen().to_vec(), first_record_at }
}

/// Reports the segments missing from `expected` up to (not including) `segno`.
fn report_gap(
    ctx: &mut Ctx<'_>,
    report: &mut TimelineReport,
    name_of: &dyn Fn(u64) -> String,
    expected: u64,
    segno: u64,
) {
    let (seg_size, tli) = (ctx.shape.seg_size, report.tli);
    let (from, to) = (Lsn(expected * seg_size), Lsn(segno * seg_size));
    let gap = Gap { from, to, first_missing: name_of(expected), last_missing: name_of(segno - 1) };
    let msg = format!(
        "timeline {tli}: WAL from {from} to {to} is missing (segments \"{}\" to \"{}\")",
        gap.first_missing, gap.last_missing
    );
    ctx.add(Severity::Error, "gap", tli, Some(&gap.first_missing.clone()), Some(from), msg);
    report.gaps.push(gap);
}

/// Which file of a segment to read (name, size, whether it is the `.partial`): the complete
/// one if there is one, and a `.partial` next to it is a leftover.
fn segment_file(ctx: &mut Ctx<'_>, tli: Tli, f: &SegFiles, start: Lsn) -> (String, u64, bool) {
    match (&f.complete, &f.partial) {
        (Some((c, cs)), Some((p, _))) => {
            let msg = format!("\"{p}\" is a leftover next to the complete segment \"{c}\"");
            ctx.add(Severity::Warning, "leftover_partial", tli, Some(p), Some(start), msg);
            (c.clone(), *cs, false)
        }
        (Some((c, cs)), None) => (c.clone(), *cs, false),
        (None, Some((p, ps))) => (p.clone(), *ps, true),
        (None, None) => unreachable!("a segment entry has a file"),
    }
}

/// Walks one segment; the newest `.partial` is read once more if it looked damaged or vanished.
fn walk_segment_or_reread(
    ctx: &mut Ctx<'_>,
    walker: &mut Walker,
    report: &mut TimelineReport,
    name: &str,
    start: Lsn,
    partial: bool,
    is_newest: bool,
) -> io::Result<SegmentEnd> {
    let tli = report.tli;
    let (saved, found) = (walker.clone(), ctx.findings.len());
    let walked = walk_segment(ctx, walker, tli, name, start, partial);
    let live = matches!(&walked, Ok(SegmentEnd::Broken))
        || matches!(&walked, Err(e) if e.kind() == io::ErrorKind::NotFound);
    if !(partial && is_newest && live) {
        return walked;
    }
    // A live archiver may have been writing this file while it was read (WAL appended after a
    // part already read looks like written pages after the end), or renamed it complete: read
    // it once more, under its complete name if it has one now.
    ctx.findings.truncate(found);
    *walker = saved;
    let complete = name.trim_end_matches(PARTIAL_SUFFIX).to_owned();
    let (name, partial) = if ctx.dir.join(&complete).exists() {
        report.partial = None;
        report.newest_file = complete.clone();
        (complete, false)
    } else {
        (name.to_owned(), true)
    };
    walk_segment(ctx, walker, tli, &name, start, partial)
}

fn report_later(files: &BTreeMap<u64, SegFiles>, segno: u64, name_of: &dyn Fn(u64) -> String) -> String {
    files.range(segno + 1..).next().map_or_else(
        || name_of(segno + 1),
        |(s, f)| f.complete.as_ref().or(f.partial.as_ref()).map_or_else(|| name_of(*s), |(n, _)| n.clone()),
    )
}

fn empty_partial(ctx: &mut Ctx<'_>, tli: Tli, name: &str, start: Lsn, newest: bool) {
    if newest {
        let msg = format!("\"{name}\" holds no WAL yet (the archiver created it, nothing was written to it)");
        ctx.add(Severity::Warning, "empty_partial", tli, Some(name), Some(start), msg);
    }
}

enum SegmentEnd {
    /// Read to its end; the chain goes on into the next segment.
    Whole,
    /// A `.partial` that was never written.
    Empty,
    /// A `.partial` whose valid WAL ends before its end.
    EndOfWal,
    /// Damage was reported; the chain starts again at the next segment.
    Broken,
}

fn walk_segment(
    ctx: &mut Ctx<'_>,
    walker: &mut Walker,
    tli: Tli,
    name: &str,
    start: Lsn,
    partial: bool,
) -> io::Result<SegmentEnd> {
    let seg_size = ctx.shape.seg_size;
    let blcksz = ctx.shape.blcksz as usize;
    let mut f = File::open(ctx.dir.join(name))?;
    let mut buf = std::mem::take(&mut ctx.buf);
    let result = (|| {
        let mut at = 0u64;
        let mut stopped: Option<(Stop, u64)> = None;
        while at < seg_size {
            f.read_exact(&mut buf)?;
            ctx.bytes += buf.len() as u64;
            if at == 0 {
                let header = &buf[..STORED_HEADER_LEN];
                if header.iter().all(|&b| b == 0) && partial {
                    return Ok(SegmentEnd::Empty);
                }
                let stored = StoredSegment { tli, start, seg_size, system_id: ctx.shape.system_id };
                if let Err(problem) = check_stored_segment(header, &stored) {
                    let kind = match problem {
                        WalCheckError::SystemId { .. } => "system_identifier",
                        _ => "page_header",
                    };
                    let msg = format!(
                        "\"{name}\" is not WAL of this segment of this archive: {}",
                        stored_problem(&problem)
                    );
                    ctx.add(Severity::Error, kind, tli, Some(name), Some(start), msg);
                    return Ok(SegmentEnd::Broken);
                }
            }
            for (i, page) in buf.chunks_exact(blcksz).enumerate() {
                let lsn = Lsn(start.0 + at + (i * blcksz) as u64);
                match &stopped {
                    None => {
                        if let Err(stop) = walker.page(lsn, page, tli) {
                            if !partial {
                                report_stop(ctx, tli, name, &stop, None);
                                return Ok(SegmentEnd::Broken);
                            }
                            stopped = Some((stop, lsn.0));
                        }
                    }
                    // After the end of the WAL in a .partial: only unwritten pages may follow.
                    Some((stop, last_page)) => {
                        if lsn.0 > *last_page && walker.is_wal_page(lsn, page) {
                            report_stop(ctx, tli, name, stop, Some(lsn));
                            return Ok(SegmentEnd::Broken);
                        }
                    }
                }
            }
            at += buf.len() as u64;
        }
        Ok(if stopped.is_some() { SegmentEnd::EndOfWal } else { SegmentEnd::Whole })
    })();
    ctx.buf = buf;
    result
}

fn report_stop(ctx: &mut Ctx<'_>, tli: Tli, name: &str, stop: &Stop, followed_by: Option<Lsn>) {
    let what = if stop.error.page().is_some() { "WAL page" } else { "record" };
    let mut msg = match &stop.error {
        RecordError::ZeroLength => format!(
            "\"{name}\": the WAL ends at {} (a record of length zero), before the end of the segment",
            stop.at
        ),
        e => format!("\"{name}\": {what} at {}: {e}", stop.at),
    };
    match followed_by {
        Some(page) => {
            let _ = write!(msg, "; written WAL follows at {page}, so this is damage, not the end of the WAL");
        }
        None if matches!(stop.error, RecordError::ZeroLength) => {
            msg.push_str(": the segment is complete, so WAL after it is missing or damaged");
        }
        None => {}
    }
    ctx.add(Severity::Error, stop.error.kind(), tli, Some(name), Some(stop.at), msg);
}

fn stored_problem(p: &WalCheckError) -> String {
    match p {
        WalCheckError::SystemId { found, expected, .. } => format!(
            "it is WAL of database system {found}, but the archive holds WAL of database system {expected}"
        ),
        WalCheckError::Timeline { found, file_tli, .. } => {
            format!("its first page says timeline {found}, but the file name says timeline {file_tli}")
        }
        WalCheckError::PageAddress { page, found } => {
            format!("its first page has address {found}, but the file name says {page}")
        }
        other => other.to_string(),
    }
}

/// The history files against the segments: each switch point must be where a record of the
/// parent timeline ends, the child's WAL must begin at the segment of its switch point with a
/// copy of the parent's WAL up to it, and a child's ancestry must be its parent's.
fn check_histories(
    ctx: &mut Ctx<'_>,
    histories: &BTreeMap<Tli, String>,
    parsed: &BTreeMap<Tli, Vec<HistoryEntry>>,
    timelines: &BTreeMap<Tli, BTreeMap<u64, SegFiles>>,
    walked: &BTreeMap<Tli, Walked>,
) {
    for &tli in walked.keys() {
        if tli > 1 && !histories.contains_key(&tli) {
            let msg = format!(
                "timeline {tli} has WAL but the archive has no history file \"{}\": recovery cannot follow it",
                history_file_name(tli)
            );
            ctx.add(Severity::Error, "history_missing", tli, None, Some(walked[&tli].report.start), msg);
        }
    }
    for (&tli, entries) in parsed {
        let Some(&HistoryEntry { tli: parent, switchpoint: at }) = entries.last() else { continue };
        let branch = Branch { tli, parent, at, hname: &histories[&tli] };
        if let (Some(grand), true) = (parsed.get(&parent), parent > 1) {
            if grand[..] != entries[..entries.len() - 1] {
                let msg = format!(
                    "history file \"{}\" does not list the ancestry of timeline {parent} as \"{}\" does",
                    branch.hname,
                    history_file_name(parent)
                );
                ctx.add(Severity::Error, "history", tli, Some(branch.hname), Some(at), msg);
            }
        }
        if let Some(p) = walked.get(&parent) {
            check_switch_on_parent(ctx, &branch, p);
        }
        let Some(child) = walked.get(&tli) else { continue };
        if !check_child_start(ctx, &branch, child, walked.get(&parent)) {
            continue;
        }
        check_switch_copy(ctx, &branch, timelines);
    }
}

/// One history file's last line: timeline `tli` branched off `parent` at `at`.
struct Branch<'a> {
    tli: Tli,
    parent: Tli,
    at: Lsn,
    hname: &'a str,
}

/// The switch point must be where a record of the parent ends; WAL of the parent after it is
/// worth a warning (recovery to the child does not replay it).
fn check_switch_on_parent(ctx: &mut Ctx<'_>, b: &Branch<'_>, p: &Walked) {
    let Branch { tli, parent, at, hname } = *b;
    let ends_in_range = p.first_record_at.is_some_and(|f| f < at) && p.report.end.is_some_and(|e| at <= e);
    // Damage before the switch point broke the chain there: it is reported already.
    let broken_before = ctx
        .findings
        .iter()
        .any(|f| f.tli == Some(parent) && f.severity == Severity::Error && f.lsn.is_some_and(|l| l <= at));
    if ends_in_range && !broken_before && !p.seen.contains(&at) {
        let msg = format!(
            "history file \"{hname}\" says timeline {tli} branched off timeline {parent} at {at}, but no record \
             of timeline {parent} in the archive ends there"
        );
        ctx.add(Severity::Error, "history", tli, Some(hname), Some(at), msg);
    }
    if p.newest_segno > at.segment(ctx.shape.seg_size) {
        let msg = format!(
            "timeline {parent} has WAL after {at}, where timeline {tli} branched off it (\"{hname}\"); recovery \
             to timeline {tli} does not replay it"
        );
        ctx.add(Severity::Warning, "timeline_continues", parent, Some(hname), Some(at), msg);
    }
}

/// The child's WAL must not begin before the segment of its switch point, and the parent's
/// must reach where it begins. False when the child starts too early (nothing more to compare).
fn check_child_start(
    ctx: &mut Ctx<'_>,
    b: &Branch<'_>,
    child: &Walked,
    parent_walk: Option<&Walked>,
) -> bool {
    let Branch { tli, parent, at, hname } = *b;
    let seg_size = ctx.shape.seg_size;
    if child.first_segno < at.segment(seg_size) {
        let msg = format!(
            "timeline {tli} has WAL from {}, before {at} where \"{hname}\" says it branched off timeline {parent}",
            child.report.start
        );
        ctx.add(Severity::Error, "history", tli, Some(hname), Some(child.report.start), msg);
        return false;
    }
    // Where the child's WAL begins, the parent's must reach (the child's first segment
    // holds a copy of the parent's WAL before the switch point, and nothing earlier).
    let child_start = child.report.start.min(at);
    if let Some(p) = parent_walk {
        let reaches =
            p.report.end.is_some_and(|e| e >= child_start) || p.first_segno * seg_size >= child_start.0;
        if !reaches {
            let from = p.report.end.unwrap_or(p.report.start);
            let msg = format!(
                "WAL of timeline {parent} from {from} to {child_start} is missing: timeline {parent} ends there \
                 in the archive, but \"{hname}\" says it went on to {at} and timeline {tli} starts at {}",
                child.report.start
            );
            ctx.add(Severity::Error, "history", tli, Some(hname), Some(from), msg);
        }
    }
    true
}

/// The copy: the child's segment of the switch point begins with the parent's WAL.
fn check_switch_copy(ctx: &mut Ctx<'_>, b: &Branch<'_>, timelines: &BTreeMap<Tli, BTreeMap<u64, SegFiles>>) {
    let Branch { tli, parent, at, hname } = *b;
    let seg_size = ctx.shape.seg_size;
    let switch_seg = at.segment(seg_size);
    let off = at.segment_offset(seg_size);
    let child_file = timelines[&tli].get(&switch_seg).and_then(pick);
    let parent_file = timelines.get(&parent).and_then(|t| t.get(&switch_seg)).and_then(pick);
    let (Some(c), Some(p), true) = (child_file, parent_file, off > 0) else { return };
    let diff = match first_difference(ctx.dir, &c, &p, off) {
        Ok(d) => d,
        Err(e) => {
            // A file too short is reported as such already; anything else is news.
            if !matches!(&e, VerifyError::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof)
            {
                let msg = format!("could not compare \"{c}\" with \"{p}\": {e}");
                ctx.add(Severity::Error, "unreadable", tli, Some(&c), Some(at), msg);
            }
            return;
        }
    };
    if let Some(diff) = diff {
        let msg = format!(
            "\"{c}\" does not begin with a copy of \"{p}\" up to the switch point {at} of \"{hname}\": they \
             differ at {}",
            Lsn(switch_seg * seg_size + diff)
        );
        ctx.add(Severity::Error, "history", tli, Some(&c), Some(Lsn(switch_seg * seg_size + diff)), msg);
    }
}

fn pick(f: &SegFiles) -> Option<String> {
    f.complete.as_ref().or(f.partial.as_ref()).map(|(n, _)| n.clone())
}

/// The first offset below `len` where files `a` and `b` of the archive differ.
fn first_difference(dir: &Path, a: &str, b: &str, len: u64) -> Result<Option<u64>, VerifyError> {
    let open = |n: &str| {
        let p = dir.join(n);
        File::open(&p).map_err(|source| VerifyError::Io { action: "open file", path: p, source })
    };
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut at = 0u64;
    while at < len {
        let n = CHUNK.min((len - at) as usize);
        let read = |f: &mut File, buf: &mut [u8], name: &str| {
            f.read_exact(buf).map_err(|source| VerifyError::Io {
                action: "read file",
                path: dir.join(name),
                source,
            })
        };
        read(&mut fa, &mut ba[..n], a)?;
        read(&mut fb, &mut bb[..n], b)?;
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physical::xlogrecord::testwal::{Wal, SEG, SYSID};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "pgrw-verify-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            fs::write(
                p.join(".pgreceivewal.meta"),
                format!("system_identifier={SYSID}\nwal_segment_size={SEG}\n"),
            )
            .unwrap();
            Dir(p)
        }

        /// Segments `first..first + n` of timeline-1 WAL in files of timeline `tli`, full to
        /// the end (the last record goes on into the next segment), or the last one a
        /// `.partial` whose second half was never written (zeros) when `partial`.
        fn wal(&self, tli: Tli, first: u64, n: u64, partial: bool) -> Wal {
            let mut w = Wal::new(first * SEG);
            let end = (first + n) * SEG - if partial { SEG / 2 } else { 0 };
            while w.pos < end {
                w.record(10, 0, 500);
            }
            let len = w.bytes.len().max((n * SEG) as usize);
            w.bytes.resize(len, 0);
            for i in 0..n {
                let id = SegmentId { tli, segno: first + i };
                let name = if partial && i == n - 1 { id.partial_name(SEG) } else { id.file_name(SEG) };
                let at = (i * SEG) as usize;
                fs::write(self.0.join(name), &w.bytes[at..at + SEG as usize]).unwrap();
            }
            w
        }

        fn name(&self, tli: Tli, segno: u64) -> String {
            SegmentId { tli, segno }.file_name(SEG)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn kinds(r: &Report) -> Vec<(&'static str, Severity)> {
        r.findings.iter().map(|f| (f.kind, f.severity)).collect()
    }

    #[test]
    fn a_whole_archive_is_restorable() {
        let d = Dir::new();
        let w = d.wal(1, 3, 4, true);
        let r = verify(&d.0).unwrap();
        assert!(r.restorable(), "{}", r.to_text());
        assert_eq!(r.exit_code(), EXIT_VERIFIED);
        let t = &r.timelines[0];
        assert_eq!((t.start, t.end, t.restorable_to), (Lsn(3 * SEG), Some(Lsn(w.pos)), Some(Lsn(w.pos))));
        // The first record of segment 3 is the first of all; all of them are read.
        assert_eq!(t.records, w.starts.len() as u64);
        assert_eq!(t.partial.as_deref(), Some("000000010000000000000006.partial"));
        assert_eq!(r.bytes, 4 * SEG);
        assert!(r
            .to_text()
            .ends_with("restorable end to end: 0 errors, 0 warnings, 1 timelines, 4 MB of WAL read\n"));
    }

    #[test]
    fn a_partial_before_later_wal_and_a_leftover() {
        let d = Dir::new();
        d.wal(1, 3, 4, false);
        fs::rename(d.0.join(d.name(1, 4)), d.0.join(format!("{}.partial", d.name(1, 4)))).unwrap();
        fs::copy(d.0.join(d.name(1, 5)), d.0.join(format!("{}.partial", d.name(1, 5)))).unwrap();
        let r = verify(&d.0).unwrap();
        assert_eq!(
            kinds(&r),
            vec![("partial_not_last", Severity::Error), ("leftover_partial", Severity::Warning)],
            "{}",
            r.to_text()
        );
        assert_eq!(r.exit_code(), EXIT_DAMAGED);
    }

    #[test]
    fn an_unwritten_partial_is_a_warning() {
        let d = Dir::new();
        d.wal(1, 3, 2, false);
        fs::write(d.0.join(format!("{}.partial", d.name(1, 5))), vec![0u8; SEG as usize]).unwrap();
        let r = verify(&d.0).unwrap();
        assert_eq!(kinds(&r), vec![("empty_partial", Severity::Warning)], "{}", r.to_text());
        assert!(r.restorable());
    }

    #[test]
    fn a_complete_segment_must_hold_wal_to_its_end() {
        let d = Dir::new();
        d.wal(1, 3, 3, true);
        // The .partial renamed complete: its WAL stops halfway.
        let p = d.0.join(format!("{}.partial", d.name(1, 5)));
        fs::rename(&p, d.0.join(d.name(1, 5))).unwrap();
        let r = verify(&d.0).unwrap();
        assert_eq!(kinds(&r), vec![("end_of_wal", Severity::Error)], "{}", r.to_text());
        assert!(r.findings[0].message.contains("the segment is complete"), "{}", r.to_text());
    }

    #[test]
    fn a_timeline_without_its_history_file() {
        let d = Dir::new();
        d.wal(1, 3, 2, false);
        d.wal(2, 5, 1, true);
        let r = verify(&d.0).unwrap();
        assert_eq!(kinds(&r), vec![("history_missing", Severity::Error)], "{}", r.to_text());
        assert!(r.findings[0].message.contains("\"00000002.history\""));
        assert!(
            r.to_text().contains("\nhint: Copy the timeline's history file into the archive"),
            "{}",
            r.to_text()
        );
        fs::write(d.0.join("00000002.history"), "garbage\n").unwrap();
        let r = verify(&d.0).unwrap();
        assert_eq!(kinds(&r), vec![("history", Severity::Error)], "{}", r.to_text());
    }

    #[test]
    fn no_wal_is_not_restorable() {
        let d = Dir::new();
        let r = verify(&d.0).unwrap();
        assert!(!r.restorable());
        assert_eq!(kinds(&r), vec![("empty", Severity::Error)]);
        assert!(r.to_text().contains("holds no WAL"), "{}", r.to_text());
        let e = verify(&d.0.join("nope")).unwrap_err();
        assert!(e.to_string().starts_with("could not open archive directory"), "{e}");
    }

    #[test]
    fn without_metadata_the_segments_say_what_the_cluster_is() {
        let d = Dir::new();
        fs::remove_file(d.0.join(".pgreceivewal.meta")).unwrap();
        d.wal(1, 3, 3, true);
        let r = verify(&d.0).unwrap();
        assert!(r.restorable(), "{}", r.to_text());
        assert_eq!((r.system_id, r.seg_size), (Some(SYSID), SEG));
    }

    #[test]
    fn a_page_size_from_damaged_headers_is_not_used() {
        let d = Dir::new();
        fs::remove_file(d.0.join(".pgreceivewal.meta")).unwrap();
        d.wal(1, 3, 2, false);
        for segno in [3, 4] {
            let p = d.0.join(d.name(1, segno));
            let mut data = fs::read(&p).unwrap();
            data[36..40].copy_from_slice(&0u32.to_le_bytes());
            fs::write(&p, data).unwrap();
        }
        // Chunks of zero-byte pages would panic; the default 8 kB is checked against them.
        let r = verify(&d.0).unwrap();
        assert_eq!(kinds(&r), vec![("page_header", Severity::Error); 2], "{}", r.to_text());
        assert!(r.findings[0].message.contains("page size is 0 bytes, expected 8192"), "{}", r.to_text());
    }

    #[test]
    fn json_is_one_document_with_escaped_text() {
        let d = Dir::new();
        let odd = d.0.join("a \"quoted\"\nname");
        fs::create_dir_all(&odd).unwrap();
        fs::copy(d.0.join(".pgreceivewal.meta"), odd.join(".pgreceivewal.meta")).unwrap();
        let r = verify(&odd).unwrap();
        let j = r.to_json();
        assert!(j.starts_with("{\"archive\":\""), "{j}");
        assert!(j.contains("a \\\"quoted\\\"\\nname"), "{j}");
        assert_eq!(j.matches('\n').count(), 1, "{j}");
        assert!(j.contains("\"restorable\":false") && j.contains("\"kind\":\"empty\""), "{j}");
        assert!(j.contains("\"hint\":null"), "{j}");
    }
}
