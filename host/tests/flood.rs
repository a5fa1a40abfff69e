//! A flooding peer beside honest ones (real libp2p over the in-memory transport, real
//! gate and budgets, simulated experts): issue 11, "peers are bounded like plugins".

use apiary::swarm::limits::Limits;
use apiary::swarm::node::{MAX_MEMBER_ROUNDS, MAX_MEMBER_ROUNDS_PER_ENTRY};
use apiary::swarm::sim::{self, Role, SimConfig};
use apiary::swarm::{Node, Persona, RoundSettings};
use std::time::{Duration, Instant};

const HONEST: usize = 5;
const FLOOD_MS: u64 = 4_000;
const FLOOD_PER_S: u64 = 200;

/// Ask an honest round from `entry`; every honest node must answer it, and rightly.
async fn honest_round(entry: &Node, honest: &[Node], q: &str, truth: i64) -> usize {
    let r = entry
        .ask(q, None, 16, 0.0, None, None)
        .await
        .unwrap_or_else(|e| panic!("honest round failed: {e}"));
    assert_eq!(r.answer.trim(), truth.to_string(), "{r:?}");
    for n in honest {
        let m = r.members.iter().find(|m| m.node == n.id());
        assert!(
            m.is_some_and(|m| m.answered),
            "honest node {} did not answer: {:?}",
            &n.id()[..12],
            r.members
        );
    }
    r.answers
}

/// One node announces rounds (validly signed, fresh nonces) and sends requests as fast
/// as the test lets it (200 of each a second for 4 s) while an honest node asks rounds.
/// The honest nodes keep answering rightly; they refuse the flood as "rate limited" and
/// the flooder's gossipsub score drops; no honest node ever holds more than the caps
/// of member rounds (3 of the flooder's, 8 in all), and those expire without the
/// flooder ever selecting; what the gate remembers stays a small fraction of the flood.
#[test]
fn a_flooder_is_rate_limited_and_honest_rounds_go_on() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = SimConfig {
            nodes: HONEST + 1,
            seed: 11,
            answer_accuracy: 1.0,
            judge_accuracy: 1.0,
            settings: RoundSettings {
                join_ms: 1_000,
                answer_ms: 1_500,
                judge_ms: 1_500,
                ..Default::default()
            },
            ..Default::default()
        };
        let limits = Limits::default();
        let (nodes, _) = sim::start_with(&c, |_| (Role::Honest, Persona::Honest), limits)
            .await
            .unwrap();
        let honest: Vec<Node> = nodes[..HONEST].to_vec();
        let flooder = nodes[HONEST].clone();
        let entry = honest[0].clone();
        let members = &honest[1..];
        let targets: Vec<_> = honest.iter().map(|n| n.net().peer_id).collect();

        let before = honest_round(&entry, members, "What is 12 + 30?", 42).await;

        let started = Instant::now();
        let flood = tokio::spawn(sim::flood(
            flooder.clone(),
            targets.clone(),
            FLOOD_MS,
            FLOOD_PER_S,
        ));
        // Watch the honest nodes while the flood lasts: caps, scores.
        let watch = {
            let honest = honest.clone();
            let (fid, fpeer) = (flooder.id().to_string(), flooder.net().peer_id);
            tokio::spawn(async move {
                let mut most_of_flooder = 0;
                let mut lowest_score = vec![f64::INFINITY; honest.len()];
                let end = Instant::now() + Duration::from_millis(FLOOD_MS + 1_000);
                while Instant::now() < end {
                    for (i, n) in honest.iter().enumerate() {
                        most_of_flooder = most_of_flooder.max(n.member_rounds_of(&fid));
                        assert!(n.member_stats().open <= MAX_MEMBER_ROUNDS);
                        if let Some(s) = n.net().peer_score(fpeer).await {
                            lowest_score[i] = lowest_score[i].min(s);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (most_of_flooder, lowest_score)
            })
        };
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let during = honest_round(&entry, members, "What is 100 + 23?", 123).await;
        let report = flood.await.unwrap();
        let (most_of_flooder, lowest_score) = watch.await.unwrap();
        let flood_s = started.elapsed().as_secs_f64();
        let after = honest_round(&entry, members, "What is 7 + 8?", 15).await;

        // The flooder's rounds expire on the honest nodes though it never selects nor
        // judges: its answer deadline (2 s) plus 5 s after its last announcement.
        let deadline = Instant::now() + Duration::from_secs(12);
        while honest.iter().any(|n| n.member_rounds_of(flooder.id()) > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        eprintln!(
            "flood: {} announcements and {} requests in {flood_s:.1} s ({} answered); \
             answers per honest round before/during/after: {before}/{during}/{after}; \
             most flooder rounds held by one honest node at once: {most_of_flooder}",
            report.announcements, report.requests, report.answered
        );
        let mut refused_total = 0;
        let mut accepted_total = 0;
        for (i, n) in honest.iter().enumerate() {
            let s = n.net().stats();
            let m = n.member_stats();
            let limited = s.rejected.get("rate_limited").copied().unwrap_or(0);
            refused_total += limited;
            accepted_total += s.accepted;
            eprintln!(
                "node {i}: accepted {}, rejected {:?}; held {:?}; member rounds {m:?}; \
                 lowest score of the flooder {:.1}; flooder rounds held now {}",
                s.accepted,
                s.rejected,
                s.held,
                lowest_score[i],
                n.member_rounds_of(flooder.id())
            );
            // (b) refused by reason, and fed to peer scoring.
            assert!(
                limited > 0,
                "node {i} rate limited nothing: {:?}",
                s.rejected
            );
            assert!(
                lowest_score[i] < 0.0,
                "node {i}: the flooder's score never dropped ({})",
                lowest_score[i]
            );
            // (c) member rounds: capped, and gone once their deadlines pass.
            assert!(m.peak_per_entry <= MAX_MEMBER_ROUNDS_PER_ENTRY, "{m:?}");
            assert!(m.peak_open <= MAX_MEMBER_ROUNDS, "{m:?}");
            assert_eq!(n.member_rounds_of(flooder.id()), 0, "node {i}: {m:?}");
            // (d) what the gate and the network task hold.
            let (h, held) = (s.held.gate, s.held);
            assert!(h.peak_nonces <= limits.nonces, "{h:?}");
            assert!(h.peak_per_signer <= limits.nonces_per_signer, "{h:?}");
            assert!(
                (h.peak_nonces as u64) * 4 < report.announcements + report.requests,
                "node {i} remembers a nonce for much of the flood: {h:?}"
            );
            assert!(h.budgets <= 3 * (HONEST + 1), "{h:?}");
            assert!(
                held.pending_requests <= 64 && held.open_replies <= 64,
                "{held:?}"
            );
        }
        assert!(most_of_flooder <= MAX_MEMBER_ROUNDS_PER_ENTRY);
        assert!(
            most_of_flooder >= 1,
            "the flood never reached the member table"
        );
        assert!(report.announcements >= 200, "{report:?}");
        eprintln!(
            "all honest nodes: {refused_total} rate limited, {accepted_total} accepted \
             (every message, honest rounds included)"
        );
        for n in &nodes {
            n.net().shutdown();
        }
    });
}
