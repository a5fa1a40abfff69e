//! From verdicts to a result, rewards and reputation: weighting by reputation, clipping
//! each judge's influence, the better-ranked half's reward, and reputation as an
//! exponential moving average of how well a node answered and judged.
//!
//! All pure and deterministic, so any node can recompute a round from its transcript.

use super::bradley_terry::{Comparison, Fit, FitOptions, fit};
use super::known::Known;
use super::{Outcome, comparisons};
use serde::{Deserialize, Serialize};

/// One verdict: `judge` compared `first` against `second` (answer indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub judge: usize,
    pub first: usize,
    pub second: usize,
    pub outcome: Outcome,
}

/// Turn votes into weighted comparisons. `weights[judge]` is the judge's voting weight
/// (its reputation; 0 for a judge that has not passed calibration). No judge may lend any
/// one answer more than `clip` weight of support (a win counts fully, a tie half, a graded
/// `Prefer(p)` its share p/1000; `Same` and `Abstain` lend none): past that, its votes for
/// that answer are scaled down, so a colluding minority cannot lift a bad answer by voting
/// for it over and over.
pub fn weighted_comparisons(votes: &[Vote], weights: &[f64], clip: f64) -> Vec<Comparison> {
    use std::collections::HashMap;
    let weight = |j: usize| {
        weights
            .get(j)
            .copied()
            .filter(|w| w.is_finite() && *w > 0.0)
            .unwrap_or(0.0)
    };
    // Support each (judge, answer) receives before clipping.
    let mut support: HashMap<(usize, usize), f64> = HashMap::new();
    let raw: Vec<(usize, Vec<Comparison>)> = votes
        .iter()
        .map(|v| {
            (
                v.judge,
                comparisons(v.first, v.second, v.outcome, weight(v.judge)),
            )
        })
        .collect();
    for (judge, cs) in &raw {
        for c in cs {
            *support.entry((*judge, c.winner)).or_default() += c.weight;
        }
    }
    raw.into_iter()
        .flat_map(|(judge, cs)| {
            let support = &support;
            cs.into_iter().map(move |mut c| {
                let s = support[&(judge, c.winner)];
                if clip > 0.0 && s > clip {
                    c.weight *= clip / s;
                }
                c
            })
        })
        .filter(|c| c.weight > 0.0)
        .collect()
}

/// The consensus over `n` answers: reputation-weighted, clipped Bradley–Terry.
pub fn aggregate(n: usize, votes: &[Vote], weights: &[f64], clip: f64, opts: FitOptions) -> Fit {
    fit(n, &weighted_comparisons(votes, weights, clip), opts)
}

/// Ranks (0 = best) of `scores`, ties broken by index.
pub fn ranks(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut rank = vec![0; scores.len()];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r;
    }
    rank
}

/// The round's `points`, shared equally by the better-ranked half of the answerers
/// (at least one).
pub fn rewards(scores: &[f64], points: f64) -> Vec<f64> {
    let n = scores.len();
    let winners = (n / 2).max(1).min(n);
    ranks(scores)
        .into_iter()
        .map(|r| {
            if r < winners {
                points / winners as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// Answer quality in [0, 1] by rank: 1 for the best, 0 for the worst.
pub fn answer_performance(scores: &[f64]) -> Vec<f64> {
    let n = scores.len();
    ranks(scores)
        .into_iter()
        .map(|r| {
            if n <= 1 {
                1.0
            } else {
                1.0 - r as f64 / (n - 1) as f64
            }
        })
        .collect()
}

/// Per judge (`n_judges`), the share of its decisive votes that agree with the consensus
/// order (`None` for a judge with no decisive vote on answers the consensus separates).
///
/// Decisive means taking a side by at least [`Outcome::DECISIVE_MARGIN`]: `First` and
/// `Second` always, `Prefer(p)` when |p − 500| ≥ 100, never a tie, `Same` or `Abstain`.
/// A hunch inside the margin is neither rewarded nor punished: it moves the fit little
/// (a 590 vote is a net 0.18 of a win), so hedging every vote buys a judge safety only at
/// the price of its influence. Past the margin every vote counts once, however sure, so
/// the score stays a share of votes, comparable between judges that grade and those that
/// do not.
pub fn judge_agreement(votes: &[Vote], scores: &[f64], n_judges: usize) -> Vec<Option<f64>> {
    let mut agree = vec![0usize; n_judges];
    let mut total = vec![0usize; n_judges];
    for v in votes {
        let (Some(a), Some(b)) = (scores.get(v.first), scores.get(v.second)) else {
            continue;
        };
        if v.judge >= n_judges || (a - b).abs() < 1e-9 {
            continue;
        }
        let Some(preferred_first) = v.outcome.decisive() else {
            continue;
        };
        total[v.judge] += 1;
        if preferred_first == (a > b) {
            agree[v.judge] += 1;
        }
    }
    agree
        .iter()
        .zip(&total)
        .map(|(&a, &t)| (t > 0).then(|| a as f64 / t as f64))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReputationParams {
    /// EMA rate: how far one round moves a reputation.
    pub alpha: f64,
    /// Known-answer items a new judge must see before its verdicts count...
    pub calibration_items: u32,
    /// ...and the share of them it must get right.
    pub calibration_accuracy: f64,
    /// Where a new node starts.
    pub initial: f64,
    /// Whether verdicts count only after calibration. Off for a node's own plugins in a
    /// local round: the operator installed them; proof of capability is for strangers.
    pub require_calibration: bool,
}

impl Default for ReputationParams {
    fn default() -> Self {
        ReputationParams {
            alpha: 0.1,
            calibration_items: 5,
            calibration_accuracy: 0.7,
            initial: 0.5,
            require_calibration: true,
        }
    }
}

/// What the ledger keeps per node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// In [0, 1].
    pub reputation: f64,
    pub calibration_correct: u32,
    pub calibration_total: u32,
    /// Its record on known-answer rounds (version 3 transcripts): what its option scores
    /// weigh in a pool. Absent from older transcripts' standings, which read it as empty.
    #[serde(default, skip_serializing_if = "Known::is_empty")]
    pub known: Known,
}

impl Standing {
    pub fn new(p: &ReputationParams) -> Self {
        Standing {
            reputation: p.initial,
            calibration_correct: 0,
            calibration_total: 0,
            known: Known::default(),
        }
    }

    /// Proof of capability: verdicts count only once calibration is passed, which makes
    /// fresh identities worthless to an attacker.
    pub fn calibrated(&self, p: &ReputationParams) -> bool {
        self.calibration_total >= p.calibration_items
            && f64::from(self.calibration_correct)
                >= p.calibration_accuracy * f64::from(self.calibration_total)
    }

    /// The weight of this node's verdicts.
    pub fn vote_weight(&self, p: &ReputationParams) -> f64 {
        if !p.require_calibration || self.calibrated(p) {
            self.reputation
        } else {
            0.0
        }
    }

    /// A hidden known-answer item judged right or wrong. Calibration gates a judge; it
    /// moves reputation only when failed. Passing is what every competent node does, and
    /// a careful colluder passes too, so rewarding it would pull honest and colluding
    /// judges to the same reputation; reputation is earned in real rounds (agreement
    /// with the consensus, answer rank).
    pub fn record_calibration(&mut self, correct: bool, p: &ReputationParams) {
        // Saturating: a standing read from a transcript may already be at the maximum.
        self.calibration_total = self.calibration_total.saturating_add(1);
        self.calibration_correct = self.calibration_correct.saturating_add(u32::from(correct));
        if !correct {
            self.observe(0.0, p);
        }
    }

    /// Move reputation towards a performance in [0, 1] (answer rank or judge agreement).
    pub fn observe(&mut self, performance: f64, p: &ReputationParams) {
        if performance.is_finite() {
            let perf = performance.clamp(0.0, 1.0);
            self.reputation = ((1.0 - p.alpha) * self.reputation + p.alpha * perf).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(judge: usize, first: usize, second: usize, outcome: Outcome) -> Vote {
        Vote {
            judge,
            first,
            second,
            outcome,
        }
    }

    #[test]
    fn clipping_caps_one_judges_support_for_one_answer() {
        // Judge 0 votes for answer 1 ten times; judge 1 votes for answer 0 twice.
        let mut votes: Vec<Vote> = (0..10).map(|_| vote(0, 0, 1, Outcome::Second)).collect();
        votes.push(vote(1, 0, 1, Outcome::First));
        votes.push(vote(1, 1, 0, Outcome::Second));
        let w = [1.0, 1.0];
        let unclipped = aggregate(2, &votes, &w, 0.0, FitOptions::default());
        assert_eq!(
            unclipped.winner,
            Some(1),
            "ten votes beat two without clipping"
        );
        let clipped = aggregate(2, &votes, &w, 2.0, FitOptions::default());
        let c = weighted_comparisons(&votes, &w, 2.0);
        let judge0_total: f64 = c.iter().filter(|c| c.winner == 1).map(|c| c.weight).sum();
        assert!(
            (judge0_total - 2.0).abs() < 1e-9,
            "judge 0 capped at 2: {judge0_total}"
        );
        assert!(
            (clipped.scores[0] - clipped.scores[1]).abs() < 1e-6,
            "2 vs 2: a draw"
        );
    }

    #[test]
    fn weights_and_uncalibrated_judges() {
        let votes = [
            vote(0, 0, 1, Outcome::First),
            vote(1, 0, 1, Outcome::Second),
            vote(1, 1, 0, Outcome::First),
        ];
        // Judge 1 is uncalibrated (weight 0): only judge 0 counts.
        assert_eq!(
            aggregate(2, &votes, &[1.0, 0.0], 0.0, FitOptions::default()).winner,
            Some(0)
        );
        assert_eq!(
            aggregate(2, &votes, &[0.2, 1.0], 0.0, FitOptions::default()).winner,
            Some(1)
        );
        assert!(weighted_comparisons(&votes, &[f64::NAN, -1.0], 0.0).is_empty());
    }

    #[test]
    fn better_half_is_rewarded() {
        assert_eq!(
            rewards(&[0.1, 0.9, 0.5, -1.0], 10.0),
            vec![0.0, 5.0, 5.0, 0.0]
        );
        assert_eq!(rewards(&[0.3], 4.0), vec![4.0]);
        assert_eq!(rewards(&[0.0, 0.0, 1.0], 3.0), vec![0.0, 0.0, 3.0]);
        assert!(rewards(&[], 1.0).is_empty());
        assert_eq!(answer_performance(&[0.1, 0.9, 0.5]), vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn agreement_with_consensus() {
        let scores = [1.0, 0.0, 0.0];
        let votes = [
            vote(0, 0, 1, Outcome::First), // agrees
            vote(0, 1, 0, Outcome::First), // disagrees
            vote(1, 0, 1, Outcome::First), // agrees
            vote(1, 1, 2, Outcome::First), // consensus does not separate 1 and 2: ignored
            vote(2, 0, 1, Outcome::Tie),   // ties are not decisive
        ];
        assert_eq!(
            judge_agreement(&votes, &scores, 3),
            vec![Some(0.5), Some(1.0), None]
        );
    }

    #[test]
    fn graded_agreement_counts_only_firm_votes() {
        let scores = [1.0, 0.0];
        let votes = [
            vote(0, 0, 1, Outcome::Prefer(800)), // firm, agrees
            vote(0, 1, 0, Outcome::Prefer(650)), // firm, disagrees
            vote(0, 0, 1, Outcome::Prefer(560)), // a hunch: not counted
            vote(1, 0, 1, Outcome::Same),
            vote(1, 1, 0, Outcome::Abstain),
            vote(1, 0, 1, Outcome::Prefer(2000)), // malformed: not counted
            vote(2, 1, 0, Outcome::Prefer(100)),  // firm for answer 0: agrees
        ];
        assert_eq!(
            judge_agreement(&votes, &scores, 3),
            vec![Some(0.5), None, Some(1.0)]
        );
    }

    #[test]
    fn graded_votes_in_the_weighted_fit() {
        // Judge 0 (weight 1) is 80 % sure of answer 0; judge 1 (weight 1) is 60 % sure of
        // answer 1: 0.8 + 0.4 = 1.2 wins for answer 0 against 0.2 + 0.6 = 0.8.
        let votes = [
            vote(0, 0, 1, Outcome::Prefer(800)),
            vote(1, 1, 0, Outcome::Prefer(600)),
            vote(2, 0, 1, Outcome::Same),
            vote(2, 1, 0, Outcome::Abstain),
        ];
        let c = weighted_comparisons(&votes, &[1.0, 1.0, 5.0], 0.0);
        let wins = |i: usize| -> f64 { c.iter().filter(|c| c.winner == i).map(|c| c.weight).sum() };
        assert!(
            (wins(0) - 1.2).abs() < 1e-12 && (wins(1) - 0.8).abs() < 1e-12,
            "{c:?}"
        );
        let no_prior = FitOptions {
            prior: 0.0,
            ..Default::default()
        };
        let f = aggregate(2, &votes, &[1.0, 1.0, 5.0], 0.0, no_prior);
        assert!(
            (f.scores[0] - f.scores[1] - 1.5f64.ln()).abs() < 1e-9,
            "{f:?}"
        );
        // Clipping counts graded support: judge 0 lends answer 0 only 0.8, under a clip of 1.
        let clipped = weighted_comparisons(&votes, &[1.0, 1.0, 5.0], 1.0);
        assert_eq!(c, clipped);
    }

    #[test]
    fn reputation_moves_and_calibration_gates() {
        let p = ReputationParams::default();
        let mut s = Standing::new(&p);
        assert_eq!(s.vote_weight(&p), 0.0, "new nodes do not vote");
        let own = ReputationParams {
            require_calibration: false,
            ..p
        };
        assert_eq!(
            s.vote_weight(&own),
            0.5,
            "an operator's own plugins vote from the start"
        );
        for i in 0..5 {
            s.record_calibration(i != 0, &p);
        }
        assert!(s.calibrated(&p), "4 of 5 passes a 0.7 bar");
        assert!(
            (s.vote_weight(&p) - 0.45).abs() < 1e-12,
            "one failed item cost 10 %"
        );
        let before = s.reputation;
        s.observe(0.0, &p);
        assert!((s.reputation - 0.9 * before).abs() < 1e-12);
        s.observe(f64::NAN, &p);
        assert!(s.reputation.is_finite());
        let mut bad = Standing::new(&p);
        for _ in 0..5 {
            bad.record_calibration(false, &p);
        }
        assert!(!bad.calibrated(&p));
    }

    /// Found by fuzzing transcripts: a standing read from a transcript may carry any
    /// count, and recomputing it must not overflow (a panic with overflow checks, a wrap
    /// to zero without).
    #[test]
    fn calibration_counts_saturate() {
        let p = ReputationParams::default();
        let mut s = Standing {
            reputation: 0.5,
            calibration_correct: u32::MAX,
            calibration_total: u32::MAX,
            known: Known::default(),
        };
        s.record_calibration(true, &p);
        assert_eq!(
            (s.calibration_correct, s.calibration_total),
            (u32::MAX, u32::MAX)
        );
        assert!(s.calibrated(&p));
    }
}
