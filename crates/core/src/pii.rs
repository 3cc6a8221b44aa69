//! `--hash-pii`: personal identifiers replaced by a keyed hash.
//!
//! `email_address` and `username` become the lowercase hex HMAC-SHA256 of the value, trimmed
//! of surrounding whitespace and lowercased (Unicode rules), keyed by the bytes of the
//! environment variable `KEY_VARIABLE`. The same key gives the same hash in every run, so
//! tables still join across runs and exports; without the key the addresses cannot be
//! recovered by hashing candidate addresses, as they could from a plain SHA-256.
//!
//! NULL stays NULL, and a value that is empty after trimming stays the empty string: hashing
//! it would give every empty identifier one shared, meaningless value.

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The environment variable that holds the key.
pub(crate) const KEY_VARIABLE: &str = "ZEPHR_ETL_PII_KEY";

/// The key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PiiKeyError {
    /// `ZEPHR_ETL_PII_KEY` is unset or empty.
    #[error("{}", missing_key("hashing PII"))]
    Missing,
    /// `ZEPHR_ETL_PII_KEY` is set but not valid UTF-8.
    #[error("{KEY_VARIABLE} is not valid UTF-8; use a text key")]
    NotUnicode,
}

impl PiiKeyError {
    /// The message with `what` as the thing that needs the key (the binary passes its flag);
    /// [`Display`](std::fmt::Display) says `hashing PII`.
    pub fn message_for(&self, what: &str) -> String {
        match self {
            PiiKeyError::Missing => missing_key(what),
            PiiKeyError::NotUnicode => self.to_string(),
        }
    }
}

fn missing_key(what: &str) -> String {
    format!(
        "{what} needs a key: set {KEY_VARIABLE} to a secret string (keep the same key across \
         runs so that hashes join)"
    )
}

/// The HMAC key, keyed once and cloned per value. Never printed: `Debug` hides it.
#[derive(Clone)]
pub struct PiiKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PiiKey(<hidden>)")
    }
}

impl PiiKey {
    /// A key from its bytes (the variable's value as UTF-8, not hex-decoded).
    pub fn new(key: &[u8]) -> PiiKey {
        PiiKey {
            // HMAC takes keys of any length (long keys are hashed first), so this cannot fail.
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length"),
        }
    }

    /// The key from `KEY_VARIABLE`; missing or empty is an error.
    pub fn from_env() -> Result<PiiKey, PiiKeyError> {
        match std::env::var(KEY_VARIABLE) {
            Ok(key) if !key.is_empty() => Ok(PiiKey::new(key.as_bytes())),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(PiiKeyError::Missing),
            Err(std::env::VarError::NotUnicode(_)) => Err(PiiKeyError::NotUnicode),
        }
    }

    /// A value that tells keys apart without revealing them (the HMAC of a fixed text), for
    /// `fetch --resume` to refuse continuing with another key.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"zephr-etl key fingerprint");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The cell that replaces `value`: its normalised form's HMAC as 64 hex digits, or the
    /// empty string when nothing is left after trimming.
    pub fn hash(&self, value: &str) -> String {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return String::new();
        }
        // Most identifiers are lowercase ASCII already: skip the allocation then.
        let lowered = if trimmed.is_ascii() && !trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Borrowed(trimmed)
        } else {
            Cow::Owned(trimmed.to_lowercase())
        };
        let mut mac = self.mac.clone();
        mac.update(lowered.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently with Python's hmac module:
    // hmac.new(b"k3y", b"gwen@example.com", hashlib.sha256).hexdigest()
    const GWEN: &str = "21797729c28d5c9d6a0b8774594c6848a090de1f0aba50c4e866bd3855601dd3";
    // hmac.new(b"k3y", "émile@例え.jp".encode(), hashlib.sha256).hexdigest()
    const EMILE: &str = "0dcf0eeb61b2efaf3546a9f9f41bb562bd186548b8b721cf402df422507b17ea";

    #[test]
    fn normalises_then_hashes() {
        let key = PiiKey::new(b"k3y");
        assert_eq!(key.hash("gwen@example.com"), GWEN);
        assert_eq!(key.hash("  Gwen@Example.COM\t"), GWEN);
        assert_eq!(key.hash(" ÉMILE@例え.JP "), EMILE);
        assert_eq!(key.hash("   "), "");
        assert_ne!(PiiKey::new(b"other").hash("gwen@example.com"), GWEN);
        assert_eq!(format!("{key:?}"), "PiiKey(<hidden>)");
    }
}
