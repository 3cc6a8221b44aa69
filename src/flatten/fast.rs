//! The fast path of item decoding: one hand-written pass over an item's bytes.
//!
//! Through serde's visitors (`item.rs`) every leaf is read twice, once by serde_json to capture
//! it as a raw value and once more to classify and unescape it, and that generic machinery was
//! the largest single cost of a conversion. This reader walks the bytes once, scans strings a
//! word at a time, and fills the same [`Item`].
//!
//! It is deliberately partial. It gives up (`None`) at anything unusual: a key with an escape,
//! a value of the wrong type, a syntax error, deep nesting. The caller then decodes the item
//! again with serde, which either succeeds or names the problem exactly as it always has. So
//! this path never words an error; it must only accept what serde_json accepts and build the
//! same item from it, which `tests::agrees_with_serde` checks on mutated items.

use std::borrow::Cow;

use super::item::{
    Grant, GrantMember, GrantValue, Item, ItemMember, Seen, grant_field, user_field,
};
use super::json::{Leaf, unescape};
use super::timestamp::parse_timestamp_micros;

/// Nesting deeper than this is left to serde_json, which refuses 128 levels.
const MAX_DEPTH: u32 = 100;

/// Decodes `text` (one item) into `item`; false when the serde decoder must take over.
pub fn decode<'a>(text: &'a str, item: &mut Item<'a>) -> bool {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    reader.item(item).is_some() && item.user_id.is_some()
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next byte that is not JSON whitespace, without consuming it.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.bytes.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    /// Consumes `byte` when it comes next.
    #[inline]
    fn eat(&mut self, byte: u8) -> Option<bool> {
        let found = self.peek()? == byte;
        self.at += usize::from(found);
        Some(found)
    }

    /// After a member: true at `,` (another follows), false at `close`.
    #[inline]
    fn another(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            byte if byte == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A string at the current `"`: its raw text, quotes included, and whether it has escapes.
    #[inline]
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let start = self.at;
        let mut at = start + 1;
        let mut escaped = false;
        loop {
            at = find_special(self.bytes, at)?;
            match self.bytes[at] {
                b'"' => {
                    self.at = at + 1;
                    return Some((self.text.get(start..self.at)?, escaped));
                }
                b'\\' => {
                    escaped = true;
                    at = escape_end(self.bytes, at)?;
                }
                // A control character must be escaped inside a string.
                _ => return None,
            }
        }
    }

    /// A key without escapes and the `:` after it. Keys with escapes are rare; serde compares
    /// them unescaped.
    #[inline]
    fn key(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let (raw, escaped) = self.string()?;
        if escaped || !self.eat(b':')? {
            return None;
        }
        raw.get(1..raw.len() - 1)
    }

    /// `true`, `false` or `null`, spelled out in full.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A number as JSON writes it, returned as written.
    fn number(&mut self) -> Option<&'a str> {
        let bytes = self.bytes;
        let digits = |mut at: usize| {
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            at
        };
        let start = self.at;
        let mut at = start + usize::from(bytes.get(start) == Some(&b'-'));
        at = match bytes.get(at)? {
            // A leading zero stands alone; a digit after it fails at the next separator.
            b'0' => at + 1,
            b'1'..=b'9' => digits(at + 1),
            _ => return None,
        };
        if bytes.get(at) == Some(&b'.') {
            let end = digits(at + 1);
            if end == at + 1 {
                return None;
            }
            at = end;
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
            let end = digits(at);
            if end == at {
                return None;
            }
            at = end;
        }
        self.at = at;
        self.text.get(start..at)
    }

    /// Any value, checked, returned as its raw text.
    fn raw(&mut self, depth: u32) -> Option<&'a str> {
        self.peek()?;
        let start = self.at;
        self.skip(depth)?;
        self.text.get(start..self.at)
    }

    /// Any value, checked: its raw text and what it is.
    #[inline]
    fn leaf(&mut self, depth: u32) -> Option<(&'a str, Leaf<'a>)> {
        let first = self.peek()?;
        let start = self.at;
        let leaf = match first {
            b'"' => {
                let (raw, escaped) = self.string()?;
                // Unescaping is the rare case; a plain string borrows its inside.
                let leaf = if escaped {
                    Leaf::String(unescape(raw))
                } else {
                    Leaf::String(Cow::Borrowed(raw.get(1..raw.len() - 1)?))
                };
                return Some((raw, leaf));
            }
            b'-' | b'0'..=b'9' => Leaf::Number(self.number()?),
            b'{' | b'[' => {
                let raw = self.raw(depth)?;
                return Some((raw, Leaf::of(raw)));
            }
            b'n' => self.literal(b"null").map(|()| Leaf::Null)?,
            b't' => self.literal(b"true").map(|()| Leaf::Bool(true))?,
            b'f' => self.literal(b"false").map(|()| Leaf::Bool(false))?,
            _ => return None,
        };
        Some((self.text.get(start..self.at)?, leaf))
    }

    /// Skips one value of any kind, checking its syntax, without recursion. `depth` is how
    /// deep the value sits.
    fn skip(&mut self, depth: u32) -> Option<()> {
        // Bit `level` is set when that level of nesting is an object.
        let mut objects: u128 = 0;
        let mut level: u32 = 0;
        'value: loop {
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.at += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if !self.eat(close)? {
                        level += 1;
                        if depth + level > MAX_DEPTH {
                            return None;
                        }
                        if open == b'{' {
                            objects |= 1 << level;
                            self.key_anything()?;
                        } else {
                            objects &= !(1 << level);
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                b'n' => self.literal(b"null")?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                _ => return None,
            }
            // A value ended: close the containers it ends, or go on to the next member.
            loop {
                if level == 0 {
                    return Some(());
                }
                let in_object = objects >> level & 1 == 1;
                if self.another(if in_object { b'}' } else { b']' })? {
                    if in_object {
                        self.key_anything()?;
                    }
                    continue 'value;
                }
                level -= 1;
            }
        }
    }

    /// Any key, escapes allowed, and the `:` after it: inside a value that is kept as text.
    fn key_anything(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.eat(b':')?.then_some(())
    }

    /// Reads the members of an object whose `{` was consumed, calling `member` with each key
    /// while the reader sits at the value.
    #[inline]
    fn members(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.eat(b'}')? {
            return Some(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            if !self.another(b'}')? {
                return Some(());
            }
        }
    }

    fn item(&mut self, item: &mut Item<'a>) -> Option<()> {
        if !self.eat(b'{')? {
            return None;
        }
        let mut seen = Seen::default();
        self.members(|r, key| {
            let mapped = match key {
                "user" => seen.first("user"),
                "seq-no" => seen.first("seq-no"),
                "grants" => seen.first("grants"),
                _ => false,
            };
            match key {
                _ if !mapped => {
                    let raw = r.raw(1)?;
                    item.item_members
                        .push(ItemMember::Other((Cow::Borrowed(key), raw)));
                }
                "user" => {
                    item.saw_user = true;
                    r.user(item)?;
                    item.item_members.push(ItemMember::User);
                }
                "seq-no" => {
                    item.seq_no = match r.leaf(1)?.1 {
                        Leaf::Null => None,
                        Leaf::Number(n) => Some(n.parse().ok()?),
                        Leaf::String(s) => Some(s.trim().parse().ok()?),
                        _ => return None,
                    };
                }
                _ => {
                    r.grants(item, false)?;
                    item.item_members.push(ItemMember::Grants);
                }
            }
            Some(())
        })?;
        // Only whitespace may follow the item.
        (self.peek().is_none()).then_some(())
    }

    fn user(&mut self, item: &mut Item<'a>) -> Option<()> {
        if !self.eat(b'{')? {
            return None;
        }
        let mut seen = Seen::default();
        self.members(|r, key| {
            let field = user_field(key);
            if field.is_empty() || !seen.first(field) {
                let raw = r.raw(2)?;
                item.user_members.push((Cow::Borrowed(key), raw));
                return Some(());
            }
            match field {
                "user.identifiers" => return r.identifiers(item),
                "user.attributes" => return r.attributes(item),
                _ => {}
            }
            let leaf = r.leaf(2)?.1;
            match field {
                "user.user_id" => item.user_id = Some(leaf.into_text().ok()??),
                "user.email_verified" => {
                    item.email_verified = match leaf {
                        Leaf::Null => None,
                        Leaf::Bool(b) => Some(b),
                        _ => return None,
                    }
                }
                "user.tracking_id" => item.tracking_id = leaf.into_text().ok()?,
                "user.registered" => item.registered = timestamp(leaf)?,
                "user.registration_tenant" => item.registration_tenant = leaf.into_text().ok()?,
                "user.registration_state" => item.registration_state = leaf.into_text().ok()?,
                _ => item.last_login = timestamp(leaf)?,
            }
            Some(())
        })
    }

    /// `null` or an object, as serde's `deserialize_any` takes them; anything else goes back.
    fn null_or_object(&mut self) -> Option<bool> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| false),
            b'{' => {
                self.at += 1;
                Some(true)
            }
            _ => None,
        }
    }

    fn identifiers(&mut self, item: &mut Item<'a>) -> Option<()> {
        if !self.null_or_object()? {
            return Some(());
        }
        let mut seen = Seen::default();
        self.members(|r, key| {
            let first = match key {
                "email_address" => seen.first("email_address"),
                "username" => seen.first("username"),
                _ => false,
            };
            if !first {
                let raw = r.raw(3)?;
                if item.identifiers_at.is_none() {
                    item.identifiers_at = Some(item.user_members.len());
                }
                item.identifier_members.push((Cow::Borrowed(key), raw));
                return Some(());
            }
            let text = r.leaf(3)?.1.into_text().ok()?;
            if key == "email_address" {
                item.email_address = text;
            } else {
                item.username = text;
            }
            Some(())
        })
    }

    fn attributes(&mut self, item: &mut Item<'a>) -> Option<()> {
        if !self.null_or_object()? {
            return Some(());
        }
        self.members(|r, key| {
            let leaf = r.leaf(3)?.1;
            item.attributes.push((Cow::Borrowed(key), leaf));
            Some(())
        })
    }

    /// `grants`: null, an array of grants, or an object whose `results` is one (`in_results`
    /// once inside it, where another object is not allowed).
    fn grants(&mut self, item: &mut Item<'a>, in_results: bool) -> Option<()> {
        match self.peek()? {
            b'n' => self.literal(b"null"),
            b'[' => {
                self.at += 1;
                if self.eat(b']')? {
                    return Some(());
                }
                loop {
                    // Filled where it stands: a grant is a few hundred bytes, and building it
                    // apart and pushing it copied every one of them once more. On failure the
                    // caller clears the item before serde decodes it again.
                    item.grants.push(Grant::default());
                    let grant = item.grants.last_mut().expect("a grant was just pushed");
                    self.grant(grant)?;
                    if !self.another(b']')? {
                        return Some(());
                    }
                }
            }
            b'{' if !in_results => {
                self.at += 1;
                self.members(|r, key| {
                    if key == "results" {
                        r.grants(item, true)
                    } else {
                        let raw = r.raw(2)?;
                        item.grants_members.push((Cow::Borrowed(key), raw));
                        Some(())
                    }
                })
            }
            _ => None,
        }
    }

    /// One grant object, into `grant` (a default one).
    fn grant(&mut self, grant: &mut Grant<'a>) -> Option<()> {
        if !self.eat(b'{')? {
            return None;
        }
        let mut seen = Seen::default();
        self.members(|r, key| {
            let (raw, leaf) = r.leaf(3)?;
            let field = grant_field(key);
            let key = Cow::Borrowed(key);
            if field.is_empty() || !seen.first(field) {
                grant.members.push(GrantMember::Other((key, raw)));
                return Some(());
            }
            // `()`: whatever does not decode here goes back to serde, which words the error.
            grant
                .assign(field, key, raw, |time| {
                    Ok::<_, ()>(if time {
                        GrantValue::Time(timestamp(leaf).ok_or(())?)
                    } else {
                        GrantValue::Text(leaf.into_text().map_err(|_| ())?)
                    })
                })
                .ok()
        })
    }
}

/// A timestamp cell: `Some(None)` for null, `None` when serde must report the value.
fn timestamp(leaf: Leaf<'_>) -> Option<Option<i64>> {
    match leaf {
        Leaf::Null => Some(None),
        Leaf::String(s) => parse_timestamp_micros(&s).map(Some),
        _ => None,
    }
}

/// One past the escape sequence at `bytes[at]` (a backslash), if it is a valid one. As in
/// serde_json, any four hex digits pass here; a lone surrogate is the unescaper's concern.
#[inline]
fn escape_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 2),
        b'u' => bytes
            .get(at + 2..at + 6)?
            .iter()
            .all(u8::is_ascii_hexdigit)
            .then_some(at + 6),
        _ => None,
    }
}

/// The first `"`, `\` or control character at or after `at`.
///
/// Strings are most of an item's bytes, so they are scanned 16 bytes at a time with SSE2, and
/// a shorter tail 8 at a time with bit tricks (see [`find_special_in_words`]).
#[inline]
fn find_special(bytes: &[u8], mut at: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is in the x86_64 baseline; every load reads 16 bytes that the loop
        // condition proves are inside `bytes`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let last_control = _mm_set1_epi8(0x1f);
            while at + 16 <= bytes.len() {
                let v = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                // A byte is a control character when the unsigned minimum with 0x1f is itself.
                let control = _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v);
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    control,
                );
                let mask = _mm_movemask_epi8(hits);
                if mask != 0 {
                    return Some(at + mask.trailing_zeros() as usize);
                }
                at += 16;
            }
        }
    }
    find_special_in_words(bytes, at)
}

/// [`find_special`] eight bytes at a time: for each byte class a word has its high bit set in
/// every byte that matches. Such bit tricks can also flag a byte above a true match (a borrow
/// carries up), but never one below it, so the lowest flagged byte is exactly the first match.
#[inline]
fn find_special_in_words(bytes: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let flagged = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let flagged = flagged & HIGH;
        if flagged != 0 {
            return Some(at + (flagged.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes
        .get(at..)?
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::item::{FieldPath, decode_with_serde};
    use crate::generate::{GenerateSpec, write_export};
    use proptest::prelude::*;

    /// What each decoder makes of `text`: the fast one's item, if it took it, and serde's.
    fn both(text: &str) -> (Option<Item<'_>>, Result<Item<'_>, String>) {
        let mut fast = Item::default();
        let fast = decode(text, &mut fast).then_some(fast);
        let mut slow = Item::default();
        let slow = decode_with_serde(text, &mut slow, &mut FieldPath::default())
            .map(|()| slow)
            .map_err(|e| e.to_string());
        (fast, slow)
    }

    /// The fast path may decline anything, but what it takes, serde takes the same way.
    fn assert_agrees(text: &str) {
        if let (Some(fast), slow) = both(text) {
            match slow {
                Ok(slow) => assert_eq!(fast, slow, "the decoders differ on {text:?}"),
                Err(e) => panic!("fast took {text:?}, which serde refuses: {e}"),
            }
        }
    }

    fn generated_items(users: u64, seed: u64) -> Vec<String> {
        let spec = GenerateSpec {
            users,
            seed,
            grants: true,
            attributes: true,
        };
        let mut out = Vec::new();
        write_export(&spec, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.strip_prefix('{')
                    .map(|_| l.trim_end_matches(',').to_string())
            })
            .collect()
    }

    #[test]
    fn takes_generated_items_as_serde_does() {
        let items = generated_items(300, 7);
        assert_eq!(items.len(), 300);
        for text in &items {
            let (fast, slow) = both(text);
            let fast = fast.unwrap_or_else(|| panic!("fast declined a plain item: {text}"));
            assert_eq!(fast, slow.unwrap());
        }
    }

    #[test]
    fn declines_or_agrees_on_tricky_items() {
        let id = r#""user":{"user_id":"u1"}"#;
        let taken = [
            format!(r#"{{{id}}}"#),
            format!(" {{ {id} , \"seq-no\" : \"17\" }}\n"),
            format!(r#"{{{id},"seq-no":-0,"x":[1,{{"a":[]}},"\u00e9\ud800"],"y":{{}}}}"#),
            format!(r#"{{{id},"grants":null}}"#),
            format!(r#"{{{id},"grants":[]}}"#),
            format!(r#"{{{id},"grants":{{"results":null,"next":"x"}}}}"#),
            format!(r#"{{{id},"grants":{{"results":[{{"grantId":"g","grant_id":"h"}}],"results":[{{}}]}}}}"#),
            format!(r#"{{{id},"user":{{"user_id":"dup"}},"grants":[],"grants":5}}"#),
            r#"{"user":{"user_id":"u\"1","identifiers":null,"attributes":null}}"#.into(),
            r#"{"user":{"user_id":7,"identifiers":{"email_address":"a\/b","x":1,"username":null},"attributes":{"k":1,"a":{"b":[true,false,null]},"n":-1.5E+3}}}"#.into(),
            r#"{"user":{"user_id":"u","email_verified":true,"email_verified":"no","registered":"2021-02-24T15:43:28Z","last_login":null}}"#.into(),
            r#"{"user":{"user_id":"u"},"grants":[{"user_id":"u","createdAt":"2022-06-01 00:00:00","created_at":null,"startTime":null,"extra":{"z":[]} }]}"#.into(),
        ];
        for text in &taken {
            assert!(both(text).0.is_some(), "fast declined {text}");
            assert_agrees(text);
        }
        let declined = [
            r#"{"user":{"user_id":null}}"#,
            r#"{"user":null}"#,
            r#"{"us\u0065r":{"user_id":"u"}}"#,
            r#"{"user":{"user_id":"u"},"seq-no":1.0}"#,
            r#"{"user":{"user_id":"u"},"seq-no":01}"#,
            r#"{"user":{"user_id":"u"},"x":1.}"#,
            r#"{"user":{"user_id":"u"},"x":-}"#,
            r#"{"user":{"user_id":"u"},"x":1e}"#,
            r#"{"user":{"user_id":"u"},"x":"a	b"}"#,
            r#"{"user":{"user_id":"u"},"x":"\x"}"#,
            r#"{"user":{"user_id":"u"},"x":"\u12g4"}"#,
            r#"{"user":{"user_id":"u"},"x":[1,]}"#,
            r#"{"user":{"user_id":"u"},"x":{"a":1,}}"#,
            r#"{"user":{"user_id":"u"},"x":{"a" 1}}"#,
            r#"{"user":{"user_id":"u"},"x":nul}"#,
            r#"{"user":{"user_id":"u"},}"#,
            r#"{"user":{"user_id":"u"}} x"#,
            r#"{"user":{"user_id":"u"}"#,
            r#"{"user":{"user_id":"u","email_verified":"yes"}}"#,
            r#"{"user":{"user_id":"u","registered":"yesterday"}}"#,
            r#"{"user":{"user_id":"u","identifiers":[]}}"#,
            r#"{"user":{"user_id":"u","attributes":"a"}}"#,
            r#"{"user":{"user_id":{}}}"#,
            r#"{"user":{"user_id":"u"},"grants":{"results":{}}}"#,
            r#"{"user":{"user_id":"u"},"grants":[null]}"#,
            r#"{"user":{"user_id":"u"},"grants":[{"startTime":5}]}"#,
            r#"{"seq-no":1}"#,
            r#"{"user":{"user_id":"u","attributes":{"k\u0041":1}}}"#,
        ];
        for text in declined {
            assert!(both(text).0.is_none(), "fast took {text}");
        }
        let deep = format!(
            r#"{{"user":{{"user_id":"u"}},"x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        // Deep nesting is left to serde, whatever it makes of it.
        assert!(both(&deep).0.is_none());
    }

    #[test]
    fn finds_special_bytes_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes that a careless bit trick confuses with the specials.
                    for (i, b) in bytes.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x80, 0xff, b'#', b']', 0x21][i % 7];
                    }
                    bytes[at] = special;
                    assert_eq!(find_special(&bytes, 0), Some(at), "{bytes:?}");
                    assert_eq!(find_special_in_words(&bytes, 0), Some(at), "{bytes:?}");
                }
            }
            assert_eq!(find_special(&vec![b'x'; len], 0), None);
            assert_eq!(find_special_in_words(&vec![0x80; len], 0), None);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Mutated items: whatever the fast path still takes, serde must take the same way.
        #[test]
        fn agrees_with_serde(
            pick in 0usize..40,
            edits in proptest::collection::vec((any::<u16>(), 0u8..4, any::<u8>()), 1..4),
        ) {
            const BYTES: &[u8] = b"{}[]\",:\\ 0123456789.eE+-tfnul\tax\x01";
            let items = generated_items(40, 3);
            let mut bytes = items[pick].clone().into_bytes();
            for (at, kind, byte) in edits {
                let at = usize::from(at) % (bytes.len() + 1);
                let byte = BYTES[usize::from(byte) % BYTES.len()];
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 if at < bytes.len() => { bytes.remove(at); }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                assert_agrees(&text);
            }
        }
    }
}
