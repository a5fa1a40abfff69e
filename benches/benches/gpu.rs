//! The wgpu backend on a hardware GPU: SmolLM2-135M answering (prefill + 32 greedy
//! tokens) as a plugin and natively, every kernel but the embedding gather on the device,
//! one submission per decode step (the count is printed). Runs nothing without a
//! hardware adapter: a software one such as lavapipe is far slower than the CPU backend
//! and says nothing about GPUs. Compare with `smollm-answer-32-tokens` in the `tensor`
//! bench.
//!
//! Needs scripts/build-plugins.sh (plugins and the model).

use apiary_tensor::backend::{self, Choice};
use apiary_tensor::gpu::{AdapterPolicy, Gpu};
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "common.rs"]
mod common;

fn smollm_on_the_gpu(c: &mut Criterion) {
    if let Err(e) = Gpu::open(AdapterPolicy::HardwareOnly) {
        eprintln!("gpu bench skipped: {e}");
        return;
    }
    eprintln!("backend: {}", backend::init(Choice::Auto).expect("backend"));
    common::smollm_answer(c, "smollm-answer-32-tokens-wgpu");
}

criterion_group!(benches, smollm_on_the_gpu);
criterion_main!(benches);
