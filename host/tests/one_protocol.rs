//! One round protocol: the same plugins, seed and settings decide the same answer with
//! the same scores whether the round runs in one process (`round::local`) or over a
//! swarm of one plugin per node on libp2p's in-memory transport (`swarm::node`).

mod common;

use apiary::round::{self, RoundConfig, Settings};
use apiary::swarm::RoundResult;
use common::{Folder, plugin};

/// Settings both drivers run: every pair, every non-answerer judges, no calibration, and
/// deadlines a loopback swarm meets with room to spare.
fn shared() -> Settings {
    Settings {
        join_ms: 5_000,
        answer_ms: 20_000,
        judge_ms: 20_000,
        ..Settings::local()
    }
}

fn folder() -> Folder {
    let folder = Folder::new();
    for p in ["arith", "facts", "units"] {
        folder.add(&plugin(p), p);
    }
    folder.add_two_ariths();
    // A confident wrong answer to arithmetic, so the verdicts have something to decide.
    folder.add_fixture("liar");
    folder
}

fn near(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn a_local_round_and_a_networked_round_decide_alike() {
    let folder = folder();
    let registry = folder.registry();
    let plugins = registry.active();
    assert_eq!(plugins.len(), 5, "{:?}", registry.listing());
    let mut config = RoundConfig {
        settings: shared(),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let groups =
        apiary::eval::swarm::arrange(&apiary::eval::swarm::Layout::Spread, None, &plugins).unwrap();
    assert!(groups.iter().all(|g| g.len() == 1), "one plugin per node");
    let nodes = rt
        .block_on(apiary::eval::swarm::start(
            registry.sandbox(),
            groups,
            &shared(),
            3,
        ))
        .unwrap();
    let mut by_verdicts = 0;
    for (k, prompt) in [
        "What is 6 * 7?",
        "What is 17 + 25?",
        "What is the capital of France?",
        "What is 12 * 12?",
    ]
    .iter()
    .enumerate()
    {
        let seed = 40 + k as u64;
        let request = round::request(prompt, seed);
        // The entry node's ledger moves with every round: the local round starts from
        // the same standings.
        for n in &nodes {
            let name = n.expertise().names().remove(0);
            let domain = round::domain_of(&request);
            config
                .standings
                .insert(name, nodes[0].standing(n.id(), &domain));
        }
        let local = round::run_local_round(registry.sandbox(), &plugins, &request, &config)
            .expect("local round");
        let net: RoundResult = rt
            .block_on(nodes[0].ask(prompt, None, request.max_tokens, 0.0, Some(seed), None))
            .expect("networked round");
        let lt = local.transcript.as_ref().expect("answered locally");
        let nt = &net.transcript;
        let texts = |t: &apiary::ledger::transcript::Transcript| -> Vec<String> {
            t.answers.iter().map(|a| a.payload.text.clone()).collect()
        };
        assert_eq!(texts(lt), texts(nt), "{prompt}: same answers, same order");
        assert_eq!(
            local.winning_answer().map(|a| a.text.clone()),
            Some(net.answer.clone()),
            "{prompt}: same winner"
        );
        assert!(
            near(&lt.result.payload.scores, &nt.result.payload.scores),
            "{prompt}: same scores: {:?} vs {:?}",
            lt.result.payload.scores,
            nt.result.payload.scores
        );
        assert_eq!(
            lt.verdicts.len(),
            nt.verdicts.len(),
            "{prompt}: same verdicts"
        );
        assert_eq!(local.undecided, net.undecided);
        assert_eq!(
            local.decided_by,
            Some(net.decided_by),
            "{prompt}: decided alike"
        );
        assert_eq!(
            lt.result.payload.candidates, nt.result.payload.candidates,
            "{prompt}: same candidates"
        );
        assert!(nt.verify().is_empty(), "{:?}", nt.verify());
        assert!(lt.verify().is_empty(), "{:?}", lt.verify());
        eprintln!(
            "{prompt}: {} answers, {} verdicts, winner {:?}, scores {:?}, undecided {}",
            nt.answers.len(),
            nt.verdicts.len(),
            net.answer,
            nt.result.payload.scores,
            net.undecided
        );
        by_verdicts += usize::from(lt.answers.len() >= 2);
    }
    // Agreeing members are one candidate now, so these rounds need no verdicts to
    // decide; what matters here is that both drivers decide every round alike.
    assert!(
        by_verdicts >= 1,
        "at least one round had two or more answers"
    );
    for n in &nodes {
        n.net().shutdown();
    }
}
