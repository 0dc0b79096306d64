//! `--help`'s option list and the man page's OPTIONS section, rendered from a flag table.
//!
//! The man pages in `packaging/man/` are written by hand except for the part between the
//! [`MAN_BEGIN`] and [`MAN_END`] lines, which is this module's output: description, exit
//! status, examples and the rest are prose no table would say better, while the options are
//! exactly what the table declares. Each tool's unit test compares that part of its committed
//! page with a fresh rendering; `make man` rewrites it (the test, run with
//! `PGRW_UPDATE_MAN=1`, as rust-analyzer's expect-test does with `UPDATE_EXPECT=1`).

use super::flags::{FlagDef, Section};

/// The column `--help` descriptions start in, as in PostgreSQL's tools.
const HELP_COLUMN: usize = 25;

/// The line before the generated part of a man page.
pub const MAN_BEGIN: &str =
    ".\\\" BEGIN GENERATED OPTIONS: made from the flag table by `make man`; edit the table";
/// The line after it.
pub const MAN_END: &str = ".\\\" END GENERATED OPTIONS";

fn in_section<'a>(flags: &'a [FlagDef], section: &'a Section) -> impl Iterator<Item = &'a FlagDef> {
    flags.iter().filter(move |f| f.section == section.title)
}

/// The option list of `--help`: each section's title, then its flags in table order, laid
/// out like pg_receivewal's; sections are separated by a blank line.
pub fn help_options(sections: &[Section], flags: &[FlagDef]) -> String {
    let mut out = String::new();
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(section.title);
        out.push_str(":\n");
        for f in in_section(flags, section) {
            let mut names = String::from("  ");
            if f.short.is_empty() {
                names.push_str("    ");
            }
            for c in f.short.chars() {
                names.push_str(&format!("-{c}, "));
            }
            names.push_str("--");
            names.push_str(f.long);
            if let Some(v) = f.value {
                names.push('=');
                names.push_str(v);
            }
            // A description that would not leave a blank after the names starts a line below.
            if names.len() >= HELP_COLUMN {
                names.push('\n');
                names.push_str(&" ".repeat(HELP_COLUMN));
            } else {
                names.push_str(&" ".repeat(HELP_COLUMN - names.len()));
            }
            out.push_str(&names);
            let indent = format!("\n{}", " ".repeat(HELP_COLUMN));
            out.push_str(&f.help.replace('\n', &indent));
            out.push('\n');
        }
    }
    out
}

/// `-` as roff writes a hyphen-minus in an option name.
fn roff_dashes(s: &str) -> String {
    s.replace('-', "\\-")
}

/// A `.TP` tag: `\fB\-D\fR, \fB\-\-directory\fR=\fIdir\fR`. An upper-case value name is a
/// placeholder (italic, lower case, as man pages write them), as is each upper-case word of one
/// joined by colons (`HOST:PORT`); anything else is literal (bold).
fn man_tag(f: &FlagDef) -> String {
    let mut names: Vec<String> = f.short.chars().map(|c| format!("\\fB\\-{c}\\fR")).collect();
    names.push(format!("\\fB\\-\\-{}\\fR", roff_dashes(f.long)));
    let mut tag = names.join(", ");
    if let Some(v) = f.value {
        // `HOST:PORT` is two placeholders and a literal colon.
        let placeholder =
            |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if v.split(':').all(placeholder) {
            let words: Vec<String> =
                v.split(':').map(|w| format!("\\fI{}\\fR", w.to_ascii_lowercase())).collect();
            tag.push_str(&format!("={}", words.join(":")));
        } else {
            tag.push_str(&format!("=\\fB{}\\fR", roff_dashes(v)));
        }
    }
    tag
}

/// The man page's OPTIONS section, from `.SH OPTIONS` to the last flag's paragraph.
pub fn man_options(sections: &[Section], flags: &[FlagDef]) -> String {
    let mut out = String::from(".SH OPTIONS\n");
    for section in sections {
        if section.man_heading {
            if section.title.contains(' ') {
                out.push_str(&format!(".SS \"{}\"\n", section.title));
            } else {
                out.push_str(&format!(".SS {}\n", section.title));
            }
        }
        if !section.man_intro.is_empty() {
            out.push_str(section.man_intro.trim_end());
            out.push('\n');
        }
        for f in in_section(flags, section) {
            out.push_str(".TP\n");
            out.push_str(&man_tag(f));
            out.push('\n');
            out.push_str(f.man.trim_end());
            out.push('\n');
        }
    }
    out
}

/// `page` with the part between [`MAN_BEGIN`] and [`MAN_END`] replaced by `options`; `None`
/// when the page lacks the two lines.
pub fn splice_man_page(page: &str, options: &str) -> Option<String> {
    let begin = page.find(&format!("{MAN_BEGIN}\n"))? + MAN_BEGIN.len() + 1;
    let end = begin + page[begin..].find(&format!("\n{MAN_END}\n"))? + 1;
    Some(format!("{}{options}{}", &page[..begin], &page[end..]))
}

/// For a tool's unit test: `packaging/man/{program}.1` must hold `options` as rendered now.
/// With `PGRW_UPDATE_MAN` set (`make man`), the page is rewritten instead.
#[cfg(test)]
pub fn check_man_page(program: &str, options: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("packaging/man/{program}.1"));
    let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want = splice_man_page(&page, options)
        .unwrap_or_else(|| panic!("{} lacks the lines {MAN_BEGIN:?} and {MAN_END:?}", path.display()));
    if want == page {
        return;
    }
    if std::env::var_os("PGRW_UPDATE_MAN").is_some() {
        std::fs::write(&path, want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    panic!(
        "{} is out of step with {program}'s flag table: run `make man` and commit the page",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    static SECTIONS: &[Section] = &[
        Section { title: "Options", man_heading: false, man_intro: "" },
        Section { title: "Connection options", man_heading: true, man_intro: "Intro.\n" },
    ];

    static FLAGS: &[FlagDef] = &[
        FlagDef {
            long: "directory",
            short: "D",
            value: Some("DIR"),
            help: "where to write",
            man: "The directory.",
            section: "Options",
        },
        FlagDef {
            long: "host",
            short: "h",
            value: Some("HOSTNAME"),
            help: "the host",
            man: "The host.\n",
            section: "Connection options",
        },
        FlagDef {
            long: "status-interval",
            short: "s",
            value: Some("SECS"),
            help: "time between\nstatus packets",
            man: "Seconds.",
            section: "Options",
        },
        FlagDef {
            long: "file",
            short: "f",
            value: Some("-"),
            help: "stdout",
            man: "Out.",
            section: "Options",
        },
        FlagDef {
            long: "no-sync",
            short: "",
            value: None,
            help: "no fsync",
            man: "Never.",
            section: "Options",
        },
        FlagDef { long: "help", short: "?h", value: None, help: "help", man: "Help.", section: "Options" },
    ];

    #[test]
    fn help_layout() {
        assert_eq!(
            help_options(SECTIONS, FLAGS),
            "\
Options:
  -D, --directory=DIR    where to write
  -s, --status-interval=SECS
                         time between
                         status packets
  -f, --file=-           stdout
      --no-sync          no fsync
  -?, -h, --help         help

Connection options:
  -h, --host=HOSTNAME    the host
"
        );
    }

    #[test]
    fn man_layout() {
        assert_eq!(
            man_options(SECTIONS, FLAGS),
            "\
.SH OPTIONS
.TP
\\fB\\-D\\fR, \\fB\\-\\-directory\\fR=\\fIdir\\fR
The directory.
.TP
\\fB\\-s\\fR, \\fB\\-\\-status\\-interval\\fR=\\fIsecs\\fR
Seconds.
.TP
\\fB\\-f\\fR, \\fB\\-\\-file\\fR=\\fB\\-\\fR
Out.
.TP
\\fB\\-\\-no\\-sync\\fR
Never.
.TP
\\fB\\-?\\fR, \\fB\\-h\\fR, \\fB\\-\\-help\\fR
Help.
.SS \"Connection options\"
Intro.
.TP
\\fB\\-h\\fR, \\fB\\-\\-host\\fR=\\fIhostname\\fR
The host.
"
        );
    }

    #[test]
    fn placeholders_joined_by_a_colon() {
        let f = FlagDef { long: "metrics-address", value: Some("HOST:PORT"), ..FLAGS[4] };
        assert_eq!(man_tag(&f), "\\fB\\-\\-metrics\\-address\\fR=\\fIhost\\fR:\\fIport\\fR");
        // A colon next to a literal word leaves the whole value literal.
        let f = FlagDef { value: Some("HOST:x"), ..f };
        assert_eq!(man_tag(&f), "\\fB\\-\\-metrics\\-address\\fR=\\fBHOST:x\\fR");
    }

    #[test]
    fn splice() {
        let page = format!(".TH X 1\n{MAN_BEGIN}\n.SH OPTIONS\nold\n{MAN_END}\n.SH MORE\n");
        assert_eq!(
            splice_man_page(&page, ".SH OPTIONS\nnew\n").unwrap(),
            format!(".TH X 1\n{MAN_BEGIN}\n.SH OPTIONS\nnew\n{MAN_END}\n.SH MORE\n")
        );
        assert_eq!(splice_man_page(".TH X 1\n.SH OPTIONS\n", "x"), None);
        assert_eq!(splice_man_page(&format!("{MAN_BEGIN}\nno end\n"), "x"), None);
    }
}
