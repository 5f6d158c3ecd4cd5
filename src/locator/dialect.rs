//! The two SQL dialects the locator speaks, SQLite (embedded, one site on one machine) and
//! PostgreSQL (several nodes sharing one site). Statements are written once with `$N`
//! placeholders, which both accept; the few constructs the dialects spell differently come
//! from here.

/// Which database the locator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect a `[locator] url` names, by its scheme.
    pub fn of_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    /// The statement that opens a write transaction. SQLite takes its one write lock up front
    /// (a deferred transaction that reads and then writes fails at once with
    /// SQLITE_BUSY_SNAPSHOT if another process wrote in between); PostgreSQL locks rows as it
    /// writes them.
    pub fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// The larger of two integer expressions.
    pub fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("MAX({a}, {b})"),
            Dialect::Postgres => format!("GREATEST({a}, {b})"),
        }
    }

    /// A subquery listing the integers of the JSON array bound at `param`, for `id IN (…)`.
    pub fn json_ints(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("(SELECT value FROM json_each({param}))"),
            Dialect::Postgres => {
                format!("(SELECT CAST(json_array_elements_text({param}::json) AS BIGINT))")
            }
        }
    }

    /// A subquery listing the strings of the JSON array bound at `param` (e.g. `$1`), for
    /// `x IN (…)` with any number of values in one bound parameter.
    pub fn json_strings(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("(SELECT value FROM json_each({param}))"),
            Dialect::Postgres => format!("(SELECT json_array_elements_text({param}::json))"),
        }
    }

    /// The distinct values of a text expression joined with commas (an aggregate).
    pub fn comma_list_distinct(self, expression: &str) -> String {
        match self {
            Dialect::Sqlite => format!("GROUP_CONCAT(DISTINCT {expression})"),
            Dialect::Postgres => format!("string_agg(DISTINCT {expression}, ',')"),
        }
    }

    /// The database's clock in Unix milliseconds, as an SQL expression. Lease expiry is
    /// judged by it alone, so nodes whose clocks disagree still agree on who holds a lease.
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Appended to a `SELECT` inside a write transaction that must keep the rows it read
    /// until commit. SQLite's write transaction already excludes every other writer.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// Numbers the `?` placeholders of a statement assembled from fragments (`$1`, `$2`, … in
/// order), so builders can push a fragment and its value together. Fragments never hold `?`
/// inside a string literal.
pub fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            number_placeholders("a = ? AND b IN (SELECT value FROM json_each(?)) LIMIT 3"),
            "a = $1 AND b IN (SELECT value FROM json_each($2)) LIMIT 3"
        );
        assert_eq!(Dialect::of_url("sqlite://x.db"), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::of_url("postgresql://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::of_url("mysql://h/db"), None);
    }
}
