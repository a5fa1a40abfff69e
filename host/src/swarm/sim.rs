//! `apiary sim`: many nodes in one process, talking over libp2p's in-memory transport
//! with the real protocol, gate and consensus, and simulated experts instead of plugins.
//!
//! Questions are sums ("What is 17 + 25?") so every simulated expert knows the truth and
//! can be made as good or as bad as the scenario needs:
//! - honest nodes answer right with probability `answer_accuracy` and prefer a right
//!   answer over a wrong one with probability `judge_accuracy`;
//! - garbage nodes answer noise and judge at random;
//! - colluders all answer the same wrong number and always vote for it (they judge
//!   calibration items honestly, as a careful attacker would);
//! - slow nodes answer after the deadline, crashing nodes drop off the network when asked
//!   for their answer, forgers attack the entry node with bad messages each round;
//! - a flooder ([`flood`]) announces rounds and sends requests as fast as it is let,
//!   all validly signed with fresh nonces.
//!
//! [`run`] and [`start`] grant peers [`Limits::simulation`]: instant experts run rounds
//! back to back, far faster than an honest node with real plugins would announce them.
//! [`start_with`] takes the limits (and every node's role) explicitly.

use super::expertise::{Expertise, Volunteer, Work};
use super::limits::Limits;
use super::net::NetConfig;
use super::node::{Node, Persona, RoundSettings};
use super::wire::{AnswerReply, Join, Msg, RoundRequest, VerdictReply, now_ms};
use crate::consensus::Outcome;
use crate::consensus::pairs::SplitMix;
use crate::ledger::{Ledger, NodeKey};
use crate::sandbox::{Request, WitAnswer};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Honest,
    Garbage,
    Colluder,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub rounds: usize,
    pub seed: u64,
    /// Fractions of the nodes (taken in this order; the rest are honest).
    pub colluders: f64,
    pub garbage: f64,
    pub slow: f64,
    pub crashing: f64,
    pub forgers: f64,
    pub answer_accuracy: f64,
    pub judge_accuracy: f64,
    pub settings: RoundSettings,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 8,
            rounds: 10,
            seed: 1,
            colluders: 0.0,
            garbage: 0.0,
            slow: 0.0,
            crashing: 0.0,
            forgers: 0.0,
            answer_accuracy: 0.8,
            judge_accuracy: 0.8,
            settings: RoundSettings {
                join_ms: 2_000,
                answer_ms: 2_000,
                judge_ms: 2_000,
                ..Default::default()
            },
        }
    }
}

/// A simulated expert: instant, with the competence its role gives it.
pub struct SimExpert {
    pub role: Role,
    pub index: u64,
    pub answer_accuracy: f64,
    pub judge_accuracy: f64,
}

/// `(a, b)` of "What is a + b?".
fn parse_sum(prompt: &str) -> Option<(i64, i64)> {
    let rest = prompt.strip_prefix("What is ")?.strip_suffix('?')?;
    let (a, b) = rest.split_once(" + ")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The number the colluders agree on.
fn collusion_target(truth: i64) -> i64 {
    truth + 1_000
}

struct SimWork {
    role: Role,
    truth: Option<i64>,
    rng: SplitMix,
    answer_accuracy: f64,
    judge_accuracy: f64,
}

impl SimWork {
    fn chance(&mut self, p: f64) -> bool {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

impl Work for SimWork {
    fn answer(&mut self, _req: &Request) -> Result<WitAnswer, String> {
        let truth = self.truth.ok_or("not a sum")?;
        let lucky = self.chance(self.answer_accuracy);
        let (text, confidence) = match self.role {
            Role::Honest if lucky => (truth.to_string(), 0.9),
            Role::Honest => (
                (truth + 1 + (self.rng.next_u64() % 9) as i64).to_string(),
                0.9,
            ),
            Role::Garbage => (format!("zzz{}", self.rng.next_u64() % 1000), 1.0),
            Role::Colluder => (collusion_target(truth).to_string(), 1.0),
        };
        Ok(WitAnswer {
            text,
            confidence,
            choice: None,
            option_scores: Vec::new(),
            tokens: 0,
        })
    }

    fn judge(&mut self, req: &Request, first: &str, second: &str) -> Result<Outcome, String> {
        let prompt = req.prompt.as_str();
        let Some((a, b)) = parse_sum(prompt) else {
            // Calibration geography: every simulated judge knows the capitals it is shown
            // as well as its accuracy lets it.
            return Ok(Outcome::Tie);
        };
        let truth = a + b;
        let is_calibration = self.truth != Some(truth);
        let value = |s: &str| s.trim().parse::<i64>().ok();
        let (f, s) = (value(first), value(second));
        if self.role == Role::Colluder && !is_calibration {
            let target = Some(collusion_target(truth));
            return Ok(if f == target {
                Outcome::First
            } else if s == target {
                Outcome::Second
            } else {
                Outcome::Tie
            });
        }
        if self.role == Role::Garbage {
            return Ok(match self.rng.next_u64() % 3 {
                0 => Outcome::First,
                1 => Outcome::Second,
                _ => Outcome::Tie,
            });
        }
        let right = |v: Option<i64>| v == Some(truth);
        let accurate = is_calibration || self.chance(self.judge_accuracy);
        Ok(match (right(f), right(s)) {
            (true, false) if accurate => Outcome::First,
            (true, false) => Outcome::Second,
            (false, true) if accurate => Outcome::Second,
            (false, true) => Outcome::First,
            _ => Outcome::Tie,
        })
    }
}

impl Expertise for SimExpert {
    fn volunteer(&self, req: &Request, _threshold: f32) -> Volunteer {
        let truth = parse_sum(&req.prompt).map(|(a, b)| a + b);
        let work = SimWork {
            role: self.role,
            truth,
            rng: SplitMix(req.seed ^ self.index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            answer_accuracy: self.answer_accuracy,
            judge_accuracy: self.judge_accuracy,
        };
        Volunteer {
            score: if truth.is_some() { 0.9 } else { 0.0 },
            plugin: format!("sim-{:?}", self.role).to_lowercase(),
            willing: truth.is_some(),
            work: truth.map(|_| Box::new(work) as Box<dyn Work>),
        }
    }

    fn names(&self) -> Vec<String> {
        vec!["sim".into()]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SimRound {
    pub prompt: String,
    pub truth: i64,
    pub answer: Option<String>,
    pub correct: bool,
    pub single_answer: bool,
    pub members: usize,
    pub answers: usize,
    pub verdicts: usize,
    pub ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub nodes: usize,
    pub roles: Vec<(String, usize)>,
    pub rounds: Vec<SimRound>,
    /// Share of rounds whose consensus answer was right.
    pub accuracy: f64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    /// Refusals at the entry node, by reason.
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// Which role and persona node `i` of `n` gets.
pub fn cast(c: &SimConfig, i: usize) -> (Role, Persona) {
    // Node 0 is the entry node: always honest. Roles are dealt from node 1 on.
    if i == 0 {
        return (Role::Honest, Persona::Honest);
    }
    let n = c.nodes as f64;
    let mut edge = 0.0;
    let mut next = |f: f64| {
        edge += (f * n).round();
        ((i - 1) as f64) < edge
    };
    if next(c.colluders) {
        (Role::Colluder, Persona::Honest)
    } else if next(c.garbage) {
        (Role::Garbage, Persona::Honest)
    } else if next(c.slow) {
        (Role::Honest, Persona::Slow(c.settings.answer_ms * 2))
    } else if next(c.crashing) {
        (Role::Honest, Persona::Crash)
    } else if next(c.forgers) {
        (Role::Honest, Persona::Forger)
    } else {
        (Role::Honest, Persona::Honest)
    }
}

/// Start the nodes of a simulated swarm and wait for the mesh to form; node 0 is the
/// entry node. Returns the nodes and a count of roles. Must run inside a tokio runtime.
pub async fn start(c: &SimConfig) -> Result<(Vec<Node>, Vec<(String, usize)>), String> {
    start_with(c, |i| cast(c, i), Limits::simulation()).await
}

/// [`start`], with node `i` cast as `roles(i)` and every node granting its peers `limits`.
pub async fn start_with(
    c: &SimConfig,
    roles_of: impl Fn(usize) -> (Role, Persona),
    limits: Limits,
) -> Result<(Vec<Node>, Vec<(String, usize)>), String> {
    let mut members: Vec<(Arc<dyn Expertise>, Persona)> = Vec::new();
    let mut roles = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..c.nodes {
        let (role, persona) = roles_of(i);
        *roles
            .entry(format!("{role:?}/{persona:?}").to_lowercase())
            .or_default() += 1;
        let expert = SimExpert {
            role,
            index: i as u64,
            answer_accuracy: c.answer_accuracy,
            judge_accuracy: c.judge_accuracy,
        };
        members.push((Arc::new(expert), persona));
    }
    let nodes = spawn(c.seed, &c.settings, members, limits).await?;
    Ok((nodes, roles.into_iter().collect()))
}

/// Start one node per member (its expertise and persona) in this process over the
/// in-memory transport, and wait for the mesh to form; node 0 is the entry node. Keys
/// come from `seed`, so a run is reproducible. Must run inside a tokio runtime.
pub async fn spawn(
    seed: u64,
    settings: &RoundSettings,
    members: Vec<(Arc<dyn Expertise>, Persona)>,
    limits: Limits,
) -> Result<Vec<Node>, String> {
    // Memory-transport ports are global to the process: never reuse one.
    static NEXT_PORT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(10_000);
    let n = members.len();
    let base = NEXT_PORT.fetch_add(n as u64 + 1, std::sync::atomic::Ordering::Relaxed);
    let mut nodes: Vec<Node> = Vec::new();
    for (i, (expertise, persona)) in members.into_iter().enumerate() {
        let addr: libp2p::Multiaddr = format!("/memory/{}", base + i as u64)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut bootstrap = Vec::new();
        // A connected graph with short paths: each node dials up to 8 earlier ones.
        let mut rng = SplitMix(seed ^ i as u64);
        for k in 0..i.min(8) {
            let j = if i <= 8 {
                k
            } else {
                (rng.next_u64() % i as u64) as usize
            };
            let peer = nodes[j].net().peer_id;
            bootstrap.push(
                format!("/memory/{}/p2p/{peer}", base + j as u64)
                    .parse()
                    .map_err(|e| format!("{e}"))?,
            );
        }
        let net = NetConfig {
            listen: vec![addr],
            bootstrap,
            mdns: false,
            heartbeat: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
            limits,
        };
        let ledger = Ledger::in_memory().map_err(|e| e.to_string())?;
        // Keys from the seed: node ids order members, so a run is reproducible.
        let mut secret = [0u8; 32];
        let mut krng = SplitMix(seed.wrapping_mul(0x5EED) ^ (i as u64) << 32);
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&krng.next_u64().to_le_bytes());
        }
        let node = Node::start(
            NodeKey::from_secret(secret),
            ledger,
            expertise,
            net,
            settings.clone(),
            persona,
        )?;
        nodes.push(node);
    }
    // Let the mesh form: every node must see the entry node's topic subscription.
    let entry = nodes.first().ok_or("no nodes to start")?.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while entry.net().peers().await.len() < n.saturating_sub(1).min(8)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(nodes)
}

/// What a flooder sent.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FloodReport {
    /// Round announcements published (every tenth with its deadline a day ahead).
    pub announcements: u64,
    /// Requests sent (joins for rounds nobody announced, unsolicited answers and
    /// verdicts), and how many were answered at all.
    pub requests: u64,
    pub answered: u64,
}

/// Flood the swarm from `flooder` for `for_ms`: round announcements with its own valid
/// signature and a fresh nonce each (sums, which every simulated expert volunteers
/// for), and requests to each of `targets` in turn; `per_s` of each a second. A real
/// flooder on its own machine could go faster; in one process that would only take the
/// CPU from the honest nodes, which is not what is tested.
pub async fn flood(
    flooder: Node,
    targets: Vec<libp2p::PeerId>,
    for_ms: u64,
    per_s: u64,
) -> FloodReport {
    let mut report = FloodReport::default();
    let mut inflight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_s.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = now_ms() + for_ms;
    let me = flooder.id().to_string();
    let mut n: u64 = 0;
    while now_ms() < end {
        tick.tick().await;
        n += 1;
        let now = now_ms();
        let far = if n.is_multiple_of(10) { 86_400_000 } else { 0 };
        let announce = Msg::Request(RoundRequest {
            round: format!("flood-{n}"),
            entry: me.clone(),
            prompt: format!("What is {} + {}?", n % 1000, n / 1000),
            domain: None,
            max_tokens: 16,
            temperature: 0.0,
            seed: n,
            choices: Vec::new(),
            messages: Vec::new(),
            join_by: now + 1_000,
            answer_by: now + 2_000,
            judge_by: now + 3_000 + far,
            // A flooder lists every round it started as open: it keeps its slots.
            open: (1..n).rev().take(8).map(|k| format!("flood-{k}")).collect(),
        });
        if flooder.net().publish(&flooder.sign(announce)).await.is_ok() {
            report.announcements += 1;
        }
        if targets.is_empty() {
            continue;
        }
        let round = format!("flood-{n}");
        let msg = match n % 3 {
            0 => Msg::Join(Join {
                round,
                willing: true,
                score: 1.0,
                plugin: "flood".into(),
                note: None,
            }),
            1 => Msg::Verdicts(VerdictReply {
                round,
                verdicts: Vec::new(),
            }),
            _ => Msg::Answer(AnswerReply {
                round,
                answer: None,
                error: Some("flood".into()),
            }),
        };
        let peer = targets[(n as usize) % targets.len()];
        let env = flooder.sign(msg);
        let net = flooder.net().clone();
        while inflight.len() >= 64 {
            if let Some(Ok(true)) = inflight.join_next().await {
                report.answered += 1;
            }
        }
        report.requests += 1;
        inflight.spawn(async move {
            matches!(
                tokio::time::timeout(Duration::from_secs(2), net.request(peer, env)).await,
                Ok(Ok(_))
            )
        });
    }
    while let Some(r) = inflight.join_next().await {
        if let Ok(true) = r {
            report.answered += 1;
        }
    }
    report
}

/// A question of the simulation and its answer.
pub fn question(rng: &mut SplitMix) -> (String, i64) {
    let (a, b) = (
        10 + (rng.next_u64() % 990) as i64,
        10 + (rng.next_u64() % 990) as i64,
    );
    (format!("What is {a} + {b}?"), a + b)
}

/// Start the nodes, run the rounds from node 0, report. Must run inside a tokio runtime.
pub async fn run(c: SimConfig) -> Result<SimReport, String> {
    let (nodes, roles) = start(&c).await?;
    let entry = nodes[0].clone();
    let mut rounds = Vec::new();
    let mut rng = SplitMix(c.seed.wrapping_mul(31));
    for r in 0..c.rounds {
        let (prompt, truth) = question(&mut rng);
        let out = entry
            .ask(&prompt, None, 32, 0.0, Some(c.seed ^ (r as u64 + 1)), None)
            .await;
        rounds.push(match out {
            Ok(res) => SimRound {
                prompt,
                truth,
                correct: res.answer.trim() == truth.to_string(),
                answer: Some(res.answer),
                single_answer: res.single_answer,
                members: res.members.len(),
                answers: res.answers,
                verdicts: res.verdicts,
                ms: res.elapsed_ms,
                error: None,
            },
            Err(e) => SimRound {
                prompt,
                truth,
                answer: None,
                correct: false,
                single_answer: false,
                members: 0,
                answers: 0,
                verdicts: 0,
                ms: 0,
                error: Some(e.to_string()),
            },
        });
    }
    let mut ms: Vec<u64> = rounds
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.ms)
        .collect();
    ms.sort_unstable();
    let pct = |p: f64| {
        if ms.is_empty() {
            0
        } else {
            ms[((ms.len() - 1) as f64 * p).round() as usize]
        }
    };
    let accuracy = if rounds.is_empty() {
        0.0
    } else {
        rounds.iter().filter(|r| r.correct).count() as f64 / rounds.len() as f64
    };
    let report = SimReport {
        nodes: c.nodes,
        roles,
        accuracy,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        rejected: entry.net().stats().rejected,
        rounds,
    };
    for n in &nodes {
        n.net().shutdown();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_parse_and_roles_are_cast_by_fraction() {
        assert_eq!(parse_sum("What is 17 + 25?"), Some((17, 25)));
        assert_eq!(parse_sum("What is the capital of France?"), None);
        let c = SimConfig {
            nodes: 10,
            colluders: 0.3,
            crashing: 0.1,
            ..Default::default()
        };
        let roles: Vec<_> = (0..10).map(|i| cast(&c, i)).collect();
        assert_eq!(roles[0], (Role::Honest, Persona::Honest));
        assert_eq!(roles.iter().filter(|r| r.0 == Role::Colluder).count(), 3);
        assert_eq!(roles.iter().filter(|r| r.1 == Persona::Crash).count(), 1);
    }
}
