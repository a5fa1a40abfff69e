//! Which judge compares which pair of answers.
//!
//! [`balanced_assignment`] gives each judge a fixed number of pairs, chosen
//! deterministically from the round seed (any node can recompute it), spreading
//! comparisons evenly over the answers and over distinct judges. Every pair a judge gets
//! is judged in both orders, which cancels position bias within that judge. A local round
//! asks for `usize::MAX` pairs: every judge gets every pair without its own answer (in a
//! swarm that would grow quadratically).

use serde::{Deserialize, Serialize};

/// Judge `judge` compares answer `first` against answer `second`, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub judge: usize,
    pub first: usize,
    pub second: usize,
}

/// splitmix64: a small, well-mixed, seedable generator, so assignment needs no RNG crate
/// and is identical on every node.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Give each of `n_judges` judges up to `pairs_per_judge` unordered pairs of answers (each
/// judged in both orders), never a pair containing its own answer (`authors[a]` is the
/// judge index of answer `a`'s author, or `None` for an answer no judge wrote).
///
/// Greedy and deterministic from `seed`: judges are served in a seeded order, and each
/// picks the pair whose answers have been compared least so far, preferring answers this
/// judge has not seen and pairs no judge has taken yet; remaining ties are broken by a
/// seeded shuffle. A judge with fewer eligible pairs than asked gets them all.
pub fn balanced_assignment(
    authors: &[Option<usize>],
    n_judges: usize,
    pairs_per_judge: usize,
    seed: u64,
) -> Vec<Assignment> {
    let n = authors.len();
    let mut rng = SplitMix(seed);
    let mut pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| ((a + 1)..n).map(move |b| (a, b)))
        .collect();
    // Seeded shuffles fix the tie-break order and the order judges are served in.
    rng.shuffle(&mut pairs);
    let mut judges: Vec<usize> = (0..n_judges).collect();
    rng.shuffle(&mut judges);
    let mut coverage = vec![0usize; n];
    let mut pair_uses = vec![0usize; pairs.len()];
    let mut seen = vec![vec![false; n]; n_judges];
    let mut taken = vec![vec![false; pairs.len()]; n_judges];
    let mut out = Vec::new();
    // Round-robin: one pair per judge per pass keeps coverage even as it grows.
    // A pass that gives nobody a pair ends it: later passes could not either, so
    // `usize::MAX` pairs per judge means every eligible pair.
    for _ in 0..pairs_per_judge {
        let before = out.len();
        for &judge in &judges {
            let best = (0..pairs.len())
                .filter(|&p| {
                    let (a, b) = pairs[p];
                    !taken[judge][p] && authors[a] != Some(judge) && authors[b] != Some(judge)
                })
                .min_by_key(|&p| {
                    let (a, b) = pairs[p];
                    let unseen = usize::from(!seen[judge][a]) + usize::from(!seen[judge][b]);
                    (coverage[a] + coverage[b], pair_uses[p], 2 - unseen)
                });
            if let Some(p) = best {
                let (a, b) = pairs[p];
                taken[judge][p] = true;
                pair_uses[p] += 1;
                coverage[a] += 1;
                coverage[b] += 1;
                seen[judge][a] = true;
                seen[judge][b] = true;
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
        if out.len() == before {
            break;
        }
    }
    out
}

/// For each answer: (number of unordered comparisons, number of distinct judges).
pub fn coverage(n_answers: usize, assignments: &[Assignment]) -> Vec<(usize, usize)> {
    let mut comparisons = vec![0usize; n_answers];
    let mut judges: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); n_answers];
    for a in assignments.iter().filter(|a| a.first < a.second) {
        for x in [a.first, a.second] {
            comparisons[x] += 1;
            judges[x].insert(a.judge);
        }
    }
    comparisons
        .into_iter()
        .zip(judges.into_iter().map(|s| s.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_judges_itself_and_both_orders_appear() {
        // Three answers by judges 0, 1, 2; a fourth judge (3) wrote nothing.
        let a = balanced_assignment(&[Some(0), Some(1), Some(2)], 4, usize::MAX, 9);
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
        assert!(balanced_assignment(&[Some(0), Some(1)], 2, usize::MAX, 9).is_empty());
    }

    #[test]
    fn balanced_is_fixed_per_judge_and_even_over_answers() {
        // 32 answerers who also judge, 4 pairs each.
        let authors: Vec<Option<usize>> = (0..32).map(Some).collect();
        let a = balanced_assignment(&authors, 32, 4, 7);
        for judge in 0..32 {
            let mine: Vec<_> = a.iter().filter(|x| x.judge == judge).collect();
            assert_eq!(mine.len(), 8, "4 pairs × 2 orders for judge {judge}");
            for x in &mine {
                assert!(authors[x.first] != Some(judge) && authors[x.second] != Some(judge));
                assert!(a.contains(&Assignment {
                    judge,
                    first: x.second,
                    second: x.first
                }));
            }
        }
        let cov = coverage(32, &a);
        let (min, max) = (
            cov.iter().map(|c| c.0).min().unwrap(),
            cov.iter().map(|c| c.0).max().unwrap(),
        );
        assert!(max - min <= 1, "comparisons per answer {min}..{max}");
        assert!(
            cov.iter().all(|c| c.1 >= 6),
            "each answer seen by several distinct judges: {cov:?}"
        );
    }

    #[test]
    fn deterministic_from_the_seed() {
        let authors: Vec<Option<usize>> = (0..10)
            .map(|i| if i < 8 { Some(i) } else { None })
            .collect();
        let a = balanced_assignment(&authors, 12, 3, 42);
        assert_eq!(a, balanced_assignment(&authors, 12, 3, 42));
        assert_ne!(a, balanced_assignment(&authors, 12, 3, 43));
    }

    #[test]
    fn small_rounds_give_what_exists() {
        // Two answers by judges 0 and 1, a third judge: only judge 2 can judge the pair.
        let a = balanced_assignment(&[Some(0), Some(1)], 3, 5, 1);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| x.judge == 2));
        assert!(balanced_assignment(&[], 3, 2, 1).is_empty());
    }
}
