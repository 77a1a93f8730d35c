//! SHA-256 and HMAC-SHA-256 of two messages at once.
//!
//! The vault names every chunk by its HMAC-SHA-256 (its SHA-256 in an unencrypted vault),
//! and hashing is the largest cost of a backup of new data. On x86-64 with the SHA
//! extensions, one message's rounds form a chain: each `sha256rnds2` waits for the one
//! before it, and the unit could start another meanwhile. Stepping two independent
//! messages through their rounds side by side fills those gaps, so two chunks hash in
//! little more time than one: 3.2 GB/s on one core of the machines tessera is measured
//! on, where one message at a time runs at 1.8 GB/s (`sha2`'s speed too).
//!
//! [`Prefix::digest_pair`] hashes two messages this way for as many whole blocks as both
//! have, then finishes each alone. Where the CPU lacks the extensions (or is not x86-64),
//! every block goes through the `sha2` crate, which picks the best code it has for the
//! CPU; the digests are the same either way, which the tests check against `sha2` and
//! `hmac`.
//!
//! ```
//! use tessera_sha256::{HmacKey, Prefix};
//!
//! let [a, b] = Prefix::EMPTY.digest_pair(b"abc", b"");
//! assert_eq!(a[..4], [0xba, 0x78, 0x16, 0xbf]);
//! assert_eq!(b[..4], [0xe3, 0xb0, 0xc4, 0x42]);
//!
//! let key = HmacKey::new(b"key");
//! let [m, _] = key.mac_pair(b"The quick brown fox jumps over the lazy dog", b"");
//! assert_eq!(m[..4], [0xf7, 0xbc, 0x83, 0xf4]);
//! ```

#[cfg(target_arch = "x86_64")]
mod x86;

use sha2::digest::generic_array::GenericArray;

/// Bytes in a block.
const BLOCK: usize = 64;

/// SHA-256's initial state.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Whether [`Prefix::digest_pair`] hashes its two messages side by side on this CPU,
/// rather than one after the other.
pub fn pairs_side_by_side() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Compresses whole blocks into `state`.
fn compress(state: &mut [u32; 8], data: &[u8]) {
    debug_assert_eq!(data.len() % BLOCK, 0);
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features the kernel uses, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            x86::compress(state, data)
        };
        return;
    }
    compress_portable(state, data);
}

/// [`compress`] through the `sha2` crate, a block at a time.
fn compress_portable(state: &mut [u32; 8], data: &[u8]) {
    for block in data.chunks_exact(BLOCK) {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

/// Compresses the whole blocks of `a` and `b`, as many of each, into `sa` and `sb`.
fn compress_pair(sa: &mut [u32; 8], sb: &mut [u32; 8], a: &[u8], b: &[u8]) {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the CPU has the features the kernel uses, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            x86::compress_pair(sa, sb, a, b)
        };
        return;
    }
    compress(sa, a);
    compress(sb, b);
}

/// SHA-256's state after a prefix of whole blocks: none, or HMAC's key block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    state: [u32; 8],
    /// Bytes of the prefix, a multiple of the block size.
    len: u64,
}

impl Prefix {
    /// No prefix: plain SHA-256.
    pub const EMPTY: Prefix = Prefix { state: H0, len: 0 };

    /// The state after one block.
    pub fn of_block(block: &[u8; BLOCK]) -> Prefix {
        let mut state = H0;
        compress(&mut state, block);
        Prefix {
            state,
            len: BLOCK as u64,
        }
    }

    /// SHA-256 of the prefix followed by `data`.
    pub fn digest(&self, data: &[u8]) -> [u8; 32] {
        let whole = data.len() / BLOCK * BLOCK;
        let mut state = self.state;
        compress(&mut state, &data[..whole]);
        self.finish(state, &data[whole..], data.len())
    }

    /// SHA-256 of the prefix followed by `a`, and of the prefix followed by `b`; the
    /// blocks both messages have are hashed side by side.
    pub fn digest_pair(&self, a: &[u8], b: &[u8]) -> [[u8; 32]; 2] {
        let common = a.len().min(b.len()) / BLOCK * BLOCK;
        let (mut sa, mut sb) = (self.state, self.state);
        compress_pair(&mut sa, &mut sb, &a[..common], &b[..common]);
        [self.rest(sa, a, common), self.rest(sb, b, common)]
    }

    /// The digest of the prefix and `data`, whose first `done` bytes are in `state`.
    fn rest(&self, mut state: [u32; 8], data: &[u8], done: usize) -> [u8; 32] {
        let whole = data.len() / BLOCK * BLOCK;
        compress(&mut state, &data[done..whole]);
        self.finish(state, &data[whole..], data.len())
    }

    /// Pads `tail` (less than a block) at the end of a message of `len` bytes after the
    /// prefix, compresses it into `state` and returns the digest.
    fn finish(&self, mut state: [u32; 8], tail: &[u8], len: usize) -> [u8; 32] {
        debug_assert!(tail.len() < BLOCK);
        let mut last = [0u8; 2 * BLOCK];
        last[..tail.len()].copy_from_slice(tail);
        last[tail.len()] = 0x80;
        // The length in bits takes the last 8 bytes; with it and the 0x80 the tail may
        // need a second block.
        let end = if tail.len() < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        let bits = (self.len + len as u64).wrapping_mul(8);
        last[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        compress(&mut state, &last[..end]);
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

/// A key for HMAC-SHA-256 (RFC 2104), its two padded blocks already hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey {
    inner: Prefix,
    outer: Prefix,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    /// The key `key`; one longer than a block is hashed first, as HMAC says.
    pub fn new(key: &[u8]) -> HmacKey {
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Prefix::EMPTY.digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut padded = block;
            padded.iter_mut().for_each(|b| *b ^= byte);
            Prefix::of_block(&padded)
        };
        HmacKey {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// HMAC-SHA-256 of `data`.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        self.outer.digest(&self.inner.digest(data))
    }

    /// HMAC-SHA-256 of `a` and of `b`, hashed side by side.
    pub fn mac_pair(&self, a: &[u8], b: &[u8]) -> [[u8; 32]; 2] {
        let [ia, ib] = self.inner.digest_pair(a, b);
        self.outer.digest_pair(&ia, &ib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    /// Every length around the block and padding boundaries, against every other.
    #[test]
    fn pairs_of_every_small_length_match_sha2() {
        for la in 0..200 {
            let a = bytes(la, 1);
            for lb in (0..200).step_by(7) {
                let b = bytes(lb, 2);
                assert_eq!(
                    Prefix::EMPTY.digest_pair(&a, &b),
                    [sha(&a), sha(&b)],
                    "{la} and {lb} bytes"
                );
            }
            assert_eq!(Prefix::EMPTY.digest(&a), sha(&a), "{la} bytes");
        }
    }

    #[test]
    fn large_messages_of_unequal_lengths_match_sha2() {
        let a = bytes(1 << 20, 3);
        let b = bytes((1 << 20) + 4099, 4);
        assert_eq!(Prefix::EMPTY.digest_pair(&a, &b), [sha(&a), sha(&b)]);
        assert_eq!(Prefix::EMPTY.digest_pair(&b, &a), [sha(&b), sha(&a)]);
        assert_eq!(Prefix::EMPTY.digest_pair(&a, &a), [sha(&a), sha(&a)]);
    }

    #[test]
    fn known_answers() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        // FIPS 180-2, appendix B.
        let [abc, two_blocks] = Prefix::EMPTY.digest_pair(
            b"abc",
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        );
        assert_eq!(
            hex(abc),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(two_blocks),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // RFC 4231, test case 2.
        let [mac, _] = HmacKey::new(b"Jefe").mac_pair(b"what do ya want for nothing?", b"");
        assert_eq!(
            hex(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_with_long_and_short_keys_matches_the_hmac_crate() {
        for key_len in [0, 1, 32, 63, 64, 65, 200] {
            let key = bytes(key_len, 9);
            let mac = HmacKey::new(&key);
            for (la, lb) in [(0, 0), (55, 56), (64, 1000), (70_000, 65_536)] {
                let (a, b) = (bytes(la, 5), bytes(lb, 6));
                assert_eq!(
                    mac.mac_pair(&a, &b),
                    [hmac(&key, &a), hmac(&key, &b)],
                    "key of {key_len}, messages of {la} and {lb}"
                );
                assert_eq!(mac.mac(&a), hmac(&key, &a));
            }
        }
    }

    /// On a CPU with SHA extensions the tests above run the kernels; the blocks of a
    /// CPU without go through `sha2`, which must give the same states.
    #[test]
    fn kernels_and_the_portable_path_agree() {
        let data = bytes(64 * 1000, 7);
        let other = bytes(64 * 1000, 8);
        let (mut a, mut b, mut c, mut d) = (H0, H0, H0, H0);
        compress_pair(&mut a, &mut b, &data, &other);
        compress(&mut c, &data);
        compress_portable(&mut d, &data);
        assert_eq!(a, c);
        assert_eq!(a, d);
        let mut e = H0;
        compress_portable(&mut e, &other);
        assert_eq!(b, e);
    }

    proptest! {
        #[test]
        fn random_pairs_match_sha2_and_hmac(
            a in proptest::collection::vec(any::<u8>(), 0..5000),
            b in proptest::collection::vec(any::<u8>(), 0..5000),
            key in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            prop_assert_eq!(Prefix::EMPTY.digest_pair(&a, &b), [sha(&a), sha(&b)]);
            prop_assert_eq!(HmacKey::new(&key).mac_pair(&a, &b), [hmac(&key, &a), hmac(&key, &b)]);
        }
    }
}
