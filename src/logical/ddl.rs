//! `--ddl`: event triggers, in a schema of our own, that describe each DDL statement in a
//! transactional logical message (`pg_logical_emit_message`), with the schemas of the
//! session's `search_path` a third trigger kept when the statement started (see [`PATH_GUC`]),
//! so that the applier resolves its names as the source did. The message is decoded in the
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
//! What gets a record at all: the target of `pgapplylogical --ddl=apply` runs a record's `query`
//! with its own rights, so a record is written only for DDL that changes the schema a replica
//! needs, and DDL that any role may run is never part of that. Not written:
//! - DDL on temporary objects (any role may `CREATE TEMP TABLE ... AS SELECT ...`, and may
//!   create rules, triggers, indexes, grants on its temporary tables). Temporary is judged from
//!   the catalogs, not from the query: the object's schema is a temporary one (`pg_temp` in
//!   `pg_event_trigger_ddl_commands()`, `pg_temp_N` elsewhere), or its address starts with one
//!   (a rule or trigger on a temporary table has no schema of its own, and
//!   `pg_event_trigger_dropped_objects()` calls a dropped rule of a temporary table not
//!   temporary), or it depends on an object in one (a statistics object made in `public` on a
//!   temporary table). Replayed, the same unqualified name finds the target's real table.
//! - `GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES`: privileges name the source's roles, and an
//!   event trigger is not told which objects a GRANT touched; on the target the applier's role
//!   owns every replicated object, so `GRANT ... ON ALL TABLES IN SCHEMA` (or a default
//!   privilege, which applies to the role that runs it) would give what the source role could
//!   not.
//! - publications, subscriptions and `REINDEX`: the source's own replication set-up and
//!   maintenance, not schema.
//! - statements that changed nothing (`CREATE TABLE IF NOT EXISTS` of an existing table).
//!
//! A record whose `query` is not the DDL itself is marked `"manual"` with the reason, and
//! `pgapplylogical --ddl=apply` stops on it rather than run it: DDL run inside a function, a
//! procedure or a `DO` block (`current_query()` is the calling statement, which may hold DML
//! that the stream also carries as row changes), `CREATE TABLE ... AS` and `SELECT INTO` (the
//! query runs again on the target: `CREATE TABLE m AS WITH d AS (DELETE ...) SELECT ...`
//! deletes twice), a statement that also touched temporary objects (`DROP TABLE mytemp,
//! real`: replayed, `mytemp` finds a real table), `DROP OWNED` (it names a role, not the
//! objects), and a session with `standard_conforming_strings` off (the target would read the
//! string's quotes differently). A query string of several statements cannot be told from
//! here (that needs PostgreSQL's lexer); the applier finds those (see `apply::statement`).
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
use crate::sql::literal;

pub const SCHEMA: &str = "pgrecvlogical";
pub const TRIGGER: &str = "pgrecvlogical_ddl";

/// Command tags that get no record: not the schema a replica needs (see the module comment).
const NOT_SCHEMA: &str = "'GRANT', 'REVOKE', 'ALTER DEFAULT PRIVILEGES', 'CREATE PUBLICATION', \
     'ALTER PUBLICATION', 'DROP PUBLICATION', 'CREATE SUBSCRIPTION', 'ALTER SUBSCRIPTION', \
     'DROP SUBSCRIPTION', 'REINDEX'";

/// Where `stash_search_path` keeps the caller's search path for the statement (a custom
/// setting, local to the transaction). The triggers that write the record cannot read the
/// caller's `search_path` themselves: theirs is pinned (they run with a superuser's rights,
/// and a caller's schema first in the path could capture the functions they call). This one
/// runs with the caller's rights, at `ddl_command_start` (before the statement resolves its
/// names), and calls only `pg_catalog.`-qualified functions, so a caller's schema changes
/// nothing in it; and each statement's start sets it again, so a value the caller set is
/// never read.
const PATH_GUC: &str = "pgrecvlogical.search_path";

/// A temporary schema's name: `pg_temp` as `pg_event_trigger_ddl_commands()` and object
/// addresses write it, `pg_temp_N` and `pg_toast_temp_N` as they are. No other schema can have
/// such a name (the `pg_` prefix is reserved).
const TEMP_SCHEMA_RE: &str = "'^pg_(toast_)?temp(_[0-9]+)?$'";

/// Why a record is `"manual"`: `pgapplylogical` puts it in its message.
const MANUAL_MIXED: &str =
    "the statement also changed temporary objects, whose names the target would resolve to other objects";
const MANUAL_NESTED: &str =
    "the DDL ran inside a function, procedure or DO block, and the query string is the statement that called it";
const MANUAL_CTAS: &str = "CREATE TABLE AS and SELECT INTO would run their query again on the target";
const MANUAL_OWNED: &str = "DROP OWNED names a role, not the objects it dropped";
const MANUAL_SCS: &str =
    "the session had standard_conforming_strings off, so the target would read the query's quotes differently";

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
    is_temp boolean;
    temps int := 0;
    others int := 0;
    ctx text;
    manual text;
BEGIN
    IF tg_tag LIKE 'DROP %' OR tg_tag IN ({not_schema}) THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        is_temp := coalesce(r.schema_name, '') ~ {temp_re}
            OR coalesce((pg_identify_object_as_address(r.classid, r.objid, r.objsubid)).object_names[1], '') ~ {temp_re}
            OR EXISTS (SELECT FROM pg_depend d WHERE d.classid = r.classid AND d.objid = r.objid
                AND coalesce((pg_identify_object(d.refclassid, d.refobjid, 0)).schema, '') ~ {temp_re});
        IF is_temp THEN
            temps := temps + 1;
        ELSE
            others := others + 1;
        END IF;
        objects := objects || jsonb_build_object(
            'type', r.object_type, 'identity', r.object_identity,
            'schema', r.schema_name, 'command_tag', r.command_tag);
    END LOOP;
    IF others = 0 THEN
        RETURN;
    END IF;
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    IF temps > 0 THEN
        manual := {mixed};
    ELSIF strpos(ctx, E'\n') > 0 THEN
        manual := {nested};
    ELSIF tg_tag IN ('CREATE TABLE AS', 'SELECT INTO') THEN
        manual := {ctas};
    ELSIF current_setting('standard_conforming_strings') <> 'on' THEN
        manual := {scs};
    END IF;
    PERFORM pg_logical_emit_message(true, {prefix},
        (jsonb_build_object('tag', tg_tag, 'query', current_query(), 'objects', objects,
            'search_path', {path})
            || CASE WHEN manual IS NULL THEN '{{}}' ELSE jsonb_build_object('manual', manual) END)::text);
END
$pgrl$;
CREATE OR REPLACE FUNCTION {SCHEMA}.stash_search_path() RETURNS event_trigger
LANGUAGE plpgsql AS $pgrl$
BEGIN
    PERFORM pg_catalog.set_config('{PATH_GUC}',
        pg_catalog.to_jsonb(pg_catalog.current_schemas(false))::pg_catalog.text, true);
END
$pgrl$;
REVOKE ALL ON FUNCTION {SCHEMA}.emit_ddl() FROM PUBLIC;
REVOKE ALL ON FUNCTION {SCHEMA}.emit_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION {SCHEMA}.stash_search_path() FROM PUBLIC;
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
$pgrl$;
DO $pgrl$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = '{TRIGGER}_path') THEN
        CREATE EVENT TRIGGER {TRIGGER}_path ON ddl_command_start
            EXECUTE FUNCTION {SCHEMA}.stash_search_path();
    END IF;
END
$pgrl$"#,
        drop_function = drop_function_sql(),
        prefix = prefix_expr(),
        not_schema = NOT_SCHEMA,
        temp_re = TEMP_SCHEMA_RE,
        mixed = literal(MANUAL_MIXED),
        nested = literal(MANUAL_NESTED),
        ctas = literal(MANUAL_CTAS),
        scs = literal(MANUAL_SCS),
        path = path_expr(),
    )
}

/// The caller's search path as `stash_search_path` kept it for this statement (a JSON array
/// of schema names), or NULL.
fn path_expr() -> String {
    format!(
        "CASE WHEN current_setting('{PATH_GUC}', true) LIKE '[%' \
         THEN current_setting('{PATH_GUC}', true)::jsonb END"
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
    temps int := 0;
    others int := 0;
    ctx text;
    manual text;
BEGIN
    IF tg_tag NOT LIKE 'DROP %' OR tg_tag IN ({not_schema}) THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE original LOOP
        IF r.is_temporary OR coalesce(r.schema_name, '') ~ {temp_re}
            OR coalesce(r.address_names[1], '') ~ {temp_re} THEN
            temps := temps + 1;
        ELSE
            others := others + 1;
        END IF;
        objects := objects || jsonb_build_object(
            'type', r.object_type, 'identity', r.object_identity, 'schema', r.schema_name);
    END LOOP;
    IF others = 0 THEN
        RETURN;
    END IF;
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    IF temps > 0 THEN
        manual := {mixed};
    ELSIF strpos(ctx, E'\n') > 0 THEN
        manual := {nested};
    ELSIF tg_tag = 'DROP OWNED' THEN
        manual := {owned};
    ELSIF current_setting('standard_conforming_strings') <> 'on' THEN
        manual := {scs};
    END IF;
    PERFORM pg_logical_emit_message(true, {prefix},
        (jsonb_build_object('tag', tg_tag, 'query', current_query(), 'objects', objects,
            'search_path', {path})
            || CASE WHEN manual IS NULL THEN '{{}}' ELSE jsonb_build_object('manual', manual) END)::text);
END
$pgrl$"#,
        prefix = prefix_expr(),
        not_schema = NOT_SCHEMA,
        temp_re = TEMP_SCHEMA_RE,
        mixed = literal(MANUAL_MIXED),
        nested = literal(MANUAL_NESTED),
        owned = literal(MANUAL_OWNED),
        scs = literal(MANUAL_SCS),
        path = path_expr(),
    )
}

pub fn teardown_sql() -> String {
    format!(
        "DROP EVENT TRIGGER IF EXISTS {TRIGGER}; DROP EVENT TRIGGER IF EXISTS {TRIGGER}_drop; \
         DROP EVENT TRIGGER IF EXISTS {TRIGGER}_path; \
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
        // What gets no record, and what is marked for applying by hand (module comment).
        assert_eq!(sql.matches("OR tg_tag IN ('GRANT', 'REVOKE', 'ALTER DEFAULT PRIVILEGES'").count(), 2);
        assert_eq!(sql.matches("~ '^pg_(toast_)?temp(_[0-9]+)?$'").count(), 5);
        assert_eq!(sql.matches("IF others = 0 THEN\n        RETURN;").count(), 2);
        assert_eq!(sql.matches("ELSIF strpos(ctx, E'\\n') > 0 THEN").count(), 2);
        assert!(sql.contains("ELSIF tg_tag IN ('CREATE TABLE AS', 'SELECT INTO') THEN"));
        assert!(sql.contains("ELSIF tg_tag = 'DROP OWNED' THEN"));
        assert_eq!(sql.matches("jsonb_build_object('manual', manual)").count(), 2);
        assert!(sql.contains(
            "CREATE EVENT TRIGGER pgrecvlogical_ddl_path ON ddl_command_start\n            EXECUTE FUNCTION pgrecvlogical.stash_search_path()"
        ));
        assert_eq!(
            sql.matches("'search_path', CASE WHEN current_setting('pgrecvlogical.search_path', true)")
                .count(),
            2
        );
        assert!(teardown_sql().contains("DROP EVENT TRIGGER IF EXISTS pgrecvlogical_ddl_path"));
    }
}
