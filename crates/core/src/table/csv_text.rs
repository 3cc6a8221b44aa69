//! CSV cell encoding (RFC 4180), done in the workers so writers only copy bytes.
//!
//! A cell is quoted when it holds a separator, a quote or a line break, and also when it is
//! the empty string: an unquoted empty cell is NULL, so `""` keeps the two apart for readers
//! such as DuckDB and PostgreSQL's `COPY ... (FORMAT csv)` that make the same distinction.

use crate::byte_class::{ByteClass, chunk_at, mask16};

/// How CSV cells are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsvDialect {
    /// RFC 4180, `\n` line ends, data exactly as it is.
    #[default]
    Plain,
    /// For spreadsheets: CRLF line ends, a byte-order mark, and text cells that a spreadsheet
    /// would run as a formula prefixed with `'`.
    Excel,
    /// For PostgreSQL's `COPY ... (FORMAT csv, HEADER)`: plain, except that every NUL
    /// character, which PostgreSQL's text types cannot hold, becomes U+FFFD (the Unicode
    /// replacement character). The cells changed are counted (see
    /// [`TableBuilder::take_nul_replaced`](super::TableBuilder::take_nul_replaced)).
    Postgres,
}

impl CsvDialect {
    /// The dialect's name as `--csv-dialect` and the manifest spell it.
    pub fn name(self) -> &'static str {
        match self {
            CsvDialect::Plain => "plain",
            CsvDialect::Excel => "excel",
            CsvDialect::Postgres => "postgres",
        }
    }

    /// The record terminator.
    pub fn line_end(self) -> &'static [u8] {
        match self {
            CsvDialect::Plain | CsvDialect::Postgres => b"\n",
            CsvDialect::Excel => b"\r\n",
        }
    }
}

/// What the postgres dialect writes for a NUL character.
pub(crate) const NUL_REPLACEMENT: char = '\u{FFFD}';

/// Whether `text` is a cell the postgres dialect changes (it holds a NUL).
#[inline]
pub(crate) fn has_nul(text: &str) -> bool {
    memchr::memchr(0, text.as_bytes()).is_some()
}

/// Appends `bytes` to `out`, for the many short pieces that CSV cells and Arrow string columns
/// are made of (ids, keys, flags, numbers as written). `extend_from_slice` calls the C
/// library's memcpy for any length it does not know, and for pieces this short the call costs
/// more than the copy; up to 32 bytes are moved here with two overlapping loads and stores of
/// the widest size that fits. Not for bytes that were just written piece by piece (a formatted
/// number or timestamp): reloading them with wide loads stalls until those stores complete.
#[inline(always)]
pub(crate) fn append_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 32 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` made room for `n` more bytes after `len`. Every read is inside
    // `bytes[..n]` and every write inside the reserved `out[len..len + n]`; a shared and a
    // mutable borrow cannot overlap. All of it is initialised before `set_len`.
    unsafe {
        let src = bytes.as_ptr();
        let dst = out.as_mut_ptr().add(len);
        if n >= 16 {
            let head = src.cast::<[u8; 16]>().read_unaligned();
            let tail = src.add(n - 16).cast::<[u8; 16]>().read_unaligned();
            dst.cast::<[u8; 16]>().write_unaligned(head);
            dst.add(n - 16).cast::<[u8; 16]>().write_unaligned(tail);
        } else if n >= 8 {
            let head = src.cast::<u64>().read_unaligned();
            let tail = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let head = src.cast::<u32>().read_unaligned();
            let tail = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            // 1 to 3 bytes: the first, the middle and the last cover them all.
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(len + n);
    }
}

/// Appends one text cell.
pub fn push_text_cell(out: &mut Vec<u8>, text: &str, dialect: CsvDialect) {
    // One comparison on the plain path; the postgres dialect pays for a scan for NUL.
    if dialect == CsvDialect::Postgres && has_nul(text) {
        let replaced = text.replace('\0', NUL_REPLACEMENT.encode_utf8(&mut [0; 4]));
        return push_text_cell(out, &replaced, CsvDialect::Plain);
    }
    let bytes = text.as_bytes();
    let guard = dialect == CsvDialect::Excel
        && matches!(
            bytes.first(),
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
        );
    let needs_quotes = bytes.is_empty() || needs_quoting(bytes);
    if !needs_quotes {
        if guard {
            out.push(b'\'');
        }
        append_bytes(out, bytes);
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

/// Whether a text cell can be written as it is: not empty, nothing to quote, nothing for the
/// Excel guard. Flatteners check a value that repeats on many rows (the user id of every
/// attribute row) once, then push it with [`TableBuilder::text_plain`](super::TableBuilder::text_plain).
pub(crate) fn is_plain(text: &str, dialect: CsvDialect) -> bool {
    let bytes = text.as_bytes();
    let guarded = dialect == CsvDialect::Excel
        && matches!(
            bytes.first(),
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
        );
    let changed = dialect == CsvDialect::Postgres && has_nul(text);
    !(bytes.is_empty() || guarded || needs_quoting(bytes) || changed)
}

/// Whether `bytes` holds `,` `"` `\n` or `\r`. Every text cell passes through here, so it
/// looks at 16 bytes per step (the SIMD kernel of `byte_class`), and a cell shorter than that
/// 8 bytes per step. A tail shorter than a step is not walked byte by byte: one more load of the last
/// full step overlaps bytes already seen, which cannot change the answer.
pub(crate) fn needs_quoting(bytes: &[u8]) -> bool {
    const SPECIAL: ByteClass = ByteClass::of(b",\"\n\r");
    if bytes.len() >= 16 {
        let special_at = |at: usize| mask16(chunk_at(bytes, at), SPECIAL) != 0;
        let mut at = 0;
        while at + 16 <= bytes.len() {
            if special_at(at) {
                return true;
            }
            at += 16;
        }
        return at < bytes.len() && special_at(bytes.len() - 16);
    }
    needs_quoting_swar(bytes)
}

/// [`needs_quoting`] eight bytes at a time in a `u64` (SWAR).
fn needs_quoting_swar(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn has_byte(word: u64, byte: u8) -> u64 {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let special = |word: u64| {
        has_byte(word, b',') | has_byte(word, b'"') | has_byte(word, b'\n') | has_byte(word, b'\r')
            != 0
    };
    let word_at = |at: usize| {
        u64::from_le_bytes(
            bytes[at..at + 8]
                .try_into()
                .expect("a slice of eight bytes"),
        )
    };
    if bytes.len() < 8 {
        // Byte by byte: padding a short cell into a word costs a copy through memory whose
        // wide reload stalls (measured: over half of this function's time).
        return bytes
            .iter()
            .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    }
    let mut at = 0;
    while at + 8 <= bytes.len() {
        if special(word_at(at)) {
            return true;
        }
        at += 8;
    }
    at < bytes.len() && special(word_at(bytes.len() - 8))
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

    /// Checks that `scan` finds each special byte at every position of cells up to 40 bytes,
    /// and nothing in cells without one.
    fn finds_every_position(scan: fn(&[u8]) -> bool) {
        for len in 0..40 {
            assert!(!scan(&vec![b'a'; len]));
            for at in 0..len {
                for special in [b',', b'"', b'\n', b'\r'] {
                    let mut cell = vec![0xC3u8; len];
                    cell[at] = special;
                    assert!(scan(&cell), "{len} {at} {special}");
                }
            }
        }
        assert!(!scan("ünïcödé — 東京 🦀 tab\there".as_bytes()));
    }

    #[test]
    fn finds_special_bytes_at_every_position() {
        finds_every_position(needs_quoting);
    }

    #[test]
    fn appends_every_length_exactly() {
        let source: Vec<u8> = (0..80u8).collect();
        for len in 0..=source.len() {
            for before in [0, 1, 7, 31] {
                let mut out = vec![0xEEu8; before];
                append_bytes(&mut out, &source[..len]);
                assert_eq!(out.len(), before + len);
                assert!(out[..before].iter().all(|&b| b == 0xEE), "{len} {before}");
                assert_eq!(&out[before..], &source[..len], "{len} {before}");
            }
        }
    }

    #[test]
    fn the_word_scan_alone_finds_them_too() {
        // What other architectures run, and x86_64 for cells under 16 bytes.
        finds_every_position(needs_quoting_swar);
    }

    #[test]
    fn postgres_replaces_nul_and_keeps_null_apart_from_empty() {
        assert_eq!(cell("a\0b", CsvDialect::Postgres), "a\u{FFFD}b");
        assert_eq!(cell("\0,\0", CsvDialect::Postgres), "\"\u{FFFD},\u{FFFD}\"");
        assert_eq!(cell("", CsvDialect::Postgres), "\"\"");
        assert_eq!(cell("=1+1", CsvDialect::Postgres), "=1+1");
        assert!(!is_plain("a\0b", CsvDialect::Postgres));
        assert!(is_plain("ab", CsvDialect::Postgres));
        // The plain dialect keeps every byte.
        assert_eq!(cell("a\0b", CsvDialect::Plain), "a\0b");
        assert!(is_plain("a\0b", CsvDialect::Plain));
    }

    #[test]
    fn excel_guards_formulas() {
        assert_eq!(cell("=1+1", CsvDialect::Excel), "'=1+1");
        assert_eq!(cell("-5,x", CsvDialect::Excel), "\"'-5,x\"");
        assert_eq!(cell("@SUM(A1)", CsvDialect::Excel), "'@SUM(A1)");
        assert_eq!(cell("ok", CsvDialect::Excel), "ok");
    }
}
