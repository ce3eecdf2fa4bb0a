//! The SQL the store runs, built once per store from its (validated, quoted) names, so requests
//! never format SQL.

use sesame_core::META_KEY;

/// The user id of a row, as the user index holds it: `sess -> 'sesame' ->> 'user'`, the `user`
/// member of the meta object as text, or NULL when there is none. The same expression for `json`
/// and `jsonb` columns (both have `->` and `->>`), and it never fails, whatever `sess` holds (on an
/// array, a scalar or a meta object that is not an object it is NULL), so the index can never make
/// a write fail. The query must spell it the same way for PostgreSQL to use the index.
pub(crate) fn user_expression() -> String {
    // META_KEY is a constant of plain letters: safe as a literal.
    format!("(\"sess\" -> '{META_KEY}' ->> 'user')")
}

/// PostgreSQL's longest identifier (`NAMEDATALEN - 1` bytes); a longer one would be truncated
/// silently, and two long names could then meet in one table.
pub(crate) const MAX_IDENTIFIER_LEN: usize = 63;

/// Why a name cannot be a PostgreSQL identifier, or `None` when it can.
pub(crate) fn identifier_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_IDENTIFIER_LEN {
        Some("it is longer than PostgreSQL's 63 bytes")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    }
}

/// `name` as a quoted identifier (`"na""me"`). Quoting keeps the exact spelling (case included),
/// as connect-pg-simple's quoting does, and makes every valid name safe to put in SQL.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `zone` may be written into SQL as a time zone literal: the characters of IANA names
/// (`Europe/Berlin`, `UTC`, `Etc/GMT+2`) and of offsets (`+02:00`), nothing that could end a
/// string literal.
pub(crate) fn is_valid_time_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 64
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '/' | ':' | '.'))
}

/// The (quoted) names of one session table.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    /// `"schema"."table"`, or `"table"` (found through `search_path`) without a schema.
    pub(crate) table: String,
    /// `"schema"`, when one is configured.
    pub(crate) schema: Option<String>,
    /// The expire index: `"IDX_session_expire"` for connect-pg-simple's table name, else
    /// `"IDX_<table>_expire"`.
    pub(crate) index: String,
    /// The user index, quoted: `"IDX_session_user"` (`"IDX_<table>_user"`, shortened with a hash
    /// when that is longer than an identifier may be).
    pub(crate) user_index: String,
    /// The user index's name as PostgreSQL stores it (unquoted), to look it up in the catalog.
    pub(crate) user_index_name: String,
    /// The time zone literal `'UTC'` in which `expire` holds wall-clock time.
    pub(crate) zone: String,
}

impl Names {
    pub(crate) fn new(schema: Option<&str>, table: &str, zone: &str) -> Self {
        let quoted_table = quote_identifier(table);
        let schema = schema.map(quote_identifier);
        let user_index_name = user_index_name(table);
        Self {
            table: match &schema {
                Some(schema) => format!("{schema}.{quoted_table}"),
                None => quoted_table,
            },
            schema,
            index: quote_identifier(&format!("IDX_{table}_expire")),
            user_index: quote_identifier(&user_index_name),
            user_index_name,
            zone: format!("'{zone}'"),
        }
    }

    /// The statements that create the table and its indexes when missing: connect-pg-simple's
    /// `table.sql` with `jsonb` for `sess`, and the user index.
    pub(crate) fn create_table(&self) -> String {
        let Self { table, index, .. } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\n  \
             \"sid\" varchar NOT NULL COLLATE \"default\" PRIMARY KEY,\n  \
             \"sess\" jsonb NOT NULL,\n  \
             \"expire\" timestamp(6) NOT NULL\n);\n\
             CREATE INDEX IF NOT EXISTS {index} ON {table} (\"expire\");\n{}",
            self.create_user_index(false)
        )
    }

    /// The statement that creates the user index: an expression index on the row's user id,
    /// partial so that it holds only the sessions somebody is logged in to (anonymous sessions,
    /// usually most rows, cost it nothing). `concurrently` builds it without blocking writes, for
    /// a table that is already in use.
    pub(crate) fn create_user_index(&self, concurrently: bool) -> String {
        let Self {
            table, user_index, ..
        } = self;
        let concurrently = if concurrently { " CONCURRENTLY" } else { "" };
        let user = user_expression();
        format!(
            "CREATE INDEX{concurrently} IF NOT EXISTS {user_index} ON {table} ({user})\n  \
             WHERE {user} IS NOT NULL;\n"
        )
    }
}

/// The user index's name for `table`: `IDX_<table>_user`, or, when that is longer than
/// PostgreSQL keeps (it would cut the name silently, and the cut name could be the expire index's
/// cut the same way), the table name shortened and a hash of it in its place.
fn user_index_name(table: &str) -> String {
    let name = format!("IDX_{table}_user");
    if name.len() <= MAX_IDENTIFIER_LEN {
        return name;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in table.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // "IDX_" + prefix + "_" + 8 hex digits + "_user" within 63 bytes.
    let mut end = MAX_IDENTIFIER_LEN - 4 - 1 - 8 - 5;
    while !table.is_char_boundary(end) {
        end -= 1;
    }
    format!("IDX_{}_{hash:08x}_user", &table[..end])
}

/// The type of the `sess` column: connect-pg-simple's `table.sql` says `json`, sesame creates
/// `jsonb`; both are read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessType {
    Json,
    Jsonb,
}

/// Every statement of the store, for one table and one `sess` column type.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) load: String,
    pub(crate) save: String,
    pub(crate) create: String,
    pub(crate) destroy: String,
    pub(crate) touch: String,
    pub(crate) patch: String,
    pub(crate) swap: String,
    pub(crate) ids: String,
    pub(crate) all: String,
    pub(crate) len: String,
    pub(crate) clear: String,
    pub(crate) prune: String,
    pub(crate) user_sessions: String,
}

impl Queries {
    pub(crate) fn new(names: &Names, sess_type: SessType) -> Self {
        let table = &names.table;
        // A point in time (a bound timestamptz) as the wall-clock time `expire` holds: explicit,
        // so the session's TimeZone setting never matters.
        let at = |n: u8| format!("(${n}::timestamptz AT TIME ZONE {})", names.zone);
        // A jsonb value as the column's type.
        let to_column = match sess_type {
            SessType::Json => "::json",
            SessType::Jsonb => "",
        };
        let param = match sess_type {
            SessType::Json => "::json",
            SessType::Jsonb => "::jsonb",
        };
        Self {
            load: format!(
                "SELECT sess::text FROM {table} WHERE sid = $1 AND expire > {}",
                at(2)
            ),
            // The upsert of connect-pg-simple.
            save: format!(
                "INSERT INTO {table} (sid, sess, expire) VALUES ($1, $2{param}, {}) \
                 ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire",
                at(3)
            ),
            // Insert-only, except over a dead row that pruning has not removed yet; no row back
            // means a live session holds the id.
            create: format!(
                "INSERT INTO {table} AS s (sid, sess, expire) VALUES ($1, $2{param}, {}) \
                 ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire \
                 WHERE s.expire <= {} RETURNING 1",
                at(3),
                at(4)
            ),
            destroy: format!("DELETE FROM {table} WHERE sid = $1"),
            // Only `expire`, and only of a live row: a touch never revives a session.
            touch: format!(
                "UPDATE {table} SET expire = {} WHERE sid = $1 AND expire > {}",
                at(2),
                at(3)
            ),
            // One UPDATE of the live row: remove the removed keys, merge the set keys and the
            // cookie. Under READ COMMITTED a concurrent writer's UPDATE waits for the row lock and
            // then recomputes from the row as committed, so nobody's keys are lost; a DELETE that
            // commits first leaves nothing to update, so a patch never brings a session back. A
            // stored value that is not an object is left alone and reported (`false`).
            patch: format!(
                "UPDATE {table} SET \
                 sess = CASE WHEN jsonb_typeof(sess::jsonb) = 'object' \
                   THEN ((sess::jsonb - $2::text[]) || $3::jsonb){to_column} ELSE sess END, \
                 expire = CASE WHEN jsonb_typeof(sess::jsonb) = 'object' THEN {} ELSE expire END \
                 WHERE sid = $1 AND expire > {} \
                 RETURNING jsonb_typeof(sess::jsonb) = 'object'",
                at(4),
                at(5)
            ),
            // Compare-and-swap of one key in one statement. `cur` locks the live row (after
            // waiting for any writer holding it) and reads the key from the row as committed;
            // `upd` then writes only if that value is the expected one (SQL NULL: absent). The
            // answer is no row (missing), or whether it swapped and the value found.
            swap: format!(
                "WITH cur AS ( \
                   SELECT sess::jsonb -> $2 AS v, jsonb_typeof(sess::jsonb) = 'object' AS obj \
                   FROM {table} WHERE sid = $1 AND expire > {} FOR UPDATE \
                 ), upd AS ( \
                   UPDATE {table} SET sess = (CASE WHEN $5::jsonb IS NULL THEN sess::jsonb - $2 \
                     ELSE sess::jsonb || jsonb_build_object($2, $5::jsonb) END){to_column} \
                   WHERE sid = $1 \
                     AND EXISTS (SELECT 1 FROM cur WHERE obj AND v IS NOT DISTINCT FROM $4::jsonb) \
                   RETURNING 1 \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM upd), obj, v::text FROM cur",
                at(3)
            ),
            ids: format!("SELECT sid FROM {table} WHERE expire > {}", at(1)),
            all: format!(
                "SELECT sid, sess::text FROM {table} WHERE expire > {}",
                at(1)
            ),
            len: format!("SELECT count(*) FROM {table} WHERE expire > {}", at(1)),
            clear: format!("DELETE FROM {table}"),
            // One bounded batch. SKIP LOCKED: rows a request is writing, or another instance is
            // pruning, are left for the next batch instead of waited for.
            prune: format!(
                "DELETE FROM {table} WHERE sid IN ( \
                   SELECT sid FROM {table} WHERE expire <= {} LIMIT $2 FOR UPDATE SKIP LOCKED)",
                at(1)
            ),
            // The user index's expression, compared with `=`: PostgreSQL uses the partial index
            // (a strict `=` implies its `IS NOT NULL`). Written as it is in the index, on `sess`
            // itself (not `sess::jsonb`), so that it matches on a `json` column too.
            user_sessions: format!(
                "SELECT sid, sess::text FROM {table} WHERE {} = $1 AND expire > {}",
                user_expression(),
                at(2)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("session"), "\"session\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
        let names = Names::new(Some("my schema"), "Sess\"ions", "UTC");
        assert_eq!(names.table, "\"my schema\".\"Sess\"\"ions\"");
        assert_eq!(names.index, "\"IDX_Sess\"\"ions_expire\"");
        assert_eq!(names.zone, "'UTC'");
    }

    #[test]
    fn the_default_table_matches_connect_pg_simple() {
        let names = Names::new(None, "session", "UTC");
        assert_eq!(names.table, "\"session\"");
        assert_eq!(names.index, "\"IDX_session_expire\"");
        let sql = names.create_table();
        assert!(sql.contains("\"sess\" jsonb NOT NULL"), "{sql}");
        assert!(sql.contains("\"expire\" timestamp(6) NOT NULL"), "{sql}");
    }

    #[test]
    fn the_user_index_is_an_expression_index_on_the_meta_user() {
        let names = Names::new(None, "session", "UTC");
        assert_eq!(names.user_index, "\"IDX_session_user\"");
        assert_eq!(names.user_index_name, "IDX_session_user");
        assert!(
            names.create_table().ends_with(
                "CREATE INDEX IF NOT EXISTS \"IDX_session_user\" ON \"session\" \
                 ((\"sess\" -> 'sesame' ->> 'user'))\n  \
                 WHERE (\"sess\" -> 'sesame' ->> 'user') IS NOT NULL;\n"
            ),
            "{}",
            names.create_table()
        );
        assert!(
            names
                .create_user_index(true)
                .starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS \"IDX_session_user\" ON")
        );
        let queries = Queries::new(&names, SessType::Json);
        assert!(
            queries
                .user_sessions
                .contains("WHERE (\"sess\" -> 'sesame' ->> 'user') = $1 AND expire >"),
            "{}",
            queries.user_sessions
        );
    }

    #[test]
    fn long_table_names_get_a_user_index_name_of_their_own() {
        let fits = "t".repeat(MAX_IDENTIFIER_LEN - "IDX__user".len());
        assert_eq!(user_index_name(&fits), format!("IDX_{fits}_user"));
        // PostgreSQL would cut both index names to the same 63 bytes.
        let long = "é".repeat(31);
        let name = user_index_name(&long);
        assert!(name.len() <= MAX_IDENTIFIER_LEN, "{name}");
        assert!(
            name.starts_with("IDX_é") && name.ends_with("_user"),
            "{name}"
        );
        assert_ne!(name, user_index_name(&format!("{long}x")));
    }

    #[test]
    fn bad_names_are_explained() {
        assert_eq!(identifier_problem("session"), None);
        assert_eq!(identifier_problem("we\"ird name"), None);
        assert!(identifier_problem("").is_some());
        assert!(identifier_problem(&"x".repeat(64)).is_some());
        assert!(identifier_problem("a\0b").is_some());
        assert!(identifier_problem("a\nb").is_some());
    }

    #[test]
    fn time_zones_cannot_break_out_of_the_literal() {
        for zone in [
            "UTC",
            "Europe/Berlin",
            "Etc/GMT+2",
            "+02:00",
            "America/Port-au-Prince",
        ] {
            assert!(is_valid_time_zone(zone), "{zone}");
        }
        for zone in ["", "UTC'; DROP TABLE x; --", "a b", "Europe\\Berlin"] {
            assert!(!is_valid_time_zone(zone), "{zone}");
        }
    }

    #[test]
    fn json_columns_get_casts() {
        let names = Names::new(None, "session", "UTC");
        let json = Queries::new(&names, SessType::Json);
        assert!(json.save.contains("$2::json,"), "{}", json.save);
        assert!(json.patch.contains("::json ELSE sess"), "{}", json.patch);
        let jsonb = Queries::new(&names, SessType::Jsonb);
        assert!(jsonb.save.contains("$2::jsonb,"), "{}", jsonb.save);
    }
}
