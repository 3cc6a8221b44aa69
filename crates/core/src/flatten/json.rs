//! Leaf values of an item, read from the raw JSON text.
//!
//! The flattener keeps every value it does not decode as the exact text of the source
//! (its raw JSON text, already checked), so numbers keep the digits they were written with
//! (`1.50` stays `1.50`) and nothing passes through a float. This module turns such raw text
//! into what a cell needs: the unescaped string, the kind of value, or compact JSON.

use std::borrow::Cow;

use super::problem::Found;

/// A JSON value seen through its raw text, classified by its first byte.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// The number's text exactly as written.
    Number(&'a str),
    /// The unescaped string.
    String(Cow<'a, str>),
    /// The raw text of an object or array (not yet compacted).
    Object(&'a str),
    /// The raw text of an array (not yet compacted).
    Array(&'a str),
}

impl<'a> Leaf<'a> {
    /// Classifies the raw text of one value. The decoder checked the text when it read it, so
    /// the first byte decides the kind.
    pub fn of(text: &'a str) -> Leaf<'a> {
        match text.as_bytes().first() {
            Some(b'"') => Leaf::String(unescape(text)),
            Some(b'n') => Leaf::Null,
            Some(b't') => Leaf::Bool(true),
            Some(b'f') => Leaf::Bool(false),
            Some(b'{') => Leaf::Object(text),
            Some(b'[') => Leaf::Array(text),
            _ => Leaf::Number(text),
        }
    }

    /// The `value_type` name used by the attributes table.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Leaf::Null => "null",
            Leaf::Bool(_) => "boolean",
            Leaf::Number(_) => "number",
            Leaf::String(_) => "string",
            Leaf::Object(_) => "object",
            Leaf::Array(_) => "array",
        }
    }

    /// The value as the text of a string cell: strings unescaped, numbers as written,
    /// `true`/`false`; `None` for null. Objects and arrays give what they are: a string column
    /// cannot hold them faithfully, so the caller reports a bad item.
    pub(crate) fn into_text(self) -> Result<Option<Cow<'a, str>>, Found> {
        match self {
            Leaf::Null => Ok(None),
            Leaf::Bool(true) => Ok(Some(Cow::Borrowed("true"))),
            Leaf::Bool(false) => Ok(Some(Cow::Borrowed("false"))),
            Leaf::Number(n) => Ok(Some(Cow::Borrowed(n))),
            Leaf::String(s) => Ok(Some(s)),
            Leaf::Object(_) => Err(Found::Object),
            Leaf::Array(_) => Err(Found::Array),
        }
    }
}

/// Unescapes the raw text of a JSON string (quotes included). Borrows when there is no escape,
/// which is nearly always, so the hot path does not allocate. Half a surrogate pair, which
/// only a value kept as written may hold, is left as written.
pub(super) fn unescape(raw: &str) -> Cow<'_, str> {
    unescape_checked(raw).unwrap_or_else(|_| Cow::Borrowed(&raw[1..raw.len() - 1]))
}

/// Why [`unescape_checked`] refused a string: serde_json's words, at byte `offset` of the raw
/// text (the byte serde_json stops at, so messages point where they always did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UnescapeError {
    pub offset: usize,
    pub problem: &'static str,
}

/// Unescapes the raw text of a JSON string (quotes included, escapes already checked to be
/// well formed), refusing a `\u` escape that is half a surrogate pair as serde_json does for a
/// string it decodes (a key, or a value it describes).
pub(super) fn unescape_checked(raw: &str) -> Result<Cow<'_, str>, UnescapeError> {
    let inner = &raw[1..raw.len() - 1];
    let Some(first) = memchr::memchr(b'\\', inner.as_bytes()) else {
        return Ok(Cow::Borrowed(inner));
    };
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(inner.len());
    out.push_str(&inner[..first]);
    // Positions in `raw`; the closing quote is at `end`.
    let end = raw.len() - 1;
    let mut at = first + 1;
    let hex = |at: usize| {
        raw.get(at..at + 4)
            .and_then(|digits| u32::from_str_radix(digits, 16).ok())
    };
    let lone = |offset| UnescapeError {
        offset,
        problem: "lone leading surrogate in hex escape",
    };
    let unfinished = |offset| UnescapeError {
        offset,
        problem: "unexpected end of hex escape",
    };
    while at < end {
        let next = memchr::memchr(b'\\', &bytes[at..end]).map_or(end, |k| at + k);
        out.push_str(&raw[at..next]);
        if next == end {
            break;
        }
        // `next` is a backslash; the escape was checked to be complete.
        let escape = bytes.get(next + 1).copied().unwrap_or(b'"');
        at = next + 2;
        let c = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                let n = hex(at).ok_or(unfinished(at))?;
                at += 4;
                match n {
                    0xDC00..=0xDFFF => return Err(lone(at - 1)),
                    0xD800..=0xDBFF => {
                        // A leading surrogate must be followed by `\u` and a trailing one.
                        if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
                            let stop = if bytes.get(at) == Some(&b'\\') {
                                at + 1
                            } else {
                                at
                            };
                            return Err(unfinished(stop));
                        }
                        let n2 = hex(at + 2).ok_or(unfinished(at + 2))?;
                        at += 6;
                        if !(0xDC00..=0xDFFF).contains(&n2) {
                            return Err(lone(at - 1));
                        }
                        let c = 0x1_0000 + ((n - 0xD800) << 10) + (n2 - 0xDC00);
                        char::from_u32(c).ok_or(lone(at - 1))?
                    }
                    n => char::from_u32(n).ok_or(lone(at - 1))?,
                }
            }
        };
        out.push(c);
    }
    Ok(Cow::Owned(out))
}

/// Appends `raw` with every whitespace byte outside strings removed: compact JSON that keeps
/// numbers, escapes and key order exactly as written.
pub fn push_compact(out: &mut String, raw: &str) {
    let bytes = raw.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        out.push_str(raw);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    let mut kept_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.push_str(&raw[kept_from..i]);
            kept_from = i + 1;
        }
    }
    out.push_str(&raw[kept_from..]);
}

/// Compact JSON text of a raw value, borrowing when it is already compact.
pub fn compact(raw: &str) -> Cow<'_, str> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    push_compact(&mut out, raw);
    Cow::Owned(out)
}

/// Appends `key` as a JSON string (quoted and escaped).
pub(crate) fn push_json_key(out: &mut String, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        // serde_json escapes exactly as JSON requires; a String cannot fail to serialise.
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_keeps_numbers_as_written() {
        assert_eq!(Leaf::of("1.50"), Leaf::Number("1.50"));
        assert_eq!(Leaf::of("-0e10"), Leaf::Number("-0e10"));
        assert_eq!(Leaf::of("null"), Leaf::Null);
        assert_eq!(Leaf::of("false"), Leaf::Bool(false));
        assert_eq!(
            Leaf::of(r#""a\"b\u00e9\n""#),
            Leaf::String(Cow::Owned("a\"bé\n".into()))
        );
        assert!(matches!(
            Leaf::of(r#""plain""#),
            Leaf::String(Cow::Borrowed("plain"))
        ));
        assert_eq!(Leaf::of("[1]").type_name(), "array");
        assert_eq!(Leaf::of("{}").into_text(), Err(Found::Object));
    }

    #[test]
    fn unescapes_as_serde_json_does() {
        for raw in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u0000\uffff\ud83d\ude00x""#,
            r#""\uD834\uDD1E""#,
        ] {
            let expected: String = serde_json::from_str(raw).unwrap();
            assert_eq!(unescape_checked(raw).unwrap(), expected, "{raw}");
        }
        // Half a pair: serde_json's words, at the byte where it stops.
        for (raw, offset, problem) in [
            (r#""\ud800x""#, 7, "unexpected end of hex escape"),
            (r#""\ud800""#, 7, "unexpected end of hex escape"),
            (r#""\ud800\n""#, 8, "unexpected end of hex escape"),
            (
                r#""\ud800\u0041""#,
                12,
                "lone leading surrogate in hex escape",
            ),
            (r#""ab\udc00""#, 8, "lone leading surrogate in hex escape"),
        ] {
            assert_eq!(
                unescape_checked(raw),
                Err(UnescapeError { offset, problem }),
                "{raw}"
            );
            let e = serde_json::from_str::<String>(raw).unwrap_err();
            assert!(e.to_string().starts_with(problem), "{e}");
            assert_eq!(e.column() - 1, offset, "{raw}");
        }
        assert_eq!(unescape(r#""x\udc00""#), "x\\udc00");
    }

    #[test]
    fn compacts_outside_strings_only() {
        assert_eq!(
            compact("{ \"a b\" : [1, 2.50 ,\n\t\"x \\\" y\"] }"),
            "{\"a b\":[1,2.50,\"x \\\" y\"]}"
        );
        assert!(matches!(compact("[1,2]"), Cow::Borrowed("[1,2]")));
        assert_eq!(compact("\"\\\\\" , 1"), "\"\\\\\",1");
    }

    #[test]
    fn escapes_keys() {
        let mut out = String::new();
        push_json_key(&mut out, "plain");
        push_json_key(&mut out, "q\"uote\n");
        assert_eq!(out, "\"plain\"\"q\\\"uote\\n\"");
    }
}
