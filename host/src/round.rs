//! A local round on one machine: the swarm protocol with every member in this process.
//!
//! 1. every active plugin gets a fresh instance and `assess`es the request;
//! 2. those at or above the threshold `answer` (in parallel, each within its budget);
//! 3. every plugin with a live instance judges every pair of answers it did not write,
//!    in both orders;
//! 4. a Bradley–Terry fit over the verdicts picks the answer.
//!
//! A plugin that faults is dropped from the rest of the round and the fault counts
//! towards its quarantine; the round goes on with the others.

use crate::consensus::{self, Claim, FitOptions, Outcome, Vote};
use crate::plugins::Plugin;
use crate::sandbox::{CallError, Request, Sandbox, Session, Verdict};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RoundConfig {
    /// Minimum `assess` score to answer.
    pub threshold: f32,
    /// At most this many answerers (highest assess scores first).
    pub max_answerers: usize,
    pub quarantine_after: u32,
    pub fit: FitOptions,
    /// Voting weight per plugin name (its reputation); absent means 1.
    pub weights: std::collections::BTreeMap<String, f64>,
    /// Most support one judge may lend one answer (see `consensus::scoring`).
    pub clip: f64,
    /// Reputation earned in earlier rounds per plugin name, for rounds the verdicts do
    /// not decide (`consensus::fallback`); absent means the initial reputation.
    pub reputation: std::collections::BTreeMap<String, f64>,
}

impl Default for RoundConfig {
    fn default() -> Self {
        RoundConfig {
            threshold: 0.5,
            max_answerers: 16,
            quarantine_after: crate::plugins::DEFAULT_QUARANTINE_AFTER,
            fit: FitOptions::default(),
            weights: Default::default(),
            clip: 2.0,
            reputation: Default::default(),
        }
    }
}

/// One plugin's part in a round.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub plugin: String,
    pub assess: Option<f32>,
    pub answer: Option<String>,
    pub confidence: Option<f32>,
    pub choice: Option<u32>,
    /// Why the plugin did not answer or judge, if it did not.
    pub error: Option<String>,
    /// Whether the error was a fault (counts towards quarantine).
    pub fault: bool,
    pub answer_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerdictRecord {
    pub judge: String,
    /// Index into [`RoundReport::members`].
    pub judge_member: usize,
    /// Indexes into [`RoundReport::answers`].
    pub first: usize,
    pub second: usize,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswerEntry {
    /// Index into [`RoundReport::members`].
    pub member: usize,
    pub plugin: String,
    pub text: String,
    pub score: f64,
    /// Its author faulted during the round, so it cannot win.
    pub disqualified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub prompt: String,
    pub seed: u64,
    pub members: Vec<Member>,
    pub answers: Vec<AnswerEntry>,
    pub verdicts: Vec<VerdictRecord>,
    /// Index into `answers`.
    pub winner: Option<usize>,
    /// Modelled probability that the winner beats the runner-up.
    pub margin: f64,
    /// Only one answer arrived: nothing was compared.
    pub single_answer: bool,
    /// Two or more answers and the fit did not separate the best from the rest: the
    /// winner is the tied answer whose author has the most earned reputation, then the
    /// highest assess, then the round seed's draw (`consensus::fallback`).
    pub undecided: bool,
    /// The live answers (indexes into `answers`) in the fallback order the fit used:
    /// what the verdicts leave tied goes to the first of them.
    pub order: Vec<usize>,
    pub elapsed_ms: u64,
}

impl RoundReport {
    pub fn winning_answer(&self) -> Option<&AnswerEntry> {
        self.winner.map(|i| &self.answers[i])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(
        "no plugins are loaded; put specialist plugins in the plugins folder (see `apiary plugins list`)"
    )]
    NoPlugins,
}

struct Participant {
    plugin: Arc<Plugin>,
    session: Option<Session>,
    member: Member,
    /// Chosen to answer this round.
    selected: bool,
}

impl Participant {
    /// Record a call outcome: a fault ends this plugin's part in the round.
    fn note<T>(&mut self, outcome: Result<T, CallError>) -> Option<T> {
        match outcome {
            Ok(v) => Some(v),
            Err(e) => {
                if e.is_fault() {
                    tracing::warn!(plugin = %self.member.plugin, "fault: {e}");
                    self.member.fault = true;
                    self.session = None;
                }
                if self.member.error.is_none() {
                    self.member.error = Some(e.to_string());
                }
                None
            }
        }
    }
}

impl Participant {
    /// A panic while serving this plugin (caught in its thread) is its fault for the
    /// round, like a trap: the round and the process go on without it.
    fn caught(&mut self, panic: Box<dyn std::any::Any + Send>) {
        let message = crate::sandbox::panic_message(&*panic);
        tracing::error!(plugin = %self.member.plugin, "host panic while serving the plugin: {message}");
        self.member.fault = true;
        self.session = None;
        self.member.error = Some(format!("the host failed serving this plugin: {message}"));
    }
}

/// Run `f` on each participant in parallel (one thread each: calls are CPU-bound wasm and
/// the budgets bound them). A panic stays inside its participant's thread.
fn in_parallel(parts: &mut [Participant], f: impl Fn(&mut Participant) + Sync) {
    std::thread::scope(|s| {
        for p in parts.iter_mut() {
            let f = &f;
            s.spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *p)));
                if let Err(panic) = outcome {
                    p.caught(panic);
                }
            });
        }
    });
}

pub fn run_local_round(
    sandbox: &Sandbox,
    plugins: &[Arc<Plugin>],
    request: &Request,
    config: &RoundConfig,
) -> Result<RoundReport, RoundError> {
    let started = Instant::now();
    if plugins.is_empty() {
        return Err(RoundError::NoPlugins);
    }
    let mut parts: Vec<Participant> = plugins
        .iter()
        .map(|p| Participant {
            plugin: p.clone(),
            session: None,
            selected: false,
            member: Member {
                plugin: p.name.clone(),
                assess: None,
                answer: None,
                confidence: None,
                choice: None,
                error: None,
                fault: false,
                answer_ms: None,
            },
        })
        .collect();

    // 1. Instantiate and assess.
    in_parallel(&mut parts, |p| {
        let session = p.plugin.session(sandbox, request.seed);
        if let Some(s) = p.note(session) {
            p.session = Some(s);
        }
        if let Some(s) = p.session.as_mut() {
            let score = s.assess(request);
            p.member.assess = p.note(score);
        }
    });

    // 2. The most willing answer.
    let mut willing: Vec<usize> = (0..parts.len())
        .filter(|&i| {
            parts[i]
                .member
                .assess
                .is_some_and(|s| s >= config.threshold)
        })
        .collect();
    willing.sort_by(|&a, &b| {
        let (sa, sb) = (
            parts[a].member.assess.unwrap_or(0.0),
            parts[b].member.assess.unwrap_or(0.0),
        );
        sb.total_cmp(&sa).then(a.cmp(&b))
    });
    for (rank, &i) in willing.iter().enumerate() {
        parts[i].selected = rank < config.max_answerers;
    }
    for p in parts.iter_mut() {
        if let (Some(score), false) = (p.member.assess, p.selected) {
            p.member.error = Some(if score >= config.threshold {
                format!(
                    "not selected: {} more willing plugins answered",
                    config.max_answerers
                )
            } else {
                format!(
                    "declined: assess {score:.2} below threshold {:.2}",
                    config.threshold
                )
            });
        }
    }
    in_parallel(&mut parts, |p| {
        if !p.selected || p.session.is_none() {
            return;
        }
        let t = Instant::now();
        let out = p
            .session
            .as_mut()
            .map(|s| s.answer(request))
            .unwrap_or(Err(CallError::Poisoned));
        p.member.answer_ms = Some(t.elapsed().as_millis() as u64);
        if let Some(a) = p.note(out) {
            p.member.answer = Some(a.text);
            p.member.confidence = Some(a.confidence.clamp(0.0, 1.0));
            p.member.choice = a.choice;
        }
    });

    let mut answers: Vec<AnswerEntry> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.member.answer.as_ref().map(|t| AnswerEntry {
                member: i,
                plugin: p.member.plugin.clone(),
                text: t.clone(),
                score: 0.0,
                disqualified: false,
            })
        })
        .collect();

    // 3. Judge: every live instance, every pair it did not write, both orders.
    let authors: Vec<usize> = answers.iter().map(|a| a.member).collect();
    let judges: Vec<usize> = (0..parts.len())
        .filter(|&i| parts[i].session.is_some())
        .collect();
    let assignments = if answers.len() >= 2 {
        consensus::all_pairs_both_orders(&authors, &judges)
    } else {
        Vec::new()
    };
    let mut verdicts: Vec<VerdictRecord> = Vec::new();
    {
        let texts: Vec<&str> = answers.iter().map(|a| a.text.as_str()).collect();
        let prompt = request.prompt.as_str();
        let mut per_judge: Vec<Vec<VerdictRecord>> = Vec::new();
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (i, p) in parts.iter_mut().enumerate() {
                let mine: Vec<_> = assignments
                    .iter()
                    .filter(|a| a.judge == i)
                    .copied()
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let texts = &texts;
                handles.push(s.spawn(move || {
                    let mut out = Vec::new();
                    let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        judge_pairs(p, i, &mine, prompt, texts, &mut out)
                    }));
                    if let Err(panic) = judged {
                        p.caught(panic);
                    }
                    out
                }));
            }
            for h in handles {
                per_judge.push(h.join().unwrap_or_default());
            }
        });
        verdicts.extend(per_judge.into_iter().flatten());
    }

    // 4. Aggregate. A plugin that faulted anywhere in the round forfeits its answer and
    // its verdicts; the fit runs over the remaining answers only.
    for a in answers.iter_mut() {
        a.disqualified = parts[a.member].member.fault;
    }
    let initial = crate::consensus::scoring::ReputationParams::default().initial;
    let claims: Vec<Claim<'_>> = answers
        .iter()
        .map(|a| {
            let m = &parts[a.member].member;
            Claim {
                reputation: config.reputation.get(&m.plugin).copied().unwrap_or(initial),
                assess: m.assess.unwrap_or(0.0),
                text: &a.text,
            }
        })
        .collect();
    // The fit sees the live answers in fallback order, so what the verdicts leave tied
    // goes to earned reputation, then assess, then the seed (never the folder order).
    let live: Vec<usize> = consensus::fallback_order(&claims, request.seed)
        .into_iter()
        .filter(|&i| !answers[i].disqualified)
        .collect();
    let index_of = |a: usize| live.iter().position(|&x| x == a);
    let votes: Vec<Vote> = verdicts
        .iter()
        .filter(|v| !parts[v.judge_member].member.fault)
        .filter_map(|v| {
            Some(Vote {
                judge: v.judge_member,
                first: index_of(v.first)?,
                second: index_of(v.second)?,
                outcome: v.outcome?,
            })
        })
        .collect();
    let weights: Vec<f64> = parts
        .iter()
        .map(|p| config.weights.get(&p.member.plugin).copied().unwrap_or(1.0))
        .collect();
    let fit = consensus::aggregate(live.len(), &votes, &weights, config.clip, config.fit);
    for (a, score) in live.iter().zip(&fit.scores) {
        answers[*a].score = *score;
    }
    let single_answer = live.len() == 1;
    let live_texts: Vec<&str> = live.iter().map(|&i| answers[i].text.as_str()).collect();
    let undecided = live.len() >= 2 && !consensus::decided(&fit.scores, &live_texts);
    let winner = fit.winner.map(|w| live[w]);
    let margin = match live.len() {
        0 => 0.0,
        1 => 1.0,
        _ => fit.margin,
    };
    let q = config.quarantine_after;
    for p in &parts {
        p.plugin.record_round(p.member.fault, q);
    }
    Ok(RoundReport {
        prompt: request.prompt.clone(),
        seed: request.seed,
        members: parts.into_iter().map(|p| p.member).collect(),
        answers,
        verdicts,
        winner,
        margin,
        single_answer,
        undecided,
        order: live,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Judge `mine` (pairs assigned to participant `i`), appending a record per pair.
fn judge_pairs(
    p: &mut Participant,
    i: usize,
    mine: &[consensus::Assignment],
    prompt: &str,
    texts: &[&str],
    out: &mut Vec<VerdictRecord>,
) {
    for a in mine {
        let result = match p.session.as_mut() {
            Some(sess) => sess.compare(prompt, texts[a.first], texts[a.second]),
            None => Err(CallError::Poisoned),
        };
        let outcome = p.note(result).map(|v| match v {
            Verdict::First => Outcome::First,
            Verdict::Second => Outcome::Second,
            Verdict::Tie => Outcome::Tie,
        });
        let error = if outcome.is_none() {
            p.member.error.clone()
        } else {
            None
        };
        out.push(VerdictRecord {
            judge: p.member.plugin.clone(),
            judge_member: i,
            first: a.first,
            second: a.second,
            outcome,
            error,
        });
    }
}

/// A request with the defaults a plain question gets.
pub fn request(prompt: &str, seed: u64) -> Request {
    Request {
        prompt: prompt.to_string(),
        domain: None,
        choices: Vec::new(),
        max_tokens: 256,
        temperature: 0.0,
        seed,
    }
}
