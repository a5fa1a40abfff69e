//! What a node tells those watching it: the dashboard and any tool reading `GET
//! /v1/events`.
//!
//! Why a broadcast of JSON values rather than typed messages: watchers are outside the
//! protocol. Nothing here is signed or decides anything, a slow watcher must never slow a
//! round (a lagging receiver loses old events; the round does not wait), and the shapes are
//! the HTTP API's, so they are built once here and sent as they will be written. A round
//! event carries its id and phase; later phases add keys, so a watcher merges by id.

use crate::ledger::transcript::Transcript;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One event: its SSE name (`round`, `governor`, `plugins`) and its data.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
}

/// Events kept for a watcher that falls behind before it loses the oldest.
const BACKLOG: usize = 256;

pub struct Watchers {
    tx: broadcast::Sender<Event>,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Watchers {
    /// Tell every watcher; nobody watching is fine.
    pub fn send(&self, kind: &'static str, data: Value) {
        let _ = self.tx.send(Event { kind, data });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// A round's first event: what was asked, by whom.
pub fn forming(id: &str, prompt: &str, entry: &str, at_ms: u64) -> Value {
    json!({"id": id, "phase": "forming", "prompt": prompt, "entry": entry, "at_ms": at_ms})
}

/// The members seated, in seat order: (key, plugin).
pub fn answering(id: &str, seated: &[(String, String)]) -> Value {
    let members: Vec<Value> = seated
        .iter()
        .enumerate()
        .map(|(i, (key, plugin))| json!({"index": i, "key": key, "plugin": plugin}))
        .collect();
    json!({"id": id, "phase": "answering", "members": members})
}

/// The answers, as the judges will see them (anonymised: by member index).
pub fn judging(id: &str, answers: &[(usize, String)]) -> Value {
    let answers: Vec<Value> = answers
        .iter()
        .map(|(member, text)| json!({"member": member, "text": text}))
        .collect();
    json!({"id": id, "phase": "judging", "answers": answers})
}

pub fn failed(id: &str, error: &str) -> Value {
    json!({"id": id, "phase": "failed", "error": error})
}

/// A finished round as the dashboard and `GET /v1/rounds` show it, from its transcript:
/// the answer, how it was decided, each member's standing before and after, and whether
/// the transcript verifies.
pub fn summary(t: &Transcript, created_ms: u64) -> Value {
    let out = &t.result.payload;
    let winner = out.winner.and_then(|w| t.answers.get(w));
    let rewarded: Vec<usize> = t
        .answers
        .iter()
        .zip(&out.rewards)
        .filter(|(_, r)| **r > 0.0)
        .map(|(a, _)| a.payload.member)
        .collect();
    let members: Vec<Value> = t
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "key": m.key,
                "before": m.before.reputation,
                "after": out.after.get(i).map(|s| s.reputation),
                "rewarded": rewarded.contains(&i),
            })
        })
        .collect();
    let verdicts: Vec<Value> = t
        .verdicts
        .iter()
        .map(|v| {
            let v = &v.payload;
            json!({"judge": v.judge, "first": v.first, "second": v.second, "outcome": v.outcome})
        })
        .collect();
    let answers: Vec<Value> = t
        .answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "member": a.payload.member,
                "text": a.payload.text,
                "candidate": out.candidates.get(i).copied().flatten(),
            })
        })
        .collect();
    json!({
        "id": t.id,
        "phase": "done",
        "at_ms": created_ms,
        "prompt": t.prompt,
        "entry": t.entry,
        "domain": t.domain,
        "answer": winner.map(|a| a.payload.text.clone()),
        "winner": out.winner,
        "answers": answers,
        "candidates": out.candidates,
        "scores": out.scores,
        "decided_by": out.decided_by,
        "verdicts": verdicts,
        "members": members,
        "verified": t.verify().is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::NodeKey;

    #[test]
    fn a_summary_names_the_winner_members_and_verification() {
        let key = NodeKey::generate();
        let t = crate::ledger::transcript::tests::sample(&key);
        let s = summary(&t, 5);
        assert_eq!(s["phase"], "done");
        assert_eq!(s["verified"], true);
        assert_eq!(s["members"].as_array().unwrap().len(), t.members.len());
        let w = t.result.payload.winner.unwrap();
        assert_eq!(s["answer"], t.answers[w].payload.text.as_str());
        assert!(
            s["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["rewarded"] == true)
        );
    }

    #[test]
    fn a_tampered_transcript_is_shown_unverified() {
        let key = NodeKey::generate();
        let mut t = crate::ledger::transcript::tests::sample(&key);
        t.answers[0].payload.text.push('!');
        assert_eq!(summary(&t, 0)["verified"], false);
    }

    #[tokio::test]
    async fn watchers_get_events_and_nobody_watching_is_fine() {
        let w = Watchers::default();
        w.send("round", failed("r0", "nobody"));
        let mut rx = w.subscribe();
        w.send("round", forming("r1", "q", "e", 1));
        let e = rx.recv().await.unwrap();
        assert_eq!((e.kind, e.data["id"].as_str()), ("round", Some("r1")));
    }
}
