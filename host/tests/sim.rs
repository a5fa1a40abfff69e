//! Swarm behaviour under attack and failure, with many nodes in one process (real libp2p
//! over the in-memory transport, real gate, real consensus; simulated experts).

use apiary::swarm::sim::{self, SimConfig, SimReport};

fn settings(no_defences: bool) -> apiary::swarm::RoundSettings {
    let mut s = apiary::swarm::RoundSettings {
        join_ms: 2_000,
        answer_ms: 2_000,
        judge_ms: 2_000,
        pairs_per_judge: 6,
        ..Default::default()
    };
    if no_defences {
        s.params.clip = 0.0;
        s.params.reputation.require_calibration = false;
        s.params.reputation.alpha = 0.0;
        s.params.reputation.initial = 1.0;
    }
    s
}

fn run(c: SimConfig) -> SimReport {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(sim::run(c))
        .unwrap()
}

fn late_accuracy(r: &SimReport, from: usize) -> f64 {
    let late = &r.rounds[from..];
    late.iter().filter(|r| r.correct).count() as f64 / late.len() as f64
}

/// 30 % of the nodes collude: they all answer the same wrong number and always vote for
/// it (while passing calibration honestly). Honest judges are right 70 % of the time.
/// With influence clipping and reputation the swarm learns who the colluders are and the
/// right answer wins most rounds; with both defences off, the colluders win clearly more.
#[test]
fn colluding_judges_lose_to_clipping_and_reputation() {
    let scenario = |no_defences| SimConfig {
        nodes: 10,
        rounds: 100,
        seed: 1,
        colluders: 0.3,
        judge_accuracy: 0.7,
        answer_accuracy: 0.8,
        settings: settings(no_defences),
        ..Default::default()
    };
    let defended = run(scenario(false));
    let undefended = run(scenario(true));
    assert!(defended.rounds.iter().all(|r| r.error.is_none()));
    // Reputation needs rounds to learn; judge the second half.
    let (d, u) = (late_accuracy(&defended, 50), late_accuracy(&undefended, 50));
    eprintln!(
        "last 50 rounds right: defended {:.0} %, undefended {:.0} % (all 100: {:.0} % vs {:.0} %)",
        d * 100.0,
        u * 100.0,
        defended.accuracy * 100.0,
        undefended.accuracy * 100.0
    );
    assert!(
        d >= 0.85,
        "defended swarm right in only {d:.2} of late rounds"
    );
    // Since equal answers are one candidate, the honest majority's agreement (support)
    // already beats a colluding minority here, with or without the judges' defences
    // (undefended 96 % against defended 94 % when this was written), so this only
    // checks that the defences cost little; the test below is the one where they decide.
    assert!(
        d + 0.05 >= u,
        "the defences should not cost accuracy: defended {d:.2}, undefended {u:.2}"
    );
}

/// As many colluders as honest nodes (5 of 10): their wrong number has as much support
/// as the right one, and their verdicts as many voices. Without clipping and reputation
/// they win a large share of rounds; with them the swarm learns who they are and the right
/// answer wins most of the late rounds. Measured when written (seeds 1–3, last 50 of 100
/// rounds): defended 88–92 %, undefended 50–60 %.
#[test]
fn colluders_as_many_as_the_honest_lose_only_to_the_defences() {
    let scenario = |no_defences| SimConfig {
        nodes: 10,
        rounds: 100,
        seed: 1,
        colluders: 0.5,
        judge_accuracy: 0.7,
        answer_accuracy: 0.8,
        settings: settings(no_defences),
        ..Default::default()
    };
    let defended = run(scenario(false));
    let undefended = run(scenario(true));
    let (d, u) = (late_accuracy(&defended, 50), late_accuracy(&undefended, 50));
    eprintln!(
        "half colluders, last 50 rounds right: defended {:.0} %, undefended {:.0} %",
        d * 100.0,
        u * 100.0
    );
    assert!(
        d >= 0.8,
        "defended swarm right in only {d:.2} of late rounds"
    );
    assert!(
        d - u >= 0.15,
        "the defences should decide here: defended {d:.2}, undefended {u:.2}"
    );
}

/// Forgers send the entry node forged, stolen-signature, oversized, malformed and
/// replayed messages every round; slow members answer after the deadline and crashing
/// members drop off the network when asked for their answer. Every round still completes,
/// with the right answer, and every bad message is refused and counted by reason.
#[test]
fn bad_messages_are_refused_and_faulty_members_left_out() {
    let r = run(SimConfig {
        nodes: 10,
        rounds: 6,
        seed: 7,
        forgers: 0.2,
        slow: 0.1,
        crashing: 0.1,
        answer_accuracy: 1.0,
        judge_accuracy: 1.0,
        settings: apiary::swarm::RoundSettings {
            join_ms: 1_000,
            answer_ms: 600,
            judge_ms: 600,
            ..Default::default()
        },
        ..Default::default()
    });
    for round in &r.rounds {
        assert!(round.error.is_none(), "{round:?}");
        assert!(round.correct, "{round:?}");
        assert!(
            round.answers < 10,
            "the slow and crashed members are left out: {round:?}"
        );
    }
    for reason in ["forged", "replayed", "oversized", "malformed"] {
        assert!(
            r.rejected.get(reason).copied().unwrap_or(0) >= 6,
            "{reason} messages not refused: {:?}",
            r.rejected
        );
    }
}
