//! Where the password comes from, as libpq looks for it: `PGPASSWORD`, then the password
//! file (`PGPASSFILE`, else `~/.pgpass`), whose lines are `host:port:database:user:password`
//! with `*` matching anything and `\` escaping `:` and `\`. Like libpq, a password file that
//! its group or others can read is ignored (with a warning for the caller to show), and no
//! password at all is not an error here: the server may not ask for one.

use std::path::PathBuf;

use super::{PgError, PgTarget, Secret};

/// The password for `target`, and a warning to show when the password file was ignored.
pub fn find(target: &PgTarget) -> Result<(Option<Secret>, Option<String>), PgError> {
    if let Ok(text) = std::env::var("PGPASSWORD")
        && !text.is_empty()
    {
        return Ok((Some(Secret::new(text)), None));
    }
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".pgpass"),
            None => return Ok((None, None)),
        },
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
        Err(source) => {
            return Err(PgError::PassFile {
                path: path.display().to_string(),
                source,
            });
        }
    };
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        return Ok((
            None,
            Some(format!(
                "the password file {} is readable by its group or others and is ignored \
                 (chmod 0600 it)",
                path.display()
            )),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|source| PgError::PassFile {
        path: path.display().to_string(),
        source,
    })?;
    Ok((lookup(&text, target).map(Secret::new), None))
}

/// The password of the first line of a pgpass file that matches `target`.
pub fn lookup(text: &str, target: &PgTarget) -> Option<String> {
    let port = target.port.to_string();
    let wanted = [
        target.host.as_str(),
        port.as_str(),
        target.database.as_str(),
        target.user.as_str(),
    ];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let fields = split_fields(line);
            (fields.len() >= 5).then_some(fields)
        })
        .find(|fields| {
            fields[..4].iter().zip(wanted).all(|(field, want)| {
                // libpq takes "localhost" for connections over the local socket too.
                field == "*" || field == want
            })
        })
        .map(|fields| fields[4..].join(":"))
}

/// The `:`-separated fields of a line, `\:` and `\\` unescaped.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c)
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::SslMode;

    fn target() -> PgTarget {
        PgTarget {
            user: "etl".into(),
            host: "db".into(),
            port: 5432,
            database: "analytics".into(),
            schema: "zephr".into(),
            sslmode: SslMode::Prefer,
        }
    }

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let file = "# comment\nother:5432:analytics:etl:no\n\
                    db:5432:analytics:bob:no\n*:5432:*:etl:pa\\:ss\\\\w:rd\n*:*:*:*:late\n";
        assert_eq!(lookup(file, &target()).as_deref(), Some("pa:ss\\w:rd"));
        assert_eq!(lookup("db:5433:*:*:x\n", &target()), None);
        assert_eq!(lookup("short:line\n", &target()), None);
    }
}
