//! A swarm node: the round protocol on top of [`Net`], as entry node and as member.
//!
//! As **entry node** ([`Node::ask`]) it announces a round by gossip, collects `Join`s until
//! every known peer has spoken or the join deadline passes, picks the sub-swarm
//! (reputation × assess score, capped), asks each member for its answer, assigns pairs
//! deterministically from the round seed with calibration items hidden among them,
//! collects verdicts, fits the reputation-weighted clipped Bradley–Terry model, and records
//! the signed transcript. Each phase has a deadline; whoever is late or gone is left out.
//!
//! As **member** it answers the gossip with a `Join` (after its plugins' `assess`), and
//! answers `Select` and `Judge` requests from that round's entry node only, with answers
//! and verdicts signed by its key so the transcript proves who said what.
//!
//! What a peer can make a node hold or do is bounded (SECURITY.md, "The network
//! boundary"): a member takes part in at most [`MAX_MEMBER_ROUNDS`] rounds at once, at
//! most [`MAX_MEMBER_ROUNDS_PER_ENTRY`] of one entry node, each until its deadline
//! (announced at most [`MAX_ROUND_MS`] ahead), answers once and judges once per round,
//! at most [`MAX_JUDGE_ITEMS`] items; an entry node queues at most [`JOIN_QUEUE`] joins
//! per round and reads at most one verdict per item it gave. As entry it paces its own
//! announcements a little below the rate its peers accept ([`Limits::gossip`]).

use super::expertise::{Expertise, Volunteer, Work};
use super::limits::{Full, Limits, Rate, RoundTable, TableStats, TokenBucket};
use super::net::{Inbound, Net, NetConfig};
use super::watch::{self, Watchers};
use super::wire::{self, Ack, AnswerReply, Join, JudgeTask, Msg, RoundRequest};
use super::wire::{Select, VerdictReply, short};
use crate::consensus::scoring::Standing;
use crate::governor::{Governor, State};
use crate::ledger::transcript::{AnswerMsg, Transcript, VerdictMsg};
use crate::ledger::{Ledger, NodeKey, Signed, local};
use crate::round::{Action, Deadlines, Decision, Failure, Offer, Phase, Round, Spec};
use crate::sandbox::{Message, Request};
use libp2p::PeerId;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How rounds this node starts are run: the round engine's settings (the swarm's by
/// default).
pub type RoundSettings = crate::round::Settings;

pub use crate::round::{MemberReport, Progress};

/// How a node behaves on the wire. Everything but `Honest` exists for `apiary sim` and
/// tests: the protocol must survive such members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persona {
    Honest,
    /// Answers and judges only after this many milliseconds.
    Slow(u64),
    /// Joins, then stops its network (a crash mid-round) when asked for its answer.
    Crash,
    /// Also sends the entry node forged, replayed, oversized and malformed messages.
    Forger,
}

/// What a client learns from a round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub id: String,
    pub answer: String,
    /// Node id of the winning answer's author.
    pub author: String,
    pub plugin: String,
    /// Modelled probability that the winner beats the runner-up.
    pub margin: f64,
    /// Only one answer arrived: nothing was compared.
    pub single_answer: bool,
    /// Two or more answers but the fit did not separate the best (nobody could judge, no
    /// judge is calibrated yet, verdicts cancelled): the fallback order decided
    /// (`consensus::fallback`: earned reputation, then assess, then the seed).
    pub undecided: bool,
    pub members: Vec<MemberReport>,
    pub answers: usize,
    pub verdicts: usize,
    /// Tokens the winning answer's author generated for it.
    pub tokens: u32,
    /// What decided the winner (`ledger::fold`).
    pub decided_by: crate::ledger::fold::DecidedBy,
    /// Each answer's candidate (equal answers share one), in the transcript's order.
    pub candidates: Vec<Option<usize>>,
    pub elapsed_ms: u64,
    /// The sealed record of the round, as the ledger keeps it.
    #[serde(skip)]
    pub transcript: Transcript,
}

#[derive(Debug, thiserror::Error)]
pub enum RoundFailure {
    #[error(
        "no node volunteered to answer (no plugin assessed the question at or above the threshold)"
    )]
    NoVolunteers,
    #[error("members volunteered but none answered in time ({0})")]
    NoAnswers(String),
    #[error("the node is shutting down")]
    Stopped,
    #[error("ledger: {0}")]
    Ledger(String),
}

/// Most rounds this node takes part in as a member at once; past it, it declines new
/// ones (with an unwilling join, so their entry nodes need not wait for it).
pub const MAX_MEMBER_ROUNDS: usize = 8;
/// Most of those one entry node may hold: a flooding entry cannot take every slot.
pub const MAX_MEMBER_ROUNDS_PER_ENTRY: usize = 3;
/// A round whose judge deadline is further ahead than this is refused (a member holds a
/// round, and its plugin instance, until then). The default settings take 123 s.
pub const MAX_ROUND_MS: u64 = 15 * 60_000;
/// How long a member keeps a round after its deadline: the answer deadline if it is
/// neither selected nor asked to judge by then (the entry node says nothing to members it
/// leaves out), else the judge deadline.
const LINGER_MS: u64 = 5_000;
/// How often expired member rounds are dropped.
const SWEEP_MS: u64 = 500;
/// Most items in one judge task (the default settings give a new judge 26).
pub const MAX_JUDGE_ITEMS: usize = 128;
/// Most of its other open rounds an entry node lists in an announcement (and a member
/// reads): more rounds at once than this from one entry and a member may let go of one
/// still in progress, which then goes on without it.
pub const MAX_OPEN_LISTED: usize = 256;
/// Most joins queued for one round this node is entry for (one per peer is read).
pub const JOIN_QUEUE: usize = 1_024;

struct MemberRound {
    request_full: Request,
    work: SharedWork,
    /// A round is answered once and judged once, however often its entry asks.
    answered: AtomicBool,
    judged: AtomicBool,
    /// Until when it is kept once the entry node has asked something (unix ms).
    keep_until: u64,
}

struct Inner {
    key: Arc<NodeKey>,
    id: String,
    net: Net,
    expertise: Arc<dyn Expertise>,
    ledger: Mutex<Ledger>,
    settings: RoundSettings,
    persona: Persona,
    /// Rounds this node is entry for, in their join phase: where their `Join`s go.
    /// Only [`Node::ask`] adds to it, paced by `announce`.
    joins: Mutex<HashMap<String, mpsc::Sender<(PeerId, Join)>>>,
    /// Rounds this node is entry for, from announcement to decision (listed in each
    /// announcement, so that members let go of the others).
    open: Mutex<BTreeSet<String>>,
    /// Rounds this node takes part in as a member, by (entry node, round).
    member_rounds: Mutex<RoundTable<Arc<MemberRound>>>,
    /// This node's own announcements: paced to `announce_rate`.
    announce: Mutex<TokenBucket>,
    announce_rate: Rate,
    /// Set by `apiary run`; without one (tests, `sim`) the node is always active.
    governor: std::sync::OnceLock<Governor>,
    /// The owner's duty cycle: no plugin work starts before this instant.
    rest_until: Mutex<Option<Instant>>,
    watchers: Watchers,
    started: Instant,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn peer_of(node_id: &str) -> Option<PeerId> {
    let bytes = hex::decode(node_id).ok()?;
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(&bytes).ok()?;
    Some(libp2p::identity::PublicKey::from(pk).to_peer_id())
}

fn until(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(wire::now_ms()))
}

impl Node {
    /// Start the network and the message loop. Must run inside a tokio runtime.
    pub fn start(
        key: NodeKey,
        ledger: Ledger,
        expertise: Arc<dyn Expertise>,
        net: NetConfig,
        settings: RoundSettings,
        persona: Persona,
    ) -> Result<Node, String> {
        let announce_rate = own_announcements(&net.limits);
        let (net, mut inbound) = Net::start(&key, net)?;
        let id = key.id();
        let _ = ledger.remember_identity(&id);
        let node = Node {
            inner: Arc::new(Inner {
                key: Arc::new(key),
                id,
                net,
                expertise,
                ledger: Mutex::new(ledger),
                settings,
                persona,
                joins: Mutex::new(HashMap::new()),
                open: Mutex::new(BTreeSet::new()),
                member_rounds: Mutex::new(RoundTable::new(
                    MAX_MEMBER_ROUNDS,
                    MAX_MEMBER_ROUNDS_PER_ENTRY,
                )),
                announce: Mutex::new(TokenBucket::full(announce_rate, wire::now_ms())),
                announce_rate,
                governor: std::sync::OnceLock::new(),
                rest_until: Mutex::new(None),
                watchers: Watchers::default(),
                started: Instant::now(),
            }),
        };
        let n = node.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.recv().await {
                let n = n.clone();
                tokio::spawn(async move { n.handle(msg).await });
            }
        });
        // Let go of member rounds (and their plugin instances) once past their deadline:
        // one sweeper for all rounds, gone with the node.
        let weak = Arc::downgrade(&node.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                lock(&inner.member_rounds).expire(wire::now_ms());
            }
        });
        Ok(node)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Let `governor` decide when this node volunteers, how many rounds it takes and how
    /// hard its plugins run. Set once; later calls are ignored.
    pub fn set_governor(&self, governor: Governor) {
        if let Some(g) = self.inner.governor.get() {
            tracing::warn!(
                "the node already has a governor ({}); keeping it",
                g.state()
            );
            return;
        }
        let mut changes = governor.subscribe();
        let _ = self.inner.governor.set(governor);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let status = serde_json::to_value(&*changes.borrow_and_update());
                let Some(inner) = weak.upgrade() else { return };
                if let Ok(status) = status {
                    inner.watchers.send("governor", status);
                }
            }
        });
    }

    pub fn governor(&self) -> Option<&Governor> {
        self.inner.governor.get()
    }

    /// What this node does for watchers (`GET /v1/events`).
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<watch::Event> {
        self.inner.watchers.subscribe()
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Recent rounds this node recorded, newest first: (id, created ms, transcript).
    pub fn recent_rounds(&self, limit: usize) -> Vec<(String, u64, Result<Transcript, String>)> {
        let ledger = lock(&self.inner.ledger);
        let rows = ledger.rounds(limit).unwrap_or_default();
        rows.into_iter()
            .map(|(id, created, _)| {
                let t = ledger.round(&id).map_err(|e| e.to_string());
                // The ledger keeps seconds; watchers get milliseconds like every other time.
                (id, created.max(0) as u64 * 1000, t)
            })
            .collect()
    }

    /// Why this node should not volunteer now, if its owner's governor says so.
    /// Nothing to do: the governor lets the node work at full speed (or there is none),
    /// and it has no round open, neither its own nor as a member. A node's own
    /// known-answer rounds (`crate::bank`) wait for this, so they never take a slot or a
    /// core from real work.
    pub fn idle(&self) -> bool {
        let active = self
            .inner
            .governor
            .get()
            .is_none_or(|g| g.state() == State::Active);
        active
            && lock(&self.inner.open).is_empty()
            && lock(&self.inner.member_rounds).stats(wire::now_ms()).open == 0
    }

    fn declining(&self, judging: bool) -> Option<String> {
        let g = self.inner.governor.get()?;
        let status = g.status();
        match status.state {
            State::Paused if !(judging && g.rules().judge_when_paused) => {
                Some(format!("paused: {}", status.reason))
            }
            State::Throttled if !judging => {
                let open = lock(&self.inner.member_rounds).stats(wire::now_ms()).open;
                (open >= g.round_slots(MAX_MEMBER_ROUNDS))
                    .then(|| format!("throttled: {}", status.reason))
            }
            _ => None,
        }
    }

    /// The duty cycle: wait out the rest owed for earlier plugin work (never past
    /// `deadline_ms`), run `work` on a blocking thread, then owe rest for its time.
    async fn plugin_work<T: Send + 'static>(
        &self,
        deadline_ms: u64,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let rest =
            lock(&self.inner.rest_until).map(|t| t.saturating_duration_since(Instant::now()));
        if let Some(rest) = rest.filter(|r| !r.is_zero()) {
            tokio::time::sleep(rest.min(until(deadline_ms))).await;
        }
        let start = Instant::now();
        let out = tokio::task::spawn_blocking(work).await;
        if let Some(g) = self.inner.governor.get() {
            let rest = g.rest_after(start.elapsed());
            if !rest.is_zero() {
                *lock(&self.inner.rest_until) = Some(Instant::now() + rest);
            }
        }
        out
    }

    pub fn net(&self) -> &Net {
        &self.inner.net
    }

    pub fn expertise(&self) -> &Arc<dyn Expertise> {
        &self.inner.expertise
    }

    pub fn settings(&self) -> &RoundSettings {
        &self.inner.settings
    }

    /// A recorded round's transcript.
    pub fn transcript(&self, id: &str) -> Result<Transcript, String> {
        lock(&self.inner.ledger)
            .round(id)
            .map_err(|e| e.to_string())
    }

    /// This node's view of another node's standing in `domain`.
    pub fn standing(&self, node: &str, domain: &str) -> Standing {
        let p = &self.inner.settings.params.reputation;
        lock(&self.inner.ledger)
            .standing(node, domain, p)
            .unwrap_or_else(|_| Standing::new(p))
    }

    /// Rounds this node takes part in as a member: now, at most, started, declined.
    pub fn member_stats(&self) -> TableStats {
        lock(&self.inner.member_rounds).stats(wire::now_ms())
    }

    /// Member rounds held now for `entry` (a node id).
    pub fn member_rounds_of(&self, entry: &str) -> usize {
        lock(&self.inner.member_rounds).of_entry(entry, wire::now_ms())
    }

    /// Sign `msg` as this node (fresh time and nonce).
    pub(crate) fn sign(&self, msg: Msg) -> wire::Envelope {
        wire::seal(&self.inner.key, msg)
    }

    // ---------------------------------------------------------------- member side

    async fn handle(&self, msg: Inbound) {
        match msg {
            Inbound::Gossip { env } => {
                if let Msg::Request(r) = env.payload.msg {
                    if env.signer != r.entry {
                        tracing::warn!(
                            "rejected round {}: announced by {} for entry {}",
                            r.round,
                            short(&env.signer),
                            short(&r.entry)
                        );
                        return;
                    }
                    self.on_request(r).await;
                } else {
                    tracing::warn!(
                        "rejected gossip from {}: {} messages are not gossiped",
                        short(&env.signer),
                        env.payload.msg.kind()
                    );
                }
            }
            Inbound::Request { peer, env, reply } => {
                let from = env.signer.clone();
                let reply_msg = match env.payload.msg {
                    Msg::Join(j) => self.on_join(peer, j),
                    Msg::Select(s) => self.on_select(&from, s).await,
                    Msg::Judge(t) => self.on_judge(&from, t).await,
                    other => Some(Msg::Ack(Ack {
                        round: other.round().to_string(),
                        note: Some(format!("{} is not a request", other.kind())),
                    })),
                };
                // No reply only when this node is going down (persona `Crash`).
                if let Some(msg) = reply_msg {
                    self.inner.net.respond(reply, self.sign(msg));
                }
            }
        }
    }

    async fn on_request(&self, r: RoundRequest) {
        if r.entry == self.inner.id {
            return;
        }
        let now = wire::now_ms();
        if now > r.join_by {
            tracing::warn!(
                "round {} from {}: too late to join",
                r.round,
                short(&r.entry)
            );
            return;
        }
        if !(r.join_by <= r.answer_by && r.answer_by <= r.judge_by)
            || r.judge_by > now + MAX_ROUND_MS
        {
            tracing::warn!(
                "rejected round {} from {}: deadlines out of order or over {} s ahead",
                r.round,
                short(&r.entry),
                MAX_ROUND_MS / 1000
            );
            return;
        }
        let Some(entry) = peer_of(&r.entry) else {
            return;
        };
        // The entry's rounds it no longer lists are over: free their slots first.
        let open = &r.open[..r.open.len().min(MAX_OPEN_LISTED)];
        lock(&self.inner.member_rounds)
            .release(&r.entry, |id| id == r.round || open.iter().any(|o| o == id));
        let req = to_request(&r);
        let round = Arc::new(MemberRound {
            request_full: req.clone(),
            work: Arc::new(tokio::sync::Mutex::new(None)),
            answered: AtomicBool::new(false),
            judged: AtomicBool::new(false),
            keep_until: r.judge_by + LINGER_MS,
        });
        // Take the slot before assessing, so that the cap also bounds plugin work.
        let until_ms = r.answer_by + LINGER_MS;
        let taken = lock(&self.inner.member_rounds).insert(
            &r.entry,
            &r.round,
            until_ms,
            round.clone(),
            now,
        );
        let release = |me: &Node| {
            lock(&me.inner.member_rounds).remove_if(&r.entry, &r.round, |x| Arc::ptr_eq(x, &round))
        };
        let (willing, score, plugin) = match taken {
            // Announced again (fresh nonce, same round): joined already.
            Err(Full::Duplicate) => return,
            // Busy: say so with an unwilling join without a plugin. The entry node stops
            // waiting for this node (it waits for every peer it knows until the join
            // deadline) and leaves it out altogether, not even asking it to judge.
            Err(full) => {
                tracing::info!(
                    "round {} from {}: declined ({full})",
                    r.round,
                    short(&r.entry)
                );
                (false, 0.0, String::new())
            }
            Ok(()) => {
                if let Some(note) = self.declining(false) {
                    tracing::info!(
                        "round {} from {}: declined ({note})",
                        r.round,
                        short(&r.entry)
                    );
                    release(self);
                    return self
                        .send_join(
                            entry,
                            (&r.round, r.join_by),
                            false,
                            0.0,
                            String::new(),
                            Some(note),
                        )
                        .await;
                }
                let expertise = self.inner.expertise.clone();
                let threshold = self.inner.settings.threshold;
                let v = match self
                    .plugin_work(r.join_by, move || expertise.volunteer(&req, threshold))
                    .await
                {
                    Ok(v) => v,
                    Err(_) => {
                        release(self);
                        return;
                    }
                };
                if v.work.is_some() {
                    // Dropped by the sweeper once past its deadline (see `Node::start`).
                    *round.work.lock().await = v.work;
                } else {
                    release(self);
                }
                (v.willing, v.score, v.plugin)
            }
        };
        self.send_join(entry, (&r.round, r.join_by), willing, score, plugin, None)
            .await;
    }

    async fn send_join(
        &self,
        entry: PeerId,
        (round, join_by): (&str, u64),
        willing: bool,
        score: f32,
        plugin: String,
        note: Option<String>,
    ) {
        let join = self.sign(Msg::Join(Join {
            round: round.to_string(),
            willing,
            score,
            plugin,
            note,
        }));
        if self.inner.persona == Persona::Forger {
            self.forge(entry, &join).await;
        }
        let sent = tokio::time::timeout(
            until(join_by) + Duration::from_millis(500),
            self.inner.net.request(entry, join),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::info!("round {round}: join not acknowledged");
        }
    }

    /// Attack the entry node with every kind of bad message (persona `Forger`).
    async fn forge(&self, entry: PeerId, genuine: &wire::Envelope) {
        let net = &self.inner.net;
        let mut forged = genuine.clone();
        if let Msg::Join(j) = &mut forged.payload.msg {
            j.score = 1.0;
            j.plugin = "forged".into();
        }
        let value = |e: &wire::Envelope| serde_json::to_value(e).expect("serializes");
        let mut stolen = genuine.clone();
        stolen.signer = NodeKey::generate().id();
        let mut big = self.sign(Msg::Ack(Ack {
            round: genuine.payload.msg.round().to_string(),
            note: Some("x".repeat(wire::MAX_MESSAGE_BYTES + 1)),
        }));
        big.payload.nonce ^= 1;
        let attempts = vec![
            value(&forged),
            value(&stolen),
            value(&big),
            serde_json::json!({"payload": {"version": 1, "msg": "garbage"}}),
            // The genuine message twice: the second is a replay.
            value(genuine),
        ];
        for v in attempts {
            let _ = tokio::time::timeout(Duration::from_secs(2), net.request_raw(entry, v)).await;
        }
        net.publish_raw(b"not json at all".to_vec());
    }

    fn on_join(&self, peer: PeerId, j: Join) -> Option<Msg> {
        let tx = lock(&self.inner.joins).get(&j.round).cloned();
        let sent = tx.map(|tx| match tx.try_send((peer, j.clone())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(true),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(false),
        });
        let note = match sent {
            Some(Ok(())) => None,
            // Full: JOIN_QUEUE joins not yet read (the entry reads one per peer).
            Some(Err(true)) => Some("busy: too many joins for this round".to_string()),
            _ => {
                tracing::warn!(
                    "late join for round {} from {} (the join phase is over)",
                    j.round,
                    peer
                );
                Some("late: the join phase is over".to_string())
            }
        };
        Some(Msg::Ack(Ack {
            round: j.round,
            note,
        }))
    }

    fn member_round(&self, from: &str, round: &str) -> Result<Arc<MemberRound>, String> {
        let now = wire::now_ms();
        let rounds = lock(&self.inner.member_rounds);
        match rounds.get(from, round, now) {
            Some(r) => Ok(r),
            None if rounds.has_round(round, now) => {
                Err("only the round's entry node may ask".into())
            }
            None => Err("unknown or finished round".into()),
        }
    }

    async fn on_select(&self, from: &str, s: Select) -> Option<Msg> {
        let refuse = |e: String| {
            tracing::warn!("select for round {} refused: {e}", s.round);
            Some(Msg::Answer(AnswerReply {
                round: s.round.clone(),
                answer: None,
                error: Some(e),
            }))
        };
        let r = match self.member_round(from, &s.round) {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        if r.answered.swap(true, Ordering::SeqCst) {
            return refuse("already answered this round".into());
        }
        lock(&self.inner.member_rounds).extend(from, &s.round, r.keep_until);
        match self.inner.persona {
            Persona::Crash => {
                tracing::warn!("persona crash: stopping the network mid-round");
                self.inner.net.shutdown();
                return None;
            }
            Persona::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => {}
        }
        let work = r.work.clone();
        let req = r.request_full.clone();
        let out = self
            .plugin_work(r.keep_until, move || {
                let mut w = work.blocking_lock();
                match w.as_mut() {
                    Some(w) => w.answer(&req),
                    None => Err("no plugin volunteered on this node".into()),
                }
            })
            .await
            .unwrap_or_else(|_| Err("the answer task failed".into()));
        let (answer, error) = match out {
            Ok(a) => (
                Some(
                    self.inner
                        .key
                        .sign(crate::round::answer_msg(&s.round, s.member, &a)),
                ),
                None,
            ),
            Err(e) => (None, Some(e)),
        };
        Some(Msg::Answer(AnswerReply {
            round: s.round,
            answer,
            error,
        }))
    }

    async fn on_judge(&self, from: &str, t: JudgeTask) -> Option<Msg> {
        let checked = self.member_round(from, &t.round).and_then(|r| {
            if let Some(why) = self.declining(true) {
                Err(why)
            } else if t.items.len() > MAX_JUDGE_ITEMS {
                Err(format!(
                    "{} items (at most {MAX_JUDGE_ITEMS})",
                    t.items.len()
                ))
            } else if r.judged.swap(true, Ordering::SeqCst) {
                Err("already judged this round".into())
            } else {
                lock(&self.inner.member_rounds).extend(from, &t.round, r.keep_until);
                Ok(r)
            }
        });
        let r = match checked {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("judge task for round {} refused: {e}", t.round);
                return Some(Msg::Verdicts(VerdictReply {
                    round: t.round,
                    verdicts: Vec::new(),
                }));
            }
        };
        if let Persona::Slow(ms) = self.inner.persona {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let verdicts = judge_items(&self.inner.key, r.work.clone(), t.clone()).await;
        lock(&self.inner.member_rounds).remove_if(from, &t.round, |x| Arc::ptr_eq(x, &r));
        Some(Msg::Verdicts(VerdictReply {
            round: t.round,
            verdicts,
        }))
    }

    // ---------------------------------------------------------------- entry side

    /// Run a round with this node as entry node: the round engine decides, this only
    /// carries its actions over the network (or to this node's own plugins) and brings
    /// the replies, failures and the time back as events.
    pub async fn ask(
        &self,
        prompt: &str,
        domain: Option<String>,
        max_tokens: u32,
        temperature: f32,
        seed: Option<u64>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<RoundResult, RoundFailure> {
        let mut req = crate::round::request(prompt, 0);
        req.domain = domain;
        req.max_tokens = max_tokens;
        req.temperature = temperature;
        self.ask_request(req, seed, progress).await
    }

    /// [`Node::ask`] with the whole request: the options of a multiple-choice question,
    /// the conversation. `req.seed` is replaced by `seed`, or by one derived from the
    /// round id.
    pub async fn ask_request(
        &self,
        req: Request,
        seed: Option<u64>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<RoundResult, RoundFailure> {
        self.ask_round(req, seed, progress, None).await
    }

    /// A known-answer round: `req` (multiple choice) asked like any other, its right
    /// option `known` kept from the members and written into the transcript, so the
    /// round measures how far each member's option scores can be trusted
    /// (`consensus::known`). Its answer serves nobody.
    pub async fn ask_known(
        &self,
        req: Request,
        seed: Option<u64>,
        known: u32,
    ) -> Result<RoundResult, RoundFailure> {
        self.ask_round(req, seed, None, Some(known)).await
    }

    async fn ask_round(
        &self,
        req: Request,
        seed: Option<u64>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        known: Option<u32>,
    ) -> Result<RoundResult, RoundFailure> {
        let prompt = req.prompt.as_str();
        let started = Instant::now();
        let me = self.inner.id.clone();
        let id = local::round_id(&me, prompt);
        let seed =
            seed.unwrap_or_else(|| u64::from_str_radix(&id[..16.min(id.len())], 16).unwrap_or(0));
        let peers: BTreeSet<PeerId> = self.inner.net.peers().await.into_iter().collect();
        if !peers.is_empty() {
            self.pace_announcement(&id).await;
        }
        let s = &self.inner.settings;
        let open = self.open_round(&id);
        let now = wire::now_ms();
        let deadlines = Deadlines::after(now, s);
        let announcement = self.announcement(&id, &req, seed, deadlines, open);
        let request = to_request(&announcement);
        let mut expected: BTreeSet<String> = peers.iter().filter_map(wire::node_id_of).collect();
        expected.insert(me.clone());
        let spec = Spec {
            id: id.clone(),
            request: request.clone(),
            deadlines,
            settings: s.clone(),
            expected,
            local: BTreeSet::from([me.clone()]),
            known,
        };
        let engine = Round::new(spec, self.inner.key.clone(), now);

        let (joins_tx, joins) = mpsc::channel(JOIN_QUEUE);
        lock(&self.inner.joins).insert(id.clone(), joins_tx);
        if !peers.is_empty()
            && let Err(e) = self
                .inner
                .net
                .publish(&self.sign(Msg::Request(announcement)))
                .await
        {
            tracing::warn!("round {id}: could not announce: {e}");
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        self.volunteer_locally(request.clone(), events_tx.clone());
        let mut driver = EntryDriver {
            node: self.clone(),
            engine,
            request,
            joins,
            events,
            events_tx,
            own_work: None,
            progress,
        };
        let outcome = driver.run().await;
        lock(&self.inner.joins).remove(&id);
        lock(&self.inner.open).remove(&id);
        let result = outcome.and_then(|d| self.conclude(*d, started));
        self.report(&id, &result, started);
        result
    }

    /// Count the round for `/metrics` and show its end to watchers.
    fn report(&self, id: &str, result: &Result<RoundResult, RoundFailure>, started: Instant) {
        let (outcome, data) = match result {
            Ok(r) => (
                serde_json::to_value(r.decided_by)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                {
                    let mut v = watch::summary(&r.transcript, wire::now_ms());
                    v["margin"] = serde_json::json!(r.margin);
                    v
                },
            ),
            Err(e) => ("failed".to_string(), watch::failed(id, &e.to_string())),
        };
        crate::metrics::global().round(&outcome, started.elapsed());
        self.inner.watchers.send("round", data);
    }

    fn announcement(
        &self,
        id: &str,
        req: &Request,
        seed: u64,
        deadlines: Deadlines,
        open: Vec<String>,
    ) -> RoundRequest {
        RoundRequest {
            round: id.to_string(),
            entry: self.inner.id.clone(),
            prompt: req.prompt.clone(),
            domain: req.domain.clone(),
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            seed,
            choices: req.choices.clone(),
            messages: single_question_or(req),
            join_by: deadlines.join_by,
            answer_by: deadlines.answer_by,
            judge_by: deadlines.judge_by,
            open,
        }
    }

    /// Whether asking `req` can reach the peers: its signed announcement, with as many
    /// open rounds listed as there may be, within what peers accept. Err: (its size, the
    /// limit). A request too big to announce would otherwise run on this node alone.
    pub fn announcement_fits(&self, req: &Request) -> Result<(), (usize, usize)> {
        let id = local::round_id(&self.inner.id, &req.prompt);
        let open = vec![id.clone(); MAX_OPEN_LISTED];
        let deadlines = Deadlines::after(wire::now_ms(), &self.inner.settings);
        let a = self.announcement(&id, req, u64::MAX, deadlines, open);
        let size = wire::to_bytes(&self.sign(Msg::Request(a))).len();
        if size > wire::MAX_MESSAGE_BYTES {
            Err((size, wire::MAX_MESSAGE_BYTES))
        } else {
            Ok(())
        }
    }

    /// Peers refuse announcements past their budget for this node: wait for ours.
    async fn pace_announcement(&self, id: &str) {
        let wait = lock(&self.inner.announce).reserve(self.inner.announce_rate, wire::now_ms());
        if wait > 0 {
            tracing::info!("round {id}: announcing in {wait} ms (paced to what peers accept)");
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Note round `id` as in progress; the others in progress, for its announcement.
    fn open_round(&self, id: &str) -> Vec<String> {
        let mut open = lock(&self.inner.open);
        let others = open.iter().take(MAX_OPEN_LISTED).cloned().collect();
        open.insert(id.to_string());
        others
    }

    /// This node's own plugins assess while the peers join; their join is an event too.
    fn volunteer_locally(&self, request: Request, events: mpsc::UnboundedSender<Event>) {
        if let Some(why) = self.declining(false) {
            let _ = events.send(Event::Declined(why));
            return;
        }
        let expertise = self.inner.expertise.clone();
        let threshold = self.inner.settings.threshold;
        tokio::spawn(async move {
            let v = tokio::task::spawn_blocking(move || expertise.volunteer(&request, threshold))
                .await
                .ok();
            let _ = events.send(Event::Volunteered(v));
        });
    }

    /// Record the sealed transcript, share the new standings with the gossip scorer,
    /// and tell the client.
    fn conclude(&self, d: Decision, started: Instant) -> Result<RoundResult, RoundFailure> {
        lock(&self.inner.ledger)
            .record(&d.transcript)
            .map_err(|e| RoundFailure::Ledger(e.to_string()))?;
        for (m, after) in d
            .transcript
            .members
            .iter()
            .zip(&d.transcript.result.payload.after)
        {
            if m.key != self.inner.id
                && let Some(peer) = peer_of(&m.key)
            {
                self.inner.net.set_reputation(peer, after.reputation);
            }
        }
        for (judge, why) in &d.rejected {
            tracing::warn!(
                "round {}: rejected verdict from {}: {why}",
                d.transcript.id,
                short(judge)
            );
        }
        let t = &d.transcript;
        let win = &t.answers[d.winner];
        Ok(RoundResult {
            id: t.id.clone(),
            answer: win.payload.text.clone(),
            author: win.signer.clone(),
            plugin: d.members[win.payload.member].plugin.clone(),
            margin: d.margin,
            single_answer: d.single_answer,
            undecided: d.undecided,
            answers: t.answers.len(),
            verdicts: t.verdicts.len(),
            tokens: win.payload.tokens,
            decided_by: d.decided_by,
            candidates: t.result.payload.candidates.clone(),
            members: d.members.clone(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            transcript: t.clone(),
        })
    }
}

/// A plugin instance kept for a round: answering and judging take turns on it.
type SharedWork = Arc<tokio::sync::Mutex<Option<Box<dyn Work>>>>;

/// What comes back to the entry driver from the tasks it started.
enum Event {
    Volunteered(Option<Volunteer>),
    /// This node's own plugins sit the round out: its owner's governor says why.
    Declined(String),
    Answered(String, Result<Signed<AnswerMsg>, String>),
    Judged(String, Result<Vec<Signed<VerdictMsg>>, String>),
}

/// One round this node is entry for, in flight.
struct EntryDriver {
    node: Node,
    engine: Round,
    request: Request,
    joins: mpsc::Receiver<(PeerId, Join)>,
    events: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    /// This node's own plugin instance, if it volunteered.
    own_work: Option<SharedWork>,
    progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl EntryDriver {
    async fn run(&mut self) -> Result<Box<Decision>, RoundFailure> {
        loop {
            while let Some(action) = self.engine.poll() {
                match action {
                    Action::Progress(p) => {
                        self.show(&p);
                        if let Some(tx) = &self.progress {
                            let _ = tx.send(p);
                        }
                    }
                    Action::Answer { member, key } => self.ask_answer(member, key),
                    Action::Judge { key, task, .. } => self.ask_verdicts(key, task),
                    Action::Decided(d) => return Ok(d),
                    Action::Failed(f) => return Err(f.into()),
                }
            }
            self.next_event().await?;
        }
    }

    /// Tell watchers where the round is.
    fn show(&self, p: &Progress) {
        let id = self.engine.id();
        let data = match p {
            Progress::Forming => watch::forming(
                id,
                &self.request.prompt,
                &self.node.inner.id,
                wire::now_ms(),
            ),
            Progress::Answering { .. } => watch::answering(id, &self.engine.seated()),
            Progress::Ranking { .. } => {
                let answers: Vec<(usize, String)> = self
                    .engine
                    .answers()
                    .iter()
                    .map(|a| (a.payload.member, a.payload.text.clone()))
                    .collect();
                watch::judging(id, &answers)
            }
        };
        self.node.inner.watchers.send("round", data);
    }

    /// Wait for one event (a join, a reply, a deadline) and hand it to the engine.
    async fn next_event(&mut self) -> Result<(), RoundFailure> {
        let joining = self.engine.phase() == Phase::Joining;
        let wake = self.engine.poll_timeout();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep(until(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((peer, j)) = self.joins.recv(), if joining => self.on_join(peer, j),
            ev = self.events.recv() => match ev {
                Some(ev) => self.on_event(ev)?,
                None => return Err(RoundFailure::Stopped),
            },
            () = sleep => self.engine.handle_timeout(wire::now_ms()),
        }
        Ok(())
    }

    fn on_join(&mut self, peer: PeerId, j: Join) {
        let Some(node) = wire::node_id_of(&peer) else {
            return;
        };
        let now = wire::now_ms();
        if !j.willing && j.plugin.is_empty() {
            // Declined (busy, or nothing to offer): heard, so not waited for.
            let why = j.note.unwrap_or_else(|| "declined".into());
            let _ = self.engine.handle_failed(now, &node, why, false);
            return;
        }
        let domain = crate::round::domain_of(&self.request);
        let offer = Offer {
            standing: self.node.standing(&node, &domain),
            key: node.clone(),
            signer: node,
            plugin: j.plugin,
            score: j.score,
            willing: j.willing,
        };
        let key = offer.key.clone();
        if let Err(e) = self.engine.handle_join(now, offer) {
            tracing::info!(
                "round {}: join from {} refused: {e}",
                self.engine.id(),
                short(&key)
            );
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<(), RoundFailure> {
        let now = wire::now_ms();
        let me = self.node.inner.id.clone();
        let (key, outcome) = match ev {
            Event::Volunteered(None) => return Err(RoundFailure::Stopped),
            Event::Declined(why) => {
                let outcome = self.engine.handle_failed(now, &me, why, false);
                (me, outcome)
            }
            Event::Volunteered(Some(v)) => {
                let outcome = match v.work {
                    Some(work) => {
                        self.own_work = Some(Arc::new(tokio::sync::Mutex::new(Some(work))));
                        let domain = crate::round::domain_of(&self.request);
                        let offer = Offer {
                            standing: self.node.standing(&me, &domain),
                            key: me.clone(),
                            signer: me.clone(),
                            plugin: v.plugin,
                            score: v.score,
                            willing: v.willing,
                        };
                        self.engine.handle_join(now, offer)
                    }
                    None => {
                        self.engine
                            .handle_failed(now, &me, "no plugin on this node".into(), false)
                    }
                };
                (me, outcome)
            }
            Event::Answered(key, Ok(a)) => {
                let outcome = self.engine.handle_answer(now, &key, a);
                (key, outcome)
            }
            Event::Judged(key, Ok(v)) => {
                let outcome = self.engine.handle_verdicts(now, &key, v).map(|_| ());
                (key, outcome)
            }
            Event::Answered(key, Err(e)) | Event::Judged(key, Err(e)) => {
                tracing::info!(
                    "round {}: member {} left out: {e}",
                    self.engine.id(),
                    short(&key)
                );
                let outcome = self.engine.handle_failed(now, &key, e, false);
                (key, outcome)
            }
        };
        if let Err(e) = outcome {
            tracing::info!(
                "round {}: event from {} refused: {e}",
                self.engine.id(),
                short(&key)
            );
        }
        Ok(())
    }

    /// Ask a member for its answer: this node's own plugin, or a peer over the network.
    fn ask_answer(&self, member: usize, key: String) {
        let node = self.node.clone();
        let round = self.engine.id().to_string();
        let events = self.events_tx.clone();
        let own = (key == node.inner.id)
            .then(|| self.own_work.clone())
            .flatten();
        let request = self.request.clone();
        tokio::spawn(async move {
            let got = match own {
                Some(work) => answer_locally(&node.inner.key, work, request, round, member).await,
                None => node.remote_answer(&key, round, member).await,
            };
            let _ = events.send(Event::Answered(key, got));
        });
    }

    fn ask_verdicts(&self, key: String, task: JudgeTask) {
        let node = self.node.clone();
        let events = self.events_tx.clone();
        let own = (key == node.inner.id)
            .then(|| self.own_work.clone())
            .flatten();
        tokio::spawn(async move {
            let got = match own {
                Some(work) => Ok(judge_items(&node.inner.key, work, task).await),
                None => node.remote_verdicts(&key, task).await,
            };
            let _ = events.send(Event::Judged(key, got));
        });
    }
}

impl From<Failure> for RoundFailure {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NoVolunteers => RoundFailure::NoVolunteers,
            Failure::NoAnswers(why) => RoundFailure::NoAnswers(why),
        }
    }
}

impl Node {
    /// A peer's signed answer. The engine checks it; this checks only the envelope.
    async fn remote_answer(
        &self,
        key: &str,
        round: String,
        member: usize,
    ) -> Result<Signed<AnswerMsg>, String> {
        let peer = peer_of(key).ok_or("not a node id")?;
        let ask = self.sign(Msg::Select(Select { round, member }));
        let reply = self.inner.net.request(peer, ask).await?;
        if reply.signer != key {
            return Err("reply signed by another node".into());
        }
        match reply.payload.msg {
            Msg::Answer(AnswerReply {
                answer: Some(a), ..
            }) => Ok(a),
            Msg::Answer(AnswerReply { error, .. }) => {
                Err(error.unwrap_or_else(|| "no answer".into()))
            }
            other => Err(format!("expected an answer, got {}", other.kind())),
        }
    }

    async fn remote_verdicts(
        &self,
        key: &str,
        task: JudgeTask,
    ) -> Result<Vec<Signed<VerdictMsg>>, String> {
        let peer = peer_of(key).ok_or("not a node id")?;
        let reply = self
            .inner
            .net
            .request(peer, self.sign(Msg::Judge(task)))
            .await?;
        match reply.payload.msg {
            Msg::Verdicts(v) if reply.signer == key => Ok(v.verdicts),
            other => Err(format!("expected verdicts, got {}", other.kind())),
        }
    }
}

async fn answer_locally(
    key: &Arc<NodeKey>,
    work: SharedWork,
    request: Request,
    round: String,
    member: usize,
) -> Result<Signed<AnswerMsg>, String> {
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = work.blocking_lock();
        let a = w.as_mut().ok_or("no local work")?.answer(&request)?;
        Ok(key.sign(crate::round::answer_msg(&round, member, &a)))
    })
    .await
    .map_err(|_| "answer task failed".to_string())?
}

/// The rate this node announces at: a little under what its peers accept from it (the
/// same defaults), so network jitter between two announcements never makes one arrive
/// over budget.
fn own_announcements(l: &Limits) -> Rate {
    Rate {
        burst: l.gossip.burst.saturating_sub(1).max(1),
        per_s: l.gossip.per_s * 0.9,
    }
}

/// The conversation to announce: nothing for a single question (the prompt says it all,
/// and announcements stay small), else every turn.
fn single_question_or(req: &Request) -> Vec<wire::Turn> {
    let single = req.messages.len() == 1
        && req.messages[0].role == "user"
        && req.messages[0].content == req.prompt;
    if single {
        return Vec::new();
    }
    req.messages
        .iter()
        .map(|m| wire::Turn {
            role: m.role.clone(),
            content: m.content.clone(),
        })
        .collect()
}

fn to_request(r: &RoundRequest) -> Request {
    let mut messages: Vec<Message> = r
        .messages
        .iter()
        .map(|t| Message {
            role: t.role.clone(),
            content: t.content.clone(),
        })
        .collect();
    if messages.is_empty() {
        messages.push(Message {
            role: "user".into(),
            content: r.prompt.clone(),
        });
    }
    Request {
        prompt: r.prompt.clone(),
        domain: r.domain.clone(),
        choices: r.choices.clone(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        seed: r.seed,
        messages,
    }
}

async fn judge_items(
    key: &Arc<NodeKey>,
    work: SharedWork,
    task: JudgeTask,
) -> Vec<Signed<VerdictMsg>> {
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = work.blocking_lock();
        let Some(w) = w.as_mut() else {
            return Vec::new();
        };
        let seed = crate::round::local::task_seed(&task);
        task.items
            .iter()
            .filter_map(|item| {
                let req = crate::round::request(&item.prompt, seed);
                let outcome = w.judge(&req, &item.first_text, &item.second_text).ok()?;
                Some(key.sign(wire::verdict(&task.round, task.judge, item, outcome)))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}
