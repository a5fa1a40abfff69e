//! Round overhead of the swarm protocol with instant (simulated) experts, against
//! DESIGN.md's budget of ≤ 50 ms p50 at 32 nodes: everything a round costs except the
//! plugins' own work — gossip, joins, selection, answers and verdicts over libp2p
//! (in-memory transport, noise, yamux), signing and checking every message, pair
//! assignment, the Bradley–Terry fit and the ledger write. All nodes share this process
//! and its two cores, so this over-states what one node of a real swarm pays.
//!
//! Criterion reports the mean; p50 and p95 are printed from the same samples.

use apiary::consensus::pairs::SplitMix;
use apiary::swarm::sim::{self, SimConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};

fn round_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("swarm_round");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for nodes in [8usize, 32, 128] {
        let config = SimConfig {
            nodes,
            ..Default::default()
        };
        let (swarm, _) = rt.block_on(sim::start(&config)).expect("swarm starts");
        let entry = swarm[0].clone();
        let mut rng = SplitMix(nodes as u64);
        // The first rounds dial the connections a round needs; measure the steady state.
        for _ in 0..10 {
            let (q, _) = sim::question(&mut rng);
            let _ = rt.block_on(entry.ask(&q, None, 16, 0.0, None, None));
        }
        let mut samples = Vec::new();
        group.bench_function(format!("{nodes}_nodes"), |b| {
            b.iter(|| {
                let (q, _) = sim::question(&mut rng);
                let t = Instant::now();
                let r = rt.block_on(entry.ask(&q, None, 16, 0.0, None, None));
                samples.push(t.elapsed());
                r.expect("round completes")
            })
        });
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        eprintln!(
            "swarm_round/{nodes}_nodes: p50 {:.1} ms, p95 {:.1} ms over {} rounds",
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.95).as_secs_f64() * 1e3,
            samples.len()
        );
        for n in &swarm {
            n.net().shutdown();
        }
    }
    group.finish();
}

criterion_group!(benches, round_overhead);
criterion_main!(benches);
