//! The operator's trust policy: whose packages install.
//!
//! Three cases, told apart by the package itself:
//!
//! - **unsigned**: there is no signature entry. Nothing says who made it.
//! - **unknown author**: a valid signature by a key the operator does not trust. Anyone
//!   can make a key, so a valid signature alone proves only that the index was not
//!   changed since *someone* signed it. An index re-signed by another key is exactly
//!   this case: a valid signature by an unknown key.
//! - **trusted**: a valid signature by a key in `trusted-authors`.
//!
//! The first two are refused unless the operator allows them (`--allow-unsigned`,
//! `--allow-unknown-author`). A signature that does not verify is refused whatever the
//! policy: it is never "unsigned", because someone went to the trouble of breaking it.

use super::author::AuthorKey;
use serde::Serialize;

/// Who signed a package, once its signature has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "author", rename_all = "kebab-case")]
pub enum Signer {
    Unsigned,
    /// The signature verifies with this key.
    Signed(AuthorKey),
}

/// Why a package passed the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    Trusted,
    /// Signed by a key not in the trust list, allowed by `allow_unknown`.
    UnknownAuthor,
    /// Not signed, allowed by `allow_unsigned`.
    Unsigned,
}

/// Why a package did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unsigned,
    UnknownAuthor(AuthorKey),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    pub trusted: Vec<AuthorKey>,
    pub allow_unsigned: bool,
    pub allow_unknown: bool,
}

impl TrustPolicy {
    pub fn is_trusted(&self, key: &AuthorKey) -> bool {
        self.trusted.contains(key)
    }

    /// The decision for a package signed by `signer` (whose signature verified).
    pub fn admit(&self, signer: &Signer) -> Result<Admission, Refusal> {
        match signer {
            Signer::Signed(key) if self.is_trusted(key) => Ok(Admission::Trusted),
            Signer::Signed(_) if self.allow_unknown => Ok(Admission::UnknownAuthor),
            Signer::Signed(key) => Err(Refusal::UnknownAuthor(*key)),
            Signer::Unsigned if self.allow_unsigned => Ok(Admission::Unsigned),
            Signer::Unsigned => Err(Refusal::Unsigned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::author::AuthorSigner;

    #[test]
    fn decisions_follow_the_policy() {
        let alice = AuthorSigner::from_secret([1; 32]).public();
        let mallory = AuthorSigner::from_secret([2; 32]).public();
        let strict = TrustPolicy {
            trusted: vec![alice],
            ..Default::default()
        };
        assert_eq!(strict.admit(&Signer::Signed(alice)), Ok(Admission::Trusted));
        assert_eq!(
            strict.admit(&Signer::Signed(mallory)),
            Err(Refusal::UnknownAuthor(mallory))
        );
        assert_eq!(strict.admit(&Signer::Unsigned), Err(Refusal::Unsigned));

        // Each allowance opens only its own case.
        let unknown_ok = TrustPolicy {
            allow_unknown: true,
            ..strict.clone()
        };
        assert_eq!(
            unknown_ok.admit(&Signer::Signed(mallory)),
            Ok(Admission::UnknownAuthor)
        );
        assert_eq!(unknown_ok.admit(&Signer::Unsigned), Err(Refusal::Unsigned));
        let unsigned_ok = TrustPolicy {
            allow_unsigned: true,
            ..strict.clone()
        };
        assert_eq!(
            unsigned_ok.admit(&Signer::Unsigned),
            Ok(Admission::Unsigned)
        );
        assert_eq!(
            unsigned_ok.admit(&Signer::Signed(mallory)),
            Err(Refusal::UnknownAuthor(mallory))
        );
        // Nobody is trusted by default.
        assert_eq!(
            TrustPolicy::default().admit(&Signer::Signed(alice)),
            Err(Refusal::UnknownAuthor(alice))
        );
    }
}
