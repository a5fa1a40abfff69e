//! Rounds: one protocol, whoever the members are.
//!
//! - [`engine`]: the protocol as a deterministic state machine (events in, actions out,
//!   time passed in): joins, selection, answers, anonymisation, pairs, calibration,
//!   verdicts, the sealed transcript;
//! - [`judging`]: pair assignment, hidden calibration items, which verdicts count;
//! - [`calibration`]: the known-answer bank;
//! - [`settings`]: the one set of knobs both drivers use;
//! - [`local`]: the in-process driver, one folder's plugins as members
//!   (`apiary ask --plugins`, `apiary eval`).
//!
//! The libp2p driver is `crate::swarm::node`; it moves the same events and actions over
//! the network. Neither driver decides anything the engine does not: that is what lets a
//! local round and a networked round of the same members reach the same result.

pub mod calibration;
pub mod engine;
pub mod judging;
pub mod local;
pub mod settings;

pub use engine::{
    Action, Deadlines, Decision, Failure, MemberReport, Offer, Phase, Progress, Refused, Round,
    Spec,
};
pub use judging::{JudgeItem, JudgeTask};
pub use local::{AnswerEntry, Member, RoundConfig, RoundError, RoundReport, VerdictRecord};
pub use local::{request, run_local_round};
pub use settings::Settings;

use crate::consensus::Outcome;
use crate::ledger::transcript::AnswerMsg;
use crate::sandbox::{Judgment, WitAnswer};

/// A plugin's judgment in the transcript's terms: a preference as per-mille (the signed
/// record holds an integer, so every node reads the same number), certainty and no
/// preference as the names 1.1 transcripts already used.
pub fn outcome_of(j: Judgment) -> Outcome {
    match j {
        Judgment::Prefer(p) if p.is_nan() => Outcome::Abstain,
        Judgment::Prefer(p) => match (p.clamp(0.0, 1.0) * 1000.0).round() as u16 {
            1000 => Outcome::First,
            0 => Outcome::Second,
            500 => Outcome::Tie,
            permille => Outcome::Prefer(permille),
        },
        Judgment::Same => Outcome::Same,
        Judgment::Abstain => Outcome::Abstain,
    }
}

/// The domain a round's standings are kept in: the client's hint (lowercased), else the
/// kind of task ("choice" for multiple choice, "open" otherwise). A member's reputation
/// in one domain says little of another: a coder judging history is a stranger there.
pub fn domain_of(req: &crate::sandbox::Request) -> String {
    match req.domain.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => d.chars().take(64).collect::<String>().to_lowercase(),
        _ if !req.choices.is_empty() => "choice".into(),
        _ => "open".into(),
    }
}

/// The signed record of a plugin's answer in round `round` by member `member`.
pub fn answer_msg(round: &str, member: usize, a: &WitAnswer) -> AnswerMsg {
    AnswerMsg {
        round: round.to_string(),
        member,
        text: a.text.clone(),
        choice: a.choice,
        option_scores: a.option_scores.clone(),
        tokens: a.tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgments_become_outcomes_with_old_names_kept() {
        assert_eq!(outcome_of(Judgment::Prefer(1.0)), Outcome::First);
        assert_eq!(outcome_of(Judgment::Prefer(0.0)), Outcome::Second);
        assert_eq!(outcome_of(Judgment::Prefer(0.5)), Outcome::Tie);
        assert_eq!(outcome_of(Judgment::Prefer(0.75)), Outcome::Prefer(750));
        assert_eq!(outcome_of(Judgment::Prefer(7.0)), Outcome::First);
        assert_eq!(outcome_of(Judgment::Prefer(f32::NAN)), Outcome::Abstain);
        assert_eq!(outcome_of(Judgment::Same), Outcome::Same);
        assert_eq!(outcome_of(Judgment::Abstain), Outcome::Abstain);
    }
}
