//! Sandbox costs against DESIGN.md's budgets:
//! - instantiate a plugin from its pre-instantiated component (budget ≤ 20 µs);
//! - a host→plugin call with a small request on a live instance (budget ≤ 2 µs);
//! - a whole local round with the three example plugins;
//! - the Bradley–Terry fit at 64 answers × 2,000 verdicts (budget ≤ 1 ms).
//!
//! Needs the plugins built: `scripts/build-plugins.sh` (scripts/bench.sh does it).

use apiary::consensus::{self, Comparison, FitOptions};
use apiary::plugins::{Plugin, loader};
use apiary::round::{self, RoundConfig};
use apiary::sandbox::{Sandbox, SandboxConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

fn built(path: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join(path);
    assert!(
        p.exists(),
        "{} missing: run scripts/build-plugins.sh",
        p.display()
    );
    p
}

fn load(sandbox: &Sandbox, path: &str) -> Arc<Plugin> {
    Arc::new(loader::load(sandbox, None, &built(path)).expect("plugin loads"))
}

fn sandbox_benches(c: &mut Criterion) {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let trivial = load(&sandbox, "fixtures/harmless");
    let facts = load(&sandbox, "plugins/facts");
    eprintln!("pooling allocator: {}", sandbox.pooling());

    c.bench_function("instantiate/no-weights", |b| {
        b.iter(|| black_box(trivial.session(&sandbox, 1).unwrap()))
    });
    c.bench_function("instantiate/with-weights-preopen", |b| {
        b.iter(|| black_box(facts.session(&sandbox, 1).unwrap()))
    });

    let req = round::request("What is 2 + 2?", 1);
    let mut session = trivial.session(&sandbox, 1).unwrap();
    c.bench_function("call/answer-small-request", |b| {
        b.iter(|| black_box(session.answer(black_box(&req)).unwrap()))
    });
    c.bench_function("call/assess-small-request", |b| {
        b.iter(|| black_box(session.assess(black_box(&req)).unwrap()))
    });

    let plugins: Vec<Arc<Plugin>> = ["plugins/arith", "plugins/facts", "plugins/units"]
        .iter()
        .map(|p| load(&sandbox, p))
        .collect();
    let config = RoundConfig::default();
    c.bench_function("round/local-3-plugins", |b| {
        b.iter(|| black_box(round::run_local_round(&sandbox, &plugins, &req, &config).unwrap()))
    });
}

fn bradley_terry(c: &mut Criterion) {
    // 64 answers with true strengths spread over 3 nats; 2,000 noisy verdicts.
    let n = 64;
    let mut state = 42u64;
    let mut rand = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let truth: Vec<f64> = (0..n).map(|i| 3.0 * i as f64 / n as f64).collect();
    let mut comps = Vec::new();
    while comps.len() < 2000 {
        let (i, j) = ((rand() * n as f64) as usize, (rand() * n as f64) as usize);
        if i == j || i >= n || j >= n {
            continue;
        }
        let p = 1.0 / (1.0 + (truth[j] - truth[i]).exp());
        let (winner, loser) = if rand() < p { (i, j) } else { (j, i) };
        comps.push(Comparison {
            winner,
            loser,
            weight: 0.5 + rand(),
        });
    }
    let opts = FitOptions {
        tolerance: 1e-8,
        ..Default::default()
    };
    let fit = consensus::fit(n, &comps, opts);
    eprintln!(
        "BT 64x2000: {} iterations, converged {}",
        fit.iterations, fit.converged
    );
    c.bench_function("bradley-terry/64-answers-2000-verdicts", |b| {
        b.iter(|| black_box(consensus::fit(n, black_box(&comps), opts)))
    });
}

criterion_group!(benches, sandbox_benches, bradley_terry);
criterion_main!(benches);
