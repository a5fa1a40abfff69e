//! The libp2p side of a node: transports, discovery, gossip and request-response, run by
//! one task that owns the `Swarm`; the rest of the node talks to it through [`Net`].
//!
//! Transports: TCP and in-memory (for `apiary sim` and tests), both with noise and
//! yamux. Discovery: mDNS on the LAN (optional), `--bootstrap` addresses and Kademlia,
//! with identify telling Kademlia where peers listen. Rounds are announced on one
//! gossipsub topic (strict signing, application validation, peer scoring) and everything
//! else is request-response with JSON bodies.
//!
//! Every message, gossip or request or response, passes the [`Gate`](super::wire::Gate)
//! before the node sees it; a refusal is logged with its reason, counted in
//! [`NetStats`], and (for gossip) reported to gossipsub so the sender's score drops.
//! Gossip and requests first spend from their peer's budgets ([`Limits`]): over budget,
//! they are refused unread, gossip reported like any other refusal, a request dropped
//! unanswered.
//!
//! Peer scoring has one scored topic, the rounds topic, and on it only invalid messages
//! count (P4): with gossipsub's default score parameters no topic is scored, so a
//! refusal would cost the sender nothing. A peer whose messages keep being refused falls
//! below the gossip, publish and graylist thresholds within a few refusals a second (so
//! its gossip is then ignored before it reaches the gate), and recovers within seconds
//! once it stops.

use super::limits::{Channel, Limits};
use super::wire::{self, Envelope, Gate, GateHeld, Rejection};
use crate::ledger::NodeKey;
use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport, identify, kad, mdns, noise};
use libp2p::{tcp, yamux};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const TOPIC: &str = "apiary/rounds/1";
const RR_PROTOCOL: &str = "/apiary/round/1";
const KAD_PROTOCOL: &str = "/apiary/kad/1";

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    rr: request_response::json::Behaviour<serde_json::Value, serde_json::Value>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    /// Gossipsub heartbeat (1 s is libp2p's default; simulations go faster).
    pub heartbeat: Duration,
    /// Upper bound on any request; rounds use their own, shorter deadlines.
    pub request_timeout: Duration,
    /// What one peer may send this node.
    pub limits: Limits,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")],
            bootstrap: Vec::new(),
            mdns: true,
            heartbeat: Duration::from_millis(500),
            request_timeout: Duration::from_secs(300),
            limits: Limits::default(),
        }
    }
}

/// A message that passed the gate.
#[derive(Debug)]
pub enum Inbound {
    Gossip {
        env: Envelope,
    },
    Request {
        peer: PeerId,
        env: Envelope,
        reply: ReplyToken,
    },
}

/// Where to send the answer to an inbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyToken(u64);

/// Counts of refused messages by reason, and of messages accepted; and how much the
/// network side holds (every figure bounded whatever peers send).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct NetStats {
    pub accepted: u64,
    pub rejected: BTreeMap<String, u64>,
    pub held: Held,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    #[serde(flatten)]
    pub gate: GateHeld,
    /// This node's requests awaiting a response (whoever stopped waiting is swept out).
    pub pending_requests: usize,
    /// Peers' requests awaiting this node's response.
    pub open_replies: usize,
}

enum Cmd {
    Publish(Vec<u8>, oneshot::Sender<Result<(), String>>),
    Request {
        peer: PeerId,
        env: Envelope,
        tx: oneshot::Sender<Result<Envelope, String>>,
    },
    /// Raw bytes, unchecked: only for tests and `apiary sim`'s forgers.
    RequestRaw {
        peer: PeerId,
        value: serde_json::Value,
        tx: oneshot::Sender<Result<Envelope, String>>,
    },
    PublishRaw(Vec<u8>),
    Respond(ReplyToken, Envelope),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Listening(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr),
    Score(PeerId, f64),
    PeerScore(PeerId, oneshot::Sender<Option<f64>>),
    Shutdown,
}

/// A handle on the network task. Cheap to clone.
#[derive(Clone)]
pub struct Net {
    cmd: mpsc::UnboundedSender<Cmd>,
    pub peer_id: PeerId,
    stats: Arc<Mutex<NetStats>>,
}

fn rejection_kind(r: &Rejection) -> &'static str {
    match r {
        Rejection::Oversized(_) => "oversized",
        Rejection::Malformed(_) => "malformed",
        Rejection::Version(_) => "version",
        Rejection::Forged(_) => "forged",
        Rejection::WrongSender { .. } => "wrong_sender",
        Rejection::Replayed(_) => "replayed",
        Rejection::Stale(_) => "stale",
        Rejection::Future(_) => "future",
        Rejection::RateLimited { .. } => "rate_limited",
    }
}

impl Net {
    /// Build the swarm, start listening, dial the bootstrap peers and spawn the task.
    /// Returns the handle and the stream of messages that passed the gate.
    pub fn start(
        key: &NodeKey,
        config: NetConfig,
    ) -> Result<(Net, mpsc::UnboundedReceiver<Inbound>), String> {
        let keypair = key.libp2p_keypair();
        let mut swarm = build_swarm(keypair, &config)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        }
        for addr in &config.bootstrap {
            if let Some(peer) = peer_in(addr) {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                swarm.add_peer_address(peer, addr.clone());
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!("cannot dial bootstrap peer {addr}: {e}");
            }
        }
        if !config.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(NetStats::default()));
        let net = Net {
            cmd,
            peer_id: *swarm.local_peer_id(),
            stats: stats.clone(),
        };
        let task = Task {
            swarm,
            gate: Gate::new(&config.limits),
            pending: HashMap::new(),
            replies: HashMap::new(),
            sweep_at: SWEEP_FLOOR,
            next_reply: 0,
            inbound: in_tx,
            stats,
        };
        tokio::spawn(task.run(cmd_rx));
        Ok((net, in_rx))
    }

    pub async fn publish(&self, env: &Envelope) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Publish(wire::to_bytes(env), tx))?;
        rx.await.map_err(|_| "network task stopped".to_string())?
    }

    /// Send a request and wait for the (checked) response.
    pub async fn request(&self, peer: PeerId, env: Envelope) -> Result<Envelope, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Request { peer, env, tx })?;
        rx.await.map_err(|_| "network task stopped".to_string())?
    }

    /// Send arbitrary JSON as a request (tests and simulated attackers).
    pub async fn request_raw(
        &self,
        peer: PeerId,
        value: serde_json::Value,
    ) -> Result<Envelope, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::RequestRaw { peer, value, tx })?;
        rx.await.map_err(|_| "network task stopped".to_string())?
    }

    /// Publish arbitrary bytes as gossip (tests and simulated attackers).
    pub fn publish_raw(&self, bytes: Vec<u8>) {
        let _ = self.send(Cmd::PublishRaw(bytes));
    }

    pub fn respond(&self, reply: ReplyToken, env: Envelope) {
        let _ = self.send(Cmd::Respond(reply, env));
    }

    /// Peers subscribed to the rounds topic.
    pub async fn peers(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.send(Cmd::Peers(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn listening(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.send(Cmd::Listening(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// This node's gossipsub score of `peer` (None: scoring off or peer unknown).
    pub async fn peer_score(&self, peer: PeerId) -> Option<f64> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::PeerScore(peer, tx)).ok()?;
        rx.await.ok().flatten()
    }

    pub fn dial(&self, addr: Multiaddr) {
        let _ = self.send(Cmd::Dial(addr));
    }

    /// Feed a peer's reputation (in [0, 1]) into its gossipsub score, so peers that judge
    /// and answer badly are the first to be pruned from the mesh.
    pub fn set_reputation(&self, peer: PeerId, reputation: f64) {
        let _ = self.send(Cmd::Score(peer, reputation));
    }

    /// Stop the network task: every connection closes (a crash, as peers see it).
    pub fn shutdown(&self) {
        let _ = self.send(Cmd::Shutdown);
    }

    pub fn stats(&self) -> NetStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn send(&self, c: Cmd) -> Result<(), String> {
        self.cmd
            .send(c)
            .map_err(|_| "network task stopped".to_string())
    }
}

/// The `/p2p/<peer id>` part of an address, if any.
pub fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn build_swarm(
    keypair: libp2p::identity::Keypair,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, String> {
    let heartbeat = config.heartbeat;
    let timeout = config.request_timeout;
    let mdns_on = config.mdns;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| format!("tcp transport: {e}"))?
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| format!("memory transport: {e}"))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(heartbeat)
                .heartbeat_initial_delay(Duration::from_millis(100))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(wire::MAX_MESSAGE_BYTES)
                .build()
                .map_err(|e| format!("gossipsub config: {e}"))?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            gossipsub.with_peer_score(score_params(), gossipsub::PeerScoreThresholds::default())?;
            gossipsub
                .subscribe(&IdentTopic::new(TOPIC))
                .map_err(|e| format!("subscribe: {e}"))?;
            // The codec's cap is a backstop: the gate refuses anything over
            // MAX_MESSAGE_BYTES with a logged reason, so let a little more through to it.
            let codec = request_response::json::codec::Codec::default()
                .set_request_size_maximum(4 * wire::MAX_MESSAGE_BYTES as u64)
                .set_response_size_maximum(4 * wire::MAX_MESSAGE_BYTES as u64);
            let rr = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(RR_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(timeout),
            );
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let identify =
                identify::Behaviour::new(identify::Config::new("/apiary/1".into(), key.public()));
            let mdns = if mdns_on {
                match mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!("mDNS unavailable ({e}); use --bootstrap to find peers");
                        None
                    }
                }
            } else {
                None
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                gossipsub,
                rr,
                kad,
                identify,
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|e| format!("network behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Peer scoring: the rounds topic scored by invalid messages only (P4, squared, so a few
/// refusals in a row cross the thresholds: -10 gossip, -50 publish, -80 graylist), plus
/// the application score (reputation, see [`Net::set_reputation`]). The other topic
/// terms are off: time in mesh and first deliveries would outweigh the penalty within
/// seconds, and mesh delivery quotas would punish honest peers on a quiet topic.
fn score_params() -> gossipsub::PeerScoreParams {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -1.0,
        // Per decay interval (1 s): an occasional refusal is forgotten in seconds.
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    let mut p = gossipsub::PeerScoreParams::default();
    p.topics.insert(IdentTopic::new(TOPIC).hash(), topic);
    p
}

/// Below this many entries, the pending-request and reply tables are not swept.
const SWEEP_FLOOR: usize = 64;

struct Task {
    swarm: Swarm<Behaviour>,
    gate: Gate,
    pending: HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<Envelope, String>>)>,
    replies: HashMap<ReplyToken, ResponseChannel<serde_json::Value>>,
    /// Sweep `pending` and `replies` when either grows past this (then twice the size
    /// left): amortised O(1), and both stay within twice what is really outstanding.
    sweep_at: usize,
    next_reply: u64,
    inbound: mpsc::UnboundedSender<Inbound>,
    stats: Arc<Mutex<NetStats>>,
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Shutdown) | None => return,
                    Some(c) => self.command(c),
                },
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Publish(bytes, tx) => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(TOPIC), bytes)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = tx.send(r);
            }
            Cmd::PublishRaw(bytes) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(TOPIC), bytes);
            }
            Cmd::Request { peer, env, tx } => {
                let value = serde_json::to_value(&env).expect("envelopes serialize");
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, value);
                self.pending.insert(id, (peer, tx));
                self.sweep();
            }
            Cmd::RequestRaw { peer, value, tx } => {
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, value);
                self.pending.insert(id, (peer, tx));
                self.sweep();
            }
            Cmd::Respond(token, env) => {
                if let Some(ch) = self.replies.remove(&token) {
                    let value = serde_json::to_value(&env).expect("envelopes serialize");
                    let _ = self.swarm.behaviour_mut().rr.send_response(ch, value);
                }
            }
            Cmd::Peers(tx) => {
                let topic = IdentTopic::new(TOPIC).hash();
                let peers = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&topic))
                    .map(|(p, _)| *p)
                    .collect();
                let _ = tx.send(peers);
            }
            Cmd::Listening(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Cmd::Shutdown => {}
            Cmd::PeerScore(peer, tx) => {
                let _ = tx.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Cmd::Score(peer, reputation) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer, reputation - 0.5);
            }
            Cmd::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!("cannot dial {addr}: {e}");
                }
            }
        }
    }

    /// Forget requests nobody waits for any more (the round's deadline passed: the
    /// libp2p request itself times out later) and replies whose peer is gone.
    fn sweep(&mut self) {
        if self.pending.len().max(self.replies.len()) < self.sweep_at {
            return;
        }
        self.pending.retain(|_, (_, tx)| !tx.is_closed());
        self.replies.retain(|_, ch| ch.is_open());
        self.sweep_at = SWEEP_FLOOR.max(2 * self.pending.len().max(self.replies.len()));
        self.publish_held();
    }

    fn held(&self) -> Held {
        Held {
            gate: self.gate.held(),
            pending_requests: self.pending.len(),
            open_replies: self.replies.len(),
        }
    }

    fn publish_held(&self) {
        let held = self.held();
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).held = held;
    }

    /// Spend from the budgets of a message's peers; refusals counted and logged (the
    /// first, then every power of ten: a flood must not become a flood of log lines).
    fn admit(&mut self, channel: Channel, author: &PeerId, connection: &PeerId) -> bool {
        let Err(reason) = self.gate.admit(channel, author, connection, wire::now_ms()) else {
            return true;
        };
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let n = stats
            .rejected
            .entry(rejection_kind(&reason).to_string())
            .or_default();
        *n += 1;
        let n = *n;
        drop(stats);
        let what = match channel {
            Channel::Gossip => "gossip",
            Channel::Request => "request",
        };
        if n.checked_ilog10().is_some_and(|l| 10u64.pow(l) == n) {
            tracing::warn!(peer = %author, via = %connection, "rejected {what}: {reason} ({n} refused so far)");
        } else {
            tracing::debug!(peer = %author, via = %connection, "rejected {what}: {reason}");
        }
        false
    }

    /// Pass a message through the gate, counting and logging refusals.
    fn check(
        &mut self,
        value: serde_json::Value,
        len: usize,
        peer: &PeerId,
        what: &str,
    ) -> Option<Envelope> {
        let peer_node = wire::node_id_of(peer);
        let r = self
            .gate
            .open(value, len, peer_node.as_deref(), wire::now_ms());
        let held = self.held();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.held = held;
        match r {
            Ok(env) => {
                stats.accepted += 1;
                Some(env)
            }
            Err(reason) => {
                *stats
                    .rejected
                    .entry(rejection_kind(&reason).to_string())
                    .or_default() += 1;
                tracing::warn!(peer = %peer, "rejected {what}: {reason}");
                None
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}/p2p/{}", self.swarm.local_peer_id());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let len = message.data.len();
                let source = message.source.unwrap_or(propagation_source);
                // Over budget: refused unread, and reported like any refusal, so the
                // peers that delivered it lose score (an honest relay only forwards what
                // its own budgets let through, so it is rarely among them).
                let env = if !self.admit(Channel::Gossip, &source, &propagation_source) {
                    None
                } else {
                    match serde_json::from_slice::<serde_json::Value>(&message.data) {
                        Ok(v) => self.check(v, len, &source, "gossip"),
                        Err(e) => {
                            self.count_malformed(&source, "gossip", &e.to_string());
                            None
                        }
                    }
                };
                let acceptance = if env.is_some() {
                    MessageAcceptance::Accept
                } else {
                    MessageAcceptance::Reject
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                if let Some(env) = env {
                    let _ = self.inbound.send(Inbound::Gossip { env });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    // Over budget: dropped unread and unanswered (the channel with it),
                    // which costs nothing to sign.
                    if !self.admit(Channel::Request, &peer, &peer) {
                        drop(channel);
                        return;
                    }
                    let len = request.to_string().len();
                    if let Some(env) = self.check(request, len, &peer, "request") {
                        let reply = ReplyToken(self.next_reply);
                        self.next_reply += 1;
                        self.replies.insert(reply, channel);
                        self.sweep();
                        let _ = self.inbound.send(Inbound::Request { peer, env, reply });
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let len = response.to_string().len();
                    let env = self.check(response, len, &peer, "response");
                    if let Some((_, tx)) = self.pending.remove(&request_id) {
                        let _ = tx.send(env.ok_or_else(|| "response refused".to_string()));
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Rr(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                if let Some((peer, tx)) = self.pending.remove(&request_id) {
                    let _ = tx.send(Err(format!("request to {peer} failed: {error}")));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => {
                // A body the codec could not read (not JSON, or over the codec's cap).
                if matches!(error, request_response::InboundFailure::Io(_)) {
                    self.count_malformed(&peer, "request", &error.to_string());
                } else {
                    tracing::debug!(peer = %peer, "inbound request failed: {error}");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                    self.swarm.add_peer_address(peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
                        continue;
                    }
                    tracing::info!("mDNS found {peer} at {addr}");
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.swarm.add_peer_address(peer, addr.clone());
                    let _ = self.swarm.dial(addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) if !self.swarm.is_connected(&peer) => {
                let _ = self.swarm.dial(peer);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::debug!("connected to {peer_id}");
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                tracing::debug!("disconnected from {peer_id}: {cause:?}");
            }
            _ => {}
        }
    }

    fn count_malformed(&mut self, peer: &PeerId, what: &str, why: &str) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *stats.rejected.entry("malformed".to_string()).or_default() += 1;
        tracing::warn!(peer = %peer, "rejected {what}: malformed: {why}");
    }
}
