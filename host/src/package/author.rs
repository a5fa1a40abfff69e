//! Author keys: who signed a package.
//!
//! An author key is an ed25519 key. Its public half is written `ed25519:<64 hex digits>`
//! everywhere a person sees or types it (`apiary keys show`, the package index, the
//! operator's `trusted-authors`), so the string an author hands out is exactly the one
//! an operator pastes into a trust list. The secret half is a key file like the node's
//! ([`crate::keyfile`]).

use crate::keyfile::{self, KeyFileError};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The prefix of an author key's text form (the algorithm: a later format may add others).
pub const KEY_PREFIX: &str = "ed25519:";

/// The public half of an author key: 32 bytes that are known to be a valid ed25519 point
/// (checked when parsed), kept as bytes so errors that name a key stay small.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthorKey([u8; 32]);

/// Why a text is not an author key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an author key: expected ed25519: followed by 64 hex digits (what `apiary keys show` prints)"
)]
pub struct NotAKey(String);

impl AuthorKey {
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Whether `signature` is this key's over exactly `message`. Strict verification:
    /// no small-order keys, no malleable (non-canonical) signatures.
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(&self.0).is_ok_and(|key| {
            key.verify_strict(message, &Signature::from_bytes(signature))
                .is_ok()
        })
    }
}

impl fmt::Display for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AuthorKey {
    type Err = NotAKey;

    /// Exactly `ed25519:` and 64 hex digits (either case), nothing around them.
    fn from_str(s: &str) -> Result<Self, NotAKey> {
        let bad = || NotAKey(crate::plugins::safe_read::excerpt(s, 80));
        let hex_part = s.strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
        if hex_part.len() != 64 {
            return Err(bad());
        }
        let bytes: [u8; 32] = hex::decode(hex_part)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(|_| AuthorKey(bytes))
            .map_err(|_| bad())
    }
}

impl Serialize for AuthorKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AuthorKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why the author key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no author key at {0}: create one with `apiary keys new` (or name another with --key FILE or APIARY_AUTHOR_KEY)"
    )]
    Missing(PathBuf),
    #[error(
        "an author key exists at {path} (public key {public}) and is kept: operators may trust it, and packages signed with a new key would be from an unknown author to them. Pass --force to replace it anyway, or --key FILE to use another file"
    )]
    Exists { path: PathBuf, public: AuthorKey },
    #[error(
        "{path} is not an author key (expected 32 bytes, found {found}); move it away and run `apiary keys new`"
    )]
    Corrupt { path: PathBuf, found: usize },
    #[error("cannot read or write the author key {path}: {message}")]
    Io { path: PathBuf, message: String },
}

impl From<KeyFileError> for KeyError {
    fn from(e: KeyFileError) -> Self {
        match e {
            KeyFileError::Io { path, message } => KeyError::Io { path, message },
            KeyFileError::Corrupt { path, found } => KeyError::Corrupt { path, found },
            // Callers that may meet it look the key up to say which one it is.
            KeyFileError::Exists { path } => KeyError::Io {
                path,
                message: "exists already".into(),
            },
        }
    }
}

/// The secret half: signs package indexes.
pub struct AuthorSigner {
    key: SigningKey,
}

impl AuthorSigner {
    /// The key in `path`.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        keyfile::read(path)?
            .map(Self::from_secret)
            .ok_or_else(|| KeyError::Missing(path.to_path_buf()))
    }

    /// A new key in `path` (0600, written whole). An existing key is kept unless `replace`.
    pub fn create(path: &Path, replace: bool) -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system provides randomness");
        match keyfile::write(path, &secret, replace) {
            Ok(()) => Ok(Self::from_secret(secret)),
            Err(KeyFileError::Exists { .. }) => Err(KeyError::Exists {
                path: path.to_path_buf(),
                public: Self::load(path)?.public(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A key from known secret bytes (tests that must be reproducible).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        AuthorSigner {
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn public(&self) -> AuthorKey {
        AuthorKey(self.key.verifying_key().to_bytes())
    }

    /// The signature over exactly `message` (ed25519 is deterministic: the same index
    /// signed twice gives the same bytes).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// Only the public half: a key's debug output must never show its secret.
impl fmt::Debug for AuthorSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorSigner")
            .field("public", &self.public())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_and_parse_as_ed25519_hex() {
        let signer = AuthorSigner::from_secret([3; 32]);
        let text = signer.public().to_string();
        assert!(
            text.starts_with("ed25519:") && text.len() == 8 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<AuthorKey>().unwrap(), signer.public());
        assert_eq!(
            text.to_uppercase()
                .replace("ED25519:", "ed25519:")
                .parse::<AuthorKey>(),
            Ok(signer.public())
        );
        for bad in [
            "",
            "ed25519:",
            &text[8..],
            &format!(" {text}"),
            &format!("{text}00"),
            &text[..70],
            "ed25519:zz00000000000000000000000000000000000000000000000000000000000000",
            "rsa:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let e = bad.parse::<AuthorKey>().unwrap_err().to_string();
            assert!(
                e.contains("expected ed25519: followed by 64 hex digits"),
                "{e}"
            );
        }
    }

    #[test]
    fn signatures_verify_for_exact_bytes_only() {
        let signer = AuthorSigner::from_secret([5; 32]);
        let sig = signer.sign(b"index");
        assert!(signer.public().verifies(b"index", &sig));
        assert!(!signer.public().verifies(b"index ", &sig));
        let other = AuthorSigner::from_secret([6; 32]);
        assert!(!other.public().verifies(b"index", &sig));
        assert!(!format!("{signer:?}").contains(&hex::encode([5u8; 32])));
    }

    #[test]
    fn a_key_file_is_kept_unless_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("author.key");
        assert!(matches!(
            AuthorSigner::load(&path),
            Err(KeyError::Missing(_))
        ));
        let a = AuthorSigner::create(&path, false).unwrap();
        assert_eq!(AuthorSigner::load(&path).unwrap().public(), a.public());
        match AuthorSigner::create(&path, false) {
            Err(KeyError::Exists { public, .. }) => assert_eq!(public, a.public()),
            other => panic!("{other:?}"),
        }
        let b = AuthorSigner::create(&path, true).unwrap();
        assert_ne!(a.public(), b.public());
        assert_eq!(AuthorSigner::load(&path).unwrap().public(), b.public());
    }
}
