//! `apiary eval`: questions with known answers through rounds, and how each way of
//! combining the plugins' answers scores. The rounds are local (one process, the plugins
//! as members) or, with `--nodes N`, a swarm of N nodes over libp2p's in-memory transport
//! with the plugins spread over them ([`swarm`]): the same round engine either way, the
//! second with the network, the gate and the signatures in the loop.
//!
//! Items are JSON lines in the project's own format (`scripts/fetch-datasets.py` converts
//! the public test sets into it):
//!
//! ```json
//! {"id": "gsm8k/0", "task": "gsm8k", "kind": "number", "question": "...", "answer": "18"}
//! {"id": "arc_easy/MCAS_2000_4_6", "task": "arc_easy", "kind": "choice",
//!  "question": "...", "choices": ["cellular telephone", "television", ...], "answer": "A"}
//! {"id": "x", "task": "capitals", "kind": "exact", "question": "...", "answer": "Paris"}
//! ```
//!
//! Matching is strict and per kind ([`matches`]): the final number for `number`, the
//! chosen option (a plugin's `choice`, or a lone letter or the option's text) for
//! `choice`, and the whole answer or a sentence ending in it for `exact`. For every item
//! the report counts each plugin alone, a majority vote over the answerers' matched
//! answers, the swarm consensus, and the oracle (any answerer right). With a byzantine
//! fraction, that share of the judges (chosen by seed) has every verdict reversed and the
//! consensus is refitted, so the cost of adversarial judges is measured on the same rounds.

mod played;
pub mod swarm;

pub use played::{Played, Said};

use crate::plugins::Plugin;
use crate::round::{self, RoundConfig};
use crate::sandbox::{Request, Sandbox};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Number,
    Choice,
    Exact,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub task: String,
    pub kind: Kind,
    pub question: String,
    #[serde(default)]
    pub choices: Vec<String>,
    pub answer: String,
    /// The round's domain hint (`round::domain_of`); without one, the kind of task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Read items from JSON lines, naming the line of any bad one.
pub fn read_items(text: &str) -> Result<Vec<Item>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// The last number in `text` (commas between digits allowed, a trailing period not part
/// of it), as written.
pub fn final_number(text: &str) -> Option<f64> {
    let cleaned: String = text
        .char_indices()
        .filter(|&(i, c)| {
            // Drop thousands separators: a comma between two digits.
            !(c == ','
                && text[..i].chars().last().is_some_and(|p| p.is_ascii_digit())
                && text[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|n| n.is_ascii_digit()))
        })
        .map(|(_, c)| c)
        .collect();
    let mut last = None;
    let bytes: Vec<char> = cleaned.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let starts = c.is_ascii_digit()
            || (c == '-' && bytes.get(i + 1).is_some_and(|n| n.is_ascii_digit()));
        if starts {
            let mut j = i + 1;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit()
                    || (bytes[j] == '.' && bytes.get(j + 1).is_some_and(|n| n.is_ascii_digit())))
            {
                j += 1;
            }
            let s: String = bytes[i..j].iter().collect();
            last = s.parse::<f64>().ok().or(last);
            i = j;
        } else {
            i += 1;
        }
    }
    last
}

fn letter(i: usize) -> String {
    ((b'A' + i as u8) as char).to_string()
}

/// The option a reply picks: the plugin's `choice`, a reply that is just a letter (`B`,
/// `(B)`, `B.`, `Answer: B`), or a reply that is exactly one option's text.
pub fn chosen(reply: &str, choice: Option<u32>, choices: &[String]) -> Option<String> {
    if let Some(c) = choice
        && (c as usize) < choices.len()
    {
        return Some(letter(c as usize));
    }
    let t = reply.trim();
    let t = t.strip_prefix("Answer:").unwrap_or(t).trim();
    let bare = t.trim_matches(|c: char| c == '(' || c == ')' || c == '.' || c == ' ');
    if bare.len() == 1 && bare.chars().all(|c| c.is_ascii_uppercase()) {
        return Some(bare.to_string());
    }
    let norm = |s: &str| s.trim().trim_end_matches('.').to_lowercase();
    let hits: Vec<usize> = (0..choices.len())
        .filter(|&i| norm(&choices[i]) == norm(t))
        .collect();
    match hits.as_slice() {
        [i] => Some(letter(*i)),
        _ => None,
    }
}

/// What a reply means for this item, in a form that can be compared and voted on.
pub fn normalise(item: &Item, reply: &str, choice: Option<u32>) -> Option<String> {
    match item.kind {
        Kind::Number => final_number(reply).map(|v| format!("{v}")),
        Kind::Choice => chosen(reply, choice, &item.choices),
        Kind::Exact => {
            let t = reply.trim().trim_end_matches('.').to_lowercase();
            let gold = item.answer.trim().to_lowercase();
            // A sentence that ends in the gold answer counts; anything else is the reply.
            if t == gold || t.ends_with(&format!(" {gold}")) {
                Some(gold)
            } else {
                Some(t)
            }
        }
    }
}

/// The gold answer in the form [`normalise`] gives replies.
fn gold(item: &Item) -> Option<String> {
    match item.kind {
        Kind::Number => final_number(&item.answer).map(|v| format!("{v}")),
        Kind::Choice => Some(item.answer.trim().to_string()),
        Kind::Exact => Some(item.answer.trim().to_lowercase()),
    }
}

/// The right option of a multiple-choice item, by index: what a known-answer round
/// writes into its transcript.
pub fn gold_option(item: &Item) -> Option<u32> {
    let g = item.answer.trim();
    let i = match g.as_bytes() {
        [c @ b'A'..=b'Z'] => usize::from(c - b'A'),
        _ => item.choices.iter().position(|c| c.trim() == g)?,
    };
    (item.kind == Kind::Choice && i < item.choices.len()).then_some(i as u32)
}

/// Whether a reply is right.
pub fn matches(item: &Item, reply: &str, choice: Option<u32>) -> bool {
    let gold = gold(item);
    gold.is_some() && normalise(item, reply, choice) == gold
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    pub items: usize,
    pub per_plugin: BTreeMap<String, usize>,
    pub majority: usize,
    pub swarm: usize,
    pub swarm_byzantine: usize,
    /// Right with verdicts weighed by reputation alone (version 5's rule).
    pub swarm_unrecorded: usize,
    pub oracle: usize,
    /// Rounds with at least one answer.
    pub answered: usize,
    /// Rounds whose winner the judges' verdicts decided (two or more candidates, the fit
    /// separated the best): where the consensus, rather than routing, made the choice.
    pub judged: usize,
    /// Rounds with two or more candidates (different answers): where a rule had to choose.
    pub multi: usize,
    /// Multi-candidate rounds by what decided them ("verdicts", "pooled", "support",
    /// "order").
    pub by: BTreeMap<String, usize>,
    /// Each judge's verdicts on pairs with exactly one right answer.
    pub judges: BTreeMap<String, JudgeRecord>,
}

/// How a judge did on the pairs it was given where exactly one answer was right: whether
/// its verdicts deserve to decide rounds, which agreement with the consensus cannot
/// tell when the consensus is itself a weak model's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JudgeRecord {
    pub right: usize,
    pub wrong: usize,
    /// Abstained, called the two the same, or leaned less than
    /// [`crate::consensus::Outcome::DECISIVE_MARGIN`].
    pub no_lean: usize,
}

impl JudgeRecord {
    fn add(&mut self, right: Option<bool>) {
        match right {
            Some(true) => self.right += 1,
            Some(false) => self.wrong += 1,
            None => self.no_lean += 1,
        }
    }
}

/// One verdict on a pair with exactly one right answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeFact {
    pub judge: String,
    /// Whether it preferred the right answer; `None` when it did not lean.
    pub right: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub id: String,
    pub task: String,
    pub gold: String,
    pub swarm: Option<String>,
    pub swarm_right: bool,
    pub swarm_byzantine_right: bool,
    /// Whether the swarm would have been right with verdicts weighed by reputation
    /// alone (version 5's rule: [`Played::unrecorded_winner`]).
    pub swarm_unrecorded_right: bool,
    pub majority_right: bool,
    pub oracle: bool,
    pub right: Vec<String>,
    /// How the round chose: "none" (no answer), "single" (one candidate), or for two or
    /// more candidates "verdicts", "pooled", "support" or "order" (`ledger::fold`).
    pub decided_by: &'static str,
    pub ms: u64,
    /// Each transcript answer's plugin, pick and option scores, and the author's
    /// known-answer record before the round: what the pool read.
    pub answers: Vec<AnswerFacts>,
    /// The pooled probability of each option, when the round pooled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pooled: Vec<f64>,
    /// The verdicts on pairs with exactly one right answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub judges: Vec<JudgeFact>,
}

/// One answer as the pool saw it (for `--json` readers diagnosing the pool).
#[derive(Debug, Clone, Serialize)]
pub struct AnswerFacts {
    pub plugin: String,
    pub choice: Option<u32>,
    pub scores: Vec<f32>,
    /// The author's fitted scale before the round (`consensus::known`, version 3), once
    /// it has one.
    pub scale: Option<f64>,
    /// Its fitted scale on debiased scores (`consensus::debias`, version 4).
    pub debiased_scale: Option<f64>,
    /// Its known-answer rounds before this one, and how many it got right.
    pub known: (u32, u32),
    /// Its record as a judge on known-answer pairs with one right side before this
    /// round (`consensus::judge_record`, version 6).
    pub judge: crate::consensus::JudgeRecord,
}

/// What the pool read in a played round.
fn answer_facts(r: &Played) -> (Vec<AnswerFacts>, Vec<f64>) {
    let Some(t) = &r.transcript else {
        return (Vec::new(), Vec::new());
    };
    let facts = t
        .answers
        .iter()
        .map(|a| {
            let p = &a.payload;
            let known = t.members.get(p.member).map(|m| m.before.known);
            AnswerFacts {
                plugin: r.plugin_of.get(p.member).cloned().unwrap_or_default(),
                choice: p.choice,
                scores: p.option_scores.clone(),
                scale: known.and_then(|k| k.scale()),
                debiased_scale: known.and_then(|k| k.debiased.scale()),
                known: known.map_or((0, 0), |k| (k.answered, k.right)),
                judge: known.map(|k| k.judged).unwrap_or_default(),
            }
        })
        .collect();
    (facts, t.result.payload.pooled.clone())
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub byzantine: f64,
    /// Known-answer rounds played before the scored items (`--calibrate`), not scored.
    pub calibration_rounds: usize,
    /// The known-answer rounds played first, scored like the others but not counted.
    pub calibration: Vec<ItemResult>,
    pub per_task: BTreeMap<String, Tally>,
    pub overall: Tally,
    pub rounds_per_minute: f64,
    pub items: Vec<ItemResult>,
}

/// Run every item as a local round among `plugins`; `progress` is told after each.
pub fn run(
    sandbox: &Sandbox,
    plugins: &[Arc<Plugin>],
    items: &[Item],
    config: &RoundConfig,
    seed: u64,
    byzantine: f64,
    progress: impl FnMut(usize, &ItemResult),
) -> Result<Report, String> {
    let names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
    let items = Items {
        scored: items,
        calibration: &[],
    };
    run_with(
        &names,
        items,
        seed,
        byzantine,
        progress,
        |request, _known| {
            let r = round::run_local_round(sandbox, plugins, request, config)
                .map_err(|e| e.to_string())?;
            Ok(Played::local(&r))
        },
    )
}

/// What an eval plays: known-answer rounds first, then the scored items.
#[derive(Clone, Copy)]
pub struct Items<'a> {
    pub scored: &'a [Item],
    /// Played as known-answer rounds (their right option in the transcript) before any
    /// scored item, so the swarm has measured its members as an operator's node would
    /// have; never scored, and never among the scored items.
    pub calibration: &'a [Item],
}

/// Run every item through `play` (a local round, or a round of a swarm; the second
/// argument is a known-answer round's right option), scoring the plugins named
/// `plugins`; `progress` is told after each scored item.
pub fn run_with(
    plugins: &[String],
    all: Items<'_>,
    seed: u64,
    byzantine: f64,
    mut progress: impl FnMut(usize, &ItemResult),
    mut play: impl FnMut(&Request, Option<u32>) -> Result<Played, String>,
) -> Result<Report, String> {
    let mut calibration = Vec::new();
    for (k, item) in all.calibration.iter().enumerate() {
        let Some(known) = gold_option(item) else {
            continue;
        };
        // Seeds apart from the scored items', so no round repeats another's.
        let mut request = round::request(&item.question, !(seed ^ k as u64));
        request.choices = item.choices.clone();
        request.domain = item.domain.clone();
        let played = play(&request, Some(known))?;
        calibration.push(score(item, &played, &[]));
    }
    let calibration_rounds = calibration.len();
    let items = all.scored;
    let started = std::time::Instant::now();
    // Adversarial judges, chosen once by seed.
    let mut names: Vec<String> = plugins.to_vec();
    crate::consensus::pairs::SplitMix(seed ^ 0xB12A).shuffle(&mut names);
    let n_bad = (byzantine * names.len() as f64).round() as usize;
    let bad: Vec<String> = names.into_iter().take(n_bad).collect();
    let mut per_task: BTreeMap<String, Tally> = BTreeMap::new();
    let mut overall = Tally::default();
    let mut results = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let mut request = round::request(&item.question, seed ^ k as u64);
        request.choices = item.choices.clone();
        request.domain = item.domain.clone();
        let played = play(&request, None)?;
        let result = score(item, &played, &bad);
        for t in [per_task.entry(item.task.clone()).or_default(), &mut overall] {
            t.items += 1;
            for p in plugins {
                *t.per_plugin.entry(p.clone()).or_default() +=
                    usize::from(result.right.contains(p));
            }
            t.majority += usize::from(result.majority_right);
            t.swarm += usize::from(result.swarm_right);
            t.swarm_byzantine += usize::from(result.swarm_byzantine_right);
            t.swarm_unrecorded += usize::from(result.swarm_unrecorded_right);
            t.oracle += usize::from(result.oracle);
            t.answered += usize::from(result.decided_by != "none");
            t.judged += usize::from(result.decided_by == "verdicts");
            if !matches!(result.decided_by, "none" | "single") {
                t.multi += 1;
                *t.by.entry(result.decided_by.to_string()).or_default() += 1;
            }
            for j in &result.judges {
                t.judges.entry(j.judge.clone()).or_default().add(j.right);
            }
        }
        progress(k, &result);
        results.push(result);
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    Ok(Report {
        seed,
        byzantine,
        calibration_rounds,
        calibration,
        per_task,
        overall,
        rounds_per_minute: if minutes > 0.0 {
            items.len() as f64 / minutes
        } else {
            0.0
        },
        items: results,
    })
}

/// How one played round scores on `item`.
fn score(item: &Item, r: &Played, bad: &[String]) -> ItemResult {
    let (answers, pooled) = answer_facts(r);
    let right: Vec<String> = r
        .said
        .iter()
        .filter(|a| matches(item, &a.text, a.choice))
        .map(|a| a.plugin.clone())
        .collect();
    // Majority over the matched meanings of the answers; ties to the most willing.
    let mut order: Vec<&Said> = r.said.iter().collect();
    order.sort_by(|a, b| b.assess.total_cmp(&a.assess));
    let mut votes: Vec<(String, usize)> = Vec::new();
    for a in &order {
        if let Some(v) = normalise(item, &a.text, a.choice) {
            match votes.iter_mut().find(|(x, _)| *x == v) {
                Some((_, n)) => *n += 1,
                None => votes.push((v, 1)),
            }
        }
    }
    let top = votes.iter().map(|(_, n)| *n).max();
    let majority = votes.iter().find(|(_, n)| Some(*n) == top).map(|(v, _)| v);
    let majority_right = majority.is_some() && majority == gold(item).as_ref();
    let answer_right = |i: Option<usize>| {
        i.and_then(|i| r.answers.get(i))
            .is_some_and(|a| matches(item, &a.text, a.choice))
    };
    let swarm_right = answer_right(r.winner);
    let swarm_unrecorded_right = r.unrecorded_winner().map_or(swarm_right, &answer_right);
    let swarm_byzantine_right = if bad.is_empty() {
        swarm_right
    } else {
        answer_right(r.byzantine_winner(bad))
    };
    ItemResult {
        id: item.id.clone(),
        task: item.task.clone(),
        gold: item.answer.clone(),
        swarm: r
            .winner
            .and_then(|w| r.answers.get(w))
            .map(|a| a.text.clone()),
        swarm_right,
        swarm_byzantine_right,
        swarm_unrecorded_right,
        majority_right,
        oracle: !right.is_empty(),
        right,
        decided_by: r.decided_by,
        ms: r.ms,
        answers,
        pooled,
        judges: judge_facts(item, r),
    }
}

/// The verdicts of `r` on pairs where exactly one of the two answers is right.
fn judge_facts(item: &Item, r: &Played) -> Vec<JudgeFact> {
    let Some(t) = &r.transcript else {
        return Vec::new();
    };
    let right = |i: usize| {
        t.answers
            .get(i)
            .is_some_and(|a| matches(item, &a.payload.text, a.payload.choice))
    };
    t.verdicts
        .iter()
        .map(|v| &v.payload)
        .filter(|v| right(v.first) != right(v.second))
        .map(|v| JudgeFact {
            judge: r.plugin_of.get(v.judge).cloned().unwrap_or_default(),
            right: v.outcome.decisive().map(|first| first == right(v.first)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Kind, answer: &str, choices: &[&str]) -> Item {
        Item {
            id: "t".into(),
            task: "t".into(),
            kind,
            question: "q".into(),
            choices: choices.iter().map(|s| s.to_string()).collect(),
            answer: answer.into(),
            domain: None,
        }
    }

    #[test]
    fn numbers_are_matched_by_the_final_number_exactly() {
        let i = item(Kind::Number, "18", &[]);
        assert!(matches(
            &i,
            "She makes 9 * 2 = $18 every day. So the answer is 18.",
            None
        ));
        assert!(matches(&i, "18", None));
        assert!(matches(&i, "18.0", None));
        assert!(!matches(&i, "The answer is 18 dollars, or 180 cents", None));
        assert!(!matches(&i, "1.8", None));
        assert!(!matches(&i, "no idea", None));
        let big = item(Kind::Number, "1,234", &[]);
        assert!(matches(&big, "It costs $1,234.", None));
        assert!(
            !matches(&big, "1, 234", None),
            "a comma and a space separate numbers"
        );
        let neg = item(Kind::Number, "-5", &[]);
        assert!(matches(&neg, "x = -5", None));
        assert!(!matches(&neg, "5", None));
    }

    #[test]
    fn choices_are_matched_by_letter_choice_index_or_exact_option_text() {
        let i = item(Kind::Choice, "B", &["carbon dioxide", "food", "protection"]);
        assert!(matches(&i, "B", None));
        assert!(matches(&i, "(B)", None));
        assert!(matches(&i, "Answer: B.", None));
        assert!(matches(&i, "food", None));
        assert!(matches(&i, "anything", Some(1)), "the plugin's choice wins");
        assert!(!matches(&i, "B", Some(0)));
        assert!(!matches(&i, "A", None));
        assert!(!matches(&i, "B or C", None), "hedging is wrong");
        assert!(
            !matches(&i, "Food is what algae supply", None),
            "strict: not a substring"
        );
    }

    #[test]
    fn exact_answers_must_be_the_answer_or_end_with_it() {
        let i = item(Kind::Exact, "Paris", &[]);
        assert!(matches(&i, "Paris", None));
        assert!(matches(&i, "The capital of France is Paris.", None));
        assert!(!matches(&i, "Paris, Texas is not it; Lyon", None));
        assert!(!matches(&i, "Not Parisian", None));
    }

    #[test]
    fn items_read_from_json_lines_with_line_numbers_on_errors() {
        let ok = r#"{"id":"a","task":"t","kind":"number","question":"q","answer":"1"}

{"id":"b","task":"t","kind":"choice","question":"q","choices":["x","y"],"answer":"A"}"#;
        assert_eq!(read_items(ok).unwrap().len(), 2);
        let bad = "{\"id\":\"a\"}\n";
        assert!(read_items(bad).unwrap_err().starts_with("line 1:"));
    }

    #[test]
    fn the_right_option_of_a_choice_item_by_letter_or_text() {
        let abc = ["red", "green", "blue"];
        assert_eq!(gold_option(&item(Kind::Choice, "B", &abc)), Some(1));
        assert_eq!(gold_option(&item(Kind::Choice, "blue", &abc)), Some(2));
        assert_eq!(
            gold_option(&item(Kind::Choice, "D", &abc)),
            None,
            "no fourth"
        );
        assert_eq!(gold_option(&item(Kind::Choice, "pink", &abc)), None);
        assert_eq!(
            gold_option(&item(Kind::Number, "A", &abc)),
            None,
            "not a choice"
        );
    }
}
