//! What the governor costs the node: one reading of the machine (`Sampler::sample`,
//! every `sample-every-ms`, 2 s by default) and one decision (`Engine::observe`).
//! Both should be far below a millisecond, or the governor would become the load it
//! watches for.

use apiary::governor::{Engine, Rules, Sample, Sampler};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn sample(c: &mut Criterion) {
    let mut sampler = Sampler::new();
    let mut now = 0u64;
    sampler.sample(now);
    c.bench_function("governor/sampler_sample", |b| {
        b.iter(|| {
            now += 2000;
            black_box(sampler.sample(black_box(now)))
        })
    });
}

fn observe(c: &mut Criterion) {
    let mut engine = Engine::new(Rules::default(), 0);
    // A load that crosses both thresholds, so every branch of the rules runs.
    let loads = [5.0f32, 30.0, 60.0, 45.0, 10.0, 80.0, 20.0, 55.0];
    let mut i = 0usize;
    c.bench_function("governor/engine_observe", |b| {
        b.iter(|| {
            i += 1;
            let s = Sample {
                at_ms: i as u64 * 2000,
                other_cpu_percent: loads[i % loads.len()],
                own_cpu_percent: 40.0,
                available_memory_mib: Some(4096),
                on_battery: Some(false),
                user_idle_s: Some(600),
            };
            black_box(engine.observe(black_box(s)))
        })
    });
}

criterion_group!(benches, sample, observe);
criterion_main!(benches);
