//! Wall time of one decode-sized product (one activation row against a real SmolLM2
//! weight matrix) through the CPU backend, per call (the kernel pool and the caller), and
//! as a rate of weight bytes: what decode pays hundreds of times a token. Each product is
//! timed on every thread and on the caller alone, next to the cost of an empty pool job,
//! so the fixed cost per call can be told apart from the kernel's.
//!
//! `cargo run --release -p apiary-tensor --example matvec_latency -- WEIGHTS_DIR [FILE TENSOR…]`
//! (default: SmolLM2's file and three of its layer-0 matrices)

use apiary_tensor::{Budget, Tensor, cpu, pool, weights};
use std::time::Instant;

/// Mean wall time of `calls` calls of `f`, after a warm-up of a thirtieth as many.
fn per_call(calls: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..calls.div_ceil(30) {
        f();
    }
    let t = Instant::now();
    for _ in 0..calls {
        f();
    }
    t.elapsed().as_secs_f64() / calls as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("weights folder");
    let (file, names): (&str, Vec<&str>) = match args.get(1) {
        Some(file) => (file, args[2..].iter().map(String::as_str).collect()),
        None => (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            vec![
                "blk.0.attn_q.weight",
                "blk.0.ffn_up.weight",
                "blk.0.ffn_down.weight",
            ],
        ),
    };
    let w = weights::open(Some(std::path::Path::new(dir)), file).expect("open");
    let all = pool::threads();
    let empty = per_call(3000, || pool::run(all * 4, |_| {}));
    println!("empty pool job ({all} threads): {:.2} µs", empty * 1e6);
    for name in names {
        let m = w.tensor(name).unwrap();
        let x = Tensor::from_f32(vec![1, m.shape[1]], vec![0.01; m.shape[1]]).unwrap();
        let bytes = m.bytes().map_or(0, <[u8]>::len) as f64;
        for threads in [all, 1] {
            pool::set_max_threads(threads);
            // About 0.2 GB of weights per product: fewer calls for an output head.
            let calls = (2e8 / bytes.max(1.0)).clamp(10.0, 3000.0) as usize;
            let per = per_call(calls, || {
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
