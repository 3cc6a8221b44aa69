//! Column names every warehouse accepts.
//!
//! Each engine the tables are loaded into adds a rule: BigQuery wants ASCII letters, digits
//! and `_`, no leading digit, none of its reserved prefixes, and names that differ
//! case-insensitively; PostgreSQL cuts identifiers at 63 bytes (so two long names sharing
//! their first 63 bytes would collide there). A name that passes here passes them all, and
//! Snowflake, Redshift, Spark, Trino and DuckDB too, unquoted.
//!
//! The base columns in `schemas/` already follow these rules (a test checks it). Names that
//! come from the data (attribute keys for `--wide-attributes`, the columns of a state-events
//! source in Parquet) go through [`sanitise`] (or [`fit`]) and [`make_unique`]. A name longer
//! than `MAX_NAME_CHARS` keeps its first 54 bytes and ends in `_` plus 8 hex digits of the
//! SHA-256 of the whole source name, so long keys that share a beginning still differ, and a
//! key always gets the same name whatever else the export holds.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// The longest column name, in bytes (every name is ASCII, so in characters too):
/// PostgreSQL's identifier limit, the smallest of the engines' (BigQuery allows 300).
pub(crate) const MAX_NAME_CHARS: usize = 63;

/// Hex digits of the source name's hash that end a shortened name.
const HASH_DIGITS: usize = 8;

/// Prefixes BigQuery reserves for its own pseudo-columns (compared case-insensitively).
pub(crate) const RESERVED_PREFIXES: [&str; 6] = [
    "_table_",
    "_file_",
    "_partition",
    "_row_timestamp",
    "__root__",
    "_colidentifier",
];

#[cfg(test)]
/// Whether `name` is a column name BigQuery accepts as it is.
pub(crate) fn is_warehouse_name(name: &str) -> bool {
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
pub(crate) fn replace_invalid(text: &str) -> String {
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
/// before a reserved prefix, `column` for an empty name); long names are shortened by
/// [`fit`]. The result may still collide with another; see [`make_unique`].
pub fn sanitise(name: &str) -> String {
    let mut out = replace_invalid(name);
    if out.is_empty() {
        out = "column".to_string();
    } else if out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    } else if is_reserved(&out) {
        out.insert(0, 'c');
    }
    fit(out, name)
}

/// `name` (ASCII) within `MAX_NAME_CHARS`: as it is when it fits, else its first bytes,
/// `_` and the first 8 hex digits of the SHA-256 of `source` (the name as the data gives it).
pub fn fit(mut name: String, source: &str) -> String {
    if name.len() <= MAX_NAME_CHARS {
        return name;
    }
    let hash = hex::encode(Sha256::digest(source.as_bytes()));
    // Names are ASCII (see `replace_invalid`), so any byte length is a character boundary.
    name.truncate(MAX_NAME_CHARS - 1 - HASH_DIGITS);
    name.push('_');
    name.push_str(&hash[..HASH_DIGITS]);
    name
}

/// Makes `names` unique, case-insensitively, in order: the first keeps its name, later ones
/// get `_2`, `_3`, ... (the first suffix that is free), cut so the result stays within
/// `MAX_NAME_CHARS`. `taken` holds names already in use (the base columns), lowercased.
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
        assert_eq!(sanitise(&"x".repeat(63)), "x".repeat(63));
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

    #[test]
    fn long_names_sharing_a_beginning_stay_apart_within_63_bytes() {
        let common = "a".repeat(60);
        let (one, two) = (format!("{common}-one"), format!("{common}-two"));
        let (a, b) = (sanitise(&one), sanitise(&two));
        assert_eq!(a.len(), 63);
        assert_eq!(b.len(), 63);
        assert_ne!(a, b);
        assert!(a.starts_with(&"a".repeat(54)), "{a}");
        // The suffix is the hash of the source name: the same key, the same name.
        let hash = hex::encode(Sha256::digest(one.as_bytes()));
        assert_eq!(a, format!("{}_{}", "a".repeat(54), &hash[..8]));
        assert_eq!(sanitise(&one), a);
        assert!(is_warehouse_name(&a));
    }
}
