//! The round protocol as a deterministic state machine.
//!
//! In the style of `quinn-proto`'s `Connection`: no sockets, threads or clocks inside.
//! A driver feeds events in (`handle_*`, each with the time now, in unix milliseconds)
//! and carries the work out ([`Round::poll`]), waking the engine at
//! [`Round::poll_timeout`]. The in-process driver (`round::local`) and the libp2p node
//! (`swarm::node`) run this same code, so `apiary eval` measures the protocol users run,
//! and a test can replay any round from a script of events.
//!
//! A round goes through four phases:
//! 1. **Joining**: members offer their `assess` score until every expected member has
//!    spoken or the join deadline passes (the entry node's own plugins are waited for:
//!    they are in this process, not late on a network);
//! 2. **Answering**: the most willing by reputation × assess, capped, are asked for
//!    their answers, which are checked (signature, signer, round, member index);
//! 3. **Judging**: the answers, anonymised in the seeded fallback order, go out as pairs
//!    (with hidden calibration items if the settings say so) to the answerers, and to
//!    judge-only members while too few answered;
//! 4. **Decided**: the transcript is sealed: the fit, the rewards and the standings
//!    after follow from its messages alone, by `ledger::transcript::recompute_struck`.
//!
//! An event that does not fit (late, duplicate, out of phase, from no member, badly
//! signed) is refused with a [`Refused`] reason and changes nothing.

use super::judging::{self, Filed, Given, JudgeTask};
use super::settings::Settings;
use crate::consensus::{self, Standing};
use crate::ledger::fold::DecidedBy;
use crate::ledger::transcript::{
    AnswerMsg, CalibrationCheck, Member, Transcript, Unsealed, VerdictMsg, speaks_for,
};
use crate::ledger::{NodeKey, Signed};
use crate::sandbox::Request;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// When each phase ends (unix ms). In order: `join_by <= answer_by <= judge_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub join_by: u64,
    pub answer_by: u64,
    pub judge_by: u64,
}

impl Deadlines {
    /// The phases of `settings`, starting `now`.
    pub fn after(now: u64, settings: &Settings) -> Deadlines {
        let join_by = now.saturating_add(settings.join_ms);
        let answer_by = join_by.saturating_add(settings.answer_ms);
        Deadlines {
            join_by,
            answer_by,
            judge_by: answer_by.saturating_add(settings.judge_ms),
        }
    }
}

/// What a round is about and how it runs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub request: Request,
    pub deadlines: Deadlines,
    pub settings: Settings,
    /// Members the join phase waits for; it ends early once all of them have spoken.
    pub expected: BTreeSet<String>,
    /// Members in the entry node's own process: the join phase waits for them even past
    /// its deadline (their assess is not late on a network, just slow to start).
    pub local: BTreeSet<String>,
    /// A known-answer round: the right option, which the members are never told and the
    /// transcript records, so the round measures them (`consensus::known`).
    pub known: Option<u32>,
}

/// A member's offer to take part (its join).
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// Its ledger key: a node id in the swarm, `<node id>/<plugin>` for a local plugin.
    pub key: String,
    /// The node whose signatures speak for it.
    pub signer: String,
    /// Which plugin would answer and judge for it.
    pub plugin: String,
    pub score: f32,
    /// Its score reached the threshold: it offers to answer, not only to judge.
    pub willing: bool,
    /// Its standing before the round, from the driver's ledger.
    pub standing: Standing,
}

/// Round progress, for streaming clients.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Forming,
    Answering { members: usize },
    Ranking { answers: usize, judges: usize },
}

/// Work for the driver.
#[derive(Debug)]
pub enum Action {
    Progress(Progress),
    /// Ask member `member` (keyed `key`) for its signed answer.
    Answer {
        member: usize,
        key: String,
    },
    /// Give member `member` (keyed `key`) these pairs to judge.
    Judge {
        member: usize,
        key: String,
        task: JudgeTask,
    },
    Decided(Box<Decision>),
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    #[error(
        "no node volunteered to answer (no plugin assessed the question at or above the threshold)"
    )]
    NoVolunteers,
    #[error("members volunteered but none answered in time ({0})")]
    NoAnswers(String),
}

/// Why an event was not taken. The round is unchanged by it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("late: the {0} deadline has passed")]
    Late(&'static str),
    #[error("out of phase: the round is {now}, not {wanted}")]
    OutOfPhase {
        now: &'static str,
        wanted: &'static str,
    },
    #[error("{0} is not a member of this round")]
    Unknown(String),
    #[error("{0} has already {1}")]
    Duplicate(String, &'static str),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("the round is over")]
    Over,
}

/// One member's part, for explanations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberReport {
    /// Its ledger key.
    #[serde(skip)]
    pub key: String,
    /// The node that spoke for it.
    pub node: String,
    pub plugin: String,
    pub score: f32,
    pub answered: bool,
    pub judged: usize,
    /// Why it is missing from a phase, or "judge only".
    pub note: Option<String>,
}

/// The outcome of a decided round.
#[derive(Debug, Clone)]
pub struct Decision {
    pub transcript: Transcript,
    /// Per transcript member, same order.
    pub members: Vec<MemberReport>,
    /// Index into the transcript's answers.
    pub winner: usize,
    /// Modelled probability that the winner beats the runner-up (1 for a single answer).
    pub margin: f64,
    /// Only one candidate: one answer counted, or every answer said the same.
    pub single_answer: bool,
    /// Two or more candidates and neither the verdicts nor pooled option scores
    /// separated the best: support (a reputation-weighted majority) or the anonymisation
    /// order (`consensus::fallback`: earned reputation, then assess, then the seed) did.
    pub undecided: bool,
    /// What decided the winner (see `ledger::fold`).
    pub decided_by: DecidedBy,
    /// Verdicts refused, with the judge's key and why (for logs).
    pub rejected: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Joining,
    Answering,
    Judging,
    Done,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Joining => "joining",
            Phase::Answering => "answering",
            Phase::Judging => "judging",
            Phase::Done => "done",
        }
    }
}

/// A member after selection.
struct Seat {
    offer: Offer,
    /// Chosen to answer (else judge only).
    answerer: bool,
    /// Asked for its answer and not yet heard from.
    awaiting_answer: bool,
    answer: Option<Signed<AnswerMsg>>,
    given: Option<Given>,
    delivered: bool,
    judged: usize,
    /// A fault (trap, crash) after its answer was anonymised: answer and verdicts struck.
    struck: bool,
    /// Failed or faulted: asked nothing more.
    gone: bool,
    note: Option<String>,
}

pub struct Round {
    spec: Spec,
    entry: Arc<NodeKey>,
    entry_id: String,
    phase: Phase,
    /// Joins in arrival order; `heard` also counts members that failed before joining.
    offers: Vec<Offer>,
    heard: BTreeSet<String>,
    /// Expected members not heard yet (the join phase ends early at 0).
    unheard: usize,
    seats: Vec<Seat>,
    /// Joined but not selected, the most reputable first: judge-only members if needed.
    spare: Vec<Offer>,
    answers: Vec<Signed<AnswerMsg>>,
    verdicts: Vec<Signed<VerdictMsg>>,
    checks: Vec<CalibrationCheck>,
    rejected: Vec<(String, String)>,
    actions: VecDeque<Action>,
}

impl Round {
    pub fn new(spec: Spec, entry: Arc<NodeKey>, now: u64) -> Round {
        let mut round = Round {
            unheard: spec.expected.len(),
            spec,
            entry_id: entry.id(),
            entry,
            phase: Phase::Joining,
            offers: Vec::new(),
            heard: BTreeSet::new(),
            seats: Vec::new(),
            spare: Vec::new(),
            answers: Vec::new(),
            verdicts: Vec::new(),
            checks: Vec::new(),
            rejected: Vec::new(),
            actions: VecDeque::from([Action::Progress(Progress::Forming)]),
        };
        round.close_joins_if_heard(now);
        round
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The seated members, in seat order: key and the plugin it offered. For watchers
    /// (the dashboard); the engine's decisions never read this.
    pub fn seated(&self) -> Vec<(String, String)> {
        self.seats
            .iter()
            .map(|s| (s.offer.key.clone(), s.offer.plugin.clone()))
            .collect()
    }

    /// The answers gathered so far, as signed.
    pub fn answers(&self) -> &[Signed<AnswerMsg>] {
        &self.answers
    }

    /// The next piece of work, if any.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Round::handle_timeout`] next: the current phase's deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        let d = &self.spec.deadlines;
        match self.phase {
            Phase::Joining if self.waiting_for_local() => None,
            Phase::Joining => Some(d.join_by),
            Phase::Answering => Some(d.answer_by),
            Phase::Judging => Some(d.judge_by),
            Phase::Done => None,
        }
    }

    /// Time passed: end every phase whose deadline is `now` or earlier (a driver that
    /// wakes late may find several gone).
    pub fn handle_timeout(&mut self, now: u64) {
        loop {
            let before = self.phase;
            self.expire(now);
            if self.phase == before || self.phase == Phase::Done {
                return;
            }
        }
    }

    fn expire(&mut self, now: u64) {
        let d = self.spec.deadlines;
        match self.phase {
            Phase::Joining if now >= d.join_by && !self.waiting_for_local() => {
                self.close_joins(now)
            }
            Phase::Answering if now >= d.answer_by => {
                for s in self.seats.iter_mut().filter(|s| s.awaiting_answer) {
                    s.awaiting_answer = false;
                    s.note
                        .get_or_insert_with(|| "late: no answer by the deadline".into());
                }
                self.close_answers(now);
            }
            Phase::Judging if now >= d.judge_by => {
                for s in self.seats.iter_mut() {
                    if s.given.is_some() && !s.delivered {
                        s.delivered = true;
                        s.note
                            .get_or_insert_with(|| "late: no verdicts by the deadline".into());
                    }
                }
                self.decide();
            }
            _ => {}
        }
    }

    /// A member's join.
    pub fn handle_join(&mut self, now: u64, offer: Offer) -> Result<(), Refused> {
        self.expect(Phase::Joining)?;
        let local = self.spec.local.contains(&offer.key);
        if now > self.spec.deadlines.join_by && !local {
            return Err(Refused::Late("join"));
        }
        if self.heard.contains(&offer.key) {
            return Err(Refused::Duplicate(offer.key, "joined"));
        }
        let problem = if !speaks_for(&offer.key, &offer.signer) {
            Some(format!("{} cannot speak for {}", offer.signer, offer.key))
        } else if !offer.score.is_finite() {
            Some(format!("assess score {} is not a number", offer.score))
        } else if offer.plugin.is_empty() {
            Some("no plugin named".to_string())
        } else {
            None
        };
        // Heard either way: the phase need not wait for a member that spoke nonsense.
        self.hear(&offer.key);
        let outcome = match problem {
            Some(p) => Err(Refused::Invalid(p)),
            None => {
                self.offers.push(offer);
                Ok(())
            }
        };
        self.close_joins_if_heard(now);
        outcome
    }

    /// A selected member's signed answer.
    pub fn handle_answer(
        &mut self,
        now: u64,
        key: &str,
        answer: Signed<AnswerMsg>,
    ) -> Result<(), Refused> {
        self.expect(Phase::Answering)?;
        if now > self.spec.deadlines.answer_by {
            return Err(Refused::Late("answer"));
        }
        let i = self.seat_of(key)?;
        let seat = &self.seats[i];
        if seat.answer.is_some() {
            return Err(Refused::Duplicate(key.to_string(), "answered"));
        }
        if !seat.awaiting_answer {
            return Err(Refused::Invalid(format!("{key} was not asked to answer")));
        }
        self.check_signature(&answer)?;
        let p = &answer.payload;
        if !speaks_for(key, &answer.signer) || p.round != self.spec.id || p.member != i {
            return Err(Refused::Invalid(
                "answer signed for another node, round or member".into(),
            ));
        }
        let seat = &mut self.seats[i];
        seat.answer = Some(answer);
        seat.awaiting_answer = false;
        self.close_answers_if_heard(now);
        Ok(())
    }

    /// A judge's signed verdicts. Returns how many counted; the reasons the others did
    /// not are kept for the decision's `rejected`.
    pub fn handle_verdicts(
        &mut self,
        now: u64,
        key: &str,
        verdicts: Vec<Signed<VerdictMsg>>,
    ) -> Result<usize, Refused> {
        self.expect(Phase::Judging)?;
        if now > self.spec.deadlines.judge_by {
            return Err(Refused::Late("judge"));
        }
        let i = self.seat_of(key)?;
        let seat = &self.seats[i];
        let Some(given) = seat.given.as_ref() else {
            return Err(Refused::Invalid(format!("{key} was not asked to judge")));
        };
        if seat.delivered {
            return Err(Refused::Duplicate(key.to_string(), "returned its verdicts"));
        }
        let (filed, rejected) = given.file(key, &self.entry_id, verdicts);
        let mut counted = 0;
        for f in filed {
            match f {
                Filed::Real(v) => {
                    counted += 1;
                    self.verdicts.push(v);
                }
                Filed::Check(c) => self.checks.push(c),
            }
        }
        self.rejected
            .extend(rejected.into_iter().map(|r| (key.to_string(), r)));
        let seat = &mut self.seats[i];
        seat.judged += counted;
        seat.delivered = true;
        self.decide_if_heard();
        Ok(counted)
    }

    /// A member failed: it did not join, answer or judge (`why`). A `fault` (it
    /// trapped, or its plugin crashed) also strikes its answer and verdicts from the
    /// round, if it gave any.
    pub fn handle_failed(
        &mut self,
        now: u64,
        key: &str,
        why: String,
        fault: bool,
    ) -> Result<(), Refused> {
        match self.phase {
            Phase::Done => return Err(Refused::Over),
            Phase::Joining => {
                if !self.hear(key) {
                    return Err(Refused::Duplicate(key.to_string(), "joined"));
                }
                self.close_joins_if_heard(now);
                return Ok(());
            }
            Phase::Answering | Phase::Judging => {}
        }
        let i = self.seat_of(key)?;
        let seat = &mut self.seats[i];
        seat.note.get_or_insert(why);
        seat.awaiting_answer = false;
        if fault {
            seat.gone = true;
            // Once answers are anonymised, its answer and any verdicts it gave are
            // struck; before, it simply has none.
            seat.struck = self.phase == Phase::Judging;
        }
        if seat.given.is_some() {
            seat.delivered = true;
        }
        match self.phase {
            Phase::Answering => {
                if fault {
                    seat.answer = None;
                }
                self.close_answers_if_heard(now);
            }
            _ => self.decide_if_heard(),
        }
        Ok(())
    }

    /// A message signed with the entry node's own key was signed in this process (its
    /// own plugins' answers and verdicts): checking it again proves nothing, and a peer
    /// cannot use the entry's id for its own seat (`speaks_for` refuses that). Anyone
    /// reading the transcript still checks every signature.
    fn check_signature<T: Serialize>(&self, m: &Signed<T>) -> Result<(), Refused> {
        if m.signer == self.entry_id {
            return Ok(());
        }
        m.verify().map_err(Refused::Invalid)
    }

    fn expect(&self, wanted: Phase) -> Result<(), Refused> {
        match self.phase {
            p if p == wanted => Ok(()),
            Phase::Done => Err(Refused::Over),
            p if p > wanted => Err(Refused::Late(wanted.name())),
            p => Err(Refused::OutOfPhase {
                now: p.name(),
                wanted: wanted.name(),
            }),
        }
    }

    fn seat_of(&self, key: &str) -> Result<usize, Refused> {
        self.seats
            .iter()
            .position(|s| s.offer.key == key)
            .ok_or_else(|| Refused::Unknown(key.to_string()))
    }

    /// Note that `key` has spoken; whether it had not before.
    fn hear(&mut self, key: &str) -> bool {
        let new = self.heard.insert(key.to_string());
        if new && self.spec.expected.contains(key) {
            self.unheard -= 1;
        }
        new
    }

    fn waiting_for_local(&self) -> bool {
        self.spec.local.iter().any(|k| !self.heard.contains(k))
    }

    // ------------------------------------------------------------------ transitions

    fn close_joins_if_heard(&mut self, now: u64) {
        if self.phase == Phase::Joining && self.unheard == 0 && !self.waiting_for_local() {
            self.close_joins(now);
        }
        // Past the deadline, only local members were waited for.
        if self.phase == Phase::Joining
            && now >= self.spec.deadlines.join_by
            && !self.waiting_for_local()
        {
            self.close_joins(now);
        }
    }

    /// Select the sub-swarm: the most willing by reputation × assess, capped; the rest
    /// wait as judge-only members, the most reputable first.
    fn close_joins(&mut self, _now: u64) {
        let rank = |o: &Offer| o.standing.reputation.max(0.01) * f64::from(o.score.clamp(0.0, 1.0));
        let (mut willing, mut spare): (Vec<Offer>, Vec<Offer>) = std::mem::take(&mut self.offers)
            .into_iter()
            .partition(|o| o.willing);
        // Ties go to a draw from the round seed and the plugin's name, then its key: fair
        // (no name or key sorts first in every round), and the same for two drivers of
        // the same plugins, so they seat members alike.
        let seed = self.spec.request.seed;
        let draw = |o: &Offer| {
            use consensus::fallback::seeded_draw;
            (seeded_draw(seed, &o.plugin), seeded_draw(seed, &o.key))
        };
        willing.sort_by(|a, b| {
            rank(b)
                .total_cmp(&rank(a))
                .then_with(|| draw(a).cmp(&draw(b)))
                .then_with(|| a.key.cmp(&b.key))
        });
        let cap = self.spec.settings.max_members.max(1);
        if willing.len() > cap {
            spare.extend(willing.split_off(cap));
        }
        spare.sort_by(|a, b| {
            b.standing
                .reputation
                .total_cmp(&a.standing.reputation)
                .then_with(|| draw(a).cmp(&draw(b)))
                .then_with(|| a.key.cmp(&b.key))
        });
        self.spare = spare;
        if willing.is_empty() {
            return self.fail(Failure::NoVolunteers);
        }
        self.phase = Phase::Answering;
        self.actions
            .push_back(Action::Progress(Progress::Answering {
                members: willing.len(),
            }));
        for (i, offer) in willing.into_iter().enumerate() {
            self.actions.push_back(Action::Answer {
                member: i,
                key: offer.key.clone(),
            });
            self.seats.push(Seat::new(offer, true));
        }
    }

    fn close_answers_if_heard(&mut self, now: u64) {
        if self.phase == Phase::Answering && self.seats.iter().all(|s| !s.awaiting_answer) {
            self.close_answers(now);
        }
    }

    /// Anonymise the answers in the fallback order and hand out the pairs.
    fn close_answers(&mut self, _now: u64) {
        let mut got: Vec<Signed<AnswerMsg>> =
            self.seats.iter().filter_map(|s| s.answer.clone()).collect();
        if got.is_empty() {
            let why: Vec<String> = self.seats.iter().filter_map(|s| s.note.clone()).collect();
            return self.fail(Failure::NoAnswers(why.join("; ")));
        }
        let order = {
            let claims: Vec<consensus::Claim<'_>> = got
                .iter()
                .map(|a| {
                    let o = &self.seats[a.payload.member].offer;
                    consensus::Claim {
                        reputation: o.standing.reputation,
                        assess: o.score,
                        text: &a.payload.text,
                    }
                })
                .collect();
            consensus::fallback_order(&claims, self.spec.request.seed)
        };
        let mut slots: Vec<Option<Signed<AnswerMsg>>> = got.drain(..).map(Some).collect();
        self.answers = order.iter().filter_map(|&i| slots[i].take()).collect();
        let n = self.answers.len();
        if n < 2 {
            return self.decide();
        }
        self.seat_judges_only(n);
        let judges: Vec<usize> = (0..self.seats.len())
            .filter(|&i| {
                let s = &self.seats[i];
                !s.gone && (!s.answerer || s.answer.is_some())
            })
            .collect();
        let standings: Vec<Standing> = self.seats.iter().map(|s| s.offer.standing).collect();
        let given = judging::tasks(
            &self.spec.id,
            &self.spec.request,
            &self.answers,
            &judges,
            &standings,
            &self.spec.settings,
        );
        self.phase = Phase::Judging;
        self.actions.push_back(Action::Progress(Progress::Ranking {
            answers: n,
            judges: judges.len(),
        }));
        for g in given {
            let member = g.task.judge;
            self.actions.push_back(Action::Judge {
                member,
                key: self.seats[member].offer.key.clone(),
                task: g.task.clone(),
            });
            self.seats[member].given = Some(g);
        }
        self.decide_if_heard();
    }

    /// Members cannot judge their own answers: with fewer than `min_judges` answerers,
    /// members that joined without answering are asked to judge as well.
    fn seat_judges_only(&mut self, answered: usize) {
        let wanted = self.spec.settings.min_judges.saturating_sub(answered);
        let take = wanted.min(self.spare.len());
        for offer in self.spare.drain(..take) {
            let mut seat = Seat::new(offer, false);
            seat.note = Some("judge only".into());
            self.seats.push(seat);
        }
    }

    fn decide_if_heard(&mut self) {
        let waiting = self.seats.iter().any(|s| s.given.is_some() && !s.delivered);
        if self.phase == Phase::Judging && !waiting {
            self.decide();
        }
    }

    fn fail(&mut self, f: Failure) {
        self.phase = Phase::Done;
        self.actions.push_back(Action::Failed(f));
    }

    /// Seal the transcript; everything reported follows from it.
    fn decide(&mut self) {
        self.phase = Phase::Done;
        let struck: Vec<usize> = (0..self.seats.len())
            .filter(|&i| self.seats[i].struck)
            .collect();
        let live: Vec<usize> = (0..self.answers.len())
            .filter(|&a| !struck.contains(&self.answers[a].payload.member))
            .collect();
        let transcript = Transcript::seal(
            &self.entry,
            Unsealed {
                id: self.spec.id.clone(),
                prompt: self.spec.request.prompt.clone(),
                choices: self.spec.request.choices.clone(),
                domain: super::domain_of(&self.spec.request),
                known: self.spec.known,
                seed: self.spec.request.seed,
                members: self
                    .seats
                    .iter()
                    .map(|s| Member {
                        key: s.offer.key.clone(),
                        before: s.offer.standing,
                    })
                    .collect(),
                params: self.spec.settings.params.clone(),
                answers: std::mem::take(&mut self.answers),
                verdicts: std::mem::take(&mut self.verdicts),
                calibration: std::mem::take(&mut self.checks),
                struck,
            },
        );
        if live.is_empty() {
            let why: Vec<String> = self.seats.iter().filter_map(|s| s.note.clone()).collect();
            return self.fail(Failure::NoAnswers(why.join("; ")));
        }
        let result = &transcript.result.payload;
        let winner = result.winner.unwrap_or(live[0]);
        // Against the best other candidate: copies of the winner are not its rivals.
        let own = result.candidates.get(winner).copied().flatten();
        let rivals: Vec<f64> = live
            .iter()
            .filter(|&&a| own.is_none() || result.candidates.get(a).copied().flatten() != own)
            .filter(|&&a| a != winner)
            .map(|&a| result.scores[a])
            .collect();
        let margin = margin(&rivals, result.scores[winner]);
        let decided_by = result.decided_by.unwrap_or(DecidedBy::Order);
        let decision = Decision {
            members: self.seats.iter().map(Seat::report).collect(),
            winner,
            margin,
            single_answer: decided_by == DecidedBy::Single,
            undecided: matches!(decided_by, DecidedBy::Support | DecidedBy::Order),
            decided_by,
            rejected: std::mem::take(&mut self.rejected),
            transcript,
        };
        self.actions.push_back(Action::Decided(Box::new(decision)));
    }
}

/// P(winner beats the best of its rivals) under the fit; 1 with no rival.
fn margin(rivals: &[f64], winner: f64) -> f64 {
    match rivals.iter().copied().reduce(f64::max) {
        Some(r) => 1.0 / (1.0 + (r - winner).exp()),
        None => 1.0,
    }
}

impl Seat {
    fn new(offer: Offer, answerer: bool) -> Seat {
        Seat {
            offer,
            answerer,
            awaiting_answer: answerer,
            answer: None,
            given: None,
            delivered: false,
            judged: 0,
            struck: false,
            gone: false,
            note: None,
        }
    }

    fn report(&self) -> MemberReport {
        MemberReport {
            key: self.offer.key.clone(),
            node: self.offer.signer.clone(),
            plugin: self.offer.plugin.clone(),
            score: self.offer.score,
            answered: self.answer.is_some() && !self.struck,
            judged: if self.struck { 0 } else { self.judged },
            note: self.note.clone(),
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
