//! Kernel parity: every kernel of the CPU backend against a plain reference written here
//! with straightforward f64 loops, on seeded random inputs of awkward sizes (not multiples
//! of the SIMD widths where the kernel allows it).
//!
//! Tolerances, relative to the magnitude of the terms summed:
//! - f32 kernels: 1e-5;
//! - quantized weights with f32 activations: 1e-5 against the dequantized weights;
//! - quantized weights with 8-bit activations (the default for Q4_1 and Q8_0): 1e-2, the
//!   precision of the activation quantization itself.
//!
//! The matrix products run on every backend in `backends()`: the CPU, and with the `wgpu`
//! feature the GPU backend (lavapipe on machines without a GPU, shapes kept small for it).

use apiary_tensor::quant::{dequantize, set_exact_activations};
use apiary_tensor::{Budget, DType, Storage, Tensor, cpu, weights::MappedFile};

const NO: Budget = Budget::NONE;
use std::sync::{Arc, Mutex};

type MatmulFn = Box<dyn Fn(&Tensor, &Tensor, bool) -> apiary_tensor::Result<Tensor>>;

struct Backend {
    name: String,
    matmul: MatmulFn,
}

/// The wgpu device for these tests (lavapipe allowed). Without an adapter the wgpu half of
/// the suite is skipped, unless APIARY_REQUIRE_WGPU is set (CI sets it).
#[cfg(feature = "wgpu")]
fn gpu() -> Option<&'static apiary_tensor::gpu::Gpu> {
    static GPU: std::sync::OnceLock<Option<apiary_tensor::gpu::Gpu>> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        match apiary_tensor::gpu::Gpu::open(apiary_tensor::gpu::AdapterPolicy::AllowSoftware) {
            Ok(g) => Some(g),
            Err(e) if std::env::var_os("APIARY_REQUIRE_WGPU").is_some() => {
                panic!("APIARY_REQUIRE_WGPU is set but: {e}")
            }
            Err(e) => {
                eprintln!("skipping the wgpu backend: {e}");
                None
            }
        }
    })
    .as_ref()
}

fn backends() -> Vec<Backend> {
    #[allow(unused_mut)]
    let mut v = vec![Backend {
        name: "cpu".into(),
        matmul: Box::new(|a, b, t| cpu::matmul(a, b, t, Budget::NONE)),
    }];
    #[cfg(feature = "wgpu")]
    if let Some(g) = gpu() {
        v.push(Backend {
            name: g.name(),
            matmul: Box::new(move |a, b, t| g.matmul(a, b, t, Budget::NONE)),
        });
    }
    v
}

/// Tests that flip the process-wide activation mode hold this.
static MODE: Mutex<()> = Mutex::new(());

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| (self.next() * 127.0 + 128.0) as u8)
            .collect()
    }
}

fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape.to_vec(), data).unwrap()
}

fn vals(x: &Tensor) -> Vec<f32> {
    x.to_f32().unwrap().into_owned()
}

fn close(got: &[f32], want: &[f64], tol: f64, scale: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= tol * scale.max(w.abs()).max(1.0),
            "{what}[{i}]: {g} vs {w} (tol {tol})"
        );
    }
}

fn ref_matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize, tb: bool) -> (Vec<f64>, f64) {
    let mut out = vec![0f64; n * m];
    let mut scale = 0f64;
    for i in 0..n {
        for j in 0..m {
            for p in 0..k {
                let bv = if tb { b[j * k + p] } else { b[p * m + j] };
                let term = f64::from(a[i * k + p]) * f64::from(bv);
                out[i * m + j] += term;
                scale = scale.max(term.abs() * k as f64);
            }
        }
    }
    (out, scale)
}

#[test]
fn matmul_f32_plain_transposed_batched() {
    let mut r = Rng(1);
    let all = backends();
    eprintln!(
        "backends: {:?}",
        all.iter().map(|b| &b.name).collect::<Vec<_>>()
    );
    if std::env::var_os("APIARY_REQUIRE_WGPU").is_some() {
        assert!(
            all.len() >= 2,
            "APIARY_REQUIRE_WGPU is set: the wgpu backend must take part"
        );
    }
    for be in all {
        for (n, k, m) in [(1, 7, 5), (3, 33, 17), (17, 64, 9), (65, 130, 31)] {
            let (a, b) = (r.vec(n * k), r.vec(k * m));
            let (want, scale) = ref_matmul(&a, &b, n, k, m, false);
            let got = (be.matmul)(&t(&[n, k], a.clone()), &t(&[k, m], b.clone()), false).unwrap();
            close(
                &vals(&got),
                &want,
                1e-5,
                scale,
                &format!("{} matmul {n}x{k}x{m}", be.name),
            );
            let bt: Vec<f32> = (0..m * k).map(|i| b[(i % k) * m + i / k]).collect();
            let got = (be.matmul)(&t(&[n, k], a), &t(&[m, k], bt), true).unwrap();
            close(
                &vals(&got),
                &want,
                1e-5,
                scale,
                &format!("{} matmul-t {n}x{k}x{m}", be.name),
            );
        }
        if be.name != "cpu" {
            continue; // batched products run on the CPU backend only, so far
        }
        let (a, b) = (r.vec(2 * 3 * 4), r.vec(2 * 4 * 5));
        let got = vals(
            &(be.matmul)(&t(&[2, 3, 4], a.clone()), &t(&[2, 4, 5], b.clone()), false).unwrap(),
        );
        for batch in 0..2 {
            let (want, scale) = ref_matmul(
                &a[batch * 12..][..12],
                &b[batch * 20..][..20],
                3,
                4,
                5,
                false,
            );
            close(&got[batch * 15..][..15], &want, 1e-5, scale, "batched");
        }
    }
}

fn quantized(dtype: DType, rows: usize, cols: usize, r: &mut Rng) -> (Tensor, Vec<f32>) {
    let (per, size) = dtype.block();
    let mut bytes = r.bytes(rows * cols / per * size);
    // Sane f16 scales in every block (random bytes would give NaNs and infinities).
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let min = half::f16::from_f32(-0.05).to_le_bytes();
    for blk in bytes.chunks_exact_mut(size) {
        match dtype {
            DType::Q6_K => blk[208..210].copy_from_slice(&scale),
            DType::Q4_1 => {
                blk[..2].copy_from_slice(&scale);
                blk[2..4].copy_from_slice(&min);
            }
            DType::Q4_K => {
                blk[..2].copy_from_slice(&scale);
                blk[2..4].copy_from_slice(&scale);
            }
            DType::F16 => blk.copy_from_slice(
                &half::f16::from_f32(f32::from(blk[0]) / 255.0 - 0.5).to_le_bytes(),
            ),
            _ => blk[..2].copy_from_slice(&scale),
        }
    }
    let mut deq = vec![0f32; rows * cols];
    dequantize(dtype, &bytes, &mut deq);
    let path = std::env::temp_dir().join(format!(
        "apiary-parity-{}-{}.bin",
        std::process::id(),
        dtype.name()
    ));
    std::fs::write(&path, &bytes).unwrap();
    let file = Arc::new(MappedFile::open(&path).unwrap());
    let _ = std::fs::remove_file(&path);
    (
        Tensor {
            shape: vec![rows, cols],
            dtype,
            storage: Storage::Mapped {
                file,
                start: 0,
                len: bytes.len(),
            },
        },
        deq,
    )
}

#[test]
fn matmul_on_quantized_weights_both_activation_modes() {
    let _mode = MODE.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Rng(2);
    for be in backends() {
        // The wgpu backend has kernels for every block format; f16 weights stay on the CPU.
        let dtypes: &[DType] = if be.name == "cpu" {
            &[
                DType::F16,
                DType::Q4_0,
                DType::Q4_1,
                DType::Q8_0,
                DType::Q4_K,
                DType::Q6_K,
            ]
        } else {
            &[
                DType::Q4_0,
                DType::Q4_1,
                DType::Q8_0,
                DType::Q4_K,
                DType::Q6_K,
            ]
        };
        for &dtype in dtypes {
            let (m, k) = (37, 512);
            let (w, deq) = quantized(dtype, m, k, &mut r);
            // 11 rows: more than the GPU kernel takes per pass (8).
            for n in [1, 5, 11] {
                let x = r.vec(n * k);
                let (want, scale) = ref_matmul(&x, &deq, n, k, m, true);
                for exact in [true, false] {
                    set_exact_activations(exact);
                    let got = vals(&(be.matmul)(&t(&[n, k], x.clone()), &w, true).unwrap());
                    let eight_bit = be.name == "cpu"
                        && !exact
                        && matches!(dtype, DType::Q4_1 | DType::Q8_0 | DType::Q4_K | DType::Q6_K);
                    let tol = if eight_bit { 1e-2 } else { 1e-5 };
                    close(
                        &got,
                        &want,
                        tol,
                        scale,
                        &format!("{} {} n={n} exact={exact}", be.name, dtype.name()),
                    );
                }
            }
            set_exact_activations(false);
            assert!(
                (be.matmul)(&t(&[1, k], r.vec(k)), &w, false).is_err(),
                "quantized needs transpose_b"
            );
        }
    }
}

/// Softmax, RMS norm (× w) and layer norm (× w + b) of each row, in f64.
fn ref_rows(x: &[f32], w: &[f32], b: &[f32], cols: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let f = |v: f32| f64::from(v);
    let mut softmax = Vec::new();
    let mut rms = Vec::new();
    let mut ln = Vec::new();
    for row in x.chunks(cols) {
        let max = row.iter().map(|&v| f(v)).fold(f64::MIN, f64::max);
        let e: Vec<f64> = row.iter().map(|&v| (f(v) - max).exp()).collect();
        let s: f64 = e.iter().sum();
        softmax.extend(e.iter().map(|v| v / s));
        let ms = row.iter().map(|&v| f(v) * f(v)).sum::<f64>() / cols as f64;
        rms.extend(
            row.iter()
                .enumerate()
                .map(|(j, &v)| f(v) / (ms + 1e-5).sqrt() * f(w[j])),
        );
        let mean = row.iter().map(|&v| f(v)).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (f(v) - mean).powi(2)).sum::<f64>() / cols as f64;
        ln.extend(
            row.iter()
                .enumerate()
                .map(|(j, &v)| (f(v) - mean) / (var + 1e-5).sqrt() * f(w[j]) + f(b[j])),
        );
    }
    (softmax, rms, ln)
}

fn ref_silu_gelu(x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let f = |v: f32| f64::from(v);
    let silu = x.iter().map(|&v| f(v) / (1.0 + (-f(v)).exp())).collect();
    let gelu = x
        .iter()
        .map(|&v| {
            let v = f(v);
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        })
        .collect();
    (silu, gelu)
}

#[test]
fn elementwise_norms_and_activations() {
    let mut r = Rng(3);
    let (rows, cols) = (3, 37);
    let x = r.vec(rows * cols);
    let w = r.vec(cols);
    let b = r.vec(cols);
    let xt = t(&[rows, cols], x.clone());
    let f = |v: f32| f64::from(v);
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| f(*v) + f(w[i % cols]))
        .collect();
    close(
        &vals(&cpu::add(&xt, &t(&[cols], w.clone()), NO).unwrap()),
        &want,
        1e-6,
        1.0,
        "add broadcast",
    );
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| f(*v) * f(w[i % cols]))
        .collect();
    close(
        &vals(&cpu::mul(&xt, &t(&[cols], w.clone()), NO).unwrap()),
        &want,
        1e-6,
        1.0,
        "mul broadcast",
    );
    close(
        &vals(&cpu::scale(&xt, 0.5, NO).unwrap()),
        &x.iter().map(|v| f(*v) * 0.5).collect::<Vec<_>>(),
        1e-6,
        1.0,
        "scale",
    );
    let (silu, gelu) = ref_silu_gelu(&x);
    close(
        &vals(&cpu::silu(&xt, NO).unwrap()),
        &silu,
        1e-6,
        1.0,
        "silu",
    );
    close(
        &vals(&cpu::gelu(&xt, NO).unwrap()),
        &gelu,
        1e-5,
        1.0,
        "gelu",
    );
    let (softmax, rms, ln) = ref_rows(&x, &w, &b, cols);
    close(
        &vals(&cpu::softmax(&xt, NO).unwrap()),
        &softmax,
        1e-6,
        1.0,
        "softmax",
    );
    close(
        &vals(&cpu::rms_norm(&xt, &t(&[cols], w.clone()), 1e-5, NO).unwrap()),
        &rms,
        1e-5,
        1.0,
        "rms-norm",
    );
    let got = cpu::layer_norm(
        &xt,
        &t(&[cols], w.clone()),
        Some(&t(&[cols], b.clone())),
        1e-5,
        NO,
    )
    .unwrap();
    close(&vals(&got), &ln, 1e-5, 1.0, "layer-norm");
}

fn ref_rope(
    x: &[f32],
    n: usize,
    heads: usize,
    d: usize,
    pos: usize,
    base: f64,
    neox: bool,
) -> Vec<f64> {
    let mut want: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for i in 0..n {
        for h in 0..heads {
            let o = i * heads * d + h * d;
            for j in 0..d / 2 {
                let theta = (pos + i) as f64 * base.powf(-2.0 * j as f64 / d as f64);
                let (a, b) = if neox {
                    (o + j, o + j + d / 2)
                } else {
                    (o + 2 * j, o + 2 * j + 1)
                };
                let (xa, xb) = (f64::from(x[a]), f64::from(x[b]));
                want[a] = xa * theta.cos() - xb * theta.sin();
                want[b] = xa * theta.sin() + xb * theta.cos();
            }
        }
    }
    want
}

#[test]
fn rope_both_layouts() {
    let mut r = Rng(4);
    let (n, heads, d, pos, base) = (3, 2, 8, 5, 10000.0f64);
    let x = r.vec(n * heads * d);
    for neox in [false, true] {
        let want = ref_rope(&x, n, heads, d, pos, base, neox);
        let got = cpu::rope(
            &t(&[n, heads * d], x.clone()),
            pos,
            d,
            base as f32,
            neox,
            NO,
        )
        .unwrap();
        close(&vals(&got), &want, 1e-5, 1.0, &format!("rope neox={neox}"));
    }
}

/// Causal grouped-query attention in f64, queries at positions pos.. .
#[allow(clippy::too_many_arguments)]
fn ref_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    d: usize,
    n: usize,
    pos: usize,
    window: usize,
) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut want = vec![0f64; n * heads * d];
    for i in 0..n {
        for h in 0..heads {
            let kh = h / (heads / kv_heads);
            let last = pos + i;
            let first = if window > 0 {
                (last + 1).saturating_sub(window)
            } else {
                0
            };
            let scores: Vec<f64> = (first..=last)
                .map(|s| {
                    (0..d)
                        .map(|c| {
                            f64::from(q[i * heads * d + h * d + c])
                                * f64::from(k[s * kv_heads * d + kh * d + c])
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for (idx, s) in (first..=last).enumerate() {
                for c in 0..d {
                    want[i * heads * d + h * d + c] +=
                        e[idx] / z * f64::from(v[s * kv_heads * d + kh * d + c]);
                }
            }
        }
    }
    want
}

#[test]
fn attention_grouped_causal_windowed() {
    let mut r = Rng(5);
    let (heads, kv_heads, d, t_len, n) = (6, 2, 8, 9, 3);
    let pos = t_len - n;
    let (q, k, v) = (
        r.vec(n * heads * d),
        r.vec(t_len * kv_heads * d),
        r.vec(t_len * kv_heads * d),
    );
    for window in [0usize, 4] {
        let scale = 1.0 / (d as f64).sqrt();
        let want = ref_attention(&q, &k, &v, heads, kv_heads, d, n, pos, window);
        let spec = cpu::AttentionSpec {
            n_heads: heads,
            n_kv_heads: kv_heads,
            pos,
            scale: scale as f32,
            window,
        };
        let got = cpu::attention(
            &t(&[n, heads * d], q.clone()),
            &t(&[t_len, kv_heads * d], k.clone()),
            &t(&[t_len, kv_heads * d], v.clone()),
            spec,
            Budget::NONE,
        )
        .unwrap();
        close(
            &vals(&got),
            &want,
            1e-5,
            1.0,
            &format!("attention window={window}"),
        );
    }
}

#[test]
fn embedding_logprobs_and_sampling() {
    let _mode = MODE.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Rng(6);
    for dtype in [DType::Q8_0, DType::Q4_K] {
        let (table, deq) = quantized(dtype, 10, 256, &mut r);
        let got = vals(&cpu::embedding(&table, &[7, 0, 7], NO).unwrap());
        let want: Vec<f64> = [7usize, 0, 7]
            .iter()
            .flat_map(|&id| deq[id * 256..(id + 1) * 256].iter().map(|&v| f64::from(v)))
            .collect();
        close(
            &got,
            &want,
            0.0,
            1.0,
            &format!("embedding {}", dtype.name()),
        );
    }
    let logits = r.vec(2 * 11);
    let ids = [3u32, 10];
    let want: Vec<f64> = logits
        .chunks(11)
        .zip(ids)
        .map(|(row, id)| {
            let lse = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
            f64::from(row[id as usize]) - lse
        })
        .collect();
    close(
        &cpu::token_logprobs(&t(&[2, 11], logits.clone()), &ids, NO).unwrap(),
        &want,
        1e-6,
        1.0,
        "token-logprobs",
    );
    // Sampling: frequencies follow the softmax of the top-k (seeded, reproducible).
    let row = t(&[1, 4], vec![2.0, 1.0, 0.0, -9.0]);
    let mut counts = [0usize; 4];
    for seed in 0..4000 {
        counts[cpu::sample(&row, 1.0, 3, 1.0, seed, NO).unwrap() as usize] += 1;
    }
    let z = 2f64.exp() + 1f64.exp() + 1.0;
    for (i, want) in [2f64.exp() / z, 1f64.exp() / z, 1.0 / z].iter().enumerate() {
        let got = counts[i] as f64 / 4000.0;
        assert!((got - want).abs() < 0.04, "token {i}: {got} vs {want}");
    }
    assert_eq!(counts[3], 0, "outside top-k");
}

/// GPU work may not outlive the call's budget: with the deadline already past, nothing
/// is submitted and the kernel reports `Budget` (work in flight is bounded by a wait
/// that times out at the deadline).
#[cfg(feature = "wgpu")]
#[test]
fn gpu_wait_stops_at_the_deadline() {
    let Some(g) = gpu() else { return };
    let mut r = Rng(7);
    let n = 256;
    let (a, b) = (t(&[n, n], r.vec(n * n)), t(&[n, n], r.vec(n * n)));
    let past = Budget::until(std::time::Instant::now());
    assert_eq!(
        g.matmul(&a, &b, false, past).unwrap_err(),
        apiary_tensor::TensorError::Deadline
    );
    // And the device is still usable afterwards.
    assert!(
        g.matmul(
            &t(&[1, 2], vec![1.0, 2.0]),
            &t(&[2, 1], vec![3.0, 4.0]),
            false,
            Budget::NONE
        )
        .is_ok()
    );
}

/// A weight larger than one storage binding (Gemma 3's 262,144 × 640 Q8_0 embedding is
/// 170 MiB; many devices bind at most 128 MiB) is left to the CPU backend instead of
/// failing on the device. Only shapes are looked at, so no data is needed.
#[cfg(feature = "wgpu")]
#[test]
fn gpu_leaves_weights_larger_than_a_binding_to_the_cpu() {
    let Some(g) = gpu() else { return };
    let x = t(&[1, 640], vec![0.0; 640]);
    let weight = |rows: usize| apiary_tensor::Tensor {
        shape: vec![rows, 640],
        dtype: DType::Q8_0,
        storage: apiary_tensor::Storage::Owned(Vec::new()),
    };
    assert!(g.supports(&x, &weight(1024)));
    assert!(
        !g.supports(&x, &weight(1 << 22)),
        "a 2.7 GiB weight fits nowhere"
    );
}

/// The wgpu backend's element-wise, row, RoPE, attention, copy and argmax kernels against
/// the same references as the CPU's, on lavapipe in CI. Results stay on the device; `vals`
/// reads them back.
#[cfg(feature = "wgpu")]
mod gpu_kernels {
    use super::*;
    use apiary_tensor::gpu::{AdapterPolicy, BinaryOp, Gpu, RowOp, UnaryOp};
    use apiary_tensor::{TensorError, cpu::AttentionSpec};

    /// A device of the test's own, for tests that count submissions (others submit to
    /// the shared one concurrently). Leaked: it lives as long as the test process.
    fn own_gpu() -> Option<&'static Gpu> {
        gpu()?;
        Some(Box::leak(Box::new(
            Gpu::open(AdapterPolicy::AllowSoftware).expect("a second device"),
        )))
    }

    /// Work nobody reads is never submitted; a kernel over two chains of work submits the
    /// other chain first and sees both chains' results.
    #[test]
    fn only_work_that_is_read_reaches_the_gpu() {
        let Some(g) = own_gpu() else { return };
        let x = t(&[1, 4], vec![1.0, -2.0, 3.0, -4.0]);
        let unread = g.unary(UnaryOp::Scale(3.0), &x, NO).unwrap();
        let unread = g.unary(UnaryOp::Silu, &unread, NO).unwrap();
        drop(unread);
        assert_eq!(
            g.submissions(),
            0,
            "dropped before any read: never submitted"
        );
        let a = g.unary(UnaryOp::Scale(2.0), &x, NO).unwrap();
        let b = g.unary(UnaryOp::Scale(10.0), &x, NO).unwrap();
        let sum = g.binary(BinaryOp::Add, &a, &b, NO).unwrap();
        assert_eq!(
            g.submissions(),
            1,
            "b's chain submitted before the add joins a's"
        );
        assert_eq!(vals(&sum), vec![12.0, -24.0, 36.0, -48.0]);
        assert_eq!(g.submissions(), 2);
        assert_eq!(vals(&b), vec![10.0, -20.0, 30.0, -40.0]);
        assert_eq!(vals(&a), vec![2.0, -4.0, 6.0, -8.0]);
    }

    #[test]
    fn elementwise_norms_and_activations() {
        let Some(g) = gpu() else { return };
        // 300 columns: more than one pass of each workgroup's threads over a row.
        for (seed, rows, cols) in [(3, 3, 37), (30, 2, 300)] {
            let mut r = Rng(seed);
            let x = r.vec(rows * cols);
            let w = r.vec(cols);
            let b = r.vec(cols);
            let (xt, wt, bt) = (
                t(&[rows, cols], x.clone()),
                t(&[cols], w.clone()),
                t(&[cols], b.clone()),
            );
            let f = |v: f32| f64::from(v);
            let add: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, v)| f(*v) + f(w[i % cols]))
                .collect();
            let mul: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, v)| f(*v) * f(w[i % cols]))
                .collect();
            let same: Vec<f64> = x.iter().map(|v| f(*v) * 2.0).collect();
            let (silu, gelu) = ref_silu_gelu(&x);
            let (softmax, rms, ln) = ref_rows(&x, &w, &b, cols);
            let checks: Vec<(&str, apiary_tensor::Result<Tensor>, Vec<f64>)> = vec![
                ("add broadcast", g.binary(BinaryOp::Add, &xt, &wt, NO), add),
                ("mul broadcast", g.binary(BinaryOp::Mul, &xt, &wt, NO), mul),
                (
                    "add same shape",
                    g.binary(BinaryOp::Add, &xt, &xt, NO),
                    same,
                ),
                (
                    "scale",
                    g.unary(UnaryOp::Scale(0.5), &xt, NO),
                    x.iter().map(|v| f(*v) * 0.5).collect(),
                ),
                ("silu", g.unary(UnaryOp::Silu, &xt, NO), silu),
                ("gelu", g.unary(UnaryOp::Gelu, &xt, NO), gelu),
                (
                    "softmax",
                    g.rows(RowOp::Softmax, &xt, None, None, NO),
                    softmax,
                ),
                (
                    "rms-norm",
                    g.rows(RowOp::RmsNorm { eps: 1e-5 }, &xt, Some(&wt), None, NO),
                    rms,
                ),
                (
                    "layer-norm",
                    g.rows(
                        RowOp::LayerNorm { eps: 1e-5 },
                        &xt,
                        Some(&wt),
                        Some(&bt),
                        NO,
                    ),
                    ln,
                ),
            ];
            for (what, got, want) in checks {
                close(
                    &vals(&got.unwrap()),
                    &want,
                    1e-5,
                    1.0,
                    &format!("gpu {what} {cols}"),
                );
            }
            // Misuse is an error value, as on the CPU.
            assert!(matches!(
                g.binary(BinaryOp::Add, &xt, &t(&[5], r.vec(5)), NO),
                Err(TensorError::Shape(_))
            ));
            assert!(matches!(
                g.rows(
                    RowOp::RmsNorm { eps: 1e-5 },
                    &xt,
                    Some(&t(&[3], r.vec(3))),
                    None,
                    NO
                ),
                Err(TensorError::Shape(_))
            ));
        }
    }

    #[test]
    fn rope_both_layouts() {
        let Some(g) = gpu() else { return };
        let mut r = Rng(4);
        let (n, heads, d, pos, base) = (3, 2, 8, 5, 10000.0f64);
        let x = r.vec(n * heads * d);
        for neox in [false, true] {
            let want = ref_rope(&x, n, heads, d, pos, base, neox);
            let got = g
                .rope(
                    &t(&[n, heads * d], x.clone()),
                    pos,
                    d,
                    base as f32,
                    neox,
                    NO,
                )
                .unwrap();
            close(
                &vals(&got),
                &want,
                1e-5,
                1.0,
                &format!("gpu rope neox={neox}"),
            );
        }
        assert!(g.rope(&t(&[1, 6], r.vec(6)), 0, 4, 1e4, false, NO).is_err());
    }

    #[test]
    fn attention_grouped_causal_windowed() {
        let Some(g) = gpu() else { return };
        let mut r = Rng(5);
        // The parity shape of the CPU test, then a decode step over more keys than a
        // workgroup has threads, with Gemma's head width and one kv head.
        for (heads, kv_heads, d, t_len, n) in [(6, 2, 8, 9, 3), (4, 1, 256, 100, 1)] {
            let pos = t_len - n;
            let (q, k, v) = (
                r.vec(n * heads * d),
                r.vec(t_len * kv_heads * d),
                r.vec(t_len * kv_heads * d),
            );
            for window in [0usize, 4] {
                let want = ref_attention(&q, &k, &v, heads, kv_heads, d, n, pos, window);
                let spec = AttentionSpec {
                    n_heads: heads,
                    n_kv_heads: kv_heads,
                    pos,
                    scale: 1.0 / (d as f32).sqrt(),
                    window,
                };
                let (qt, kt, vt) = (
                    t(&[n, heads * d], q.clone()),
                    t(&[t_len, kv_heads * d], k.clone()),
                    t(&[t_len, kv_heads * d], v.clone()),
                );
                assert!(g.supports_attention(&qt, &kt, &vt, &spec));
                let got = g.attention(&qt, &kt, &vt, spec, NO).unwrap();
                assert_eq!(got.shape, vec![n, heads * d]);
                close(
                    &vals(&got),
                    &want,
                    1e-5,
                    1.0,
                    &format!("gpu attention d={d} window={window}"),
                );
                let past = AttentionSpec {
                    pos: pos + 1,
                    ..spec
                };
                assert!(matches!(
                    g.attention(&qt, &kt, &vt, past, NO),
                    Err(TensorError::Shape(_))
                ));
            }
        }
    }

    #[test]
    fn argmax_reads_back_the_first_largest_of_the_last_row() {
        let Some(g) = gpu() else { return };
        let mut r = Rng(8);
        for cols in [1, 7, 1000, 49_152] {
            let mut v = r.vec(2 * cols);
            // A tie in the last row: the first index wins, as on the CPU.
            v[cols + cols / 3] = 5.0;
            v[cols + cols - 1] = 5.0;
            v[0] = 9.0; // the first row is ignored
            let x = t(&[2, cols], v);
            assert_eq!(
                g.argmax(&x, NO).unwrap(),
                cpu::argmax(&x).unwrap(),
                "{cols} columns"
            );
        }
    }

    #[test]
    fn append_grows_on_the_device_and_never_changes_another_handle() {
        let Some(g) = gpu() else { return };
        let mut r = Rng(9);
        let w = 4;
        let mut cache = t(&[0, w], vec![]);
        let mut want: Vec<f32> = Vec::new();
        // Past the first capacity (64 rows), so the buffer grows and is copied.
        for rows in [1usize, 5, 60, 30] {
            let x = r.vec(rows * w);
            // Alternate host and device rows.
            let x = if rows % 2 == 0 {
                g.unary(UnaryOp::Scale(1.0), &t(&[rows, w], x.clone()), NO)
                    .unwrap()
            } else {
                t(&[rows, w], x)
            };
            want.extend(vals(&x));
            g.append_rows(&mut cache, &x, NO).unwrap();
            assert!(matches!(cache.storage, Storage::Device(_)));
            assert_eq!(cache.shape, vec![want.len() / w, w]);
            assert_eq!(vals(&cache), want);
        }
        // A reshape shares the buffer; appending to each keeps the other's rows.
        let mut other = cpu::reshape(&cache, cache.shape.clone(), NO).unwrap();
        let (a, b) = (r.vec(w), r.vec(w));
        g.append_rows(&mut cache, &t(&[1, w], a.clone()), NO)
            .unwrap();
        g.append_rows(&mut other, &t(&[1, w], b.clone()), NO)
            .unwrap();
        assert_eq!(vals(&cache)[want.len()..], a[..]);
        assert_eq!(vals(&other)[want.len()..], b[..]);
        let part = g.slice_rows(&cache, 3, 2, NO).unwrap();
        assert_eq!(vals(&part), want[3 * w..5 * w]);
        assert!(g.slice_rows(&cache, 90, 20, NO).is_err());
        assert!(
            g.append_rows(&mut cache, &t(&[1, 3], r.vec(3)), NO)
                .is_err()
        );
    }

    #[test]
    fn no_work_is_recorded_after_the_deadline() {
        let Some(g) = gpu() else { return };
        let past = Budget::until(std::time::Instant::now());
        let x = t(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            g.unary(UnaryOp::Silu, &x, past).unwrap_err(),
            TensorError::Deadline
        );
        assert_eq!(g.argmax(&x, past).unwrap_err(), TensorError::Deadline);
        assert_eq!(g.argmax(&x, NO).unwrap(), 3);
    }

    /// One decode step of a small transformer layer, every kernel on the device: only the
    /// token id comes back, in one submission, and it matches the CPU backend.
    #[test]
    fn a_decode_step_is_one_submission_and_matches_the_cpu() {
        let Some(g) = own_gpu() else { return };
        let _mode = MODE.lock().unwrap_or_else(|p| p.into_inner());
        set_exact_activations(true);
        let mut r = Rng(10);
        let (dim, heads, kv_heads, d, vocab, past) = (64, 4, 2, 16, 96, 7);
        let kv = kv_heads * d;
        let (wq, _) = quantized(DType::Q8_0, dim, dim, &mut r);
        let (wk, _) = quantized(DType::Q4_K, kv, 256, &mut r);
        let (wo, _) = quantized(DType::Q6_K, dim, 256, &mut r);
        let (out, _) = quantized(DType::Q4_1, vocab, dim, &mut r);
        let norm = t(&[dim], r.vec(dim));
        let x = t(&[1, dim], r.vec(dim));
        let (k0, v0) = (r.vec(past * kv), r.vec(past * kv));
        let spec = AttentionSpec {
            n_heads: heads,
            n_kv_heads: kv_heads,
            pos: past,
            scale: 0.25,
            window: 0,
        };
        // The same step with the kernels of one backend or the other.
        struct K<'a> {
            mm: &'a dyn Fn(&Tensor, &Tensor) -> Tensor,
            rms: &'a dyn Fn(&Tensor, &Tensor) -> Tensor,
            rope: &'a dyn Fn(&Tensor) -> Tensor,
            add: &'a dyn Fn(&Tensor, &Tensor) -> Tensor,
            append: &'a dyn Fn(&mut Tensor, &Tensor),
            attn: &'a dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        }
        let step = |k: &K, kc: &mut Tensor, vc: &mut Tensor| -> Tensor {
            let h = (k.rms)(&x, &norm);
            let q = (k.rope)(&(k.mm)(&h, &wq));
            // 256-wide K-quant rows: pad h to 256 by a matmul with a host identity.
            let pad = t(
                &[dim, 256],
                (0..dim * 256)
                    .map(|i| f32::from(i % 256 == i / 256))
                    .collect(),
            );
            let h256 = (k.mm)(&h, &pad);
            let kr = (k.rope)(&(k.mm)(&h256, &wk));
            (k.append)(kc, &kr);
            (k.append)(vc, &(k.mm)(&h256, &wk));
            let a = (k.attn)(&q, kc, vc);
            let a256 = (k.mm)(&a, &pad);
            let o = (k.add)(&x, &(k.mm)(&a256, &wo));
            (k.mm)(&(k.rms)(&o, &norm), &out)
        };
        let cpu_k = K {
            mm: &|a, b| {
                let tb = b.dtype != DType::F32;
                cpu::matmul(a, b, tb, NO).unwrap()
            },
            rms: &|a, w| cpu::rms_norm(a, w, 1e-5, NO).unwrap(),
            rope: &|a| cpu::rope(a, past, d, 1e4, false, NO).unwrap(),
            add: &|a, b| cpu::add(a, b, NO).unwrap(),
            append: &|c, x| cpu::append_rows(c, x, NO).unwrap(),
            attn: &|q, k, v| cpu::attention(q, k, v, spec, NO).unwrap(),
        };
        let gpu_k = K {
            mm: &|a, b| {
                let tb = b.dtype != DType::F32;
                g.matmul(a, b, tb, NO).unwrap()
            },
            rms: &|a, w| {
                g.rows(RowOp::RmsNorm { eps: 1e-5 }, a, Some(w), None, NO)
                    .unwrap()
            },
            rope: &|a| g.rope(a, past, d, 1e4, false, NO).unwrap(),
            add: &|a, b| g.binary(BinaryOp::Add, a, b, NO).unwrap(),
            append: &|c, x| g.append_rows(c, x, NO).unwrap(),
            attn: &|q, k, v| g.attention(q, k, v, spec, NO).unwrap(),
        };
        let (mut kc, mut vc) = (t(&[past, kv], k0.clone()), t(&[past, kv], v0.clone()));
        let want = step(&cpu_k, &mut kc, &mut vc);
        let (mut kg, mut vg) = (t(&[past, kv], k0), t(&[past, kv], v0));
        let before = g.submissions();
        let logits = step(&gpu_k, &mut kg, &mut vg);
        assert_eq!(g.submissions(), before, "nothing submitted before a read");
        let token = g.argmax(&logits, NO).unwrap();
        assert_eq!(g.submissions(), before + 1, "one submission for the step");
        set_exact_activations(false);
        assert_eq!(token, cpu::argmax(&want).unwrap());
        let want: Vec<f64> = vals(&want).iter().map(|&v| f64::from(v)).collect();
        close(&vals(&logits), &want, 1e-4, 1.0, "gpu decode-step logits");
        assert!(matches!(logits.storage, Storage::Device(_)));
    }
}
