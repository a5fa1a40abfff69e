//! The example specialists answer their own domains through the real host, and judge.

mod common;

use common::*;

fn all_three() -> (Folder, std::sync::Arc<apiary::plugins::Registry>) {
    let folder = Folder::new();
    for p in ["arith", "facts", "units"] {
        folder.add(&plugin(p), p);
    }
    let registry = folder.registry();
    assert_eq!(registry.active().len(), 3, "{:?}", registry.listing());
    (folder, registry)
}

#[test]
fn each_specialist_answers_its_domain() {
    let (_f, registry) = all_three();
    let cases = [
        ("What is 17 * 23?", "arith", "17 * 23 = 391"),
        ("Solve 3x + 5 = 20", "arith", "x = 5"),
        ("What is the square root of 144?", "arith", "= 12"),
        (
            "What is the capital of France?",
            "facts",
            "The capital of France is Paris.",
        ),
        ("What is the chemical symbol for gold?", "facts", "Au"),
        ("Which element has atomic number 6?", "facts", "carbon"),
        ("Convert 5 miles to km", "units", "8.04672 kilometers"),
        (
            "What is 100 F in Celsius?",
            "units",
            "37.7778 degrees Celsius",
        ),
    ];
    for (q, who, expect) in cases {
        let r = ask(&registry, q);
        let w = r
            .winning_answer()
            .unwrap_or_else(|| panic!("no answer to {q}: {r:#?}"));
        assert_eq!(w.plugin, who, "{q}");
        assert!(w.text.contains(expect), "{q}: got {:?}", w.text);
        // The other two declined: honest assess keeps them out of the round.
        assert_eq!(r.answers.len(), 1, "{q}: {r:#?}");
        assert!(r.single_answer);
    }
}

#[test]
fn no_specialist_for_an_off_topic_question() {
    let (_f, registry) = all_three();
    let r = ask(&registry, "Who wrote Hamlet?");
    assert!(r.winning_answer().is_none());
    assert!(
        r.members
            .iter()
            .all(|m| m.error.as_deref().unwrap_or("").starts_with("declined"))
    );
}

#[test]
fn specialists_judge_in_their_domain_through_the_sandbox() {
    let (_f, registry) = all_three();
    let sandbox = registry.sandbox();
    let judge = |id: &str, p: &str, a: &str, b: &str| {
        let plugin = registry.get(id).unwrap();
        plugin
            .session(sandbox, 0)
            .unwrap()
            .judge(&apiary::round::request(p, 0), a, b)
            .map(apiary::round::outcome_of)
            .unwrap()
    };
    use apiary::consensus::Outcome::*;
    assert_eq!(
        judge("arith", "What is 17 * 23?", "381", "It is 391."),
        Second
    );
    assert_eq!(judge("arith", "What is 17 * 23?", "391", "381"), First);
    assert_eq!(
        judge(
            "facts",
            "What is the capital of Australia?",
            "Canberra",
            "Sydney"
        ),
        First
    );
    assert_eq!(
        judge(
            "facts",
            "What is the capital of Australia?",
            "Sydney",
            "Canberra"
        ),
        Second
    );
    assert_eq!(
        judge("units", "Convert 5 miles to km", "8 km", "8.05 km"),
        Second
    );
    // Outside its domain a judge abstains.
    assert_eq!(judge("facts", "What is 17 * 23?", "381", "391"), Abstain);
    assert_eq!(
        judge(
            "arith",
            "What is the capital of Australia?",
            "Sydney",
            "Canberra"
        ),
        Abstain
    );
}

#[test]
fn describe_reports_domains_and_plugin_toml_wins() {
    let (_f, registry) = all_three();
    let arith = registry.get("arith").unwrap();
    assert_eq!(arith.name, "arith");
    assert!(arith.domains.contains(&"algebra".to_string()));
    assert_eq!(
        arith.limits.answer_ms, 2000,
        "plugin.toml asked for 2000 ms"
    );
    assert_eq!(arith.contract, "1.2.0");
    assert_eq!(arith.wasm_sha256.len(), 64);
}

#[test]
fn bare_wasm_gets_defaults() {
    let folder = Folder::new();
    std::fs::copy(
        plugin("arith").join("arith.wasm"),
        folder.path().join("calc.wasm"),
    )
    .unwrap();
    let registry = folder.registry();
    let p = registry.get("calc").expect("bare .wasm loads");
    assert_eq!(p.limits, apiary::sandbox::limits::Limits::default());
    assert!(p.source.weights.is_none());
    assert_eq!(winner(&ask(&registry, "What is 2 + 2?")), "2 + 2 = 4");
}

#[test]
fn facts_without_its_weights_says_so() {
    let folder = Folder::new();
    let dir = folder.add(&plugin("facts"), "facts");
    std::fs::remove_dir_all(dir.join("weights")).unwrap();
    let registry = folder.registry();
    let plugin = registry.get("facts").unwrap();
    let mut s = plugin.session(registry.sandbox(), 0).unwrap();
    let err = s
        .answer(&apiary::round::request("What is the capital of France?", 0))
        .unwrap_err();
    assert!(err.to_string().contains("/weights/facts.tsv"), "{err}");
    assert!(!err.is_fault(), "an error value is a decline, not a fault");
}

#[test]
fn a_plugin_built_against_contract_1_0_still_loads_and_answers() {
    let folder = Folder::new();
    folder.add(&fixture("contract-1-0"), "old");
    let registry = folder.registry();
    let old = registry
        .get("old")
        .expect("1.0.0 plugin loads in a 1.1 host");
    assert_eq!(old.contract, "1.0.0");
    assert_eq!(winner(&ask(&registry, "ping")), "old plugin heard: ping");
}
