//! A member's option scores turned into evidence: its own pull towards some positions
//! taken out, the domain's base rate put in once, then tempered (version 4 transcripts).
//!
//! Why this exists: a small language model's option scores carry a preference of its own
//! that has nothing to do with the question. On BoolQ (held-out seed 2) one model says
//! "no" to most passages and another "yes" to most, while the right answers are 62 %
//! "yes": a fitted temperature alone (`consensus::known`, version 3) can only silence or
//! trust such a model whole, and the pool stayed below its best member. Two known fixes
//! from the literature, both measured on known-answer rounds:
//!
//! - **The model's prior out** (after PriDe, Zheng et al. 2024, and contextual
//!   calibration, Zhao et al. 2021): the mean of its log-probability of each position over
//!   known-answer rounds is its preference for that position whatever the question;
//!   subtracting it leaves what the question moved. (In log space, not PriDe's mean of
//!   probabilities: a model that gives an option 0.5 % on every question would keep
//!   most of its lean under a probability mean shrunk towards chance.)
//! - **The domain's base rate in once**: the share of known-answer rounds whose right
//!   option sat at each position. Each member's debiased scores are then a likelihood
//!   ratio, and the pool is prior × Π ratio^scale (naive Bayes over the members), so the
//!   base rate is counted once however many members speak.
//!
//! The scale of each member is fitted as in `known`, by maximum likelihood over the same
//! grid, but of the calibrated distribution softmax(log prior + s · evidence); scale 0
//! means "the base rate alone does as well", and silences the member. Everything is a
//! plain sum over rounds in transcript order, each round scored with the record as it was
//! before it (prequential), with the deterministic `exp`/`ln` of [`super::pooling`].
//!
//! Positions past [`POSITIONS`] are neither debiased nor given a base rate. Option counts
//! may differ between rounds of a domain (ARC has 3 to 5 options): pulls and base rates
//! are kept relative to chance (ln(k · p) and k · [right] for k options).

use super::known::{SCALES, fitted_scale};
use super::pooling::{ln, log_softmax};
use serde::{Deserialize, Serialize};

/// Option positions a record keeps a pull and a base rate for.
pub const POSITIONS: usize = 8;

/// Rounds of chance every position's base rate starts with, so the first known-answer
/// rounds cannot set one to 0 (an infinite correction).
const PSEUDO: f64 = 2.0;

/// Known-answer rounds that only feed the pull before rounds are scored for the fit: the
/// first rounds' evidence is measured against a pull of one or two rounds and would
/// charge every sharp scale for that noise.
pub const BURN_IN: u32 = 4;

/// One member's debiased known-answer record in one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Debiased {
    /// Known-answer rounds with usable option scores.
    pub scored: u32,
    /// Of those, how many were scored for the fit (all after the first [`BURN_IN`]).
    pub fitted: u32,
    /// Per position: Σ ln(k · p(position)) of its option distributions (0 = chance).
    pub pull: [f64; POSITIONS],
    /// Per position: Σ k · [the right option sat there] (1 per round = chance).
    pub right: [f64; POSITIONS],
    /// Per position: rounds that had an option there.
    pub seen: [u32; POSITIONS],
    /// Per scale of [`SCALES`]: Σ ln softmax(log prior + scale · evidence)[right option].
    pub loglik: [f64; SCALES.len()],
}

impl Debiased {
    pub fn is_empty(&self) -> bool {
        self.scored == 0
    }

    /// `scores` with the member's own pull taken out: log-softmax minus its mean over
    /// the record (an intercept, in the terms of a logistic fit).
    pub fn evidence(&self, scores: &[f64]) -> Vec<f64> {
        let mut out = log_softmax(scores);
        for (y, e) in out.iter_mut().enumerate().take(POSITIONS) {
            if self.seen[y] > 0 {
                *e -= self.pull[y] / f64::from(self.seen[y]);
            }
        }
        out
    }

    /// The log base rate of each of `n` positions (unnormalised; 0 = chance).
    pub fn prior(&self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|y| {
                if y < POSITIONS {
                    self.relative(&self.right, y)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// ln of a per-position sum relative to chance, with [`PSEUDO`] rounds of chance.
    fn relative(&self, sums: &[f64; POSITIONS], y: usize) -> f64 {
        ln((sums[y] + PSEUDO) / (f64::from(self.seen[y]) + PSEUDO))
    }

    /// ln k, the log-probability of each of k options under chance.
    fn chance(k: usize) -> f64 {
        ln(k as f64)
    }

    /// One known-answer round's option scores and its right option. Scores that are not
    /// finite, fewer than two, or without the right option are not recorded.
    pub fn record(&mut self, scores: &[f64], gold: usize) {
        let n = scores.len();
        if n < 2 || gold >= n || !scores.iter().all(|x| x.is_finite()) {
            return;
        }
        if self.scored >= BURN_IN {
            let evidence = self.evidence(scores);
            let prior = self.prior(n);
            for (sum, scale) in self.loglik.iter_mut().zip(SCALES) {
                let z: Vec<f64> = prior
                    .iter()
                    .zip(&evidence)
                    .map(|(p, e)| p + scale * e)
                    .collect();
                *sum += log_softmax(&z)[gold];
            }
            self.fitted += 1;
        }
        let k = n as f64;
        for (y, lp) in log_softmax(scores).into_iter().enumerate().take(POSITIONS) {
            self.pull[y] += lp + Self::chance(n);
            self.right[y] += if y == gold { k } else { 0.0 };
            self.seen[y] = self.seen[y].saturating_add(1);
        }
        self.scored = self.scored.saturating_add(1);
    }

    /// The fitted scale once [`super::known::MIN_SCORED`] rounds were scored for the fit
    /// (as [`super::Known::scale`]).
    pub fn scale(&self) -> Option<f64> {
        fitted_scale(&self.loglik, self.fitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(rounds: &[(&[f64], usize)]) -> Debiased {
        let mut d = Debiased::default();
        for &(scores, gold) in rounds {
            d.record(scores, gold);
        }
        d
    }

    #[test]
    fn a_model_that_always_leans_one_way_has_its_lean_taken_out() {
        // Always 3 nats towards "no" (position 1), a little more when "no" is right.
        let mut rounds = Vec::new();
        for i in 0..40 {
            let gold = usize::from(i % 3 == 0);
            let lean = if gold == 1 { 3.5 } else { 3.0 };
            rounds.push((vec![0.0, lean], gold));
        }
        let r: Vec<(&[f64], usize)> = rounds.iter().map(|(s, g)| (&s[..], *g)).collect();
        let d = fed(&r);
        // Its raw argmax is always "no" (right 14 times in 40); its evidence is not.
        let yes = d.evidence(&[0.0, 3.0]);
        let no = d.evidence(&[0.0, 3.5]);
        assert!(yes[0] - yes[1] > no[0] - no[1]);
        assert!(d.scale().unwrap() > 0.0, "its small gap carries the answer");
        // The base rate: "yes" right 26 times in 40.
        let prior = d.prior(2);
        assert!(prior[0] > 0.0 && prior[1] < 0.0, "{prior:?}");
        let pooled = crate::consensus::product(&[(&prior, 1.0), (&yes, d.scale().unwrap())], 2);
        assert!(pooled.unwrap()[0] > 0.5, "debiased, the lean says yes");
    }

    #[test]
    fn a_model_with_nothing_but_a_lean_is_silenced() {
        // Always "no" by 3 nats, whatever is right: no evidence beyond the base rate.
        let rounds: Vec<(&[f64], usize)> = (0..30)
            .map(|i| (&[0.0, 3.0][..], usize::from(i % 2 == 0)))
            .collect();
        assert_eq!(fed(&rounds).scale(), Some(0.0));
        let enough = (BURN_IN + super::super::known::MIN_SCORED) as usize;
        assert_eq!(
            fed(&rounds[..enough - 1]).scale(),
            None,
            "not before enough rounds"
        );
        assert!(fed(&rounds[..enough]).scale().is_some());
    }

    #[test]
    fn positions_beyond_the_record_and_bad_scores_are_left_alone() {
        let mut d = Debiased::default();
        d.record(&[1.0, f64::NAN], 0);
        d.record(&[1.0], 0);
        d.record(&[1.0, 0.0], 2);
        assert!(d.is_empty());
        let many: Vec<f64> = (0..10).map(f64::from).collect();
        d.record(&many, 9);
        assert_eq!((d.scored, d.seen[7]), (1, 1));
        let e = d.evidence(&many);
        let plain = log_softmax(&many);
        assert_eq!(e[9], plain[9], "position 9 has no pull to take out");
        assert_eq!(d.prior(10)[9], 0.0);
    }

    #[test]
    fn the_record_is_the_same_bits_in_any_run_and_survives_json() {
        let rounds: Vec<(Vec<f64>, usize)> = (0..50)
            .map(|i| {
                let x = f64::from(i);
                (vec![x.sin(), x.cos(), 0.5 * x.sin(), 0.1], i as usize % 4)
            })
            .collect();
        let run = || {
            let mut d = Debiased::default();
            for (s, g) in &rounds {
                d.record(s, *g);
            }
            d
        };
        let (a, b) = (run(), run());
        assert_eq!(a.loglik.map(f64::to_bits), b.loglik.map(f64::to_bits));
        assert_eq!(a.pull.map(f64::to_bits), b.pull.map(f64::to_bits));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Debiased>(&json).unwrap(), a);
    }
}
