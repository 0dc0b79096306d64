//! `--ddl`: an event trigger, in a schema of our own, that describes each DDL statement in a
//! transactional logical message (`pg_logical_emit_message`). The message is decoded in the
//! DDL's own transaction, so it comes out in order with the row changes around it; the output
//! writes it as `{"op":"ddl", ...}`. `--teardown` removes the trigger and the schema.
//!
//! Event triggers need a superuser, and the messages need pgoutput's `messages` option
//! (PostgreSQL 14 and later).
//!
//! What a record holds: `tag` (the command tag), `objects` (from
//! `pg_event_trigger_ddl_commands()` or `pg_event_trigger_dropped_objects()`: exactly the
//! objects this statement created, changed or dropped), and `query`, the whole query string the
//! client sent (`current_query()`). An event trigger cannot see which part of that string it
//! fires for: a string of several statements (`CREATE TABLE t (...); INSERT INTO t ...`) comes
//! whole, with the other statements, once per DDL statement in it, and DDL run by a function
//! shows the statement that called the function. Cutting the statement out would need
//! PostgreSQL's lexer (dollar quotes, nested comments, `standard_conforming_strings`), and it
//! is not in the string at all in the function case, so the field is named for what it is, and
//! `tag` plus `objects` say what the DDL did.
//!
//! Any role may call `pg_logical_emit_message`, so a prefix alone proves nothing. The trigger
//! signs its messages: their prefix is `pgrecvlogical.ddl:<token>`, a random secret made at the
//! first install and kept (re-installs keep it, `--teardown` drops it) as the value of the
//! sequence `pgrecvlogical.ddl_token`, which only superusers can read. A sequence, not a table:
//! logical decoding does not decode sequences, while a table's row would go out through every
//! `FOR ALL TABLES` publication, into our output and to every subscriber. The trigger functions
//! are `SECURITY DEFINER` (owned by the installing superuser, `search_path` pinned) so they read
//! it whatever role runs the DDL; an `event_trigger` function cannot be called directly, and
//! PUBLIC has no rights on the schema. pgrecvlogical reads the token when it installs the
//! trigger; only a transactional message with exactly that prefix is a DDL record.

use super::output::DDL_PREFIX;

pub const SCHEMA: &str = "pgrecvlogical";
pub const TRIGGER: &str = "pgrecvlogical_ddl";

/// Reads the token (one row, one column, after [`install_sql`]).
pub const TOKEN_SQL: &str = "SELECT last_value FROM pgrecvlogical.ddl_token";

/// The prefix of the messages our trigger emits, for the token [`TOKEN_SQL`] read.
pub fn signed_prefix(token: &str) -> String {
    format!("{DDL_PREFIX}:{token}")
}

/// The expression the trigger functions emit as the prefix: the token is read when the
/// message is emitted, so it never appears in a function's source (`pg_proc.prosrc` is
/// readable by every role) nor in the install's query string (which DDL records carry).
fn prefix_expr() -> String {
    format!("'{DDL_PREFIX}:' || (SELECT last_value FROM {SCHEMA}.ddl_token)::text")
}

/// Creates (or replaces) the token, the functions and the triggers; safe to run again, and
/// keeps the token of an earlier install (an install from before the token gets one). The
/// token comes first: a REVOKE or CREATE here fires a trigger already installed, which reads it.
pub fn install_sql() -> String {
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS {SCHEMA};
DO $pgrl$
BEGIN
    IF to_regclass('{SCHEMA}.ddl_token') IS NULL THEN
        CREATE SEQUENCE {SCHEMA}.ddl_token MINVALUE 0;
        -- 63 bits from the server's strong random source (gen_random_uuid).
        PERFORM setval('{SCHEMA}.ddl_token',
            ('x' || substr(md5(gen_random_uuid()::text), 1, 16))::bit(64)::bigint & 9223372036854775807);
    END IF;
END
$pgrl$;
REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC;
REVOKE ALL ON SEQUENCE {SCHEMA}.ddl_token FROM PUBLIC;
{drop_function};
CREATE OR REPLACE FUNCTION {SCHEMA}.emit_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgrl$
DECLARE
    r record;
    objects jsonb := '[]';
BEGIN
    IF tg_tag LIKE 'DROP %' THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        objects := objects || jsonb_build_object(
            'type', r.object_type, 'identity', r.object_identity,
            'schema', r.schema_name, 'command_tag', r.command_tag);
    END LOOP;
    PERFORM pg_logical_emit_message(true, {prefix},
        jsonb_build_object('tag', tg_tag, 'query', current_query(), 'objects', objects)::text);
END
$pgrl$;
REVOKE ALL ON FUNCTION {SCHEMA}.emit_ddl() FROM PUBLIC;
REVOKE ALL ON FUNCTION {SCHEMA}.emit_drop() FROM PUBLIC;
DO $pgrl$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{TRIGGER}') THEN
        CREATE EVENT TRIGGER {TRIGGER} ON ddl_command_end EXECUTE FUNCTION {SCHEMA}.emit_ddl();
    END IF;
END
$pgrl$;
DO $pgrl$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{TRIGGER}_drop') THEN
        CREATE EVENT TRIGGER {TRIGGER}_drop ON sql_drop EXECUTE FUNCTION {SCHEMA}.emit_drop();
    END IF;
END
$pgrl$"#,
        drop_function = drop_function_sql(),
        prefix = prefix_expr()
    )
}

/// DROP statements are reported by a second trigger, on `sql_drop`, with what was dropped;
/// the first trigger leaves them alone.
fn drop_function_sql() -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION {SCHEMA}.emit_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgrl$
DECLARE
    r record;
    objects jsonb := '[]';
BEGIN
    IF tg_tag NOT LIKE 'DROP %' THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE original LOOP
        objects := objects || jsonb_build_object(
            'type', r.object_type, 'identity', r.object_identity, 'schema', r.schema_name);
    END LOOP;
    PERFORM pg_logical_emit_message(true, {prefix},
        jsonb_build_object('tag', tg_tag, 'query', current_query(), 'objects', objects)::text);
END
$pgrl$"#,
        prefix = prefix_expr()
    )
}

pub fn teardown_sql() -> String {
    format!(
        "DROP EVENT TRIGGER IF EXISTS {TRIGGER}; DROP EVENT TRIGGER IF EXISTS {TRIGGER}_drop; \
         DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_our_objects() {
        let sql = install_sql();
        assert!(sql.contains("CREATE EVENT TRIGGER pgrecvlogical_ddl ON ddl_command_end"));
        // Signed: the token is read when the message is emitted, never written in the SQL.
        assert!(!sql.contains("'pgrecvlogical.ddl'"));
        assert_eq!(
            sql.matches("'pgrecvlogical.ddl:' || (SELECT last_value FROM pgrecvlogical.ddl_token)::text")
                .count(),
            2
        );
        assert_eq!(sql.matches("SECURITY DEFINER SET search_path = pg_catalog, pg_temp").count(), 2);
        assert!(sql.contains("IF to_regclass('pgrecvlogical.ddl_token') IS NULL THEN"));
        assert!(sql.contains("REVOKE ALL ON SEQUENCE pgrecvlogical.ddl_token FROM PUBLIC"));
        assert_eq!(signed_prefix("42"), "pgrecvlogical.ddl:42");
        assert!(sql.contains("pg_event_trigger_dropped_objects"));
        assert!(
            sql.find("emit_drop() RETURNS").unwrap()
                < sql.find("EXECUTE FUNCTION pgrecvlogical.emit_drop").unwrap()
        );
        assert!(teardown_sql().contains("DROP SCHEMA IF EXISTS pgrecvlogical CASCADE"));
        // The client's whole query string, named for what it is (see the module comment).
        assert_eq!(sql.matches("'query', current_query()").count(), 2);
        assert!(!sql.contains("'command'"));
    }
}
