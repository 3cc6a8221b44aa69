//! Reference flattener for integration tests: turns a Zephr export into the exact CSV cell text
//! SPEC section 3 and CONVENTIONS.md prescribe, so tests can check every cell the tool writes.
//!
//! It is deliberately simple and shares no code with the tool: it walks the raw JSON text with a
//! tiny hand-written scanner (serde_json only validates the input and unescapes strings), keeps
//! numbers and nested JSON exactly as written, and does its own calendar arithmetic. It handles
//! only well-formed items and panics on anything the tool would reject as a bad item.

// Each integration test binary includes this file and uses only part of it.
#![allow(dead_code)]

use serde_json::value::RawValue;
use std::path::Path;

/// users table columns, SPEC section 3 order.
pub const USERS_COLUMNS: &[&str] = &[
    "user_id",
    "email_address",
    "username",
    "email_verified",
    "tracking_id",
    "registered",
    "registration_tenant",
    "registration_state",
    "last_login",
    "seq_no",
    "extra",
];

/// grants table columns, SPEC section 3 order.
pub const GRANTS_COLUMNS: &[&str] = &[
    "user_id",
    "grant_id",
    "account_id",
    "expiry_state",
    "entitlement_type",
    "entitlement_id",
    "product_id",
    "start_time",
    "end_time",
    "created_at",
    "extra",
];

/// attributes table columns, SPEC section 3 order.
pub const ATTRIBUTES_COLUMNS: &[&str] = &["user_id", "key", "value", "value_type"];

/// The expected tables: one `Vec` of cells per row, `None` for NULL, `Some` for the CSV text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Rows in [`USERS_COLUMNS`] order, one per item.
    pub users: Vec<Vec<Option<String>>>,
    /// Rows in [`GRANTS_COLUMNS`] order, one per grant, items in order.
    pub grants: Vec<Vec<Option<String>>>,
    /// Rows in [`ATTRIBUTES_COLUMNS`] order, one per attribute key, in source order.
    pub attributes: Vec<Vec<Option<String>>>,
}

/// Flattens an export given as a top-level JSON array of items. Panics on anything else.
pub fn flatten_export(bytes: &[u8]) -> Tables {
    let items: Vec<&RawValue> =
        serde_json::from_slice(bytes).expect("reference: export is not a JSON array");
    flatten_items(&items)
}

/// Flattens items (each the raw JSON of one item). Panics on a bad item.
pub fn flatten_items(items: &[&RawValue]) -> Tables {
    let mut tables = Tables::default();
    for (n, item) in items.iter().enumerate() {
        flatten_item(n, item.get(), &mut tables);
    }
    tables
}

/// Reads a CSV file written by the tool: the header and the rows, where an unquoted empty cell
/// is `None` (NULL) and a quoted `""` is `Some("")`.
///
/// Strict on purpose: panics unless every record ends with `\n`, every row has the header's
/// width, and unquoted cells hold no `"` or `\r`.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut records = parse_csv(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!records.is_empty(), "{}: no header row", path.display());
    let header: Vec<String> = records
        .remove(0)
        .into_iter()
        .map(|cell| cell.unwrap_or_else(|| panic!("{}: empty header cell", path.display())))
        .collect();
    for (i, row) in records.iter().enumerate() {
        assert_eq!(
            row.len(),
            header.len(),
            "{}: row {} has {} cells, header has {}",
            path.display(),
            i + 1,
            row.len(),
            header.len()
        );
    }
    (header, records)
}

/// RFC 4180 by hand, because the csv crate reports `""` and an empty cell alike.
fn parse_csv(bytes: &[u8]) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let mut record = Vec::new();
        loop {
            let (cell, next) = parse_cell(bytes, pos)?;
            record.push(cell);
            pos = next;
            match bytes.get(pos) {
                Some(b',') => pos += 1,
                Some(b'\n') => {
                    pos += 1;
                    break;
                }
                None => return Err("last record does not end with \\n".to_owned()),
                Some(_) => return Err(format!("stray byte after quoted cell at byte {pos}")),
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// One cell starting at `start`: the cell and the position just after it.
fn parse_cell(bytes: &[u8], start: usize) -> Result<(Option<String>, usize), String> {
    let mut pos = start;
    if bytes.get(pos) != Some(&b'"') {
        while pos < bytes.len() && bytes[pos] != b',' && bytes[pos] != b'\n' {
            if bytes[pos] == b'"' || bytes[pos] == b'\r' {
                return Err(format!("unquoted cell at byte {start} holds a quote or CR"));
            }
            pos += 1;
        }
        let text =
            std::str::from_utf8(&bytes[start..pos]).map_err(|e| format!("byte {start}: {e}"))?;
        // Unquoted and empty is NULL.
        return Ok(((!text.is_empty()).then(|| text.to_owned()), pos));
    }
    pos += 1;
    let mut text = Vec::new();
    loop {
        match bytes.get(pos) {
            None => return Err(format!("unterminated quoted cell at byte {start}")),
            Some(b'"') if bytes.get(pos + 1) == Some(&b'"') => {
                text.push(b'"');
                pos += 2;
            }
            Some(b'"') => break,
            Some(&b) => {
                text.push(b);
                pos += 1;
            }
        }
    }
    let text = String::from_utf8(text).map_err(|e| format!("byte {start}: {e}"))?;
    Ok((Some(text), pos + 1))
}

fn flatten_item(n: usize, item: &str, tables: &mut Tables) {
    let members = object_members(item).unwrap_or_else(|| panic!("item {n}: not an object: {item}"));
    let user_raw = find(&members, "user").unwrap_or_else(|| panic!("item {n}: no user"));
    let user = object_members(user_raw).unwrap_or_else(|| panic!("item {n}: user not an object"));
    let user_id = find(&user, "user_id")
        .and_then(text_cell)
        .unwrap_or_else(|| panic!("item {n}: no user_id"));

    let identifiers = match find(&user, "identifiers") {
        None | Some("null") => Vec::new(),
        Some(raw) => {
            object_members(raw).unwrap_or_else(|| panic!("item {n}: identifiers not an object"))
        }
    };
    let email_verified = match find(&user, "email_verified") {
        None | Some("null") => None,
        Some(b @ ("true" | "false")) => Some(b.to_owned()),
        Some(other) => panic!("item {n}: email_verified {other}"),
    };
    let seq_no = find(&members, "seq-no").and_then(|raw| seq_no_cell(n, raw));
    let timestamp = |m: &[Member], key| find(m, key).and_then(timestamp_cell);

    // Users extra: the item with every mapped field removed and emptied objects dropped.
    // A mapped key that repeats is kept, as written, in `extra`: only its first occurrence
    // fills a column.
    let mut extra_item = Vec::new();
    let mut seen_item = std::collections::HashSet::new();
    for m in &members {
        let first = seen_item.insert(m.key.clone());
        match m.key.as_str() {
            "seq-no" | "user" | "grants" if !first => {
                extra_item.push((m.raw_key, compact(m.value)))
            }
            "seq-no" => {}
            "user" => {
                let mut extra_user = Vec::new();
                let mut seen_user = std::collections::HashSet::new();
                for um in &user {
                    if !seen_user.insert(um.key.clone()) {
                        extra_user.push((um.raw_key, compact(um.value)));
                        continue;
                    }
                    match um.key.as_str() {
                        "user_id"
                        | "email_verified"
                        | "tracking_id"
                        | "registered"
                        | "registration_tenant"
                        | "registration_state"
                        | "last_login"
                        | "attributes" => {}
                        "identifiers" => {
                            let mut seen_id = std::collections::HashSet::new();
                            let rest: Vec<&Member> = identifiers
                                .iter()
                                .filter(|im| {
                                    let mapped = im.key == "email_address" || im.key == "username";
                                    !(mapped && seen_id.insert(im.key.clone()))
                                })
                                .collect();
                            if !rest.is_empty() {
                                extra_user.push((um.raw_key, compact_object(&rest)));
                            }
                        }
                        _ => extra_user.push((um.raw_key, compact(um.value))),
                    }
                }
                if !extra_user.is_empty() {
                    extra_item.push((m.raw_key, join_object(&extra_user)));
                }
            }
            "grants" => {
                // An object keeps its non-`results` keys; null or a bare array maps entirely.
                if let Some(grants) = object_members(m.value) {
                    let rest: Vec<&Member> = grants.iter().filter(|g| g.key != "results").collect();
                    if !rest.is_empty() {
                        extra_item.push((m.raw_key, compact_object(&rest)));
                    }
                }
            }
            _ => extra_item.push((m.raw_key, compact(m.value))),
        }
    }

    tables.users.push(vec![
        Some(user_id.clone()),
        find(&identifiers, "email_address").and_then(text_cell),
        find(&identifiers, "username").and_then(text_cell),
        email_verified,
        find(&user, "tracking_id").and_then(text_cell),
        timestamp(&user, "registered"),
        find(&user, "registration_tenant").and_then(text_cell),
        find(&user, "registration_state").and_then(text_cell),
        timestamp(&user, "last_login"),
        seq_no,
        (!extra_item.is_empty()).then(|| join_object(&extra_item)),
    ]);

    for grant in grant_list(n, find(&members, "grants")) {
        tables.grants.push(grant_row(n, &user_id, grant));
    }

    match find(&user, "attributes") {
        None | Some("null") => {}
        Some(raw) => {
            let attributes =
                object_members(raw).unwrap_or_else(|| panic!("item {n}: attributes not an object"));
            for a in attributes {
                let (value, kind) = match a.value.as_bytes()[0] {
                    b'"' => (Some(unescape(a.value)), "string"),
                    b'n' => (None, "null"),
                    b't' | b'f' => (Some(a.value.to_owned()), "boolean"),
                    b'{' => (Some(compact(a.value)), "object"),
                    b'[' => (Some(compact(a.value)), "array"),
                    _ => (Some(a.value.to_owned()), "number"),
                };
                tables.attributes.push(vec![
                    Some(user_id.clone()),
                    Some(a.key),
                    value,
                    Some(kind.to_owned()),
                ]);
            }
        }
    }
}

/// The raw grants of an item: `grants` missing/null, `{"results": [...]}` or a bare array.
fn grant_list(n: usize, grants: Option<&str>) -> Vec<&str> {
    let results = match grants {
        None | Some("null") => return Vec::new(),
        Some(raw) if raw.starts_with('[') => raw,
        Some(raw) => {
            let members =
                object_members(raw).unwrap_or_else(|| panic!("item {n}: grants is {raw}"));
            match find(&members, "results") {
                None | Some("null") => return Vec::new(),
                Some(results) => results,
            }
        }
    };
    let list =
        array_elements(results).unwrap_or_else(|| panic!("item {n}: grants.results is {results}"));
    for g in &list {
        assert!(g.starts_with('{'), "item {n}: grant is not an object: {g}");
    }
    list
}

fn grant_row(n: usize, user_id: &str, raw: &str) -> Vec<Option<String>> {
    let grant = object_members(raw).unwrap_or_else(|| panic!("item {n}: grant {raw}"));
    // camelCase wins when both spellings are present.
    let id_key = if find(&grant, "grantId").is_some() {
        "grantId"
    } else {
        "grant_id"
    };
    let created_key = if find(&grant, "createdAt").is_some() {
        "createdAt"
    } else {
        "created_at"
    };
    let mapped = |m: &Member| match m.key.as_str() {
        "account_id" | "expiry_state" | "entitlement_type" | "entitlement_id" | "product_id"
        | "startTime" | "endTime" => true,
        // Only a user_id equal to the item's is redundant; another owner must be kept.
        "user_id" => scalar_text(m.value).as_deref() == Some(user_id),
        key => key == id_key || key == created_key,
    };
    // Only the first occurrence of a mapped key fills its column; a repeat stays in `extra`.
    let mut seen = std::collections::HashSet::new();
    let rest: Vec<&Member> = grant
        .iter()
        .filter(|m| !(mapped(m) && seen.insert(m.key.clone())))
        .collect();
    let text = |key| find(&grant, key).and_then(text_cell);
    let time = |key| find(&grant, key).and_then(timestamp_cell);
    vec![
        Some(user_id.to_owned()),
        text(id_key),
        text("account_id"),
        text("expiry_state"),
        text("entitlement_type"),
        text("entitlement_id"),
        text("product_id"),
        time("startTime"),
        time("endTime"),
        time(created_key),
        (!rest.is_empty()).then(|| compact_object(&rest)),
    ]
}

/// One `"key": value` of an object: key unescaped for matching, key and value as written.
struct Member<'a> {
    key: String,
    raw_key: &'a str,
    value: &'a str,
}

fn find<'a>(members: &[Member<'a>], key: &str) -> Option<&'a str> {
    members.iter().find(|m| m.key == key).map(|m| m.value)
}

/// The members of a raw JSON object in source order, or `None` when `raw` is not an object.
/// `raw` is already validated JSON, so the scanner only has to find boundaries.
fn object_members(raw: &str) -> Option<Vec<Member<'_>>> {
    let b = raw.as_bytes();
    let mut pos = skip_ws(b, 0);
    if b.get(pos) != Some(&b'{') {
        return None;
    }
    pos = skip_ws(b, pos + 1);
    let mut members = Vec::new();
    while b[pos] != b'}' {
        let key_end = value_end(b, pos);
        let raw_key = &raw[pos..key_end];
        pos = skip_ws(b, key_end);
        assert_eq!(b[pos], b':');
        pos = skip_ws(b, pos + 1);
        let end = value_end(b, pos);
        members.push(Member {
            key: unescape(raw_key),
            raw_key,
            value: &raw[pos..end],
        });
        pos = skip_ws(b, end);
        if b[pos] == b',' {
            pos = skip_ws(b, pos + 1);
        }
    }
    Some(members)
}

/// The elements of a raw JSON array as written, or `None` when `raw` is not an array.
fn array_elements(raw: &str) -> Option<Vec<&str>> {
    let b = raw.as_bytes();
    let mut pos = skip_ws(b, 0);
    if b.get(pos) != Some(&b'[') {
        return None;
    }
    pos = skip_ws(b, pos + 1);
    let mut elements = Vec::new();
    while b[pos] != b']' {
        let end = value_end(b, pos);
        elements.push(&raw[pos..end]);
        pos = skip_ws(b, end);
        if b[pos] == b',' {
            pos = skip_ws(b, pos + 1);
        }
    }
    Some(elements)
}

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() && matches!(b[pos], b' ' | b'\t' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// The end (exclusive) of the JSON value starting at `pos`.
fn value_end(b: &[u8], mut pos: usize) -> usize {
    match b[pos] {
        b'"' => string_end(b, pos),
        b'{' | b'[' => {
            let mut depth = 0;
            loop {
                match b[pos] {
                    b'"' => {
                        pos = string_end(b, pos);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return pos + 1;
                        }
                    }
                    _ => {}
                }
                pos += 1;
            }
        }
        _ => {
            while pos < b.len()
                && !matches!(b[pos], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                pos += 1;
            }
            pos
        }
    }
}

/// The end (exclusive, after the closing quote) of the string starting at `pos`.
fn string_end(b: &[u8], mut pos: usize) -> usize {
    pos += 1;
    loop {
        match b[pos] {
            b'\\' => pos += 2,
            b'"' => return pos + 1,
            _ => pos += 1,
        }
    }
}

/// `raw` with the whitespace outside strings removed; everything else stays as written.
fn compact(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut pos = 0;
    while pos < b.len() {
        if b[pos] == b'"' {
            let end = string_end(b, pos);
            out.push_str(&raw[pos..end]);
            pos = end;
        } else {
            if !matches!(b[pos], b' ' | b'\t' | b'\n' | b'\r') {
                // Outside strings JSON is pure ASCII, so a byte is a char.
                out.push(char::from(b[pos]));
            }
            pos += 1;
        }
    }
    out
}

fn compact_object(members: &[&Member]) -> String {
    let parts: Vec<(&str, String)> = members
        .iter()
        .map(|m| (m.raw_key, compact(m.value)))
        .collect();
    join_object(&parts)
}

fn join_object(parts: &[(&str, String)]) -> String {
    let inner: Vec<String> = parts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

fn unescape(raw_string: &str) -> String {
    serde_json::from_str(raw_string).expect("reference: bad JSON string")
}

/// A string column's cell: string unescaped, number as written, true/false, null -> NULL.
fn text_cell(raw: &str) -> Option<String> {
    if raw.starts_with('{') || raw.starts_with('[') {
        panic!("bad item: object/array where text is expected: {raw}");
    }
    scalar_text(raw)
}

/// Like [`text_cell`], but `None` for objects and arrays instead of panicking.
fn scalar_text(raw: &str) -> Option<String> {
    match raw.as_bytes()[0] {
        b'"' => Some(unescape(raw)),
        b'n' | b'{' | b'[' => None,
        _ => Some(raw.to_owned()),
    }
}

fn seq_no_cell(n: usize, raw: &str) -> Option<String> {
    let digits = match raw.as_bytes()[0] {
        b'n' => return None,
        b'"' => unescape(raw),
        _ => raw.to_owned(),
    };
    let body = digits.strip_prefix('-').unwrap_or(&digits);
    assert!(
        !body.is_empty() && body.bytes().all(|c| c.is_ascii_digit()),
        "item {n}: seq-no {raw}"
    );
    let value: i64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("item {n}: seq-no {raw}"));
    Some(value.to_string())
}

fn timestamp_cell(raw: &str) -> Option<String> {
    match raw.as_bytes()[0] {
        b'n' => None,
        b'"' => Some(normalise_timestamp(&unescape(raw))),
        _ => panic!("bad item: timestamp is {raw}"),
    }
}

/// `YYYY-MM-DD[T| ]HH:MM:SS[.fraction][zone]` or `YYYY-MM-DD` -> UTC `...Z` text per CONVENTIONS.
pub fn normalise_timestamp(text: &str) -> String {
    let bad = || -> ! { panic!("bad item: timestamp {text:?}") };
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> i64 {
        let part = b.get(from..from + len).unwrap_or_else(|| bad());
        if !part.iter().all(u8::is_ascii_digit) {
            bad();
        }
        part.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        bad();
    }
    let (year, month, day) = (num(0, 4), num(5, 2), num(8, 2));
    if !(1..=12).contains(&month) || day < 1 || day > month_length(year, month) {
        bad();
    }
    let (mut hour, mut minute, mut second, mut micros, mut offset) = (0, 0, 0, 0, 0);
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ')
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            bad();
        }
        (hour, minute, second) = (num(11, 2), num(14, 2), num(17, 2));
        if hour > 23 || minute > 59 || second > 59 {
            bad();
        }
        let mut pos = 19;
        if b.get(pos) == Some(&b'.') {
            let digits = b[pos + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if !(1..=9).contains(&digits) {
                bad();
            }
            // Truncate (not round) to microseconds.
            for i in 0..6 {
                micros = micros * 10 + if i < digits { num(pos + 1 + i, 1) } else { 0 };
            }
            pos += 1 + digits;
        }
        match &b[pos..] {
            [] | [b'Z' | b'z'] => {}
            [sign @ (b'+' | b'-'), rest @ ..] => {
                let (h, m) = match rest.len() {
                    2 => (num(pos + 1, 2), 0),
                    4 => (num(pos + 1, 2), num(pos + 3, 2)),
                    5 if rest[2] == b':' => (num(pos + 1, 2), num(pos + 4, 2)),
                    _ => bad(),
                };
                if h > 23 || m > 59 {
                    bad();
                }
                offset = (h * 3600 + m * 60) * if *sign == b'+' { 1 } else { -1 };
            }
            _ => bad(),
        }
    }

    // Count days from 1970-01-01 the slow, obvious way; the tool uses its own arithmetic.
    let mut days = 0;
    for y in 1970..year {
        days += year_length(y);
    }
    for y in year..1970 {
        days -= year_length(y);
    }
    days += (1..month).map(|m| month_length(year, m)).sum::<i64>() + day - 1;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    format_micros(secs * 1_000_000 + micros)
}

/// UTC microseconds since the epoch as the CSV text CONVENTIONS.md prescribes, counting
/// whole years and months the slow, obvious way (the tool uses its own arithmetic).
pub fn format_micros(total: i64) -> String {
    let micros = total.rem_euclid(1_000_000);
    let mut secs = total.div_euclid(1_000_000);
    let mut y = 1970;
    while secs < 0 {
        y -= 1;
        secs += year_length(y) * 86_400;
    }
    while secs >= year_length(y) * 86_400 {
        secs -= year_length(y) * 86_400;
        y += 1;
    }
    let mut m = 1;
    while secs >= month_length(y, m) * 86_400 {
        secs -= month_length(y, m) * 86_400;
        m += 1;
    }
    let d = secs / 86_400 + 1;
    let rem = secs % 86_400;
    let fraction = match micros {
        0 => String::new(),
        us if us % 1000 == 0 => format!(".{:03}", us / 1000),
        us => format!(".{us:06}"),
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn year_length(y: i64) -> i64 {
    if is_leap(y) { 366 } else { 365 }
}

fn month_length(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
