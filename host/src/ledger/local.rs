//! Recording a local round (one node, its plugins as members) in the ledger.

use super::identity::NodeKey;
use super::transcript::{AnswerMsg, Member, Params, Transcript, VerdictMsg};
use crate::consensus::scoring::{ReputationParams, Standing};
use crate::round::RoundReport;
use sha2::{Digest, Sha256};

/// Ledger key of a local plugin.
pub fn member_key(node: &str, plugin: &str) -> String {
    format!("{node}/{plugin}")
}

/// Parameters of local rounds: the operator's own plugins need no calibration.
pub fn local_params() -> Params {
    Params {
        reputation: ReputationParams {
            require_calibration: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A fresh round id: hash of the node, the prompt and the time.
pub fn round_id(node: &str, prompt: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(prompt.as_bytes());
    h.update(nanos.to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The signed transcript of `report`. Forfeited answers (their plugin faulted) and the
/// faulty plugins' verdicts are left out, as the round left them out; the winning answer
/// comes first, so that an undecided round (no weighted preference) recomputes to it.
pub fn transcript(
    key: &NodeKey,
    id: String,
    report: &RoundReport,
    before: &[Standing],
    params: Params,
) -> Transcript {
    let node = key.id();
    let members: Vec<Member> = report
        .members
        .iter()
        .zip(before)
        .map(|(m, s)| Member {
            key: member_key(&node, &m.plugin),
            before: *s,
        })
        .collect();
    let mut order: Vec<usize> = (0..report.answers.len())
        .filter(|&i| !report.answers[i].disqualified)
        .collect();
    if let Some(w) = report.winner {
        order.retain(|&i| i != w);
        order.insert(0, w);
    }
    let pos = |a: usize| order.iter().position(|&x| x == a);
    let answers = order
        .iter()
        .map(|&i| AnswerMsg {
            round: id.clone(),
            member: report.answers[i].member,
            text: report.answers[i].text.clone(),
        })
        .collect();
    let verdicts = report
        .verdicts
        .iter()
        .filter(|v| !report.members[v.judge_member].fault)
        .filter_map(|v| {
            Some(VerdictMsg {
                round: id.clone(),
                judge: v.judge_member,
                first: pos(v.first)?,
                second: pos(v.second)?,
                outcome: v.outcome?,
            })
        })
        .collect();
    Transcript::build(
        key,
        id,
        report.prompt.clone(),
        report.seed,
        members,
        params,
        answers,
        verdicts,
    )
}
