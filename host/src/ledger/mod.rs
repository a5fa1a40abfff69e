//! Identities, signed round transcripts and the SQLite ledger.
//!
//! Every round leaves a transcript — the signed answers and verdicts and the signed
//! result — from which any node can check the signatures and recompute the winner, the
//! rewards and the reputation changes ([`transcript::Transcript::verify`]).

pub mod fold;
pub mod identity;
pub mod local;
pub mod store;
pub mod transcript;

pub use identity::{NodeKey, Signed};
pub use store::{Ledger, LedgerError};
pub use transcript::Transcript;
