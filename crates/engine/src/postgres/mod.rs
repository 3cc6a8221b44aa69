//! PostgreSQL as a destination of current-state tables (SPEC section 7): `-o
//! postgresql://USER@HOST:PORT/DB?schema=S` (or `postgres://`).
//!
//! The parts: this module parses the URL ([`PgTarget`]) and finds the password
//! (`password`: `PGPASSWORD`, then the pgpass file, never the URL); `copy` turns the
//! pipeline's column batches into one binary `COPY` stream into a staging table; `sql` writes
//! the statements (tables, staging, the modes, the run record); `load` runs them: one
//! connection, one transaction under an advisory lock, committed only when every table is
//! done, so that a failure or a `kill -9` at any instant leaves the previous state.
//!
//! The password is kept in a `Secret`, whose `Debug` and `Display` never show it; it goes
//! to the client library's configuration and nowhere else.

mod copy;
mod load;
mod password;
mod sql;

use std::fmt;

pub use load::{PgLoad, PgOptions, PgOutcome, PgStaged};

/// The schemes that name a PostgreSQL destination.
pub(crate) const SCHEMES: [&str; 2] = ["postgresql", "postgres"];

/// The schema used when the URL names none.
pub(crate) const DEFAULT_SCHEMA: &str = "public";

/// Whether `-o`'s text names a PostgreSQL database (it may still be malformed).
pub fn is_postgres_url(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// Why the destination cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is malformed or asks for something unsupported (exit status 2).
    #[error("{0}")]
    Url(String),
    /// The pgpass file could not be read (a configuration problem).
    #[error("cannot read the password file {path}")]
    PassFile {
        /// The password file that was found.
        path: String,
        #[source]
        /// What reading it reported.
        source: std::io::Error,
    },
    /// Connecting failed (refused, unknown host, authentication). `note` says why no
    /// password was given when the password file was ignored (empty otherwise).
    #[error("cannot connect to {dest}{note}")]
    Connect {
        /// The destination as messages show it (no password).
        dest: String,
        #[source]
        /// The client's error.
        source: postgres::Error,
        /// Why no password was sent, or empty.
        note: String,
    },
    /// A statement failed; `doing` says what the run was doing.
    #[error("{dest}: {doing} failed")]
    Sql {
        /// The destination as messages show it (no password).
        dest: String,
        /// What the run was doing (`creating the tables`).
        doing: String,
        #[source]
        /// The server's or the client's error.
        source: postgres::Error,
    },
    /// The tables hold rows and neither replacing nor merging was asked for.
    #[error("{table} already holds rows")]
    TablesHoldRows {
        /// The qualified table (`zephr.users`).
        table: String,
    },
    /// An existing table does not have the columns this run writes.
    #[error("{table} has the columns ({found}) but this run writes ({expected})")]
    TableMismatch {
        /// The qualified table (`zephr.users`).
        table: String,
        /// The columns the table has, in order.
        found: String,
        /// The columns this run writes, in order.
        expected: String,
    },
    /// The stream of rows into the staging table stopped.
    #[error("{dest}: loading the rows (COPY) failed: {reason}")]
    Copy {
        /// The destination as messages show it (no password).
        dest: String,
        /// What stopped the stream.
        reason: String,
    },
    /// The pipeline failed (bad input, a bad item, interrupted).
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

impl PgError {
    /// Whether the error is about the arguments or the configuration: exit status 2.
    pub fn is_usage(&self) -> bool {
        matches!(self, PgError::Url(_) | PgError::PassFile { .. })
    }
}

/// A password: shown as `***` by `Debug`, never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    /// The password's bytes, for the client library only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the connection uses TLS. This build has no TLS library (it would cost minutes of build
/// time for a loader that runs next to its database or through a tunnel): `prefer` connects
/// in plain text, as libpq does when the server offers no TLS, and stricter modes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `sslmode=disable`: never ask the server for TLS.
    Disable,
    /// `sslmode=prefer` (the default): plain text, as libpq falls back to without TLS.
    Prefer,
}

/// A parsed `-o postgresql://...`: everything but the password, which is never in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The role to connect as.
    pub user: String,
    /// The server's host name or address.
    pub host: String,
    /// The server's port (5432 unless the URL names one).
    pub port: u16,
    /// The database.
    pub database: String,
    /// The schema that holds the tables (created when missing).
    pub schema: String,
    /// How the connection uses TLS.
    pub sslmode: SslMode,
}

impl PgTarget {
    /// Parses `-o`'s text. A password in the URL is refused without being repeated; a user
    /// that is not in the URL comes from `PGUSER`, then `USER`.
    pub fn parse(text: &str) -> Result<PgTarget, PgError> {
        let bad = |why: &str| PgError::Url(format!("{}: {why}", redacted(text)));
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if !SCHEMES.contains(&url.scheme()) {
            return Err(bad("expected postgresql:// or postgres://"));
        }
        if url.password().is_some() {
            return Err(PgError::Url(format!(
                "{}: a password in the URL is refused (it would show in process lists and \
                 shell history); put it in PGPASSWORD or in ~/.pgpass (PGPASSFILE)",
                redacted(text)
            )));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad("not UTF-8 once decoded"))
        };
        let user = match url.username() {
            "" => std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .map_err(|_| bad("no user: write postgresql://USER@HOST/DB or set PGUSER"))?,
            name => decode(name)?,
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').into(),
            _ => return Err(bad("no host: write postgresql://USER@HOST:PORT/DB")),
        };
        let port = url.port().unwrap_or(5432);
        let database = decode(url.path().trim_start_matches('/'))?;
        if database.is_empty() || database.contains('/') {
            return Err(bad(
                "no database: write postgresql://USER@HOST:PORT/DB?schema=S",
            ));
        }
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut sslmode = SslMode::Prefer;
        for (key, value) in url.query_pairs() {
            match &*key {
                "schema" if !value.is_empty() => schema = value.into_owned(),
                "sslmode" => {
                    sslmode = match &*value {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        other => {
                            return Err(bad(&format!(
                                "sslmode={other} needs TLS, which this build does not have; \
                                 use sslmode=disable or prefer (a database on this machine, \
                                 or reached through an SSH tunnel)"
                            )));
                        }
                    }
                }
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (known: schema, sslmode)"
                    )));
                }
            }
        }
        Ok(PgTarget {
            user,
            host,
            port,
            database,
            schema,
            sslmode,
        })
    }

    /// The destination for messages and the manifest (no password: there is none in it).
    pub fn describe(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgresql://{}@{host}:{}/{}?schema={}",
            self.user, self.port, self.database, self.schema
        )
    }
}

/// `text` with anything between `//` and `@` cut down to the user name, so that a refused URL
/// can be named without its password.
pub(crate) fn redacted(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let t = PgTarget::parse("postgresql://etl@db:5433/analytics?schema=zephr").unwrap();
        assert_eq!(
            t,
            PgTarget {
                user: "etl".into(),
                host: "db".into(),
                port: 5433,
                database: "analytics".into(),
                schema: "zephr".into(),
                sslmode: SslMode::Prefer,
            }
        );
        assert_eq!(
            t.describe(),
            "postgresql://etl@db:5433/analytics?schema=zephr"
        );
        let t = PgTarget::parse("postgres://etl@127.0.0.1/a?sslmode=disable").unwrap();
        assert_eq!((t.port, t.schema.as_str()), (5432, "public"));
        assert_eq!(t.sslmode, SslMode::Disable);
    }

    #[test]
    fn refuses_passwords_without_repeating_them() {
        let e = PgTarget::parse("postgresql://etl:hunter2@db/a").unwrap_err();
        let text = e.to_string();
        assert!(e.is_usage());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.starts_with("postgresql://etl:***@db/a: a password"),
            "{text}"
        );
        assert!(text.contains("PGPASSWORD"), "{text}");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for (url, want) in [
            ("postgresql://etl@db/a?sslmode=require", "needs TLS"),
            ("postgresql://etl@db/a?search_path=x", "unknown parameter"),
            ("postgresql://etl@db/", "no database"),
            ("postgresql://etl@db:99999/a", "invalid port"),
        ] {
            let e = PgTarget::parse(url).unwrap_err();
            assert!(e.to_string().contains(want), "{url}: {e}");
            assert!(e.is_usage());
        }
    }

    #[test]
    fn recognises_both_schemes_only() {
        assert!(is_postgres_url("postgresql://u@h/d"));
        assert!(is_postgres_url("POSTGRES://u@h/d"));
        assert!(!is_postgres_url("s3://b/p"));
        assert!(!is_postgres_url("out/postgres"));
    }

    #[test]
    fn secrets_do_not_show() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
