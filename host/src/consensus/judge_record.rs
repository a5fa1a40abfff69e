//! What known-answer rounds say about a judge: how often it preferred the right answer
//! over a wrong one, and what its verdicts weigh for it (version 6 transcripts).
//!
//! Why this exists: until version 6 a judge's verdict weighed its reputation once it had
//! passed the calibration gate, whatever its record on the task. The gate is passed on
//! generated capitals and sums, and a young swarm's reputation follows agreement, so on
//! the mixed set (held-out seed 2) three language models judging 8/0, 16/6 and 10/10 on
//! pairs with one right answer weighed the same; the verdicts decided 14 multi-answer
//! rounds and got 6 right, and the swarm fell 2.5 points below majority vote.
//!
//! A known-answer round names the right option, so every decisive verdict on a pair where
//! exactly one side is that option is a right or a wrong judgement. The record counts them
//! per member and domain (it lives in [`super::known::Known`], which the standing keeps
//! per domain), and the verdict's weight is multiplied by
//!
//! > (2·p − 1) / (2·[`PRIOR_ACCURACY`] − 1), at least 0, where
//! > p = (right + [`PRIOR_ACCURACY`]·[`PRIOR_VERDICTS`]) / (judged + [`PRIOR_VERDICTS`]).
//!
//! 2p − 1 is how far the judge is from a coin on such pairs: a judge at chance weighs
//! nothing, a judge below it nothing either (its verdicts are not turned round: a judge
//! that learnt to be reliably wrong on tests would then steer by being wrong). The prior is
//! the calibration gate's bar: a judge that passed the gate is presumed to judge the task
//! that well until its record says otherwise, so a judge with no record keeps exactly the
//! weight it had before version 6. That matters because known-answer rounds are multiple
//! choice only: free-form domains have no records, and a flat prior would silence every
//! judge of them (`arith` deciding "391" is a verdict). The pseudo-count keeps a few lucky
//! verdicts from setting a weight. A judge proven better than the bar weighs more than
//! before (at most 2.5 times), one proven worse less: the record, not the gate, decides.
//!
//! Counts only, no floating-point state: every node folding the same transcripts holds
//! the same record, and the factor is one division of integers and constants.

use serde::{Deserialize, Serialize};

/// What a judge with no record is presumed to get right on pairs with one right answer:
/// the calibration gate's default bar (`ReputationParams::calibration_accuracy`).
pub const PRIOR_ACCURACY: f64 = 0.7;

/// How many verdicts the prior counts as: a record outweighs it after about as many.
pub const PRIOR_VERDICTS: f64 = 8.0;

/// One member's judging record on known-answer rounds in one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeRecord {
    /// Decisive verdicts on pairs where exactly one side was the right option.
    pub judged: u32,
    /// Of those, how many preferred the right one.
    pub right: u32,
}

impl JudgeRecord {
    pub fn is_empty(&self) -> bool {
        self.judged == 0
    }

    /// One decisive verdict on a pair with one right side: `right` if it preferred it.
    pub fn record(&mut self, right: bool) {
        self.judged = self.judged.saturating_add(1);
        self.right = self.right.saturating_add(u32::from(right));
    }

    /// The share of right verdicts under the prior (at most 1, should a standing read
    /// from someone's transcript claim more right verdicts than verdicts).
    pub fn accuracy(&self) -> f64 {
        let right = self.right.min(self.judged);
        (f64::from(right) + PRIOR_ACCURACY * PRIOR_VERDICTS)
            / (f64::from(self.judged) + PRIOR_VERDICTS)
    }

    /// What the judge's verdicts weigh relative to an unrecorded judge of the same
    /// reputation: 1 with no record, 0 at or below chance, 2.5 at most.
    pub fn factor(&self) -> f64 {
        ((2.0 * self.accuracy() - 1.0) / (2.0 * PRIOR_ACCURACY - 1.0)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(right: u32, wrong: u32) -> JudgeRecord {
        let mut r = JudgeRecord::default();
        (0..right).for_each(|_| r.record(true));
        (0..wrong).for_each(|_| r.record(false));
        r
    }

    #[test]
    fn no_record_keeps_the_weight_of_before() {
        let r = JudgeRecord::default();
        assert!(r.is_empty());
        assert!((r.factor() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_factor_by_hand() {
        // 8 right of 8: p = (8 + 5.6) / 16 = 0.85, factor 0.7 / 0.4 = 1.75.
        assert!((record(8, 0).factor() - 1.75).abs() < 1e-12);
        // 10 of 20: p = 15.6 / 28 = 0.5571, factor 0.1143 / 0.4 = 0.2857.
        assert!((record(10, 10).factor() - 0.2857142857).abs() < 1e-9);
        // 22 of 34 (gemma on ARC-Easy): p = 27.6 / 42 = 0.6571, factor 0.7857.
        assert!((record(22, 12).factor() - 0.7857142857).abs() < 1e-9);
        // At the bar the factor stays 1 however long the record.
        assert!((record(70, 30).factor() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_judge_at_or_below_chance_weighs_nothing() {
        assert_eq!(record(10, 16).factor(), 0.0);
        assert_eq!(record(0, 40).factor(), 0.0);
        // Exactly at chance after enough verdicts the prior's pull is nearly gone.
        assert!(record(500, 500).factor() < 0.01);
    }

    #[test]
    fn a_perfect_record_approaches_two_and_a_half_and_no_more() {
        let f = record(10_000, 0).factor();
        assert!(f > 2.49 && f <= 2.5, "{f}");
        // Saturating counts: a hostile standing at the maximum neither panics nor grows.
        let mut r = JudgeRecord {
            judged: u32::MAX,
            right: u32::MAX,
        };
        r.record(true);
        assert!(r.factor() <= 2.5);
        let forged = JudgeRecord {
            judged: 1,
            right: 1000,
        };
        assert!((forged.factor() - record(1, 0).factor()).abs() < 1e-12);
    }

    #[test]
    fn few_verdicts_move_the_weight_little() {
        // Two lucky verdicts: p = 7.6 / 10, factor 1.3, not 2.5.
        assert!((record(2, 0).factor() - 1.3).abs() < 1e-12);
        assert!((record(0, 2).factor() - 0.3).abs() < 1e-12);
    }
}
