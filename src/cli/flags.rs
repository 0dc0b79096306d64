//! The flag table a tool declares its command line with, and the option matcher built on it.
//!
//! As in ripgrep's `crates/core/flags/defs.rs`, each flag is declared once, as a [`FlagDef`]
//! (names, value, help line, man paragraph, section). The matcher here takes its option
//! list from the table, `--help`'s option list and the man page's OPTIONS section are rendered
//! from it ([`super::render`]), so the four cannot disagree. What a flag *does* stays in the
//! tool's parse `match`, one arm per flag keyed by its long name.

use std::ffi::OsString;

use super::usage;
use crate::tool::{Command, UsageError};

/// One command-line flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagDef {
    /// The long name, without `--`; every flag has one.
    pub long: &'static str,
    /// Its short letters, `""` for none (pgrestorewal's help answers to `-?` and `-h`).
    pub short: &'static str,
    /// For a flag that takes a value: its name in the help (`DIR`; upper case, shown in
    /// italics in the man page) or the one literal value it takes (`-`, `none`).
    pub value: Option<&'static str>,
    /// The `--help` description; lines after the first are indented under the first.
    pub help: &'static str,
    /// The man page's paragraph, in roff.
    pub man: &'static str,
    /// The title of the [`Section`] it is listed under.
    pub section: &'static str,
}

impl FlagDef {
    /// How messages name it: `-S/--slot`, or `--format` for a flag without a short letter.
    pub fn label(&self) -> String {
        match self.short.chars().next() {
            Some(c) => format!("-{c}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// A group of flags in `--help` (`Connection options:`) and in the man page.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub title: &'static str,
    /// Whether the man page gives it a `.SS` heading of its own; false for the section whose
    /// flags sit right under OPTIONS.
    pub man_heading: bool,
    /// Roff put under the man page's heading, before the flags ("" for none).
    pub man_intro: &'static str,
}

/// A flag as given on the command line, with its value when the table says it takes one.
#[derive(Debug)]
pub struct Flag {
    pub def: &'static FlagDef,
    value: Option<OsString>,
}

impl Flag {
    /// The long name the parse `match` is keyed by.
    pub fn name(&self) -> &'static str {
        self.def.long
    }

    /// The value as given (`-D` takes any bytes: it is a path).
    pub fn os_value(&self) -> OsString {
        self.value.clone().unwrap_or_else(|| panic!("{} takes no value in the flag table", self.def.label()))
    }

    /// The value as UTF-8 (everything but paths is text: names, numbers, libpq settings).
    pub fn string(&self) -> Result<String, UsageError> {
        self.os_value().into_string().map_err(|v| {
            usage(format!(
                "invalid value \"{}\" for option {}: not valid UTF-8",
                v.to_string_lossy(),
                self.def.label()
            ))
        })
    }
}

/// What the command line holds next.
#[derive(Debug)]
pub enum Arg {
    Flag(Flag),
    /// A non-option argument.
    Operand(OsString),
}

/// lexopt's tokenizer matched against a flag table.
pub struct Parser {
    inner: lexopt::Parser,
    flags: &'static [FlagDef],
}

impl Parser {
    pub fn new(args: impl IntoIterator<Item = OsString>, flags: &'static [FlagDef]) -> Self {
        Parser { inner: lexopt::Parser::from_args(args), flags }
    }

    /// The next flag (with its value taken, as getopt does even when it starts with `-`) or
    /// operand; an unknown or ambiguous option, or a missing value, is a usage error.
    // Named like lexopt's `Parser::next`, which it wraps: an Iterator's items would have to
    // be Results, and stopping at the first error would be every caller's job.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Arg>, UsageError> {
        let def = match self.inner.next().map_err(lexopt_error)? {
            None => return Ok(None),
            Some(lexopt::Arg::Value(v)) => return Ok(Some(Arg::Operand(v))),
            Some(lexopt::Arg::Short(c)) => self
                .flags
                .iter()
                .find(|f| f.short.contains(c))
                .ok_or_else(|| usage(format!("unrecognized option \"-{c}\"")))?,
            Some(lexopt::Arg::Long(name)) => resolve_long(name, self.flags)?,
        };
        let value = match def.value {
            Some(_) => Some(self.inner.value().map_err(lexopt_error)?),
            None => None,
        };
        Ok(Some(Arg::Flag(Flag { def, value })))
    }
}

/// What a tool's parser supplies: a plain struct of what the user typed, filled one flag at a
/// time, then checked as a whole (lexopt's and ripgrep's two steps).
pub trait ToolArgs: Default {
    type Config;
    /// Records one flag of the tool's table: one arm per flag, keyed by [`Flag::name`].
    /// `--help` and `--version` never get here.
    fn take(&mut self, flag: &Flag) -> Result<(), UsageError>;
    /// Records a non-option argument.
    fn operand(&mut self, value: OsString);
    /// Checks combinations and builds the configuration.
    fn validate(self) -> Result<Self::Config, UsageError>;
}

/// Parses a command line against `flags`. `--help` and `--version` (every tool has both) are
/// answered as soon as they are read, wherever they are, before any combination is checked.
pub fn parse<A: ToolArgs>(
    args: impl IntoIterator<Item = OsString>,
    flags: &'static [FlagDef],
) -> Result<Command<A::Config>, UsageError> {
    let mut p = Parser::new(args, flags);
    let mut a = A::default();
    while let Some(arg) = p.next()? {
        match arg {
            Arg::Operand(v) => a.operand(v),
            Arg::Flag(f) => match f.name() {
                "help" => return Ok(Command::Help),
                "version" => return Ok(Command::Version),
                _ => a.take(&f)?,
            },
        }
    }
    a.validate().map(Command::Run)
}

/// Match a long option exactly, or by a unique prefix as glibc's `getopt_long` does (the
/// PostgreSQL tools use it, so scripts may rely on `--dir=...`). Possibilities are listed in
/// table order, as glibc lists them in `long_options` order.
pub fn resolve_long(name: &str, flags: &'static [FlagDef]) -> Result<&'static FlagDef, UsageError> {
    if let Some(exact) = flags.iter().find(|f| f.long == name) {
        return Ok(exact);
    }
    let matches: Vec<&'static FlagDef> = if name.is_empty() {
        Vec::new()
    } else {
        flags.iter().filter(|f| f.long.starts_with(name)).collect()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(usage(format!("unrecognized option \"--{name}\""))),
        many => {
            let list: Vec<String> = many.iter().map(|f| format!("\"--{}\"", f.long)).collect();
            Err(usage(format!("option \"--{name}\" is ambiguous; possibilities: {}", list.join(" "))))
        }
    }
}

/// lexopt's errors in our words.
fn lexopt_error(e: lexopt::Error) -> UsageError {
    use lexopt::Error as E;
    usage(match e {
        E::MissingValue { option: Some(o) } => format!("option \"{o}\" requires a value"),
        E::MissingValue { option: None } => "missing option value".to_string(),
        E::UnexpectedOption(o) => format!("unrecognized option \"{o}\""),
        E::UnexpectedArgument(v) => return super::too_many_arguments(&v),
        E::UnexpectedValue { option, .. } => format!("option \"{option}\" does not take a value"),
        E::NonUnicodeValue(v) => {
            format!("invalid value \"{}\": not valid UTF-8", v.to_string_lossy())
        }
        E::ParsingFailed { value, error } => format!("invalid value \"{value}\": {error}"),
        E::Custom(err) => err.to_string(),
    })
}

/// Checks a tool's table against its parser, for the tool's unit tests: names are unique,
/// every flag sits in a declared section, and `parse` handles every flag, long and short (it
/// panics on one that reaches no arm). `base` is a command line that is valid on its own.
#[cfg(test)]
pub fn check_table<T: std::fmt::Debug>(
    flags: &'static [FlagDef],
    sections: &[Section],
    base: &[&str],
    parse: impl Fn(Vec<OsString>) -> Result<T, UsageError>,
) {
    let mut shorts = String::new();
    for (i, f) in flags.iter().enumerate() {
        assert!(!f.long.is_empty() && !f.help.is_empty() && !f.man.is_empty(), "{f:?}");
        assert!(flags[..i].iter().all(|g| g.long != f.long), "--{} is declared twice", f.long);
        for c in f.short.chars() {
            assert!(!shorts.contains(c), "-{c} is declared twice");
            shorts.push(c);
        }
        assert!(sections.iter().any(|s| s.title == f.section), "--{}: no section {:?}", f.long, f.section);
    }
    for s in sections {
        assert!(flags.iter().any(|f| f.section == s.title), "section {:?} has no flags", s.title);
    }
    let run = |extra: &[&str]| {
        let args: Vec<OsString> = base.iter().chain(extra).map(OsString::from).collect();
        (parse(args), extra.join(" "))
    };
    for f in flags {
        let long = format!("--{}", f.long);
        let mut forms = vec![long.clone()];
        forms.extend(f.short.chars().map(|c| format!("-{c}")));
        for form in forms {
            let (result, line) = match f.value {
                Some(_) => run(&[&form, "1"]),
                None => run(&[&form]),
            };
            if let Err(e) = &result {
                assert!(!e.0.contains("unrecognized"), "{line}: {e}");
            }
            if f.value.is_some() {
                let (result, line) = run(&[&form]);
                assert_eq!(result.unwrap_err().0, format!("option \"{form}\" requires a value"), "{line}");
            } else if let (Err(e), line) = run(&[&format!("{long}=1")]) {
                // (`--help=1` is answered before lexopt sees the value, as it always was.)
                assert_eq!(e.0, format!("option \"{long}\" does not take a value"), "{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn def(long: &'static str, short: &'static str, value: Option<&'static str>) -> FlagDef {
        FlagDef { long, short, value, help: "h", man: "m", section: "Options" }
    }

    static FLAGS: &[FlagDef] =
        &[def("slot", "S", Some("NAME")), def("synchronous", "", None), def("help", "?h", None)];

    fn all(args: &[&str]) -> Result<Vec<String>, UsageError> {
        let mut p = Parser::new(args.iter().map(OsString::from), FLAGS);
        let mut seen = Vec::new();
        while let Some(arg) = p.next()? {
            seen.push(match arg {
                Arg::Flag(f) if f.def.value.is_some() => format!("{}={}", f.name(), f.string()?),
                Arg::Flag(f) => f.name().to_string(),
                Arg::Operand(v) => format!("operand {}", v.to_string_lossy()),
            });
        }
        Ok(seen)
    }

    #[test]
    fn matches_against_the_table() {
        assert_eq!(
            all(&["-Sa", "--sl=b", "-h", "-?", "--sync", "x"]).unwrap(),
            ["slot=a", "slot=b", "help", "help", "synchronous", "operand x"]
        );
        // A value is taken even when it looks like an option.
        assert_eq!(all(&["-S", "-h"]).unwrap(), ["slot=-h"]);
        assert_eq!(all(&["--", "-S"]).unwrap(), ["operand -S"]);
    }

    #[test]
    fn usage_errors() {
        let err = |args: &[&str]| all(args).unwrap_err().0;
        assert_eq!(err(&["-x"]), "unrecognized option \"-x\"");
        assert_eq!(err(&["--x=1"]), "unrecognized option \"--x\"");
        assert_eq!(err(&["--s"]), "option \"--s\" is ambiguous; possibilities: \"--slot\" \"--synchronous\"");
        assert_eq!(err(&["-S"]), "option \"-S\" requires a value");
        // lexopt names the option as it was written.
        assert_eq!(err(&["--sync=1"]), "option \"--sync\" does not take a value");
    }

    #[test]
    fn label() {
        assert_eq!(FLAGS[0].label(), "-S/--slot");
        assert_eq!(FLAGS[1].label(), "--synchronous");
        assert_eq!(FLAGS[2].label(), "-?/--help");
    }

    #[cfg(unix)]
    #[test]
    fn values_must_be_utf8_when_read_as_text() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![OsString::from("-S"), OsString::from_vec(b"a\xff".to_vec())];
        let mut p = Parser::new(args, FLAGS);
        let Some(Arg::Flag(f)) = p.next().unwrap() else { panic!() };
        assert_eq!(f.os_value().len(), 2);
        assert_eq!(
            f.string().unwrap_err().0,
            "invalid value \"a\u{fffd}\" for option -S/--slot: not valid UTF-8"
        );
    }
}
