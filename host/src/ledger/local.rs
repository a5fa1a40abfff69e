//! What a local round (one node, its plugins as members) is keyed and weighed by in the
//! ledger. The round itself, and its sealed transcript, are `crate::round::local`'s.

use super::transcript::Params;
use crate::consensus::scoring::ReputationParams;
use sha2::{Digest, Sha256};

/// Ledger key of a local plugin.
pub fn member_key(node: &str, plugin: &str) -> String {
    format!("{node}/{plugin}")
}

/// Parameters of local rounds: the operator's own plugins need no calibration.
pub fn local_params() -> Params {
    Params {
        reputation: ReputationParams {
            require_calibration: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A fresh round id: hash of the node, the prompt and the time.
pub fn round_id(node: &str, prompt: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(prompt.as_bytes());
    h.update(nanos.to_le_bytes());
    hex::encode(&h.finalize()[..8])
}
