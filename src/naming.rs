//! Column names every warehouse accepts.
//!
//! BigQuery is the strictest of the engines the tables are loaded into: a column name is at
//! most 300 characters of ASCII letters, digits and `_`, does not start with a digit, does not
//! start with one of its reserved prefixes, and names differ case-insensitively. A name that
//! passes here also passes Snowflake, Redshift, Spark, Trino and DuckDB unquoted.
//!
//! The base columns in `schemas/` already follow these rules (a test checks it). Names that
//! come from the data (attribute keys for `--wide-attributes`, the columns of a state-events
//! source in Parquet) go through [`sanitise`] and [`make_unique`].

use std::collections::HashSet;

/// The longest column name BigQuery accepts, in characters.
pub const MAX_NAME_CHARS: usize = 300;

/// Prefixes BigQuery reserves for its own pseudo-columns (compared case-insensitively).
pub const RESERVED_PREFIXES: [&str; 6] = [
    "_table_",
    "_file_",
    "_partition",
    "_row_timestamp",
    "__root__",
    "_colidentifier",
];

/// Whether `name` is a column name BigQuery accepts as it is.
pub fn is_warehouse_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_CHARS
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
        && !is_reserved(name)
}

fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// Replaces every character outside `[A-Za-z0-9_]` by `_` (one `_` per character, not per
/// byte, so `prénom` becomes `pr_nom`).
pub fn replace_invalid(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A warehouse-safe name for a source column: invalid characters become `_`; a name that is
/// empty, starts with a digit or a reserved prefix gets a prefix (`_` before a digit, `c`
/// before a reserved prefix, `column` for an empty name); long names are cut to
/// [`MAX_NAME_CHARS`]. The result may still collide with another; see [`make_unique`].
pub fn sanitise(name: &str) -> String {
    let mut out = replace_invalid(name);
    if out.is_empty() {
        out = "column".to_string();
    } else if out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    } else if is_reserved(&out) {
        out.insert(0, 'c');
    }
    out.truncate(MAX_NAME_CHARS);
    out
}

/// Makes `names` unique, case-insensitively, in order: the first keeps its name, later ones
/// get `_2`, `_3`, ... (the first suffix that is free), cut so the result stays within
/// [`MAX_NAME_CHARS`]. `taken` holds names already in use (the base columns), lowercased.
pub fn make_unique(names: Vec<String>, taken: &[&str]) -> Vec<String> {
    let mut used: HashSet<String> = taken.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut candidate = name.clone();
        let mut n = 1u64;
        while used.contains(&candidate.to_ascii_lowercase()) {
            n += 1;
            let suffix = format!("_{n}");
            let mut base = name.clone();
            base.truncate(MAX_NAME_CHARS - suffix.len());
            candidate = base + &suffix;
        }
        used.insert(candidate.to_ascii_lowercase());
        out.push(candidate);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;

    #[test]
    fn every_base_column_is_a_warehouse_name() {
        for table in Table::ALL {
            for column in &table.def().columns {
                assert!(is_warehouse_name(&column.name), "{}", column.name);
            }
        }
    }

    #[test]
    fn sanitises_what_warehouses_refuse() {
        assert_eq!(sanitise("first-name"), "first_name");
        assert_eq!(sanitise("prénom"), "pr_nom");
        assert_eq!(sanitise("1st"), "_1st");
        assert_eq!(sanitise(""), "column");
        assert_eq!(sanitise("_TABLE_x"), "c_TABLE_x");
        assert_eq!(sanitise("event time (UTC)"), "event_time__UTC_");
        assert_eq!(sanitise(&"x".repeat(400)).len(), MAX_NAME_CHARS);
        for name in ["first-name", "prénom", "1st", "", "_TABLE_x", "a b"] {
            assert!(is_warehouse_name(&sanitise(name)), "{name}");
        }
        assert!(!is_warehouse_name("a-b"));
        assert!(!is_warehouse_name("9a"));
        assert!(!is_warehouse_name("_PARTITIONTIME"));
    }

    #[test]
    fn suffixes_collisions_case_insensitively() {
        let names = ["a_b", "A_B", "a_b", "a_b_2", "user_id"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            make_unique(names, &["user_id"]),
            ["a_b", "A_B_2", "a_b_3", "a_b_2_2", "user_id_2"]
        );
        let long = "y".repeat(MAX_NAME_CHARS);
        let unique = make_unique(vec![long.clone(), long], &[]);
        assert_eq!(unique[1].len(), MAX_NAME_CHARS);
        assert!(unique[1].ends_with("_2"));
    }
}
