//! A round's transcript: every signed message and the result, enough for anyone to check
//! the signatures and recompute the winner, the rewards and the reputation changes.

use super::fold::{self, DecidedBy};
use super::identity::{NodeKey, Signed};
use crate::consensus::scoring::{self, ReputationParams, Standing, Vote};
use crate::consensus::{FitOptions, Outcome};
use serde::{Deserialize, Serialize};

/// 6: judges weigh by their record on known-answer pairs with one right side
/// (`consensus::judge_record`), which known-answer rounds now keep; signed as version 5.
/// 5: the entry node's signature covers the whole record: its result names the SHA-256
/// of everything else in the transcript ([`Outcomes::body`]), so the prompt, the options,
/// the domain, the known answer and the set of messages cannot be changed after sealing
/// (before, only what changed the recomputed result was caught). Folded as version 4.
/// 4: option scores debiased by each member's known-answer record and the domain's
/// base rate pooled in once (`consensus::debias`). 3: known-answer rounds, and option scores pooled at each member's fitted scale once
/// it has a known-answer record (see [`super::fold`]). 2: candidates (equal answers
/// grouped), graded verdicts, pooled option scores, the request's options and domain.
/// Versions 1 to 5 still verify, each folded as it was.
pub const TRANSCRIPT_VERSION: u32 = 6;

/// A member of the round: a node, or one plugin of a node in a local round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Ledger key: `<node id>` in the swarm, `<node id>/<plugin>` locally.
    pub key: String,
    /// Standing before the round (weights and reputation changes derive from it).
    pub before: Standing,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerMsg {
    pub round: String,
    /// Index into [`Transcript::members`].
    pub member: usize,
    pub text: String,
    /// For a multiple-choice request: the option the answer picks, by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<u32>,
    /// For a multiple-choice request: the author's score of each option (log-likelihoods,
    /// in the request's order), which the consensus pools. Signed with the answer, so a
    /// member commits to them before it sees any other answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub option_scores: Vec<f32>,
    /// Tokens the author generated (the API's `usage`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// Whether the judge got it right; `None` when it did not lean either way (a tie,
    /// an abstention, "the same", or a graded preference within 0.1 of even).
    pub fn correct(&self) -> Option<bool> {
        self.verdict
            .payload
            .outcome
            .decisive()
            .map(|first| first == self.first_is_right)
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
    /// Per answer, its candidate (answers saying the same thing share one); `None` for a
    /// struck answer. Empty in version 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Option<usize>>,
    /// What decided the winner. `None` in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
    /// The pooled probability of each option (multiple choice with option scores).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pooled: Vec<f64>,
    /// Version 5: the hex SHA-256 of the transcript without its result ([`Body`]), so
    /// the entry node's signature binds every field, not only the ones the fold reads.
    /// Empty before version 5, and in a recomputed result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// The transcript without its result, in its fields' order: what [`Outcomes::body`]
/// hashes. JSON by serde_json (fields in declaration order, floats in their shortest
/// round-trip form), so every node that parses a transcript and writes its body again
/// gets the same bytes.
#[derive(Serialize)]
struct Body<'a> {
    version: u32,
    id: &'a str,
    entry: &'a str,
    prompt: &'a str,
    choices: &'a [String],
    domain: &'a str,
    known: Option<u32>,
    seed: u64,
    members: &'a [Member],
    params: &'a Params,
    answers: &'a [Signed<AnswerMsg>],
    verdicts: &'a [Signed<VerdictMsg>],
    calibration: &'a [CalibrationCheck],
    struck: &'a [usize],
}

impl<'a> Body<'a> {
    /// One constructor for the signer and the verifier, so the two cannot hash
    /// different fields.
    fn of(version: u32, entry: &'a str, u: &'a Unsealed) -> Body<'a> {
        Body {
            version,
            id: &u.id,
            entry,
            prompt: &u.prompt,
            choices: &u.choices,
            domain: &u.domain,
            known: u.known,
            seed: u.seed,
            members: &u.members,
            params: &u.params,
            answers: &u.answers,
            verdicts: &u.verdicts,
            calibration: &u.calibration,
            struck: &u.struck,
        }
    }

    fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        // Serialising plain data to a Vec cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub version: u32,
    pub id: String,
    /// The entry node that ran the round and signed the result.
    pub entry: String,
    pub prompt: String,
    /// The request's options, for a multiple-choice request: what an answer's option
    /// letter or text means, so its candidate can be recomputed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The domain the members' standings were read in (and the standings after apply to).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// A known-answer round (version 3): the index of the right option, the entry node's
    /// claim, which anyone holding the item can check. The members were not told; their
    /// answers here measure them (`consensus::known`) and serve nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<u32>,
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

/// The result that follows from a version 1 transcript's messages, by the pure
/// consensus functions (version 2: [`super::fold::fold`]).
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
        candidates: Vec::new(),
        decided_by: None,
        pooled: Vec::new(),
        body: String::new(),
    }
}

/// A transcript before the entry node seals it with the result.
#[derive(Debug, Clone)]
pub struct Unsealed {
    pub id: String,
    pub prompt: String,
    pub choices: Vec<String>,
    pub domain: String,
    pub known: Option<u32>,
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
                choices: Vec::new(),
                domain: String::new(),
                known: None,
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
        let entry_id = entry.id();
        let body = Body::of(TRANSCRIPT_VERSION, &entry_id, &u).digest();
        let outcomes = fold::fold(&fold::Inputs {
            version: TRANSCRIPT_VERSION,
            known: u.known,
            members: &u.members,
            params: &u.params,
            answers: &u.answers,
            verdicts: &u.verdicts,
            calibration: &u.calibration,
            struck: &u.struck,
            choices: &u.choices,
        });
        let result = entry.sign(Outcomes { body, ..outcomes });
        Transcript {
            version: TRANSCRIPT_VERSION,
            id: u.id,
            entry: entry_id,
            prompt: u.prompt,
            choices: u.choices,
            domain: u.domain,
            known: u.known,
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

    /// The messages, without the result: to seal again (tests, what-if replays).
    pub fn unsealed(&self) -> Unsealed {
        Unsealed {
            id: self.id.clone(),
            prompt: self.prompt.clone(),
            choices: self.choices.clone(),
            domain: self.domain.clone(),
            known: self.known,
            seed: self.seed,
            members: self.members.clone(),
            params: self.params.clone(),
            answers: self.answers.clone(),
            verdicts: self.verdicts.clone(),
            calibration: self.calibration.clone(),
            struck: self.struck.clone(),
        }
    }

    /// The result that follows from the messages: folded as this transcript's version
    /// says.
    pub fn recompute(&self) -> Outcomes {
        self.recompute_with(&self.verdicts)
    }

    /// [`Transcript::recompute`] with other verdicts (what-if replays: `apiary eval`'s
    /// adversarial judges).
    pub fn recompute_with(&self, verdicts: &[Signed<VerdictMsg>]) -> Outcomes {
        if self.version < 2 {
            return recompute_struck(
                &self.members,
                &self.params,
                &self.answers,
                verdicts,
                &self.calibration,
                &self.struck,
            );
        }
        fold::fold(&fold::Inputs {
            version: self.version,
            known: self.known,
            members: &self.members,
            params: &self.params,
            answers: &self.answers,
            verdicts,
            calibration: &self.calibration,
            struck: &self.struck,
            choices: &self.choices,
        })
    }

    /// Verdicts by a judge on a pair holding its own candidate (a copy of its answer
    /// given by someone else counts as its own).
    fn judged_own_candidate(&self, o: &Outcomes) -> Vec<String> {
        let own = |judge: usize, a: usize| {
            let Some(Some(c)) = o.candidates.get(a) else {
                return false;
            };
            self.answers
                .iter()
                .zip(&o.candidates)
                .any(|(x, xc)| x.payload.member == judge && *xc == Some(*c))
        };
        self.verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                own(v.payload.judge, v.payload.first) || own(v.payload.judge, v.payload.second)
            })
            .map(|(i, v)| {
                format!(
                    "verdict {i}: member {} judged its own candidate",
                    v.payload.judge
                )
            })
            .collect()
    }

    /// The digest [`Outcomes::body`] names for this transcript.
    pub fn body_digest(&self) -> String {
        Body::of(self.version, &self.entry, &self.unsealed()).digest()
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
        if let Some(k) = self.known {
            if self.version < 3 {
                problems.push(format!(
                    "a version {} transcript names a known answer",
                    self.version
                ));
            } else if k as usize >= self.choices.len() {
                problems.push(format!(
                    "known answer {k} is not one of the {} options",
                    self.choices.len()
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
        // A version 5 record relabelled as older would skip the check: older ones sign
        // no digest, so one that carries a digest is that relabelling.
        if self.version < 5 && !self.result.payload.body.is_empty() {
            problems.push(format!(
                "a version {} transcript carries a version 5 body digest",
                self.version
            ));
        }
        if self.version >= 5 && self.result.payload.body != self.body_digest() {
            problems.push(
                "the record differs from what the entry node signed (prompt, options, \
                 domain, known answer, seed, members, parameters or messages changed)"
                    .into(),
            );
        }
        if problems.is_empty() {
            let again = self.recompute();
            let recorded = &self.result.payload;
            if again.candidates != recorded.candidates {
                problems.push(format!(
                    "candidates: recorded {:?}, recomputed {:?}",
                    recorded.candidates, again.candidates
                ));
            }
            if again.decided_by != recorded.decided_by {
                problems.push(format!(
                    "decided by: recorded {:?}, recomputed {:?}",
                    recorded.decided_by, again.decided_by
                ));
            }
            problems.extend(self.judged_own_candidate(&again));
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
            let known = |o: &Outcomes| o.after.iter().map(|s| s.known).collect::<Vec<_>>();
            if !near(&reps(&again), &reps(recorded))
                || calib(&again) != calib(recorded)
                || known(&again) != known(recorded)
            {
                problems.push("reputation changes differ from the recomputed ones".into());
            }
        }
        problems
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::consensus::JudgeRecord;

    pub fn sample(key: &NodeKey) -> Transcript {
        let p = Params::default();
        let calibrated = Standing {
            reputation: 0.8,
            calibration_correct: 5,
            calibration_total: 5,
            known: Default::default(),
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
                ..Default::default()
            },
            AnswerMsg {
                round: id.clone(),
                member: 1,
                text: "381".into(),
                ..Default::default()
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

    /// Version 5: fields the fold never reads are signed too. Each edit below leaves the
    /// recomputed result as it was (before version 5 none of them was caught); the body
    /// digest catches every one, a JSON round trip keeps it, and relabelling the record
    /// as version 4 to skip the check is caught as well.
    #[test]
    fn the_entry_signs_every_field_of_a_version_5_record() {
        let key = NodeKey::generate();
        let t = sample(&key);
        assert_eq!(t.version, TRANSCRIPT_VERSION);
        assert_eq!(t.result.payload.body.len(), 64);
        let again: Transcript = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert!(again.verify().is_empty(), "{:?}", again.verify());
        type Edit = fn(&mut Transcript);
        let edits: [(&str, Edit); 5] = [
            ("prompt", |t| t.prompt = "What is 17 * 24?".into()),
            ("domain", |t| t.domain = "history".into()),
            ("seed", |t| t.seed += 1),
            ("id", |t| t.id.push('x')),
            ("choices", |t| {
                t.choices = vec!["391".into(), "381".into()];
            }),
        ];
        for (what, edit) in edits {
            let mut e = t.clone();
            edit(&mut e);
            assert_eq!(e.recompute().winner, t.result.payload.winner, "{what}");
            let problems = e.verify();
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("differs from what the entry node signed")),
                "{what}: {problems:?}"
            );
        }
        let mut old = t.clone();
        old.version = 4;
        assert!(
            old.verify()
                .iter()
                .any(|p| p.contains("carries a version 5 body digest")),
            "{:?}",
            old.verify()
        );
    }

    /// Three answers, two of them the same number in two spellings, and a judge who
    /// prefers 391 to 392 both ways round.
    fn grouped(key: &NodeKey) -> Transcript {
        let before = Standing {
            reputation: 0.8,
            calibration_correct: 5,
            calibration_total: 5,
            known: Default::default(),
        };
        let members = (0..4)
            .map(|i| Member {
                key: format!("{}/p{i}", key.id()),
                before,
            })
            .collect();
        let answer = |member: usize, text: &str| AnswerMsg {
            round: "g".into(),
            member,
            text: text.into(),
            ..Default::default()
        };
        let verdict = |first, second, outcome| VerdictMsg {
            round: "g".into(),
            judge: 3,
            first,
            second,
            outcome,
        };
        Transcript::build(
            key,
            "g".into(),
            "What is 17 * 23?".into(),
            1,
            members,
            Params::default(),
            vec![
                answer(0, "391"),
                answer(1, "392"),
                answer(2, "The answer is 391.0"),
            ],
            vec![
                verdict(0, 1, Outcome::Prefer(900)),
                verdict(1, 0, Outcome::Prefer(100)),
            ],
        )
    }

    #[test]
    fn equal_answers_are_one_candidate_and_share_its_reward() {
        let key = NodeKey::generate();
        let t = grouped(&key);
        let r = &t.result.payload;
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        assert_eq!(r.candidates, vec![Some(0), Some(1), Some(0)]);
        assert_eq!(r.decided_by, Some(DecidedBy::Verdicts));
        assert_eq!(r.winner, Some(0));
        assert_eq!(r.scores[0], r.scores[2], "one candidate, one score");
        assert!(r.rewards[0] > 0.0 && r.rewards[0] == r.rewards[2] && r.rewards[1] == 0.0);
        assert!((r.rewards[0] + r.rewards[2] - t.params.points).abs() < 1e-9);
        // Both members of the winning candidate gain reputation; the other loses.
        assert!(r.after[2].reputation > t.members[2].before.reputation);
        assert!(r.after[1].reputation < t.members[1].before.reputation);
    }

    #[test]
    fn a_regrouped_answer_fails_verification() {
        let key = NodeKey::generate();
        // The entry node claims the two spellings of 391 are different candidates.
        let mut t = grouped(&key);
        let mut forged = t.result.payload.clone();
        forged.candidates = vec![Some(0), Some(1), Some(2)];
        t.result = key.sign(forged);
        assert!(
            t.verify().iter().any(|p| p.contains("candidates")),
            "{:?}",
            t.verify()
        );
        // An answer re-signed to say something else moves it to another candidate.
        let mut t = grouped(&key);
        t.answers[2] = key.sign(AnswerMsg {
            text: "392".into(),
            ..t.answers[2].payload.clone()
        });
        resign(&key, &mut t);
        assert!(
            t.verify().iter().any(|p| p.contains("candidates")),
            "{:?}",
            t.verify()
        );
        // A judge judging a pair holding a copy of its own answer.
        let mut t = grouped(&key);
        t.answers[1] = key.sign(AnswerMsg {
            member: 3,
            ..t.answers[1].payload.clone()
        });
        let t = Transcript::seal(&key, t.unsealed());
        assert!(
            t.verify().iter().any(|p| p.contains("own")),
            "{:?}",
            t.verify()
        );
    }

    #[test]
    fn version_1_transcripts_still_fold_as_they_did() {
        let key = NodeKey::generate();
        let mut t = grouped(&key);
        t.version = 1;
        let v1 = recompute(
            &t.members,
            &t.params,
            &t.answers,
            &t.verdicts,
            &t.calibration,
        );
        assert!(v1.candidates.is_empty() && v1.decided_by.is_none());
        t.result = key.sign(v1);
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        assert_eq!(t.recompute().winner, Some(0));
    }

    /// A yes/no round: member 0 is loud (gaps of 5 nats) and says "no", member 1 is
    /// timid (half a nat) and says "yes"; member 2 only judges and abstains. Member 0's
    /// known-answer record is 3 right of 10 with gaps as loud, member 1's 8 of 10.
    fn standing(known: crate::consensus::Known) -> Standing {
        Standing {
            reputation: 0.8,
            calibration_correct: 5,
            calibration_total: 5,
            known,
        }
    }

    fn loud_and_timid(key: &NodeKey, known: Option<u32>) -> Transcript {
        let record = |right: usize, gap: f64| {
            let mut k = crate::consensus::Known::default();
            for r in 0..10 {
                let gold = usize::from(r >= right);
                k.record(gold == 0, Some(&[gap, 0.0]), gold);
            }
            k
        };
        let befores = [
            standing(record(3, 5.0)),
            standing(record(8, 0.5)),
            standing(Default::default()),
        ];
        let answers = [(1, vec![0.0, 5.0]), (0, vec![0.5, 0.0])];
        yes_or_no(key, known, 3, befores, answers)
    }

    /// One member per standing, keyed as the plugins of `key`'s node in a local round.
    fn local_members(key: &NodeKey, befores: &[Standing]) -> Vec<Member> {
        befores
            .iter()
            .enumerate()
            .map(|(i, &before)| Member {
                key: format!("{}/p{i}", key.id()),
                before,
            })
            .collect()
    }

    /// A yes/no round of two answerers (members 0 and 1) and an abstaining judge, folded
    /// as `version`.
    fn yes_or_no(
        key: &NodeKey,
        known: Option<u32>,
        version: u32,
        befores: [Standing; 3],
        answers: [(u32, Vec<f32>); 2],
    ) -> Transcript {
        let members = local_members(key, &befores);
        let answer = |member: usize, choice: u32, scores: Vec<f32>| {
            key.sign(AnswerMsg {
                round: "k".into(),
                member,
                text: ["yes", "no"][choice as usize].into(),
                choice: Some(choice),
                option_scores: scores,
                tokens: 0,
            })
        };
        let verdict = |first, second| {
            key.sign(VerdictMsg {
                round: "k".into(),
                judge: 2,
                first,
                second,
                outcome: Outcome::Abstain,
            })
        };
        let [(c0, s0), (c1, s1)] = answers;
        let t = Transcript::seal(
            key,
            Unsealed {
                id: "k".into(),
                prompt: "Is the sky green?".into(),
                choices: vec!["yes".into(), "no".into()],
                domain: "choice".into(),
                known,
                seed: 3,
                members,
                params: Params::default(),
                answers: vec![answer(0, c0, s0), answer(1, c1, s1)],
                verdicts: vec![verdict(0, 1), verdict(1, 0)],
                calibration: Vec::new(),
                struck: Vec::new(),
            },
        );
        as_version(key, t, version)
    }

    /// `t` sealed again as a transcript of `version` (this host writes only the newest).
    fn as_version(key: &NodeKey, mut t: Transcript, version: u32) -> Transcript {
        t.version = version;
        let mut result = t.recompute();
        if version >= 5 {
            result.body = t.body_digest();
        }
        t.result = key.sign(result);
        t
    }

    /// `t`'s result signed again over its edited body: what a forging entry node does.
    fn resign(key: &NodeKey, t: &mut Transcript) {
        let mut result = t.result.payload.clone();
        result.body = t.body_digest();
        t.result = key.sign(result);
    }

    #[test]
    fn a_known_answer_record_sets_a_members_voice_in_the_pool() {
        let key = NodeKey::generate();
        let t = loud_and_timid(&key, None);
        assert_eq!(t.version, 3, "folded as version 3");
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        let r = &t.result.payload;
        assert_eq!(r.decided_by, Some(DecidedBy::Pooled));
        assert_eq!(r.winner, Some(1), "the loud member's record silences it");
        assert_eq!(t.members[0].before.known.scale(), Some(0.0));
        assert!(r.pooled[0] > 0.5, "{:?}", r.pooled);
        // Folded as version 2 the same messages follow the loud member, as they did.
        let mut v2 = t.clone();
        v2.version = 2;
        let old = v2.recompute();
        assert_eq!(
            (old.winner, old.decided_by),
            (Some(0), Some(DecidedBy::Pooled))
        );
        // With no records, version 3 pools as version 2 does.
        let mut fresh = t.clone();
        for m in &mut fresh.members {
            m.before.known = Default::default();
        }
        assert_eq!(fresh.recompute().winner, Some(0));
    }

    /// A yes/no round: member 0 says "yes", member 1 "no", with no option scores; judge 2
    /// prefers "yes" in both orders, judge 3 "no" (the second order only by a hunch),
    /// each judge with the record given and the same reputation.
    fn two_judges(
        key: &NodeKey,
        known: Option<u32>,
        version: u32,
        records: [JudgeRecord; 2],
    ) -> Transcript {
        let mut befores = [standing(Default::default()); 4];
        befores[2].known.judged = records[0];
        befores[3].known.judged = records[1];
        let members = local_members(key, &befores);
        let answer = |member: usize| {
            key.sign(AnswerMsg {
                round: "j".into(),
                member,
                text: ["yes", "no"][member].into(),
                choice: Some(member as u32),
                option_scores: Vec::new(),
                tokens: 0,
            })
        };
        let verdict = |judge, first, second, outcome| {
            key.sign(VerdictMsg {
                round: "j".into(),
                judge,
                first,
                second,
                outcome,
            })
        };
        let verdicts = vec![
            verdict(2, 0, 1, Outcome::First),
            verdict(2, 1, 0, Outcome::Second),
            verdict(3, 0, 1, Outcome::Second),
            verdict(3, 1, 0, Outcome::Prefer(550)),
        ];
        let t = Transcript::seal(
            key,
            Unsealed {
                id: "j".into(),
                prompt: "Is water wet?".into(),
                choices: vec!["yes".into(), "no".into()],
                domain: "choice".into(),
                known,
                seed: 5,
                members,
                params: Params::default(),
                answers: vec![answer(0), answer(1)],
                verdicts,
                calibration: Vec::new(),
                struck: Vec::new(),
            },
        );
        as_version(key, t, version)
    }

    fn judge_record(right: u32, wrong: u32) -> JudgeRecord {
        JudgeRecord {
            judged: right + wrong,
            right,
        }
    }

    #[test]
    fn a_known_answer_round_keeps_each_judges_record_from_version_6() {
        let key = NodeKey::generate();
        let fresh = [JudgeRecord::default(); 2];
        let t = two_judges(&key, Some(0), TRANSCRIPT_VERSION, fresh);
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        let after = &t.result.payload.after;
        // Judge 2 preferred the right "yes" twice; judge 3 the wrong "no" once firmly and
        // once by a hunch inside the decisive margin, which a record does not count.
        assert_eq!(after[2].known.judged, judge_record(2, 0));
        assert_eq!(after[3].known.judged, judge_record(0, 1));
        assert!(after[0].known.judged.is_empty() && after[1].known.judged.is_empty());
        // The record survives a JSON round trip (in the transcript and in the ledger).
        let again: Transcript = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert!(again.verify().is_empty(), "{:?}", again.verify());
        assert_eq!(
            again.result.payload.after[3].known.judged,
            judge_record(0, 1)
        );
        // A real round (no right option) and a version 5 known round leave records alone.
        let plain = two_judges(&key, None, TRANSCRIPT_VERSION, fresh);
        let v5 = two_judges(&key, Some(0), 5, fresh);
        for t in [&plain, &v5] {
            assert!(t.verify().is_empty(), "{:?}", t.verify());
            assert!(
                t.result
                    .payload
                    .after
                    .iter()
                    .all(|s| s.known.judged.is_empty())
            );
        }
        // A record changed after the fact fails verification.
        let mut forged = t.clone();
        forged.members[3].before.known.judged = judge_record(40, 0);
        assert!(!forged.verify().is_empty());
    }

    #[test]
    fn from_version_6_a_verdict_weighs_by_its_judges_record() {
        let key = NodeKey::generate();
        // Judge 2 right 20 times in 20, judge 3 at chance: judge 2's "yes" decides.
        let records = [judge_record(20, 0), judge_record(10, 10)];
        let t = two_judges(&key, None, TRANSCRIPT_VERSION, records);
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        let r = &t.result.payload;
        assert_eq!(
            (r.winner, r.decided_by),
            (Some(0), Some(DecidedBy::Verdicts))
        );
        // The records the other way round: judge 3's "no" decides.
        let t = two_judges(&key, None, TRANSCRIPT_VERSION, [records[1], records[0]]);
        let r = &t.result.payload;
        assert_eq!(
            (r.winner, r.decided_by),
            (Some(1), Some(DecidedBy::Verdicts))
        );
        // Version 5 weighs both judges by their equal reputation, whatever their records:
        // judge 2's firmer pair of verdicts wins either way.
        let v5 = two_judges(&key, None, 5, records);
        assert!(v5.verify().is_empty(), "{:?}", v5.verify());
        assert_eq!(v5.result.payload.winner, Some(0));
        let swapped = two_judges(&key, None, 5, [records[1], records[0]]);
        assert_eq!(swapped.result.payload.winner, Some(0));
        // With no records version 6 folds as version 5 did.
        let fresh = two_judges(&key, None, TRANSCRIPT_VERSION, [JudgeRecord::default(); 2]);
        let r = (&fresh.result.payload, &v5.result.payload);
        assert_eq!((r.0.winner, r.0.decided_by), (r.1.winner, r.1.decided_by));
        assert_eq!(r.0.scores, r.1.scores);
    }

    /// Records of 30 known-answer yes/no rounds, right answer "yes" in 2 of 3: member 0
    /// always leans "no" by about 5 nats, a little less when "yes" is right; member 1's
    /// scores do not follow the right answer at all.
    fn leaning_and_deaf() -> [Standing; 3] {
        let (mut lean, mut deaf) = (crate::consensus::Known::default(), Default::default());
        for r in 0..30 {
            let gold = usize::from(r % 3 == 2);
            let lean_scores = [0.0, if gold == 0 { 4.8 } else { 5.4 }];
            let deaf_scores = [f64::from(r % 2), 0.0];
            for (k, s) in [(&mut lean, lean_scores), (&mut deaf, deaf_scores)] {
                let k: &mut crate::consensus::Known = k;
                let right = (s[0] > s[1]) == (gold == 0);
                k.record(right, Some(&s), gold);
                k.debiased.record(&s, gold);
            }
        }
        [standing(lean), standing(deaf), standing(Default::default())]
    }

    #[test]
    fn version_4_reads_a_leaning_members_evidence_not_its_lean() {
        let key = NodeKey::generate();
        // Member 0 says "no", but by 4.8 nats: its "yes"-day margin. Member 1 says "yes".
        let answers = [(1, vec![0.0, 4.8]), (0, vec![1.0, 0.0])];
        let t = yes_or_no(&key, None, TRANSCRIPT_VERSION, leaning_and_deaf(), answers);
        assert_eq!(t.version, TRANSCRIPT_VERSION);
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        let before = &t.members;
        let scale = |m: usize| before[m].before.known.debiased.scale().unwrap();
        assert!(
            scale(0) >= 1.0 && scale(1) <= 0.125,
            "{} {}",
            scale(0),
            scale(1)
        );
        let r = &t.result.payload;
        assert_eq!(r.decided_by, Some(DecidedBy::Pooled));
        assert_eq!(r.winner, Some(1), "{:?}", r.pooled);
        // On its "no"-day margin the same member is read as saying "no".
        let no_day = [(1, vec![0.0, 5.4]), (0, vec![1.0, 0.0])];
        let t = yes_or_no(&key, None, 4, leaning_and_deaf(), no_day.clone());
        assert_eq!(
            t.result.payload.winner,
            Some(0),
            "{:?}",
            t.result.payload.pooled
        );
        // Version 3 has no notion of the lean: it silences member 0 whole, whatever it said.
        let v3 = yes_or_no(&key, None, 3, leaning_and_deaf(), no_day);
        assert_eq!(v3.members[0].before.known.scale(), Some(0.0));
        assert_eq!(
            v3.result.payload.winner,
            Some(1),
            "{:?}",
            v3.result.payload.pooled
        );
    }

    #[test]
    fn only_a_version_4_known_answer_round_grows_the_debiased_record() {
        let key = NodeKey::generate();
        let answers = [(1, vec![0.0, 4.8]), (0, vec![1.0, 0.0])];
        let v4 = yes_or_no(&key, Some(0), 4, leaning_and_deaf(), answers.clone());
        let v3 = yes_or_no(&key, Some(0), 3, leaning_and_deaf(), answers);
        for t in [&v4, &v3] {
            assert!(t.verify().is_empty(), "{:?}", t.verify());
        }
        let grown = |t: &Transcript, m: usize| {
            t.result.payload.after[m].known.debiased.scored
                - t.members[m].before.known.debiased.scored
        };
        assert_eq!((grown(&v4, 0), grown(&v4, 1)), (1, 1));
        assert_eq!((grown(&v3, 0), grown(&v3, 1)), (0, 0));
        // A debiased record changed after the fact fails verification.
        let mut forged = v4.clone();
        forged.members[1].before.known.debiased.right[0] += 4.0;
        assert!(!forged.verify().is_empty());
    }

    #[test]
    fn a_known_answer_round_measures_its_members_against_the_right_option() {
        let key = NodeKey::generate();
        let plain = loud_and_timid(&key, None);
        let t = loud_and_timid(&key, Some(0));
        assert!(t.verify().is_empty(), "{:?}", t.verify());
        let (before, after) = (&t.members, &t.result.payload.after);
        // Member 1 said "yes", the right option; member 0 did not.
        assert_eq!(after[1].known.right, before[1].before.known.right + 1);
        assert_eq!(after[0].known.right, before[0].before.known.right);
        assert_eq!(after[0].known.answered, 11);
        assert_eq!(
            after[2].known, before[2].before.known,
            "a judge's record is its own"
        );
        assert!(after[1].reputation > after[0].reputation);
        // Against the consensus the loser would have been member 0 as well, but by rank;
        // the known round scores by the right option whoever won.
        assert_eq!(plain.result.payload.after[0].known, before[0].before.known);
        // The claim is part of what the result follows from.
        let mut forged = t.clone();
        forged.known = Some(1);
        assert!(
            forged.verify().iter().any(|p| p.contains("reputation")),
            "{:?}",
            forged.verify()
        );
        forged.known = Some(2);
        assert!(
            forged
                .verify()
                .iter()
                .any(|p| p.contains("not one of the 2 options"))
        );
        let mut old = t.clone();
        old.version = 2;
        assert!(
            old.verify()
                .iter()
                .any(|p| p.contains("names a known answer"))
        );
    }
}
