//! The item decoder: one hand-written pass over an item's bytes fills an [`Item`].
//!
//! Each byte is read once: strings are scanned 16 bytes at a time, a value the tables keep as
//! written (`extra`, attributes) is sliced out of the input, and only the fields of
//! `Field` are looked at. Through serde's visitors every leaf was read twice (once to capture
//! it, once to classify it), which made that generic machinery the largest single cost of a
//! conversion; this reader took its place and is now the only decoder.
//!
//! It stops at the first problem, in the order of the input: a value of the wrong kind or a
//! string that is not a timestamp is a [`Problem`] at a [`FieldPath`]; broken JSON is only
//! flagged, and the caller's syntax check (`source::syntax`) finds the exact byte. What it
//! accepts is exactly what serde_json accepts, with the same meaning: keys are unescaped and
//! checked for lone surrogates as serde_json does, values kept as written are not (nor are
//! they by serde_json), and nesting is not limited where a value is only kept. A key that
//! holds half a surrogate pair cannot become text, so its item is a bad item (which
//! `--on-error` decides about), named by its user id: decoding goes on after such a key to
//! find the id, and the key, the first problem in the input, is the one reported.

use std::borrow::Cow;

use super::item::{Field, FieldPath, Grant, GrantMember, Item, ItemMember, Object, Seen};
use super::json::{Leaf, unescape, unescape_checked};
use super::problem::{DecodeError, Expected, Found, Problem};
use crate::byte_class::{ByteClass, chunk_at, mask16};
use crate::timestamp::parse_timestamp_micros;

/// Errors are boxed: the `Ok` path then carries a pointer-sized error slot through every call.
type Result<T> = std::result::Result<T, Box<DecodeError>>;

#[cold]
#[inline(never)]
fn broken() -> Box<DecodeError> {
    Box::new(DecodeError::Broken)
}

/// `None` (the bytes break the grammar) as [`DecodeError::Broken`].
trait OrBroken<T> {
    fn or_broken(self) -> Result<T>;
}

impl<T> OrBroken<T> for Option<T> {
    #[inline(always)]
    fn or_broken(self) -> Result<T> {
        match self {
            Some(v) => Ok(v),
            None => Err(broken()),
        }
    }
}

#[cold]
fn bad(path: FieldPath, problem: Problem) -> Box<DecodeError> {
    Box::new(DecodeError::Bad { path, problem })
}

/// Decodes `text` (one item) into `item`, which must be empty (see [`Item::clear`]). On
/// failure `item` holds what was decoded before the problem (its user id names the item in
/// messages) and must be cleared before reuse.
pub fn decode<'a>(text: &'a str, item: &mut Item<'a>) -> std::result::Result<(), DecodeError> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
        bad_key: None,
    };
    let outcome = reader.item(item);
    match reader.bad_key {
        // Broken JSON anywhere still stops the run: the caller's syntax check finds it.
        Some(key) if !matches!(outcome.as_ref().map_err(|e| &**e), Err(DecodeError::Broken)) => {
            Err(*key)
        }
        _ => outcome.map_err(|e| *e),
    }
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// The first key that holds half a surrogate pair: the item's problem, reported once the
    /// rest of the item was read for its user id.
    bad_key: Option<Box<DecodeError>>,
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
    fn eat(&mut self, byte: u8) -> Result<bool> {
        let found = self.peek().or_broken()? == byte;
        self.at += usize::from(found);
        Ok(found)
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

    /// A key of the object at `path` and the `:` after it, unescaped and checked as
    /// serde_json checks keys. A key that holds half a surrogate pair is recorded as the
    /// item's problem and read on as written (see [`Reader::bad_key`]).
    #[inline]
    fn key(&mut self, path: impl Fn() -> FieldPath) -> Result<Cow<'a, str>> {
        if self.peek().or_broken()? != b'"' {
            return Err(broken());
        }
        let (raw, escaped) = self.string().or_broken()?;
        if !self.eat(b':')? {
            return Err(broken());
        }
        let inner = &raw[1..raw.len() - 1];
        if !escaped {
            return Ok(Cow::Borrowed(inner));
        }
        match unescape_checked(raw) {
            Ok(key) => Ok(key),
            Err(_) => {
                self.not_unicode_key(path(), inner);
                Ok(Cow::Borrowed(inner))
            }
        }
    }

    /// Records the key `written` (as written, without quotes) of the object at `path` as
    /// the item's problem, unless an earlier key was.
    #[cold]
    #[inline(never)]
    fn not_unicode_key(&mut self, path: FieldPath, written: &str) {
        if self.bad_key.is_none() {
            let key = match written.char_indices().nth(40) {
                Some((cut, _)) => format!("{}…", &written[..cut]),
                None => written.to_owned(),
            };
            self.bad_key = Some(bad(path, Problem::KeyNotUnicode { key }));
        }
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
            // A leading zero stands alone.
            b'0' if bytes.get(at + 1).is_some_and(u8::is_ascii_digit) => return None,
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
    fn raw(&mut self) -> Result<&'a str> {
        self.peek().or_broken()?;
        let start = self.at;
        self.skip().or_broken()?;
        self.text.get(start..self.at).or_broken()
    }

    /// Any value, checked: its raw text and what it is.
    #[inline]
    fn leaf(&mut self) -> Result<(&'a str, Leaf<'a>)> {
        let first = self.peek().or_broken()?;
        let start = self.at;
        let leaf = match first {
            b'"' => {
                let (raw, escaped) = self.string().or_broken()?;
                // Unescaping is the rare case; a plain string borrows its inside.
                let leaf = if escaped {
                    Leaf::String(unescape(raw))
                } else {
                    Leaf::String(Cow::Borrowed(&raw[1..raw.len() - 1]))
                };
                return Ok((raw, leaf));
            }
            b'-' | b'0'..=b'9' => Leaf::Number(self.number().or_broken()?),
            b'{' | b'[' => {
                let raw = self.raw()?;
                return Ok((raw, Leaf::of(raw)));
            }
            b'n' => self.literal(b"null").map(|()| Leaf::Null).or_broken()?,
            b't' => self
                .literal(b"true")
                .map(|()| Leaf::Bool(true))
                .or_broken()?,
            b'f' => self
                .literal(b"false")
                .map(|()| Leaf::Bool(false))
                .or_broken()?,
            _ => return Err(broken()),
        };
        Ok((self.text.get(start..self.at).or_broken()?, leaf))
    }

    /// Skips one value of any kind, checking its syntax, without recursion and with no limit
    /// on nesting (a value kept as written may nest as deep as it likes).
    fn skip(&mut self) -> Option<()> {
        // Bit `level` is set when that level of nesting is an object; levels past 127, which
        // real exports never reach, are kept in `deeper`.
        let mut objects: u128 = 0;
        let mut deeper: Vec<bool> = Vec::new();
        let mut level: usize = 0;
        let is_object = |objects: u128, deeper: &[bool], level: usize| match level {
            0..128 => objects >> level & 1 == 1,
            _ => deeper[level - 128],
        };
        'value: loop {
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.at += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    let is_empty = self.peek()? == close;
                    if is_empty {
                        self.at += 1;
                    } else {
                        level += 1;
                        let object = open == b'{';
                        if level < 128 {
                            objects = (objects & !(1 << level)) | (u128::from(object) << level);
                        } else {
                            deeper.truncate(level - 128);
                            deeper.push(object);
                        }
                        if object {
                            self.key_anything()?;
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
                let in_object = is_object(objects, &deeper, level);
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

    /// Any key, escapes allowed and not checked, and the `:` after it: inside a value that is
    /// kept as written (serde_json does not check those either).
    fn key_anything(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        if self.peek()? != b':' {
            return None;
        }
        self.at += 1;
        Some(())
    }

    /// Reads the members of the object at `path` whose `{` was consumed, calling `member`
    /// with each key while the reader sits at the value.
    #[inline]
    fn members(
        &mut self,
        path: impl Fn() -> FieldPath,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        if self.eat(b'}')? {
            return Ok(());
        }
        loop {
            let key = self.key(&path)?;
            member(self, key)?;
            if !self.another(b'}').or_broken()? {
                return Ok(());
            }
        }
    }

    /// The value at the reader, which is not what `expected` asks for at `path`: the error
    /// that says what it is.
    #[cold]
    #[inline(never)]
    fn wrong_type(&mut self, path: FieldPath, expected: Expected) -> Box<DecodeError> {
        match self.found() {
            Ok(found) => bad(path, Problem::WrongType { expected, found }),
            Err(e) => e,
        }
    }

    /// What the value at the reader is, as serde_json describes a value of the wrong type.
    fn found(&mut self) -> Result<Found> {
        let start = self.at;
        Ok(match self.peek().or_broken()? {
            b'{' => Found::Object,
            b'[' => Found::Array,
            b'"' => {
                let (raw, _) = self.string().or_broken()?;
                match unescape_checked(raw) {
                    Ok(text) => Found::String(text.into_owned()),
                    // Half a surrogate pair cannot become text: shown as written.
                    Err(_) => Found::Written {
                        kind: "string",
                        text: raw.to_owned(),
                    },
                }
            }
            b'-' | b'0'..=b'9' => {
                let raw = self.number().or_broken()?;
                // serde_json's reading of the number (an integer, or the nearest double) and
                // its way of printing it.
                match serde_json::from_str::<serde_json::Number>(raw) {
                    Ok(n) => Found::Number(n.to_string()),
                    Err(e) => {
                        return Err(Box::new(DecodeError::Invalid {
                            offset: start + e.column().max(1) - 1,
                            problem: "number out of range".into(),
                        }));
                    }
                }
            }
            b'n' => self.literal(b"null").map(|()| Found::Null).or_broken()?,
            b't' => self
                .literal(b"true")
                .map(|()| Found::Bool(true))
                .or_broken()?,
            b'f' => self
                .literal(b"false")
                .map(|()| Found::Bool(false))
                .or_broken()?,
            _ => return Err(broken()),
        })
    }

    fn item(&mut self, item: &mut Item<'a>) -> Result<()> {
        if !self.eat(b'{')? {
            return Err(self.not_an_object());
        }
        let mut seen = Seen::default();
        self.members(FieldPath::default, |r, key| {
            let field = Field::of(Object::Item, &key).filter(|&f| seen.first(f));
            match field {
                Some(Field::User) => {
                    item.saw_user = true;
                    r.user(item)?;
                    item.item_members.push(ItemMember::User);
                }
                Some(Field::SeqNo) => item.seq_no = r.seq_no()?,
                Some(Field::Grants) => {
                    r.grants(item, false)?;
                    item.item_members.push(ItemMember::Grants);
                }
                // Unmapped, or a repeat of a mapped key: kept as written for `extra`.
                _ => {
                    let raw = r.raw()?;
                    item.item_members.push(ItemMember::Other((key, raw)));
                }
            }
            Ok(())
        })?;
        // Only whitespace may follow the item.
        if self.peek().is_some() {
            return Err(broken());
        }
        if item.user_id.is_none() {
            return Err(if item.saw_user {
                bad(FieldPath::of(Field::UserId.name()), Problem::NoUserId)
            } else {
                bad(FieldPath::of(Field::User.name()), Problem::NoUser)
            });
        }
        Ok(())
    }

    /// The error for an item that is not an object, if it is valid JSON (which the caller
    /// checks): what the item is instead.
    #[cold]
    fn not_an_object(&mut self) -> Box<DecodeError> {
        let bytes = &self.bytes[self.at..];
        let found = match bytes.first() {
            Some(b'[') => Found::Described("an array"),
            Some(b'"') => Found::Described("a string"),
            Some(b't' | b'f') => Found::Described("a boolean"),
            Some(b'n') => Found::Described("null"),
            _ => Found::Number(String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into()),
        };
        bad(
            FieldPath::default(),
            Problem::WrongType {
                expected: Expected::Item,
                found,
            },
        )
    }

    /// `seq-no`: an integer, a string holding one, or null.
    fn seq_no(&mut self) -> Result<Option<i64>> {
        let path = || FieldPath::of(Field::SeqNo.name());
        let wrong = |found| {
            bad(
                path(),
                Problem::WrongType {
                    expected: Expected::Integer,
                    found,
                },
            )
        };
        match self.leaf()?.1 {
            Leaf::Null => Ok(None),
            Leaf::Number(n) => n
                .parse()
                .map(Some)
                .map_err(|_| wrong(Found::Bare(n.into()))),
            Leaf::String(s) => match s.trim().parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(wrong(Found::String(s.into_owned()))),
            },
            other => Err(wrong(Found::Described(other.type_name()))),
        }
    }

    fn user(&mut self, item: &mut Item<'a>) -> Result<()> {
        if !self.eat(b'{')? {
            return Err(self.wrong_type(FieldPath::of(Field::User.name()), Expected::User));
        }
        let mut seen = Seen::default();
        self.members(
            || FieldPath::of(Field::User.name()),
            |r, key| {
                let Some(field) = Field::of(Object::User, &key).filter(|&f| seen.first(f)) else {
                    // Unmapped, or a repeat of a mapped key: kept as written for `extra`.
                    let raw = r.raw()?;
                    item.user_members.push((key, raw));
                    return Ok(());
                };
                let path = || FieldPath::of(field.name());
                match field {
                    Field::Identifiers => return r.identifiers(item),
                    Field::Attributes => return r.attributes(item),
                    _ => {}
                }
                let (raw, leaf) = r.leaf()?;
                match field {
                    Field::UserId => {
                        item.user_id = text(leaf, path)?;
                        if item.user_id.is_none() {
                            return Err(bad(path(), Problem::NullUserId));
                        }
                    }
                    Field::TrackingId => item.tracking_id = text(leaf, path)?,
                    Field::RegistrationTenant => item.registration_tenant = text(leaf, path)?,
                    Field::RegistrationState => item.registration_state = text(leaf, path)?,
                    Field::Registered => item.registered = timestamp(leaf, path)?,
                    Field::LastLogin => item.last_login = timestamp(leaf, path)?,
                    Field::EmailVerified => item.email_verified = boolean(raw, leaf, path)?,
                    // Fields of the other objects: `Field::of(Object::User, _)` gives none of them.
                    Field::Identifiers
                    | Field::Attributes
                    | Field::User
                    | Field::SeqNo
                    | Field::Grants
                    | Field::EmailAddress
                    | Field::Username
                    | Field::GrantId
                    | Field::GrantIdSnake
                    | Field::AccountId
                    | Field::ExpiryState
                    | Field::EntitlementType
                    | Field::EntitlementId
                    | Field::ProductId
                    | Field::StartTime
                    | Field::EndTime
                    | Field::CreatedAt
                    | Field::CreatedAtSnake
                    | Field::GrantUserId => {}
                }
                Ok(())
            },
        )
    }

    /// `null` or an object, else the error that `expected` is at `path`.
    fn null_or_object(&mut self, path: FieldPath, expected: Expected) -> Result<bool> {
        match self.peek().or_broken()? {
            b'n' => self.literal(b"null").map(|()| false).or_broken(),
            b'{' => {
                self.at += 1;
                Ok(true)
            }
            _ => Err(self.wrong_type(path, expected)),
        }
    }

    fn identifiers(&mut self, item: &mut Item<'a>) -> Result<()> {
        let path = FieldPath::of(Field::Identifiers.name());
        if !self.null_or_object(path, Expected::Identifiers)? {
            return Ok(());
        }
        let mut seen = Seen::default();
        self.members(
            || FieldPath::of(Field::Identifiers.name()),
            |r, key| {
                let Some(field) = Field::of(Object::Identifiers, &key).filter(|&f| seen.first(f))
                else {
                    let raw = r.raw()?;
                    if item.identifiers_at.is_none() {
                        item.identifiers_at = Some(item.user_members.len());
                    }
                    item.identifier_members.push((key, raw));
                    return Ok(());
                };
                let value = text(r.leaf()?.1, || FieldPath::of(field.name()))?;
                match field {
                    Field::EmailAddress => item.email_address = value,
                    Field::Username => item.username = value,
                    // Fields of the other objects: `Field::of(Object::Identifiers, _)` gives none.
                    Field::User
                    | Field::SeqNo
                    | Field::Grants
                    | Field::UserId
                    | Field::Identifiers
                    | Field::EmailVerified
                    | Field::TrackingId
                    | Field::Registered
                    | Field::RegistrationTenant
                    | Field::RegistrationState
                    | Field::LastLogin
                    | Field::Attributes
                    | Field::GrantId
                    | Field::GrantIdSnake
                    | Field::AccountId
                    | Field::ExpiryState
                    | Field::EntitlementType
                    | Field::EntitlementId
                    | Field::ProductId
                    | Field::StartTime
                    | Field::EndTime
                    | Field::CreatedAt
                    | Field::CreatedAtSnake
                    | Field::GrantUserId => {}
                }
                Ok(())
            },
        )
    }

    fn attributes(&mut self, item: &mut Item<'a>) -> Result<()> {
        let path = FieldPath::of(Field::Attributes.name());
        if !self.null_or_object(path, Expected::Attributes)? {
            return Ok(());
        }
        self.members(
            || FieldPath::of(Field::Attributes.name()),
            |r, key| {
                let leaf = r.leaf()?.1;
                item.attributes.push((key, leaf));
                Ok(())
            },
        )
    }

    /// `grants`: null, an array of grants, or an object whose `results` is one (`in_results`
    /// once inside it, where another object is not allowed).
    fn grants(&mut self, item: &mut Item<'a>, in_results: bool) -> Result<()> {
        match self.peek().or_broken()? {
            b'n' => self.literal(b"null").or_broken(),
            b'[' => {
                self.at += 1;
                if self.eat(b']')? {
                    return Ok(());
                }
                loop {
                    // Filled where it stands: a grant is a few hundred bytes, and building it
                    // apart and pushing it copied every one of them once more.
                    let index = item.grants.len();
                    item.grants.push(Grant::default());
                    let grant = item.grants.last_mut().expect("a grant was just pushed");
                    self.grant(grant, index)?;
                    if !self.another(b']').or_broken()? {
                        return Ok(());
                    }
                }
            }
            b'{' if !in_results => {
                self.at += 1;
                self.members(
                    || FieldPath::of(Field::Grants.name()),
                    |r, key| {
                        if key == "results" {
                            r.grants(item, true)
                        } else {
                            let raw = r.raw()?;
                            item.grants_members.push((key, raw));
                            Ok(())
                        }
                    },
                )
            }
            _ if in_results => {
                Err(self.wrong_type(FieldPath::of("grants.results"), Expected::GrantsResults))
            }
            _ => Err(self.wrong_type(FieldPath::of(Field::Grants.name()), Expected::Grants)),
        }
    }

    /// Grant `index` of the item, into `grant` (a default one).
    fn grant(&mut self, grant: &mut Grant<'a>, index: usize) -> Result<()> {
        if !self.eat(b'{')? {
            let path = FieldPath {
                field: "",
                grant: Some(index),
            };
            return Err(self.wrong_type(path, Expected::Grant));
        }
        let mut seen = Seen::default();
        let path = || FieldPath {
            field: "",
            grant: Some(index),
        };
        self.members(path, |r, key| {
            let (raw, leaf) = r.leaf()?;
            let Some(field) = Field::of(Object::Grant, &key).filter(|&f| seen.first(f)) else {
                grant.members.push(GrantMember::Other((key, raw)));
                return Ok(());
            };
            let path = || FieldPath {
                field: field.name(),
                grant: Some(index),
            };
            // Which spelling wins: `grantId` over `grant_id`, `createdAt` over `created_at`;
            // the other is kept for `extra` (see `extra.rs`), a `grant_id` after `grantId`
            // without being decoded.
            match field {
                Field::GrantId => {
                    grant.grant_id = text(leaf, path)?;
                    grant.has_camel_id = true;
                }
                Field::GrantIdSnake => {
                    if !grant.has_camel_id {
                        grant.grant_id = text(leaf, path)?;
                    }
                    grant.members.push(GrantMember::SnakeSpelling((key, raw)));
                }
                Field::AccountId => grant.account_id = text(leaf, path)?,
                Field::ExpiryState => grant.expiry_state = text(leaf, path)?,
                Field::EntitlementType => grant.entitlement_type = text(leaf, path)?,
                Field::EntitlementId => grant.entitlement_id = text(leaf, path)?,
                Field::ProductId => grant.product_id = text(leaf, path)?,
                Field::GrantUserId => {
                    grant.user_id = Some((text(leaf, path)?, raw));
                    grant.members.push(GrantMember::UserId(raw));
                }
                Field::StartTime => grant.start_time = timestamp(leaf, path)?,
                Field::EndTime => grant.end_time = timestamp(leaf, path)?,
                Field::CreatedAt => {
                    grant.created_at = timestamp(leaf, path)?;
                    grant.has_camel_created = true;
                }
                Field::CreatedAtSnake => {
                    let created_at = timestamp(leaf, path)?;
                    if !grant.has_camel_created {
                        grant.created_at = created_at;
                    }
                    grant.members.push(GrantMember::SnakeSpelling((key, raw)));
                }
                // Fields of the other objects: `Field::of(Object::Grant, _)` gives none.
                Field::User
                | Field::SeqNo
                | Field::Grants
                | Field::UserId
                | Field::Identifiers
                | Field::EmailVerified
                | Field::TrackingId
                | Field::Registered
                | Field::RegistrationTenant
                | Field::RegistrationState
                | Field::LastLogin
                | Field::Attributes
                | Field::EmailAddress
                | Field::Username => grant.members.push(GrantMember::Other((key, raw))),
            }
            Ok(())
        })
    }
}

/// A string cell: text, a number as written or a boolean; `None` for null. An object or an
/// array cannot be kept faithfully in a string column: a bad item.
#[inline]
fn text<'a>(leaf: Leaf<'a>, path: impl Fn() -> FieldPath) -> Result<Option<Cow<'a, str>>> {
    leaf.into_text().map_err(|found| {
        bad(
            path(),
            Problem::WrongType {
                expected: Expected::Text,
                found,
            },
        )
    })
}

/// A timestamp cell: microseconds, or `None` for null.
#[inline]
fn timestamp(leaf: Leaf<'_>, path: impl Fn() -> FieldPath) -> Result<Option<i64>> {
    match leaf {
        Leaf::Null => Ok(None),
        Leaf::String(s) => match parse_timestamp_micros(&s) {
            Some(micros) => Ok(Some(micros)),
            None => Err(bad(path(), Problem::NotATimestamp(s.into_owned()))),
        },
        other => Err(bad(
            path(),
            Problem::WrongType {
                expected: Expected::TimestampString,
                found: Found::Described(other.type_name()),
            },
        )),
    }
}

/// A boolean cell: `true`, `false`, or `None` for null. Anything else is shown as written,
/// cut short: it may be a whole object.
fn boolean(raw: &str, leaf: Leaf<'_>, path: impl Fn() -> FieldPath) -> Result<Option<bool>> {
    match leaf {
        Leaf::Null => Ok(None),
        Leaf::Bool(b) => Ok(Some(b)),
        other => {
            let text = match raw.char_indices().nth(40) {
                Some((cut, _)) => format!("{}…", &raw[..cut]),
                None => raw.to_string(),
            };
            Err(bad(
                path(),
                Problem::WrongType {
                    expected: Expected::Bool,
                    found: Found::Written {
                        kind: other.type_name(),
                        text,
                    },
                },
            ))
        }
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
/// Strings are most of an item's bytes, so they are scanned 16 bytes at a time (the SIMD
/// kernel of `byte_class`), and
/// a shorter tail 8 at a time with bit tricks (see [`find_special_in_words`]).
#[inline]
fn find_special(bytes: &[u8], mut at: usize) -> Option<usize> {
    const SPECIAL: ByteClass = ByteClass::of(b"\"\\").and_controls();
    while at + 16 <= bytes.len() {
        let mask = mask16(chunk_at(bytes, at), SPECIAL);
        if mask != 0 {
            return Some(at + mask.trailing_zeros() as usize);
        }
        at += 16;
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
mod tests;
