//! A node's persistent ed25519 identity, and signed messages.
//!
//! The key is 32 secret bytes in `<data-dir>/node.key` (mode 0600), created on first
//! run ([`crate::keyfile`]: the author key that signs plugin packages is kept the same
//! way). The same secret can seed libp2p's ed25519 keypair, so one identity signs both
//! transport and round messages. A message's signature covers its canonical JSON
//! (serde's field order; maps in messages are ordered), so any node can verify it.

use crate::keyfile::{self, KeyFileError};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the node key in {path}: {message}")]
    Io { path: String, message: String },
    #[error("{0} is not a node key (expected 32 bytes); move it away to create a new identity")]
    Corrupt(String),
}

pub struct NodeKey {
    key: SigningKey,
}

impl NodeKey {
    /// Load `<dir>/node.key`, or create it (0600, written whole: [`crate::keyfile`]) if
    /// absent. Two nodes starting at once on one folder end up with the same key.
    pub fn load_or_create(dir: &Path) -> Result<NodeKey, IdentityError> {
        let path = dir.join(KEY_FILE);
        let from = |e: KeyFileError| match e {
            KeyFileError::Corrupt { path, .. } => {
                IdentityError::Corrupt(path.display().to_string())
            }
            KeyFileError::Io { path, message } => IdentityError::Io {
                path: path.display().to_string(),
                message,
            },
            KeyFileError::Exists { path } => IdentityError::Io {
                path: path.display().to_string(),
                message: "exists already".into(),
            },
        };
        if let Some(secret) = keyfile::read(&path).map_err(from)? {
            return Ok(NodeKey::from_secret(secret));
        }
        let key = NodeKey::generate();
        match keyfile::write(&path, &key.key.to_bytes(), false) {
            Ok(()) => Ok(key),
            // Another process created it first: that one is the node's key.
            Err(KeyFileError::Exists { .. }) => keyfile::read(&path)
                .map_err(from)?
                .map(NodeKey::from_secret)
                .ok_or_else(|| from(KeyFileError::Exists { path: path.clone() })),
            Err(e) => Err(from(e)),
        }
    }

    /// A key from known secret bytes (simulations that must be reproducible).
    pub fn from_secret(secret: [u8; 32]) -> NodeKey {
        NodeKey {
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn generate() -> NodeKey {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system provides randomness");
        NodeKey {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The same secret as a libp2p identity, so the peer id and the node id name one key.
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        libp2p::identity::Keypair::ed25519_from_bytes(self.key.to_bytes())
            .expect("an ed25519 secret is 32 bytes")
    }

    /// The node's id: its public key, hex.
    pub fn id(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn sign<T: Serialize>(&self, payload: T) -> Signed<T> {
        let bytes = serde_json::to_vec(&payload).expect("messages serialize");
        Signed {
            signer: self.id(),
            signature: hex::encode(self.key.sign(&bytes).to_bytes()),
            payload,
        }
    }
}

/// Only the public half: a key's debug output must never leak its secret.
impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").field("id", &self.id()).finish()
    }
}

/// A payload with its signer's public key and signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub signer: String,
    pub payload: T,
    pub signature: String,
}

impl<T: Serialize> Signed<T> {
    /// Check the signature over the payload's canonical bytes.
    pub fn verify(&self) -> Result<(), String> {
        let key: [u8; 32] = hex::decode(&self.signer)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("signer is not an ed25519 public key")?;
        let key =
            VerifyingKey::from_bytes(&key).map_err(|_| "signer is not a valid ed25519 point")?;
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("signature is not 64 bytes of hex")?;
        let bytes = serde_json::to_vec(&self.payload).map_err(|e| e.to_string())?;
        key.verify(&bytes, &Signature::from_bytes(&sig))
            .map_err(|_| "signature does not match the payload".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKey::load_or_create(dir.path()).unwrap();
        let b = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.id(), b.id(), "same identity across restarts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let msg = a.sign(("hello", 42));
        assert!(msg.verify().is_ok());
        let mut forged = msg.clone();
        forged.payload.1 = 43;
        assert!(forged.verify().is_err());
        let mut stolen = msg.clone();
        stolen.signer = NodeKey::generate().id();
        assert!(stolen.verify().is_err());
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(IdentityError::Corrupt(_))
        ));
    }
}
