//! The wide columns of `users` (`--wide-attributes`): their names and types, and each item's
//! cells.
//!
//! The columns come from Zephr's user schema or from the keys a first pass found (both in
//! `zephr_engine::wide`, which re-exports everything here); this part sits inside `flatten` because
//! the workers push the cells while they emit rows, so the tables' layout never has to reach
//! back up to the module that reads inputs.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::json::{Leaf, compact};
use crate::naming::{fit, make_unique, replace_invalid};
use crate::schema::{ColumnDef, ColumnType};
use crate::table::TableBuilder;
use crate::timestamp::parse_timestamp_micros;

/// The prefix of every wide column's name.
pub const PREFIX: &str = "attr_";

/// One field of Zephr's user schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaField {
    /// The field's key, as attribute keys in the export spell it.
    pub slug: String,
    /// `text`, `number`, `checkbox`, `date`, ... (`None` when the field has none).
    pub input_type: Option<String>,
}

/// The column type for a Zephr input type: `number` and `range` are float64, `checkbox`
/// boolean, `date` a date, `datetime` (or `datetime-local`) a timestamp; anything else,
/// and no input type, a string.
pub fn column_type_for(input_type: Option<&str>) -> ColumnType {
    match input_type.map(str::to_ascii_lowercase).as_deref() {
        Some("number" | "range") => ColumnType::Float64,
        Some("checkbox") => ColumnType::Boolean,
        Some("date") => ColumnType::Date,
        Some("datetime" | "datetime-local") => ColumnType::Timestamp,
        _ => ColumnType::String,
    }
}

/// One wide column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WideColumn {
    /// The attribute key, exactly as in the export.
    pub key: String,
    /// The column name (`attr_...`).
    pub name: String,
    /// The column's type; a value that does not fit it is left NULL and counted.
    pub column_type: ColumnType,
    /// The schema's input type, when the column came from a schema.
    pub input_type: Option<String>,
}

/// The wide columns of a run, with counters of values that did not fit.
#[derive(Debug)]
pub struct WideColumns {
    /// The columns, in the order they follow the base columns of `users`.
    pub columns: Vec<WideColumn>,
    index: HashMap<String, usize>,
    mismatches: Vec<AtomicU64>,
}

impl WideColumns {
    /// Columns for `(key, type, input type)` triples in order; names are derived here.
    fn new(keys: Vec<(String, ColumnType, Option<String>)>, base: &[&str]) -> WideColumns {
        let names = keys
            .iter()
            .map(|(key, _, _)| fit(format!("{PREFIX}{}", replace_invalid(key)), key))
            .collect();
        let names = make_unique(names, base);
        let columns: Vec<WideColumn> = keys
            .into_iter()
            .zip(names)
            .map(|((key, column_type, input_type), name)| WideColumn {
                key,
                name,
                column_type,
                input_type,
            })
            .collect();
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), i))
            .collect();
        let mismatches = columns.iter().map(|_| AtomicU64::new(0)).collect();
        WideColumns {
            columns,
            index,
            mismatches,
        }
    }

    /// Columns for the fields of a user schema, typed by their input types. `base` are the
    /// table's other column names.
    pub fn from_schema(fields: &[SchemaField], base: &[&str]) -> WideColumns {
        WideColumns::new(
            fields
                .iter()
                .map(|f| {
                    let t = column_type_for(f.input_type.as_deref());
                    (f.slug.clone(), t, f.input_type.clone())
                })
                .collect(),
            base,
        )
    }

    /// String columns for keys found in the data.
    pub fn from_keys(keys: Vec<String>, base: &[&str]) -> WideColumns {
        WideColumns::new(
            keys.into_iter()
                .map(|k| (k, ColumnType::String, None))
                .collect(),
            base,
        )
    }

    /// The columns as schema entries.
    pub(crate) fn column_defs(&self) -> Vec<ColumnDef> {
        self.columns
            .iter()
            .map(|c| ColumnDef {
                name: c.name.clone(),
                column_type: c.column_type,
                nullable: true,
                dictionary: false,
                from: match &c.input_type {
                    Some(t) => format!("user.attributes[{:?}] (input-type {t})", c.key),
                    None => format!("user.attributes[{:?}]", c.key),
                },
            })
            .collect()
    }

    /// Per column, how many values did not fit its type (left NULL), for columns with any.
    pub(crate) fn mismatches(&self) -> Vec<(&WideColumn, u64)> {
        self.columns
            .iter()
            .zip(&self.mismatches)
            .map(|(c, n)| (c, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The warning a run gives when values did not fit their wide column (they are NULL
    /// there, and in full in the attributes table); `None` when all fitted.
    pub fn mismatch_warning(&self) -> Option<String> {
        let mismatches = self.mismatches();
        if mismatches.is_empty() {
            return None;
        }
        let total: u64 = mismatches.iter().map(|(_, n)| n).sum();
        let mut columns: Vec<String> = mismatches
            .iter()
            .take(5)
            .map(|(c, n)| format!("{} {n}", c.name))
            .collect();
        if mismatches.len() > 5 {
            columns.push(format!("and {} more columns", mismatches.len() - 5));
        }
        Some(format!(
            "warning: {total} attribute values did not fit their wide column's type and were \
             left NULL there (the attributes table has them as written): {}",
            columns.join(", ")
        ))
    }

    /// Pushes one cell per wide column for an item's attributes, in column order.
    pub(crate) fn push_cells(
        &self,
        attributes: &[(Cow<'_, str>, Leaf<'_>)],
        out: &mut TableBuilder,
    ) {
        thread_local! {
            /// Per column, the index of the item's attribute that fills it (reused per item).
            static SLOTS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        }
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            slots.clear();
            slots.resize(self.columns.len(), usize::MAX);
            for (i, (key, _)) in attributes.iter().enumerate() {
                if let Some(&column) = self.index.get(key.as_ref()) {
                    // A key given twice: the last value wins, as in most JSON readers.
                    slots[column] = i;
                }
            }
            for (at, (column, &slot)) in self.columns.iter().zip(slots.iter()).enumerate() {
                let leaf = attributes.get(slot).map(|(_, leaf)| leaf);
                if !push_cell(column.column_type, leaf, out) {
                    self.mismatches[at].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// Pushes the cell of `leaf` (None = the key is absent) as `column_type`; returns false, after
/// pushing NULL, when the value does not fit the type.
fn push_cell(column_type: ColumnType, leaf: Option<&Leaf<'_>>, out: &mut TableBuilder) -> bool {
    let leaf = match leaf {
        None | Some(Leaf::Null) => {
            push_null(column_type, out);
            return true;
        }
        Some(leaf) => leaf,
    };
    match column_type {
        ColumnType::String | ColumnType::Json => {
            match leaf {
                Leaf::Object(raw) | Leaf::Array(raw) => out.text(Some(&compact(raw))),
                other => out.text(other.clone().into_text().ok().flatten().as_deref()),
            }
            true
        }
        ColumnType::Float64 => {
            let text = match leaf {
                Leaf::Number(n) => Some(*n),
                Leaf::String(s) if is_decimal(s.trim()) => Some(s.trim()),
                _ => None,
            };
            match text.and_then(|t| {
                t.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(|v| (v, t))
            }) {
                Some(value) => {
                    out.float64(Some(value));
                    true
                }
                None => {
                    out.float64(None);
                    false
                }
            }
        }
        ColumnType::Boolean => {
            let value = match leaf {
                Leaf::Bool(b) => Some(*b),
                Leaf::String(s) if s == "true" => Some(true),
                Leaf::String(s) if s == "false" => Some(false),
                _ => None,
            };
            out.boolean(value);
            value.is_some()
        }
        ColumnType::Date => {
            let value = match leaf {
                Leaf::String(s) if s.len() == 10 => parse_timestamp_micros(s)
                    .map(|micros| ((micros / 86_400_000_000) as i32, s.as_ref())),
                _ => None,
            };
            out.date(value);
            value.is_some()
        }
        ColumnType::Timestamp => {
            let value = match leaf {
                Leaf::String(s) => parse_timestamp_micros(s),
                _ => None,
            };
            out.timestamp(value);
            value.is_some()
        }
        ColumnType::Int64 => {
            let value = match leaf {
                Leaf::Number(n) => n.parse().ok(),
                _ => None,
            };
            out.int64(value);
            value.is_some()
        }
    }
}

fn push_null(column_type: ColumnType, out: &mut TableBuilder) {
    match column_type {
        ColumnType::String | ColumnType::Json => out.text(None),
        ColumnType::Float64 => out.float64(None),
        ColumnType::Boolean => out.boolean(None),
        ColumnType::Date => out.date(None),
        ColumnType::Timestamp => out.timestamp(None),
        ColumnType::Int64 => out.int64(None),
    }
}

/// Whether `s` is a number as JSON writes one (`-1`, `2.50`, `1e-3`): what a number field may
/// hold as a string. `inf`, `NaN`, `0x1F` and `+1` are not.
fn is_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_collide_into_suffixes() {
        let wide = WideColumns::from_keys(
            ["first-name", "first_name", "First Name", "éa", "_a"]
                .map(String::from)
                .to_vec(),
            &[],
        );
        let names: Vec<&str> = wide.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "attr_first_name",
                "attr_first_name_2",
                "attr_First_Name_3",
                "attr__a",
                "attr__a_2"
            ]
        );
    }

    #[test]
    fn decimal_strings() {
        for ok in ["0", "-1", "2.50", "1e3", "1E-3", "-0.0e+2"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", "1.", ".5", "+1", "inf", "NaN", "0x1F", "1e", "1 2"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
