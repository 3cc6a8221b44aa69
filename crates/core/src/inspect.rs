//! `zephr-etl inspect`: what an export holds, without writing tables.
//!
//! The inputs are framed and decoded exactly as `convert` does (same framer, same item
//! decoder), one item at a time, and only counters are kept: memory does not grow with the
//! input. Distinct attribute keys, products and entitlement types are tracked up to a cap
//! each; values past the cap are counted in `untracked` and the report says it was capped.
//! Items that `convert` would call bad are counted (with the first one's problem), not fatal;
//! broken framing (a truncated export, a missing comma between items) stops the run as it
//! would stop `convert`, while an item whose own JSON is broken is counted as bad.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use serde::Serialize;

use crate::error::InputError;
use crate::flatten::decode::decode;
use crate::flatten::item::Item;
use crate::flatten::json::Leaf;
use crate::flatten::problem::DecodeError;
use crate::source::drive::{self, Input};
use crate::source::framer::{FramerOptions, RawBatch};
use crate::timestamp::write_timestamp;

/// The value types of the attributes table, in report order.
pub(crate) const VALUE_TYPES: [&str; 6] =
    ["string", "number", "boolean", "null", "object", "array"];

/// One attribute key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyReport {
    /// The attribute key, exactly as in the export.
    pub key: String,
    /// Users whose attributes have the key (whatever the value, null included).
    pub users: u64,
    /// Users whose value for the key is not null.
    pub non_null: u64,
    /// `non_null` / all users, rounded to 4 decimals.
    pub fill_rate: f64,
    /// Values per type (`string`, `number`, `boolean`, `null`, `object`, `array`).
    pub types: std::collections::BTreeMap<String, u64>,
}

/// One value of a grant field and how many grants have it (`value` null: grants without).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueCount {
    /// The field's value; `None` counts the grants where it is absent or null.
    pub value: Option<String>,
    /// Grants with this value.
    pub grants: u64,
}

/// A capped list of value counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    /// The tracked values, most grants first (ties by value).
    pub values: Vec<ValueCount>,
    /// More distinct values than the cap: those past it are only counted in `untracked`.
    pub capped: bool,
    /// Grants whose value was not tracked because of the cap.
    pub untracked: u64,
}

/// The registration date range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DateRange {
    /// The earliest `user.registered`, as a UTC timestamp (`2021-02-24T15:43:28Z`); `None`
    /// when no user has one.
    pub first: Option<String>,
    /// The latest `user.registered`, in the same form; `None` when no user has one.
    pub last: Option<String>,
    /// Users without a registration time.
    pub missing: u64,
}

/// Attribute keys, capped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeysReport {
    /// The tracked keys, most users first (ties by key).
    pub keys: Vec<KeyReport>,
    /// More distinct keys than the cap: values under those past it are only counted in
    /// `untracked`.
    pub capped: bool,
    /// Attribute values under keys past the cap.
    pub untracked: u64,
}

/// What `inspect` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The inputs' names, as the caller passed them to [`Inspector::finish`].
    pub inputs: Vec<String>,
    /// Items read (users plus bad items).
    pub items: u64,
    /// Items that become a users row.
    pub users: u64,
    /// Items `convert` would call bad (broken item JSON included).
    pub bad_items: u64,
    /// The first bad item's problem, as `convert` would report it.
    pub first_bad_item: Option<String>,
    /// Grants of all users (rows of the grants table).
    pub grants: u64,
    /// Attribute values of all users (rows of the attributes table).
    pub attributes: u64,
    /// Users with at least one grant.
    pub users_with_grants: u64,
    /// Users with at least one attribute.
    pub users_with_attributes: u64,
    /// When the users registered.
    pub registered: DateRange,
    /// The attribute keys and how they are filled.
    pub attribute_keys: KeysReport,
    /// Grants per `entitlement_type`.
    pub entitlement_types: Counts,
    /// Grants per `product_id`.
    pub products: Counts,
    /// Grants per `expiry_state`.
    pub expiry_states: Counts,
}

struct KeyStats {
    users: u64,
    non_null: u64,
    types: [u64; 6],
    last_item: u64,
}

/// A capped map of counters in first-seen order.
struct Capped {
    index: HashMap<Option<String>, usize>,
    values: Vec<(Option<String>, u64)>,
    cap: usize,
    untracked: u64,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped {
            index: HashMap::new(),
            values: Vec::new(),
            cap,
            untracked: 0,
        }
    }

    fn add(&mut self, value: Option<&str>) {
        let key = value.map(str::to_owned);
        match self.index.get(&key) {
            Some(&i) => self.values[i].1 += 1,
            None if self.values.len() < self.cap => {
                self.index.insert(key.clone(), self.values.len());
                self.values.push((key, 1));
            }
            None => self.untracked += 1,
        }
    }

    fn report(self) -> Counts {
        let mut values: Vec<ValueCount> = self
            .values
            .into_iter()
            .map(|(value, grants)| ValueCount { value, grants })
            .collect();
        values.sort_by(|a, b| b.grants.cmp(&a.grants).then_with(|| a.value.cmp(&b.value)));
        Counts {
            values,
            capped: self.untracked > 0,
            untracked: self.untracked,
        }
    }
}

/// Accumulates the report item by item.
pub struct Inspector {
    max_keys: usize,
    items: u64,
    users: u64,
    bad_items: u64,
    first_bad_item: Option<String>,
    grants: u64,
    attributes: u64,
    users_with_grants: u64,
    users_with_attributes: u64,
    first_registered: Option<i64>,
    last_registered: Option<i64>,
    missing_registered: u64,
    key_index: HashMap<String, usize>,
    keys: Vec<(String, KeyStats)>,
    untracked_keys: u64,
    entitlement_types: Capped,
    products: Capped,
    expiry_states: Capped,
}

impl Inspector {
    /// An empty report that tracks at most `max_keys` distinct values of each list.
    pub fn new(max_keys: usize) -> Inspector {
        Inspector {
            max_keys,
            items: 0,
            users: 0,
            bad_items: 0,
            first_bad_item: None,
            grants: 0,
            attributes: 0,
            users_with_grants: 0,
            users_with_attributes: 0,
            first_registered: None,
            last_registered: None,
            missing_registered: 0,
            key_index: HashMap::new(),
            keys: Vec::new(),
            untracked_keys: 0,
            entitlement_types: Capped::new(max_keys),
            products: Capped::new(max_keys),
            expiry_states: Capped::new(max_keys),
        }
    }

    /// Reads every item of `reader` (named `name` in messages).
    pub fn read(
        &mut self,
        reader: Box<dyn Read + Send>,
        name: Arc<str>,
        opts: FramerOptions,
    ) -> Result<(), InputError> {
        let first_number = self.items + 1;
        drive::for_each_batch([Ok(Input { name, reader })], opts, first_number, |batch| {
            for index in 0..batch.items.len() {
                self.item(batch, index);
            }
        })?;
        Ok(())
    }

    fn item(&mut self, batch: &RawBatch, index: usize) {
        self.items += 1;
        let bytes = batch.item_bytes(index);
        let mut item = Item::default();
        let outcome = match std::str::from_utf8(bytes) {
            Ok(text) => decode(text, &mut item).map_err(|e| match e {
                DecodeError::Bad { path, problem } if path.is_empty() => problem.to_string(),
                DecodeError::Bad { path, problem } => format!("{problem} (field {path})"),
                DecodeError::Invalid { problem, .. } => format!("invalid JSON: {problem}"),
                DecodeError::Broken => "the item is not valid JSON".to_string(),
            }),
            Err(_) => Err("the item is not valid UTF-8".to_string()),
        };
        if let Err(problem) = outcome {
            self.bad_items += 1;
            if self.first_bad_item.is_none() {
                let location = batch.location(index);
                self.first_bad_item = Some(format!(
                    "item {} at {} byte {}: {problem}",
                    batch.items[index].number, location.input, location.offset
                ));
            }
            return;
        }
        self.users += 1;
        match item.registered {
            Some(t) => {
                self.first_registered = Some(self.first_registered.map_or(t, |f| f.min(t)));
                self.last_registered = Some(self.last_registered.map_or(t, |l| l.max(t)));
            }
            None => self.missing_registered += 1,
        }
        self.grants += item.grants.len() as u64;
        self.users_with_grants += u64::from(!item.grants.is_empty());
        for grant in &item.grants {
            self.entitlement_types
                .add(grant.entitlement_type.as_deref());
            self.products.add(grant.product_id.as_deref());
            self.expiry_states.add(grant.expiry_state.as_deref());
        }
        self.attributes += item.attributes.len() as u64;
        self.users_with_attributes += u64::from(!item.attributes.is_empty());
        for (key, leaf) in &item.attributes {
            let at = match self.key_index.get(key.as_ref()) {
                Some(&at) => at,
                None if self.keys.len() < self.max_keys => {
                    self.key_index.insert(key.to_string(), self.keys.len());
                    self.keys.push((
                        key.to_string(),
                        KeyStats {
                            users: 0,
                            non_null: 0,
                            types: [0; 6],
                            last_item: 0,
                        },
                    ));
                    self.keys.len() - 1
                }
                None => {
                    self.untracked_keys += 1;
                    continue;
                }
            };
            let stats = &mut self.keys[at].1;
            let kind = VALUE_TYPES
                .iter()
                .position(|t| *t == leaf.type_name())
                .unwrap_or(0);
            stats.types[kind] += 1;
            // A key given twice in one item counts that user once.
            if stats.last_item != self.items {
                stats.last_item = self.items;
                stats.users += 1;
                stats.non_null += u64::from(!matches!(leaf, Leaf::Null));
            }
        }
    }

    /// The report, with `inputs` as the inputs' names.
    pub fn finish(self, inputs: Vec<String>) -> Report {
        let users = self.users;
        let mut keys: Vec<KeyReport> = self
            .keys
            .into_iter()
            .map(|(key, s)| KeyReport {
                key,
                users: s.users,
                non_null: s.non_null,
                fill_rate: if users == 0 {
                    0.0
                } else {
                    (s.non_null as f64 / users as f64 * 10_000.0).round() / 10_000.0
                },
                types: VALUE_TYPES
                    .iter()
                    .zip(s.types)
                    .filter(|(_, n)| *n > 0)
                    .map(|(t, n)| (t.to_string(), n))
                    .collect(),
            })
            .collect();
        keys.sort_by(|a, b| b.users.cmp(&a.users).then_with(|| a.key.cmp(&b.key)));
        let text = |micros: Option<i64>| {
            micros.map(|m| {
                let mut out = Vec::new();
                write_timestamp(&mut out, m);
                String::from_utf8_lossy(&out).into_owned()
            })
        };
        Report {
            inputs,
            items: self.items,
            users,
            bad_items: self.bad_items,
            first_bad_item: self.first_bad_item,
            grants: self.grants,
            attributes: self.attributes,
            users_with_grants: self.users_with_grants,
            users_with_attributes: self.users_with_attributes,
            registered: DateRange {
                first: text(self.first_registered),
                last: text(self.last_registered),
                missing: self.missing_registered,
            },
            attribute_keys: KeysReport {
                keys,
                capped: self.untracked_keys > 0,
                untracked: self.untracked_keys,
            },
            entitlement_types: self.entitlement_types.report(),
            products: self.products.report(),
            expiry_states: self.expiry_states.report(),
        }
    }
}

/// The report as a plain-text table for a terminal.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "Inputs:      {}", report.inputs.join(", "));
    let _ = writeln!(
        out,
        "Users:       {} ({} items, {} bad)",
        report.users, report.items, report.bad_items
    );
    if let Some(first) = &report.first_bad_item {
        let _ = writeln!(out, "             first bad item: {first}");
    }
    let _ = writeln!(
        out,
        "Grants:      {} ({} users with grants)",
        report.grants, report.users_with_grants
    );
    let _ = writeln!(
        out,
        "Attributes:  {} ({} users with attributes)",
        report.attributes, report.users_with_attributes
    );
    let range = &report.registered;
    let _ = writeln!(
        out,
        "Registered:  {} .. {}{}",
        range.first.as_deref().unwrap_or("-"),
        range.last.as_deref().unwrap_or("-"),
        if range.missing > 0 {
            format!(" ({} users without a date)", range.missing)
        } else {
            String::new()
        }
    );
    let keys = &report.attribute_keys;
    let _ = writeln!(
        out,
        "\nAttribute keys ({}{}):",
        keys.keys.len(),
        if keys.capped {
            format!(", capped; {} values under further keys", keys.untracked)
        } else {
            String::new()
        }
    );
    let width = keys
        .keys
        .iter()
        .map(|k| k.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let _ = writeln!(
        out,
        "  {:width$}  {:>10}  {:>7}  types",
        "key", "users", "fill"
    );
    for key in &keys.keys {
        let types: Vec<String> = key.types.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(
            out,
            "  {:width$}  {:>10}  {:>6.1}%  {}",
            key.key,
            key.users,
            key.fill_rate * 100.0,
            types.join(", ")
        );
    }
    for (title, counts) in [
        ("Entitlement types", &report.entitlement_types),
        ("Products", &report.products),
        ("Expiry states", &report.expiry_states),
    ] {
        let _ = writeln!(
            out,
            "\n{title} ({}{}):",
            counts.values.len(),
            if counts.capped {
                format!(", capped; {} grants with further values", counts.untracked)
            } else {
                String::new()
            }
        );
        let width = counts
            .values
            .iter()
            .map(|v| v.value.as_deref().map_or(6, str::len))
            .max()
            .unwrap_or(0);
        for value in &counts.values {
            let _ = writeln!(
                out,
                "  {:width$}  {:>10} grants",
                value.value.as_deref().unwrap_or("(none)"),
                value.grants
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_an_export() {
        let export = br#"[
 {"user":{"user_id":"a","registered":"2021-02-24T15:43:28Z","attributes":{"x":1,"y":null}},
  "grants":{"results":[{"product_id":"gold","entitlement_type":"bundle"}]}},
 {"user":{"user_id":"b","registered":"2020-01-01","attributes":{"x":"s","x":true}},"grants":[]},
 {"user":{}},
 {"user":{"user_id":"c","attributes":{"z":[1],"w":{}}},
  "grants":[{"product_id":"gold"},{"product_id":"silver","entitlement_type":"meter"}]}
]"#;
        let mut inspector = Inspector::new(3);
        inspector
            .read(
                Box::new(&export[..]),
                Arc::from("e.json"),
                FramerOptions::default(),
            )
            .unwrap();
        let report = inspector.finish(vec!["e.json".into()]);
        assert_eq!((report.items, report.users, report.bad_items), (4, 3, 1));
        assert_eq!((report.grants, report.users_with_grants), (3, 2));
        assert_eq!((report.attributes, report.users_with_attributes), (6, 3));
        assert_eq!(
            report.registered.first.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        assert_eq!(
            report.registered.last.as_deref(),
            Some("2021-02-24T15:43:28Z")
        );
        assert_eq!(report.registered.missing, 1);
        let x = &report.attribute_keys.keys[0];
        assert_eq!((x.key.as_str(), x.users, x.non_null), ("x", 2, 2));
        assert_eq!(x.fill_rate, 0.6667);
        assert_eq!(x.types.len(), 3);
        assert!(report.attribute_keys.capped);
        assert_eq!(report.attribute_keys.untracked, 1);
        assert_eq!(
            report.products.values[0],
            ValueCount {
                value: Some("gold".into()),
                grants: 2
            }
        );
        assert_eq!(report.entitlement_types.values.len(), 3);
        assert!(render(&report).contains("Users:       3 (4 items, 1 bad)"));
    }
}
