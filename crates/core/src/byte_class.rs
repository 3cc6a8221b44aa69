//! The one SIMD kernel: which of 16 bytes belong to a small class of bytes.
//!
//! The framer's structure scan, its string skipper, the decoder's string scan and the CSV
//! quoting check all ask the same question of 16 bytes at a time; they share this kernel
//! instead of four copies of SSE2 intrinsics. SSE2 is part of every x86_64 CPU; elsewhere a
//! byte loop answers (the callers keep their own word-at-a-time tails for short inputs).
//! Every class is a constant, so after inlining the broadcasts and the loop over the class's
//! bytes fold away and each caller gets the compares it had written by hand.

/// A class of bytes: up to four exact bytes, compared after OR-ing `fold` into the input byte
/// (`{` and `[` differ only in bit 0x20, so `fold = 0x20` and `{` finds both), and optionally
/// every control character (below 0x20).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteClass {
    bytes: [u8; 4],
    len: usize,
    fold: u8,
    controls: bool,
}

impl ByteClass {
    /// The bytes `bytes` (at most four).
    pub(crate) const fn of(bytes: &[u8]) -> ByteClass {
        assert!(bytes.len() <= 4, "a byte class holds at most four bytes");
        let mut out = [0u8; 4];
        let mut i = 0;
        while i < bytes.len() {
            out[i] = bytes[i];
            i += 1;
        }
        ByteClass {
            bytes: out,
            len: bytes.len(),
            fold: 0,
            controls: false,
        }
    }

    /// The class with `fold` OR-ed into each input byte before the compares.
    pub(crate) const fn folded(mut self, fold: u8) -> ByteClass {
        self.fold = fold;
        self
    }

    /// The class plus every control character (0x00-0x1f).
    pub(crate) const fn and_controls(mut self) -> ByteClass {
        self.controls = true;
        self
    }

    /// Whether `byte` is in the class: the scalar reference the kernel must agree with.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    #[inline(always)]
    pub(crate) fn contains(self, byte: u8) -> bool {
        (self.controls && byte < 0x20) || self.bytes[..self.len].contains(&(byte | self.fold))
    }
}

/// Bit k is set when byte k of `chunk` is in `class`.
#[inline(always)]
pub(crate) fn mask16(chunk: &[u8; 16], class: ByteClass) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
        };
        // SAFETY: SSE2 is in the x86_64 baseline; the load reads the 16 bytes of `chunk`.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let folded = if class.fold == 0 {
                v
            } else {
                _mm_or_si128(v, _mm_set1_epi8(class.fold as i8))
            };
            let mut hits = _mm_setzero_si128();
            for &byte in &class.bytes[..class.len] {
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(folded, _mm_set1_epi8(byte as i8)));
            }
            if class.controls {
                // A byte is a control character when its unsigned minimum with 0x1f is itself.
                let last_control = _mm_set1_epi8(0x1f);
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(_mm_min_epu8(v, last_control), v));
            }
            _mm_movemask_epi8(hits) as u32 & 0xffff
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut mask = 0;
        for (k, &byte) in chunk.iter().enumerate() {
            mask |= u32::from(class.contains(byte)) << k;
        }
        mask
    }
}

/// The 16 bytes of `bytes` at `at`; the caller has checked that they are there.
#[inline(always)]
pub(crate) fn chunk_at(bytes: &[u8], at: usize) -> &[u8; 16] {
    bytes[at..at + 16]
        .try_into()
        .expect("the caller checked that 16 bytes follow")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLASSES: [ByteClass; 5] = [
        ByteClass::of(b"\"\\"),
        ByteClass::of(b"{").folded(0x20),
        ByteClass::of(b"}").folded(0x20),
        ByteClass::of(b"\"\\").and_controls(),
        ByteClass::of(b",\"\n\r"),
    ];

    #[test]
    fn folded_braces_find_brackets_too() {
        let open = ByteClass::of(b"{").folded(0x20);
        let chunk = *b"a{b[c}d]e{{[[xyz";
        assert_eq!(mask16(&chunk, open), 0b0001_1110_0000_1010);
        assert!(open.contains(b'[') && open.contains(b'{') && !open.contains(b'}'));
    }

    proptest! {
        #[test]
        fn the_kernel_agrees_with_the_byte_loop(chunk in proptest::array::uniform16(any::<u8>())) {
            for class in CLASSES {
                let expected = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |m, (k, &b)| m | (u32::from(class.contains(b)) << k));
                prop_assert_eq!(mask16(&chunk, class), expected);
            }
        }
    }
}
