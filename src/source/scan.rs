//! The framer's scanning kernels: finding where a JSON value ends without parsing it.
//! [`value_end`] lends them to the fetcher, which skips a page's items the same way.
//!
//! Every byte of an export passes through here on the single reader thread, so these loops
//! are written for speed: strings (most of an export) are skipped 16 bytes at a time, and the
//! bytes between strings go through a table lookup. They only track nesting depth and whether
//! they are inside a string; the workers' parser checks everything else.

/// Byte classes for [`scan_structure`]: 0 is any byte that does not change the structure.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const OPEN: u8 = 2;
const CLOSE: u8 = 3;
static CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    table[b'"' as usize] = QUOTE;
    table[b'{' as usize] = OPEN;
    table[b'[' as usize] = OPEN;
    table[b'}' as usize] = CLOSE;
    table[b']' as usize] = CLOSE;
    table
};

/// Scans `buf[i..]` for the end of the value being framed, tracking nesting `depth` and
/// whether the scan is `in_string`. Returns `Ok(end)` (one past the value) when the value
/// closes, or `Err(next)` when the buffer runs out and scanning must go on from `next` once
/// more bytes arrive (`next` may be one past the end after a trailing backslash).
///
/// This is the framer's hot loop: strings are most of an export, so they are skipped 16 bytes
/// at a time; between strings a table lookup per byte finds the brackets.
#[inline]
pub(super) fn scan_structure(
    buf: &[u8],
    mut i: usize,
    depth: &mut u64,
    in_string: &mut bool,
) -> Result<usize, usize> {
    loop {
        if *in_string {
            match find_quote_or_backslash(buf, i) {
                None => return Err(buf.len()),
                Some(j) if buf[j] == b'\\' => i = j + 2,
                Some(j) => {
                    *in_string = false;
                    i = j + 1;
                    if *depth == 0 {
                        return Ok(i);
                    }
                }
            }
            if i >= buf.len() {
                return Err(i);
            }
            continue;
        }
        while i < buf.len() {
            match CLASS[buf[i] as usize] {
                PLAIN => i += 1,
                QUOTE => {
                    *in_string = true;
                    i += 1;
                    break;
                }
                OPEN => {
                    *depth += 1;
                    i += 1;
                }
                _ => {
                    *depth = depth.saturating_sub(1);
                    i += 1;
                    if *depth == 0 {
                        return Ok(i);
                    }
                }
            }
        }
        if !*in_string || i >= buf.len() {
            return Err(i);
        }
    }
}

/// The index of the first `"` or `\` in `buf[from..]`. Inlined rather than a `memchr2` call:
/// most strings are 10 to 40 bytes, where the call and its setup cost more than the search.
#[inline(always)]
pub(super) fn find_quote_or_backslash(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        // SAFETY: SSE2 is in the x86_64 baseline; every load reads 16 bytes that the loop
        // condition proves are inside `buf`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            while i + 16 <= buf.len() {
                let v = _mm_loadu_si128(buf.as_ptr().add(i).cast::<__m128i>());
                let hits = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
                let mask = _mm_movemask_epi8(hits);
                if mask != 0 {
                    return Some(i + mask.trailing_zeros() as usize);
                }
                i += 16;
            }
        }
    }
    buf[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|k| i + k)
}

/// One past the end of the JSON value starting at `buf[start]`, found without parsing it:
/// brackets and strings are followed, nothing is checked. A scalar ends at the first byte
/// that cannot be part of one. `None` when the buffer ends first.
pub fn value_end(buf: &[u8], start: usize) -> Option<usize> {
    match buf.get(start)? {
        b'{' | b'[' | b'"' => {
            let (mut depth, mut in_string) = (0, false);
            scan_structure(buf, start, &mut depth, &mut in_string).ok()
        }
        _ => match buf[start..]
            .iter()
            .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
        {
            Some(0) => None,
            Some(n) => Some(start + n),
            None => Some(buf.len()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(text: &str) -> Result<usize, usize> {
        let (mut depth, mut in_string) = (0, false);
        scan_structure(text.as_bytes(), 0, &mut depth, &mut in_string)
    }

    #[test]
    fn finds_the_end_of_values() {
        assert_eq!(end_of(r#"{"a":1} ,{}"#), Ok(7));
        assert_eq!(end_of(r#"{"a":"}]\"{","b":[1,{"c":[]}]}x"#), Ok(30));
        assert_eq!(end_of(r#""a string with \" and \\" tail"#), Ok(25));
        let long = format!(r#"{{"k":"{}\"{}"}},"#, "x".repeat(40), "y".repeat(17));
        assert_eq!(end_of(&long), Ok(long.len() - 1));
    }

    #[test]
    fn asks_for_more_when_the_value_is_open() {
        assert_eq!(end_of(r#"{"a":[1,2"#), Err(9));
        assert_eq!(end_of(r#"{"a":"abc"#), Err(9));
        // A trailing backslash: the escaped byte is past the end, so resume one beyond it.
        assert_eq!(end_of(r#"{"a":"ab\"#), Err(10));
    }

    #[test]
    fn resumes_where_it_stopped() {
        let text = br#"{"a":"0123456789abcdef0123\"x","b":[{}]}"#;
        for cut in 1..text.len() {
            let (mut depth, mut in_string) = (0, false);
            let mut at = match scan_structure(&text[..cut], 0, &mut depth, &mut in_string) {
                Ok(end) => panic!("ended early at {end} with cut {cut}"),
                Err(next) => next,
            };
            at = at.min(text.len());
            assert_eq!(
                scan_structure(text, at, &mut depth, &mut in_string),
                Ok(text.len()),
                "cut {cut}"
            );
        }
    }
}
