//! A JSON syntax check of one value that names the exact byte that is wrong and why.
//!
//! serde_json says that an item is broken, but its positions are approximate (a column is
//! sometimes that of the byte before, and invalid UTF-8 in a raw value is reported at the end
//! of the value) and its messages are terse ("expected value"). A user with a 30 GB export
//! needs the exact byte, so when parsing fails this check runs over the item again and reports
//! the first byte that breaks the JSON grammar (RFC 8259) and what was expected there.
//!
//! It runs only on the error path, so it favours clarity over speed. Nesting is tracked in a
//! `Vec`, never by recursion, so no input can exhaust the stack here.

/// The first place where a value breaks the JSON grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Offset of the offending byte within the checked bytes (their length when they end early).
    pub offset: usize,
    /// What is wrong there, and what was expected.
    pub problem: String,
}

/// How a byte is shown in messages: printable ASCII in backticks, anything else in hex.
pub(crate) fn describe_byte(b: u8) -> String {
    match b {
        b'`' => "a backtick".to_string(),
        b if b.is_ascii_graphic() => format!("`{}`", b as char),
        b' ' => "a space".to_string(),
        0 => "a NUL byte (0x00)".to_string(),
        b if b < 0x80 => format!("the control byte 0x{b:02x}"),
        b => format!("the non-ASCII byte 0x{b:02x}"),
    }
}

fn found(bytes: &[u8], at: usize) -> String {
    match bytes.get(at) {
        None => "the end of the item".to_string(),
        Some(&b) => describe_byte(b),
    }
}

/// What may come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A value (at the top, after `:`, or after `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrClose,
    /// A key or `}` (just after `{`).
    KeyOrClose,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the closing bracket, or the end at the top level.
    AfterValue,
}

/// Checks that `bytes` hold exactly one JSON value (whitespace around it allowed).
pub fn check(bytes: &[u8]) -> Result<(), SyntaxError> {
    let error = |offset: usize, problem: String| Err(SyntaxError { offset, problem });
    // The closing bracket each open container expects.
    let mut open: Vec<u8> = Vec::new();
    let mut next = Next::Value;
    let mut i = 0;
    loop {
        while matches!(bytes.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            i += 1;
        }
        let b = bytes.get(i).copied();
        match next {
            Next::Value | Next::ValueOrClose => match b {
                Some(b']') if next == Next::ValueOrClose => {
                    open.pop();
                    i += 1;
                    next = Next::AfterValue;
                }
                Some(b']') if open.last() == Some(&b']') => {
                    return error(
                        i,
                        "expected a value after `,`, found `]` (a trailing comma)".into(),
                    );
                }
                Some(b'{') => {
                    open.push(b'}');
                    i += 1;
                    next = Next::KeyOrClose;
                }
                Some(b'[') => {
                    open.push(b']');
                    i += 1;
                    next = Next::ValueOrClose;
                }
                Some(b'"') => {
                    i = string(bytes, i)?;
                    next = Next::AfterValue;
                }
                Some(b'-' | b'0'..=b'9') => {
                    i = number(bytes, i)?;
                    next = Next::AfterValue;
                }
                Some(b't') => (i, next) = (literal(bytes, i, b"true")?, Next::AfterValue),
                Some(b'f') => (i, next) = (literal(bytes, i, b"false")?, Next::AfterValue),
                Some(b'n') => (i, next) = (literal(bytes, i, b"null")?, Next::AfterValue),
                _ => {
                    return error(
                        i,
                        format!(
                            "expected a value (an object, array, string, number, true, false \
                             or null), found {}",
                            found(bytes, i)
                        ),
                    );
                }
            },
            Next::KeyOrClose | Next::Key => match b {
                Some(b'"') => {
                    i = string(bytes, i)?;
                    next = Next::Colon;
                }
                Some(b'}') if next == Next::KeyOrClose => {
                    open.pop();
                    i += 1;
                    next = Next::AfterValue;
                }
                Some(b'}') => {
                    return error(
                        i,
                        "expected a key after `,`, found `}` (a trailing comma)".into(),
                    );
                }
                _ => {
                    return error(
                        i,
                        format!(
                            "expected a key (a string in double quotes){}, found {}",
                            if next == Next::KeyOrClose {
                                " or `}`"
                            } else {
                                ""
                            },
                            found(bytes, i)
                        ),
                    );
                }
            },
            Next::Colon => match b {
                Some(b':') => {
                    i += 1;
                    next = Next::Value;
                }
                _ => {
                    return error(
                        i,
                        format!("expected `:` after the key, found {}", found(bytes, i)),
                    );
                }
            },
            Next::AfterValue => match (open.last().copied(), b) {
                (None, None) => return Ok(()),
                (None, Some(_)) => {
                    return error(
                        i,
                        format!(
                            "expected nothing more after the value, found {}",
                            found(bytes, i)
                        ),
                    );
                }
                (Some(close), Some(b',')) => {
                    i += 1;
                    next = if close == b'}' {
                        Next::Key
                    } else {
                        Next::Value
                    };
                }
                (Some(close), Some(c)) if c == close => {
                    open.pop();
                    i += 1;
                }
                (Some(close), _) => {
                    return error(
                        i,
                        format!(
                            "expected `,` or `{}` after {}, found {}",
                            close as char,
                            if close == b'}' {
                                "a member of an object"
                            } else {
                                "an element of an array"
                            },
                            found(bytes, i)
                        ),
                    );
                }
            },
        }
    }
}

/// Checks the string starting with the quote at `at`; returns the offset after its end.
fn string(bytes: &[u8], at: usize) -> Result<usize, SyntaxError> {
    let error = |offset: usize, problem: String| Err(SyntaxError { offset, problem });
    let mut i = at + 1;
    loop {
        let Some(&b) = bytes.get(i) else {
            return error(
                i,
                "the item ends inside a string (a `\"` is missing)".to_string(),
            );
        };
        match b {
            b'"' => return Ok(i + 1),
            b'\\' => match bytes.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    for k in 2..6 {
                        if !bytes.get(i + k).is_some_and(u8::is_ascii_hexdigit) {
                            return error(
                                i + k,
                                format!(
                                    "expected four hex digits after `\\u` in a string, found {}",
                                    found(bytes, i + k)
                                ),
                            );
                        }
                    }
                    i += 6;
                }
                _ => {
                    return error(
                        i,
                        format!(
                            "invalid escape: a backslash followed by {} in a string; JSON allows \
                             only \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX",
                            found(bytes, i + 1)
                        ),
                    );
                }
            },
            0x00..=0x1f => {
                return error(
                    i,
                    format!(
                        "{} inside a string; control characters must be escaped (\\u{:04x})",
                        describe_byte(b),
                        b
                    ),
                );
            }
            0x20..=0x7f => i += 1,
            _ => {
                // A run of non-ASCII bytes: valid UTF-8 never contains an ASCII byte inside a
                // character, so the run can be checked on its own.
                let end = bytes[i..]
                    .iter()
                    .position(u8::is_ascii)
                    .map_or(bytes.len(), |k| i + k);
                if let Err(e) = std::str::from_utf8(&bytes[i..end]) {
                    let bad = i + e.valid_up_to();
                    return error(
                        bad,
                        format!(
                            "invalid UTF-8 ({}) inside a string; an export must be UTF-8: \
                             convert it (e.g. `iconv -f latin1 -t utf-8`)",
                            describe_byte(bytes[bad])
                        ),
                    );
                }
                i = end;
            }
        }
    }
}

/// Checks the number starting at `at`; returns the offset after its end.
fn number(bytes: &[u8], at: usize) -> Result<usize, SyntaxError> {
    let digits = |from: usize| {
        bytes[from.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let expect_digit = |i: usize, after: &str| {
        Err(SyntaxError {
            offset: i,
            problem: format!(
                "invalid number: expected a digit after {after}, found {}",
                found(bytes, i)
            ),
        })
    };
    let mut i = at;
    if bytes[i] == b'-' {
        i += 1;
    }
    match bytes.get(i) {
        Some(b'0') => {
            i += 1;
            if bytes.get(i).is_some_and(u8::is_ascii_digit) {
                return Err(SyntaxError {
                    offset: i,
                    problem: "invalid number: a number must not start with 0 followed by \
                              more digits"
                        .to_string(),
                });
            }
        }
        Some(b'1'..=b'9') => i += digits(i),
        _ => return expect_digit(i, "`-`"),
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        match digits(i) {
            0 => return expect_digit(i, "the decimal point"),
            n => i += n,
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match digits(i) {
            0 => return expect_digit(i, "the exponent's `e`"),
            n => i += n,
        }
    }
    Ok(i)
}

/// Checks that `word` (`true`, `false`, `null`) is written at `at`.
fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Result<usize, SyntaxError> {
    for (k, &expected) in word.iter().enumerate() {
        if bytes.get(at + k) != Some(&expected) {
            return Err(SyntaxError {
                offset: at + k,
                problem: format!(
                    "expected `{}`, found {}",
                    String::from_utf8_lossy(word),
                    found(bytes, at + k)
                ),
            });
        }
    }
    Ok(at + word.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &[u8]) -> (usize, String) {
        let e = check(text).unwrap_err();
        (e.offset, e.problem)
    }

    #[test]
    fn accepts_valid_json() {
        for text in [
            &b"{}"[..],
            b" [ ] ",
            b"{\"a\":[1,-0.5e+3,true,false,null,{\"b\":\"\\u00e9\\n\\\"\"}],\"c\":\"\xc3\xa9\xf0\x9f\x98\x80\"}",
            b"0",
            b"-12.50E-2",
            b"\"x\"",
        ] {
            assert_eq!(check(text), Ok(()), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn points_at_the_offending_byte() {
        assert_eq!(
            err(b"{\"a\":1 \"b\":2}"),
            (
                7,
                "expected `,` or `}` after a member of an object, found `\"`".into()
            )
        );
        assert_eq!(
            err(b"{\"a\" 1}"),
            (5, "expected `:` after the key, found `1`".into())
        );
        assert_eq!(
            err(b"[1,]"),
            (
                3,
                "expected a value after `,`, found `]` (a trailing comma)".into()
            )
        );
        assert_eq!(
            err(b"{\"a\":1,}"),
            (
                7,
                "expected a key after `,`, found `}` (a trailing comma)".into()
            )
        );
        assert_eq!(
            err(b"{\"a\":tru}"),
            (8, "expected `true`, found `}`".into())
        );
        assert_eq!(
            err(b"[01]"),
            (
                2,
                "invalid number: a number must not start with 0 followed by more digits".into()
            )
        );
        assert_eq!(
            err(b"[1.]"),
            (
                3,
                "invalid number: expected a digit after the decimal point, found `]`".into()
            )
        );
        assert_eq!(
            err(b"{\"a\":\"x\x00\"}"),
            (
                7,
                "a NUL byte (0x00) inside a string; control characters must be escaped \
                 (\\u0000)"
                    .into()
            )
        );
        assert_eq!(
            err(b"[\"ab\xc3\xa9\xff\"]"),
            (
                6,
                "invalid UTF-8 (the non-ASCII byte 0xff) inside a string; an export must be \
                 UTF-8: convert it (e.g. `iconv -f latin1 -t utf-8`)"
                    .into()
            )
        );
        assert_eq!(err(b"[\"\\x\"]").0, 2);
        assert_eq!(err(b"[\"\\u12g4\"]").0, 6);
        assert_eq!(err(b"{1:2}").0, 1);
        assert_eq!(err(b"[1]]").0, 3);
        assert_eq!(err(b"[1}").0, 2);
        assert_eq!(err(b"[\xef]").0, 1);
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut text = vec![b'['; 1_000_000];
        text.extend(vec![b']'; 1_000_000]);
        assert_eq!(check(&text), Ok(()));
        text.pop();
        assert_eq!(
            err(&text),
            (
                1_999_999,
                "expected `,` or `]` after an element of an array, found the end of the item"
                    .into()
            )
        );
    }
}
