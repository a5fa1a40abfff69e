//! What nodes say to each other, and how a node decides to believe it.
//!
//! Every message is a [`Body`] signed by its sender's node key ([`Envelope`] =
//! [`Signed<Body>`]): the same ed25519 key that is the node's libp2p identity, so a
//! receiver can also check that the signer is the peer the bytes came from. A body carries
//! the protocol version, the time it was sent and a random nonce; [`Gate::open`] refuses,
//! with a reason worth logging, anything that is too large, malformed, of another
//! version, unsigned or forged, sent by someone other than its signer, replayed, or too
//! old. Lateness within a round (an answer after the answer deadline) is the round's
//! business and is checked there.
//!
//! Before that, [`Gate::admit`] spends from the sending peer's budgets (see
//! [`limits`](super::limits)): a peer over its budget is refused before its message is
//! parsed or verified, so a flood costs this node a table lookup per message. Everything
//! the gate remembers is bounded: nonces in all and per signer, budgets per tracked peer.

use super::limits::{Channel, Limits, PeerBudgets};
use crate::consensus::Outcome;
use crate::ledger::transcript::{AnswerMsg, VerdictMsg};
use crate::ledger::{NodeKey, Signed};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Bumped on any incompatible change to [`Body`] or [`Msg`].
pub const WIRE_VERSION: u32 = 1;
/// Largest message accepted, in bytes of JSON. Answers are capped far below this by the
/// sandbox (see `limits::MAX_ANSWER_BYTES`); a judge task carries a few of them.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// How far a sender's clock may be from ours, and how long a nonce is remembered.
pub const MAX_AGE_MS: u64 = 60_000;

pub type Envelope = Signed<Body>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub version: u32,
    /// Sender's clock, unix milliseconds.
    pub sent_ms: u64,
    /// Random per message: with `signer`, what makes a replay recognisable.
    pub nonce: u64,
    pub msg: Msg,
}

/// The round protocol's messages (DESIGN.md, "A swarm round").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Entry → everyone (gossip): a new round.
    Request(RoundRequest),
    /// Member → entry: whether this node volunteers, and how sure it is.
    Join(Join),
    /// Entry → member: you are in; answer by the deadline. The reply is an `Answer`.
    Select(Select),
    /// Member → entry: the signed answer (or why there is none).
    Answer(AnswerReply),
    /// Entry → member: pairs to judge. The reply is `Verdicts`.
    Judge(JudgeTask),
    /// Member → entry: one signed verdict per item.
    Verdicts(VerdictReply),
    /// A plain acknowledgement (or refusal, with a note).
    Ack(Ack),
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Request(_) => "request",
            Msg::Join(_) => "join",
            Msg::Select(_) => "select",
            Msg::Answer(_) => "answer",
            Msg::Judge(_) => "judge",
            Msg::Verdicts(_) => "verdicts",
            Msg::Ack(_) => "ack",
        }
    }

    pub fn round(&self) -> &str {
        match self {
            Msg::Request(m) => &m.round,
            Msg::Join(m) => &m.round,
            Msg::Select(m) => &m.round,
            Msg::Answer(m) => &m.round,
            Msg::Judge(m) => &m.round,
            Msg::Verdicts(m) => &m.round,
            Msg::Ack(m) => &m.round,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRequest {
    pub round: String,
    /// Node id of the entry node, which coordinates the round.
    pub entry: String,
    pub prompt: String,
    pub domain: Option<String>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u64,
    /// For multiple-choice requests, the options in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// The whole conversation (its last user message is `prompt`); empty for a single
    /// question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Turn>,
    /// Phase deadlines, unix milliseconds on the entry node's clock.
    pub join_by: u64,
    pub answer_by: u64,
    pub judge_by: u64,
    /// The entry node's other rounds still in progress. A member lets go of every other
    /// round of this entry it still holds: they are over, and holding them until their
    /// deadlines would make back-to-back rounds run into the per-entry cap. Only the
    /// entry can say so (announcements are signed by the entry they name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<String>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub round: String,
    pub willing: bool,
    /// Best `assess` score among the node's plugins.
    pub score: f32,
    /// Which plugin would answer (for explanations only).
    pub plugin: String,
    /// Why a node declined (its owner is busy: "paused: ..."), for the entry's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Select {
    pub round: String,
    /// This node's index among the round's members (it signs its answer with it).
    pub member: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerReply {
    pub round: String,
    pub answer: Option<Signed<AnswerMsg>>,
    pub error: Option<String>,
}

// The judge task is the round engine's: the wire carries it as the engine gave it.
pub use crate::round::{JudgeItem, JudgeTask};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictReply {
    pub round: String,
    pub verdicts: Vec<Signed<VerdictMsg>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub round: String,
    pub note: Option<String>,
}

/// Why a message was refused. Logged with the sender; never fatal to anything.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("oversized: {0} bytes (at most {MAX_MESSAGE_BYTES})")]
    Oversized(usize),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION}); upgrade one side")]
    Version(u64),
    #[error("bad signature: {0}")]
    Forged(String),
    #[error("signed by {signer} but sent by peer {peer}")]
    WrongSender { signer: String, peer: String },
    #[error("replayed (this signer already used nonce {0})")]
    Replayed(u64),
    #[error("too old: sent {0} ms ago")]
    Stale(u64),
    #[error("from the future: sent {0} ms ahead of this node's clock")]
    Future(u64),
    #[error("rate limited: more {what} than this node accepts ({limit})")]
    RateLimited { what: &'static str, limit: String },
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_nonce() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    u64::from_le_bytes(b)
}

/// Sign `msg` as this node, now.
pub fn seal(key: &NodeKey, msg: Msg) -> Envelope {
    key.sign(Body {
        version: WIRE_VERSION,
        sent_ms: now_ms(),
        nonce: random_nonce(),
        msg,
    })
}

/// Bytes for gossip.
pub fn to_bytes(env: &Envelope) -> Vec<u8> {
    serde_json::to_vec(env).expect("envelopes serialize")
}

/// The node id (hex ed25519 public key) behind a libp2p peer id, if it has one inline
/// (ed25519 peer ids always do).
pub fn node_id_of(peer: &libp2p::PeerId) -> Option<String> {
    let mh = peer.as_ref();
    // Identity multihash of the protobuf-encoded public key.
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(hex::encode(ed.to_bytes()))
}

/// Nonces seen recently, per signer, to refuse replays: a hard cap in all and per
/// signer (oldest forgotten first), and nothing older than the window kept.
#[derive(Debug)]
pub struct ReplayCache {
    signers: HashMap<Arc<str>, SignerNonces>,
    /// Every remembered nonce in the order it came, as (arrival, sequence, signer). May
    /// also hold entries a signer's own cap already dropped (recognised by sequence);
    /// never longer than `capacity`, so the cache is bounded in all.
    order: VecDeque<(u64, u64, Arc<str>)>,
    next: u64,
    live: usize,
    capacity: usize,
    per_signer: usize,
    window_ms: u64,
    peak: usize,
    peak_per_signer: usize,
}

#[derive(Debug, Default)]
struct SignerNonces {
    nonces: HashSet<u64>,
    /// (sequence, nonce), oldest first.
    order: VecDeque<(u64, u64)>,
}

/// How much the gate holds, for `GET /v1/node` and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GateHeld {
    /// Nonces remembered now, and at most so far.
    pub nonces: usize,
    pub peak_nonces: usize,
    /// Signers with nonces remembered.
    pub signers: usize,
    /// Most nonces remembered for one signer at once so far.
    pub peak_per_signer: usize,
    /// Peer budgets tracked (all kinds).
    pub budgets: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize, per_signer: usize, window_ms: u64) -> Self {
        ReplayCache {
            signers: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            live: 0,
            capacity: capacity.max(1),
            per_signer: per_signer.max(1),
            window_ms,
            peak: 0,
            peak_per_signer: 0,
        }
    }

    /// Remember `nonce` of `signer` at `now`; false if it is remembered already (a replay).
    pub fn insert(&mut self, signer: &str, nonce: u64, now: u64) -> bool {
        self.forget_before(now.saturating_sub(self.window_ms));
        let key: Arc<str> = match self.signers.get_key_value(signer) {
            Some((_, s)) if s.nonces.contains(&nonce) => return false,
            Some((k, _)) => k.clone(),
            None => Arc::from(signer),
        };
        let seq = self.next;
        self.next += 1;
        let s = self.signers.entry(key.clone()).or_default();
        s.nonces.insert(nonce);
        s.order.push_back((seq, nonce));
        self.live += 1;
        self.peak_per_signer = self.peak_per_signer.max(s.order.len().min(self.per_signer));
        if s.order.len() > self.per_signer
            && let Some((_, old)) = s.order.pop_front()
        {
            s.nonces.remove(&old);
            self.live -= 1;
        }
        self.order.push_back((now, seq, key));
        while self.order.len() > self.capacity {
            if let Some((_, seq, signer)) = self.order.pop_front() {
                self.drop_entry(&signer, seq);
            }
        }
        self.peak = self.peak.max(self.live);
        true
    }

    /// Drop `signer`'s entry `seq` if it is still remembered (it is then that signer's
    /// oldest: both orders are by arrival).
    fn drop_entry(&mut self, signer: &str, seq: u64) {
        let Some(s) = self.signers.get_mut(signer) else {
            return;
        };
        if s.order.front().is_some_and(|&(q, _)| q == seq)
            && let Some((_, nonce)) = s.order.pop_front()
        {
            s.nonces.remove(&nonce);
            self.live -= 1;
        }
        if s.order.is_empty() {
            self.signers.remove(signer);
        }
    }

    fn forget_before(&mut self, t: u64) {
        while self.order.front().is_some_and(|(at, _, _)| *at < t) {
            if let Some((_, seq, signer)) = self.order.pop_front() {
                self.drop_entry(&signer, seq);
            }
        }
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn held(&self) -> GateHeld {
        GateHeld {
            nonces: self.live,
            peak_nonces: self.peak,
            signers: self.signers.len(),
            peak_per_signer: self.peak_per_signer,
            budgets: 0,
        }
    }
}

/// Checks messages at the door, spends peers' budgets and remembers nonces to refuse
/// replays.
pub struct Gate {
    replay: ReplayCache,
    budgets: PeerBudgets<PeerId>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new(&Limits::default())
    }
}

impl Gate {
    pub fn new(limits: &Limits) -> Gate {
        Gate {
            // Nonces are remembered for twice the accepted age.
            replay: ReplayCache::new(limits.nonces, limits.nonces_per_signer, 2 * MAX_AGE_MS),
            budgets: PeerBudgets::new(limits),
        }
    }

    /// Spend from the budgets of the peers a message comes from, before it is even
    /// parsed: for gossip its author (`author`, signed by gossipsub) and the connection
    /// it came over; for a request the (authenticated) connection's peer. Refused: the
    /// message must be dropped unread.
    pub fn admit(
        &mut self,
        channel: Channel,
        author: &PeerId,
        connection: &PeerId,
        now: u64,
    ) -> Result<(), Rejection> {
        self.budgets
            .admit(channel, author, connection, now)
            .map_err(|(what, rate)| Rejection::RateLimited {
                what,
                limit: rate.to_string(),
            })
    }

    /// What the gate holds now.
    pub fn held(&self) -> GateHeld {
        GateHeld {
            budgets: self.budgets.tracked(),
            ..self.replay.held()
        }
    }

    /// Parse and check one message of `len` bytes that came from `peer_node` (the node
    /// id of the transport peer; `None` where the transport has none, e.g. gossip
    /// relayed without a source).
    pub fn open(
        &mut self,
        value: serde_json::Value,
        len: usize,
        peer_node: Option<&str>,
        now: u64,
    ) -> Result<Envelope, Rejection> {
        if len > MAX_MESSAGE_BYTES {
            return Err(Rejection::Oversized(len));
        }
        // The version first, so an old or new peer gets a clear reason, not a parse error.
        let version = value
            .get("payload")
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Rejection::Malformed("no payload.version".into()))?;
        if version != u64::from(WIRE_VERSION) {
            return Err(Rejection::Version(version));
        }
        let env: Envelope =
            serde_json::from_value(value).map_err(|e| Rejection::Malformed(e.to_string()))?;
        env.verify().map_err(Rejection::Forged)?;
        if let Some(peer) = peer_node
            && peer != env.signer
        {
            return Err(Rejection::WrongSender {
                signer: short(&env.signer),
                peer: short(peer),
            });
        }
        let sent = env.payload.sent_ms;
        if sent > now + MAX_AGE_MS {
            return Err(Rejection::Future(sent - now));
        }
        if now > sent + MAX_AGE_MS {
            return Err(Rejection::Stale(now - sent));
        }
        if !self.replay.insert(&env.signer, env.payload.nonce, now) {
            return Err(Rejection::Replayed(env.payload.nonce));
        }
        Ok(env)
    }
}

/// A node id short enough for a log line.
pub fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A verdict in the form a judge signs it.
pub fn verdict(round: &str, judge: usize, item: &JudgeItem, outcome: Outcome) -> VerdictMsg {
    VerdictMsg {
        round: round.to_string(),
        judge,
        first: item.first,
        second: item.second,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack() -> Msg {
        Msg::Ack(Ack {
            round: "r".into(),
            note: None,
        })
    }

    fn value(env: &Envelope) -> (serde_json::Value, usize) {
        let bytes = to_bytes(env);
        (serde_json::from_slice(&bytes).unwrap(), bytes.len())
    }

    #[test]
    fn a_sealed_message_opens_once() {
        let key = NodeKey::generate();
        let env = seal(&key, ack());
        let mut gate = Gate::default();
        let (v, n) = value(&env);
        let opened = gate.open(v.clone(), n, Some(&key.id()), now_ms()).unwrap();
        assert_eq!(opened, env);
        assert_eq!(
            gate.open(v, n, Some(&key.id()), now_ms()),
            Err(Rejection::Replayed(env.payload.nonce))
        );
    }

    #[test]
    fn forged_oversized_malformed_stale_and_foreign_messages_are_refused() {
        let key = NodeKey::generate();
        let mut gate = Gate::default();
        let now = now_ms();

        let mut forged = seal(&key, ack());
        forged.payload.msg = Msg::Ack(Ack {
            round: "other".into(),
            note: None,
        });
        let (v, n) = value(&forged);
        assert!(matches!(
            gate.open(v, n, None, now),
            Err(Rejection::Forged(_))
        ));

        let mut stolen = seal(&key, ack());
        stolen.signer = NodeKey::generate().id();
        let (v, n) = value(&stolen);
        assert!(matches!(
            gate.open(v, n, None, now),
            Err(Rejection::Forged(_))
        ));

        let (v, _) = value(&seal(&key, ack()));
        assert_eq!(
            gate.open(v, MAX_MESSAGE_BYTES + 1, None, now),
            Err(Rejection::Oversized(MAX_MESSAGE_BYTES + 1))
        );

        let garbage = serde_json::json!({"payload": {"version": 1, "msg": 7}});
        assert!(matches!(
            gate.open(garbage, 10, None, now),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(
            gate.open(serde_json::json!([1, 2]), 5, None, now),
            Err(Rejection::Malformed(_))
        ));

        let mut future = seal(&key, ack());
        future.payload.version = 2;
        let (v, n) = value(&future);
        assert_eq!(gate.open(v, n, None, now), Err(Rejection::Version(2)));

        let old = seal(&key, ack());
        let (v, n) = value(&old);
        assert!(matches!(
            gate.open(v, n, None, now + MAX_AGE_MS + 1_000),
            Err(Rejection::Stale(_))
        ));

        let (v, n) = value(&seal(&key, ack()));
        assert!(matches!(
            gate.open(v, n, Some(&NodeKey::generate().id()), now),
            Err(Rejection::WrongSender { .. })
        ));
    }

    #[test]
    fn the_replay_cache_stays_bounded_under_a_million_nonces_from_one_signer() {
        let (cap, per) = (100_000, 4_096);
        let mut c = ReplayCache::new(cap, per, 2 * MAX_AGE_MS);
        let now = 1_000_000_000;
        for n in 0..1_000_000u64 {
            assert!(c.insert("flooder", n, now + n / 1_000));
            assert!(c.len() <= per);
        }
        let h = c.held();
        assert_eq!((h.nonces, h.signers, h.peak_per_signer), (per, 1, per));
        assert!(h.peak_nonces <= per);
        assert!(c.order.len() <= cap);
        // The newest are still refused as replays; only the signer's oldest were
        // forgotten, and only it could send them again (over its own budget).
        let t = now + 1_000;
        assert!(!c.insert("flooder", 999_999, t));
        assert!(!c.insert("flooder", 1_000_000 - per as u64, t));
        assert!(c.insert("flooder", 0, t));
        // Another signer is unaffected by the flood.
        assert!(c.insert("honest", 7, t));
        assert!(!c.insert("honest", 7, t));
        // After the window everything is forgotten.
        let later = t + 2 * MAX_AGE_MS + 1;
        assert!(c.insert("honest", 8, later));
        assert_eq!(c.len(), 1);
        assert_eq!(c.held().signers, 1);
        assert_eq!(c.order.len(), 1);
    }

    #[test]
    fn the_replay_cache_stays_bounded_under_a_million_nonces_from_many_signers() {
        let (cap, per) = (100_000, 4_096);
        let mut c = ReplayCache::new(cap, per, 2 * MAX_AGE_MS);
        let now = 1_000_000_000;
        let signers: Vec<String> = (0..250_000u64).map(|i| format!("{i:064x}")).collect();
        for n in 0..1_000_000u64 {
            let s = &signers[(n % signers.len() as u64) as usize];
            assert!(c.insert(s, n, now));
        }
        let h = c.held();
        assert!(h.nonces <= cap && h.peak_nonces <= cap, "{h:?}");
        assert!(h.signers <= cap, "{h:?}");
        assert!(c.order.len() <= cap);
        assert_eq!(h.nonces, cap, "the newest fill the cache");
        // The newest nonce of the last signer is still a replay.
        assert!(!c.insert(&signers[(999_999 % 250_000) as usize], 999_999, now));
    }

    #[test]
    fn over_budget_peers_are_refused_before_the_message_is_read() {
        use super::super::limits::{Channel, Limits, Rate};
        let key = NodeKey::generate();
        let peer = key.libp2p_keypair().public().to_peer_id();
        let mut gate = Gate::new(&Limits {
            gossip: Rate::per_minute(30, 3),
            requests: Rate::per_second(10, 5),
            ..Limits::default()
        });
        let now = now_ms();
        for _ in 0..3 {
            gate.admit(Channel::Gossip, &peer, &peer, now).unwrap();
        }
        let r = gate.admit(Channel::Gossip, &peer, &peer, now).unwrap_err();
        assert!(matches!(r, Rejection::RateLimited { .. }), "{r}");
        assert!(r.to_string().starts_with("rate limited"), "{r}");
        // Requests have their own budget; it refills with time.
        for _ in 0..5 {
            gate.admit(Channel::Request, &peer, &peer, now).unwrap();
        }
        assert!(gate.admit(Channel::Request, &peer, &peer, now).is_err());
        gate.admit(Channel::Request, &peer, &peer, now + 100)
            .unwrap();
        assert!(gate.held().budgets >= 2);
        // Opening is unchanged: once, then a replay.
        let env = seal(&key, ack());
        let (v, n) = value(&env);
        gate.open(v.clone(), n, Some(&key.id()), now).unwrap();
        assert_eq!(
            gate.open(v, n, Some(&key.id()), now),
            Err(Rejection::Replayed(env.payload.nonce))
        );
        assert_eq!(gate.held().nonces, 1);
    }

    #[test]
    fn peer_ids_map_to_node_ids() {
        let key = NodeKey::generate();
        let kp = key.libp2p_keypair();
        assert_eq!(node_id_of(&kp.public().to_peer_id()), Some(key.id()));
    }
}
