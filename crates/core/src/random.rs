//! Random bytes for run ids, run tags, request nonces and retry jitter: the crate's one source.
//!
//! Each of these only has to be unique (a nonce, an id) or to differ between attempts (jitter),
//! never secret. So when the OS's generator fails, which is rare, a run does not fail: the
//! bytes then come from hashing the clock, the process id and a process-wide counter, which
//! still differ for every call in every process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// 16 bytes from the OS's generator, or unique ones when it fails.
pub(crate) fn unique_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = fallback();
    }
    bytes
}

/// `unique_bytes` as 32 lowercase hex digits.
pub fn unique_hex() -> String {
    hex::encode(unique_bytes())
}

/// A random `u64` (retry jitter).
pub fn u64() -> u64 {
    let bytes = unique_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default())
}

/// A random `u32` (the random part of a bucket run's tag).
pub fn u32() -> u32 {
    let bytes = unique_bytes();
    u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default())
}

/// Unique bytes without the OS's generator: the clock, the process id and a counter, hashed.
fn fallback() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_differs_with_or_without_the_os() {
        assert_ne!(unique_bytes(), unique_bytes());
        assert_ne!(fallback(), fallback());
        let hex = unique_hex();
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(u64(), u64());
    }
}
