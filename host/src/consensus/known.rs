//! What known-answer rounds say about an answerer: how often it picked the right option,
//! and how far its option scores can be trusted in a pool.
//!
//! Why this exists: option scores are not calibrated probabilities. Each language model's
//! PMI or per-character log-likelihoods have a scale of their own, so in a log-linear pool
//! the model with the widest gaps between its options decides, right or wrong. On BoolQ
//! (held-out seed 2) the pool followed a 35 % model on 167 of 200 items and fell 17 points
//! below the best one; reputation could not correct it, because in a young swarm it is
//! equal for everyone and tracks agreement, not accuracy.
//!
//! A known-answer round (a real-looking multiple-choice request whose right option the
//! entry node knows and writes into the transcript) measures it. For every scale `s` of
//! [`SCALES`] the record sums the log-likelihood of the right option under
//! softmax(s · scores); the scale with the highest sum is the member's temperature, the
//! maximum-likelihood fit over a fixed grid. The grid starts at 0, the uniform
//! distribution, so a model whose scores are no better than a guess on this domain gets no
//! voice at all, and a sharp but often wrong one is flattened until its confidence matches
//! its record. Pooling the tempered scores is then a product of calibrated experts.
//!
//! The record is a plain sum over rounds, updated in transcript order with the
//! deterministic `exp`/`ln` of [`super::pooling`], so every node folding the same
//! transcripts holds the same bits.

use super::debias::Debiased;
use super::judge_record::JudgeRecord;
use super::pooling::log_softmax;
use serde::{Deserialize, Serialize};

/// The temperatures tried: multipliers of a member's option scores.
pub const SCALES: [f64; 10] = [0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];

/// Known-answer rounds with option scores a member needs in a domain before its fitted
/// scale replaces the reputation-derived weight: fewer would let a lucky streak set it.
pub const MIN_SCORED: u32 = 8;

/// One member's known-answer record in one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Known {
    /// Known-answer rounds it answered.
    pub answered: u32,
    /// Of those, how many it answered with the right option.
    pub right: u32,
    /// Of those, how many carried a usable score per option.
    pub scored: u32,
    /// Per scale of [`SCALES`]: Σ ln softmax(scale · scores)[right option].
    pub loglik: [f64; SCALES.len()],
    /// The same rounds with each position's pull out and the base rate in (version 4
    /// transcripts: `consensus::debias`).
    #[serde(default, skip_serializing_if = "Debiased::is_empty")]
    pub debiased: Debiased,
    /// Its verdicts on pairs with one right side (version 6 transcripts:
    /// `consensus::judge_record`): what its verdicts weigh.
    #[serde(default, skip_serializing_if = "JudgeRecord::is_empty")]
    pub judged: JudgeRecord,
}

/// The scale of [`SCALES`] with the highest summed log-likelihood, once `scored` reaches
/// [`MIN_SCORED`] (the smaller on a tie, so a record that cannot tell gives less voice).
pub(crate) fn fitted_scale(loglik: &[f64; SCALES.len()], scored: u32) -> Option<f64> {
    if scored < MIN_SCORED {
        return None;
    }
    let best = (0..SCALES.len()).fold(0, |b, k| if loglik[k] > loglik[b] { k } else { b });
    Some(SCALES[best])
}

impl Known {
    pub fn is_empty(&self) -> bool {
        self.answered == 0 && self.judged.is_empty()
    }

    /// One known-answer round's answer: whether it picked option `gold`, and its option
    /// scores (`None`, or ones of the wrong length or not finite, count only towards the
    /// accuracy).
    pub fn record(&mut self, right: bool, scores: Option<&[f64]>, gold: usize) {
        self.answered = self.answered.saturating_add(1);
        self.right = self.right.saturating_add(u32::from(right));
        let Some(scores) = scores.filter(|s| gold < s.len() && s.iter().all(|x| x.is_finite()))
        else {
            return;
        };
        self.scored = self.scored.saturating_add(1);
        for (sum, scale) in self.loglik.iter_mut().zip(SCALES) {
            let tempered: Vec<f64> = scores.iter().map(|x| scale * x).collect();
            *sum += log_softmax(&tempered)[gold];
        }
    }

    /// The fitted scale, once [`MIN_SCORED`] rounds are in: the one of [`SCALES`] under
    /// which the right options were likeliest (the smaller on a tie, so a record that
    /// cannot tell gives less voice, not more).
    pub fn scale(&self) -> Option<f64> {
        fitted_scale(&self.loglik, self.scored)
    }

    /// The share of known-answer rounds answered right.
    pub fn accuracy(&self) -> Option<f64> {
        (self.answered > 0).then(|| f64::from(self.right) / f64::from(self.answered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(rounds: &[(bool, &[f64], usize)]) -> Known {
        let mut k = Known::default();
        for &(right, scores, gold) in rounds {
            k.record(right, Some(scores), gold);
        }
        k
    }

    #[test]
    fn no_scale_before_enough_rounds() {
        let k = fed(&[(true, &[1.0, 0.0][..], 0); 7]);
        assert_eq!(k.scale(), None);
        assert_eq!((k.answered, k.right, k.scored), (7, 7, 7));
        assert_eq!(fed(&[(true, &[1.0, 0.0][..], 0); 8]).scale(), Some(16.0));
    }

    #[test]
    fn a_sharp_model_that_is_mostly_wrong_is_silenced() {
        // Wide gaps, right 3 times in 10: every positive scale loses to the uniform guess.
        let mut rounds = vec![(false, &[3.0, 0.0][..], 1); 7];
        rounds.extend([(true, &[3.0, 0.0][..], 0); 3]);
        let k = fed(&rounds);
        assert_eq!(k.scale(), Some(0.0));
        assert_eq!(k.accuracy(), Some(0.3));
        // At scale 0 each round adds ln ½ exactly.
        assert!((k.loglik[0] - 10.0 * 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn a_timid_model_that_is_right_is_sharpened_and_a_loud_one_tempered() {
        // Gaps of 0.1 nats, right 9 times in 10: the fit multiplies them.
        let mut timid = vec![(true, &[0.1, 0.0][..], 0); 9];
        timid.push((false, &[0.1, 0.0][..], 1));
        let s = fed(&timid).scale().unwrap();
        assert!(s >= 8.0, "{s}");
        // Gaps of 20 nats, right 7 times in 10: the fit brings them down.
        let mut loud = vec![(true, &[20.0, 0.0][..], 0); 7];
        loud.extend([(false, &[20.0, 0.0][..], 1); 3]);
        let s = fed(&loud).scale().unwrap();
        assert!(s > 0.0 && s <= 0.0625, "{s}");
        // By hand: 7 ln σ(20s) + 3 ln(1 − σ(20s)) peaks at σ = 0.7, s = 0.042; on the
        // grid 0.0625 (−6.27) beats 0 (−6.93) and 0.125 (−8.30).
        let gap = |s: f64| {
            let p = 1.0 / (1.0 + (-20.0 * s).exp());
            7.0 * p.ln() + 3.0 * (1.0 - p).ln()
        };
        assert!(gap(0.0625) > gap(0.125) && gap(0.0625) > 10.0 * 0.5f64.ln());
    }

    #[test]
    fn unusable_scores_count_only_towards_accuracy() {
        let mut k = Known::default();
        k.record(true, None, 0);
        k.record(false, Some(&[1.0, f64::NAN]), 0);
        k.record(true, Some(&[1.0, 0.0]), 2);
        assert_eq!((k.answered, k.right, k.scored), (3, 2, 0));
        assert_eq!(k.loglik, [0.0; SCALES.len()]);
        assert!(Known::default().is_empty() && !k.is_empty());
    }

    #[test]
    fn the_record_is_the_same_bits_in_any_run() {
        let rounds: Vec<(bool, Vec<f64>, usize)> = (0..50)
            .map(|i| {
                let x = f64::from(i);
                (
                    i % 3 == 0,
                    vec![x.sin(), x.cos(), 0.5 * x.sin()],
                    i as usize % 3,
                )
            })
            .collect();
        let run = || {
            let mut k = Known::default();
            for (r, s, g) in &rounds {
                k.record(*r, Some(s), *g);
            }
            k
        };
        let (a, b) = (run(), run());
        assert_eq!(a.loglik.map(f64::to_bits), b.loglik.map(f64::to_bits));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Known>(&json).unwrap(), a);
    }
}
