//! The `extra` column: every field the tables do not map, as one compact JSON object.
//!
//! The object mirrors the source structure with the mapped fields taken out, so nothing is
//! lost and nothing is renamed: `{"user":{"identifiers":{"phone":"1"},"foo":1},"app":{}}`.
//! Values are the source text with insignificant whitespace removed; keys keep source order.

use super::item::{Grant, GrantMember, Item, ItemMember, Member};
use super::json::{push_compact, push_json_key};

fn push_member(out: &mut String, first: &mut bool, key: &str, raw: &str) {
    if !*first {
        out.push(',');
    }
    *first = false;
    push_json_key(out, key);
    out.push(':');
    push_compact(out, raw);
}

fn push_object(out: &mut String, first: &mut bool, key: &str, members: &[Member<'_>]) {
    if members.is_empty() {
        return;
    }
    if !*first {
        out.push(',');
    }
    *first = false;
    push_json_key(out, key);
    out.push_str(":{");
    let mut inner_first = true;
    for (k, raw) in members {
        push_member(out, &mut inner_first, k, raw);
    }
    out.push('}');
}

/// The users table's `extra` for `item`, or `None` when every field was mapped.
pub(crate) fn user_extra(item: &Item<'_>) -> Option<String> {
    let nothing_left = item
        .item_members
        .iter()
        .all(|m| !matches!(m, ItemMember::Other(_)))
        && item.user_members.is_empty()
        && item.identifier_members.is_empty()
        && item.grants_members.is_empty();
    if nothing_left {
        return None;
    }
    let mut out = String::from("{");
    let mut first = true;
    for member in &item.item_members {
        match member {
            ItemMember::Other((key, raw)) => push_member(&mut out, &mut first, key, raw),
            ItemMember::Grants => push_object(&mut out, &mut first, "grants", &item.grants_members),
            ItemMember::User => {
                if item.user_members.is_empty() && item.identifier_members.is_empty() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str("\"user\":{");
                let mut user_first = true;
                for (i, (key, raw)) in item.user_members.iter().enumerate() {
                    if item.identifiers_at == Some(i) {
                        push_object(
                            &mut out,
                            &mut user_first,
                            "identifiers",
                            &item.identifier_members,
                        );
                    }
                    push_member(&mut out, &mut user_first, key, raw);
                }
                if item.identifiers_at == Some(item.user_members.len()) {
                    push_object(
                        &mut out,
                        &mut user_first,
                        "identifiers",
                        &item.identifier_members,
                    );
                }
                out.push('}');
            }
        }
    }
    out.push('}');
    Some(out)
}

/// The grants table's `extra` for `grant` of an item whose user id is `user_id`.
pub(crate) fn grant_extra(grant: &Grant<'_>, user_id: &str) -> Option<String> {
    // Most grants have nothing left over: allocate only once a member is kept.
    let mut out = String::new();
    let mut first = true;
    for member in &grant.members {
        match member {
            GrantMember::Other((key, raw)) => push_member(&mut out, &mut first, key, raw),
            GrantMember::UserId(raw) => {
                let same = matches!(&grant.user_id, Some((Some(text), _)) if text == user_id);
                if !same {
                    push_member(&mut out, &mut first, "user_id", raw);
                }
            }
            GrantMember::SnakeSpelling((key, raw)) => {
                let shadowed = match key.as_ref() {
                    "grant_id" => grant.has_camel_id,
                    _ => grant.has_camel_created,
                };
                if shadowed {
                    push_member(&mut out, &mut first, key, raw);
                }
            }
        }
    }
    if first {
        return None;
    }
    out.insert(0, '{');
    out.push('}');
    Some(out)
}
