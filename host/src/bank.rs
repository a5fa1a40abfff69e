//! A node's own known-answer rounds: a bank of multiple-choice items with their right
//! options, asked now and then while the node has nothing else to do.
//!
//! Why: a member's voice in the pooled option scores follows its record on rounds whose
//! right answer the entry node knew (`consensus::known`, `consensus::debias`). Without
//! such rounds the standings follow agreement with the consensus, and a confident wrong
//! model wins agreement. `apiary eval --calibrate` plays them before it scores; a node in
//! a real swarm needs them as well, or its standings never learn who is right.
//!
//! A known-answer round is announced like any other (members are never told; the bank is
//! the operator's, so no plugin has seen it), and its transcript records the right option,
//! signed by this node, so every node that folds the transcript measures the members the
//! same way: the record is all there is, no per-node state beside it.
//!
//! - [`Bank`]: the items, checked when the node starts (a bad line is an error that names
//!   it, not a round that fails later);
//! - [`Schedule`]: when the next round is due and which item it asks, a pure state
//!   machine with the clock passed in; the gaps are jittered so that a steady beat does
//!   not tell members which rounds are tests;
//! - [`spawn`]: the task that plays them through [`Node::ask_known`], only while the node
//!   is idle (`Node::idle`: the governor active, no round of its own or as a member).

use crate::consensus::pairs::SplitMix;
use crate::eval::{Item, Kind, gold_option, read_items};
use crate::sandbox::Request;
use crate::swarm::{Node, RoundResult};
use std::path::Path;
use std::time::Duration;

/// The most items a bank may hold: a bank is read into memory whole.
pub const MAX_ITEMS: usize = 100_000;
/// The shortest gap between two known-answer rounds.
pub const MIN_EVERY_MS: u64 = 1_000;

/// One item of the bank: the request it asks and the option that is right.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: String,
    pub request: Request,
    pub right: u32,
}

/// The operator's known-answer items.
#[derive(Debug, Clone)]
pub struct Bank {
    pub items: Vec<Known>,
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("cannot read the known-answer bank {path}: {why}")]
    Read { path: String, why: String },
    #[error(
        "known-answer bank {path}: {why} (each line is an `apiary eval` item: \
         {{\"id\", \"task\", \"kind\": \"choice\", \"question\", \"choices\", \"answer\"}})"
    )]
    Invalid { path: String, why: String },
}

impl Bank {
    /// The bank in the file at `path` (JSON lines, the `apiary eval` item format).
    pub fn read(path: &Path) -> Result<Bank, BankError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BankError::Read {
            path: name.clone(),
            why: e.to_string(),
        })?;
        Bank::parse(&text).map_err(|why| BankError::Invalid { path: name, why })
    }

    /// The bank in `text`: every item multiple choice, with at least two options and an
    /// answer that names one of them.
    pub fn parse(text: &str) -> Result<Bank, String> {
        let items = read_items(text)?;
        if items.is_empty() {
            return Err("it holds no items".into());
        }
        if items.len() > MAX_ITEMS {
            return Err(format!(
                "it holds {} items, more than {MAX_ITEMS}",
                items.len()
            ));
        }
        let items = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                known(item).map_err(|why| format!("item {} ({}): {why}", i + 1, item.id))
            })
            .collect::<Result<_, _>>()?;
        Ok(Bank { items })
    }
}

/// An item as a known-answer request.
fn known(item: &Item) -> Result<Known, String> {
    if item.kind != Kind::Choice {
        return Err("a known-answer round is multiple choice (\"kind\": \"choice\")".into());
    }
    if item.choices.len() < 2 {
        return Err("it needs at least two choices".into());
    }
    let right = gold_option(item).ok_or_else(|| {
        format!(
            "its answer {:?} is neither a letter A-{} nor one of the choices",
            item.answer,
            (b'A' + item.choices.len().min(26) as u8 - 1) as char
        )
    })?;
    let mut request = crate::round::request(&item.question, 0);
    request.choices = item.choices.clone();
    request.domain = item.domain.clone();
    Ok(Known {
        id: item.id.clone(),
        request,
        right,
    })
}

/// When the next known-answer round is due and which item it asks: every item once per
/// pass, in an order shuffled afresh each pass from the seed.
#[derive(Debug, Clone)]
pub struct Schedule {
    every_ms: u64,
    due_ms: u64,
    /// The state of a `SplitMix` stream (kept as its number so the schedule can be
    /// printed and cloned).
    rng: u64,
    order: Vec<usize>,
    next: usize,
}

impl Schedule {
    /// A schedule over `items` items, one round every `every_ms` on average, the first
    /// due about one gap after `now_ms` (the plugins are still loading at start).
    pub fn new(items: usize, every_ms: u64, seed: u64, now_ms: u64) -> Schedule {
        let mut s = Schedule {
            every_ms: every_ms.max(MIN_EVERY_MS),
            due_ms: 0,
            rng: seed ^ 0x4B4E_0057_4E00_0001,
            order: (0..items).collect(),
            next: items,
        };
        s.due_ms = now_ms + s.gap();
        s
    }

    /// When the next round is due.
    pub fn due_ms(&self) -> u64 {
        self.due_ms
    }

    /// The item to ask now, if one is due and the node is `idle`; a busy node keeps the
    /// round due and asks once it is idle again.
    pub fn poll(&mut self, now_ms: u64, idle: bool) -> Option<usize> {
        if now_ms < self.due_ms || !idle || self.order.is_empty() {
            return None;
        }
        if self.next == self.order.len() {
            let mut rng = SplitMix(self.draw());
            rng.shuffle(&mut self.order);
            self.next = 0;
        }
        let item = self.order[self.next];
        self.next += 1;
        self.due_ms = now_ms + self.gap();
        Some(item)
    }

    /// Half to one and a half of `every_ms`: the mean is the operator's figure, and no
    /// two gaps need be alike.
    fn gap(&mut self) -> u64 {
        let u = (self.draw() >> 11) as f64 / (1u64 << 53) as f64;
        (self.every_ms as f64 * (0.5 + u)) as u64
    }

    fn draw(&mut self) -> u64 {
        let mut r = SplitMix(self.rng);
        let v = r.next_u64();
        self.rng = r.0;
        v
    }
}

/// How a known-answer round ended, for the log and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The swarm's answer was the right option.
    Right,
    /// It was another option, or no option at all.
    Wrong,
    /// The round ended without an answer (nobody volunteered or answered).
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Right => "right",
            Outcome::Wrong => "wrong",
            Outcome::Failed => "failed",
        }
    }

    /// What the round's winning answer says of `known`.
    pub fn of(known: &Known, r: &RoundResult) -> Outcome {
        let t = &r.transcript;
        let Some(a) = t.result.payload.winner.and_then(|w| t.answers.get(w)) else {
            return Outcome::Failed;
        };
        let picked = crate::eval::chosen(&a.payload.text, a.payload.choice, &known.request.choices);
        let right = ((b'A' + known.right as u8) as char).to_string();
        if picked.as_deref() == Some(right.as_str()) {
            Outcome::Right
        } else {
            Outcome::Wrong
        }
    }
}

/// Play the bank's rounds through `node` for as long as it runs: one every `every` on
/// average, each only while the node is idle.
pub fn spawn(node: Node, bank: Bank, every: Duration, seed: u64) -> tokio::task::JoinHandle<()> {
    let every_ms = (every.as_millis() as u64).max(MIN_EVERY_MS);
    let now = crate::swarm::wire::now_ms();
    let mut schedule = Schedule::new(bank.items.len(), every_ms, seed, now);
    // Often enough to catch an idle moment, rarely enough to cost nothing.
    let tick = Duration::from_millis((every_ms / 8).clamp(100, 10_000));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let now = crate::swarm::wire::now_ms();
            let Some(i) = schedule.poll(now, node.idle()) else {
                continue;
            };
            play(&node, &bank.items[i]).await;
        }
    })
}

async fn play(node: &Node, known: &Known) {
    let outcome = match node
        .ask_known(known.request.clone(), None, known.right)
        .await
    {
        Ok(r) => {
            let o = Outcome::of(known, &r);
            tracing::info!(
                round = %r.id,
                item = %known.id,
                "known-answer round: {} (decided by {:?})",
                o.name(),
                r.decided_by
            );
            o
        }
        Err(e) => {
            tracing::info!(item = %known.id, "known-answer round failed: {e}");
            Outcome::Failed
        }
    };
    crate::metrics::global().known_round(outcome.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"{"id": "a", "task": "t", "kind": "choice", "question": "Sky?", "choices": ["blue", "green"], "answer": "A"}
{"id": "b", "task": "t", "kind": "choice", "question": "Grass?", "choices": ["blue", "green"], "answer": "green", "domain": "Nature"}
"#;

    #[test]
    fn a_bank_reads_its_items_as_known_answer_requests() {
        let bank = Bank::parse(TWO).unwrap();
        assert_eq!(bank.items.len(), 2);
        assert_eq!(bank.items[0].right, 0);
        assert_eq!(bank.items[1].right, 1, "an answer may be the option's text");
        assert_eq!(bank.items[1].request.choices, ["blue", "green"]);
        assert_eq!(bank.items[1].request.domain.as_deref(), Some("Nature"));
        assert_eq!(bank.items[0].request.prompt, "Sky?");
    }

    #[test]
    fn a_bad_item_is_refused_by_its_place_and_id() {
        let cases = [
            ("", "no items"),
            (
                r#"{"id": "n", "task": "t", "kind": "number", "question": "1+1?", "answer": "2"}"#,
                "item 1 (n): a known-answer round is multiple choice",
            ),
            (
                r#"{"id": "c", "task": "t", "kind": "choice", "question": "?", "choices": ["x", "y"], "answer": "C"}"#,
                "item 1 (c): its answer \"C\" is neither a letter A-B",
            ),
            (
                r#"{"id": "o", "task": "t", "kind": "choice", "question": "?", "choices": ["x"], "answer": "A"}"#,
                "at least two choices",
            ),
            ("{not json", "line 1"),
        ];
        for (text, want) in cases {
            let e = Bank::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn every_item_is_asked_once_a_pass_in_a_seeded_order() {
        let mut s = Schedule::new(5, 1_000, 7, 0);
        let mut now = 0;
        let mut asked = Vec::new();
        while asked.len() < 10 {
            now += 100;
            if let Some(i) = s.poll(now, true) {
                asked.push(i);
            }
        }
        let mut first: Vec<usize> = asked[..5].to_vec();
        let mut second: Vec<usize> = asked[5..].to_vec();
        assert_ne!(first, second, "each pass is shuffled afresh: {asked:?}");
        first.sort();
        second.sort();
        assert_eq!(first, [0, 1, 2, 3, 4]);
        assert_eq!(second, [0, 1, 2, 3, 4]);
        let mut again = Schedule::new(5, 1_000, 7, 0);
        let replay: Vec<usize> = (1..=200)
            .filter_map(|k| again.poll(k * 100, true))
            .take(10)
            .collect();
        assert_eq!(replay, asked, "the same seed asks the same order");
    }

    #[test]
    fn gaps_are_jittered_around_the_mean_and_a_busy_node_waits() {
        let mut s = Schedule::new(3, 10_000, 1, 0);
        let mut gaps = Vec::new();
        let mut last = 0;
        for now in (0..2_000_000).step_by(50) {
            if s.poll(now, true).is_some() {
                gaps.push(now - last);
                last = now;
            }
        }
        assert!(
            gaps.iter().all(|&g| (5_000..=15_050).contains(&g)),
            "{gaps:?}"
        );
        let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
        assert!((8_500.0..11_500.0).contains(&mean), "mean gap {mean}");
        assert!(gaps.windows(2).any(|w| w[0] != w[1]), "{gaps:?}");

        let mut s = Schedule::new(3, 10_000, 1, 0);
        let due = s.due_ms();
        assert_eq!(s.poll(due - 1, true), None, "not yet due");
        assert_eq!(s.poll(due, false), None, "busy");
        assert_eq!(s.poll(due + 60_000, false), None, "still busy");
        assert!(
            s.poll(due + 60_001, true).is_some(),
            "due, and asked once idle"
        );
        assert!(s.due_ms() > due + 60_001, "the next gap starts from then");
    }

    #[test]
    fn a_tiny_gap_is_raised_to_the_floor() {
        let s = Schedule::new(1, 1, 1, 0);
        assert!(s.due_ms() >= MIN_EVERY_MS / 2);
    }
}
