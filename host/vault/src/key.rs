//! Key slots: the vault's master key wrapped by a password or a key file.
//!
//! Each slot is one object under `keys/`, named by a random [`SlotId`], holding JSON:
//!
//! ```text
//! { "kind": "password" | "key-file", "label": ..., "created": ...,
//!   "kdf": { "argon2id": { "memory_kib", "iterations", "parallelism", "salt" } }
//!        | { "hkdf-sha256": { "salt" } },
//!   "wrapped": hex( NONCE(12) || AES-256-GCM(KEK, aad, DATA_KEY || ID_KEY || CHUNKER_SEED) || TAG(16) ) }
//! aad = "tessera key slot v1" || VAULT_ID || SLOT_ID
//! ```
//!
//! A password's key-encryption key comes from Argon2id; a key file already holds 256 random
//! bits, so HKDF suffices. Adding, removing or re-keying a slot never touches data: only the
//! small wrapped master key is rewritten.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, MasterKey};
use crate::id::{SlotId, random_bytes};

const SLOT_AAD_PREFIX: &[u8] = b"tessera key slot v1";
const KEY_FILE_HEADER: &str = "tessera-key-file v1";

/// A secret that opens a key slot.
#[derive(Clone)]
pub enum Credential {
    /// A password, stretched by Argon2id.
    Password(Zeroizing<String>),
    /// The 32 random bytes of a key file.
    KeyFile(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(..)",
            Credential::KeyFile(_) => "Credential::KeyFile(..)",
        })
    }
}

impl Credential {
    /// A password credential.
    pub fn password(password: impl Into<String>) -> Self {
        Credential::Password(Zeroizing::new(password.into()))
    }

    /// Generates a new key file's secret and its text form, to be saved by the caller.
    pub fn generate_key_file() -> (Self, String) {
        let secret: [u8; 32] = random_bytes();
        let text = format!("{KEY_FILE_HEADER}\n{}\n", hex::encode(secret));
        (Credential::KeyFile(Zeroizing::new(secret)), text)
    }

    /// Parses the text of a key file.
    pub fn from_key_file(text: &str) -> Result<Self, KeyError> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(KEY_FILE_HEADER) {
            return Err(KeyError::BadKeyFile(format!(
                "the first line is not '{KEY_FILE_HEADER}'"
            )));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        let line = lines.next().unwrap_or("").trim();
        hex::decode_to_slice(line, &mut secret[..])
            .map_err(|_| KeyError::BadKeyFile("the second line is not 64 hex digits".into()))?;
        Ok(Credential::KeyFile(secret))
    }

    fn kind(&self) -> SlotKind {
        match self {
            Credential::Password(_) => SlotKind::Password,
            Credential::KeyFile(_) => SlotKind::KeyFile,
        }
    }
}

/// Argon2id cost parameters for password slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 19 MiB, 2 passes, 1 lane: one of the configurations OWASP recommends for
    /// Argon2id, chosen over the equivalent memory-heavier ones so that opening a vault
    /// does not dominate the memory a backup needs.
    fn default() -> Self {
        KdfParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// What opens a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    /// A password.
    Password,
    /// A key file.
    KeyFile,
}

impl std::fmt::Display for SlotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotKind::Password => "password",
            SlotKind::KeyFile => "key file",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kdf {
    Argon2id {
        #[serde(flatten)]
        params: KdfParams,
        salt: String,
    },
    HkdfSha256 {
        salt: String,
    },
}

/// A stored key slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    /// What opens it.
    pub kind: SlotKind,
    /// A name the operator gave it.
    #[serde(default)]
    pub label: String,
    /// When it was added.
    pub created: jiff::Timestamp,
    kdf: Kdf,
    wrapped: String,
}

/// Failures of key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No password slot opened with the given password.
    #[error("wrong password: no key slot of this vault opens with it")]
    WrongPassword,
    /// No key-file slot opened with the given key file.
    #[error("wrong key file: no key slot of this vault opens with it")]
    WrongKeyFile,
    /// The vault has no slot of the credential's kind.
    #[error("this vault has no {0} key slot")]
    NoSlotOfKind(SlotKind),
    /// A key file could not be parsed.
    #[error("not a tessera key file: {0}")]
    BadKeyFile(String),
    /// A slot document could not be parsed.
    #[error("key slot {slot} is damaged: {detail}")]
    BadSlot {
        /// The slot.
        slot: String,
        /// What is wrong.
        detail: String,
    },
    /// Argon2 rejected the parameters.
    #[error("invalid Argon2id parameters: {0}")]
    BadParams(String),
}

fn slot_aad(vault_id: &str, slot: &SlotId) -> Vec<u8> {
    [SLOT_AAD_PREFIX, vault_id.as_bytes(), &slot.0].concat()
}

fn derive_kek(cred: &Credential, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut kek = Zeroizing::new([0u8; 32]);
    match (cred, kdf) {
        (Credential::Password(password), Kdf::Argon2id { params, salt }) => {
            let salt = hex::decode(salt).map_err(|e| KeyError::BadParams(e.to_string()))?;
            let params = argon2::Params::new(
                params.memory_kib,
                params.iterations,
                params.parallelism,
                Some(32),
            )
            .map_err(|e| KeyError::BadParams(e.to_string()))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(password.as_bytes(), &salt, &mut kek[..])
                .map_err(|e| KeyError::BadParams(e.to_string()))?;
        }
        (Credential::KeyFile(secret), Kdf::HkdfSha256 { salt }) => {
            let salt = hex::decode(salt).map_err(|e| KeyError::BadParams(e.to_string()))?;
            hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &secret[..])
                .expand(b"tessera key-encryption key", &mut kek[..])
                .map_err(|e| KeyError::BadParams(e.to_string()))?;
        }
        _ => return Err(KeyError::NoSlotOfKind(cred.kind())),
    }
    Ok(kek)
}

impl KeySlot {
    /// Wraps `master` for `cred`.
    pub fn new(
        vault_id: &str,
        slot: &SlotId,
        master: &MasterKey,
        cred: &Credential,
        params: KdfParams,
        label: &str,
    ) -> Result<Self, KeyError> {
        let salt = hex::encode(random_bytes::<16>());
        let kdf = match cred {
            Credential::Password(_) => Kdf::Argon2id { params, salt },
            Credential::KeyFile(_) => Kdf::HkdfSha256 { salt },
        };
        let kek = derive_kek(cred, &kdf)?;
        let plain = Zeroizing::new(master.to_bytes());
        let wrapped = crypto::wrap(&kek, &slot_aad(vault_id, slot), &plain);
        Ok(KeySlot {
            kind: cred.kind(),
            label: label.to_string(),
            created: jiff::Timestamp::now(),
            kdf,
            wrapped: hex::encode(wrapped),
        })
    }

    /// Tries to unwrap the master key with `cred`; `Ok(None)` if the credential is wrong.
    pub fn open(
        &self,
        vault_id: &str,
        slot: &SlotId,
        cred: &Credential,
    ) -> Result<Option<MasterKey>, KeyError> {
        if self.kind != cred.kind() {
            return Ok(None);
        }
        let bad = |detail: String| KeyError::BadSlot {
            slot: slot.short(),
            detail,
        };
        let kek = derive_kek(cred, &self.kdf)?;
        let wrapped = hex::decode(&self.wrapped).map_err(|e| bad(e.to_string()))?;
        match crypto::unwrap(&kek, &slot_aad(vault_id, slot), &wrapped) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                MasterKey::from_bytes(&plain)
                    .map(Some)
                    .ok_or_else(|| bad("wrapped key has the wrong length".into()))
            }
            Err(_) => Ok(None),
        }
    }

    /// Serializes the slot.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key slots always serialize")
    }

    /// Parses a slot.
    pub fn from_json(slot: &SlotId, bytes: &[u8]) -> Result<Self, KeyError> {
        serde_json::from_slice(bytes).map_err(|e| KeyError::BadSlot {
            slot: slot.short(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn password_slot_round_trip() {
        let master = MasterKey::generate();
        let slot_id = SlotId::random();
        let cred = Credential::password("correct horse");
        let slot = KeySlot::new("vault", &slot_id, &master, &cred, cheap(), "main").unwrap();
        let parsed = KeySlot::from_json(&slot_id, &slot.to_json()).unwrap();
        let opened = parsed.open("vault", &slot_id, &cred).unwrap().unwrap();
        assert_eq!(opened.to_bytes(), master.to_bytes());
        assert!(
            parsed
                .open("vault", &slot_id, &Credential::password("wrong"))
                .unwrap()
                .is_none()
        );
        assert!(parsed.open("other", &slot_id, &cred).unwrap().is_none());
    }

    #[test]
    fn key_file_slot_round_trip() {
        let master = MasterKey::generate();
        let slot_id = SlotId::random();
        let (cred, text) = Credential::generate_key_file();
        let slot = KeySlot::new("v", &slot_id, &master, &cred, cheap(), "").unwrap();
        let cred2 = Credential::from_key_file(&text).unwrap();
        assert!(slot.open("v", &slot_id, &cred2).unwrap().is_some());
        assert!(
            slot.open("v", &slot_id, &Credential::password("x"))
                .unwrap()
                .is_none()
        );
        assert!(Credential::from_key_file("garbage").is_err());
    }
}
