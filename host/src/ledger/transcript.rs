//! A round's transcript: every signed message and the result, enough for anyone to check
//! the signatures and recompute the winner, the rewards and the reputation changes.

use super::identity::{NodeKey, Signed};
use crate::consensus::scoring::{self, ReputationParams, Standing, Vote};
use crate::consensus::{FitOptions, Outcome};
use serde::{Deserialize, Serialize};

pub const TRANSCRIPT_VERSION: u32 = 1;

/// A member of the round: a node, or one plugin of a node in a local round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Ledger key: `<node id>` in the swarm, `<node id>/<plugin>` locally.
    pub key: String,
    /// Standing before the round (weights and reputation changes derive from it).
    pub before: Standing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerMsg {
    pub round: String,
    /// Index into [`Transcript::members`].
    pub member: usize,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictMsg {
    pub round: String,
    /// Index into [`Transcript::members`].
    pub judge: usize,
    /// Indexes into [`Transcript::answers`].
    pub first: usize,
    pub second: usize,
    pub outcome: Outcome,
}

/// A hidden known-answer item a judge was given, with its signed verdict. `first_is_right`
/// is the entry node's claim; the texts are here so that anyone can check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationCheck {
    pub prompt: String,
    pub first_text: String,
    pub second_text: String,
    pub first_is_right: bool,
    /// Signed by the judge; `judge` is its member index, `first`/`second` opaque labels.
    pub verdict: Signed<VerdictMsg>,
}

impl CalibrationCheck {
    /// Whether the judge got it right; `None` for a tie (abstention).
    pub fn correct(&self) -> Option<bool> {
        match self.verdict.payload.outcome {
            Outcome::Tie => None,
            Outcome::First => Some(self.first_is_right),
            Outcome::Second => Some(!self.first_is_right),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub clip: f64,
    pub prior: f64,
    pub points: f64,
    pub reputation: ReputationParams,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            clip: 2.0,
            prior: FitOptions::default().prior,
            points: 10.0,
            reputation: ReputationParams::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Index into [`Transcript::answers`].
    pub winner: Option<usize>,
    /// Bradley–Terry log-strength per answer.
    pub scores: Vec<f64>,
    /// Reward points per answer (to its author).
    pub rewards: Vec<f64>,
    /// Standing after the round, per member.
    pub after: Vec<Standing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub version: u32,
    pub id: String,
    /// The entry node that ran the round and signed the result.
    pub entry: String,
    pub prompt: String,
    pub seed: u64,
    pub members: Vec<Member>,
    pub params: Params,
    pub answers: Vec<Signed<AnswerMsg>>,
    pub verdicts: Vec<Signed<VerdictMsg>>,
    /// Calibration items judged in this round (swarm rounds; empty for local ones). They
    /// are applied to the members' standings before the fit.
    #[serde(default)]
    pub calibration: Vec<CalibrationCheck>,
    /// Members the round struck for a fault (a trap, a crash) after their answers were
    /// anonymised: their answers cannot win and their verdicts do not count. Only an
    /// entry node's own plugins are struck: it cannot see a peer's faults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub struck: Vec<usize>,
    /// Computed and signed by the entry node.
    pub result: Signed<Outcomes>,
}

/// The result that follows from the messages, by the pure consensus functions.
pub fn recompute(
    members: &[Member],
    params: &Params,
    answers: &[Signed<AnswerMsg>],
    verdicts: &[Signed<VerdictMsg>],
    calibration: &[CalibrationCheck],
) -> Outcomes {
    recompute_struck(members, params, answers, verdicts, calibration, &[])
}

/// [`recompute`] with `struck` members left out: the fit runs over the other answers
/// only (a struck answer scores 0 and earns nothing), without the struck judges'
/// verdicts, and a struck member's standing moves only by its calibration items.
pub fn recompute_struck(
    members: &[Member],
    params: &Params,
    answers: &[Signed<AnswerMsg>],
    verdicts: &[Signed<VerdictMsg>],
    calibration: &[CalibrationCheck],
    struck: &[usize],
) -> Outcomes {
    let live: Vec<usize> = (0..answers.len())
        .filter(|&a| !struck.contains(&answers[a].payload.member))
        .collect();
    let pos = |a: usize| live.iter().position(|&x| x == a);
    let p = &params.reputation;
    // Calibration first: a judge proven in this round votes in this round.
    let mut calibrated: Vec<Standing> = members.iter().map(|m| m.before).collect();
    for c in calibration {
        if let (Some(s), Some(correct)) = (calibrated.get_mut(c.verdict.payload.judge), c.correct())
        {
            s.record_calibration(correct, p);
        }
    }
    // Judges weigh with their standing, zero until calibrated.
    let weights: Vec<f64> = calibrated.iter().map(|s| s.vote_weight(p)).collect();
    let votes: Vec<Vote> = verdicts
        .iter()
        .filter(|v| !struck.contains(&v.payload.judge))
        .filter_map(|v| {
            Some(Vote {
                judge: v.payload.judge,
                first: pos(v.payload.first)?,
                second: pos(v.payload.second)?,
                outcome: v.payload.outcome,
            })
        })
        .collect();
    let fit = scoring::aggregate(
        live.len(),
        &votes,
        &weights,
        params.clip,
        FitOptions {
            prior: params.prior,
            ..Default::default()
        },
    );
    let live_rewards = scoring::rewards(&fit.scores, params.points);
    let mut scores = vec![0.0; answers.len()];
    let mut rewards = vec![0.0; answers.len()];
    for (k, &a) in live.iter().enumerate() {
        scores[a] = fit.scores[k];
        rewards[a] = live_rewards[k];
    }
    let mut after = calibrated;
    for (&a, perf) in live.iter().zip(scoring::answer_performance(&fit.scores)) {
        if let Some(s) = after.get_mut(answers[a].payload.member) {
            s.observe(perf, p);
        }
    }
    if live.len() >= 2 {
        for (judge, agreement) in scoring::judge_agreement(&votes, &fit.scores, members.len())
            .into_iter()
            .enumerate()
        {
            if let Some(a) = agreement {
                after[judge].observe(a, p);
            }
        }
    }
    Outcomes {
        winner: fit.winner.map(|w| live[w]),
        scores,
        rewards,
        after,
    }
}

/// A transcript before the entry node seals it with the result.
#[derive(Debug, Clone)]
pub struct Unsealed {
    pub id: String,
    pub prompt: String,
    pub seed: u64,
    pub members: Vec<Member>,
    pub params: Params,
    pub answers: Vec<Signed<AnswerMsg>>,
    pub verdicts: Vec<Signed<VerdictMsg>>,
    pub calibration: Vec<CalibrationCheck>,
    pub struck: Vec<usize>,
}

/// Whether a message signed by `signer` may speak for the member keyed `key`: its own
/// node, or (a local round) the node whose plugin it is.
pub fn speaks_for(key: &str, signer: &str) -> bool {
    key == signer
        || key
            .strip_prefix(signer)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Transcript {
    /// Sign the messages and the result as this node (a local round: one node speaks for
    /// all its plugins).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        key: &NodeKey,
        id: String,
        prompt: String,
        seed: u64,
        members: Vec<Member>,
        params: Params,
        answers: Vec<AnswerMsg>,
        verdicts: Vec<VerdictMsg>,
    ) -> Transcript {
        let answers: Vec<_> = answers.into_iter().map(|a| key.sign(a)).collect();
        let verdicts: Vec<_> = verdicts.into_iter().map(|v| key.sign(v)).collect();
        Self::assemble(
            key,
            id,
            prompt,
            seed,
            members,
            params,
            answers,
            verdicts,
            Vec::new(),
        )
    }

    /// A swarm round: the answers and verdicts come signed by their members' nodes; the
    /// entry node computes the result and signs it.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        entry: &NodeKey,
        id: String,
        prompt: String,
        seed: u64,
        members: Vec<Member>,
        params: Params,
        answers: Vec<Signed<AnswerMsg>>,
        verdicts: Vec<Signed<VerdictMsg>>,
        calibration: Vec<CalibrationCheck>,
    ) -> Transcript {
        Self::seal(
            entry,
            Unsealed {
                id,
                prompt,
                seed,
                members,
                params,
                answers,
                verdicts,
                calibration,
                struck: Vec::new(),
            },
        )
    }

    /// The entry node computes the result that follows from the messages and signs it.
    pub fn seal(entry: &NodeKey, u: Unsealed) -> Transcript {
        let result = entry.sign(recompute_struck(
            &u.members,
            &u.params,
            &u.answers,
            &u.verdicts,
            &u.calibration,
            &u.struck,
        ));
        Transcript {
            version: TRANSCRIPT_VERSION,
            id: u.id,
            entry: entry.id(),
            prompt: u.prompt,
            seed: u.seed,
            members: u.members,
            params: u.params,
            answers: u.answers,
            verdicts: u.verdicts,
            calibration: u.calibration,
            struck: u.struck,
            result,
        }
    }

    /// Every problem found: bad signatures, messages of another round or out of range,
    /// and any difference between the recorded result and the recomputed one.
    pub fn verify(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // A message must be signed by the node of the member it speaks for.
        let speaks_for = |signer: &str, member: usize| {
            self.members
                .get(member)
                .is_some_and(|m| speaks_for(&m.key, signer))
        };
        for (i, a) in self.answers.iter().enumerate() {
            if !speaks_for(&a.signer, a.payload.member) {
                problems.push(format!("answer {i} is not signed by its member's node"));
            }
            if let Err(e) = a.verify() {
                problems.push(format!("answer {i}: {e}"));
            }
            if a.payload.round != self.id {
                problems.push(format!("answer {i} belongs to round {}", a.payload.round));
            }
            if a.payload.member >= self.members.len() {
                problems.push(format!(
                    "answer {i} names member {} of {}",
                    a.payload.member,
                    self.members.len()
                ));
            }
        }
        for (i, v) in self.verdicts.iter().enumerate() {
            if !speaks_for(&v.signer, v.payload.judge) {
                problems.push(format!("verdict {i} is not signed by its judge's node"));
            }
            if let Err(e) = v.verify() {
                problems.push(format!("verdict {i}: {e}"));
            }
            let p = &v.payload;
            if p.round != self.id {
                problems.push(format!("verdict {i} belongs to round {}", p.round));
            }
            if p.first >= self.answers.len()
                || p.second >= self.answers.len()
                || p.judge >= self.members.len()
            {
                problems.push(format!(
                    "verdict {i} refers to an answer or judge that does not exist"
                ));
            } else if [p.first, p.second]
                .iter()
                .any(|&a| self.answers[a].payload.member == p.judge)
            {
                problems.push(format!(
                    "verdict {i}: member {} judged its own answer",
                    p.judge
                ));
            }
        }
        for (i, c) in self.calibration.iter().enumerate() {
            let v = &c.verdict;
            if !speaks_for(&v.signer, v.payload.judge) {
                problems.push(format!(
                    "calibration verdict {i} is not signed by its judge's node"
                ));
            }
            if let Err(e) = v.verify() {
                problems.push(format!("calibration verdict {i}: {e}"));
            }
            if v.payload.round != self.id {
                problems.push(format!(
                    "calibration verdict {i} belongs to round {}",
                    v.payload.round
                ));
            }
        }
        if let Some(m) = self.struck.iter().find(|&&m| m >= self.members.len()) {
            problems.push(format!("struck member {m} does not exist"));
        }
        if let Err(e) = self.result.verify() {
            problems.push(format!("result: {e}"));
        }
        if self.result.signer != self.entry {
            problems.push("result is not signed by the entry node".into());
        }
        if problems.is_empty() {
            let again = recompute_struck(
                &self.members,
                &self.params,
                &self.answers,
                &self.verdicts,
                &self.calibration,
                &self.struck,
            );
            let recorded = &self.result.payload;
            let near = |a: &[f64], b: &[f64]| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
            };
            if again.winner != recorded.winner {
                problems.push(format!(
                    "winner: recorded {:?}, recomputed {:?}",
                    recorded.winner, again.winner
                ));
            }
            if !near(&again.scores, &recorded.scores) {
                problems.push("scores differ from the recomputed fit".into());
            }
            if !near(&again.rewards, &recorded.rewards) {
                problems.push("rewards differ from the recomputed ones".into());
            }
            let reps = |o: &Outcomes| o.after.iter().map(|s| s.reputation).collect::<Vec<_>>();
            let calib = |o: &Outcomes| {
                o.after
                    .iter()
                    .map(|s| (s.calibration_correct, s.calibration_total))
                    .collect::<Vec<_>>()
            };
            if !near(&reps(&again), &reps(recorded)) || calib(&again) != calib(recorded) {
                problems.push("reputation changes differ from the recomputed ones".into());
            }
        }
        problems
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(key: &NodeKey) -> Transcript {
        let p = Params::default();
        let calibrated = Standing {
            reputation: 0.8,
            calibration_correct: 5,
            calibration_total: 5,
        };
        let members = (0..3)
            .map(|i| Member {
                key: format!("{}/p{i}", key.id()),
                before: calibrated,
            })
            .collect();
        let id = "r1".to_string();
        let answers = vec![
            AnswerMsg {
                round: id.clone(),
                member: 0,
                text: "391".into(),
            },
            AnswerMsg {
                round: id.clone(),
                member: 1,
                text: "381".into(),
            },
        ];
        let verdicts = vec![
            VerdictMsg {
                round: id.clone(),
                judge: 2,
                first: 0,
                second: 1,
                outcome: Outcome::First,
            },
            VerdictMsg {
                round: id.clone(),
                judge: 2,
                first: 1,
                second: 0,
                outcome: Outcome::Second,
            },
        ];
        Transcript::build(
            key,
            id,
            "What is 17 * 23?".into(),
            7,
            members,
            p,
            answers,
            verdicts,
        )
    }

    #[test]
    fn an_honest_transcript_verifies() {
        let key = NodeKey::generate();
        let t = sample(&key);
        assert_eq!(t.result.payload.winner, Some(0));
        assert!(t.result.payload.rewards[0] > 0.0 && t.result.payload.rewards[1] == 0.0);
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        assert!(t.result.payload.after[0].reputation > t.members[0].before.reputation);
        assert!(t.result.payload.after[1].reputation < t.members[1].before.reputation);
    }

    #[test]
    fn tampering_is_detected() {
        let key = NodeKey::generate();
        // A flipped verdict: its signature breaks.
        let mut t = sample(&key);
        t.verdicts[0].payload.outcome = Outcome::Second;
        assert!(t.verify().iter().any(|p| p.contains("verdict 0")));
        // A re-signed but changed result: it no longer follows from the messages.
        let mut t = sample(&key);
        let mut forged = t.result.payload.clone();
        forged.winner = Some(1);
        t.result = key.sign(forged);
        assert!(t.verify().iter().any(|p| p.contains("winner")));
        // Answer text edited after the fact.
        let mut t = sample(&key);
        t.answers[1].payload.text = "391".into();
        assert!(t.verify().iter().any(|p| p.contains("answer 1")));
        // A result signed by someone else.
        let mut t = sample(&key);
        t.result = NodeKey::generate().sign(t.result.payload.clone());
        assert!(t.verify().iter().any(|p| p.contains("entry node")));
        // A weight change (standing before the round) changes the recomputed result.
        let mut t = sample(&key);
        t.members[2].before.calibration_total = 0;
        assert!(!t.verify().is_empty());
    }
}
