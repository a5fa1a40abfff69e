//! A transcript's messages folded into its result: candidates, the winner, rewards and
//! the standings after the round.
//!
//! The fold is a pure function of what the transcript holds (signed answers and
//! verdicts, calibration items, the members' standings before, the parameters, the
//! request's options), so any node reading a transcript derives the same result and a
//! network can one day replicate the records and fold them alike, with no server.
//!
//! Version 2 transcripts (this host's) decide in this order:
//! 1. **Candidates.** Answers that say the same thing (the same option, the same final
//!    number, the same or near-identical normalised text: `consensus::grouping`) are one
//!    candidate; so are candidates a weight majority of their judges called the same.
//!    Judges were given pairs of candidates, not copies.
//! 2. **Verdicts.** Reputation-weighted, clipped, graded Bradley–Terry over the
//!    candidates. When it separates the best candidate from every other, it decides.
//! 3. **Pooled option scores.** On a multiple-choice request, the members' committed
//!    per-option scores, pooled log-linearly with weights from their reputation
//!    (`consensus::pooling`), order the candidates the verdicts left tied.
//! 4. **Support.** Then the summed reputation of the members who gave each candidate:
//!    a reputation-weighted majority.
//! 5. **Order.** Then the order the answers were anonymised in (earned reputation,
//!    assess, the seed: `consensus::fallback`).
//!
//! Version 3 transcripts decide the same way, with two changes to what the stages read:
//! - in step 3 a member with a known-answer record (`consensus::known`) weighs its option
//!   scores at its fitted scale, and the pool is their product; a member without one
//!   weighs in as in version 2;
//! - a known-answer round (the transcript names the right option) measures its members
//!   against it instead of against the consensus: each answer's record and reputation
//!   follow whether it was right, each judge's agreement follows the right candidate.
//!
//! Version 6 transcripts add the judges' records: in a known-answer round each decisive
//! verdict on a pair of candidates with exactly one the right option is counted right or
//! wrong in the judge's record (`consensus::judge_record`), and in every round a verdict
//! weighs the judge's reputation times its record's factor (1 with no record), not the
//! reputation alone.
//!
//! Version 1 transcripts (no candidates, ungraded verdicts) fold as they always did
//! (`transcript::recompute_struck`); version 2 ones as this fold does with `version` 2.

use super::identity::Signed;
use super::transcript::{AnswerMsg, CalibrationCheck, Member, Outcomes, Params, VerdictMsg};
use crate::consensus::bradley_terry::top_group;
use crate::consensus::debias::Debiased;
use crate::consensus::scoring::{self, ReputationParams, Standing, Vote};
use crate::consensus::{FitOptions, grouping, pooling};
use serde::{Deserialize, Serialize};

/// What decided a round, from the transcript alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecidedBy {
    /// One candidate: every answer said the same, or only one answer counted.
    Single,
    Verdicts,
    Pooled,
    Support,
    Order,
}

/// Everything a fold reads.
pub struct Inputs<'a> {
    /// The transcript's version (2 to 6; 5 folds as 4).
    pub version: u32,
    /// The right option of a known-answer round (version 3 and later).
    pub known: Option<u32>,
    pub members: &'a [Member],
    pub params: &'a Params,
    pub answers: &'a [Signed<AnswerMsg>],
    pub verdicts: &'a [Signed<VerdictMsg>],
    pub calibration: &'a [CalibrationCheck],
    pub struck: &'a [usize],
    /// The request's options (empty unless multiple choice).
    pub choices: &'a [String],
}

impl Inputs<'_> {
    fn live(&self) -> Vec<usize> {
        (0..self.answers.len())
            .filter(|&a| !self.struck.contains(&self.answers[a].payload.member))
            .collect()
    }

    /// Standings after this round's calibration items: a judge proven in this round votes
    /// in this round.
    fn calibrated(&self) -> Vec<Standing> {
        let p = &self.params.reputation;
        let mut out: Vec<Standing> = self.members.iter().map(|m| m.before).collect();
        for c in self.calibration {
            if let (Some(s), Some(correct)) = (out.get_mut(c.verdict.payload.judge), c.correct()) {
                s.record_calibration(correct, p);
            }
        }
        out
    }

    /// Verdicts of live judges on live answers, by position among `live`.
    fn votes(&self, live: &[usize]) -> Vec<Vote> {
        let pos = |a: usize| live.iter().position(|&x| x == a);
        self.verdicts
            .iter()
            .filter(|v| !self.struck.contains(&v.payload.judge))
            .filter_map(|v| {
                Some(Vote {
                    judge: v.payload.judge,
                    first: pos(v.payload.first)?,
                    second: pos(v.payload.second)?,
                    outcome: v.payload.outcome,
                })
            })
            .collect()
    }
}

/// The candidate of each of `live`'s answers: grouped by what they say, then merged where
/// the judges said "the same" (hard keys permitting). Ids are numbered in order of first
/// answer, so the representative of candidate `c` is its first answer.
pub fn candidates(i: &Inputs<'_>, live: &[usize], votes: &[Vote], weights: &[f64]) -> Vec<usize> {
    let keys: Vec<grouping::Key> = live
        .iter()
        .map(|&a| {
            let p = &i.answers[a].payload;
            grouping::key(&p.text, p.choice, i.choices)
        })
        .collect();
    let first = grouping::group(&keys);
    let on_candidates = remap(votes, &first);
    grouping::merge_same(
        &first,
        &keys,
        &grouping::same_votes(&on_candidates, weights),
    )
}

/// Votes on answers as votes on their candidates; a vote within one candidate compares
/// nothing and is dropped.
fn remap(votes: &[Vote], cand: &[usize]) -> Vec<Vote> {
    votes
        .iter()
        .filter(|v| cand[v.first] != cand[v.second])
        .map(|v| Vote {
            first: cand[v.first],
            second: cand[v.second],
            ..*v
        })
        .collect()
}

/// The pooled probability of each option, from the live answers' option scores.
/// Version 2: each author weighted by the log-odds its reputation gives over chance,
/// weights averaged. Version 3: an author with a known-answer record at its fitted scale,
/// one without as in version 2, and the tempered distributions multiplied.
fn pooled(i: &Inputs<'_>, live: &[usize], before: &[Standing]) -> Option<Vec<f64>> {
    if i.version >= 4 {
        return pooled_debiased(i, live, before);
    }
    let n = i.choices.len();
    let scores: Vec<(Vec<f64>, f64)> = live
        .iter()
        .map(|&a| &i.answers[a].payload)
        .filter(|p| p.option_scores.len() == n)
        .map(|p| {
            let standing = before.get(p.member);
            let reputation = standing.map_or(0.0, |s| s.reputation);
            let by_reputation = pooling::weight_from_accuracy(reputation, n);
            let w = match standing.and_then(|s| s.known.scale()) {
                Some(scale) if i.version >= 3 => scale,
                _ => by_reputation,
            };
            (option_scores(p), w)
        })
        .collect();
    let models: Vec<(&[f64], f64)> = scores.iter().map(|(s, w)| (s.as_slice(), *w)).collect();
    if i.version >= 3 {
        pooling::product(&models, n)
    } else {
        pooling::pool(&models, n)
    }
}

/// Version 4: an author with a debiased known-answer record (`consensus::debias`) speaks
/// through its evidence at its fitted scale, one without as in version 2, and the base
/// rate of the best-recorded author's domain is multiplied in once.
fn pooled_debiased(i: &Inputs<'_>, live: &[usize], before: &[Standing]) -> Option<Vec<f64>> {
    let n = i.choices.len();
    let mut models: Vec<(Vec<f64>, f64)> = Vec::new();
    let mut base: Option<&Debiased> = None;
    for p in live.iter().map(|&a| &i.answers[a].payload) {
        if p.option_scores.len() != n {
            continue;
        }
        let standing = before.get(p.member);
        let record = standing.map(|s| &s.known.debiased);
        match record.and_then(|d| Some((d, d.scale()?))) {
            Some((d, scale)) => {
                if base.is_none_or(|b| d.scored > b.scored) {
                    base = Some(d);
                }
                models.push((d.evidence(&option_scores(p)), scale));
            }
            None => {
                let reputation = standing.map_or(0.0, |s| s.reputation);
                let w = pooling::weight_from_accuracy(reputation, n);
                models.push((option_scores(p), w));
            }
        }
    }
    if let Some(b) = base {
        models.push((b.prior(n), 1.0));
    }
    let models: Vec<(&[f64], f64)> = models.iter().map(|(s, w)| (s.as_slice(), *w)).collect();
    pooling::product(&models, n)
}

fn option_scores(p: &AnswerMsg) -> Vec<f64> {
    p.option_scores.iter().map(|&x| f64::from(x)).collect()
}

/// The candidates best first, and what decided the first place.
fn order(
    fit: &[f64],
    option_of: &[Option<u32>],
    pooled: Option<&[f64]>,
    support: &[f64],
) -> (Vec<usize>, DecidedBy) {
    let n = fit.len();
    let p_of = |c: usize| {
        option_of[c]
            .and_then(|o| pooled.and_then(|p| p.get(o as usize).copied()))
            .unwrap_or(0.0)
    };
    // Each stage orders only what the stages before left tied, so sort by (tier of the
    // fit, pooled, support, index): tiers are the fit's groups within SEPARATION.
    let tier = tiers(fit);
    let mut ranked: Vec<usize> = (0..n).collect();
    ranked.sort_by(|&a, &b| {
        tier[a]
            .cmp(&tier[b])
            .then(p_of(b).total_cmp(&p_of(a)))
            .then(support[b].total_cmp(&support[a]))
            .then(a.cmp(&b))
    });
    let decided = match ranked.as_slice() {
        [] | [_] => DecidedBy::Single,
        [w, r, ..] => {
            let (w, r) = (*w, *r);
            if tier[w] != tier[r] {
                DecidedBy::Verdicts
            } else if p_of(w) - p_of(r) > 1e-9 {
                DecidedBy::Pooled
            } else if support[w] - support[r] > 1e-9 {
                DecidedBy::Support
            } else {
                DecidedBy::Order
            }
        }
    };
    (ranked, decided)
}

/// Tier 0 for the scores within [`top_group`]'s separation of the best, tier 1 for those
/// of the best of the rest, and so on.
fn tiers(scores: &[f64]) -> Vec<usize> {
    let mut tier = vec![usize::MAX; scores.len()];
    let mut left: Vec<usize> = (0..scores.len()).collect();
    let mut t = 0;
    while !left.is_empty() {
        let rest: Vec<f64> = left.iter().map(|&i| scores[i]).collect();
        let top: Vec<usize> = top_group(&rest).into_iter().map(|k| left[k]).collect();
        for &i in &top {
            tier[i] = t;
        }
        left.retain(|i| !top.contains(i));
        t += 1;
    }
    tier
}

/// Fold a version 2 to 6 transcript.
pub fn fold(i: &Inputs<'_>) -> Outcomes {
    let p = &i.params.reputation;
    let live = i.live();
    let calibrated = i.calibrated();
    let weights = vote_weights(&calibrated, i.version, p);
    let answer_votes = i.votes(&live);
    let cand = candidates(i, &live, &answer_votes, &weights);
    let n = cand.iter().map(|&c| c + 1).max().unwrap_or(0);
    let votes = remap(&answer_votes, &cand);
    let fit = scoring::aggregate(
        n,
        &votes,
        &weights,
        i.params.clip,
        FitOptions {
            prior: i.params.prior,
            ..Default::default()
        },
    );
    let before: Vec<Standing> = i.members.iter().map(|m| m.before).collect();
    let pooled = pooled(i, &live, &before);
    let (option_of, support) = candidate_facts(i, &live, &cand, n, &before);
    let (ranked, decided_by) = order(&fit.scores, &option_of, pooled.as_deref(), &support);
    let rank_scores = rank_scores(&ranked);
    let mut out = Outcomes {
        winner: ranked
            .first()
            .map(|&w| live[cand.iter().position(|&c| c == w).unwrap_or(0)]),
        scores: vec![0.0; i.answers.len()],
        rewards: vec![0.0; i.answers.len()],
        after: calibrated,
        candidates: vec![None; i.answers.len()],
        decided_by: Some(decided_by),
        pooled: pooled.unwrap_or_default(),
        body: String::new(),
    };
    let gold = i.known.filter(|_| i.version >= 3);
    let winners = rewarded(&ranked, &cand);
    let share = i.params.points / winners.max(1) as f64;
    // What the members are measured against: the consensus order, or in a known-answer
    // round the right option (its candidate first, every other tied behind).
    let measure = match gold {
        Some(g) => option_of
            .iter()
            .map(|o| f64::from(u8::from(*o == Some(g))))
            .collect(),
        None => rank_scores,
    };
    let performance = match gold {
        Some(_) => measure.clone(),
        None => scoring::answer_performance(&measure),
    };
    for (k, &a) in live.iter().enumerate() {
        let c = cand[k];
        out.scores[a] = fit.scores[c];
        out.candidates[a] = Some(c);
        if ranked.iter().position(|&x| x == c) < Some(winners_cut(n)) {
            out.rewards[a] = share;
        }
        let msg = &i.answers[a].payload;
        if let Some(s) = out.after.get_mut(msg.member) {
            s.observe(performance[c], p);
            if let Some(g) = gold {
                let scores =
                    (msg.option_scores.len() == i.choices.len()).then(|| option_scores(msg));
                s.known
                    .record(option_of[c] == Some(g), scores.as_deref(), g as usize);
                if let (Some(scores), true) = (&scores, i.version >= 4) {
                    s.known.debiased.record(scores, g as usize);
                }
            }
        }
    }
    if n >= 2 {
        observe_judges(&mut out.after, &votes, &measure, i.members.len(), p);
    }
    if let (Some(g), true) = (gold, i.version >= 6) {
        record_judges(&mut out.after, &votes, &option_of, g);
    }
    out
}

/// Each member's verdict weight: its reputation once calibrated, and from version 6
/// times the factor of its judging record (`consensus::judge_record`).
fn vote_weights(standings: &[Standing], version: u32, p: &ReputationParams) -> Vec<f64> {
    standings
        .iter()
        .map(|s| {
            let w = s.vote_weight(p);
            if version >= 6 {
                w * s.known.judged.factor()
            } else {
                w
            }
        })
        .collect()
}

/// A known-answer round's decisive verdicts on candidate pairs with exactly one side the
/// right option `gold`, into each judge's record (version 6). A pair of two wrong options
/// says nothing a record can check; nor does a hunch inside the decisive margin.
fn record_judges(after: &mut [Standing], votes: &[Vote], option_of: &[Option<u32>], gold: u32) {
    let right = |c: usize| option_of.get(c).copied().flatten() == Some(gold);
    for v in votes {
        let (first, second) = (right(v.first), right(v.second));
        let (true, Some(preferred_first), Some(s)) = (
            first != second,
            v.outcome.decisive(),
            after.get_mut(v.judge),
        ) else {
            continue;
        };
        s.known.judged.record(preferred_first == first);
    }
}

/// Per candidate: its option (if its answers pick one) and its support, the summed
/// reputation of its distinct members.
fn candidate_facts(
    i: &Inputs<'_>,
    live: &[usize],
    cand: &[usize],
    n: usize,
    before: &[Standing],
) -> (Vec<Option<u32>>, Vec<f64>) {
    let mut option_of = vec![None; n];
    let mut members: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); n];
    for (k, &a) in live.iter().enumerate() {
        let msg = &i.answers[a].payload;
        if let grouping::Key::Option(o) = grouping::key(&msg.text, msg.choice, i.choices) {
            option_of[cand[k]].get_or_insert(o);
        }
        members[cand[k]].insert(msg.member);
    }
    let support = members
        .iter()
        .map(|m| {
            m.iter()
                .map(|&x| before.get(x).map_or(0.0, |s| s.reputation))
                .sum()
        })
        .collect();
    (option_of, support)
}

/// Candidates past which nobody is rewarded: the better-ranked half, at least one.
fn winners_cut(n: usize) -> usize {
    (n / 2).max(1).min(n.max(1))
}

/// How many answers are in the rewarded candidates (they share the points equally).
fn rewarded(ranked: &[usize], cand: &[usize]) -> usize {
    let cut = winners_cut(ranked.len());
    cand.iter()
        .filter(|c| ranked.iter().position(|x| x == *c).is_some_and(|r| r < cut))
        .count()
}

/// Scores that put the candidates in `ranked`'s order with no ties (for the rank-based
/// performance and agreement functions).
fn rank_scores(ranked: &[usize]) -> Vec<f64> {
    let mut s = vec![0.0; ranked.len()];
    for (r, &c) in ranked.iter().enumerate() {
        s[c] = (ranked.len() - r) as f64;
    }
    s
}

fn observe_judges(
    after: &mut [Standing],
    votes: &[Vote],
    scores: &[f64],
    n_members: usize,
    p: &ReputationParams,
) {
    for (judge, agreement) in scoring::judge_agreement(votes, scores, n_members)
        .into_iter()
        .enumerate()
    {
        if let Some(a) = agreement {
            after[judge].observe(a, p);
        }
    }
}
