//! Quoting for the SQL we build around untrusted names (slots, publications, tables, columns
//! and snapshot names come from the user or the server): one place, so every caller doubles the
//! quote the same way and no name can end the literal or identifier it sits in.

/// `'text'`, a SQL string literal (`'` doubled, as `standard_conforming_strings` reads it).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"name"`, quoted as an SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `"a","B"`: publication names as pgoutput's `SplitIdentifierString` reads them.
pub fn publication_list(names: &[String]) -> String {
    names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(ident("t"), "\"t\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn literals() {
        assert_eq!(literal("s"), "'s'");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
