//! Typed 32-byte identifiers: chunks, packs, index files, recovery points.
//!
//! Content-addressed objects are named by the SHA-256 of their stored bytes; chunks by the
//! (keyed, in encrypted vaults) hash of their plaintext.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::format::ID_LEN;

/// Error parsing an identifier from text.
#[derive(Debug, thiserror::Error)]
#[error("'{text}' is not a valid id: expected {ID_LEN} bytes as lowercase hex")]
pub struct ParseIdError {
    text: String,
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The id as lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first eight hex digits, as shown to users.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The id of `bytes` under plain SHA-256.
            pub fn hash_of(bytes: &[u8]) -> Self {
                use sha2::Digest;
                Self(sha2::Sha256::digest(bytes).into())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| ParseIdError { text: s.to_string() })?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // On the stack: trees and indexes hold tens of thousands of ids.
                let mut hex = [0u8; 2 * ID_LEN];
                hex::encode_to_slice(self.0, &mut hex).expect("twice the id's length");
                s.serialize_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// Identity of a chunk: HMAC-SHA-256 of its plaintext under the vault's id key, or plain
    /// SHA-256 in an unencrypted vault.
    ChunkId
);
define_id!(
    /// Name of a pack file: SHA-256 of the pack's bytes.
    PackId
);
define_id!(
    /// Name of an index file: SHA-256 of the file's bytes.
    IndexId
);
define_id!(
    /// Name of a recovery point: SHA-256 of the point file's bytes.
    PointId
);
define_id!(
    /// Name of a writer session, random.
    SessionId
);
define_id!(
    /// Name of a deletion mark: SHA-256 of the mark file's bytes.
    MarkId
);
define_id!(
    /// Name of a key slot, random.
    SlotId
);

/// Fresh random bytes for ids, nonces and keys.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS random source failing is not recoverable: no key or nonce may be made without it.
    getrandom::fill(&mut out).expect("the operating system's random number source failed");
    out
}

impl SessionId {
    /// A fresh random session id.
    pub fn random() -> Self {
        Self(random_bytes())
    }
}

impl SlotId {
    /// A fresh random slot id.
    pub fn random() -> Self {
        Self(random_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::hash_of(b"tessera");
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ChunkId>().unwrap(), id);
        assert!("zz".parse::<ChunkId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
    }
}
