//! What a decoded item is, and the one table of the fields the tables map.
//!
//! [`Item`] borrows from the item's raw bytes: strings without escapes are slices of the input,
//! so a typical item allocates only its small vectors. `Field` lists every mapped field once:
//! its key, the object it belongs to and the name errors give it. The decoder (`decode.rs`)
//! asks `Field::of` about every key and fills the item with one exhaustive match per
//! object, so a new field cannot be forgotten there;
//! unmapped members are kept as raw slices in source order for the `extra` objects
//! (`extra.rs`).

use std::borrow::Cow;
use std::fmt;

use super::json::Leaf;

/// An unmapped member kept for `extra`: its key and its value's raw text exactly as written.
pub type Member<'a> = (Cow<'a, str>, &'a str);

/// The objects of an item whose members the tables map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    /// The item itself: `user`, `seq-no`, `grants`.
    Item,
    /// `user`.
    User,
    /// `user.identifiers`.
    Identifiers,
    /// One grant of `grants` or `grants.results`.
    Grant,
}

/// Every field the tables map, in one place. A key that is not here goes to `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// `user` of the item.
    User,
    /// `seq-no` of the item: its sequence number in the export.
    SeqNo,
    /// `grants` of the item: an array of grants, or an object whose `results` is one.
    Grants,
    /// `user.user_id`: the user's id, which every item must have.
    UserId,
    /// `user.identifiers`: the object of `email_address` and `username`.
    Identifiers,
    /// `user.email_verified`.
    EmailVerified,
    /// `user.tracking_id`.
    TrackingId,
    /// `user.registered`: when the user registered.
    Registered,
    /// `user.registration_tenant`.
    RegistrationTenant,
    /// `user.registration_state`.
    RegistrationState,
    /// `user.last_login`.
    LastLogin,
    /// `user.attributes`: the object of the user's attributes (the attributes table).
    Attributes,
    /// `user.identifiers.email_address`.
    EmailAddress,
    /// `user.identifiers.username`.
    Username,
    /// `grantId`, which wins over `grant_id`.
    GrantId,
    /// `grant_id`, used when there is no `grantId`.
    GrantIdSnake,
    /// A grant's `account_id`.
    AccountId,
    /// A grant's `expiry_state`.
    ExpiryState,
    /// A grant's `entitlement_type`.
    EntitlementType,
    /// A grant's `entitlement_id`.
    EntitlementId,
    /// A grant's `product_id`.
    ProductId,
    /// A grant's `startTime`.
    StartTime,
    /// A grant's `endTime`.
    EndTime,
    /// `createdAt`, which wins over `created_at`.
    CreatedAt,
    /// `created_at`, used when there is no `createdAt`.
    CreatedAtSnake,
    /// A grant's own `user_id`: kept in the grant's `extra` only when it differs.
    GrantUserId,
}

impl Field {
    /// The mapped field that `key` names in `object`, if any.
    #[inline]
    pub fn of(object: Object, key: &str) -> Option<Field> {
        use Field::*;
        Some(match (object, key) {
            (Object::Item, "user") => User,
            (Object::Item, "seq-no") => SeqNo,
            (Object::Item, "grants") => Grants,
            (Object::User, "user_id") => UserId,
            (Object::User, "identifiers") => Identifiers,
            (Object::User, "email_verified") => EmailVerified,
            (Object::User, "tracking_id") => TrackingId,
            (Object::User, "registered") => Registered,
            (Object::User, "registration_tenant") => RegistrationTenant,
            (Object::User, "registration_state") => RegistrationState,
            (Object::User, "last_login") => LastLogin,
            (Object::User, "attributes") => Attributes,
            (Object::Identifiers, "email_address") => EmailAddress,
            (Object::Identifiers, "username") => Username,
            (Object::Grant, "grantId") => GrantId,
            (Object::Grant, "grant_id") => GrantIdSnake,
            (Object::Grant, "account_id") => AccountId,
            (Object::Grant, "expiry_state") => ExpiryState,
            (Object::Grant, "entitlement_type") => EntitlementType,
            (Object::Grant, "entitlement_id") => EntitlementId,
            (Object::Grant, "product_id") => ProductId,
            (Object::Grant, "startTime") => StartTime,
            (Object::Grant, "endTime") => EndTime,
            (Object::Grant, "createdAt") => CreatedAt,
            (Object::Grant, "created_at") => CreatedAtSnake,
            (Object::Grant, "user_id") => GrantUserId,
            _ => return None,
        })
    }

    /// The field as errors name it: the path from the item for item, user and identifiers
    /// fields (`user.registered`), the key for grant fields (which [`FieldPath`] prefixes
    /// with the grant).
    pub fn name(self) -> &'static str {
        use Field::*;
        match self {
            User => "user",
            SeqNo => "seq-no",
            Grants => "grants",
            UserId => "user.user_id",
            Identifiers => "user.identifiers",
            EmailVerified => "user.email_verified",
            TrackingId => "user.tracking_id",
            Registered => "user.registered",
            RegistrationTenant => "user.registration_tenant",
            RegistrationState => "user.registration_state",
            LastLogin => "user.last_login",
            Attributes => "user.attributes",
            EmailAddress => "user.identifiers.email_address",
            Username => "user.identifiers.username",
            GrantId => "grantId",
            GrantIdSnake => "grant_id",
            AccountId => "account_id",
            ExpiryState => "expiry_state",
            EntitlementType => "entitlement_type",
            EntitlementId => "entitlement_id",
            ProductId => "product_id",
            StartTime => "startTime",
            EndTime => "endTime",
            CreatedAt => "createdAt",
            CreatedAtSnake => "created_at",
            GrantUserId => "user_id",
        }
    }
}

/// The mapped fields an object has shown so far. A JSON object may repeat a key; the first
/// occurrence fills the column and every repeat is kept, as written, in `extra`, so nothing is
/// dropped and no column silently takes the last value.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Seen(u32);

impl Seen {
    /// Records `field`; true the first time it is seen.
    #[inline]
    pub fn first(&mut self, field: Field) -> bool {
        let bit = 1u32 << (field as u32);
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

/// A grant, decoded.
#[derive(Debug, Default, PartialEq)]
pub struct Grant<'a> {
    /// `grantId`, else `grant_id`; `None` when absent or null.
    pub grant_id: Option<Cow<'a, str>>,
    /// `account_id`; `None` when absent or null.
    pub account_id: Option<Cow<'a, str>>,
    /// `expiry_state`; `None` when absent or null.
    pub expiry_state: Option<Cow<'a, str>>,
    /// `entitlement_type`; `None` when absent or null.
    pub entitlement_type: Option<Cow<'a, str>>,
    /// `entitlement_id`; `None` when absent or null.
    pub entitlement_id: Option<Cow<'a, str>>,
    /// `product_id`; `None` when absent or null.
    pub product_id: Option<Cow<'a, str>>,
    /// `startTime`, in microseconds since the epoch (UTC); `None` when absent or null.
    pub start_time: Option<i64>,
    /// `endTime`, in microseconds since the epoch (UTC); `None` when absent or null.
    pub end_time: Option<i64>,
    /// `createdAt`, else `created_at`, in microseconds since the epoch (UTC); `None` when
    /// absent or null.
    pub created_at: Option<i64>,
    /// The grant's own `user_id`, kept in `extra` only if it differs from the item's.
    pub user_id: Option<(Option<Cow<'a, str>>, &'a str)>,
    /// Every member in source order that may go to `extra`, including the snake_case spelling
    /// when the camelCase one is also present (resolved in `extra.rs`).
    pub(crate) members: Vec<GrantMember<'a>>,
    /// `grantId` was seen: it fills `grant_id`, and a `grant_id` is kept in `extra`.
    pub has_camel_id: bool,
    /// `createdAt` was seen: it fills `created_at`, and a `created_at` is kept in `extra`.
    pub has_camel_created: bool,
}

/// A grant member that may belong in `extra`.
#[derive(Debug, PartialEq)]
pub(crate) enum GrantMember<'a> {
    /// An unmapped key, or a repeat of a mapped one: always kept.
    Other(Member<'a>),
    /// `user_id`, kept only when it differs from the item's user id.
    UserId(&'a str),
    /// `grant_id` or `created_at`, kept only when the camelCase spelling is present too.
    SnakeSpelling(Member<'a>),
}

/// Where `user` and `grants` sit among the item's members, so `extra` keeps source order.
#[derive(Debug, PartialEq)]
pub(crate) enum ItemMember<'a> {
    /// An unmapped member of the item, or a repeat of a mapped one.
    Other(Member<'a>),
    /// `user`: its unmapped members are [`Item::user_members`].
    User,
    /// `grants`: its unmapped members are [`Item::grants_members`].
    Grants,
}

/// An item, decoded and checked, borrowing from its raw bytes.
#[derive(Debug, Default, PartialEq)]
pub struct Item<'a> {
    /// `user.user_id`; never `None` in an item the decoder accepted.
    pub user_id: Option<Cow<'a, str>>,
    /// `user.identifiers.email_address`; `None` when absent or null.
    pub email_address: Option<Cow<'a, str>>,
    /// `user.identifiers.username`; `None` when absent or null.
    pub username: Option<Cow<'a, str>>,
    /// `user.email_verified`; `None` when absent or null.
    pub email_verified: Option<bool>,
    /// `user.tracking_id`; `None` when absent or null.
    pub tracking_id: Option<Cow<'a, str>>,
    /// `user.registered`, in microseconds since the epoch (UTC); `None` when absent or null.
    pub registered: Option<i64>,
    /// `user.registration_tenant`; `None` when absent or null.
    pub registration_tenant: Option<Cow<'a, str>>,
    /// `user.registration_state`; `None` when absent or null.
    pub registration_state: Option<Cow<'a, str>>,
    /// `user.last_login`, in microseconds since the epoch (UTC); `None` when absent or null.
    pub last_login: Option<i64>,
    /// `seq-no`; `None` when absent or null.
    pub seq_no: Option<i64>,
    /// The grants, in source order (from `grants` or `grants.results`).
    pub grants: Vec<Grant<'a>>,
    /// `user.attributes` as key and leaf value, in source order.
    pub attributes: Vec<(Cow<'a, str>, Leaf<'a>)>,
    /// The item's own members in source order, for `extra`.
    pub(crate) item_members: Vec<ItemMember<'a>>,
    /// The user's unmapped members (and repeats of mapped keys) in source order, for `extra`.
    pub user_members: Vec<Member<'a>>,
    /// Position of `identifiers` among the user's members, when it has unmapped keys.
    pub identifiers_at: Option<usize>,
    /// The unmapped members of `user.identifiers` (and repeats of mapped keys) in source
    /// order, for `extra`.
    pub identifier_members: Vec<Member<'a>>,
    /// The members of a `grants` object other than `results`, in source order, for `extra`.
    pub grants_members: Vec<Member<'a>>,
    /// The item had a `user` (so a missing id is [`Problem::NoUserId`], not
    /// [`Problem::NoUser`]).
    ///
    /// [`Problem::NoUserId`]: super::problem::Problem::NoUserId
    /// [`Problem::NoUser`]: super::problem::Problem::NoUser
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

/// The field being decoded, so a failure can name it (`grants.results[2].startTime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldPath {
    /// The field's name (see `Field::name`), or one of the containers' own names
    /// (`grants.results`); empty for the item itself or a whole grant.
    pub field: &'static str,
    /// The index of the grant the field is in.
    pub grant: Option<usize>,
}

impl FieldPath {
    /// A field outside the grants.
    pub fn of(field: &'static str) -> FieldPath {
        FieldPath { field, grant: None }
    }

    /// Whether the path names anything (the item as a whole has the empty path).
    pub fn is_empty(&self) -> bool {
        self.field.is_empty() && self.grant.is_none()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_found_by_its_key_in_its_object_only() {
        let all = [
            (Object::Item, "user", Field::User),
            (Object::Item, "seq-no", Field::SeqNo),
            (Object::User, "registered", Field::Registered),
            (Object::Identifiers, "username", Field::Username),
            (Object::Grant, "created_at", Field::CreatedAtSnake),
            (Object::Grant, "user_id", Field::GrantUserId),
        ];
        for (object, key, field) in all {
            assert_eq!(Field::of(object, key), Some(field));
        }
        assert_eq!(Field::of(Object::Item, "user_id"), None);
        assert_eq!(Field::of(Object::User, "grantId"), None);
        assert_eq!(Field::of(Object::Grant, "User_id"), None);
        assert_eq!(Field::UserId.name(), "user.user_id");
    }

    #[test]
    fn seen_says_first_once_per_field() {
        let mut seen = Seen::default();
        assert!(seen.first(Field::GrantUserId));
        assert!(seen.first(Field::User));
        assert!(!seen.first(Field::GrantUserId));
        assert!(!seen.first(Field::User));
    }

    #[test]
    fn paths_name_grants_by_index() {
        let path = FieldPath {
            field: "endTime",
            grant: Some(1),
        };
        assert_eq!(path.to_string(), "grants.results[1].endTime");
        let whole = FieldPath {
            field: "",
            grant: Some(0),
        };
        assert_eq!(whole.to_string(), "grants.results[0]");
        assert!(FieldPath::default().is_empty());
    }
}
