//! CSV cell encoding (RFC 4180), done in the workers so writers only copy bytes.
//!
//! A cell is quoted when it holds a separator, a quote or a line break, and also when it is
//! the empty string: an unquoted empty cell is NULL, so `""` keeps the two apart for readers
//! such as DuckDB that make the same distinction.

/// How CSV cells are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsvDialect {
    /// RFC 4180, `\n` line ends, data exactly as it is.
    #[default]
    Plain,
    /// For spreadsheets: CRLF line ends, a byte-order mark, and text cells that a spreadsheet
    /// would run as a formula prefixed with `'`.
    Excel,
}

impl CsvDialect {
    /// The record terminator.
    pub fn line_end(self) -> &'static [u8] {
        match self {
            CsvDialect::Plain => b"\n",
            CsvDialect::Excel => b"\r\n",
        }
    }
}

/// Appends one text cell.
pub fn push_text_cell(out: &mut Vec<u8>, text: &str, dialect: CsvDialect) {
    let bytes = text.as_bytes();
    let guard = dialect == CsvDialect::Excel
        && matches!(
            bytes.first(),
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
        );
    let needs_quotes = bytes.is_empty()
        || bytes
            .iter()
            .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs_quotes {
        if guard {
            out.push(b'\'');
        }
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'"');
    if guard {
        out.push(b'\'');
    }
    let mut from = 0;
    for i in memchr::memchr_iter(b'"', bytes) {
        out.extend_from_slice(&bytes[from..=i]);
        out.push(b'"');
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str, dialect: CsvDialect) -> String {
        let mut out = Vec::new();
        push_text_cell(&mut out, text, dialect);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(cell("plain", CsvDialect::Plain), "plain");
        assert_eq!(cell("", CsvDialect::Plain), "\"\"");
        assert_eq!(cell("a,b", CsvDialect::Plain), "\"a,b\"");
        assert_eq!(cell("say \"hi\"", CsvDialect::Plain), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines", CsvDialect::Plain), "\"two\nlines\"");
        assert_eq!(cell("=1+1", CsvDialect::Plain), "=1+1");
    }

    #[test]
    fn excel_guards_formulas() {
        assert_eq!(cell("=1+1", CsvDialect::Excel), "'=1+1");
        assert_eq!(cell("-5,x", CsvDialect::Excel), "\"'-5,x\"");
        assert_eq!(cell("@SUM(A1)", CsvDialect::Excel), "'@SUM(A1)");
        assert_eq!(cell("ok", CsvDialect::Excel), "ok");
    }
}
