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

/// The low and high eight lanes.
///
/// # Safety
/// The 512-bit features present.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn halves(v: __m512) -> (__m256, __m256) {
    // SAFETY: as the caller promises.
    unsafe {
        (
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        )
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
        let (mut even, odd) = halves(acc);
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

/// `dot(row, x[j])` for a Q8_0 row and four activation rows, each bit-identical to the
/// 256-bit kernel for one; `dw` is the row's [`block_scales`].
///
/// A prompt's products only: for one token (decode) the 256-bit kernel is as fast or
/// faster on the CPUs measured (Gemma 3's decode, whose output matrix is Q8_0: 33 tok/s
/// with a 512-bit one-row kernel against 41 with the 256-bit one, same run).
///
/// # Safety
/// The 512-bit features present ([`available`]); `row` holds whole blocks, and `dw` and
/// every `x[j]` at least as many.
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

/// Bytes of one Q4_1 block: f16 `d` and `m`, then 32 nibbles in 16 bytes.
const Q4_1: usize = 20;

/// `row`'s Q4_1 scales `d` and offsets `m` as floats, appended to `d` and `m`, for
/// [`dot_q4_1_x4`].
pub fn q4_1_scales(row: &[u8], d: &mut Vec<f32>, m: &mut Vec<f32>) {
    for b in row.chunks_exact(Q4_1) {
        d.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        m.push(half::f16::from_le_bytes([b[2], b[3]]).to_f32());
    }
}

/// Dword lane tables of [`q4_1_row_scales`]: block `j`'s `(d, m)` is dword `5j` of its
/// group, so lanes 0–6 come from loads 0–1, lanes 7–12 from loads 2–3 and lanes 13–15
/// from load 4. Entries outside a lane's source are never selected.
#[cfg(target_arch = "x86_64")]
const fn dword_table(from: i32) -> [i32; 16] {
    let mut t = [0i32; 16];
    let mut j = 0;
    while j < 16 {
        let at = 5 * j as i32 - from;
        t[j] = if at >= 0 && at < 32 { at } else { 0 };
        j += 1;
    }
    t
}

/// The `d` and `m` of blocks `first..first + n` of a Q4_1 `row` (lanes from `n` on zero),
/// in registers. A block's two halves are one dword, so three dword permutes (one
/// micro-op each) gather sixteen of them out of the group's five 64-byte loads and one
/// word permute splits the `d`s from the `m`s. Whole groups load unmasked: masked loads
/// and 16-bit two-table permutes (three micro-ops each) were most of this function's
/// time in the profile of SmolLM2's decode, whose rows are 18 blocks. Built in memory and
/// reloaded instead, the scales stalled every row on a failed store-to-load forward.
///
/// # Safety
/// The 512-bit features present; blocks `first..first + n` lie inside `row`, `n <= 16`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn q4_1_row_scales(row: &[u8], first: usize, n: usize) -> (__m512, __m512) {
    const T01: [i32; 16] = dword_table(0);
    const T23: [i32; 16] = dword_table(32);
    const T4: [i32; 16] = dword_table(64);
    // Words 2j (the d's) into the low half and 2j + 1 (the m's) into the high half.
    const SPLIT: [i16; 32] = {
        let mut t = [0i16; 32];
        let mut j = 0;
        while j < 16 {
            t[j] = 2 * j as i16;
            t[16 + j] = 2 * j as i16 + 1;
            j += 1;
        }
        t
    };
    // SAFETY: as the caller promises: a whole group's 80 dwords lie in the row; a
    // partial group's loads read only the dwords of its blocks (the masks).
    unsafe {
        let base = row.as_ptr().add(first * Q4_1) as *const i32;
        let valid = n * Q4_1 / 4;
        let load = |k: usize| {
            if valid >= 16 * (k + 1) {
                _mm512_loadu_si512(base.add(16 * k) as *const __m512i)
            } else {
                let keep = valid.saturating_sub(16 * k).min(16);
                _mm512_maskz_loadu_epi32(((1u32 << keep) - 1) as u16, base.add(16 * k))
            }
        };
        let t = |v: [i32; 16]| std::mem::transmute::<[i32; 16], __m512i>(v);
        let mut v = _mm512_permutex2var_epi32(load(0), t(T01), load(1));
        if n > 7 {
            let hi = _mm512_permutex2var_epi32(load(2), t(T23), load(3));
            v = _mm512_mask_blend_epi32(0x1F80, v, hi);
        }
        if n > 13 {
            v = _mm512_mask_blend_epi32(0xE000, v, _mm512_permutexvar_epi32(t(T4), load(4)));
        }
        let w = _mm512_permutexvar_epi16(std::mem::transmute::<[i16; 32], __m512i>(SPLIT), v);
        // Lanes from `n` on may hold another block's scales (the tables' filler): zero
        // them, as the products expect (an infinite `m` times a zero sum would be NaN).
        let live = lanes(n);
        (
            _mm512_maskz_cvtph_ps(live, _mm512_castsi512_si256(w)),
            _mm512_maskz_cvtph_ps(live, _mm512_extracti64x4_epi64::<1>(w)),
        )
    }
}

/// The 64 nibbles of Q4_1 blocks `b` and `b + 1` as bytes, in the activations' order:
/// block `b`'s low nibbles, its high nibbles, then block `b + 1`'s.
///
/// # Safety
/// The 512-bit features present; blocks `b` and `b + 1` lie inside `row`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn q4_1_pair(row: &[u8], b: usize) -> __m512i {
    // SAFETY: as the caller promises: 16 bytes from offset 4 of each block.
    unsafe {
        let p = row.as_ptr().add(b * Q4_1 + 4);
        let q0 = _mm_loadu_si128(p as *const __m128i);
        let q1 = _mm_loadu_si128(p.add(Q4_1) as *const __m128i);
        let y = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(q0), q1);
        let z = _mm512_permutexvar_epi64(
            _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
            _mm512_castsi256_si512(y),
        );
        // Every 16-bit lane of the second and fourth 128-bit lanes shifts by 4.
        const FOUR: i64 = 0x0004_0004_0004_0004;
        let z = _mm512_srlv_epi16(z, _mm512_set_epi64(FOUR, FOUR, 0, 0, FOUR, FOUR, 0, 0));
        _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
    }
}

/// One activation row's share of a pair of blocks of unsigned values (Q4_1's, Q4_K's).
///
/// # Safety
/// The 512-bit features present; `x` holds 64 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn q4_1_step(acc: __m512, w: __m512i, x: *const i8, sv: __m512, idx: __m512i) -> __m512 {
    // SAFETY: as the caller promises.
    unsafe { q4_1_step_loaded(acc, w, _mm512_loadu_si512(x as *const __m512i), sv, idx) }
}

/// [`q4_1_step`] on activations already in a register (shared by several weight rows).
///
/// # Safety
/// The 512-bit features present.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn q4_1_step_loaded(
    acc: __m512,
    w: __m512i,
    xv: __m512i,
    sv: __m512,
    idx: __m512i,
) -> __m512 {
    // SAFETY: as the caller promises.
    unsafe {
        let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv));
        _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, sv), p, acc)
    }
}

/// The odd block, then `hsum(even + odd) + hsum(m-terms)`: the 256-bit kernels' end.
///
/// # Safety
/// The 512-bit features present; when `nb` is odd, block `nb - 1` lies inside `row`, `x`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn q4_1_finish(acc: __m512, mv: __m512, row: &[u8], x: &Q8Activations, nb: usize) -> f32 {
    // SAFETY: as the caller promises.
    unsafe {
        let (mut even, odd) = halves(acc);
        if nb % 2 == 1 {
            let b = nb - 1;
            let (qw, d, _) = crate::quant::simd::q4_1_block(&row[b * Q4_1..(b + 1) * Q4_1]);
            let xv = _mm256_loadu_si256(x.q[b * 32..b * 32 + 32].as_ptr() as *const __m256i);
            let p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), qw, xv));
            even = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[b]), p, even);
        }
        let (mlo, mhi) = halves(mv);
        crate::quant::simd::hsum(_mm256_add_ps(even, odd))
            + crate::quant::simd::hsum(_mm256_add_ps(mlo, mhi))
    }
}

/// `dot(row, x)` for a Q4_1 row, bit-identical to the 256-bit kernel.
///
/// # Safety
/// The 512-bit features present ([`available`]); `row` holds whole blocks and `x` at
/// least as many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q4_1(row: &[u8], x: &Q8Activations) -> f32 {
    let nb = row.len() / Q4_1;
    assert!(
        x.q.len() >= nb * 32 && x.d.len() >= nb && x.sum.len() >= nb,
        "activations shorter than the row"
    );
    let xq = x.q.as_ptr();
    // SAFETY: blocks below `nb` lie inside `row` and `x` (checked above).
    unsafe {
        let (mut acc, mut mv) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let two = _mm512_set1_epi32(2);
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            let (d, m) = q4_1_row_scales(row, first, n);
            let sums = _mm512_maskz_loadu_ps(lanes(n), x.sum.as_ptr().add(first));
            mv = _mm512_fmadd_ps(m, sums, mv);
            let sv = scales(d, &x.d, first, lanes(n));
            let mut idx = START;
            for b in (first..first + n - 1).step_by(2) {
                acc = q4_1_step(acc, q4_1_pair(row, b), xq.add(b * 32), sv, idx);
                idx = _mm512_add_epi32(idx, two);
            }
        }
        q4_1_finish(acc, mv, row, x, nb)
    }
}

/// `dot(rows[r], x)` for four weight rows against one activation row, each bit-identical
/// to [`dot_q4_1`]: a decode step's products. Four rows at once share the activations'
/// loads, scales and loop, and give the core four independent chains, so the per-row cost
/// that dominated SmolLM2's 18-block rows (the scale gather and the horizontal sums)
/// overlaps instead of queueing behind one row's dependency chain.
///
/// # Safety
/// The 512-bit features present ([`available`]); every row holds the same whole number of
/// blocks and `x` at least as many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q4_1_rows4(rows: [&[u8]; 4], x: &Q8Activations) -> [f32; 4] {
    let nb = rows[0].len() / Q4_1;
    assert!(
        rows.iter().all(|r| r.len() == rows[0].len()),
        "rows of different lengths"
    );
    assert!(
        x.q.len() >= nb * 32 && x.d.len() >= nb && x.sum.len() >= nb,
        "activations shorter than the row"
    );
    let xq = x.q.as_ptr();
    // SAFETY: blocks below `nb` lie inside every row and `x` (checked above).
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut mv = [_mm512_setzero_ps(); 4];
        let two = _mm512_set1_epi32(2);
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            let sums = _mm512_maskz_loadu_ps(lanes(n), x.sum.as_ptr().add(first));
            let mut sv = [_mm512_setzero_ps(); 4];
            for r in 0..4 {
                let (d, m) = q4_1_row_scales(rows[r], first, n);
                mv[r] = _mm512_fmadd_ps(m, sums, mv[r]);
                sv[r] = scales(d, &x.d, first, lanes(n));
            }
            let mut idx = START;
            for b in (first..first + n - 1).step_by(2) {
                let xv = _mm512_loadu_si512(xq.add(b * 32) as *const __m512i);
                for r in 0..4 {
                    acc[r] = q4_1_step_loaded(acc[r], q4_1_pair(rows[r], b), xv, sv[r], idx);
                }
                idx = _mm512_add_epi32(idx, two);
            }
        }
        [
            q4_1_finish(acc[0], mv[0], rows[0], x, nb),
            q4_1_finish(acc[1], mv[1], rows[1], x, nb),
            q4_1_finish(acc[2], mv[2], rows[2], x, nb),
            q4_1_finish(acc[3], mv[3], rows[3], x, nb),
        ]
    }
}

/// `dot(row, x[j])` for four activation rows, each bit-identical to [`dot_q4_1`]; `d`
/// and `m` are the row's [`q4_1_scales`].
///
/// # Safety
/// As for [`dot_q4_1`], for every `x[j]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q4_1_x4(row: &[u8], d: &[f32], m: &[f32], x: [&Q8Activations; 4]) -> [f32; 4] {
    let nb = row.len() / Q4_1;
    assert!(
        d.len() >= nb && m.len() >= nb,
        "block scales shorter than the row"
    );
    for xj in x {
        assert!(
            xj.q.len() >= nb * 32 && xj.d.len() >= nb && xj.sum.len() >= nb,
            "activations shorter than the row"
        );
    }
    let xq = [
        x[0].q.as_ptr(),
        x[1].q.as_ptr(),
        x[2].q.as_ptr(),
        x[3].q.as_ptr(),
    ];
    // SAFETY: blocks below `nb` lie inside `row`, `d`, `m` and every `x` (checked above).
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut mv = [_mm512_setzero_ps(); 4];
        let two = _mm512_set1_epi32(2);
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            let dv = _mm512_maskz_loadu_ps(lanes(n), d.as_ptr().add(first));
            let mvv = _mm512_maskz_loadu_ps(lanes(n), m.as_ptr().add(first));
            let mut sv = [_mm512_setzero_ps(); 4];
            for j in 0..4 {
                let sums = _mm512_maskz_loadu_ps(lanes(n), x[j].sum.as_ptr().add(first));
                mv[j] = _mm512_fmadd_ps(mvv, sums, mv[j]);
                sv[j] = scales(dv, &x[j].d, first, lanes(n));
            }
            let mut idx = START;
            for b in (first..first + n - 1).step_by(2) {
                let w = q4_1_pair(row, b);
                for j in 0..4 {
                    acc[j] = q4_1_step(acc[j], w, xq[j].add(b * 32), sv[j], idx);
                }
                idx = _mm512_add_epi32(idx, two);
            }
        }
        [
            q4_1_finish(acc[0], mv[0], row, x[0], nb),
            q4_1_finish(acc[1], mv[1], row, x[1], nb),
            q4_1_finish(acc[2], mv[2], row, x[2], nb),
            q4_1_finish(acc[3], mv[3], row, x[3], nb),
        ]
    }
}

/// Bytes of one Q4_K super-block: f16 `d` and `dmin`, 12 bytes of 6-bit scales and
/// mins, then 256 nibbles in 128 bytes.
const Q4_K: usize = 144;

/// `row`'s Q4_K `d·scale` and `dmin·min`, eight per super-block, appended to `ds` and
/// `dm`, for [`dot_q4_k_x4`].
pub fn q4_k_row_scales(row: &[u8], ds: &mut Vec<f32>, dm: &mut Vec<f32>) {
    for blk in row.chunks_exact(Q4_K) {
        let (s, m) = crate::quant::q4_k_scales(blk);
        ds.extend(s);
        dm.extend(m);
    }
}

/// `dot(row, x[j])` for a Q4_K row and four activation rows, each bit-identical to the
/// 256-bit kernel for one; `ds` and `dm` are the row's [`q4_k_row_scales`]. One register
/// holds a 64-value chunk: its low nibbles (one block of activations) in the low half
/// and its high nibbles (the next block) in the high half, so the two accumulators of
/// the 256-bit kernel are this one's halves.
///
/// # Safety
/// The 512-bit features present ([`available`]); `row` holds whole super-blocks, and
/// `ds`, `dm` and every `x[j]` at least as many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q4_k_x4(row: &[u8], ds: &[f32], dm: &[f32], x: [&Q8Activations; 4]) -> [f32; 4] {
    let ns = row.len() / Q4_K;
    assert!(
        ds.len() >= ns * 8 && dm.len() >= ns * 8,
        "scales shorter than the row"
    );
    for xj in x {
        assert!(
            xj.q.len() >= ns * 256 && xj.d.len() >= ns * 8 && xj.sum.len() >= ns * 8,
            "activations shorter than the row"
        );
    }
    let xq = [
        x[0].q.as_ptr(),
        x[1].q.as_ptr(),
        x[2].q.as_ptr(),
        x[3].q.as_ptr(),
    ];
    // SAFETY: super-blocks below `ns` lie inside `row`, `ds`, `dm` and every `x`.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut mins = [_mm256_setzero_ps(); 4];
        let (low, two) = (_mm256_set1_epi8(0x0F), _mm512_set1_epi32(2));
        for sb in 0..ns {
            let dsv = _mm256_loadu_ps(ds.as_ptr().add(sb * 8));
            let dmv = _mm256_loadu_ps(dm.as_ptr().add(sb * 8));
            let mut sv = [_mm512_setzero_ps(); 4];
            for j in 0..4 {
                let sums = _mm256_loadu_ps(x[j].sum.as_ptr().add(sb * 8));
                mins[j] = _mm256_fmadd_ps(dmv, sums, mins[j]);
                let xd = _mm256_loadu_ps(x[j].d.as_ptr().add(sb * 8));
                sv[j] = _mm512_castps256_ps512(_mm256_mul_ps(dsv, xd));
            }
            let mut idx = START;
            for chunk in 0..4 {
                let at = row.as_ptr().add(sb * Q4_K + 16 + chunk * 32);
                let q = _mm256_loadu_si256(at as *const __m256i);
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
                let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                let b = sb * 8 + chunk * 2;
                for j in 0..4 {
                    acc[j] = q4_1_step(acc[j], w, xq[j].add(b * 32), sv[j], idx);
                }
                idx = _mm512_add_epi32(idx, two);
            }
        }
        std::array::from_fn(|j| {
            let (lo, hi) = halves(acc[j]);
            crate::quant::simd::hsum(_mm256_add_ps(lo, hi)) - crate::quant::simd::hsum(mins[j])
        })
    }
}

/// Bytes of one Q6_K super-block: 128 bytes of low nibbles, 64 of high bits, 16 i8
/// scales (one per 16 values) and an f16 `d`.
const Q6_K: usize = 210;

/// `row`'s Q6_K `d` (one per super-block) and scales as floats (sixteen per
/// super-block), appended to `d` and `sc`, for [`dot_q6_k_x4`].
pub fn q6_k_row_scales(row: &[u8], d: &mut Vec<f32>, sc: &mut Vec<f32>) {
    for blk in row.chunks_exact(Q6_K) {
        d.push(half::f16::from_le_bytes([blk[208], blk[209]]).to_f32());
        sc.extend(blk[192..208].iter().map(|&c| f32::from(c as i8)));
    }
}

/// `dot(row, x[j])` for a Q6_K row and four activation rows, each bit-identical to the
/// 256-bit kernel for one; `d` and `sc` are the row's [`q6_k_row_scales`]. A register
/// holds two blocks, each with two 16-value scales, so a pair's scale vector has four
/// quarters.
///
/// # Safety
/// The 512-bit features present ([`available`]); `row` holds whole super-blocks, and
/// `d`, `sc` and every `x[j]` at least as many.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_q6_k_x4(row: &[u8], d: &[f32], sc: &[f32], x: [&Q8Activations; 4]) -> [f32; 4] {
    let ns = row.len() / Q6_K;
    assert!(
        d.len() >= ns && sc.len() >= ns * 16,
        "scales shorter than the row"
    );
    for xj in x {
        assert!(
            xj.q.len() >= ns * 256 && xj.d.len() >= ns * 8,
            "activations shorter than the row"
        );
    }
    let xq = [
        x[0].q.as_ptr(),
        x[1].q.as_ptr(),
        x[2].q.as_ptr(),
        x[3].q.as_ptr(),
    ];
    // For pair `p` of a half: lanes in quarters take scales 4p, 4p + 1, 4p + 2, 4p + 3.
    const QUARTERS: [[i32; 16]; 2] = [
        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3],
        [4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7],
    ];
    // SAFETY: super-blocks below `ns` lie inside `row`, `d`, `sc` and every `x`.
    unsafe {
        let idx: [__m512i; 2] = std::mem::transmute(QUARTERS);
        let mut acc = [_mm512_setzero_ps(); 4];
        for sb in 0..ns {
            let blk = &row[sb * Q6_K..(sb + 1) * Q6_K];
            let dv = _mm256_set1_ps(d[sb]);
            let f: [__m256; 4] = std::array::from_fn(|j| {
                _mm256_mul_ps(dv, _mm256_loadu_ps(x[j].d.as_ptr().add(sb * 8)))
            });
            for half in 0..2 {
                let scv = _mm256_loadu_ps(sc.as_ptr().add(sb * 16 + half * 8));
                let h = 4 * half as i32;
                let spread = _mm256_setr_epi32(h, h, h + 1, h + 1, h + 2, h + 2, h + 3, h + 3);
                let s: [__m512; 4] = std::array::from_fn(|j| {
                    _mm512_castps256_ps512(_mm256_mul_ps(
                        _mm256_permutevar8x32_ps(f[j], spread),
                        scv,
                    ))
                });
                let v = crate::quant::simd::q6_k_half(blk, half);
                for p in 0..2 {
                    let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v[2 * p]), v[2 * p + 1]);
                    let w = (_mm512_abs_epi8(z), _mm512_movepi8_mask(z));
                    let b = sb * 8 + half * 4 + 2 * p;
                    for j in 0..4 {
                        acc[j] = step(acc[j], w, xq[j].add(b * 32), s[j], idx[p]);
                    }
                }
            }
        }
        std::array::from_fn(|j| {
            let (lo, hi) = halves(acc[j]);
            crate::quant::simd::hsum(_mm256_add_ps(lo, hi))
        })
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

    /// `nb` random Q4_1 blocks with finite scales and offsets of both signs.
    fn q4_1_row(nb: usize, seed: u64) -> Vec<u8> {
        let mut r = noise(nb * Q4_1, seed);
        for (i, blk) in r.chunks_exact_mut(Q4_1).enumerate() {
            let d = 0.003 + (i % 7) as f32 * 0.0041;
            let m = -0.06 + (i % 5) as f32 * 0.027;
            blk[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            blk[2..4].copy_from_slice(&f16::from_f32(m).to_le_bytes());
        }
        r
    }

    /// Block counts of the models' rows (18, 20, 28, 48, 152) and every edge of the
    /// sixteen-block groups and the odd tail.
    const COUNTS: [usize; 14] = [1, 2, 3, 7, 15, 16, 17, 18, 20, 28, 31, 33, 48, 152];

    /// The first lane of the four-row kernel, for tests of one activation row.
    fn wide_one(w: &[u8], x: &Q8Activations) -> f32 {
        let mut dw = Vec::new();
        block_scales(w, &mut dw);
        // SAFETY: callers check `available()`; whole blocks.
        unsafe { dot_q8_0_x4(w, &dw, [x, x, x, x])[0] }
    }

    #[test]
    fn wide_q8_0_is_bit_identical_to_the_256_bit_kernels() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            for (seed, edge, extreme) in [(1, false, false), (2, true, false), (3, false, true)] {
                let (w, x) = (row(nb, seed, edge), acts(nb, seed + 10, extreme));
                // SAFETY: every feature the copies need was detected above.
                let (a, v) = unsafe {
                    (
                        simd::dot_q8_0_q8::avx2(&w, &x),
                        simd::dot_q8_0_q8::vnni(&w, &x),
                    )
                };
                let z = wide_one(&w, &x);
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
            let mut dw = Vec::new();
            block_scales(&w, &mut dw);
            // SAFETY: the 512-bit features were detected above; whole blocks.
            let four = unsafe { dot_q8_0_x4(&w, &dw, x) };
            let batched = crate::batched::dot_row_q8_x4(crate::DType::Q8_0, &w, x);
            for j in 0..4 {
                let one = crate::quant::dot_row_q8(crate::DType::Q8_0, &w, x[j]);
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
            let got = f64::from(wide_one(&w, &x));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{nb}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn wide_q4_1_is_bit_identical_to_the_256_bit_kernels_and_batches() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            let w = q4_1_row(nb, nb as u64 + 3);
            let xs: Vec<Q8Activations> = (0..4).map(|j| acts(nb, 60 + j, j == 2)).collect();
            let x = [&xs[0], &xs[1], &xs[2], &xs[3]];
            let (mut d, mut m) = (Vec::new(), Vec::new());
            q4_1_scales(&w, &mut d, &mut m);
            // SAFETY: every feature the copies need was detected above; whole blocks.
            let four = unsafe { dot_q4_1_x4(&w, &d, &m, x) };
            let batched = crate::batched::dot_row_q8_x4(crate::DType::Q4_1, &w, x);
            for j in 0..4 {
                // SAFETY: as above.
                let (a, v, z) = unsafe {
                    (
                        simd::dot_q4_1_q8::avx2(&w, x[j]),
                        simd::dot_q4_1_q8::vnni(&w, x[j]),
                        dot_q4_1(&w, x[j]),
                    )
                };
                assert_eq!(a.to_bits(), v.to_bits(), "{nb} blocks: avx2 {a} vnni {v}");
                assert_eq!(a.to_bits(), z.to_bits(), "{nb} blocks: avx2 {a} wide {z}");
                assert_eq!(four[j].to_bits(), z.to_bits(), "{nb} blocks, row {j}");
                assert_eq!(batched[j].to_bits(), z.to_bits(), "{nb} blocks, row {j}");
            }
        }
    }

    #[test]
    fn wide_q4_1_four_weight_rows_match_one_at_a_time() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            let rows: Vec<Vec<u8>> = (0..4).map(|r| q4_1_row(nb, 90 + r + nb as u64)).collect();
            for (s, extreme) in [(70, false), (71, true)] {
                let x = acts(nb, s, extreme);
                let r = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
                // SAFETY: the features were detected above; whole blocks of one length.
                let four = unsafe { dot_q4_1_rows4(r, &x) };
                for j in 0..4 {
                    // SAFETY: as above.
                    let one = unsafe { dot_q4_1(r[j], &x) };
                    assert_eq!(four[j].to_bits(), one.to_bits(), "{nb} blocks, row {j}");
                }
            }
        }
    }

    #[test]
    fn wide_q4_1_matches_the_dequantized_product() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for nb in COUNTS {
            let (w, x) = (q4_1_row(nb, 9), acts(nb, 10, false));
            let mut want = 0f64;
            for b in 0..nb {
                let blk = &w[b * Q4_1..(b + 1) * Q4_1];
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f64();
                let m = f16::from_le_bytes([blk[2], blk[3]]).to_f64();
                for i in 0..32 {
                    let q = if i < 16 {
                        blk[4 + i] & 0xF
                    } else {
                        blk[4 + i - 16] >> 4
                    };
                    let xv = f64::from(x.d[b]) * f64::from(x.q[b * 32 + i]);
                    want += d * f64::from(q) * xv;
                }
                want += m * f64::from(x.sum[b]);
            }
            // SAFETY: as above.
            let got = f64::from(unsafe { dot_q4_1(&w, &x) });
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{nb}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn wide_q4_k_is_bit_identical_to_the_256_bit_kernels_and_batches() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for ns in [1, 2, 3, 19] {
            let mut w = noise(ns * Q4_K, ns as u64 + 77);
            for (i, blk) in w.chunks_exact_mut(Q4_K).enumerate() {
                blk[..2].copy_from_slice(&f16::from_f32(0.004 + i as f32 * 0.001).to_le_bytes());
                blk[2..4].copy_from_slice(&f16::from_f32(0.002 + i as f32 * 0.0007).to_le_bytes());
            }
            let xs: Vec<Q8Activations> = (0..4).map(|j| acts(ns * 8, 90 + j, j == 1)).collect();
            let x = [&xs[0], &xs[1], &xs[2], &xs[3]];
            let (mut ds, mut dm) = (Vec::new(), Vec::new());
            q4_k_row_scales(&w, &mut ds, &mut dm);
            // SAFETY: every feature the copies need was detected above; whole blocks.
            let four = unsafe { dot_q4_k_x4(&w, &ds, &dm, x) };
            let batched = crate::batched::dot_row_q8_x4(crate::DType::Q4_K, &w, x);
            let mut deq = vec![0f32; ns * 256];
            crate::quant::dequantize(crate::DType::Q4_K, &w, &mut deq);
            for j in 0..4 {
                // SAFETY: as above.
                let (a, v) = unsafe {
                    (
                        simd::dot_q4_k_q8::avx2(&w, x[j]),
                        simd::dot_q4_k_q8::vnni(&w, x[j]),
                    )
                };
                assert_eq!(a.to_bits(), v.to_bits(), "{ns}: avx2 {a} vnni {v}");
                assert_eq!(
                    four[j].to_bits(),
                    a.to_bits(),
                    "{ns}, row {j}: {} vs {a}",
                    four[j]
                );
                assert_eq!(batched[j].to_bits(), a.to_bits(), "{ns}, row {j}");
                // And the value itself, against the dequantized row and the 8-bit x.
                let want: f64 = (0..ns * 256)
                    .map(|i| {
                        let xv = f64::from(x[j].d[i / 32]) * f64::from(x[j].q[i]);
                        f64::from(deq[i]) * xv
                    })
                    .sum();
                let scale: f64 = (0..ns * 256)
                    .map(|i| f64::from(deq[i]).abs() * f64::from(x[j].d[i / 32]) * 127.0)
                    .sum();
                assert!(
                    (f64::from(a) - want).abs() <= 1e-3 * scale.max(1.0),
                    "{ns}: {a} vs {want}"
                );
            }
        }
    }

    #[test]
    fn wide_q6_k_is_bit_identical_to_the_256_bit_kernels_and_batches() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 BW and VNNI");
            return;
        }
        for ns in [1, 2, 3, 19] {
            let mut w = noise(ns * Q6_K, ns as u64 + 7);
            for (i, blk) in w.chunks_exact_mut(Q6_K).enumerate() {
                blk[208..].copy_from_slice(&f16::from_f32(0.003 + i as f32 * 0.0011).to_le_bytes());
            }
            let xs: Vec<Q8Activations> = (0..4).map(|j| acts(ns * 8, 70 + j, j == 0)).collect();
            let x = [&xs[0], &xs[1], &xs[2], &xs[3]];
            let (mut d, mut sc) = (Vec::new(), Vec::new());
            q6_k_row_scales(&w, &mut d, &mut sc);
            // SAFETY: every feature the copies need was detected above; whole blocks.
            let four = unsafe { dot_q6_k_x4(&w, &d, &sc, x) };
            let batched = crate::batched::dot_row_q8_x4(crate::DType::Q6_K, &w, x);
            let mut deq = vec![0f32; ns * 256];
            crate::quant::dequantize(crate::DType::Q6_K, &w, &mut deq);
            for j in 0..4 {
                // SAFETY: as above.
                let (a, v) = unsafe {
                    (
                        simd::dot_q6_k_q8::avx2(&w, x[j]),
                        simd::dot_q6_k_q8::vnni(&w, x[j]),
                    )
                };
                assert_eq!(a.to_bits(), v.to_bits(), "{ns}: avx2 {a} vnni {v}");
                assert_eq!(
                    four[j].to_bits(),
                    a.to_bits(),
                    "{ns}, row {j}: {} vs {a}",
                    four[j]
                );
                assert_eq!(batched[j].to_bits(), a.to_bits(), "{ns}, row {j}");
                let want: f64 = (0..ns * 256)
                    .map(|i| f64::from(deq[i]) * f64::from(x[j].d[i / 32]) * f64::from(x[j].q[i]))
                    .sum();
                let scale: f64 = (0..ns * 256)
                    .map(|i| f64::from(deq[i]).abs() * f64::from(x[j].d[i / 32]) * 127.0)
                    .sum();
                assert!(
                    (f64::from(a) - want).abs() <= 1e-3 * scale.max(1.0),
                    "{ns}: {a} vs {want}"
                );
            }
        }
    }
}
