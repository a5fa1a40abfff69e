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

use super::calibration;
use super::expertise::{Expertise, Work};
use super::limits::{Full, Limits, Rate, RoundTable, TableStats, TokenBucket};
use super::net::{Inbound, Net, NetConfig};
use super::wire::{self, Ack, AnswerReply, Join, JudgeItem, JudgeTask, Msg, RoundRequest};
use super::wire::{Select, VerdictReply, short};
use crate::consensus;
use crate::consensus::pairs::SplitMix;
use crate::consensus::scoring::Standing;
use crate::ledger::transcript::{
    AnswerMsg, CalibrationCheck, Member, Params, Transcript, VerdictMsg,
};
use crate::ledger::{Ledger, NodeKey, Signed, local};
use crate::sandbox::Request;
use libp2p::PeerId;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How rounds this node starts are run.
#[derive(Debug, Clone)]
pub struct RoundSettings {
    pub join_ms: u64,
    pub answer_ms: u64,
    pub judge_ms: u64,
    /// Most members in a sub-swarm.
    pub max_members: usize,
    /// Unordered pairs per judge (each judged in both orders).
    pub pairs_per_judge: usize,
    /// Minimum `assess` score to volunteer (as member).
    pub threshold: f32,
    pub params: Params,
}

impl Default for RoundSettings {
    fn default() -> Self {
        RoundSettings {
            join_ms: 3_000,
            answer_ms: 60_000,
            judge_ms: 60_000,
            max_members: 16,
            pairs_per_judge: 3,
            threshold: 0.5,
            params: Params::default(),
        }
    }
}

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
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub node: String,
    pub plugin: String,
    pub score: f32,
    pub answered: bool,
    pub judged: usize,
    /// Why it is missing from a phase, if it is.
    pub note: Option<String>,
}

/// Round progress, for streaming clients.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Forming,
    Answering { members: usize },
    Ranking { answers: usize, judges: usize },
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
/// Most joins queued for one round this node is entry for (one per peer is read).
pub const JOIN_QUEUE: usize = 1_024;

struct MemberRound {
    request_full: Request,
    work: Arc<tokio::sync::Mutex<Option<Box<dyn Work>>>>,
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
    /// Rounds this node takes part in as a member, by (entry node, round).
    member_rounds: Mutex<RoundTable<Arc<MemberRound>>>,
    /// This node's own announcements: paced to `announce_rate`.
    announce: Mutex<TokenBucket>,
    announce_rate: Rate,
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
                member_rounds: Mutex::new(RoundTable::new(
                    MAX_MEMBER_ROUNDS,
                    MAX_MEMBER_ROUNDS_PER_ENTRY,
                )),
                announce: Mutex::new(TokenBucket::full(announce_rate, wire::now_ms())),
                announce_rate,
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

    /// This node's view of another node's standing.
    pub fn standing(&self, node: &str) -> Standing {
        let p = &self.inner.settings.params.reputation;
        lock(&self.inner.ledger)
            .standing(node, p)
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
                let expertise = self.inner.expertise.clone();
                let threshold = self.inner.settings.threshold;
                let v =
                    match tokio::task::spawn_blocking(move || expertise.volunteer(&req, threshold))
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
        let join = self.sign(Msg::Join(Join {
            round: r.round.clone(),
            willing,
            score,
            plugin,
        }));
        if self.inner.persona == Persona::Forger {
            self.forge(entry, &join).await;
        }
        let sent = tokio::time::timeout(
            until(r.join_by) + Duration::from_millis(500),
            self.inner.net.request(entry, join),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::info!("round {}: join not acknowledged", r.round);
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
        let out = tokio::task::spawn_blocking(move || {
            let mut w = work.blocking_lock();
            match w.as_mut() {
                Some(w) => w.answer(&req),
                None => Err("no plugin volunteered on this node".into()),
            }
        })
        .await
        .unwrap_or_else(|_| Err("the answer task failed".into()));
        let (answer, error) = match out {
            Ok((text, _confidence)) => (
                Some(self.inner.key.sign(AnswerMsg {
                    round: s.round.clone(),
                    member: s.member,
                    text,
                })),
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
            if t.items.len() > MAX_JUDGE_ITEMS {
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

    /// Run a round with this node as entry node.
    pub async fn ask(
        &self,
        prompt: &str,
        domain: Option<String>,
        max_tokens: u32,
        temperature: f32,
        seed: Option<u64>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<RoundResult, RoundFailure> {
        let started = Instant::now();
        let s = &self.inner.settings;
        let me = self.inner.id.clone();
        let say = |p: Progress| {
            if let Some(tx) = &progress {
                let _ = tx.send(p);
            }
        };
        say(Progress::Forming);
        let round = local::round_id(&me, prompt);
        let seed = seed
            .unwrap_or_else(|| u64::from_str_radix(&round[..16.min(round.len())], 16).unwrap_or(0));
        let peers: BTreeSet<PeerId> = self.inner.net.peers().await.into_iter().collect();
        if !peers.is_empty() {
            // Peers refuse announcements past their budget for this node: wait for ours.
            let wait = lock(&self.inner.announce).reserve(self.inner.announce_rate, wire::now_ms());
            if wait > 0 {
                tracing::info!(
                    "round {round}: announcing in {wait} ms (paced to what peers accept)"
                );
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        let now = wire::now_ms();
        let request = RoundRequest {
            round: round.clone(),
            entry: me.clone(),
            prompt: prompt.to_string(),
            domain,
            max_tokens,
            temperature,
            seed,
            join_by: now + s.join_ms,
            answer_by: now + s.join_ms + s.answer_ms,
            judge_by: now + s.join_ms + s.answer_ms + s.judge_ms,
        };

        // 1. Forming: announce, assess locally, collect joins.
        let (tx, mut rx) = mpsc::channel(JOIN_QUEUE);
        lock(&self.inner.joins).insert(round.clone(), tx);
        if !peers.is_empty()
            && let Err(e) = self
                .inner
                .net
                .publish(&self.sign(Msg::Request(request.clone())))
                .await
        {
            tracing::warn!("round {round}: could not announce: {e}");
        }
        let expertise = self.inner.expertise.clone();
        let full = to_request(&request);
        let full2 = full.clone();
        let threshold = s.threshold;
        let own = tokio::task::spawn_blocking(move || expertise.volunteer(&full2, threshold));
        let mut joins: Vec<(Option<PeerId>, String, Join)> = Vec::new();
        let mut heard: BTreeSet<PeerId> = BTreeSet::new();
        let join_deadline = tokio::time::Instant::now() + until(request.join_by);
        while !peers.is_subset(&heard) {
            match tokio::time::timeout_at(join_deadline, rx.recv()).await {
                Ok(Some((peer, j))) => {
                    if let Some(node) = wire::node_id_of(&peer)
                        && heard.insert(peer)
                    {
                        joins.push((Some(peer), node, j));
                    }
                }
                _ => break,
            }
        }
        lock(&self.inner.joins).remove(&round);
        let own = own.await.map_err(|_| RoundFailure::Stopped)?;
        let own_work = own.work.map(|w| Arc::new(tokio::sync::Mutex::new(Some(w))));
        if own_work.is_some() {
            joins.push((
                None,
                me.clone(),
                Join {
                    round: round.clone(),
                    willing: own.willing,
                    score: own.score,
                    plugin: own.plugin,
                },
            ));
        }

        // 2. Answering: the sub-swarm, by reputation × willingness.
        let p = &s.params.reputation;
        type Candidate = (f64, Option<PeerId>, String, Join, Standing);
        let (mut candidates, mut spare): (Vec<Candidate>, Vec<Candidate>) = joins
            .into_iter()
            .filter(|(_, _, j)| j.score.is_finite() && !j.plugin.is_empty())
            .map(|(peer, node, j)| {
                let standing = self.standing(&node);
                let rank = standing.reputation.max(0.01) * f64::from(j.score.clamp(0.0, 1.0));
                (rank, peer, node, j, standing)
            })
            .partition(|c| c.3.willing);
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        // Judge-only members, should too few answerers be left to judge each other.
        spare.sort_by(|a, b| {
            b.4.reputation
                .total_cmp(&a.4.reputation)
                .then(a.2.cmp(&b.2))
        });
        candidates.truncate(s.max_members.max(1));
        if candidates.is_empty() {
            return Err(RoundFailure::NoVolunteers);
        }
        say(Progress::Answering {
            members: candidates.len(),
        });
        let mut reports: Vec<MemberReport> = candidates
            .iter()
            .map(|(_, _, node, j, _)| MemberReport {
                node: node.clone(),
                plugin: j.plugin.clone(),
                score: j.score,
                answered: false,
                judged: 0,
                note: None,
            })
            .collect();
        let answer_deadline = until(request.answer_by);
        let mut tasks = Vec::new();
        for (i, (_, peer, node, _, _)) in candidates.iter().enumerate() {
            let (peer, node) = (*peer, node.clone());
            let me = self.clone();
            let own_work = own_work.clone();
            let full = full.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                let fut = async {
                    match peer {
                        None => {
                            let work = own_work.ok_or("no local work")?;
                            let key = me.inner.key.clone();
                            tokio::task::spawn_blocking(move || {
                                let mut w = work.blocking_lock();
                                let (text, _) = w.as_mut().ok_or("no local work")?.answer(&full)?;
                                Ok(key.sign(AnswerMsg {
                                    round,
                                    member: i,
                                    text,
                                }))
                            })
                            .await
                            .map_err(|_| "answer task failed".to_string())?
                        }
                        Some(peer) => {
                            let reply = me
                                .inner
                                .net
                                .request(
                                    peer,
                                    me.sign(Msg::Select(Select {
                                        round: round.clone(),
                                        member: i,
                                    })),
                                )
                                .await?;
                            check_answer(reply, &node, &round, i)
                        }
                    }
                };
                tokio::time::timeout(answer_deadline, fut)
                    .await
                    .unwrap_or_else(|_| Err("late: no answer by the deadline".into()))
            }));
        }
        let mut answers: Vec<Signed<AnswerMsg>> = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap_or_else(|_| Err("answer task failed".into())) {
                Ok(a) => {
                    reports[i].answered = true;
                    answers.push(a);
                }
                Err(e) => {
                    tracing::info!(
                        "round {round}: member {} left out: {e}",
                        short(&reports[i].node)
                    );
                    reports[i].note = Some(e);
                }
            }
        }
        if answers.is_empty() {
            let why = reports
                .iter()
                .filter_map(|r| r.note.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RoundFailure::NoAnswers(why));
        }
        // Anonymise: judges see answers without authors, in the fallback order
        // (`consensus::fallback`: earned reputation, then assess, then the seed's draw).
        // When no weighted verdict separates the answers (two answerers who cannot judge
        // each other, no calibrated judge, verdicts that cancel), the fit's tie goes to
        // the lowest index, so the transcript recomputes to the same answer, and a
        // member's own confidence never outranks what others' verdicts earned.
        let order = {
            let claims: Vec<consensus::Claim<'_>> = answers
                .iter()
                .map(|a| {
                    let c = &candidates[a.payload.member];
                    consensus::Claim {
                        reputation: c.4.reputation,
                        assess: c.3.score,
                        text: &a.payload.text,
                    }
                })
                .collect();
            consensus::fallback_order(&claims, seed)
        };
        let mut slots: Vec<Option<Signed<AnswerMsg>>> = answers.into_iter().map(Some).collect();
        let answers: Vec<Signed<AnswerMsg>> =
            order.iter().filter_map(|&i| slots[i].take()).collect();

        // 3. Ranking: balanced pairs plus hidden calibration items, both orders. Members
        // cannot judge their own answers, so with fewer than MIN_JUDGES answerers nodes
        // that joined without volunteering to answer are asked to judge as well.
        let n = answers.len();
        let selected = candidates.len();
        if (2..MIN_JUDGES).contains(&n) {
            for c in spare.into_iter().take(MIN_JUDGES - n) {
                reports.push(MemberReport {
                    node: c.2.clone(),
                    plugin: c.3.plugin.clone(),
                    score: c.3.score,
                    answered: false,
                    judged: 0,
                    note: Some("judge only".into()),
                });
                candidates.push(c);
            }
        }
        // Answerers, then the judge-only members appended above.
        let judges: Vec<usize> = (0..candidates.len())
            .filter(|&i| i >= selected || reports[i].answered)
            .collect();
        let authors: Vec<Option<usize>> = answers
            .iter()
            .map(|a| judges.iter().position(|&j| j == a.payload.member))
            .collect();
        let assignment = if n >= 2 {
            consensus::balanced_assignment(&authors, judges.len(), s.pairs_per_judge, seed)
        } else {
            Vec::new()
        };
        let standings: Vec<Standing> = candidates.iter().map(|c| c.4).collect();
        let mut checks: Vec<CalibrationCheck> = Vec::new();
        let mut verdicts: Vec<Signed<VerdictMsg>> = Vec::new();
        if n >= 2 {
            say(Progress::Ranking {
                answers: n,
                judges: judges.len(),
            });
            let mut tasks = Vec::new();
            for (j, &member) in judges.iter().enumerate() {
                let mut items: Vec<JudgeItem> = assignment
                    .iter()
                    .filter(|a| a.judge == j)
                    .map(|a| JudgeItem {
                        prompt: request.prompt.clone(),
                        first: a.first,
                        second: a.second,
                        first_text: answers[a.first].payload.text.clone(),
                        second_text: answers[a.second].payload.text.clone(),
                    })
                    .collect();
                // A new judge gets enough items to prove itself in one round even if it
                // abstains (ties) on the ones outside its domain; a proven one gets one
                // pair, both orders, so it cannot stop trying.
                let wanted = if standings[member].calibrated(p) {
                    1
                } else {
                    2 * p.calibration_items as usize
                };
                let bank =
                    calibration::items(seed ^ (member as u64 + 1).wrapping_mul(0x9E37), wanted);
                let mut truth: HashMap<(usize, usize), bool> = HashMap::new();
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
                SplitMix(seed ^ member as u64).shuffle(&mut items);
                let task = JudgeTask {
                    round: round.clone(),
                    judge: member,
                    items,
                };
                let (peer, node) = (candidates[member].1, candidates[member].2.clone());
                let me = self.clone();
                let own_work = own_work.clone();
                let deadline = until(request.judge_by);
                tasks.push((
                    member,
                    truth,
                    task.clone(),
                    tokio::spawn(async move {
                        let fut = async {
                            match peer {
                                None => {
                                    let work = own_work.ok_or("no local work")?;
                                    Ok(judge_items(&me.inner.key, work, task).await)
                                }
                                Some(peer) => {
                                    let reply = me
                                        .inner
                                        .net
                                        .request(peer, me.sign(Msg::Judge(task)))
                                        .await?;
                                    match reply.payload.msg {
                                        Msg::Verdicts(v) if reply.signer == node => Ok(v.verdicts),
                                        other => {
                                            Err(format!("expected verdicts, got {}", other.kind()))
                                        }
                                    }
                                }
                            }
                        };
                        tokio::time::timeout(deadline, fut)
                            .await
                            .unwrap_or_else(|_| Err("late: no verdicts by the deadline".into()))
                    }),
                ));
            }
            for (member, truth, task, handle) in tasks {
                let got = handle
                    .await
                    .unwrap_or_else(|_| Err("judge task failed".into()));
                let got = match got {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::info!(
                            "round {round}: judge {} left out: {e}",
                            short(&reports[member].node)
                        );
                        reports[member].note.get_or_insert(e);
                        continue;
                    }
                };
                let asked: BTreeSet<(usize, usize)> =
                    task.items.iter().map(|i| (i.first, i.second)).collect();
                let mut done: BTreeSet<(usize, usize)> = BTreeSet::new();
                // One verdict per item at most: the rest are not even verified.
                for v in got.into_iter().take(task.items.len()) {
                    let key = (v.payload.first, v.payload.second);
                    let problem = if v.verify().is_err() {
                        Some("bad signature")
                    } else if v.signer != candidates[member].2 {
                        Some("signed by another node")
                    } else if v.payload.round != round || v.payload.judge != member {
                        Some("for another round or judge")
                    } else if !asked.contains(&key) || !done.insert(key) {
                        Some("a pair it was not given, or twice")
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        tracing::warn!(
                            "round {round}: rejected verdict from {}: {problem}",
                            short(&reports[member].node)
                        );
                        continue;
                    }
                    if let Some(first_right) = truth.get(&key) {
                        if let Some(item) = task.items.iter().find(|i| (i.first, i.second) == key) {
                            checks.push(CalibrationCheck {
                                prompt: item.prompt.clone(),
                                first_text: item.first_text.clone(),
                                second_text: item.second_text.clone(),
                                first_is_right: *first_right,
                                verdict: v,
                            });
                        }
                    } else {
                        reports[member].judged += 1;
                        verdicts.push(v);
                    }
                }
            }
        }

        // 4. Aggregate, sign, record.
        let members: Vec<Member> = candidates
            .iter()
            .zip(&standings)
            .map(|(c, s)| Member {
                key: c.2.clone(),
                before: *s,
            })
            .collect();
        let transcript = Transcript::assemble(
            &self.inner.key,
            round.clone(),
            request.prompt.clone(),
            seed,
            members,
            s.params.clone(),
            answers,
            verdicts,
            checks,
        );
        lock(&self.inner.ledger)
            .record(&transcript)
            .map_err(|e| RoundFailure::Ledger(e.to_string()))?;
        let result = &transcript.result.payload;
        for (c, after) in candidates.iter().zip(&result.after) {
            if let Some(peer) = c.1 {
                self.inner.net.set_reputation(peer, after.reputation);
            }
        }
        let winner = result.winner.unwrap_or(0);
        let mut order: Vec<usize> = (0..result.scores.len()).collect();
        order.sort_by(|&a, &b| result.scores[b].total_cmp(&result.scores[a]));
        let margin = match order.as_slice() {
            [w, r, ..] => 1.0 / (1.0 + (result.scores[*r] - result.scores[*w]).exp()),
            _ => 1.0,
        };
        let win = &transcript.answers[winner];
        Ok(RoundResult {
            id: round,
            answer: win.payload.text.clone(),
            author: win.signer.clone(),
            plugin: reports[win.payload.member].plugin.clone(),
            margin,
            single_answer: transcript.answers.len() == 1,
            undecided: transcript.answers.len() >= 2
                && !consensus::decided(
                    &result.scores,
                    &transcript
                        .answers
                        .iter()
                        .map(|a| a.payload.text.as_str())
                        .collect::<Vec<_>>(),
                ),
            answers: transcript.answers.len(),
            verdicts: transcript.verdicts.len(),
            members: reports,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// Fewer answerers than this and non-answering nodes are asked to judge too.
const MIN_JUDGES: usize = 3;

/// The rate this node announces at: a little under what its peers accept from it (the
/// same defaults), so network jitter between two announcements never makes one arrive
/// over budget.
fn own_announcements(l: &Limits) -> Rate {
    Rate {
        burst: l.gossip.burst.saturating_sub(1).max(1),
        per_s: l.gossip.per_s * 0.9,
    }
}

fn to_request(r: &RoundRequest) -> Request {
    Request {
        prompt: r.prompt.clone(),
        domain: r.domain.clone(),
        choices: Vec::new(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        seed: r.seed,
    }
}

fn check_answer(
    reply: wire::Envelope,
    node: &str,
    round: &str,
    member: usize,
) -> Result<Signed<AnswerMsg>, String> {
    if reply.signer != node {
        return Err("reply signed by another node".into());
    }
    let Msg::Answer(a) = reply.payload.msg else {
        return Err(format!(
            "expected an answer, got {}",
            reply.payload.msg.kind()
        ));
    };
    let Some(answer) = a.answer else {
        return Err(a.error.unwrap_or_else(|| "no answer".into()));
    };
    answer.verify()?;
    if answer.signer != node || answer.payload.round != round || answer.payload.member != member {
        return Err("answer signed for another node, round or member".into());
    }
    Ok(answer)
}

async fn judge_items(
    key: &Arc<NodeKey>,
    work: Arc<tokio::sync::Mutex<Option<Box<dyn Work>>>>,
    task: JudgeTask,
) -> Vec<Signed<VerdictMsg>> {
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = work.blocking_lock();
        let Some(w) = w.as_mut() else {
            return Vec::new();
        };
        task.items
            .iter()
            .filter_map(|item| {
                let outcome = w
                    .compare(&item.prompt, &item.first_text, &item.second_text)
                    .ok()?;
                Some(key.sign(wire::verdict(&task.round, task.judge, item, outcome)))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}
