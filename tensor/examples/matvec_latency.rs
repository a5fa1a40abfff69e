//! Wall time of one decode-sized product (one activation row against a real SmolLM2
//! weight matrix) through the CPU backend, per call (the kernel pool and the caller), and
//! as a rate of weight bytes: what decode pays hundreds of times a token.
//!
//! `cargo run --release -p apiary-tensor --example matvec_latency -- WEIGHTS_DIR`

use apiary_tensor::{Budget, Tensor, cpu, weights};
use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).expect("weights folder");
    let w = weights::open(
        Some(std::path::Path::new(&dir)),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    )
    .expect("open");
    let calls = 3000;
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.ffn_up.weight",
        "blk.0.ffn_down.weight",
    ] {
        let m = w.tensor(name).unwrap();
        let x = Tensor::from_f32(vec![1, m.shape[1]], vec![0.01; m.shape[1]]).unwrap();
        for _ in 0..100 {
            cpu::matmul(&x, &m, true, Budget::NONE).unwrap();
        }
        let t = Instant::now();
        for _ in 0..calls {
            cpu::matmul(&x, &m, true, Budget::NONE).unwrap();
        }
        let per = t.elapsed().as_secs_f64() / calls as f64;
        let bytes = m.bytes().map_or(0, <[u8]>::len) as f64;
        println!(
            "{name} {:?} {}: {:.1} µs/call, {:.1} GB/s of weights ({} threads)",
            m.shape,
            m.dtype.name(),
            per * 1e6,
            bytes / per / 1e9,
            apiary_tensor::pool::threads()
        );
    }
}
