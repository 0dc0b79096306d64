//! How many statements a DDL record's query string holds. The record carries the client's
//! whole query string (docs/pgrecvlogical.md, DDL), and a string sent through the simple query
//! protocol may hold several statements: `CREATE TABLE m (...); INSERT INTO m ...`. Replaying
//! all of it would run the other statements a second time, while their row changes also come
//! through the stream. Pure.
//!
//! This is a lexer, not a parser: it skips what PostgreSQL's lexer (`scan.l`) skips (comments,
//! nested `/* */` included; quoted identifiers; string constants, `E''` with backslash escapes;
//! dollar quotes) and counts the non-empty pieces between semicolons. It assumes
//! `standard_conforming_strings` on: our trigger marks a record of a session with it off. A
//! `BEGIN ATOMIC` body of `CREATE FUNCTION`/`CREATE PROCEDURE` holds semicolons that do not
//! end the statement; those are followed the way psql's lexer (`psqlscan.l`) does.
//!
//! It decides only which message the applier gives. The guarantee is the server's: the
//! applier sends the string through the extended protocol, whose Parse refuses a string of
//! several statements before running any of it, so a lexer mistake can cost a clear message
//! (or stop on a string that was one statement), never run a statement twice.

/// True when `query` holds exactly one statement (empty statements, such as a trailing `;`,
/// do not count); false when it holds several, none, or ends inside a comment or a quote.
pub fn single_statement(query: &str) -> bool {
    let b = query.as_bytes();
    let mut i = 0;
    let mut statements = 0u32;
    // The current statement: has it a token yet, its first identifiers (to recognise
    // CREATE [OR REPLACE] FUNCTION|PROCEDURE), and the BEGIN ... END and paren depths.
    let mut started = false;
    let mut words: Vec<String> = Vec::new();
    let mut begin_depth = 0u32;
    let mut paren_depth = 0u32;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0u32;
                loop {
                    if i + 1 >= b.len() {
                        return false;
                    }
                    if b[i] == b'/' && b[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b';' => {
                if begin_depth == 0 {
                    if started {
                        statements += 1;
                    }
                    started = false;
                    words.clear();
                    paren_depth = 0;
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        started = true;
        match c {
            b'\'' => match skip_quoted(b, i, b'\'', false) {
                Some(end) => i = end,
                None => return false,
            },
            b'"' => match skip_quoted(b, i, b'"', false) {
                Some(end) => i = end,
                None => return false,
            },
            b'$' => {
                let tag_end = dollar_tag(b, i);
                match tag_end {
                    Some(end) => {
                        let tag = &b[i..end];
                        match find(b, end, tag) {
                            Some(close) => i = close + tag.len(),
                            None => return false,
                        }
                    }
                    // A parameter ($1) or an operator character.
                    None => i += 1,
                }
            }
            b'(' => {
                paren_depth += 1;
                i += 1;
            }
            b')' => {
                paren_depth = paren_depth.saturating_sub(1);
                i += 1;
            }
            _ if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident_cont(b[i]) {
                    i += 1;
                }
                let word = &query[start..i];
                let next = b.get(i).copied();
                let second = b.get(i + 1).copied();
                // E'...' (backslash escapes), U&'...' and U&"...", and B'', X'', N'' (plain).
                if word.eq_ignore_ascii_case("e") && next == Some(b'\'') {
                    match skip_quoted(b, i, b'\'', true) {
                        Some(end) => i = end,
                        None => return false,
                    }
                    continue;
                }
                if word.eq_ignore_ascii_case("u")
                    && next == Some(b'&')
                    && matches!(second, Some(b'\'' | b'"'))
                {
                    match skip_quoted(b, i + 1, b[i + 1], false) {
                        Some(end) => i = end,
                        None => return false,
                    }
                    continue;
                }
                if ["b", "x", "n"].iter().any(|p| word.eq_ignore_ascii_case(p)) && next == Some(b'\'') {
                    match skip_quoted(b, i, b'\'', false) {
                        Some(end) => i = end,
                        None => return false,
                    }
                    continue;
                }
                let lower = word.to_ascii_lowercase();
                if words.len() < 4 {
                    words.push(lower.clone());
                }
                let routine = words.first().is_some_and(|w| w == "create")
                    && match words.get(1).map(String::as_str) {
                        Some("function" | "procedure") => true,
                        Some("or") => {
                            words.get(2).is_some_and(|w| w == "replace")
                                && matches!(words.get(3).map(String::as_str), Some("function" | "procedure"))
                        }
                        _ => false,
                    };
                if routine && paren_depth == 0 {
                    match lower.as_str() {
                        "begin" => begin_depth += 1,
                        // CASE ... END inside a body also ends with END.
                        "case" if begin_depth >= 1 => begin_depth += 1,
                        "end" => begin_depth = begin_depth.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            _ => i += 1,
        }
    }
    if started {
        statements += 1;
    }
    statements == 1 && begin_depth == 0
}

/// The end (one past the closing quote) of the quoted text whose opening `quote` is at `at`;
/// a doubled quote is one quote character, and with `backslash` a backslash escapes the next
/// byte. `None` when the quote is not closed.
fn skip_quoted(b: &[u8], at: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = at + 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// `$tag$` or `$$` at `at` (a `$` that does not follow an identifier: the caller consumed
/// identifiers whole, `$` included): the end of the opening delimiter.
fn dollar_tag(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    if b.get(i).is_some_and(|&c| is_ident_start(c)) {
        i += 1;
        while b.get(i).is_some_and(|&c| is_ident_start(c) || c.is_ascii_digit()) {
            i += 1;
        }
    }
    (b.get(i) == Some(&b'$')).then_some(i + 1)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_statement() {
        for q in [
            "CREATE TABLE t (id int)",
            "CREATE TABLE t (id int);",
            "  CREATE TABLE t (id int) ; ;  -- done\n",
            "ALTER TABLE t ADD COLUMN c text DEFAULT 'a;b'",
            "ALTER TABLE t ADD COLUMN c text DEFAULT 'it''s; fine'",
            "ALTER TABLE t ADD COLUMN c text DEFAULT E'a\\'; DROP TABLE t; --'",
            "ALTER TABLE t ADD COLUMN c text DEFAULT e'\\\\'",
            "CREATE TABLE \"we;ird\"\"x\" (id int)",
            "CREATE TABLE t (c text DEFAULT U&'d\\0061t;a')",
            "COMMENT ON TABLE t IS $$a; b$$",
            "COMMENT ON TABLE t IS $x$a $$; b$x$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$",
            "CREATE TABLE a$b (id int)",
            "CREATE TABLE t (id int) /* a; /* nested; */ still; */",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC \
             SELECT CASE WHEN true THEN 1 END; INSERT INTO t VALUES (1); END;",
            "CREATE TABLE t (c bit(2) DEFAULT B'01', d bytea DEFAULT X'ab', e text DEFAULT N'x;y')",
        ] {
            assert!(single_statement(q), "{q}");
        }
    }

    #[test]
    fn several_statements_or_none() {
        for q in [
            "",
            " ; -- nothing\n",
            "CREATE TABLE m (id int); INSERT INTO m VALUES (1)",
            "CREATE TABLE m (id int);INSERT INTO m VALUES (1);",
            "ALTER TABLE t ADD COLUMN c text DEFAULT 'a\\'; UPDATE t SET c = 1; --'",
            "CREATE TABLE t (id int) -- a comment\n; SELECT 1",
            "CREATE TABLE t (id int); /* c */ DROP TABLE x",
            "CREATE TABLE \"t\" (id int); SELECT pg_terminate_backend(1)",
            "COMMENT ON TABLE t IS $x$a$x$; SELECT 1",
            "CREATE TABLE t (c int DEFAULT $1); SELECT 1",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; DELETE FROM t",
            "CREATE TABLE begin (id int); CREATE TABLE t ()",
            // Unterminated: the server would not take it as one statement.
            "COMMENT ON TABLE t IS 'open",
            "COMMENT ON TABLE t IS $$open",
            "CREATE TABLE t () /* open",
            "CREATE TABLE \"open (id int)",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;",
        ] {
            assert!(!single_statement(q), "{q}");
        }
    }
}
