//! Q8_0 products on 512-bit registers: two 32-value blocks per instruction.
//!
//! Q8_0 is most of Gemma 3's and Qwen2.5's weights (their Q5_0 matrices are widened to
//! it at load) and the output matrix of all three models. On 256-bit registers each block
//! costs every activation row a sign fix, a multiply-add, a conversion, a scalar product
//! of the two scales, a broadcast and an FMA. Here one 512-bit register holds two blocks,
//! and the scales of sixteen blocks are multiplied in one instruction and moved into
//! place with a permute, so a prompt's products issue about a third of the instructions.
//!
//! The sums are exactly those of the 256-bit kernels ([`crate::quant::dot_row_q8`]): both
//! keep two accumulators of eight lanes, even blocks in the low one and odd blocks in the
//! high one, each fed in block order, and add them before the horizontal sum. So which
//! copy runs on a given CPU cannot change a logit, and the batched products stay
//! bit-identical to one token at a time. The tests here hold both.

#[cfg(target_arch = "x86_64")]
use crate::quant::Q8Activations;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the 512-bit copies can run: AVX-512 F, BW, VL and VNNI, and F16C, detected
/// once, and not turned off by `APIARY_CPU_KERNELS=avx2`.
#[cfg(target_arch = "x86_64")]
pub fn available() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| crate::quant::simd::vnni() && is_x86_feature_detected!("avx512bw"))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn available() -> bool {
    false
}

/// Bytes of one Q8_0 block: an f16 scale and 32 signed bytes.
const BLOCK: usize = 34;

/// The permute index of a group's first pair: its even block's scale (lane 0 of the
/// group's scales) in the low half, its odd block's (lane 1) in the high half. Each
/// later pair adds 2.
#[cfg(target_arch = "x86_64")]
const START: __m512i = unsafe {
    std::mem::transmute::<[i32; 16], __m512i>([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
};

/// The f16 scales of blocks `first..first + n` of `row` as floats (lanes from `n` on
/// zero). Read one by one: a 16-lane gather costs more than the whole pair loop on CPUs
/// with the gather data-sampling fix.
///
/// # Safety
/// The 512-bit features present; blocks `first..first + n` lie inside `row`, `n ≤ 16`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_scales(row: &[u8], first: usize, n: usize) -> __m512 {
    let mut h = [0u16; 16];
    for (i, h) in h.iter_mut().enumerate().take(n) {
        let at = (first + i) * BLOCK;
        *h = u16::from_le_bytes([row[at], row[at + 1]]);
    }
    // SAFETY: the features are present; `h` is 32 readable bytes.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i)) }
}

/// `row`'s block scales as floats, appended to `out`, for [`dot_q8_0_x4`]: computed
/// once per row of a prompt's product, not once per four tokens.
pub fn block_scales(row: &[u8], out: &mut Vec<f32>) {
    out.extend(
        row.chunks_exact(BLOCK)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
    );
}

/// Lane `i`: `d_w · d_x` of block `first + i`, the very product the 256-bit kernels form
/// one block at a time.
///
/// # Safety
/// The 512-bit features present; every block `mask` selects lies inside `xd`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scales(dw: __m512, xd: &[f32], first: usize, mask: __mmask16) -> __m512 {
    // SAFETY: as the caller promises.
    unsafe { _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(mask, xd.as_ptr().add(first))) }
}

/// The lanes of the first `n` of sixteen blocks.
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

/// Blocks `b` and `b + 1` of `row` in one register, as `|w|` and the mask of `w < 0`
/// (the sign trick: `vpdpbusd` wants one operand unsigned).
///
/// # Safety
/// The 512-bit features present; blocks `b` and `b + 1` lie inside `row`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pair(row: &[u8], b: usize) -> (__m512i, __mmask64) {
    // SAFETY: as the caller promises: 32 bytes from offset 2 of each block.
    unsafe {
        let p = row.as_ptr().add(b * BLOCK + 2);
        let lo = _mm256_loadu_si256(p as *const __m256i);
        let hi = _mm256_loadu_si256(p.add(BLOCK) as *const __m256i);
        let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        (_mm512_abs_epi8(w), _mm512_movepi8_mask(w))
    }
}

/// One activation row's share of a block pair: `acc + s · Σ|w|·(±x)` per lane, with
/// `s` the pair's two scales moved into their halves by `idx`.
///
/// # Safety
/// The 512-bit features present; `x` holds 64 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn step(
    acc: __m512,
    w: (__m512i, __mmask64),
    x: *const i8,
    sv: __m512,
    idx: __m512i,
) -> __m512 {
    // SAFETY: as the caller promises.
    unsafe {
        let xv = _mm512_loadu_si512(x as *const __m512i);
        let sx = _mm512_mask_sub_epi8(xv, w.1, _mm512_setzero_si512(), xv);
        let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w.0, sx));
        _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, sv), p, acc)
    }
}

/// The last block of an odd count, into the even (low) accumulator, then the sum of
/// both halves: the 256-bit kernels' final steps.
///
/// # Safety
/// The 512-bit features present; when `nb` is odd, block `nb - 1` lies inside `row`, `x`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish(acc: __m512, row: &[u8], x: &Q8Activations, nb: usize) -> f32 {
    // SAFETY: as the caller promises.
    unsafe {
        let mut even = _mm512_castps512_ps256(acc);
        let odd = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
        if nb % 2 == 1 {
            let b = nb - 1;
            let blk = &row[b * BLOCK..(b + 1) * BLOCK];
            let qw = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
            let xv = _mm256_loadu_si256(x.q[b * 32..b * 32 + 32].as_ptr() as *const __m256i);
            let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(qw, qw),
                _mm256_sign_epi8(xv, qw),
            ));
            let s = crate::quant::simd::h2f(blk, 0) * x.d[b];
            even = _mm256_fmadd_ps(_mm256_set1_ps(s), p, even);
        }
        crate::quant::simd::hsum(_mm256_add_ps(even, odd))
    }
}

/// `dot(row, x)` for a Q8_0 row, bit-identical to the 256-bit kernel.
///
/// # Safety
/// The 512-bit features present ([`available`]); `row` holds whole blocks and `x` at
/// least as many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q8_0(row: &[u8], x: &Q8Activations) -> f32 {
    let nb = row.len() / BLOCK;
    assert!(
        x.q.len() >= nb * 32 && x.d.len() >= nb,
        "activations shorter than the row"
    );
    let xq = x.q.as_ptr();
    // SAFETY: blocks below `nb` lie inside `row` and `x` (checked above).
    unsafe {
        let mut acc = _mm512_setzero_ps();
        let two = _mm512_set1_epi32(2);
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            let sv = scales(row_scales(row, first, n), &x.d, first, lanes(n));
            let mut idx = START;
            for b in (first..first + n - 1).step_by(2) {
                acc = step(acc, pair(row, b), xq.add(b * 32), sv, idx);
                idx = _mm512_add_epi32(idx, two);
            }
        }
        finish(acc, row, x, nb)
    }
}

/// `dot(row, x[j])` for four activation rows, each bit-identical to [`dot_q8_0`];
/// `dw` is the row's [`block_scales`].
///
/// # Safety
/// As for [`dot_q8_0`], for every `x[j]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q8_0_x4(row: &[u8], dw: &[f32], x: [&Q8Activations; 4]) -> [f32; 4] {
    let nb = row.len() / BLOCK;
    assert!(dw.len() >= nb, "block scales shorter than the row");
    for xj in x {
        assert!(
            xj.q.len() >= nb * 32 && xj.d.len() >= nb,
            "activations shorter than the row"
        );
    }
    let xq = [
        x[0].q.as_ptr(),
        x[1].q.as_ptr(),
        x[2].q.as_ptr(),
        x[3].q.as_ptr(),
    ];
    // SAFETY: blocks below `nb` lie inside `row`, `dw` and every `x` (checked above).
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 4];
        let two = _mm512_set1_epi32(2);
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            let d = _mm512_maskz_loadu_ps(lanes(n), dw.as_ptr().add(first));
            let sv = [
                scales(d, &x[0].d, first, lanes(n)),
                scales(d, &x[1].d, first, lanes(n)),
                scales(d, &x[2].d, first, lanes(n)),
                scales(d, &x[3].d, first, lanes(n)),
            ];
            let mut idx = START;
            for b in (first..first + n - 1).step_by(2) {
                let w = pair(row, b);
                for j in 0..4 {
                    acc[j] = step(acc[j], w, xq[j].add(b * 32), sv[j], idx);
                }
                idx = _mm512_add_epi32(idx, two);
            }
        }
        [
            finish(acc[0], row, x[0], nb),
            finish(acc[1], row, x[1], nb),
            finish(acc[2], row, x[2], nb),
            finish(acc[3], row, x[3], nb),
        ]
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::quant::{quantize_q8, simd};
    use half::f16;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// `nb` random Q8_0 blocks with finite, varied scales; `edge` sets every quant to
    /// −128, whose magnitude only the unsigned operand can hold.
    fn row(nb: usize, seed: u64, edge: bool) -> Vec<u8> {
        let mut r = noise(nb * BLOCK, seed);
        for (i, blk) in r.chunks_exact_mut(BLOCK).enumerate() {
            let d = 0.002 + (i % 11) as f32 * 0.0037 - if i % 3 == 0 { 0.05 } else { 0.0 };
            blk[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            if edge {
                blk[2..].fill(0x80);
            }
        }
        r
    }

    fn acts(nb: usize, seed: u64, extreme: bool) -> Q8Activations {
        let x: Vec<f32> = noise(nb * 32, seed)
            .iter()
            .enumerate()
            .map(|(i, &b)| match extreme {
                true => {
                    if b & 1 == 0 {
                        3.0
                    } else {
                        -3.0
                    }
                }
                false => (b as f32 - 128.0) / (7.0 + (i / 32 % 5) as f32),
            })
            .collect();
        quantize_q8(&x)
    }

    /// Block counts of the models' rows (18, 20, 28, 48, 152) and every edge of the
    /// sixteen-block groups and the odd tail.
    const COUNTS: [usize; 14] = [1, 2, 3, 7, 15, 16, 17, 18, 20, 28, 31, 33, 48, 152];

    #[test]
    fn wide_q8_0_is_bit_identical_to_the_256_bit_kernels() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            for (seed, edge, extreme) in [(1, false, false), (2, true, false), (3, false, true)] {
                let (w, x) = (row(nb, seed, edge), acts(nb, seed + 10, extreme));
                // SAFETY: every feature the three copies need was detected above.
                let (a, v, z) = unsafe {
                    (
                        simd::dot_q8_0_q8::avx2(&w, &x),
                        simd::dot_q8_0_q8::vnni(&w, &x),
                        dot_q8_0(&w, &x),
                    )
                };
                assert_eq!(a.to_bits(), v.to_bits(), "{nb} blocks: avx2 {a} vnni {v}");
                assert_eq!(a.to_bits(), z.to_bits(), "{nb} blocks: avx2 {a} wide {z}");
            }
        }
    }

    #[test]
    fn wide_q8_0_four_rows_match_one_at_a_time() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            let w = row(nb, nb as u64, nb % 2 == 0);
            let xs: Vec<Q8Activations> = (0..4).map(|j| acts(nb, 40 + j, j == 3)).collect();
            let x = [&xs[0], &xs[1], &xs[2], &xs[3]];
            // SAFETY: the 512-bit features were detected above; whole blocks.
            let mut dw = Vec::new();
            block_scales(&w, &mut dw);
            let four = unsafe { dot_q8_0_x4(&w, &dw, x) };
            let batched = crate::batched::dot_row_q8_x4(crate::DType::Q8_0, &w, x);
            for j in 0..4 {
                // SAFETY: as above.
                let one = unsafe { dot_q8_0(&w, x[j]) };
                assert_eq!(four[j].to_bits(), one.to_bits(), "{nb} blocks, row {j}");
                assert_eq!(batched[j].to_bits(), one.to_bits(), "{nb} blocks, row {j}");
            }
        }
    }

    /// The wide kernel computes the dot product itself, not only the 256-bit kernels'
    /// bits: against the dequantized row in f64.
    #[test]
    fn wide_q8_0_matches_the_dequantized_product() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            let (w, x) = (row(nb, 7, false), acts(nb, 8, false));
            let mut want = 0f64;
            for b in 0..nb {
                let dw = f16::from_le_bytes([w[b * BLOCK], w[b * BLOCK + 1]]).to_f64();
                for i in 0..32 {
                    let q = w[b * BLOCK + 2 + i] as i8;
                    want += dw * f64::from(q) * f64::from(x.d[b]) * f64::from(x.q[b * 32 + i]);
                }
            }
            // SAFETY: as above.
            let got = f64::from(unsafe { dot_q8_0(&w, &x) });
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{nb}: {got} vs {want}"
            );
        }
    }
}
