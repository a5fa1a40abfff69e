//! The in-process driver: one folder's plugins as the members of a round.
//!
//! Used by `apiary ask --plugins` and `apiary eval`. It moves the engine's actions to
//! the plugins and their results back as events, nothing else: selection, pairs, the fit
//! and the transcript are the engine's, exactly as in the swarm. Each plugin gets a fresh
//! instance; calls of one phase run in parallel, one thread per plugin, each bounded by
//! its sandbox budget, so the engine's own deadlines (a day) never fire here.
//!
//! A plugin that faults is dropped from the rest of the round, and the fault counts
//! towards its quarantine: before its answer is anonymised it simply has none; after,
//! its answer and verdicts are struck from the transcript.

use super::engine::{Action, Deadlines, Decision, Offer, Round, Spec};
use super::judging::JudgeTask;
use super::settings::Settings;
use crate::consensus::{Outcome, Standing};
use crate::ledger::fold::DecidedBy;
use crate::ledger::transcript::{Transcript, VerdictMsg};
use crate::ledger::{NodeKey, Signed, local as ledger_local};
use crate::plugins::Plugin;
use crate::sandbox::{CallError, Request, Sandbox, Session, WitAnswer};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct RoundConfig {
    /// Minimum `assess` score to answer.
    pub threshold: f32,
    /// At most this many answerers (highest reputation × assess first).
    pub max_answerers: usize,
    pub quarantine_after: u32,
    /// Everything else about the round ([`Settings::local`] by default); `threshold`
    /// and `max_answerers` above take the place of its own.
    pub settings: Settings,
    /// Standing before the round per plugin name (from the ledger); absent means new.
    pub standings: BTreeMap<String, Standing>,
    /// The node that signs the round (its ledger identity); a fresh key if absent.
    pub node: Option<Arc<NodeKey>>,
    /// The round's id; a fresh one if absent.
    pub id: Option<String>,
    /// A known-answer round: the right option (see `round::Spec::known`).
    pub known: Option<u32>,
}

impl Default for RoundConfig {
    fn default() -> Self {
        RoundConfig {
            threshold: 0.5,
            max_answerers: 16,
            quarantine_after: crate::plugins::DEFAULT_QUARANTINE_AFTER,
            settings: Settings::local(),
            standings: Default::default(),
            node: None,
            id: None,
            known: None,
        }
    }
}

impl RoundConfig {
    fn effective(&self) -> Settings {
        Settings {
            threshold: self.threshold,
            max_members: self.max_answerers,
            ..self.settings.clone()
        }
    }

    fn standing(&self, plugin: &str) -> Standing {
        self.standings
            .get(plugin)
            .copied()
            .unwrap_or_else(|| Standing::new(&self.settings.params.reputation))
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
    /// Tokens it generated for its answer.
    pub tokens: u32,
    /// Why the plugin did not answer or judge, if it did not.
    pub error: Option<String>,
    /// Whether the error was a fault (counts towards quarantine).
    pub fault: bool,
    pub answer_ms: Option<u64>,
}

impl Member {
    fn new(plugin: &str) -> Member {
        Member {
            plugin: plugin.to_string(),
            assess: None,
            answer: None,
            confidence: None,
            choice: None,
            tokens: 0,
            error: None,
            fault: false,
            answer_ms: None,
        }
    }
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
    /// Its candidate: answers that say the same thing share one (`None` if struck).
    pub candidate: Option<usize>,
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
    /// Two or more candidates and neither verdicts nor pooled option scores separated the
    /// best: support (reputation-weighted) or the fallback order decided.
    pub undecided: bool,
    /// What decided the winner (`ledger::fold`); `None` when no answer was given.
    pub decided_by: Option<DecidedBy>,
    /// Pooled probability per option (multiple choice with option scores).
    pub pooled: Vec<f64>,
    /// The live answers (indexes into `answers`, which are in the fallback order the
    /// fit used): what the verdicts leave tied goes to the first of them.
    pub order: Vec<usize>,
    pub elapsed_ms: u64,
    /// The sealed record of the round (`None` when no answer was given): what the
    /// ledger keeps and anyone can recompute.
    #[serde(skip)]
    pub transcript: Option<Transcript>,
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
    /// Its member key: `<node>/<plugin>`.
    key: String,
    session: Option<Session>,
    member: Member,
    /// Its answer as given, signed into the transcript once all have answered.
    said: Option<WitAnswer>,
    /// What it said as a judge, for the report.
    verdicts: Vec<VerdictRecord>,
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

    /// A panic while serving this plugin (caught in its thread) is its fault for the
    /// round, like a trap: the round and the process go on without it.
    fn caught(&mut self, panic: Box<dyn std::any::Any + Send>) {
        let message = crate::sandbox::panic_message(&*panic);
        tracing::error!(plugin = %self.member.plugin, "host panic while serving the plugin: {message}");
        self.member.fault = true;
        self.session = None;
        self.member.error = Some(format!("the host failed serving this plugin: {message}"));
    }

    fn why(&self) -> String {
        self.member
            .error
            .clone()
            .unwrap_or_else(|| "no result".to_string())
    }
}

/// Run `f` on the participants `which` in parallel (one thread each: calls are CPU-bound
/// wasm and the budgets bound them). A panic stays inside its participant's thread.
fn in_parallel<T: Sync>(
    parts: &mut [Participant],
    which: &BTreeMap<usize, T>,
    f: impl Fn(&mut Participant, &T) + Sync,
) {
    std::thread::scope(|s| {
        for (i, p) in parts.iter_mut().enumerate() {
            let Some(arg) = which.get(&i) else { continue };
            let f = &f;
            s.spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *p, arg)));
                if let Err(panic) = outcome {
                    p.caught(panic);
                }
            });
        }
    });
}

/// The key of rounds run without a ledger identity: one per process, so a round does not
/// pay for a key pair (what it signs is recorded nowhere).
fn ephemeral_key() -> Arc<NodeKey> {
    static KEY: std::sync::OnceLock<Arc<NodeKey>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| Arc::new(NodeKey::generate())).clone()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    let key = config.node.clone().unwrap_or_else(ephemeral_key);
    let node = key.id();
    let mut parts: Vec<Participant> = plugins
        .iter()
        .map(|p| Participant {
            plugin: p.clone(),
            key: ledger_local::member_key(&node, &p.name),
            session: None,
            member: Member::new(&p.name),
            said: None,
            verdicts: Vec::new(),
        })
        .collect();
    let keys: BTreeSet<String> = parts.iter().map(|p| p.key.clone()).collect();
    let settings = config.effective();
    let now = now_ms();
    let spec = Spec {
        id: config
            .id
            .clone()
            .unwrap_or_else(|| ledger_local::round_id(&node, &request.prompt)),
        request: request.clone(),
        deadlines: Deadlines::after(now, &settings),
        settings,
        expected: keys.clone(),
        local: keys,
        known: config.known,
    };
    let mut round = Round::new(spec, key.clone(), now);
    assess(sandbox, &mut parts, &mut round, request, config, &node);
    let outcome = drive(&mut parts, &mut round, &key, request);
    for p in &parts {
        p.plugin
            .record_round(p.member.fault, config.quarantine_after);
    }
    Ok(report(parts, request, outcome, started))
}

/// Instantiate and assess every plugin; each result is a join (or a failure to join).
fn assess(
    sandbox: &Sandbox,
    parts: &mut [Participant],
    round: &mut Round,
    request: &Request,
    config: &RoundConfig,
    node: &str,
) {
    let all: BTreeMap<usize, ()> = (0..parts.len()).map(|i| (i, ())).collect();
    in_parallel(parts, &all, |p, _| {
        let session = p.plugin.session(sandbox, request.seed);
        if let Some(s) = p.note(session) {
            p.session = Some(s);
        }
        if let Some(s) = p.session.as_mut() {
            let score = s.assess(request);
            p.member.assess = p.note(score);
        }
    });
    let now = now_ms();
    for p in parts.iter_mut() {
        let event = match p.member.assess {
            Some(score) => round.handle_join(
                now,
                Offer {
                    key: p.key.clone(),
                    signer: node.to_string(),
                    plugin: p.member.plugin.clone(),
                    score,
                    willing: score >= config.threshold,
                    standing: config.standing(&p.member.plugin),
                },
            ),
            None => round.handle_failed(now, &p.key, p.why(), p.member.fault),
        };
        if let Err(e) = event {
            p.member.error.get_or_insert(e.to_string());
        }
    }
}

/// Carry out the engine's actions until it decides; `Err` when it failed.
fn drive(
    parts: &mut [Participant],
    round: &mut Round,
    key: &NodeKey,
    request: &Request,
) -> Result<Decision, String> {
    loop {
        let mut answers: BTreeMap<usize, usize> = BTreeMap::new();
        let mut judges: BTreeMap<usize, JudgeTask> = BTreeMap::new();
        while let Some(action) = round.poll() {
            match action {
                Action::Progress(_) => {}
                Action::Answer { member, key } => {
                    answers.insert(part_of(parts, &key), member);
                }
                Action::Judge { key, task, .. } => {
                    judges.insert(part_of(parts, &key), task);
                }
                Action::Decided(d) => return Ok(*d),
                Action::Failed(f) => {
                    note_unselected(parts, &answers, round.spec().settings.threshold);
                    return Err(f.to_string());
                }
            }
        }
        if !answers.is_empty() {
            note_unselected(parts, &answers, round.spec().settings.threshold);
            answer_all(parts, round, key, request, &answers);
        } else if !judges.is_empty() {
            judge_all(parts, round, key, &judges);
        } else {
            // The engine waits for nothing in-process: every call returned.
            round.handle_timeout(u64::MAX);
        }
    }
}

fn part_of(parts: &[Participant], key: &str) -> usize {
    parts
        .iter()
        .position(|p| p.key == key)
        .expect("the engine names only members it was given")
}

fn note_unselected(parts: &mut [Participant], asked: &BTreeMap<usize, usize>, threshold: f32) {
    let selected = asked.len();
    for (i, p) in parts.iter_mut().enumerate() {
        if let (Some(score), false) = (p.member.assess, asked.contains_key(&i)) {
            p.member.error.get_or_insert_with(|| {
                if score >= threshold {
                    format!("not selected: {selected} more willing plugins answered")
                } else {
                    format!("declined: assess {score:.2} below threshold {threshold:.2}")
                }
            });
        }
    }
}

fn answer_all(
    parts: &mut [Participant],
    round: &mut Round,
    key: &NodeKey,
    request: &Request,
    asked: &BTreeMap<usize, usize>,
) {
    in_parallel(parts, asked, |p, _| {
        let t = Instant::now();
        let out = match p.session.as_mut() {
            Some(s) => s.answer(request),
            None => Err(CallError::Poisoned),
        };
        p.member.answer_ms = Some(t.elapsed().as_millis() as u64);
        if let Some(a) = p.note(out) {
            p.member.answer = Some(a.text.clone());
            p.member.confidence = Some(a.confidence.clamp(0.0, 1.0));
            p.member.choice = a.choice;
            p.member.tokens = a.tokens;
            p.said = Some(a);
        }
    });
    let now = now_ms();
    for (&i, &member) in asked {
        let p = &mut parts[i];
        let event = match &p.said {
            Some(a) => {
                let signed = key.sign(super::answer_msg(round.id(), member, a));
                round.handle_answer(now, &p.key, signed)
            }
            None => round.handle_failed(now, &p.key, p.why(), p.member.fault),
        };
        if let Err(e) = event {
            tracing::warn!(plugin = %p.member.plugin, "answer refused: {e}");
        }
    }
}

fn judge_all(
    parts: &mut [Participant],
    round: &mut Round,
    key: &NodeKey,
    tasks: &BTreeMap<usize, JudgeTask>,
) {
    let mut records: Vec<Vec<VerdictRecord>> = (0..parts.len()).map(|_| Vec::new()).collect();
    let mut signed: Vec<Vec<Signed<VerdictMsg>>> = (0..parts.len()).map(|_| Vec::new()).collect();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for ((i, p), (recs, sig)) in parts
            .iter_mut()
            .enumerate()
            .zip(records.iter_mut().zip(signed.iter_mut()))
        {
            let Some(task) = tasks.get(&i) else { continue };
            handles.push(s.spawn(move || {
                let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    judge_task(p, i, task, key, recs, sig)
                }));
                if let Err(panic) = judged {
                    p.caught(panic);
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
    });
    let now = now_ms();
    for (i, (recs, sig)) in records.into_iter().zip(signed).enumerate() {
        if !tasks.contains_key(&i) {
            continue;
        }
        let p = &mut parts[i];
        p.verdicts.extend(recs);
        let event = if p.member.fault {
            round.handle_failed(now, &p.key, p.why(), true)
        } else {
            round.handle_verdicts(now, &p.key, sig).map(|_| ())
        };
        if let Err(e) = event {
            tracing::warn!(plugin = %p.member.plugin, "verdicts refused: {e}");
        }
    }
}

/// Judge every item of `task`, keeping a record per item and a signed verdict per
/// decided one.
fn judge_task(
    p: &mut Participant,
    i: usize,
    task: &JudgeTask,
    key: &NodeKey,
    records: &mut Vec<VerdictRecord>,
    signed: &mut Vec<Signed<VerdictMsg>>,
) {
    for item in &task.items {
        let req = request(&item.prompt, task_seed(task));
        let result = match p.session.as_mut() {
            Some(sess) => sess.judge(&req, &item.first_text, &item.second_text),
            None => Err(CallError::Poisoned),
        };
        let outcome = p.note(result).map(super::outcome_of);
        records.push(VerdictRecord {
            judge: p.member.plugin.clone(),
            judge_member: i,
            first: item.first,
            second: item.second,
            outcome,
            error: outcome.is_none().then(|| p.why()),
        });
        if let Some(outcome) = outcome {
            signed.push(key.sign(VerdictMsg {
                round: task.round.clone(),
                judge: task.judge,
                first: item.first,
                second: item.second,
                outcome,
            }));
        }
    }
}

/// The report of a finished round: the plugins' parts, and the engine's decision laid
/// over them.
fn report(
    mut parts: Vec<Participant>,
    request: &Request,
    outcome: Result<Decision, String>,
    started: Instant,
) -> RoundReport {
    let mut verdicts: Vec<VerdictRecord> = parts
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.verdicts))
        .collect();
    let mut r = RoundReport {
        prompt: request.prompt.clone(),
        seed: request.seed,
        members: Vec::new(),
        answers: Vec::new(),
        verdicts: Vec::new(),
        winner: None,
        margin: 0.0,
        single_answer: false,
        undecided: false,
        decided_by: None,
        pooled: Vec::new(),
        order: Vec::new(),
        elapsed_ms: 0,
        transcript: None,
    };
    if let Ok(d) = outcome {
        let t = &d.transcript;
        let result = &t.result.payload;
        let part = |m: usize| part_of(&parts, &t.members[m].key);
        r.answers = t
            .answers
            .iter()
            .enumerate()
            .map(|(a, msg)| {
                let i = part(msg.payload.member);
                AnswerEntry {
                    member: i,
                    plugin: parts[i].member.plugin.clone(),
                    text: msg.payload.text.clone(),
                    score: result.scores[a],
                    candidate: result.candidates.get(a).copied().flatten(),
                    disqualified: t.struck.contains(&msg.payload.member),
                }
            })
            .collect();
        r.order = (0..r.answers.len())
            .filter(|&a| !r.answers[a].disqualified)
            .collect();
        // Verdicts of struck judges did not count: the report says so by leaving them out.
        verdicts.retain(|v| !parts[v.judge_member].member.fault);
        r.winner = Some(d.winner);
        r.margin = d.margin;
        r.single_answer = d.single_answer;
        r.undecided = d.undecided;
        r.decided_by = Some(d.decided_by);
        r.pooled = result.pooled.clone();
        r.transcript = Some(d.transcript);
    }
    r.verdicts = verdicts;
    r.members = parts.into_iter().map(|p| p.member).collect();
    r.elapsed_ms = started.elapsed().as_millis() as u64;
    r
}

/// A request with the defaults a plain question gets: the prompt as the conversation's
/// one user message.
pub fn request(prompt: &str, seed: u64) -> Request {
    Request {
        prompt: prompt.to_string(),
        domain: None,
        choices: Vec::new(),
        max_tokens: 256,
        temperature: 0.0,
        seed,
        messages: vec![crate::sandbox::Message {
            role: "user".into(),
            content: prompt.to_string(),
        }],
    }
}

/// The seed a judge's requests get: from the round, so a judgment replays; the same for
/// real pairs and calibration items, so it tells them apart no better than the prompt.
pub fn task_seed(task: &JudgeTask) -> u64 {
    crate::consensus::fallback::seeded_draw(task.judge as u64, &task.round)
}
