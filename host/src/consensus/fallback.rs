//! Who wins when the verdicts do not decide.
//!
//! Two answerers cannot judge each other, specialists abstain outside their domain, and
//! verdicts can cancel out: then the fit leaves several answers tied at the top. The
//! tie must not go to whoever *claims* the most: a plugin that volunteers with assess 1.0
//! and abstains from judging would otherwise win every such round against a correct
//! specialist. So the order is reputation earned in earlier rounds first (what others'
//! verdicts made of this member), the member's own assess only between equals, and the
//! round's seed last — never a name, a folder or an arrival order.
//!
//! Callers put the answers in this order before the fit: the fit gives ties to the lowest
//! index, so the transcript alone recomputes to the same winner.

/// What is known of an answer's author when verdicts do not separate the answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claim<'a> {
    /// Reputation earned in earlier rounds (in the request's domain where known).
    pub reputation: f64,
    /// The author's own assess of the request: its claim, used only between equals.
    pub assess: f32,
    /// The answer's text: with the seed, it draws the last tie-break.
    pub text: &'a str,
}

/// Reputations closer than this are equal: the EMA leaves rounding-level differences
/// that no verdict earned.
const REPUTATION_EPSILON: f64 = 1e-9;

/// Indexes of `claims`, best first: reputation, then assess, then a draw from the seed
/// and the answer's text.
pub fn fallback_order(claims: &[Claim<'_>], seed: u64) -> Vec<usize> {
    let draw: Vec<u64> = claims.iter().map(|c| seeded_draw(seed, c.text)).collect();
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&claims[a], &claims[b]);
        let rep = if (ca.reputation - cb.reputation).abs() <= REPUTATION_EPSILON {
            std::cmp::Ordering::Equal
        } else {
            cb.reputation.total_cmp(&ca.reputation)
        };
        rep.then(cb.assess.total_cmp(&ca.assess))
            .then(draw[a].cmp(&draw[b]))
            .then(a.cmp(&b))
    });
    order
}

/// Whether the verdicts decided the round: the fit separated the best answer from every
/// different answer. Copies of one answer tie by symmetry, which is not indecision
/// (grouping equal answers into one candidate is the proper cure); but when every answer
/// says the same, nothing was decided by verdicts either.
pub fn decided(scores: &[f64], texts: &[&str]) -> bool {
    let top = super::top_group(scores);
    let text = |i: usize| texts.get(i).map(|t| t.trim());
    let Some(&best) = top.first() else {
        return false;
    };
    let copies_only = top.iter().all(|&i| text(i) == text(best));
    let something_lost = (0..scores.len()).any(|i| text(i) != text(best));
    copies_only && something_lost
}

/// A 64-bit draw from the seed and a text (FNV-1a, then splitmix64): platform-independent,
/// so every node recomputes the same order.
/// A draw from the round's seed and a text: the same on every node, unknown before the
/// round, so no name can buy a place.
pub fn seeded_draw(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = (seed ^ h).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(reputation: f64, assess: f32, text: &str) -> Claim<'_> {
        Claim {
            reputation,
            assess,
            text,
        }
    }

    #[test]
    fn earned_reputation_beats_a_confident_claim() {
        let confident = claim(0.40, 1.0, "41");
        let specialist = claim(0.55, 0.9, "42");
        assert_eq!(fallback_order(&[confident, specialist], 7), vec![1, 0]);
    }

    #[test]
    fn assess_decides_only_between_equal_reputations() {
        let a = claim(0.5, 0.6, "a");
        let b = claim(0.5 + 1e-12, 0.9, "b");
        assert_eq!(fallback_order(&[a, b], 1), vec![1, 0]);
    }

    #[test]
    fn exact_ties_follow_the_seed_not_the_position() {
        let (a, b) = (claim(0.5, 0.8, "Paris"), claim(0.5, 0.8, "Lyon"));
        let firsts: std::collections::BTreeSet<&str> = (0..32)
            .map(|seed| {
                let o = fallback_order(&[a, b], seed);
                [a, b][o[0]].text
            })
            .collect();
        assert_eq!(firsts.len(), 2, "both answers win for some seed");
        // The same seed and texts give the same order whatever the input order.
        for seed in 0..32 {
            let ab = fallback_order(&[a, b], seed);
            let ba = fallback_order(&[b, a], seed);
            assert_eq!([a, b][ab[0]].text, [b, a][ba[0]].text);
        }
    }

    #[test]
    fn copies_tied_at_the_top_are_decided_distinct_answers_are_not() {
        assert!(decided(&[0.5, 0.5, -1.0], &["12", " 12", "7"]));
        assert!(!decided(&[0.5, 0.5, -1.0], &["12", "13", "7"]));
        assert!(decided(&[0.9, 0.1], &["a", "b"]));
        assert!(!decided(&[0.0, 0.0], &["a", "b"]));
        assert!(
            !decided(&[0.0, 0.0], &["a", "a"]),
            "unanimous is not decided by verdicts"
        );
    }
}
