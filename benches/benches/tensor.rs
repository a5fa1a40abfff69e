//! Host tensor kernels against DESIGN.md's budgets, and the sandbox's cost on a real model:
//! - f32 matmul 1024³ on the CPU backend (GFLOP/s; budget ≥ 60 % of peak);
//! - Q4_1 matrix-vector products (decode's inner loop);
//! - the same 256³ matmul in pure wasm inside a plugin vs the host kernel (budget ≥ 10×);
//! - SmolLM2-135M: one answer (prefill + 32 greedy tokens) as a plugin through the host
//!   kernels vs the same model code compiled natively (budget ≥ 0.8×);
//! - K-quant matrix-vector products (Gemma 3's Q4_K and Q6_K tensors), integer vs float;
//! - Gemma 3 270M scoring a four-option question, plugin vs native.
//!
//! Needs scripts/build-plugins.sh (plugins, fixtures and the model).

use apiary::plugins::loader;
use apiary::round;
use apiary::sandbox::{Sandbox, SandboxConfig};
use apiary_tensor::{Budget, Storage, Tensor, cpu, weights};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common.rs"]
mod common;
use common::target;
use std::hint::black_box;
use std::time::Duration;

fn matrix(rows: usize, cols: usize, seed: usize) -> Tensor {
    let data = (0..rows * cols)
        .map(|i| ((i * 31 + seed) % 17) as f32 / 17.0 - 0.5)
        .collect();
    Tensor::from_f32(vec![rows, cols], data).unwrap()
}

fn kernels(c: &mut Criterion) {
    eprintln!("backend: {}", apiary_tensor::backend_name());
    let mut g = c.benchmark_group("matmul-f32");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for n in [256usize, 1024] {
        let (a, b) = (matrix(n, n, 1), matrix(n, n, 2));
        g.throughput(Throughput::Elements((2 * n * n * n) as u64)); // FLOPs
        g.bench_function(format!("{n}x{n}x{n}"), |bch| {
            bch.iter(|| black_box(cpu::matmul(&a, &b, false, Budget::NONE).unwrap()))
        });
    }
    g.finish();

    // Q4_1 weights from the real model file: SmolLM2's FFN down projection (576 × 1536)
    // and, for a bigger shape, a synthetic 4096 × 4096 built from repeated rows.
    let model = weights::open(
        Some(&target("plugins/smollm/weights")),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    .unwrap();
    let down = model.tensor("blk.0.ffn_down.weight").unwrap();
    let mut g = c.benchmark_group("matvec-q4_1");
    g.sample_size(30);
    let x = matrix(1, down.shape[1], 3);
    g.throughput(Throughput::Elements(
        (2 * down.shape[0] * down.shape[1]) as u64,
    ));
    g.bench_function(format!("{}x{}", down.shape[0], down.shape[1]), |bch| {
        bch.iter(|| black_box(cpu::matmul(&x, &down, true, Budget::NONE).unwrap()))
    });
    let row = down.bytes().unwrap()[..4096 / 32 * 20].to_vec();
    let big: Vec<u8> = row.iter().copied().cycle().take(4096 * row.len()).collect();
    let file = std::env::temp_dir().join(format!("apiary-bench-{}.bin", std::process::id()));
    std::fs::write(&file, &big).unwrap();
    let map = std::sync::Arc::new(weights::MappedFile::open(&file).unwrap());
    let w = Tensor {
        shape: vec![4096, 4096],
        dtype: apiary_tensor::DType::Q4_1,
        storage: Storage::Mapped {
            file: map,
            start: 0,
            len: big.len(),
        },
    };
    let x = matrix(1, 4096, 4);
    g.throughput(Throughput::Elements(2 * 4096 * 4096));
    g.bench_function("4096x4096", |bch| {
        bch.iter(|| black_box(cpu::matmul(&x, &w, true, Budget::NONE).unwrap()))
    });
    g.finish();
    let _ = std::fs::remove_file(file);
}

fn sandbox_vs_host(c: &mut Criterion) {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let wasm = loader::load(&sandbox, None, &target("fixtures/wasm-matmul")).unwrap();
    let mut g = c.benchmark_group("matmul-256-wasm-vs-host");
    g.sample_size(10)
        .throughput(Throughput::Elements(2 * 256 * 256 * 256));
    let req = round::request("256", 0);
    let mut session = wasm.session(&sandbox, 0).unwrap();
    g.bench_function("pure-wasm-in-plugin", |b| {
        b.iter(|| black_box(session.answer(&req).unwrap()))
    });
    let (a, bm) = (matrix(256, 256, 1), matrix(256, 256, 2));
    g.bench_function("host-kernel", |b| {
        b.iter(|| black_box(cpu::matmul(&a, &bm, false, Budget::NONE).unwrap()))
    });
    g.finish();
}

fn smollm(c: &mut Criterion) {
    common::smollm_answer(c, "smollm-answer-32-tokens");
}

/// K-quant products from Gemma 3's file (Q4_K attention output, Q6_K FFN down), with
/// 8-bit activations (the default integer path) and with f32 activations (dequantize a
/// block, then a float dot product; the path before the integer kernels existed).
fn kquants(c: &mut Criterion) {
    let model = weights::open(Some(&target("plugins/gemma/weights")), gemma::WEIGHTS_FILE).unwrap();
    let mut g = c.benchmark_group("matvec-kquant");
    g.sample_size(30);
    for name in ["blk.0.attn_output.weight", "blk.0.ffn_down.weight"] {
        let w = model.tensor(name).unwrap();
        let x = matrix(1, w.shape[1], 3);
        let label = format!("{}-{}x{}", w.dtype.name(), w.shape[0], w.shape[1]);
        g.throughput(Throughput::Elements((2 * w.shape[0] * w.shape[1]) as u64));
        for exact in [false, true] {
            apiary_tensor::quant::set_exact_activations(exact);
            let path = if exact {
                "f32-activations"
            } else {
                "q8-activations"
            };
            g.bench_function(format!("{label}/{path}"), |bch| {
                bch.iter(|| black_box(cpu::matmul(&x, &w, true, Budget::NONE).unwrap()))
            });
        }
        apiary_tensor::quant::set_exact_activations(false);
    }
    g.finish();
}

/// Gemma 3 270M on a four-option question (one pass over the prompt, four scored
/// continuations), as a plugin through the host kernels vs the same code natively.
fn gemma(c: &mut Criterion) {
    let question = "Which of these is a mammal?";
    let choices: Vec<String> = ["shark", "dolphin", "trout", "octopus"]
        .map(String::from)
        .to_vec();
    let mut req = round::request(question, 0);
    req.choices = choices.clone();
    let mut g = c.benchmark_group("gemma-multiple-choice-4-options");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let plugin = loader::load(&sandbox, None, &target("plugins/gemma")).unwrap();
    let mut session = plugin.session(&sandbox, 0).unwrap();
    session.answer(&req).unwrap(); // load the model once in this instance
    g.bench_function("plugin-through-host-kernels", |b| {
        b.iter(|| black_box(session.answer(&req).unwrap()))
    });
    apiary_plugin_api::tensor::set_weights_dir(target("plugins/gemma/weights"));
    let engine = gemma::load().unwrap();
    let options: Vec<&str> = choices.iter().map(String::as_str).collect();
    g.bench_function("native-same-code", |b| {
        b.iter(|| black_box(engine.scores(question, &options).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, kernels, kquants, sandbox_vs_host, smollm, gemma);
criterion_main!(benches);
