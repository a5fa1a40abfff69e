//! Which judge compares which pair of answers.
//!
//! Locally every willing plugin judges every pair that does not contain its own answer,
//! in both orders (to cancel position bias). The swarm's balanced, seeded assignment with
//! a fixed number of pairs per judge builds on the same [`Assignment`] type.

use serde::{Deserialize, Serialize};

/// Judge `judge` compares answer `first` against answer `second`, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub judge: usize,
    pub first: usize,
    pub second: usize,
}

/// Every judge on every unordered pair of answers, both orders, skipping pairs that
/// contain the judge's own answer. `authors[a]` is the judge who wrote answer `a`.
pub fn all_pairs_both_orders(authors: &[usize], judges: &[usize]) -> Vec<Assignment> {
    let n = authors.len();
    let mut out = Vec::new();
    for &judge in judges {
        for a in 0..n {
            for b in (a + 1)..n {
                if authors[a] == judge || authors[b] == judge {
                    continue;
                }
                out.push(Assignment {
                    judge,
                    first: a,
                    second: b,
                });
                out.push(Assignment {
                    judge,
                    first: b,
                    second: a,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_judges_itself_and_both_orders_appear() {
        // Three answers by judges 0, 1, 2; a fourth judge (3) wrote nothing.
        let a = all_pairs_both_orders(&[0, 1, 2], &[0, 1, 2, 3]);
        for x in &a {
            assert_ne!([0, 1, 2][x.first], x.judge);
            assert_ne!([0, 1, 2][x.second], x.judge);
            assert!(a.contains(&Assignment {
                judge: x.judge,
                first: x.second,
                second: x.first
            }));
        }
        // Judges 0..2 each see one pair (2 orders); judge 3 sees all 3 pairs (6 orders).
        assert_eq!(a.len(), 3 * 2 + 6);
    }

    #[test]
    fn two_answers_by_the_only_two_judges_cannot_be_judged() {
        assert!(all_pairs_both_orders(&[0, 1], &[0, 1]).is_empty());
    }
}
