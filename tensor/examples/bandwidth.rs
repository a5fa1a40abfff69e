//! This machine's memory bandwidth, the physical limit of decode: one decode step of a
//! small model reads all its weights once, so tok/s can never pass bandwidth ÷ bytes read
//! per token. Two STREAM-like kernels over buffers far larger than the caches, on every
//! core (rayon), best of several passes:
//! - `read`: a sum over one buffer (what a quantized mat-vec does: read, almost no write);
//! - `triad`: a[i] = b[i] + s·c[i] (STREAM's own figure, two reads and one write).
//!
//! `cargo run --release -p apiary-tensor --example bandwidth -- [MiB per buffer] [--json]`

use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

const PASSES: usize = 7;
const CHUNK: usize = 1 << 16;

fn best_secs(mut f: impl FnMut()) -> f64 {
    f(); // fault the pages in and warm the pool
    (0..PASSES)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn read_sum(x: &[f32]) -> f32 {
    x.par_chunks(CHUNK)
        .map(|c| {
            // 32 independent sums (four vectors) let the compiler vectorise without
            // reassociating, and hide the add latency.
            let mut acc = [0f32; 32];
            for v in c.chunks_exact(32) {
                for i in 0..32 {
                    acc[i] += v[i];
                }
            }
            acc.iter().sum::<f32>()
        })
        .sum()
}

fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .zip(c.par_chunks(CHUNK))
        .for_each(|((a, b), c)| {
            for i in 0..a.len() {
                a[i] = b[i] + s * c[i];
            }
        });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let mib: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(512);
    let n = mib * (1 << 20) / 4;
    let mut a = vec![0f32; n];
    let b = vec![1f32; n];
    let c = vec![2f32; n];
    let bytes = (n * 4) as f64;
    let read = bytes
        / best_secs(|| {
            black_box(read_sum(black_box(&b)));
        });
    let triad_bw = 3.0 * bytes
        / best_secs(|| {
            triad(black_box(&mut a), &b, &c, 3.0);
        });
    let threads = rayon::current_num_threads();
    if json {
        println!(
            "{{\"read_gb_s\": {:.2}, \"triad_gb_s\": {:.2}, \"threads\": {threads}, \"mib\": {mib}}}",
            read / 1e9,
            triad_bw / 1e9
        );
    } else {
        println!(
            "memory bandwidth ({threads} threads, {mib} MiB buffers, best of {PASSES}): \
             read {:.1} GB/s, triad {:.1} GB/s",
            read / 1e9,
            triad_bw / 1e9
        );
    }
}
