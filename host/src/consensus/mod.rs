//! Consensus as pure functions: who judges which pair, and what the verdicts add up to.
//!
//! Nothing here does I/O or keeps state, so a round's result can be recomputed from its
//! transcript anywhere, and every function is tested against hand-computed cases.

pub mod bradley_terry;
pub mod debias;
pub mod fallback;
pub mod grouping;
pub mod judge_record;
pub mod known;
pub mod pairs;
pub mod pooling;
pub mod scoring;

pub use bradley_terry::{Comparison, Fit, FitOptions, SEPARATION, fit, top_group};
pub use fallback::{Claim, decided, fallback_order};
pub use grouping::{Key, SameVote, group, key, merge_same, normalise, same_votes};
pub use judge_record::JudgeRecord;
pub use known::Known;
pub use pairs::{Assignment, balanced_assignment};
pub use pooling::{pool, product, weight_from_accuracy};
pub use scoring::{Standing, Vote, aggregate, rewards, weighted_comparisons};

/// A judge's decision on an ordered pair, in the host's own terms.
///
/// `First`, `Second` and `Tie` are the original verdicts and keep their serialised names
/// ("first", "second", "tie"), so old transcripts still read and still recompute to the
/// same result: they are exactly `Prefer(1000)`, `Prefer(0)` and `Prefer(500)`. The
/// graded variants let a judge say how sure it is, or that it cannot or need not compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    First,
    Second,
    Tie,
    /// Per-mille probability (0..=1000) that the first is the better answer. A value above
    /// 1000 is malformed and counts as no comparison (it can only come from a faulty or
    /// hostile judge, and must not weigh more than a certain verdict).
    Prefer(u16),
    /// The two answers say the same thing: no comparison, but a vote to make them one
    /// candidate (see [`grouping::merge_same`]).
    Same,
    /// The judge cannot tell (outside its domain, say): no comparison at all.
    Abstain,
}

impl Outcome {
    /// How far from an even split (in per mille) a graded preference must be to count as
    /// taking a side when a judge is scored for agreeing with the consensus: a 55/45 hunch
    /// is closer to a tie than to a verdict, and should neither earn nor cost reputation.
    pub const DECISIVE_MARGIN: u16 = 100;

    /// The per-mille probability that the first is better, or `None` when the outcome
    /// compares nothing (`Same`, `Abstain`, a malformed `Prefer`).
    pub fn per_mille(self) -> Option<u16> {
        match self {
            Outcome::First => Some(1000),
            Outcome::Second => Some(0),
            Outcome::Tie => Some(500),
            Outcome::Prefer(p) if p <= 1000 => Some(p),
            Outcome::Prefer(_) | Outcome::Same | Outcome::Abstain => None,
        }
    }

    /// Which side the judge took, if it took one firmly enough ([`Self::DECISIVE_MARGIN`]):
    /// `Some(true)` for the first answer, `Some(false)` for the second.
    pub fn decisive(self) -> Option<bool> {
        let p = self.per_mille()?;
        (p.abs_diff(500) >= Self::DECISIVE_MARGIN).then_some(p > 500)
    }

    /// The same verdict on the pair presented the other way round.
    pub fn swapped(self) -> Outcome {
        match self {
            Outcome::First => Outcome::Second,
            Outcome::Second => Outcome::First,
            Outcome::Prefer(p) if p <= 1000 => Outcome::Prefer(1000 - p),
            other => other,
        }
    }
}

/// Turn one verdict on the ordered pair (`first`, `second`) into weighted wins. A verdict
/// of probability p (per mille) is a win of weight·p for the first and weight·(1 − p) for
/// the second, so a tie (p = ½) is half a win each way and pulls the two scores together.
/// A side with no share gets no comparison, so `First` and `Second` stay one comparison
/// each, as they always were; `Same` and `Abstain` compare nothing.
pub fn comparisons(first: usize, second: usize, outcome: Outcome, weight: f64) -> Vec<Comparison> {
    let Some(p) = outcome.per_mille() else {
        return Vec::new();
    };
    // (1000 − p)/1000 rather than 1 − p/1000: the pair presented either way round then
    // gives bit-identical weights, and ½ is exact, as the old `weight / 2.0` was.
    let share = |k: u16| weight * (f64::from(k) / 1000.0);
    let mut out = Vec::with_capacity(2);
    if p > 0 {
        out.push(Comparison {
            winner: first,
            loser: second,
            weight: share(p),
        });
    }
    if p < 1000 {
        out.push(Comparison {
            winner: second,
            loser: first,
            weight: share(1000 - p),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The function as it was before graded outcomes, to prove nothing changed.
    fn old_comparisons(first: usize, second: usize, o: Outcome, weight: f64) -> Vec<Comparison> {
        let c = |winner, loser, weight| Comparison {
            winner,
            loser,
            weight,
        };
        match o {
            Outcome::First => vec![c(first, second, weight)],
            Outcome::Second => vec![c(second, first, weight)],
            Outcome::Tie => vec![
                c(first, second, weight / 2.0),
                c(second, first, weight / 2.0),
            ],
            _ => unreachable!(),
        }
    }

    #[test]
    fn old_outcomes_are_unchanged_bit_for_bit() {
        let mut rng = pairs::SplitMix(3);
        for _ in 0..1000 {
            let w = f64::from_bits(rng.next_u64() >> 2); // any finite positive, subnormals too
            for o in [Outcome::First, Outcome::Second, Outcome::Tie] {
                let (new, old) = (comparisons(2, 5, o, w), old_comparisons(2, 5, o, w));
                assert_eq!(new.len(), old.len());
                for (a, b) in new.iter().zip(&old) {
                    assert_eq!((a.winner, a.loser), (b.winner, b.loser));
                    assert_eq!(a.weight.to_bits(), b.weight.to_bits(), "{o:?} {w:e}");
                }
            }
        }
    }

    #[test]
    fn graded_outcomes_split_the_weight() {
        let c = comparisons(0, 1, Outcome::Prefer(750), 2.0);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].winner, c[0].weight), (0, 1.5));
        assert_eq!((c[1].winner, c[1].weight), (1, 0.5));
        assert_eq!(
            comparisons(0, 1, Outcome::Prefer(1000), 1.0),
            comparisons(0, 1, Outcome::First, 1.0)
        );
        assert_eq!(
            comparisons(0, 1, Outcome::Prefer(0), 1.0),
            comparisons(0, 1, Outcome::Second, 1.0)
        );
        assert_eq!(
            comparisons(0, 1, Outcome::Prefer(500), 1.0),
            comparisons(0, 1, Outcome::Tie, 1.0)
        );
        for o in [
            Outcome::Same,
            Outcome::Abstain,
            Outcome::Prefer(1001),
            Outcome::Prefer(u16::MAX),
        ] {
            assert!(comparisons(0, 1, o, 1.0).is_empty(), "{o:?}");
        }
    }

    #[test]
    fn swapping_the_pair_gives_the_same_wins() {
        for p in (0..=1000).step_by(7).chain([1000]) {
            let o = Outcome::Prefer(p);
            let mut a = comparisons(0, 1, o, 0.37);
            let mut b = comparisons(1, 0, o.swapped(), 0.37);
            let key = |c: &Comparison| (c.winner, c.loser);
            a.sort_by_key(key);
            b.sort_by_key(key);
            assert_eq!(a, b, "p = {p}");
            assert_eq!(o.swapped().swapped(), o);
        }
        assert_eq!(Outcome::First.swapped(), Outcome::Second);
        assert_eq!(Outcome::Tie.swapped(), Outcome::Tie);
        assert_eq!(Outcome::Same.swapped(), Outcome::Same);
        assert_eq!(Outcome::Prefer(2000).swapped(), Outcome::Prefer(2000));
    }

    #[test]
    fn decisive_needs_a_margin() {
        assert_eq!(Outcome::First.decisive(), Some(true));
        assert_eq!(Outcome::Second.decisive(), Some(false));
        assert_eq!(Outcome::Tie.decisive(), None);
        assert_eq!(Outcome::Prefer(600).decisive(), Some(true));
        assert_eq!(Outcome::Prefer(599).decisive(), None);
        assert_eq!(Outcome::Prefer(401).decisive(), None);
        assert_eq!(Outcome::Prefer(400).decisive(), Some(false));
        assert_eq!(Outcome::Same.decisive(), None);
        assert_eq!(Outcome::Abstain.decisive(), None);
        assert_eq!(Outcome::Prefer(1001).decisive(), None);
    }

    #[test]
    fn old_transcript_names_still_read() {
        let old: Vec<Outcome> = serde_json::from_str(r#"["first","second","tie"]"#).unwrap();
        assert_eq!(old, [Outcome::First, Outcome::Second, Outcome::Tie]);
        assert_eq!(serde_json::to_string(&Outcome::Tie).unwrap(), r#""tie""#);
        for o in [Outcome::Prefer(750), Outcome::Same, Outcome::Abstain] {
            let s = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&s).unwrap(), o, "{s}");
        }
        assert_eq!(
            serde_json::to_string(&Outcome::Prefer(750)).unwrap(),
            r#"{"prefer":750}"#
        );
    }
}
