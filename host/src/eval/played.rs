//! One round as the eval scores it, whichever driver played it.

use crate::ledger::fold::DecidedBy;
use crate::ledger::transcript::Transcript;
use crate::round::RoundReport;
use crate::swarm::RoundResult;

/// An answer a plugin gave.
#[derive(Debug, Clone)]
pub struct Said {
    pub plugin: String,
    pub text: String,
    /// Its multiple-choice pick (signed with the answer since contract 1.2).
    pub choice: Option<u32>,
    pub assess: f32,
}

#[derive(Debug, Clone)]
pub struct Played {
    /// Every answer given, right or wrong, counted or not.
    pub said: Vec<Said>,
    /// The transcript's answers, in its order.
    pub answers: Vec<Said>,
    /// Index into `answers`.
    pub winner: Option<usize>,
    pub transcript: Option<Transcript>,
    /// The plugin that spoke for each transcript member.
    pub plugin_of: Vec<String>,
    /// "none" (no answer), or what decided (`ledger::fold::DecidedBy`): "single",
    /// "verdicts", "pooled", "support" or "order".
    pub decided_by: &'static str,
    pub ms: u64,
}

fn decided_by(how: Option<DecidedBy>) -> &'static str {
    match how {
        None => "none",
        Some(DecidedBy::Single) => "single",
        Some(DecidedBy::Verdicts) => "verdicts",
        Some(DecidedBy::Pooled) => "pooled",
        Some(DecidedBy::Support) => "support",
        Some(DecidedBy::Order) => "order",
    }
}

impl Played {
    pub fn local(r: &RoundReport) -> Played {
        let said = r
            .members
            .iter()
            .filter_map(|m| {
                Some(Said {
                    plugin: m.plugin.clone(),
                    text: m.answer.clone()?,
                    choice: m.choice,
                    assess: m.assess.unwrap_or(0.0),
                })
            })
            .collect();
        let answers = r
            .answers
            .iter()
            .map(|a| {
                let m = &r.members[a.member];
                Said {
                    plugin: a.plugin.clone(),
                    text: a.text.clone(),
                    choice: m.choice,
                    assess: m.assess.unwrap_or(0.0),
                }
            })
            .collect();
        let plugin_of = r
            .transcript
            .iter()
            .flat_map(|t| &t.members)
            .map(|m| m.key.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        Played {
            said,
            answers,
            winner: r.winner,
            transcript: r.transcript.clone(),
            plugin_of,
            decided_by: decided_by(r.winner.and(r.decided_by)),
            ms: r.elapsed_ms,
        }
    }

    pub fn swarm(r: &RoundResult) -> Played {
        let t = &r.transcript;
        let plugin_of: Vec<String> = r.members.iter().map(|m| m.plugin.clone()).collect();
        let answers: Vec<Said> = t
            .answers
            .iter()
            .map(|a| Said {
                plugin: plugin_of[a.payload.member].clone(),
                text: a.payload.text.clone(),
                choice: a.payload.choice,
                assess: r.members[a.payload.member].score,
            })
            .collect();
        Played {
            said: answers.clone(),
            winner: t.result.payload.winner,
            answers,
            transcript: Some(t.clone()),
            plugin_of,
            decided_by: decided_by(Some(r.decided_by)),
            ms: r.elapsed_ms,
        }
    }

    /// A round that failed (nobody answered).
    pub fn nothing(ms: u64) -> Played {
        Played {
            said: Vec::new(),
            answers: Vec::new(),
            winner: None,
            transcript: None,
            plugin_of: Vec::new(),
            decided_by: "none",
            ms,
        }
    }

    /// The winner had the judges speaking for the plugins in `byzantine` reversed every
    /// verdict: the round's own transcript recomputed with those verdicts flipped, so
    /// weights, clipping and the tie rule are the round's.
    pub fn byzantine_winner(&self, byzantine: &[String]) -> Option<usize> {
        let t = self.transcript.as_ref()?;
        let bad = |judge: usize| {
            self.plugin_of
                .get(judge)
                .is_some_and(|p| byzantine.contains(p))
        };
        let mut verdicts = t.verdicts.clone();
        for v in verdicts.iter_mut().filter(|v| bad(v.payload.judge)) {
            v.payload.outcome = v.payload.outcome.swapped();
        }
        t.recompute_with(&verdicts).winner
    }

    /// The winner had the round's verdicts weighed by reputation alone, as before the
    /// judges' records (`consensus::judge_record`): the same transcript folded as version
    /// 5, standings and messages unchanged, so the two rules compare on the same rounds.
    /// `None` for a transcript older than version 6 (its rule is the old one already).
    pub fn unrecorded_winner(&self) -> Option<Option<usize>> {
        let t = self.transcript.as_ref().filter(|t| t.version >= 6)?;
        let mut old = t.clone();
        old.version = 5;
        Some(old.recompute().winner)
    }
}
