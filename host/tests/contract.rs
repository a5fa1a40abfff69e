//! Contract 1.2 through the real sandbox: plugins of contracts 1.0, 1.1 and 1.2 in one
//! round, graded judgments in the signed transcript, and what the host does with a
//! judgment or option scores no plugin should give.

mod common;

use apiary::consensus::Outcome;
use apiary::ledger::transcript::Transcript;
use apiary::round::{self, RoundReport};
use common::{Folder, ask_with, plugin};

/// The outcomes each judge (by plugin name) gave in the round's transcript.
fn outcomes_of(report: &RoundReport, judge: &str) -> Vec<Outcome> {
    let t: &Transcript = report.transcript.as_ref().expect("a transcript");
    let suffix = format!("/{judge}");
    let member = t
        .members
        .iter()
        .position(|m| m.key.ends_with(&suffix))
        .expect("a member");
    t.verdicts
        .iter()
        .filter(|v| v.payload.judge == member)
        .map(|v| v.payload.outcome)
        .collect()
}

#[test]
fn plugins_of_contracts_1_0_1_1_and_1_2_judge_in_one_round() {
    let f = Folder::new();
    f.add_fixture("contract-1-0");
    f.add_fixture("contract-1-1");
    f.add_fixture("echo-conversation");
    let registry = f.registry();
    let contracts: Vec<(String, String)> = registry
        .active()
        .iter()
        .map(|p| (p.name.clone(), p.contract.clone()))
        .collect();
    assert!(
        contracts.contains(&("contract-1-0".into(), "1.0.0".into()))
            && contracts.contains(&("contract-1-1".into(), "1.1.0".into()))
            && contracts.contains(&("echo-conversation".into(), "1.2.0".into())),
        "{contracts:?}"
    );
    let report = ask_with(&registry, round::request("Say something long.", 3));
    let t = report.transcript.as_ref().unwrap();
    assert!(t.verify().is_empty(), "{:?}", t.verify());
    assert_eq!(t.answers.len(), 3, "three different answers");
    // 1.2: graded, as the plugin said it (0.8 → 800 per mille).
    let graded = outcomes_of(&report, "echo-conversation");
    assert!(
        !graded.is_empty() && graded.iter().all(|o| *o == Outcome::Prefer(800)),
        "{graded:?} {:?}",
        report.verdicts
    );
    // 1.1: `compare` by length, read as certainties.
    let by_length = outcomes_of(&report, "contract-1-1");
    assert!(!by_length.is_empty());
    assert!(
        by_length
            .iter()
            .all(|o| matches!(o, Outcome::First | Outcome::Second))
    );
    // 1.0: always `tie`, read as no preference, as 1.1 hosts did.
    let old = outcomes_of(&report, "contract-1-0");
    assert!(!old.is_empty() && old.iter().all(|o| *o == Outcome::Tie));
    // The 1.1 plugin's tensor import linked: its answer names the backend.
    let said = &common::member(&report, "contract-1-1").answer;
    assert!(said.as_deref().unwrap_or("").contains("cpu"), "{said:?}");
}

#[test]
fn the_conversation_reaches_a_1_2_plugin_and_a_1_1_plugin_gets_the_prompt() {
    let f = Folder::new();
    f.add_fixture("echo-conversation");
    f.add_fixture("contract-1-1");
    let registry = f.registry();
    let mut req = round::request("And in French?", 1);
    req.messages = [
        ("system", "Be brief."),
        ("user", "How do you say hello in German?"),
        ("assistant", "Hallo."),
        ("user", "And in French?"),
    ]
    .map(|(role, content)| apiary::sandbox::Message {
        role: role.into(),
        content: content.into(),
    })
    .to_vec();
    let report = ask_with(&registry, req);
    let echo = common::member(&report, "echo-conversation");
    assert_eq!(
        echo.answer.as_deref(),
        Some(
            "system: Be brief.\nuser: How do you say hello in German?\nassistant: Hallo.\nuser: And in French?"
        )
    );
    assert_eq!(echo.tokens, 4, "the plugin's token count is kept");
    let old = common::member(&report, "contract-1-1");
    assert!(
        old.answer
            .as_deref()
            .unwrap_or("")
            .ends_with("heard: And in French?"),
        "{:?}",
        old.answer
    );
}

#[test]
fn impossible_judgments_and_option_scores_are_contained_at_the_boundary() {
    let f = Folder::new();
    f.add_fixture("wild-judge");
    f.add(&plugin("arith"), "arith");
    let registry = f.registry();
    let sandbox = registry.sandbox();
    let wild = registry.get("wild-judge").unwrap();
    let mut session = wild.session(sandbox, 0).unwrap();
    let req = round::request("Which?", 0);
    // first.len() % 3: 0 → NaN (abstains), 1 → +∞ (clamped: certainty), 2 → negative.
    let judge = |s: &mut apiary::sandbox::Session, first: &str| {
        round::outcome_of(s.judge(&req, first, "x").expect("a judgment"))
    };
    assert_eq!(judge(&mut session, "abc"), Outcome::Abstain);
    assert_eq!(judge(&mut session, "a"), Outcome::First);
    assert_eq!(judge(&mut session, "ab"), Outcome::Second);
    // Option scores that are not a finite number per option are dropped.
    let mut mc = round::request("Pick one", 0);
    mc.choices = vec!["yes".into(), "no".into()];
    let a = session.answer(&mc).unwrap();
    assert!(
        a.option_scores.is_empty(),
        "NaN scores: {:?}",
        a.option_scores
    );
    mc.prompt = "Pick one, short".into();
    let a = session.answer(&mc).unwrap();
    assert!(
        a.option_scores.is_empty(),
        "wrong length: {:?}",
        a.option_scores
    );
    // And a round with it still decides and verifies.
    let report = ask_with(&registry, mc);
    let t = report.transcript.as_ref().unwrap();
    assert!(t.verify().is_empty(), "{:?}", t.verify());
}
