//! One quantized weight row against four activation rows at once: the prompt's matrix
//! products (prefill), where every weight row meets every token.
//!
//! Done one token at a time, a product re-reads and re-unpacks each weight block for
//! every token, and every block's multiply-add waits on the previous one (one
//! accumulator). Four tokens share one unpacking and run four independent accumulators,
//! which is how llama.cpp's batched kernels win on prompts. Each of the four results is
//! computed with exactly the operations, in exactly the order, of the one-row kernel in
//! [`crate::quant::dot_row_q8`], so a batched product is bit-identical to four single
//! ones: the greedy fixtures cannot tell which path ran. The tests here hold that.

use crate::dtype::DType;
use crate::quant::{Q8Activations, dot_row_q8};

/// How many activation rows one call takes.
pub const LANES: usize = 4;

/// `[dot(row, x[0]), …, dot(row, x[3])]`, each bit-identical to [`dot_row_q8`].
pub fn dot_row_q8_x4(dtype: DType, row: &[u8], x: [&Q8Activations; LANES]) -> [f32; LANES] {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd_available() && is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2, FMA and F16C were detected at run time; `row` holds whole blocks
        // and each `x` as many quantized blocks (checked by the caller, as for one row).
        unsafe {
            match dtype {
                DType::Q8_0 if crate::wide::available() => {
                    let mut dw = Vec::new();
                    crate::wide::block_scales(row, &mut dw);
                    return crate::wide::dot_q8_0_x4(row, &dw, x);
                }
                DType::Q4_1 if crate::wide::available() => {
                    let (mut d, mut m) = (Vec::new(), Vec::new());
                    crate::wide::q4_1_scales(row, &mut d, &mut m);
                    return crate::wide::dot_q4_1_x4(row, &d, &m, x);
                }
                DType::Q4_1 => return simd::q4_1(row, x),
                DType::Q8_0 => return simd::q8_0(row, x),
                DType::Q4_K if crate::wide::available() => {
                    let (mut ds, mut dm) = (Vec::new(), Vec::new());
                    crate::wide::q4_k_row_scales(row, &mut ds, &mut dm);
                    return crate::wide::dot_q4_k_x4(row, &ds, &dm, x);
                }
                DType::Q4_K => return simd::q4_k(row, x),
                DType::Q6_K if crate::wide::available() => {
                    let (mut d, mut sc) = (Vec::new(), Vec::new());
                    crate::wide::q6_k_row_scales(row, &mut d, &mut sc);
                    return crate::wide::dot_q6_k_x4(row, &d, &sc, x);
                }
                DType::Q6_K => return simd::q6_k(row, x),
                _ => {}
            }
        }
    }
    x.map(|x| dot_row_q8(dtype, row, x))
}

/// Every row `r` of `rows` (`row(r)` its bytes) against every activation row `x[i]`:
/// `put(i, r, dot)`, four activation rows at a time while four remain, each result
/// bit-identical to [`dot_row_q8`]. A matrix product's band of output features runs
/// here, so what a row's kernel can prepare once (Q8_0's and Q4_1's scales as floats) is prepared
/// once per band, not once per four tokens.
pub fn band<'w>(
    dtype: DType,
    row: impl Fn(usize) -> &'w [u8],
    rows: std::ops::Range<usize>,
    x: &[Q8Activations],
    mut put: impl FnMut(usize, usize, f32),
) {
    let groups = x.len() / LANES * LANES;
    #[cfg(target_arch = "x86_64")]
    if matches!(dtype, DType::Q8_0 | DType::Q4_1 | DType::Q4_K | DType::Q6_K)
        && crate::wide::available()
        && groups > 0
        && !rows.is_empty()
        && !row(rows.start).is_empty()
    {
        wide_band(dtype, &row, rows.clone(), &x[..groups], &mut put);
        rest(dtype, &row, rows, x, groups, put);
        return;
    }
    for i in (0..groups).step_by(LANES) {
        let xs = [&x[i], &x[i + 1], &x[i + 2], &x[i + 3]];
        for r in rows.clone() {
            for (j, v) in dot_row_q8_x4(dtype, row(r), xs).into_iter().enumerate() {
                put(i + j, r, v);
            }
        }
    }
    rest(dtype, &row, rows, x, groups, put);
}

/// [`band`] on the 512-bit kernels, for whole groups of four activation rows: the rows'
/// scales are made floats once, for every group.
#[cfg(target_arch = "x86_64")]
fn wide_band<'w>(
    dtype: DType,
    row: &impl Fn(usize) -> &'w [u8],
    rows: std::ops::Range<usize>,
    x: &[Q8Activations],
    put: &mut impl FnMut(usize, usize, f32),
) {
    // Per row: `nd` of the first kind of scale (one per block; eight per Q4_K super-block;
    // one per Q6_K super-block) and `nm` of the second (Q4_1's m, Q4_K's dmin·min, Q6_K's
    // sixteen scales).
    let (per, size) = dtype.block();
    let units = row(rows.start).len() / size;
    let (nd, nm) = match dtype {
        DType::Q6_K => (units, units * 16),
        _ => (units * (per / 32), units * (per / 32)),
    };
    let (mut d, mut m) = (Vec::with_capacity(rows.len() * nd), Vec::new());
    for r in rows.clone() {
        match dtype {
            DType::Q8_0 => crate::wide::block_scales(row(r), &mut d),
            DType::Q4_K => crate::wide::q4_k_row_scales(row(r), &mut d, &mut m),
            DType::Q6_K => crate::wide::q6_k_row_scales(row(r), &mut d, &mut m),
            _ => crate::wide::q4_1_scales(row(r), &mut d, &mut m),
        }
    }
    for i in (0..x.len()).step_by(LANES) {
        let xs = [&x[i], &x[i + 1], &x[i + 2], &x[i + 3]];
        for (k, r) in rows.clone().enumerate() {
            let dk = &d[k * nd..(k + 1) * nd];
            let mk = || &m[k * nm..(k + 1) * nm];
            // SAFETY: the 512-bit features were detected by the caller; `row(r)` holds
            // whole blocks and each `x` as many (checked by the kernels).
            let v = unsafe {
                match dtype {
                    DType::Q8_0 => crate::wide::dot_q8_0_x4(row(r), dk, xs),
                    DType::Q4_K => crate::wide::dot_q4_k_x4(row(r), dk, mk(), xs),
                    DType::Q6_K => crate::wide::dot_q6_k_x4(row(r), dk, mk(), xs),
                    _ => crate::wide::dot_q4_1_x4(row(r), dk, mk(), xs),
                }
            };
            for (j, v) in v.into_iter().enumerate() {
                put(i + j, r, v);
            }
        }
    }
}

/// How far ahead of the row being multiplied a decode step's product prefetches: about
/// 12 KiB. One activation row against a large matrix is a pure stream of weights from
/// memory, and the hardware prefetcher alone left it latency-bound: Gemma 3's output head
/// (262,144 × 640 Q8_0, 178 MB) took 11.9 ms on 2 threads (15 GB/s of 24.5 measured), 9.1
/// ms with 16 rows (11 KiB) of prefetch, 9.3–9.5 ms with 24 rows. Bands of 1 MiB instead of
/// 64 rows, so that the prefetch never stops at a band's end, were no faster.
const AHEAD_BYTES: usize = 12 << 10;

/// Ask for `bytes` in the cache ahead of their use (a hint: nothing is read).
#[cfg(target_arch = "x86_64")]
fn prefetch(bytes: &[u8]) {
    for at in (0..bytes.len()).step_by(64) {
        // SAFETY: a prefetch reads nothing and cannot fault; the address lies in `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                bytes.as_ptr().add(at) as *const i8,
            )
        };
    }
}

/// The activation rows from `from` on, one at a time (a decode step's only row): Q4_1
/// weight rows four at a time on the 512-bit kernels, each bit-identical to one alone.
fn rest<'w>(
    dtype: DType,
    row: &impl Fn(usize) -> &'w [u8],
    rows: std::ops::Range<usize>,
    x: &[Q8Activations],
    from: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    if rows.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let ahead = AHEAD_BYTES / row(rows.start).len().max(1) + 1;
    for (i, xi) in x.iter().enumerate().skip(from) {
        let mut r = rows.start;
        #[cfg(target_arch = "x86_64")]
        if dtype == DType::Q4_1 && crate::wide::available() {
            while r + 4 <= rows.end {
                for p in (r + ahead..r + ahead + 4).take_while(|&p| p < rows.end) {
                    prefetch(row(p));
                }
                let four = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                // SAFETY: the 512-bit features were detected; a matrix's rows are whole
                // blocks of one length, and `xi` holds as many (checked by the kernel).
                let v = unsafe { crate::wide::dot_q4_1_rows4(four, xi) };
                for (j, v) in v.into_iter().enumerate() {
                    put(i, r + j, v);
                }
                r += 4;
            }
        }
        for r in r..rows.end {
            #[cfg(target_arch = "x86_64")]
            if r + ahead < rows.end {
                prefetch(row(r + ahead));
            }
            put(i, r, dot_row_q8(dtype, row(r), xi));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::LANES;
    use crate::quant::simd::{
        Madd, block_sums16, f32x8, fma16, h2f, hsum, per_isa, q4_1_block, q4_1_mins, q6_k_half, xq,
    };
    use crate::quant::{Q8Activations, f16_at};
    use std::arch::x86_64::*;

    type X<'a> = [&'a Q8Activations; LANES];
    /// One accumulator per activation row, as the one-row kernels keep.
    type Acc = [__m256; LANES];

    /// # Safety
    /// AVX2 present.
    #[inline(always)]
    unsafe fn zeros() -> Acc {
        // SAFETY: as the caller promises.
        [unsafe { _mm256_setzero_ps() }; LANES]
    }

    /// # Safety
    /// AVX2 present.
    #[inline(always)]
    unsafe fn sums(acc: Acc) -> [f32; LANES] {
        // SAFETY: as the caller promises.
        acc.map(|a| unsafe { hsum(a) })
    }

    per_isa!(q4_1 = q4_1_with(row: &[u8], x: [&crate::quant::Q8Activations; super::LANES]) -> [f32; super::LANES]);

    #[inline(always)]
    unsafe fn q4_1_with<M: Madd>(row: &[u8], x: X) -> [f32; LANES] {
        let nb = row.len() / 20;
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let (mut acc, mut mv) = unsafe { ([zeros(), zeros()], [[_mm256_setzero_ps(); 2]; LANES]) };
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            // SAFETY: AVX2 and F16C present; blocks below `nb` lie in `row`, and each x holds
            // as many.
            unsafe {
                let m = q4_1_mins(row, first, n);
                for j in 0..LANES {
                    mv[j] = fma16(mv[j], &m, &block_sums16(x[j], first, n));
                }
                for b in first..first + n {
                    let (qw, d, _) = q4_1_block(&row[b * 20..b * 20 + 20]);
                    let acc = &mut acc[b % 2];
                    for j in 0..LANES {
                        let p = M::madd(qw, xq(x[j], b));
                        acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[j].d[b]), p, acc[j]);
                    }
                }
            }
        }
        // SAFETY: as above.
        let (s, t) = unsafe {
            (
                sums(std::array::from_fn(|j| _mm256_add_ps(acc[0][j], acc[1][j]))),
                sums(std::array::from_fn(|j| _mm256_add_ps(mv[j][0], mv[j][1]))),
            )
        };
        std::array::from_fn(|j| s[j] + t[j])
    }

    per_isa!(q8_0 = q8_0_with(row: &[u8], x: [&crate::quant::Q8Activations; super::LANES]) -> [f32; super::LANES]);

    #[inline(always)]
    unsafe fn q8_0_with<M: Madd>(row: &[u8], x: X) -> [f32; LANES] {
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let mut acc = unsafe { [zeros(), zeros()] };
        for (b, blk) in row.chunks_exact(34).enumerate() {
            // SAFETY: blk has 34 bytes (32 from offset 2); each x.q has 32 per block.
            unsafe {
                let qw = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
                let aw = _mm256_sign_epi8(qw, qw);
                let d = h2f(blk, 0);
                let acc = &mut acc[b % 2];
                for j in 0..LANES {
                    let p = M::madd(aw, _mm256_sign_epi8(xq(x[j], b), qw));
                    acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[j].d[b]), p, acc[j]);
                }
            }
        }
        // SAFETY: as above.
        unsafe { sums(std::array::from_fn(|j| _mm256_add_ps(acc[0][j], acc[1][j]))) }
    }

    per_isa!(q4_k = q4_k_with(row: &[u8], x: [&crate::quant::Q8Activations; super::LANES]) -> [f32; super::LANES]);

    #[inline(always)]
    unsafe fn q4_k_with<M: Madd>(row: &[u8], x: X) -> [f32; LANES] {
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let (mut lo_acc, mut hi_acc, mut mins) = unsafe { (zeros(), zeros(), zeros()) };
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let low = unsafe { _mm256_set1_epi8(0x0F) };
        for (sb, blk) in row.chunks_exact(144).enumerate() {
            let (ds, dm) = crate::quant::q4_k_scales(blk);
            // SAFETY: blk has 144 bytes (32 from 16 + 32·chunk); each x holds 8 blocks of
            // 32 activations per super-block.
            unsafe {
                let dm = f32x8(dm);
                for j in 0..LANES {
                    let sums = _mm256_loadu_ps(x[j].sum[sb * 8..sb * 8 + 8].as_ptr());
                    mins[j] = _mm256_fmadd_ps(dm, sums, mins[j]);
                }
                for chunk in 0..4 {
                    let (b1, b2) = (sb * 8 + chunk * 2, sb * 8 + chunk * 2 + 1);
                    let q = _mm256_loadu_si256(blk.as_ptr().add(16 + chunk * 32) as *const __m256i);
                    let lo = _mm256_and_si256(q, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    for j in 0..LANES {
                        let p1 = M::madd(lo, xq(x[j], b1));
                        let p2 = M::madd(hi, xq(x[j], b2));
                        let s1 = _mm256_set1_ps(ds[chunk * 2] * x[j].d[b1]);
                        let s2 = _mm256_set1_ps(ds[chunk * 2 + 1] * x[j].d[b2]);
                        lo_acc[j] = _mm256_fmadd_ps(s1, p1, lo_acc[j]);
                        hi_acc[j] = _mm256_fmadd_ps(s2, p2, hi_acc[j]);
                    }
                }
            }
        }
        // SAFETY: as above.
        let (s, m) = unsafe {
            (
                sums(std::array::from_fn(|j| _mm256_add_ps(lo_acc[j], hi_acc[j]))),
                sums(mins),
            )
        };
        std::array::from_fn(|j| s[j] - m[j])
    }

    per_isa!(q6_k = q6_k_with(row: &[u8], x: [&crate::quant::Q8Activations; super::LANES]) -> [f32; super::LANES]);

    #[inline(always)]
    unsafe fn q6_k_with<M: Madd>(row: &[u8], x: X) -> [f32; LANES] {
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let mut acc = unsafe { [zeros(), zeros()] };
        for (sb, blk) in row.chunks_exact(210).enumerate() {
            let d = f16_at(blk, 208);
            for half in 0..2 {
                let sc = &blk[192 + half * 8..192 + half * 8 + 8];
                // SAFETY: blk is one super-block; each x.q has 32 per block.
                unsafe {
                    for (k, v) in q6_k_half(blk, half).into_iter().enumerate() {
                        let av = _mm256_sign_epi8(v, v);
                        let b = sb * 8 + half * 4 + k;
                        let (c1, c2) = ((sc[2 * k] as i8) as f32, (sc[2 * k + 1] as i8) as f32);
                        let acc = &mut acc[k % 2];
                        for j in 0..LANES {
                            let p = M::madd(av, _mm256_sign_epi8(xq(x[j], b), v));
                            let f = d * x[j].d[b];
                            let (s1, s2) = (f * c1, f * c2);
                            let scale = _mm256_set_ps(s2, s2, s2, s2, s1, s1, s1, s1);
                            acc[j] = _mm256_fmadd_ps(scale, p, acc[j]);
                        }
                    }
                }
            }
        }
        // SAFETY: as above.
        unsafe { sums(std::array::from_fn(|j| _mm256_add_ps(acc[0][j], acc[1][j]))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_q8;
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

    /// Random blocks with finite f16 scales (random bytes would make NaN and infinities).
    fn row(dtype: DType, blocks: usize, seed: u64) -> Vec<u8> {
        let (_, size) = dtype.block();
        let mut r = noise(blocks * size, seed);
        for (i, blk) in r.chunks_exact_mut(size).enumerate() {
            let d = f16::from_f32(0.01 + (i % 7) as f32 * 0.003).to_le_bytes();
            let m = f16::from_f32(-0.05 + (i % 5) as f32 * 0.01).to_le_bytes();
            match dtype {
                DType::Q8_0 => blk[..2].copy_from_slice(&d),
                DType::Q4_1 | DType::Q4_K => {
                    blk[..2].copy_from_slice(&d);
                    blk[2..4].copy_from_slice(&m);
                }
                DType::Q6_K => blk[208..210].copy_from_slice(&d),
                _ => unreachable!(),
            }
        }
        r
    }

    /// The batched kernels' AVX2 and VNNI copies agree bit for bit, so which one ran on
    /// a given CPU cannot change a prompt's logits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_and_avx2_batched_kernels_are_bit_identical() {
        if !(crate::quant::simd_available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl"))
        {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let k = 768;
        let acts: Vec<Q8Activations> = (0..LANES as u64)
            .map(|s| {
                let x: Vec<f32> = noise(k, 300 + s)
                    .iter()
                    .map(|&b| (b as f32 - 128.0) / 5.0)
                    .collect();
                quantize_q8(&x)
            })
            .collect();
        let x = [&acts[0], &acts[1], &acts[2], &acts[3]];
        type Kernel = unsafe fn(&[u8], [&Q8Activations; LANES]) -> [f32; LANES];
        let kernels: [(DType, Kernel, Kernel); 4] = [
            (DType::Q4_1, simd::q4_1::avx2, simd::q4_1::vnni),
            (DType::Q8_0, simd::q8_0::avx2, simd::q8_0::vnni),
            (DType::Q4_K, simd::q4_k::avx2, simd::q4_k::vnni),
            (DType::Q6_K, simd::q6_k::avx2, simd::q6_k::vnni),
        ];
        for (dtype, avx2, vnni) in kernels {
            let w = row(dtype, k / dtype.block().0, 7);
            // SAFETY: AVX2, FMA, F16C and VNNI detected above; whole blocks.
            let (a, v) = unsafe { (avx2(&w, x), vnni(&w, x)) };
            assert_eq!(
                a.map(f32::to_bits),
                v.map(f32::to_bits),
                "{dtype:?}: {a:?} vs {v:?}"
            );
        }
    }

    #[test]
    fn four_rows_at_once_are_bit_identical_to_one_at_a_time() {
        let k = 768; // three K-quant super-blocks, 24 blocks of 32
        let acts: Vec<Q8Activations> = (0..LANES as u64)
            .map(|s| {
                let x: Vec<f32> = noise(k, 100 + s)
                    .iter()
                    .map(|&b| (b as f32 - 128.0) / (17.0 + s as f32))
                    .collect();
                quantize_q8(&x)
            })
            .collect();
        let x = [&acts[0], &acts[1], &acts[2], &acts[3]];
        for dtype in [DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
            let (per, _) = dtype.block();
            for seed in 0..5 {
                let w = row(dtype, k / per, seed);
                let four = dot_row_q8_x4(dtype, &w, x);
                for j in 0..LANES {
                    let one = dot_row_q8(dtype, &w, x[j]);
                    assert_eq!(
                        four[j].to_bits(),
                        one.to_bits(),
                        "{dtype:?} lane {j}: {} vs {one}",
                        four[j]
                    );
                }
            }
        }
    }

    /// A band of rows against seven activation rows (one group of four, three left):
    /// every result, from whichever kernel, equals the one-row product bit for bit.
    #[test]
    fn a_band_gives_the_one_row_products() {
        let k = 512;
        let acts: Vec<Q8Activations> = (0..7u64)
            .map(|s| {
                let x: Vec<f32> = noise(k, 500 + s)
                    .iter()
                    .map(|&b| (b as f32 - 128.0) / 11.0)
                    .collect();
                quantize_q8(&x)
            })
            .collect();
        for dtype in [DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
            let (per, _) = dtype.block();
            let rows: Vec<Vec<u8>> = (0..3).map(|r| row(dtype, k / per, 40 + r)).collect();
            let mut got = [f32::NAN; 7 * 3];
            band(
                dtype,
                |r| &rows[r][..],
                0..3,
                &acts,
                |i, r, v| got[i * 3 + r] = v,
            );
            for (i, x) in acts.iter().enumerate() {
                for (r, w) in rows.iter().enumerate() {
                    let want = dot_row_q8(dtype, w, x);
                    assert_eq!(
                        got[i * 3 + r].to_bits(),
                        want.to_bits(),
                        "{dtype:?} {i} {r}"
                    );
                }
            }
        }
    }
}
