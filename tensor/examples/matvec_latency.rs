//! Wall time of one decode-sized product (one activation row against a real SmolLM2
//! weight matrix) through the CPU backend, per call (the kernel pool and the caller), and
//! as a rate of weight bytes: what decode pays hundreds of times a token. Each product is
//! timed on every thread and on the caller alone, next to the cost of an empty pool job,
//! so the fixed cost per call can be told apart from the kernel's.
//!
//! `cargo run --release -p apiary-tensor --example matvec_latency -- WEIGHTS_DIR`

use apiary_tensor::{Budget, Tensor, cpu, pool, weights};
use std::time::Instant;

const CALLS: usize = 3000;

fn per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..100 {
        f();
    }
    let t = Instant::now();
    for _ in 0..CALLS {
        f();
    }
    t.elapsed().as_secs_f64() / CALLS as f64
}

fn main() {
    let dir = std::env::args().nth(1).expect("weights folder");
    let w = weights::open(
        Some(std::path::Path::new(&dir)),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    .expect("open");
    let all = pool::threads();
    let empty = per_call(|| pool::run(all * 4, |_| {}));
    println!("empty pool job ({all} threads): {:.2} µs", empty * 1e6);
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
    ] {
        let m = w.tensor(name).unwrap();
        let x = Tensor::from_f32(vec![1, m.shape[1]], vec![0.01; m.shape[1]]).unwrap();
        let bytes = m.bytes().map_or(0, <[u8]>::len) as f64;
        for threads in [all, 1] {
            pool::set_max_threads(threads);
            let per = per_call(|| {
                cpu::matmul(&x, &m, true, Budget::NONE).unwrap();
            });
            println!(
                "{name} {:?} {}: {:.1} µs/call, {:.1} GB/s of weights ({threads} threads)",
                m.shape,
                m.dtype.name(),
                per * 1e6,
                bytes / per / 1e9,
            );
        }
        pool::set_max_threads(0);
    }
}
