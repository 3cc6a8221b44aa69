//! The framer's scanning kernels: finding where a JSON value ends without parsing it.
//! [`value_end`] lends them to the fetcher, which skips a page's items the same way.
//!
//! Every byte of an export passes through here on the single reader thread (and, in a fetch,
//! once more on the thread that reads page envelopes), so these loops are written for speed.
//! Inside a container they take 64 bytes at a time: the SIMD kernel of `byte_class` gives one bit per byte for
//! quotes and brackets, a prefix XOR of the quote bits marks what lies inside strings, and
//! only the brackets outside strings are looked at one by one. A block with a backslash, and
//! the last bytes of the buffer, go through the plain loop (`scan_scalar`), which skips
//! strings 16 bytes at a time and looks up the bytes between them in a table. Both only
//! track nesting depth and whether they are inside a string; the workers' parser checks
//! everything else.

use crate::byte_class::{ByteClass, chunk_at, mask16};

/// Byte classes for [`scan_scalar`]: 0 is any byte that does not change the structure.
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
#[inline]
pub(super) fn scan_structure(
    buf: &[u8],
    mut i: usize,
    depth: &mut u64,
    in_string: &mut bool,
) -> Result<usize, usize> {
    loop {
        if *depth > 0 {
            match scan_blocks(buf, i, depth, in_string) {
                Blocks::Ended(end) => return Ok(end),
                Blocks::Stopped(at) => i = at,
            }
        }
        // One block's worth the plain way (a backslash, the top level, or the tail), then
        // back to whole blocks.
        let limit = i.saturating_add(64).min(buf.len());
        match scan_scalar(&buf[..limit], i, depth, in_string) {
            Ok(end) => return Ok(end),
            Err(next) if limit == buf.len() => return Err(next),
            Err(next) => i = next,
        }
    }
}

/// How [`scan_blocks`] stopped.
enum Blocks {
    /// The value ends here (one past its last byte).
    Ended(usize),
    /// At a block with a backslash, or fewer than 64 bytes before the end.
    Stopped(usize),
}

/// The fast path of [`scan_structure`], for `depth > 0`: whole 64-byte blocks without a
/// backslash. It decides exactly as [`scan_scalar`] would, byte for byte; a backslash (an
/// escape inside a string, or broken JSON outside one) is left to that loop, which knows
/// which is which, so the two never disagree about where a value ends.
#[inline]
fn scan_blocks(buf: &[u8], mut i: usize, depth: &mut u64, in_string: &mut bool) -> Blocks {
    while *depth > 0
        && let Some(block) = buf.get(i..i.saturating_add(64))
    {
        let Bits {
            quote,
            backslash,
            open,
            close,
        } = Bits::of(block.try_into().expect("the block is 64 bytes"));
        if backslash != 0 {
            break;
        }
        // Bit k is set when byte k lies inside a string (its opening quote included, its
        // closing quote not): each unescaped quote flips the state.
        let strings = prefix_xor(quote) ^ if *in_string { u64::MAX } else { 0 };
        let (open, close) = (open & !strings, close & !strings);
        if close == 0 {
            *depth += u64::from(open.count_ones());
        } else {
            let mut brackets = open | close;
            while brackets != 0 {
                let at = brackets.trailing_zeros();
                if open >> at & 1 == 1 {
                    *depth += 1;
                } else {
                    *depth -= 1;
                    if *depth == 0 {
                        // A closing bracket is outside any string.
                        *in_string = false;
                        return Blocks::Ended(i + at as usize + 1);
                    }
                }
                brackets &= brackets - 1;
            }
        }
        *in_string = strings >> 63 == 1;
        i += 64;
    }
    Blocks::Stopped(i)
}

/// One bit per byte of a 64-byte block, bit k for byte k.
struct Bits {
    quote: u64,
    backslash: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
}

impl Bits {
    #[inline(always)]
    fn of(block: &[u8; 64]) -> Bits {
        let mut bits = Bits {
            quote: 0,
            backslash: 0,
            open: 0,
            close: 0,
        };
        for part in 0..4 {
            let chunk = chunk_at(block, 16 * part);
            let mask = |class| u64::from(mask16(chunk, class)) << (16 * part);
            bits.quote |= mask(QUOTE_BYTES);
            bits.backslash |= mask(BACKSLASH_BYTES);
            bits.open |= mask(OPEN_BYTES);
            bits.close |= mask(CLOSE_BYTES);
        }
        bits
    }
}

const QUOTE_BYTES: ByteClass = ByteClass::of(b"\"");
const BACKSLASH_BYTES: ByteClass = ByteClass::of(b"\\");
/// `{` and `[` differ only in bit 0x20: one compare of `byte | 0x20` finds both.
const OPEN_BYTES: ByteClass = ByteClass::of(b"{").folded(0x20);
/// `}` and `]`, as [`OPEN_BYTES`].
const CLOSE_BYTES: ByteClass = ByteClass::of(b"}").folded(0x20);
/// What ends a run of string bytes.
const QUOTE_OR_BACKSLASH: ByteClass = ByteClass::of(b"\"\\");

/// Bit k of the result is the XOR of bits 0..=k of `x`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// [`scan_structure`] one byte (or, in strings, 16 bytes) at a time: the reference that the
/// block path must agree with, and what scans backslashes and the last bytes of a buffer.
#[inline]
fn scan_scalar(
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
    while i + 16 <= buf.len() {
        let mask = mask16(chunk_at(buf, i), QUOTE_OR_BACKSLASH);
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += 16;
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

    /// Drives [`scan_structure`] over `text` as the framer does: in pieces ending at each of
    /// `cuts`, resuming from where each stopped.
    fn scan_in_pieces(
        text: &[u8],
        start: usize,
        cuts: &[usize],
        state: (u64, bool),
    ) -> (Result<usize, usize>, u64, bool) {
        let (mut depth, mut in_string) = state;
        let mut at = start;
        for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
            if cut < at || cut > text.len() {
                continue;
            }
            match scan_structure(&text[..cut], at, &mut depth, &mut in_string) {
                Ok(end) => return (Ok(end), depth, in_string),
                Err(next) => at = next,
            }
        }
        (Err(at), depth, in_string)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The 64-byte block path decides exactly as the plain loop: same end, same state,
        /// whatever the bytes (valid JSON or not), the starting state and the pieces.
        #[test]
        fn blocks_agree_with_the_plain_loop(
            text in proptest::collection::vec(
                proptest::sample::select(&b"\"\\{}[]a ,:"[..]), 0..400),
            weights in proptest::collection::vec(0u8..10, 0..400),
            start_depth in 0u64..3,
            start_in_string: bool,
            cuts in proptest::collection::vec(0usize..400, 0..4),
        ) {
            // Mostly plain bytes, as in a real export, so that whole clean blocks occur.
            let text: Vec<u8> = text
                .iter()
                .zip(weights.iter().chain(std::iter::repeat(&0)))
                .map(|(&b, &w)| if w < 7 { b'a' } else { b })
                .collect();
            let mut cuts = cuts;
            cuts.sort_unstable();
            for start in [0, 1, 63, 64, 65].into_iter().filter(|&s| s <= text.len()) {
                let state = (start_depth, start_in_string);
                let fast = scan_in_pieces(&text, start, &cuts, state);
                let (mut depth, mut in_string) = state;
                let plain = scan_scalar(&text, start, &mut depth, &mut in_string);
                proptest::prop_assert_eq!(fast.0, plain, "start {}", start);
                if plain.is_ok() || cuts.is_empty() {
                    proptest::prop_assert_eq!((fast.1, fast.2), (depth, in_string));
                }
            }
        }
    }

    #[test]
    fn blocks_find_ends_in_long_values() {
        let item = format!(
            r#"{{"user":{{"id":"{}","tags":["a]","b}}","{{c"]}},"n":[[[1,2],[3]],{{}}]}}"#,
            "x".repeat(100)
        );
        let text = format!("{item},{item}");
        assert_eq!(end_of(&text), Ok(item.len()));
        let escaped = format!(
            r#"{{"k":"{}\"{}","l":[1]}}  "#,
            "y".repeat(70),
            "}".repeat(80)
        );
        assert_eq!(end_of(&escaped), Ok(escaped.len() - 2));
        assert_eq!(value_end(text.as_bytes(), item.len() + 1), Some(text.len()));
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
