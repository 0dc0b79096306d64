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

use super::output::DDL_PREFIX;

pub const SCHEMA: &str = "pgrecvlogical";
pub const TRIGGER: &str = "pgrecvlogical_ddl";

/// Creates (or replaces) the functions and the triggers; safe to run again.
pub fn install_sql() -> String {
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS {SCHEMA};
{drop_function};
CREATE OR REPLACE FUNCTION {SCHEMA}.emit_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $pgrl$
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
    PERFORM pg_logical_emit_message(true, '{DDL_PREFIX}',
        jsonb_build_object('tag', tg_tag, 'query', current_query(), 'objects', objects)::text);
END
$pgrl$;
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
        drop_function = drop_function_sql()
    )
}

/// DROP statements are reported by a second trigger, on `sql_drop`, with what was dropped;
/// the first trigger leaves them alone.
fn drop_function_sql() -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION {SCHEMA}.emit_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $pgrl$
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
    PERFORM pg_logical_emit_message(true, '{DDL_PREFIX}',
        jsonb_build_object('tag', tg_tag, 'query', current_query(), 'objects', objects)::text);
END
$pgrl$"#
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
        assert!(sql.contains("'pgrecvlogical.ddl'"));
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
