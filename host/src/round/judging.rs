//! Who judges which pair, with which hidden known-answer items, and which of the
//! verdicts that come back count.
//!
//! Everything here follows from the round seed and the member indexes, so a
//! transcript's reader can tell which items a judge was given, and a judge cannot tell a
//! calibration item from a real pair.

use super::calibration;
use super::settings::Settings;
use crate::consensus::pairs::SplitMix;
use crate::consensus::{self, Standing, grouping};
use crate::ledger::Signed;
use crate::ledger::transcript::{AnswerMsg, CalibrationCheck, VerdictMsg, speaks_for};
use crate::sandbox::Request;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The pairs one judge is asked about (real ones and calibration items, shuffled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeTask {
    pub round: String,
    /// The judge's member index (it signs its verdicts with it).
    pub judge: usize,
    pub items: Vec<JudgeItem>,
}

/// One ordered pair. `first`/`second` are labels the judge copies into its verdict:
/// answer indexes of the round for real pairs, opaque labels for calibration items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeItem {
    pub prompt: String,
    pub first: usize,
    pub second: usize,
    pub first_text: String,
    pub second_text: String,
}

/// A task as its giver keeps it: which labels are calibration items, and their truth.
#[derive(Debug, Clone)]
pub(crate) struct Given {
    pub task: JudgeTask,
    /// Calibration labels → whether `first` is the right answer.
    truth: BTreeMap<(usize, usize), bool>,
}

/// A verdict that counts, sorted by what it was about.
pub(crate) enum Filed {
    Real(Signed<VerdictMsg>),
    Check(CalibrationCheck),
}

/// The tasks of one round: `judges` are member indexes, `authors[a]` the member that
/// wrote answer `a`, `standings` every member's standing before the round.
///
/// Judges compare candidates, not copies: answers that say the same thing
/// ([`candidates`]) are shown once, by their first answer, and nobody judges a pair
/// holding a candidate it gave (a copy of its own answer is its own answer).
pub(crate) fn tasks(
    round: &str,
    request: &Request,
    answers: &[Signed<AnswerMsg>],
    judges: &[usize],
    standings: &[Standing],
    settings: &Settings,
) -> Vec<Given> {
    let (prompt, seed) = (request.prompt.as_str(), request.seed);
    let domain = super::domain_of(request);
    let n = answers.len();
    let cand = candidates(answers, &request.choices);
    let reps: Vec<usize> = (0..cand.iter().map(|&c| c + 1).max().unwrap_or(0))
        .filter_map(|c| cand.iter().position(|&x| x == c))
        .collect();
    let judge_of = |member: usize| judges.iter().position(|&j| j == member);
    let gave = |j: usize, c: usize| {
        (0..n).any(|a| cand[a] == c && judge_of(answers[a].payload.member) == Some(j))
    };
    let authors: Vec<Option<usize>> = reps
        .iter()
        .map(|&a| judge_of(answers[a].payload.member))
        .collect();
    let assignment: Vec<consensus::Assignment> =
        consensus::balanced_assignment(&authors, judges.len(), settings.pairs_per_judge, seed)
            .into_iter()
            .filter(|x| !gave(x.judge, x.first) && !gave(x.judge, x.second))
            .collect();
    let mut out = Vec::new();
    for (j, &member) in judges.iter().enumerate() {
        let mut items: Vec<JudgeItem> = assignment
            .iter()
            .filter(|a| a.judge == j)
            .map(|a| {
                let (first, second) = (reps[a.first], reps[a.second]);
                JudgeItem {
                    prompt: prompt.to_string(),
                    first,
                    second,
                    first_text: answers[first].payload.text.clone(),
                    second_text: answers[second].payload.text.clone(),
                }
            })
            .collect();
        let mut truth = BTreeMap::new();
        if settings.calibrate {
            hide_calibration(
                &mut items,
                &mut truth,
                n,
                (seed, &domain),
                member,
                &standings[member],
                settings,
            );
        }
        if items.is_empty() {
            continue;
        }
        SplitMix(seed ^ member as u64).shuffle(&mut items);
        out.push(Given {
            task: JudgeTask {
                round: round.to_string(),
                judge: member,
                items,
            },
            truth,
        });
    }
    out
}

/// The candidate of each answer by what it says (`consensus::grouping`), before any
/// judge has spoken: what the judges are shown. The transcript's fold groups the same
/// way, then merges what judges call the same.
pub(crate) fn candidates(answers: &[Signed<AnswerMsg>], choices: &[String]) -> Vec<usize> {
    let keys: Vec<grouping::Key> = answers
        .iter()
        .map(|a| grouping::key(&a.payload.text, a.payload.choice, choices))
        .collect();
    grouping::group(&keys)
}

/// A new judge gets enough items to prove itself in one round even if it abstains (ties)
/// on the ones outside its domain; a proven one gets one pair, both orders, so it cannot
/// stop trying. Labels start past the answers, so they name no real pair.
fn hide_calibration(
    items: &mut Vec<JudgeItem>,
    truth: &mut BTreeMap<(usize, usize), bool>,
    n: usize,
    (seed, domain): (u64, &str),
    member: usize,
    standing: &Standing,
    settings: &Settings,
) {
    let p = &settings.params.reputation;
    let wanted = if standing.calibrated(p) {
        1
    } else {
        2 * p.calibration_items as usize
    };
    let bank = calibration::items_for(
        seed ^ (member as u64 + 1).wrapping_mul(0x9E37),
        wanted,
        domain,
    );
    for (k, item) in bank.into_iter().enumerate() {
        let (right, wrong) = (n + 2 * k, n + 2 * k + 1);
        for (first, second) in [(right, wrong), (wrong, right)] {
            truth.insert((first, second), first == right);
            let text = |l: usize| {
                if l == right {
                    item.right.clone()
                } else {
                    item.wrong.clone()
                }
            };
            items.push(JudgeItem {
                prompt: item.prompt.clone(),
                first,
                second,
                first_text: text(first),
                second_text: text(second),
            });
        }
    }
}

impl Given {
    /// Sort `verdicts` from the member keyed `key` into those that count and the reasons
    /// the others do not. At most one verdict per item is read: the rest are not even
    /// verified, so a judge cannot make the entry node check a flood of signatures.
    /// Verdicts signed by `entry` (this process) are not verified again: see
    /// `Round::check_signature`.
    pub(crate) fn file(
        &self,
        key: &str,
        entry: &str,
        verdicts: Vec<Signed<VerdictMsg>>,
    ) -> (Vec<Filed>, Vec<String>) {
        let t = &self.task;
        let asked: BTreeSet<(usize, usize)> = t.items.iter().map(|i| (i.first, i.second)).collect();
        let mut done = BTreeSet::new();
        let mut filed = Vec::new();
        let mut rejected = Vec::new();
        let extra = verdicts.len().saturating_sub(t.items.len());
        if extra > 0 {
            rejected.push(format!(
                "{extra} verdicts beyond the {} items given",
                t.items.len()
            ));
        }
        for v in verdicts.into_iter().take(t.items.len()) {
            let pair = (v.payload.first, v.payload.second);
            let problem = if v.signer != entry && v.verify().is_err() {
                Some("bad signature")
            } else if !speaks_for(key, &v.signer) {
                Some("signed by another node")
            } else if v.payload.round != t.round || v.payload.judge != t.judge {
                Some("for another round or judge")
            } else if !asked.contains(&pair) {
                Some("a pair it was not given")
            } else if !done.insert(pair) {
                Some("the same pair twice")
            } else {
                None
            };
            if let Some(problem) = problem {
                rejected.push(format!("verdict on {pair:?}: {problem}"));
                continue;
            }
            filed.push(match self.truth.get(&pair) {
                Some(&first_is_right) => {
                    let item = t
                        .items
                        .iter()
                        .find(|i| (i.first, i.second) == pair)
                        .expect("asked pairs are items");
                    Filed::Check(CalibrationCheck {
                        prompt: item.prompt.clone(),
                        first_text: item.first_text.clone(),
                        second_text: item.second_text.clone(),
                        first_is_right,
                        verdict: v,
                    })
                }
                None => Filed::Real(v),
            });
        }
        (filed, rejected)
    }
}
