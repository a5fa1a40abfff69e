//! Quantized rows: dequantization and dot products against f32 vectors.
//!
//! A matrix-vector product on quantized weights is a dot product per row. For the 32-value
//! formats the dot is computed straight from the packed blocks (`d·Σq·x + m·Σx` for Q4_1),
//! with an AVX2+FMA path chosen at run time and a portable path everywhere else; the
//! K-quants are dequantized a block at a time into a small buffer. The portable
//! dequantizers are the reference the fast paths and the parity tests check against.

use crate::dtype::DType;
use half::f16;

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Rewrite ggml Q5_0 blocks (`[d: f16, qh: u32, qs: 16 bytes]`, x = d·(q − 16) with q
/// of 5 bits) as Q8_0 blocks (`[d: f16, 32 × i8]`). Every Q5_0 value q − 16 lies in
/// −16..=15, so the same scale and an i8 hold it exactly: the widening loses nothing.
pub fn widen_q5_0_to_q8_0(src: &[u8], dst: &mut [u8]) {
    let (_, q8_bytes) = DType::Q8_0.block();
    for (b, o) in src
        .chunks_exact(crate::gguf::Q5_0_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(q8_bytes))
    {
        o[..2].copy_from_slice(&b[..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..16 {
            let lo = b[6 + j];
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            o[2 + j] = (((lo & 0x0F) | h0) as i8 - 16) as u8;
            o[2 + j + 16] = (((lo >> 4) | h1) as i8 - 16) as u8;
        }
    }
}

/// Dequantize `row` (whole blocks of `dtype`) into `out` (`out.len()` values).
pub fn dequantize(dtype: DType, row: &[u8], out: &mut [f32]) {
    let (per, bytes) = dtype.block();
    debug_assert_eq!(row.len() / bytes * per, out.len());
    for (blk, y) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(per)) {
        match dtype {
            DType::F32 => y[0] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
            DType::F16 => y[0] = f16_at(blk, 0),
            DType::Q4_0 => {
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    let q = blk[2 + j];
                    y[j] = d * ((q & 0xF) as i32 - 8) as f32;
                    y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
            DType::Q4_1 => {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                for j in 0..16 {
                    let q = blk[4 + j];
                    y[j] = d * (q & 0xF) as f32 + m;
                    y[j + 16] = d * (q >> 4) as f32 + m;
                }
            }
            DType::Q8_0 => {
                let d = f16_at(blk, 0);
                for j in 0..32 {
                    y[j] = d * (blk[2 + j] as i8) as f32;
                }
            }
            DType::Q4_K => dequantize_q4_k(blk, y),
            DType::Q6_K => dequantize_q6_k(blk, y),
        }
    }
}

pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A Q4_K super-block's eight `d·scale` and eight `dmin·min`, as every 8-bit kernel
/// forms them (`d · scale as f32`: the product order is part of the result's bits).
pub(crate) fn q4_k_scales(blk: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    let (mut ds, mut dm) = ([0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &blk[4..16]);
        ds[j] = d * sc as f32;
        dm[j] = dmin * m as f32;
    }
    (ds, dm)
}

fn dequantize_q4_k(blk: &[u8], y: &mut [f32]) {
    let d = f16_at(blk, 0);
    let dmin = f16_at(blk, 2);
    let scales = &blk[4..16];
    let qs = &blk[16..144];
    for (chunk, j) in (0..256).step_by(64).enumerate() {
        let is = chunk * 2;
        let (sc1, m1) = scale_min_k4(is, scales);
        let (sc2, m2) = scale_min_k4(is + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for l in 0..32 {
            y[j + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn dequantize_q6_k(blk: &[u8], y: &mut [f32]) {
    let ql = &blk[0..128];
    let qh = &blk[128..192];
    let sc = &blk[192..208];
    let d = f16_at(blk, 208);
    for half in 0..2 {
        let (ql, qh, sc, y) = (
            &ql[half * 64..],
            &qh[half * 32..],
            &sc[half * 8..],
            &mut y[half * 128..],
        );
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Whether the AVX2+FMA kernels are in use on this machine.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the 8-bit kernels use AVX-512 VNNI on this machine (see `simd::vnni`).
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd::vnni()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Activations quantized to 8 bits per 32-value block, once per matrix product, so the
/// weight rows can be dotted with integer multiply-adds (`maddubs`), as llama.cpp does.
/// `sum` holds each block's exact float sum, for Q4_1's `m·Σx` term.
pub struct Q8Activations {
    pub d: Vec<f32>,
    pub sum: Vec<f32>,
    pub q: Vec<i8>,
}

/// Quantize `x` (a multiple of 32 long) block by block: d = max|x|/127, q = round(x/d).
pub fn quantize_q8(x: &[f32]) -> Q8Activations {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::quantize_q8(x) };
    }
    quantize_q8_portable(x)
}

/// [`quantize_q8`] in plain Rust: the definition the vector copy matches bit for bit.
fn quantize_q8_portable(x: &[f32]) -> Q8Activations {
    let blocks = x.len() / 32;
    let mut a = Q8Activations {
        d: Vec::with_capacity(blocks),
        sum: Vec::with_capacity(blocks),
        q: vec![0; blocks * 32],
    };
    for (b, xs) in x.chunks_exact(32).enumerate() {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in a.q[b * 32..(b + 1) * 32].iter_mut().zip(xs) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        a.d.push(d);
        a.sum.push(xs.iter().sum());
    }
    a
}

static EXACT_ACTIVATIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keep activations in f32 for quantized products (slower; for parity checks against
/// float references). By default they are quantized to 8 bits, as llama.cpp does, which
/// changes results in the last bits and can flip a near-tied greedy choice.
pub fn set_exact_activations(exact: bool) {
    EXACT_ACTIVATIONS.store(exact, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`dot_row_q8`] handles `dtype` (else use [`dot_row`]).
pub fn has_q8_path(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_1 | DType::Q8_0 | DType::Q4_K | DType::Q6_K)
        && !EXACT_ACTIVATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Σ a·b over 32 values, in integers. Written as a plain fixed-size loop so LLVM turns it
/// into vector multiply-adds.
#[inline(always)]
fn isum32(a: &[i8; 32], b: &[i8]) -> i32 {
    let b: &[i8; 32] = b.try_into().expect("32 activations");
    let mut acc = 0i32;
    for j in 0..32 {
        acc += i32::from(a[j]) * i32::from(b[j]);
    }
    acc
}

/// A Q4_K row (256-value super-blocks) against 8-bit activations: per 32-value
/// sub-block, d·scale·Σq·x − dmin·min·Σx, with the integer Σq·x and Σx exact per block.
fn dot_q4_k_q8(row: &[u8], x: &Q8Activations) -> f32 {
    let mut acc = 0.0;
    for (sb, blk) in row.chunks_exact(144).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let scales = &blk[4..16];
        for chunk in 0..4 {
            let q = &blk[16 + chunk * 32..16 + chunk * 32 + 32];
            let (mut lo, mut hi) = ([0i8; 32], [0i8; 32]);
            for l in 0..32 {
                lo[l] = (q[l] & 0xF) as i8;
                hi[l] = (q[l] >> 4) as i8;
            }
            for (half, vals) in [(0, &lo), (1, &hi)] {
                let (sc, m) = scale_min_k4(chunk * 2 + half, scales);
                let b = sb * 8 + chunk * 2 + half;
                let isum = isum32(vals, &x.q[b * 32..b * 32 + 32]);
                acc += d * sc as f32 * x.d[b] * isum as f32 - dmin * m as f32 * x.sum[b];
            }
        }
    }
    acc
}

/// A Q6_K row against 8-bit activations: each 32-value activation block meets two
/// 16-value sub-blocks with their own i8 scales.
fn dot_q6_k_q8(row: &[u8], x: &Q8Activations) -> f32 {
    let mut acc = 0.0;
    for (sb, blk) in row.chunks_exact(210).enumerate() {
        let d = f16_at(blk, 208);
        for half in 0..2 {
            let ql = &blk[half * 64..half * 64 + 64];
            let qh = &blk[128 + half * 32..128 + half * 32 + 32];
            let sc = &blk[192 + half * 8..192 + half * 8 + 8];
            let mut vals = [[0i8; 32]; 4];
            for l in 0..32 {
                vals[0][l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                vals[1][l] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                vals[2][l] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                vals[3][l] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
            for (k, v) in vals.iter().enumerate() {
                let b = sb * 8 + half * 4 + k;
                let xq = &x.q[b * 32..b * 32 + 32];
                let (mut s1, mut s2) = (0i32, 0i32);
                for l in 0..16 {
                    s1 += i32::from(v[l]) * i32::from(xq[l]);
                    s2 += i32::from(v[l + 16]) * i32::from(xq[l + 16]);
                }
                let (sc1, sc2) = (sc[2 * k] as i8, sc[2 * k + 1] as i8);
                acc += d * x.d[b] * (f32::from(sc1) * s1 as f32 + f32::from(sc2) * s2 as f32);
            }
        }
    }
    acc
}

/// Dot product of a Q4_1, Q8_0, Q4_K or Q6_K row with quantized activations.
pub fn dot_row_q8(dtype: DType, row: &[u8], x: &Q8Activations) -> f32 {
    match dtype {
        DType::Q4_K => {
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 and FMA were detected at run time; whole blocks by construction.
                return unsafe { simd::dot_q4_k_q8(row, x) };
            }
            return dot_q4_k_q8(row, x);
        }
        DType::Q6_K => {
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                // SAFETY: AVX2 and FMA were detected at run time; whole blocks by construction.
                return unsafe { simd::dot_q6_k_q8(row, x) };
            }
            return dot_q6_k_q8(row, x);
        }
        _ => {}
    }
    #[cfg(target_arch = "x86_64")]
    if dtype == DType::Q4_1 && crate::wide::available() {
        // SAFETY: the 512-bit features were detected at run time; whole blocks.
        return unsafe { crate::wide::dot_q4_1(row, x) };
    }
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2, FMA and F16C were detected at run time; lengths match by construction.
        return unsafe {
            match dtype {
                DType::Q4_1 => simd::dot_q4_1_q8(row, x),
                _ => simd::dot_q8_0_q8(row, x),
            }
        };
    }
    let mut acc = 0.0;
    match dtype {
        DType::Q4_1 => {
            for (b, blk) in row.chunks_exact(20).enumerate() {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                let q = &x.q[b * 32..(b + 1) * 32];
                let mut isum = 0i32;
                for j in 0..16 {
                    isum += i32::from(blk[4 + j] & 0xF) * i32::from(q[j])
                        + i32::from(blk[4 + j] >> 4) * i32::from(q[j + 16]);
                }
                acc += d * x.d[b] * isum as f32 + m * x.sum[b];
            }
        }
        _ => {
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let q = &x.q[b * 32..(b + 1) * 32];
                let isum: i32 = (0..32)
                    .map(|j| i32::from(blk[2 + j] as i8) * i32::from(q[j]))
                    .sum();
                acc += f16_at(blk, 0) * x.d[b] * isum as f32;
            }
        }
    }
    acc
}

/// Per-32-block sums of `x`, used by Q4_1's `m·Σx` term. Computed once per product.
pub fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks(32).map(|c| c.iter().sum()).collect()
}

/// Dot product of one quantized (or f32/f16) row with `x`. `sums` is [`block_sums`]`(x)`.
pub fn dot_row(dtype: DType, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    match dtype {
        DType::Q4_1 => dot_q4_1(row, x, sums),
        DType::Q8_0 => dot_q8_0(row, x),
        DType::F32 => {
            let mut acc = 0.0;
            for (b, v) in row.chunks_exact(4).zip(x) {
                acc += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v;
            }
            acc
        }
        _ => {
            // Dequantize a block at a time; K-quants have 256-value blocks.
            let (per, bytes) = dtype.block();
            let mut buf = [0f32; 256];
            let mut acc = 0.0;
            for (blk, xs) in row.chunks_exact(bytes).zip(x.chunks_exact(per)) {
                dequantize(dtype, blk, &mut buf[..per]);
                acc += dot_f32(&buf[..per], xs);
            }
            acc
        }
    }
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::dot_f32(a, b) };
    }
    // Four accumulators let the compiler vectorise without reassociation worries.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for k in 0..8 {
            acc[k] += a[i * 8 + k] * b[i * 8 + k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

fn dot_q4_1(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time; lengths match by construction.
        return unsafe { simd::dot_q4_1(row, x, sums) };
    }
    let mut acc = 0.0;
    for ((blk, xs), s) in row.chunks_exact(20).zip(x.chunks_exact(32)).zip(sums) {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let mut qx = 0.0;
        for j in 0..16 {
            let q = blk[4 + j];
            qx += (q & 0xF) as f32 * xs[j] + (q >> 4) as f32 * xs[j + 16];
        }
        acc += d * qx + m * s;
    }
    acc
}

fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { simd::dot_q8_0(row, x) };
    }
    let mut acc = 0.0;
    for (blk, xs) in row.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = f16_at(blk, 0);
        let mut qx = 0.0;
        for j in 0..32 {
            qx += (blk[2 + j] as i8) as f32 * xs[j];
        }
        acc += d * qx;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    use super::f16_at;
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// Whether the 8-bit products use AVX-512 VNNI's `vpdpbusd` (on 256-bit registers,
    /// so Zen 4's double-pumped 512-bit units cost nothing extra). Detected once at run
    /// time, as llama.cpp's CPU backend does; `APIARY_CPU_KERNELS=avx2` turns it off, so
    /// one binary can measure both side by side.
    pub fn vnni() -> bool {
        static VNNI: OnceLock<bool> = OnceLock::new();
        *VNNI.get_or_init(|| {
            available()
                && is_x86_feature_detected!("f16c")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && std::env::var("APIARY_CPU_KERNELS").as_deref() != Ok("avx2")
        })
    }

    /// Σ u·s over 32 unsigned × signed bytes, as eight i32 lanes (four bytes each)
    /// converted to f32. The two instruction sets give the same integers: `maddubs`
    /// saturates a pair's sum at ±32767, and no caller comes near it (activations are
    /// clamped to ±127, weights after the sign trick to 128, nibbles to 15, Q6_K's
    /// values to 32: at most 2·128·127 = 32512), so the kernels built on either are
    /// bit-identical, and the greedy fixtures hold on both.
    pub(crate) trait Madd {
        /// # Safety
        /// The instruction set the implementor names is present.
        unsafe fn madd(u: __m256i, s: __m256i) -> __m256;
    }

    /// AVX2: `maddubs` (pairs to i16) then `madd` against ones (to i32).
    pub(crate) enum Avx2 {}
    /// AVX-512 VNNI on 256-bit registers: one `vpdpbusd`, four bytes to i32 at once.
    pub(crate) enum Vnni {}

    impl Madd for Avx2 {
        #[inline(always)]
        unsafe fn madd(u: __m256i, s: __m256i) -> __m256 {
            // SAFETY: as the caller promises.
            unsafe { madd_u8_i8(u, s) }
        }
    }

    impl Madd for Vnni {
        #[inline(always)]
        unsafe fn madd(u: __m256i, s: __m256i) -> __m256 {
            // SAFETY: as the caller promises (AVX-512 VNNI and VL present).
            unsafe { _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)) }
        }
    }

    /// `pub unsafe fn $name(args) -> ret`, compiled twice from the generic `$body`: for
    /// AVX2 and for AVX-512 VNNI (`$name::avx2`, `$name::vnni`, a module of the same
    /// name), the second picked at run time where [`vnni`] says so. Each copy is its own
    /// function with its own target features, so the compiler inlines and schedules the
    /// body for its instruction set. Argument types are written as full paths: they are
    /// read inside the module too.
    macro_rules! per_isa {
        ($(#[$doc:meta])* $name:ident = $body:ident ($($a:ident: $t:ty),*) -> $r:ty) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// AVX2, FMA and F16C present; the slices hold whole blocks.
            pub unsafe fn $name($($a: $t),*) -> $r {
                if $crate::quant::simd::vnni() {
                    // SAFETY: VNNI detected at run time; the rest as the caller promises.
                    unsafe { $name::vnni($($a),*) }
                } else {
                    // SAFETY: as the caller promises.
                    unsafe { $name::avx2($($a),*) }
                }
            }

            /// The two compiled copies of the function of the same name.
            pub mod $name {
                /// # Safety
                /// As for the dispatching function.
                #[target_feature(enable = "avx2,fma,f16c")]
                pub unsafe fn avx2($($a: $t),*) -> $r {
                    // SAFETY: this copy's features are the AVX2 ones.
                    unsafe { super::$body::<$crate::quant::simd::Avx2>($($a),*) }
                }

                /// # Safety
                /// As for the dispatching function, and AVX-512 VNNI and VL present.
                #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl")]
                pub unsafe fn vnni($($a: $t),*) -> $r {
                    // SAFETY: as the caller promises.
                    unsafe { super::$body::<$crate::quant::simd::Vnni>($($a),*) }
                }
            }
        };
    }
    pub(crate) use per_isa;

    /// [`super::quantize_q8`] on 256-bit registers, bit-identical to the portable copy:
    /// the same max, scale and product per value, `f32::round`'s half-away-from-zero
    /// rebuilt from an exact truncation, NaN to 0 as `as i8` does, and each block's sum
    /// added in the same order, four blocks interleaved (a block's 32 dependent adds were
    /// the quantizer's critical path).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_q8(x: &[f32]) -> super::Q8Activations {
        let blocks = x.len() / 32;
        let mut a = super::Q8Activations {
            d: Vec::with_capacity(blocks),
            sum: vec![0.0; blocks],
            q: vec![0; blocks * 32],
        };
        let (abs, half, one) = (
            _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF)),
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(1.0),
        );
        for (b, xs) in x.chunks_exact(32).enumerate() {
            // SAFETY: `xs` is 32 floats; `a.q` holds 32 bytes per block.
            unsafe {
                let v: [__m256; 4] =
                    std::array::from_fn(|k| _mm256_loadu_ps(xs.as_ptr().add(8 * k)));
                // max(|v|, m) keeps m where |v| is NaN, as f32::max does.
                let mut m = _mm256_setzero_ps();
                for v in v {
                    m = _mm256_max_ps(_mm256_and_ps(v, abs), m);
                }
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)));
                let d = amax / 127.0;
                let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
                let mut q = [_mm256_setzero_si256(); 4];
                for k in 0..4 {
                    let t = _mm256_mul_ps(v[k], inv);
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
                    let up =
                        _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_and_ps(_mm256_sub_ps(t, r), abs), half);
                    let sign = _mm256_or_ps(_mm256_andnot_ps(abs, t), one);
                    let r = _mm256_add_ps(r, _mm256_and_ps(up, sign));
                    let r = _mm256_min_ps(
                        _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
                        _mm256_set1_ps(127.0),
                    );
                    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(t, t));
                    q[k] = _mm256_cvttps_epi32(r);
                }
                // i32 → i16 → i8 packs interleave 128-bit lanes; the permute restores order.
                let w01 = _mm256_packs_epi32(q[0], q[1]);
                let w23 = _mm256_packs_epi32(q[2], q[3]);
                let bytes = _mm256_permutevar8x32_epi32(
                    _mm256_packs_epi16(w01, w23),
                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
                );
                _mm256_storeu_si256(a.q.as_mut_ptr().add(b * 32) as *mut __m256i, bytes);
                a.d.push(d);
            }
        }
        // Each block's sum in order (the portable `iter().sum()`), four chains at once.
        let mut groups = x.chunks_exact(128);
        for (g, xs) in (&mut groups).enumerate() {
            let mut s = [0f32; 4];
            for e in 0..32 {
                for k in 0..4 {
                    s[k] += xs[32 * k + e];
                }
            }
            a.sum[4 * g..4 * g + 4].copy_from_slice(&s);
        }
        let done = x.len() / 128 * 4;
        for (b, xs) in groups.remainder().chunks_exact(32).enumerate() {
            a.sum[done + b] = xs.iter().sum();
        }
        a
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads below): i + 16 <= n, within both slices.
        while i + 16 <= n {
            unsafe {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    acc1,
                );
            }
            i += 16;
        }
        let mut s = unsafe { hsum(_mm256_add_ps(acc0, acc1)) };
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// 8 bytes (as u8 lanes) → 8 f32.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn u8x8_to_f32(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        let mut total = _mm256_setzero_ps();
        let mask = _mm_set1_epi8(0x0F);
        for ((blk, xs), s) in row.chunks_exact(20).zip(x.chunks_exact(32)).zip(sums) {
            let d = f16_at(blk, 0);
            let m = f16_at(blk, 2);
            // SAFETY: blk has 20 bytes (16 from offset 4), xs has 32 floats.
            unsafe {
                let q = _mm_loadu_si128(blk.as_ptr().add(4) as *const __m128i);
                let lo = _mm_and_si128(q, mask); // values 0..16
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask); // values 16..32
                let xp = xs.as_ptr();
                let mut acc = _mm256_mul_ps(u8x8_to_f32(lo), _mm256_loadu_ps(xp));
                acc = _mm256_fmadd_ps(
                    u8x8_to_f32(_mm_srli_si128::<8>(lo)),
                    _mm256_loadu_ps(xp.add(8)),
                    acc,
                );
                acc = _mm256_fmadd_ps(u8x8_to_f32(hi), _mm256_loadu_ps(xp.add(16)), acc);
                acc = _mm256_fmadd_ps(
                    u8x8_to_f32(_mm_srli_si128::<8>(hi)),
                    _mm256_loadu_ps(xp.add(24)),
                    acc,
                );
                total = _mm256_fmadd_ps(_mm256_set1_ps(d), acc, total);
                // m·Σx folded into lane 0.
                total = _mm256_add_ps(
                    total,
                    _mm256_setr_ps(m * s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
                );
            }
        }
        unsafe { hsum(total) }
    }

    /// f16 at `b[i..i+2]` to f32 with the F16C instruction (the `half` crate converts in
    /// software unless the whole build targets F16C).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn h2f(b: &[u8], i: usize) -> f32 {
        // A whole 32-bit load (`vmovd`, which zeroes the rest of the register) of the
        // half and its neighbour, in `asm!` so that LLVM cannot narrow it: given a 16-bit
        // value it inserts it into lane 0 of whatever register is free (`vpinsrw`), often
        // an accumulator, which chains each block's scale to the previous block's sum
        // (measured: about 17 cycles a Q4_1 block instead of 5).
        let (at, lane) = if i + 4 <= b.len() { (i, 0) } else { (i - 2, 1) };
        let word = &b[at..at + 4];
        let v: __m128i;
        // SAFETY: `word` is 4 readable bytes; the instruction only reads them.
        unsafe {
            std::arch::asm!(
                "vmovd {v}, dword ptr [{p}]",
                p = in(reg) word.as_ptr(),
                v = out(xmm_reg) v,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        let both = _mm_cvtph_ps(v);
        if lane == 0 {
            _mm_cvtss_f32(both)
        } else {
            _mm_cvtss_f32(_mm_movehdup_ps(both))
        }
    }

    per_isa!(
        /// Q4_1 against 8-bit activations, in the order every copy keeps (the 512-bit
        /// one in [`crate::wide`] holds two blocks per register): `d·d_x·Σq·x` in two
        /// accumulators, even and odd blocks, and the `m·Σx` term in two more, one lane
        /// per block of each group of sixteen (zeros past the row's end), each pair added
        /// before its horizontal sum.
        dot_q4_1_q8 = dot_q4_1_q8_with(row: &[u8], x: &crate::quant::Q8Activations) -> f32
    );

    /// The `m` of blocks `first..first + n` as floats, zeros after.
    ///
    /// # Safety
    /// F16C present; blocks `first..first + n` lie inside `row`.
    #[inline(always)]
    pub(crate) unsafe fn q4_1_mins(row: &[u8], first: usize, n: usize) -> [f32; 16] {
        let mut m = [0f32; 16];
        for (i, m) in m.iter_mut().enumerate().take(n) {
            // SAFETY: as the caller promises.
            *m = unsafe { h2f(&row[(first + i) * 20..(first + i) * 20 + 20], 2) };
        }
        m
    }

    /// Σx of blocks `first..first + n`, zeros after.
    #[inline(always)]
    pub(crate) fn block_sums16(x: &super::Q8Activations, first: usize, n: usize) -> [f32; 16] {
        let mut s = [0f32; 16];
        s[..n].copy_from_slice(&x.sum[first..first + n]);
        s
    }

    /// `mv + m·s`, sixteen lanes as two halves.
    ///
    /// # Safety
    /// AVX2 and FMA present.
    #[inline(always)]
    pub(crate) unsafe fn fma16(mv: [__m256; 2], m: &[f32; 16], s: &[f32; 16]) -> [__m256; 2] {
        // SAFETY: as the caller promises; both arrays hold 16 floats.
        unsafe {
            [
                _mm256_fmadd_ps(
                    _mm256_loadu_ps(m.as_ptr()),
                    _mm256_loadu_ps(s.as_ptr()),
                    mv[0],
                ),
                _mm256_fmadd_ps(
                    _mm256_loadu_ps(m.as_ptr().add(8)),
                    _mm256_loadu_ps(s.as_ptr().add(8)),
                    mv[1],
                ),
            ]
        }
    }

    #[inline(always)]
    unsafe fn dot_q4_1_q8_with<M: Madd>(row: &[u8], x: &super::Q8Activations) -> f32 {
        let nb = row.len() / 20;
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let (mut acc, mut mv) = unsafe { ([_mm256_setzero_ps(); 2], [_mm256_setzero_ps(); 2]) };
        for first in (0..nb).step_by(16) {
            let n = (nb - first).min(16);
            // SAFETY: AVX2 and F16C present; blocks below `nb` lie in `row`, and x holds
            // as many.
            unsafe {
                mv = fma16(mv, &q4_1_mins(row, first, n), &block_sums16(x, first, n));
                for b in first..first + n {
                    let (qw, d, _) = q4_1_block(&row[b * 20..b * 20 + 20]);
                    let p = M::madd(qw, xq(x, b));
                    acc[b % 2] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[b]), p, acc[b % 2]);
                }
            }
        }
        // SAFETY: AVX2 present.
        unsafe { hsum(_mm256_add_ps(acc[0], acc[1])) + hsum(_mm256_add_ps(mv[0], mv[1])) }
    }

    /// A Q4_1 block's 32 nibbles as bytes (low halves then high halves), d and m.
    ///
    /// # Safety
    /// AVX2 and F16C present; `blk` is at least 20 bytes.
    #[inline(always)]
    pub(crate) unsafe fn q4_1_block(blk: &[u8]) -> (__m256i, f32, f32) {
        // SAFETY: as the caller promises.
        unsafe {
            let mask = _mm_set1_epi8(0x0F);
            let q = _mm_loadu_si128(blk.as_ptr().add(4) as *const __m128i);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
            (_mm256_set_m128i(hi, lo), h2f(blk, 0), h2f(blk, 2))
        }
    }

    /// 32 activations of block `b`.
    ///
    /// # Safety
    /// AVX2 present; `x.q` holds at least `32·(b + 1)` values.
    #[inline(always)]
    pub(crate) unsafe fn xq(x: &super::Q8Activations, b: usize) -> __m256i {
        assert!(x.q.len() >= (b + 1) * 32);
        // SAFETY: checked above.
        unsafe { _mm256_loadu_si256(x.q.as_ptr().add(b * 32) as *const __m256i) }
    }

    /// Σ u·s over 32 unsigned × signed bytes, as eight i32 lanes converted to f32.
    ///
    /// # Safety
    /// AVX2 present.
    #[inline(always)]
    pub(crate) unsafe fn madd_u8_i8(u: __m256i, s: __m256i) -> __m256 {
        // SAFETY: as the caller promises.
        unsafe {
            _mm256_cvtepi32_ps(_mm256_madd_epi16(
                _mm256_maddubs_epi16(u, s),
                _mm256_set1_epi16(1),
            ))
        }
    }

    per_isa!(
        /// Q8_0 against 8-bit activations. Two accumulators, even blocks and odd blocks,
        /// added before the horizontal sum: the order [`crate::wide`]'s 512-bit copy
        /// keeps with two blocks per register, so every copy gives the same bits.
        dot_q8_0_q8 = dot_q8_0_q8_with(row: &[u8], x: &crate::quant::Q8Activations) -> f32
    );

    /// Block `b`'s `Σ|w|·(±x)` per lane and its scale `d_w · d_x`.
    ///
    /// # Safety
    /// AVX2 present; `blk` is one 34-byte block and `x` holds block `b`.
    #[inline(always)]
    unsafe fn q8_0_block<M: Madd>(blk: &[u8], x: &super::Q8Activations, b: usize) -> (__m256, f32) {
        // SAFETY: blk has 34 bytes (32 from offset 2); x.q has 32 per block.
        unsafe {
            let qw = _mm256_loadu_si256(blk.as_ptr().add(2) as *const __m256i);
            // maddubs needs an unsigned operand: |w| and x carrying w's sign.
            let p = M::madd(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(xq(x, b), qw));
            (p, h2f(blk, 0) * x.d[b])
        }
    }

    #[inline(always)]
    unsafe fn dot_q8_0_q8_with<M: Madd>(row: &[u8], x: &super::Q8Activations) -> f32 {
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let (mut even, mut odd) = unsafe { (_mm256_setzero_ps(), _mm256_setzero_ps()) };
        let mut pairs = row.chunks_exact(68);
        let mut b = 0;
        for two in &mut pairs {
            // SAFETY: `two` is two whole blocks; x holds 32 activations per block.
            unsafe {
                let (p, s) = q8_0_block::<M>(&two[..34], x, b);
                let (q, t) = q8_0_block::<M>(&two[34..], x, b + 1);
                even = _mm256_fmadd_ps(_mm256_set1_ps(s), p, even);
                odd = _mm256_fmadd_ps(_mm256_set1_ps(t), q, odd);
            }
            b += 2;
        }
        if pairs.remainder().len() >= 34 {
            // SAFETY: as above, for the last block of an odd count.
            unsafe {
                let (p, s) = q8_0_block::<M>(pairs.remainder(), x, b);
                even = _mm256_fmadd_ps(_mm256_set1_ps(s), p, even);
            }
        }
        // SAFETY: AVX2 present.
        unsafe { hsum(_mm256_add_ps(even, odd)) }
    }

    per_isa!(
        /// Q4_K against 8-bit activations: nibbles are unsigned, so `maddubs` takes them
        /// directly. In the order every copy keeps (the 512-bit one in [`crate::wide`]
        /// holds a 64-value chunk per register): the low-nibble blocks in one accumulator
        /// and the high-nibble ones in another, added before the horizontal sum, and the
        /// mins' term `dmin·min·Σx` one lane per block of the super-block.
        dot_q4_k_q8 = dot_q4_k_q8_with(row: &[u8], x: &crate::quant::Q8Activations) -> f32
    );

    /// `[a[0], …, a[7]]` in a register, built from the values, not stored and reloaded.
    ///
    /// # Safety
    /// AVX2 present.
    #[inline(always)]
    pub(crate) unsafe fn f32x8(a: [f32; 8]) -> __m256 {
        // SAFETY: as the caller promises.
        unsafe { _mm256_setr_ps(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]) }
    }

    #[inline(always)]
    unsafe fn dot_q4_k_q8_with<M: Madd>(row: &[u8], x: &super::Q8Activations) -> f32 {
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let (mut lo_acc, mut hi_acc, mut mins, low) = unsafe {
            (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_set1_epi8(0x0F),
            )
        };
        for (sb, blk) in row.chunks_exact(144).enumerate() {
            let (ds, dm) = super::q4_k_scales(blk);
            // SAFETY: blk has 144 bytes (32 from 16 + 32·chunk); x holds 8 blocks of 32
            // activations per super-block.
            unsafe {
                let sums = _mm256_loadu_ps(x.sum[sb * 8..sb * 8 + 8].as_ptr());
                mins = _mm256_fmadd_ps(f32x8(dm), sums, mins);
                for chunk in 0..4 {
                    let (b1, b2) = (sb * 8 + chunk * 2, sb * 8 + chunk * 2 + 1);
                    let q = _mm256_loadu_si256(blk.as_ptr().add(16 + chunk * 32) as *const __m256i);
                    let lo = _mm256_and_si256(q, low);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    let p1 = M::madd(lo, xq(x, b1));
                    let p2 = M::madd(hi, xq(x, b2));
                    let s1 = _mm256_set1_ps(ds[chunk * 2] * x.d[b1]);
                    let s2 = _mm256_set1_ps(ds[chunk * 2 + 1] * x.d[b2]);
                    lo_acc = _mm256_fmadd_ps(s1, p1, lo_acc);
                    hi_acc = _mm256_fmadd_ps(s2, p2, hi_acc);
                }
            }
        }
        // SAFETY: AVX2 present.
        unsafe { hsum(_mm256_add_ps(lo_acc, hi_acc)) - hsum(mins) }
    }

    per_isa!(
        /// Q6_K against 8-bit activations. Values are rebuilt as signed bytes (q − 32) and
        /// multiplied with the sign trick of Q8_0; after `madd`, lanes 0–3 hold the first 16
        /// values of a block and lanes 4–7 the second, which have their own scales. Even
        /// and odd blocks go to two accumulators, added before the horizontal sum: the
        /// order of the 512-bit copy in [`crate::wide`], which holds two blocks per
        /// register.
        dot_q6_k_q8 = dot_q6_k_q8_with(row: &[u8], x: &crate::quant::Q8Activations) -> f32
    );

    /// The four 32-value blocks of one half of a Q6_K super-block as signed bytes
    /// (q − 32), in the activations' order.
    ///
    /// # Safety
    /// AVX2 present; `blk` is one 210-byte super-block, `half` 0 or 1.
    #[inline(always)]
    pub(crate) unsafe fn q6_k_half(blk: &[u8], half: usize) -> [__m256i; 4] {
        // SAFETY: blk has 210 bytes; the loads read 64 bytes of ql from 64·half and 32 of
        // qh from 128 + 32·half.
        unsafe {
            let (m4, m2, off) = (
                _mm256_set1_epi8(0x0F),
                _mm256_set1_epi8(3),
                _mm256_set1_epi8(32),
            );
            let ql0 = _mm256_loadu_si256(blk.as_ptr().add(half * 64) as *const __m256i);
            let ql1 = _mm256_loadu_si256(blk.as_ptr().add(half * 64 + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(blk.as_ptr().add(128 + half * 32) as *const __m256i);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4);
            let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4);
            let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4);
            [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), h0),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h3),
            ]
            .map(|v| _mm256_sub_epi8(v, off))
        }
    }

    #[inline(always)]
    unsafe fn dot_q6_k_q8_with<M: Madd>(row: &[u8], x: &super::Q8Activations) -> f32 {
        // SAFETY: AVX2 present (each copy of the caller is compiled for it).
        let mut acc = unsafe { [_mm256_setzero_ps(); 2] };
        for (sb, blk) in row.chunks_exact(210).enumerate() {
            let d = f16_at(blk, 208);
            for half in 0..2 {
                let sc = &blk[192 + half * 8..192 + half * 8 + 8];
                // SAFETY: blk is one super-block; x.q has 32 per block.
                unsafe {
                    for (k, v) in q6_k_half(blk, half).into_iter().enumerate() {
                        let b = sb * 8 + half * 4 + k;
                        let p = M::madd(_mm256_sign_epi8(v, v), _mm256_sign_epi8(xq(x, b), v));
                        let f = d * x.d[b];
                        let s1 = f * (sc[2 * k] as i8) as f32;
                        let s2 = f * (sc[2 * k + 1] as i8) as f32;
                        let scale = _mm256_set_ps(s2, s2, s2, s2, s1, s1, s1, s1);
                        acc[k % 2] = _mm256_fmadd_ps(scale, p, acc[k % 2]);
                    }
                }
            }
        }
        // SAFETY: AVX2 present.
        unsafe { hsum(_mm256_add_ps(acc[0], acc[1])) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        let mut total = _mm256_setzero_ps();
        for (blk, xs) in row.chunks_exact(34).zip(x.chunks_exact(32)) {
            let d = f16_at(blk, 0);
            // SAFETY: blk has 34 bytes (32 from offset 2), xs has 32 floats.
            unsafe {
                let qp = blk.as_ptr().add(2);
                let xp = xs.as_ptr();
                let mut acc = _mm256_setzero_ps();
                for k in 0..4 {
                    let q = _mm_loadl_epi64(qp.add(k * 8) as *const __m128i);
                    let qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    acc = _mm256_fmadd_ps(qf, _mm256_loadu_ps(xp.add(k * 8)), acc);
                }
                total = _mm256_fmadd_ps(_mm256_set1_ps(d), acc, total);
            }
        }
        unsafe { hsum(total) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes.
    pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Random blocks with sane f16 scales (random bytes would make NaN/inf scales).
    fn random_row(dtype: DType, blocks: usize, seed: u64) -> Vec<u8> {
        let (_, size) = dtype.block();
        let mut row = bytes(blocks * size, seed);
        for (i, blk) in row.chunks_exact_mut(size).enumerate() {
            let scale = f16::from_f32(0.01 + (i % 7) as f32 * 0.003).to_le_bytes();
            let min = f16::from_f32(-0.05 + (i % 5) as f32 * 0.01).to_le_bytes();
            match dtype {
                DType::Q4_0 | DType::Q8_0 => blk[..2].copy_from_slice(&scale),
                DType::Q4_1 | DType::Q4_K => {
                    blk[..2].copy_from_slice(&scale);
                    blk[2..4].copy_from_slice(&f16::from_f32(0.02).to_le_bytes());
                    if dtype == DType::Q4_1 {
                        blk[2..4].copy_from_slice(&min);
                    }
                }
                DType::Q6_K => blk[208..210].copy_from_slice(&scale),
                _ => {}
            }
        }
        row
    }

    #[test]
    fn dot_matches_dequantized_reference() {
        let k = 512;
        let x: Vec<f32> = bytes(k, 3)
            .iter()
            .map(|&b| (b as f32 - 128.0) / 64.0)
            .collect();
        let sums = block_sums(&x);
        for dtype in [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q6_K,
        ] {
            let (per, _) = dtype.block();
            let row = random_row(dtype, k / per, 11);
            let mut deq = vec![0f32; k];
            dequantize(dtype, &row, &mut deq);
            let reference: f64 = deq
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let got = dot_row(dtype, &row, &x, &sums);
            let tol = 1e-4 * deq.iter().map(|v| v.abs()).sum::<f32>().max(1.0);
            assert!(
                (f64::from(got) - reference).abs() < f64::from(tol),
                "{dtype:?}: {got} vs {reference}"
            );
        }
    }

    /// Blocks dequantized by llama.cpp's own Python package (`gguf` 0.19,
    /// `gguf.quants.dequantize`), an implementation independent of this one.
    #[test]
    fn dequantization_matches_gguf_py() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/quant_reference.json")).unwrap();
        for (name, dtype) in [
            ("q4_0", DType::Q4_0),
            ("q4_1", DType::Q4_1),
            ("q8_0", DType::Q8_0),
            ("q4_k", DType::Q4_K),
            ("q6_k", DType::Q6_K),
            ("q5_0", DType::Q8_0),
        ] {
            let case = &fixture[name];
            let bytes: Vec<u8> = case["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let want: Vec<f32> = case["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let bytes = if name == "q5_0" {
                // Checked through the loader's lossless widening to Q8_0.
                let mut wide = vec![0u8; bytes.len() / crate::gguf::Q5_0_BLOCK_BYTES * 34];
                widen_q5_0_to_q8_0(&bytes, &mut wide);
                wide
            } else {
                bytes
            };
            let mut got = vec![0f32; want.len()];
            dequantize(dtype, &bytes, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{name}[{i}]: {g} vs {w}"
                );
            }
        }
    }

    /// llama.cpp's `dequantize_row_q5_0`, transcribed: block `[d: f16, qh: u32, qs: 16]`,
    /// element j < 16 is `qs[j] & 0xF` with high bit `(qh >> j) & 1`, element j + 16 is
    /// `qs[j] >> 4` with high bit `(qh >> (j + 16)) & 1`, the value `d·(q − 16)`.
    fn dequantize_q5_0_direct(src: &[u8]) -> Vec<f32> {
        let mut y = Vec::new();
        for b in src.chunks_exact(crate::gguf::Q5_0_BLOCK_BYTES) {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            for j in 0..32 {
                let low = if j < 16 {
                    qs[j] & 0x0F
                } else {
                    qs[j - 16] >> 4
                };
                let high = ((qh >> j) & 1) as u8;
                y.push(d * ((low | (high << 4)) as i32 - 16) as f32);
            }
        }
        y
    }

    #[test]
    fn q5_0_widening_is_bit_exact() {
        // Random blocks, then the high-bit patterns that separate the two halves.
        let mut src = Vec::new();
        let scales = [0.5f32, -0.031, 1.0e-3, 65504.0, -2.0, 6.0e-8, 0.0];
        for (i, &d) in scales.iter().enumerate() {
            let qh: u32 = [
                0,
                u32::MAX,
                0x5555_5555,
                0xFFFF_0000,
                0x0000_FFFF,
                1 << 31,
                0x8001,
            ][i];
            src.extend(f16::from_f32(d).to_le_bytes());
            src.extend(qh.to_le_bytes());
            src.extend(bytes(16, i as u64 + 3));
        }
        for (i, chunk) in bytes(22 * 64, 77).chunks_exact(22).enumerate() {
            let d = f16::from_f32((i as f32 - 32.0) / 97.0);
            src.extend(d.to_le_bytes());
            src.extend(&chunk[2..]);
        }
        let blocks = src.len() / crate::gguf::Q5_0_BLOCK_BYTES;
        let mut wide = vec![0u8; blocks * DType::Q8_0.block().1];
        widen_q5_0_to_q8_0(&src, &mut wide);
        let mut got = vec![0f32; blocks * 32];
        dequantize(DType::Q8_0, &wide, &mut got);
        let want = dequantize_q5_0_direct(&src);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "value {i}: {g} vs {w}");
        }
        // Every 5-bit code appears, so both ends of −16..=15 are covered.
        let codes: std::collections::BTreeSet<i8> = wide
            .chunks_exact(34)
            .flat_map(|b| b[2..].iter().map(|&q| q as i8))
            .collect();
        assert_eq!(codes, (-16..=15).collect());
    }

    #[test]
    fn integer_path_is_close_to_float_path() {
        let k = 1024;
        let x: Vec<f32> = bytes(k, 5)
            .iter()
            .map(|&b| (b as f32 - 128.0) / 40.0)
            .collect();
        let xq = quantize_q8(&x);
        let sums = block_sums(&x);
        for dtype in [DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
            let (per, _) = dtype.block();
            let row = random_row(dtype, k / per, 17);
            let exact = dot_row(dtype, &row, &x, &sums);
            let fast = dot_row_q8(dtype, &row, &xq);
            let mut deq = vec![0f32; k];
            dequantize(dtype, &row, &mut deq);
            // 8-bit activations: error well under 1% of the magnitude of the terms.
            let scale: f32 = deq.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            assert!(
                (exact - fast).abs() < 0.01 * scale,
                "{dtype:?}: {exact} vs {fast} (scale {scale})"
            );
        }
    }

    /// The AVX2 and the VNNI copies of every 8-bit kernel give the same bits, including
    /// at the edges of `maddubs`'s i16 range: activations all at ±127 and Q8_0 weights
    /// all at −128 (|w| = 128 after the sign trick).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_and_avx2_kernels_are_bit_identical() {
        if !(simd::available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl"))
        {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let k = 1024;
        let noisy: Vec<f32> = bytes(k, 5)
            .iter()
            .map(|&b| (b as f32 - 128.0) / 9.0)
            .collect();
        let extreme: Vec<f32> = bytes(k, 6)
            .iter()
            .map(|&b| if b & 1 == 0 { 1.0 } else { -1.0 })
            .collect();
        type Kernel = unsafe fn(&[u8], &Q8Activations) -> f32;
        let kernels: [(DType, Kernel, Kernel); 4] = [
            (
                DType::Q4_1,
                simd::dot_q4_1_q8::avx2,
                simd::dot_q4_1_q8::vnni,
            ),
            (
                DType::Q8_0,
                simd::dot_q8_0_q8::avx2,
                simd::dot_q8_0_q8::vnni,
            ),
            (
                DType::Q4_K,
                simd::dot_q4_k_q8::avx2,
                simd::dot_q4_k_q8::vnni,
            ),
            (
                DType::Q6_K,
                simd::dot_q6_k_q8::avx2,
                simd::dot_q6_k_q8::vnni,
            ),
        ];
        for x in [&noisy, &extreme] {
            let xq = quantize_q8(x);
            for (dtype, avx2, vnni) in kernels {
                let (per, size) = dtype.block();
                let mut rows = vec![
                    random_row(dtype, k / per, 31),
                    random_row(dtype, k / per, 32),
                ];
                if dtype == DType::Q8_0 {
                    let mut edge = rows[0].clone();
                    edge.chunks_exact_mut(size).for_each(|b| b[2..].fill(0x80));
                    rows.push(edge);
                }
                for row in &rows {
                    // SAFETY: AVX2, FMA, F16C and VNNI detected above; whole blocks.
                    let (a, v) = unsafe { (avx2(row, &xq), vnni(row, &xq)) };
                    assert_eq!(a.to_bits(), v.to_bits(), "{dtype:?}: {a} vs {v}");
                }
            }
        }
    }

    #[test]
    fn k_quant_simd_and_scalar_agree() {
        let k = 1024;
        let x: Vec<f32> = bytes(k, 9)
            .iter()
            .map(|&b| (b as f32 - 128.0) / 50.0)
            .collect();
        let xq = quantize_q8(&x);
        for (dtype, scalar) in [
            (DType::Q4_K, dot_q4_k_q8 as fn(&[u8], &Q8Activations) -> f32),
            (DType::Q6_K, dot_q6_k_q8),
        ] {
            let row = random_row(dtype, k / 256, 23);
            let (want, got) = (scalar(&row, &xq), dot_row_q8(dtype, &row, &xq));
            assert!(
                (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                "{dtype:?}: {want} vs {got}"
            );
        }
    }

    /// The vector quantizer gives the portable one's bytes, scales and sums, including
    /// at halves (x.5 rounds away from zero), NaN, infinities and all-zero blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_quantizer_is_bit_identical_to_the_portable_one() {
        if !simd::available() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        for (n, seed) in [
            (32, 1),
            (96, 2),
            (128, 3),
            (576, 4),
            (640, 5),
            (896, 6),
            (4864, 7),
        ] {
            let mut x: Vec<f32> = bytes(n, seed)
                .iter()
                .map(|&b| (b as f32 - 128.0) / 7.3)
                .collect();
            if n >= 128 {
                // Block 1: exact halves of the scale; block 2: zeros; block 3: specials.
                x[32] = 127.0;
                for (i, v) in x.iter_mut().enumerate().take(64).skip(33) {
                    *v = (i as f32 - 48.0) + 0.5;
                }
                x[64..96].fill(0.0);
                x[96] = f32::NAN;
                x[97] = f32::INFINITY;
                x[98] = -3.5;
            }
            let (want, got) = (quantize_q8_portable(&x), unsafe { simd::quantize_q8(&x) });
            assert_eq!(want.q, got.q, "{n} values: bytes");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&want.d), bits(&got.d), "{n} values: scales");
            assert_eq!(bits(&want.sum), bits(&got.sum), "{n} values: sums");
        }
    }

    #[test]
    fn known_blocks() {
        // Q8_0: d = 0.5, q = 0..32 → 0, 0.5, 1.0, ...
        let mut blk = f16::from_f32(0.5).to_le_bytes().to_vec();
        blk.extend((0..32).map(|i| i as u8));
        let mut y = [0f32; 32];
        dequantize(DType::Q8_0, &blk, &mut y);
        assert_eq!(y[3], 1.5);
        // Q4_1: d = 1, m = -8, byte j = (j+1) | (15 - j) << 4.
        let mut blk = f16::from_f32(1.0).to_le_bytes().to_vec();
        blk.extend(f16::from_f32(-8.0).to_le_bytes());
        blk.extend((0..16u8).map(|j| ((j + 1) & 0xF) | ((15 - j) << 4)));
        dequantize(DType::Q4_1, &blk, &mut y);
        assert_eq!(y[0], -7.0); // 1·1 − 8
        assert_eq!(y[16], 7.0); // 1·15 − 8
        assert_eq!(y[31], -8.0); // 1·0 − 8
    }

    #[test]
    fn simd_and_portable_paths_agree() {
        // The portable path is exercised directly even on AVX2 machines.
        let k = 256;
        let x: Vec<f32> = (0..k).map(|i| ((i * 37) % 19) as f32 / 7.0 - 1.0).collect();
        let a: Vec<f32> = (0..k).map(|i| ((i * 11) % 23) as f32 / 5.0 - 2.0).collect();
        let mut portable = 0.0f32;
        for i in 0..k {
            portable += a[i] * x[i];
        }
        assert!((dot_f32(&a, &x) - portable).abs() < 1e-3);
    }
}
