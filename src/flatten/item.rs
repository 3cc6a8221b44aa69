//! Decoding one raw item into borrowed values, with no intermediate JSON tree.
//!
//! [`Item`] is what a decoded item is, and [`decode`] fills it. The hand-written reader of
//! `fast.rs` decodes nearly every item; what it declines, the serde visitors here decode from
//! scratch, and they word every error. They take every mapped field as a `&RawValue` (a
//! slice of the source), classify it with [`Leaf`], and check it. Strings without escapes are
//! borrowed, so a typical item allocates only its small vectors. Decoding finishes before any
//! row is emitted, so a bad item can never leave half its rows in a table.
//!
//! Unmapped fields are kept as raw slices in source order and assembled into the `extra`
//! objects (see `extra.rs`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::Leaf;
use super::timestamp::parse_timestamp_micros;

/// A key that borrows from the input unless it contains escapes.
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// An unmapped member kept for `extra`: its key and its value's raw text exactly as written.
pub type Member<'a> = (Cow<'a, str>, &'a str);

/// A grant, decoded.
#[derive(Debug, Default, PartialEq)]
pub struct Grant<'a> {
    pub grant_id: Option<Cow<'a, str>>,
    pub account_id: Option<Cow<'a, str>>,
    pub expiry_state: Option<Cow<'a, str>>,
    pub entitlement_type: Option<Cow<'a, str>>,
    pub entitlement_id: Option<Cow<'a, str>>,
    pub product_id: Option<Cow<'a, str>>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub created_at: Option<i64>,
    /// The grant's own `user_id`, kept in `extra` only if it differs from the item's.
    pub user_id: Option<(Option<Cow<'a, str>>, &'a str)>,
    /// Every member in source order that may go to `extra`, including the snake_case spelling
    /// when the camelCase one is also present (resolved in `extra.rs`).
    pub members: Vec<GrantMember<'a>>,
    pub has_camel_id: bool,
    pub has_camel_created: bool,
}

/// A grant member that may belong in `extra`.
#[derive(Debug, PartialEq)]
pub enum GrantMember<'a> {
    Other(Member<'a>),
    /// `user_id`, kept only when it differs from the item's user id.
    UserId(&'a str),
    /// `grant_id` or `created_at`, kept only when the camelCase spelling is present too.
    SnakeSpelling(Member<'a>),
}

/// Where `user` and `grants` sit among the item's members, so `extra` keeps source order.
#[derive(Debug, PartialEq)]
pub enum ItemMember<'a> {
    Other(Member<'a>),
    User,
    Grants,
}

/// An item, decoded and checked, borrowing from its raw bytes.
#[derive(Debug, Default, PartialEq)]
pub struct Item<'a> {
    pub user_id: Option<Cow<'a, str>>,
    pub email_address: Option<Cow<'a, str>>,
    pub username: Option<Cow<'a, str>>,
    pub email_verified: Option<bool>,
    pub tracking_id: Option<Cow<'a, str>>,
    pub registered: Option<i64>,
    pub registration_tenant: Option<Cow<'a, str>>,
    pub registration_state: Option<Cow<'a, str>>,
    pub last_login: Option<i64>,
    pub seq_no: Option<i64>,
    pub grants: Vec<Grant<'a>>,
    pub attributes: Vec<(Cow<'a, str>, Leaf<'a>)>,
    pub item_members: Vec<ItemMember<'a>>,
    pub user_members: Vec<Member<'a>>,
    /// Position of `identifiers` among the user's members, when it has unmapped keys.
    pub identifiers_at: Option<usize>,
    pub identifier_members: Vec<Member<'a>>,
    pub grants_members: Vec<Member<'a>>,
    pub saw_user: bool,
}

impl Item<'_> {
    /// Empties the item for the next one of the batch, keeping the vectors' capacity so a
    /// batch allocates them once instead of once per item.
    pub fn clear(&mut self) {
        let mut grants = std::mem::take(&mut self.grants);
        let mut attributes = std::mem::take(&mut self.attributes);
        let mut item_members = std::mem::take(&mut self.item_members);
        let mut user_members = std::mem::take(&mut self.user_members);
        let mut identifier_members = std::mem::take(&mut self.identifier_members);
        let mut grants_members = std::mem::take(&mut self.grants_members);
        grants.clear();
        attributes.clear();
        item_members.clear();
        user_members.clear();
        identifier_members.clear();
        grants_members.clear();
        *self = Item {
            grants,
            attributes,
            item_members,
            user_members,
            identifier_members,
            grants_members,
            ..Item::default()
        };
    }
}

/// The mapped keys an object has shown so far. A JSON object may repeat a key; the first
/// occurrence fills the column and every repeat is kept, as written, in `extra`, so nothing
/// is dropped and no column silently takes the last value.
#[derive(Default)]
pub(super) struct Seen {
    /// No object has more mapped keys than this; kept inline, as this runs for every object
    /// of every item and an allocation here showed up in profiles.
    names: [&'static str; 16],
    len: usize,
}

impl Seen {
    /// Records `field`; true the first time it is seen.
    pub(super) fn first(&mut self, field: &'static str) -> bool {
        let seen = &self.names[..self.len];
        // Same length first: most names differ there, and the string compare is skipped.
        if seen.iter().any(|f| f.len() == field.len() && *f == field) {
            return false;
        }
        if self.len < self.names.len() {
            self.names[self.len] = field;
            self.len += 1;
        }
        true
    }
}

/// The mapped user member `key` as errors name it (`user.user_id`); "" when it is not
/// mapped. Both decoders map keys with it.
pub(super) fn user_field(key: &str) -> &'static str {
    match key {
        "user_id" => "user.user_id",
        "identifiers" => "user.identifiers",
        "email_verified" => "user.email_verified",
        "tracking_id" => "user.tracking_id",
        "registered" => "user.registered",
        "registration_tenant" => "user.registration_tenant",
        "registration_state" => "user.registration_state",
        "last_login" => "user.last_login",
        "attributes" => "user.attributes",
        _ => "",
    }
}

/// The mapped grant member `key` as [`Seen`] records it; "" when it is not mapped. Both
/// decoders map keys with it.
pub(super) fn grant_field(key: &str) -> &'static str {
    match key {
        "grantId" => "grantId",
        "grant_id" => "grant_id",
        "account_id" => "account_id",
        "expiry_state" => "expiry_state",
        "entitlement_type" => "entitlement_type",
        "entitlement_id" => "entitlement_id",
        "product_id" => "product_id",
        "startTime" => "startTime",
        "endTime" => "endTime",
        "createdAt" => "createdAt",
        "created_at" => "created_at",
        "user_id" => "user_id",
        _ => "",
    }
}

/// The decoded value of a mapped grant field: text for ids and states, a timestamp for times.
pub(super) enum GrantValue<'a> {
    Text(Option<Cow<'a, str>>),
    Time(Option<i64>),
}

impl<'a> Grant<'a> {
    /// Stores the first occurrence of the mapped grant `field` (as [`grant_field`] names it),
    /// written as `key` with text `raw`: which spelling wins and what is kept for `extra`, for
    /// both decoders. `decode(time)` decodes the value, as a timestamp when `time`, else as
    /// text; its error is returned. A `grant_id` after `grantId` is kept for `extra` undecoded.
    pub(super) fn assign<E>(
        &mut self,
        field: &str,
        key: Cow<'a, str>,
        raw: &'a str,
        decode: impl FnOnce(bool) -> Result<GrantValue<'a>, E>,
    ) -> Result<(), E> {
        use GrantValue::{Text, Time};
        if field == "grant_id" && self.has_camel_id {
            self.members.push(GrantMember::SnakeSpelling((key, raw)));
            return Ok(());
        }
        let time = matches!(field, "startTime" | "endTime" | "createdAt" | "created_at");
        match (field, decode(time)?) {
            ("grantId", Text(v)) => {
                self.grant_id = v;
                self.has_camel_id = true;
            }
            ("grant_id", Text(v)) => {
                self.grant_id = v;
                self.members.push(GrantMember::SnakeSpelling((key, raw)));
            }
            ("account_id", Text(v)) => self.account_id = v,
            ("expiry_state", Text(v)) => self.expiry_state = v,
            ("entitlement_type", Text(v)) => self.entitlement_type = v,
            ("entitlement_id", Text(v)) => self.entitlement_id = v,
            ("product_id", Text(v)) => self.product_id = v,
            ("user_id", Text(v)) => {
                self.user_id = Some((v, raw));
                self.members.push(GrantMember::UserId(raw));
            }
            ("startTime", Time(v)) => self.start_time = v,
            ("endTime", Time(v)) => self.end_time = v,
            ("createdAt", Time(v)) => {
                self.created_at = v;
                self.has_camel_created = true;
            }
            ("created_at", Time(v)) => {
                if !self.has_camel_created {
                    self.created_at = v;
                }
                self.members.push(GrantMember::SnakeSpelling((key, raw)));
            }
            (field, _) => unreachable!("grant field {field:?} decoded as the wrong kind"),
        }
        Ok(())
    }
}

/// The field being decoded, so a failure can name it (`grants.results[2].startTime`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldPath {
    pub field: &'static str,
    pub grant: Option<usize>,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.grant {
            Some(i) => write!(
                f,
                "grants.results[{i}]{}{}",
                if self.field.is_empty() { "" } else { "." },
                self.field
            ),
            None => f.write_str(self.field),
        }
    }
}

/// Decodes `text` (one item, known to start with `{`) into an empty `item`. On failure `path`
/// names the field that was being read; serde_json's error category tells a bad item (`Data`)
/// from broken JSON (`Syntax`, `Eof`).
///
/// The hand-written reader of `fast.rs` decodes nearly every item; whatever it declines is
/// decoded again from scratch by serde, which also words every error.
pub fn decode<'a>(
    text: &'a str,
    item: &mut Item<'a>,
    path: &mut FieldPath,
) -> Result<(), serde_json::Error> {
    if super::fast::decode(text, item) {
        return Ok(());
    }
    item.clear();
    decode_with_serde(text, item, path)
}

/// [`decode`] through serde's visitors only.
pub fn decode_with_serde<'a>(
    text: &'a str,
    item: &mut Item<'a>,
    path: &mut FieldPath,
) -> Result<(), serde_json::Error> {
    // The batch was checked to be UTF-8 as a whole, so serde_json need not check each string.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.deserialize_map(ItemVisitor { item, path })?;
    deserializer.end()?;
    if item.user_id.is_none() {
        *path = FieldPath {
            field: if item.saw_user {
                "user.user_id"
            } else {
                "user"
            },
            grant: None,
        };
        return Err(de::Error::custom(if item.saw_user {
            "the item has no user.user_id; every user row needs one"
        } else {
            "the item has no `user` object"
        }));
    }
    Ok(())
}

fn text<'a, E: de::Error>(raw: &'a str) -> Result<Option<Cow<'a, str>>, E> {
    Leaf::of(raw).into_text().map_err(|kind| {
        E::custom(format!(
            "expected text, a number or a boolean, found {kind}"
        ))
    })
}

fn timestamp<E: de::Error>(raw: &str) -> Result<Option<i64>, E> {
    match Leaf::of(raw) {
        Leaf::Null => Ok(None),
        Leaf::String(s) => parse_timestamp_micros(&s).map(Some).ok_or_else(|| {
            E::custom(format!(
                "{:?} is not a timestamp; expected ISO-8601 such as 2021-02-24T15:43:28Z or \
                 2022-06-01 00:00:00",
                s.as_ref()
            ))
        }),
        other => Err(E::custom(format!(
            "expected a timestamp string, found {}",
            other.type_name()
        ))),
    }
}

struct ItemVisitor<'c, 'a> {
    item: &'c mut Item<'a>,
    path: &'c mut FieldPath,
}

impl<'de> Visitor<'de> for ItemVisitor<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an item object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            // A key that repeats is kept, as written, in `extra`; only the first fills columns.
            let mapped = match key.as_ref() {
                "user" => seen.first("user"),
                "seq-no" => seen.first("seq-no"),
                "grants" => seen.first("grants"),
                _ => false,
            };
            match key.as_ref() {
                _ if !mapped => {
                    let raw = map.next_value::<&'de RawValue>()?.get();
                    self.item.item_members.push(ItemMember::Other((key, raw)));
                }
                "user" => {
                    *self.path = FieldPath {
                        field: "user",
                        grant: None,
                    };
                    self.item.saw_user = true;
                    map.next_value_seed(UserSeed {
                        item: self.item,
                        path: self.path,
                    })?;
                    self.item.item_members.push(ItemMember::User);
                }
                "seq-no" => {
                    *self.path = FieldPath {
                        field: "seq-no",
                        grant: None,
                    };
                    let raw = map.next_value::<&'de RawValue>()?.get();
                    self.item.seq_no = match Leaf::of(raw) {
                        Leaf::Null => None,
                        Leaf::Number(n) => Some(n.parse().map_err(|_| {
                            de::Error::custom(format!("expected an integer, found {n}"))
                        })?),
                        Leaf::String(s) => Some(s.trim().parse().map_err(|_| {
                            de::Error::custom(format!(
                                "expected an integer, found the string {:?}",
                                s.as_ref()
                            ))
                        })?),
                        other => {
                            return Err(de::Error::custom(format!(
                                "expected an integer, found {}",
                                other.type_name()
                            )));
                        }
                    };
                }
                "grants" => {
                    *self.path = FieldPath {
                        field: "grants",
                        grant: None,
                    };
                    map.next_value_seed(GrantsSeed {
                        item: self.item,
                        path: self.path,
                        in_results: false,
                    })?;
                    self.item.item_members.push(ItemMember::Grants);
                }
                _ => {
                    let raw = map.next_value::<&'de RawValue>()?.get();
                    self.item.item_members.push(ItemMember::Other((key, raw)));
                }
            }
        }
        Ok(())
    }
}

struct UserSeed<'c, 'a> {
    item: &'c mut Item<'a>,
    path: &'c mut FieldPath,
}

impl<'de> DeserializeSeed<'de> for UserSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for UserSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the user object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let item = self.item;
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let field = user_field(&key);
            if field.is_empty() || !seen.first(field) {
                // Unmapped, or a repeat of a mapped key: kept as written for `extra`.
                let raw = map.next_value::<&'de RawValue>()?.get();
                item.user_members.push((key, raw));
                continue;
            }
            *self.path = FieldPath { field, grant: None };
            match field {
                "user.identifiers" => {
                    map.next_value_seed(IdentifiersSeed {
                        item,
                        path: self.path,
                    })?;
                    continue;
                }
                "user.attributes" => {
                    map.next_value_seed(AttributesSeed { item })?;
                    continue;
                }
                _ => {}
            }
            let raw = map.next_value::<&'de RawValue>()?.get();
            match field {
                "user.user_id" => {
                    item.user_id = text(raw)?;
                    if item.user_id.is_none() {
                        return Err(de::Error::custom(
                            "user_id is null; every user row needs one",
                        ));
                    }
                }
                "user.email_verified" => {
                    item.email_verified = match Leaf::of(raw) {
                        Leaf::Null => None,
                        Leaf::Bool(b) => Some(b),
                        other => {
                            // The value as written, cut short: it may be a whole object.
                            let text = raw;
                            let shown = match text.char_indices().nth(40) {
                                Some((cut, _)) => format!("{}…", &text[..cut]),
                                None => text.to_string(),
                            };
                            return Err(de::Error::custom(format!(
                                "expected true, false or null, found the {} {shown}",
                                other.type_name(),
                            )));
                        }
                    };
                }
                "user.tracking_id" => item.tracking_id = text(raw)?,
                "user.registered" => item.registered = timestamp(raw)?,
                "user.registration_tenant" => item.registration_tenant = text(raw)?,
                "user.registration_state" => item.registration_state = text(raw)?,
                "user.last_login" => item.last_login = timestamp(raw)?,
                _ => unreachable!("every mapped user field is handled above"),
            }
        }
        Ok(())
    }
}

struct IdentifiersSeed<'c, 'a> {
    item: &'c mut Item<'a>,
    path: &'c mut FieldPath,
}

impl<'de> DeserializeSeed<'de> for IdentifiersSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdentifiersSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an identifiers object or null")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let item = self.item;
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let raw = map.next_value::<&'de RawValue>()?.get();
            let first = match key.as_ref() {
                "email_address" => seen.first("email_address"),
                "username" => seen.first("username"),
                _ => false,
            };
            match key.as_ref() {
                "email_address" if first => {
                    *self.path = FieldPath {
                        field: "user.identifiers.email_address",
                        grant: None,
                    };
                    item.email_address = text(raw)?;
                }
                "username" if first => {
                    *self.path = FieldPath {
                        field: "user.identifiers.username",
                        grant: None,
                    };
                    item.username = text(raw)?;
                }
                _ => {
                    if item.identifiers_at.is_none() {
                        item.identifiers_at = Some(item.user_members.len());
                    }
                    item.identifier_members.push((key, raw));
                }
            }
        }
        Ok(())
    }
}

struct AttributesSeed<'c, 'a> {
    item: &'c mut Item<'a>,
}

impl<'de> DeserializeSeed<'de> for AttributesSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttributesSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attributes object or null")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let raw = map.next_value::<&'de RawValue>()?.get();
            self.item.attributes.push((key, Leaf::of(raw)));
        }
        Ok(())
    }
}

struct GrantsSeed<'c, 'a> {
    item: &'c mut Item<'a>,
    path: &'c mut FieldPath,
    /// Inside `grants.results` (an object there is an error, not an envelope).
    in_results: bool,
}

impl<'de> DeserializeSeed<'de> for GrantsSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for GrantsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.in_results {
            f.write_str("grants.results to be an array of grants or null")
        } else {
            f.write_str("grants to be an object with `results`, an array of grants, or null")
        }
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        loop {
            let index = self.item.grants.len();
            *self.path = FieldPath {
                field: "",
                grant: Some(index),
            };
            let mut grant = Grant::default();
            if seq
                .next_element_seed(GrantSeed {
                    grant: &mut grant,
                    path: self.path,
                })?
                .is_none()
            {
                return Ok(());
            }
            self.item.grants.push(grant);
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.in_results {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "results" {
                *self.path = FieldPath {
                    field: "grants.results",
                    grant: None,
                };
                map.next_value_seed(GrantsSeed {
                    item: self.item,
                    path: self.path,
                    in_results: true,
                })?;
            } else {
                let raw = map.next_value::<&'de RawValue>()?.get();
                self.item.grants_members.push((key, raw));
            }
        }
        Ok(())
    }
}

struct GrantSeed<'c, 'a> {
    grant: &'c mut Grant<'a>,
    path: &'c mut FieldPath,
}

impl<'de> DeserializeSeed<'de> for GrantSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GrantSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a grant object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let grant = self.grant;
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let raw = map.next_value::<&'de RawValue>()?.get();
            let field = grant_field(&key);
            if field.is_empty() || !seen.first(field) {
                grant.members.push(GrantMember::Other((key, raw)));
                continue;
            }
            self.path.field = field;
            grant.assign(field, key, raw, |time| {
                Ok(if time {
                    GrantValue::Time(timestamp(raw)?)
                } else {
                    GrantValue::Text(text(raw)?)
                })
            })?;
        }
        Ok(())
    }
}
