//! How a round is run: its phase lengths, who takes part, who judges what.
//!
//! One type for every driver. The in-process round and the swarm differ only in these
//! values ([`Settings::local`], [`Settings::swarm`]), never in code: a local round asks
//! every plugin to judge every pair because its judges cost nothing to reach and are
//! the operator's own, while a swarm round spreads a few pairs over strangers and makes
//! them prove themselves on hidden known-answer items first.

use crate::ledger::transcript::Params;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How long peers have to join, from the announcement.
    pub join_ms: u64,
    /// How long the selected members have to answer, after the join deadline.
    pub answer_ms: u64,
    /// How long judges have to return verdicts, after the answer deadline.
    pub judge_ms: u64,
    /// Most members that answer (the most willing by reputation × assess).
    pub max_members: usize,
    /// Unordered pairs per judge, each judged in both orders; `usize::MAX` means every
    /// pair the judge did not write.
    pub pairs_per_judge: usize,
    /// While fewer members than this answered, members that joined without answering
    /// judge as well (the most reputable first); `usize::MAX` asks every one of them.
    pub min_judges: usize,
    /// Hide known-answer items among each judge's pairs (proof of capability).
    pub calibrate: bool,
    /// Minimum `assess` score to volunteer.
    pub threshold: f32,
    pub params: Params,
}

impl Settings {
    /// A swarm round: deadlines for the network, a few pairs per judge, calibration.
    pub fn swarm() -> Settings {
        Settings {
            join_ms: 3_000,
            answer_ms: 60_000,
            judge_ms: 60_000,
            max_members: 16,
            pairs_per_judge: 3,
            min_judges: 3,
            calibrate: true,
            threshold: 0.5,
            params: Params::default(),
        }
    }

    /// A round among one folder's plugins: every plugin that could not answer judges
    /// every pair, no calibration (the operator installed them), and phases as long as a
    /// day, because each plugin call is already bounded by its own sandbox budget.
    pub fn local() -> Settings {
        Settings {
            join_ms: DAY_MS,
            answer_ms: DAY_MS,
            judge_ms: DAY_MS,
            pairs_per_judge: usize::MAX,
            min_judges: usize::MAX,
            calibrate: false,
            params: crate::ledger::local::local_params(),
            ..Settings::swarm()
        }
    }
}

const DAY_MS: u64 = 24 * 3_600_000;

impl Default for Settings {
    fn default() -> Self {
        Settings::swarm()
    }
}
