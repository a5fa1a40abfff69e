//! Measures this machine's peak f32 FMA throughput (all cores, AVX2), the denominator of
//! "fraction of peak" in the bench notes: `cargo run --release -p apiary-tensor --example peak`.

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn spin(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    // 12 independent accumulators hide the FMA latency (4-5 cycles × 2 ports).
    let m = _mm256_set1_ps(0.999_999);
    let a = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, m, a);
        }
    }
    let mut out = [0f32; 8];
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    // SAFETY: out has 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let iters = 200_000_000u64;
        let t = std::time::Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(move || unsafe { spin(iters) }))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let secs = t.elapsed().as_secs_f64();
        let flops = threads as f64 * iters as f64 * 12.0 * 8.0 * 2.0;
        println!(
            "{threads} threads: {:.1} GFLOP/s peak f32 FMA (checksum {total:.3})",
            flops / secs / 1e9
        );
    }
}
