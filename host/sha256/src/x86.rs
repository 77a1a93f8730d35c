//! The two kernels on the x86-64 SHA extensions: one message, and two side by side.
//!
//! The state lives in two registers in the order the instructions want, words A, B, E,
//! F and C, D, G, H. Each group of four rounds adds the round constants to four message
//! words and runs `sha256rnds2` twice; from the fifth group on, the four words are first
//! expanded from the previous sixteen (`sha256msg1`, an `alignr` for the words seven
//! back, `sha256msg2`). Everything is unrolled so the sixteen words of a block stay in
//! registers: with the groups in a loop over an array, one message ran a sixth slower.

#![allow(unsafe_code)]

use core::arch::x86_64::*;

/// The round constants, four to a group.
static K: [[u32; 4]; 16] = [
    [0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5],
    [0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5],
    [0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3],
    [0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174],
    [0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc],
    [0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da],
    [0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7],
    [0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967],
    [0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13],
    [0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85],
    [0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3],
    [0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070],
    [0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5],
    [0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3],
    [0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208],
    [0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2],
];

/// Whether this CPU has what the kernels use.
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse4.1")
        && std::is_x86_feature_detected!("ssse3")
}

/// A state as the instructions hold it.
#[derive(Clone, Copy)]
struct Lanes {
    abef: __m128i,
    cdgh: __m128i,
}

#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn to_lanes(state: &[u32; 8]) -> Lanes {
    // SAFETY: `state` holds 8 words, read as two unaligned vectors of four.
    let (abcd, efgh) = unsafe {
        (
            _mm_loadu_si128(state.as_ptr().cast()),
            _mm_loadu_si128(state.as_ptr().add(4).cast()),
        )
    };
    let cdab = _mm_shuffle_epi32(abcd, 0xB1);
    let hgfe = _mm_shuffle_epi32(efgh, 0x1B);
    Lanes {
        abef: _mm_alignr_epi8(cdab, hgfe, 8),
        cdgh: _mm_blend_epi16(hgfe, cdab, 0xF0),
    }
}

#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn store_lanes(lanes: Lanes, state: &mut [u32; 8]) {
    let feba = _mm_shuffle_epi32(lanes.abef, 0x1B);
    let dchg = _mm_shuffle_epi32(lanes.cdgh, 0xB1);
    let abcd = _mm_blend_epi16(feba, dchg, 0xF0);
    let efgh = _mm_alignr_epi8(dchg, feba, 8);
    // SAFETY: `state` holds 8 words, written as two unaligned vectors of four.
    unsafe {
        _mm_storeu_si128(state.as_mut_ptr().cast(), abcd);
        _mm_storeu_si128(state.as_mut_ptr().add(4).cast(), efgh);
    }
}

/// The sixteen words of `block`, big-endian, as four vectors.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn messages(block: &[u8; 64]) -> [__m128i; 4] {
    let swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
    std::array::from_fn(|i| {
        // SAFETY: bytes `16 * i..16 * i + 16` of the 64 of `block`, read unaligned.
        let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * i).cast()) };
        _mm_shuffle_epi8(v, swap)
    })
}

#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn constants(group: usize) -> __m128i {
    // SAFETY: a row of `K` is 16 bytes, read unaligned.
    unsafe { _mm_loadu_si128(K[group].as_ptr().cast()) }
}

/// Four rounds of `lanes` on words `w` with the constants of `group`.
macro_rules! four_rounds {
    ($lanes:ident, $w:expr, $group:expr) => {{
        let m = _mm_add_epi32($w, constants($group));
        $lanes.cdgh = _mm_sha256rnds2_epu32($lanes.cdgh, $lanes.abef, m);
        $lanes.abef = _mm_sha256rnds2_epu32($lanes.abef, $lanes.cdgh, _mm_shuffle_epi32(m, 0x0E));
    }};
}

/// Replaces `w0` (words i-16..i-13) by words i..i+4, from those and words i-12..i-1 in
/// `w1`, `w2`, `w3`.
macro_rules! expand {
    ($w0:ident, $w1:ident, $w2:ident, $w3:ident) => {
        $w0 = _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4)),
            $w3,
        );
    };
}

/// Compresses the blocks of `data` into `state`; `data` is whole blocks.
///
/// # Safety
///
/// The CPU has the features [`available`] checks.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(crate) unsafe fn compress(state: &mut [u32; 8], data: &[u8]) {
    let mut s = to_lanes(state);
    for block in data.chunks_exact(64) {
        let block: &[u8; 64] = block.try_into().expect("chunks of 64");
        let saved = s;
        let [mut w0, mut w1, mut w2, mut w3] = messages(block);
        four_rounds!(s, w0, 0);
        four_rounds!(s, w1, 1);
        four_rounds!(s, w2, 2);
        four_rounds!(s, w3, 3);
        for g in [4, 8, 12] {
            expand!(w0, w1, w2, w3);
            four_rounds!(s, w0, g);
            expand!(w1, w2, w3, w0);
            four_rounds!(s, w1, g + 1);
            expand!(w2, w3, w0, w1);
            four_rounds!(s, w2, g + 2);
            expand!(w3, w0, w1, w2);
            four_rounds!(s, w3, g + 3);
        }
        s.abef = _mm_add_epi32(s.abef, saved.abef);
        s.cdgh = _mm_add_epi32(s.cdgh, saved.cdgh);
    }
    store_lanes(s, state);
}

/// Compresses the blocks of `data_a` into `a` and those of `data_b` into `b`, the two
/// messages' rounds side by side; both are whole blocks, as many in each.
///
/// # Safety
///
/// The CPU has the features [`available`] checks.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(crate) unsafe fn compress_pair(
    a: &mut [u32; 8],
    b: &mut [u32; 8],
    data_a: &[u8],
    data_b: &[u8],
) {
    debug_assert_eq!(data_a.len(), data_b.len());
    let mut s = to_lanes(a);
    let mut t = to_lanes(b);
    for (block_a, block_b) in data_a.chunks_exact(64).zip(data_b.chunks_exact(64)) {
        let block_a: &[u8; 64] = block_a.try_into().expect("chunks of 64");
        let block_b: &[u8; 64] = block_b.try_into().expect("chunks of 64");
        let (saved_s, saved_t) = (s, t);
        let [mut w0, mut w1, mut w2, mut w3] = messages(block_a);
        let [mut x0, mut x1, mut x2, mut x3] = messages(block_b);
        four_rounds!(s, w0, 0);
        four_rounds!(t, x0, 0);
        four_rounds!(s, w1, 1);
        four_rounds!(t, x1, 1);
        four_rounds!(s, w2, 2);
        four_rounds!(t, x2, 2);
        four_rounds!(s, w3, 3);
        four_rounds!(t, x3, 3);
        for g in [4, 8, 12] {
            expand!(w0, w1, w2, w3);
            expand!(x0, x1, x2, x3);
            four_rounds!(s, w0, g);
            four_rounds!(t, x0, g);
            expand!(w1, w2, w3, w0);
            expand!(x1, x2, x3, x0);
            four_rounds!(s, w1, g + 1);
            four_rounds!(t, x1, g + 1);
            expand!(w2, w3, w0, w1);
            expand!(x2, x3, x0, x1);
            four_rounds!(s, w2, g + 2);
            four_rounds!(t, x2, g + 2);
            expand!(w3, w0, w1, w2);
            expand!(x3, x0, x1, x2);
            four_rounds!(s, w3, g + 3);
            four_rounds!(t, x3, g + 3);
        }
        s.abef = _mm_add_epi32(s.abef, saved_s.abef);
        s.cdgh = _mm_add_epi32(s.cdgh, saved_s.cdgh);
        t.abef = _mm_add_epi32(t.abef, saved_t.abef);
        t.cdgh = _mm_add_epi32(t.cdgh, saved_t.cdgh);
    }
    store_lanes(s, a);
    store_lanes(t, b);
}
