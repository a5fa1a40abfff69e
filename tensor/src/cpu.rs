//! The CPU backend: multi-threaded kernels ([`crate::pool`] over output rows), SIMD where it pays
//! (the quantized dot products in [`super::quant`], `matrixmultiply`'s packed f32 GEMM).
//!
//! Conventions: activations are owned f32 tensors `[rows, cols]` (leading dimensions are
//! rows); weight matrices are `[out_features, in_features]` (GGUF's layout), so a linear
//! layer is `matmul(x, w, transpose_b = true)`.

use crate::quant::{Q8Activations, block_sums, dot_row, has_q8_path, quantize_q8};
use crate::{
    Budget, DType, Result, Storage, Tensor, TensorError, checked_numel, f32_bytes, shape_err,
    total_bytes,
};

/// Output rows computed between two deadline checks in a matrix product.
const ROW_CHUNK: usize = 64;
/// Multiply-adds of an f32 product between two deadline checks: about 25 ms here. Smaller
/// bands cost throughput (each `sgemm` call packs the whole of `b`): 2^27 was 20 % slower
/// on 1024³.
const BAND_FLOPS: usize = 1 << 29;

fn out(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
    Tensor {
        shape,
        dtype: DType::F32,
        storage: Storage::Owned(data),
    }
}

/// `a · b` (or `a · bᵀ` with `transpose_b`). `a` is f32 `[.., n, k]`. `b` is a 2-D matrix
/// (f32 or quantized, shared by every leading index of `a`) or, when both are 3-D f32, a
/// batch of matrices matching `a`'s batch. Quantized `b` requires `transpose_b`
/// (weights are stored one output feature per row).
pub fn matmul(a: &Tensor, b: &Tensor, transpose_b: bool, budget: Budget) -> Result<Tensor> {
    let av = a.owned()?;
    let k = *a.shape.last().unwrap_or(&0);
    if b.shape.len() == 3 && a.shape.len() == 3 {
        if b.dtype != DType::F32 || a.shape[0] != b.shape[0] {
            return shape_err(format!(
                "batched matmul needs f32 operands with equal batch: {:?} · {:?}",
                a.shape, b.shape
            ));
        }
        let batch = a.shape[0];
        let (bk, m) = if transpose_b {
            (b.shape[2], b.shape[1])
        } else {
            (b.shape[1], b.shape[2])
        };
        if bk != k {
            return shape_err(format!(
                "inner dimensions differ: {:?} · {:?} (transpose_b={transpose_b})",
                a.shape, b.shape
            ));
        }
        let n = a.shape[1];
        let out_len = batch.checked_mul(n).and_then(|x| x.checked_mul(m));
        budget.reserve(total_bytes(&[
            out_len.and_then(f32_bytes),
            mapped_copy_bytes(b),
        ]))?;
        let bv = b.to_f32()?;
        let mut data = budget.zeros(out_len.unwrap_or(usize::MAX))?;
        for i in 0..batch {
            budget.check()?;
            sgemm(
                &av[i * n * k..(i + 1) * n * k],
                &bv[i * bk * m..(i + 1) * bk * m],
                &mut data[i * n * m..(i + 1) * n * m],
                n,
                k,
                m,
                transpose_b,
            );
        }
        return Ok(out(vec![batch, n, m], data));
    }
    if b.shape.len() != 2 {
        return shape_err(format!("matmul: b must be a matrix, got {:?}", b.shape));
    }
    let (bk, m) = if transpose_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if bk != k {
        return shape_err(format!(
            "inner dimensions differ: {:?} · {:?} (transpose_b={transpose_b})",
            a.shape, b.shape
        ));
    }
    let n = av.len() / k.max(1);
    // Every buffer below is paid for before any is allocated: result, the quantized
    // path's band scratch (as large again) and activation copies, or a dequantized `b`.
    let out_len = n.checked_mul(m);
    let scratch = if b.dtype.is_quantized() || b.dtype == DType::F16 {
        total_bytes(&[out_len.and_then(f32_bytes), av.len().checked_mul(2)])
    } else {
        mapped_copy_bytes(b)
    };
    budget.reserve(total_bytes(&[out_len.and_then(f32_bytes), scratch]))?;
    let mut shape = a.shape.clone();
    *shape.last_mut().expect("non-empty") = m;
    if b.dtype.is_quantized()
        || matches!(b.storage, Storage::Mapped { .. }) && b.dtype != DType::F32
        || b.dtype == DType::F16
    {
        if !transpose_b {
            return Err(TensorError::Dtype(format!(
                "{} weights need transpose_b (rows are output features)",
                b.dtype.name()
            )));
        }
        let bytes = b
            .bytes()
            .ok_or_else(|| TensorError::InvalidFile("weights mapping too short".into()))?;
        let row_bytes = b.dtype.bytes_for(k).ok_or_else(|| {
            TensorError::Shape(format!(
                "row length {k} is not a whole number of {} blocks",
                b.dtype.name()
            ))
        })?;
        return Ok(out(
            shape,
            matvec_rows(b.dtype, bytes, row_bytes, av, n, k, m, budget)?,
        ));
    }
    let bv = b.to_f32()?;
    let mut data = budget.zeros(n * m)?;
    // Large products are split into row bands of about BAND_FLOPS multiply-adds, so the
    // deadline is checked every few milliseconds whatever the shapes.
    let band = (BAND_FLOPS / k.saturating_mul(m).max(1)).clamp(1, ROW_CHUNK * 16);
    for start in (0..n).step_by(band) {
        budget.check()?;
        let rows = band.min(n - start);
        sgemm(
            &av[start * k..(start + rows) * k],
            &bv,
            &mut data[start * m..(start + rows) * m],
            rows,
            k,
            m,
            transpose_b,
        );
    }
    Ok(out(shape, data))
}

/// Bytes `b.to_f32()` allocates: a copy for mapped weights, nothing for owned values.
fn mapped_copy_bytes(b: &Tensor) -> Option<usize> {
    match b.storage {
        Storage::Owned(_) => Some(0),
        _ => checked_numel(&b.shape).and_then(f32_bytes),
    }
}

fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], n: usize, k: usize, m: usize, transpose_b: bool) {
    let (rsb, csb) = if transpose_b {
        (1, k as isize)
    } else {
        (m as isize, 1)
    };
    // SAFETY: the slices hold n·k, k·m and n·m values with the strides given.
    unsafe {
        matrixmultiply::sgemm(
            n,
            k,
            m,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            m as isize,
            1,
        );
    }
}

/// y[i, r] = dot(W[r], x[i]) for quantized W, parallel over bands of output features.
#[allow(clippy::too_many_arguments)]
fn matvec_rows(
    dtype: DType,
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    budget: Budget,
) -> Result<Vec<f32>> {
    if row_bytes.checked_mul(m).is_none_or(|need| w.len() < need) {
        return Err(TensorError::InvalidFile(
            "weights shorter than their shape".into(),
        ));
    }
    // Integer path: quantize each activation row once, as llama.cpp does (the quantized
    // rows carry their own block sums). Otherwise the float path needs the block sums.
    let q8: Option<Vec<Q8Activations>> = (has_q8_path(dtype) && k.is_multiple_of(32)).then(|| {
        (0..n)
            .map(|i| quantize_q8(&x[i * k..(i + 1) * k]))
            .collect()
    });
    let sums: Vec<Vec<f32>> = if q8.is_some() {
        Vec::new()
    } else {
        (0..n).map(|i| block_sums(&x[i * k..(i + 1) * k])).collect()
    };
    let mut y = vec![0f32; n * m];
    let out = Disjoint(y.as_mut_ptr());
    let failed = std::sync::atomic::AtomicBool::new(false);
    crate::pool::run(m.div_ceil(ROW_CHUNK), |band| {
        if failed.load(std::sync::atomic::Ordering::Relaxed) || budget.check().is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let r0 = band * ROW_CHUNK;
        let r1 = (r0 + ROW_CHUNK).min(m);
        let row = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
        // SAFETY: band `band` alone writes y[i·m + r] for r in r0..r1, every i < n: no
        // two bands touch the same element, and `y` outlives the pool job.
        let put = |i: usize, r: usize, v: f32| unsafe { out.write(i * m + r, v) };
        match &q8 {
            Some(q8) => crate::batched::band(dtype, row, r0..r1, q8, put),
            None => {
                for i in 0..n {
                    for r in r0..r1 {
                        put(
                            i,
                            r,
                            dot_row(dtype, row(r), &x[i * k..(i + 1) * k], &sums[i]),
                        );
                    }
                }
            }
        }
    });
    if failed.into_inner() {
        budget.check()?;
        return Err(TensorError::Deadline);
    }
    Ok(y)
}

/// A pointer into an output buffer that pool chunks write at disjoint indices.
#[derive(Clone, Copy)]
struct Disjoint(*mut f32);

// SAFETY: chunks write disjoint elements (each caller's own argument), and the buffer
// outlives the job.
unsafe impl Sync for Disjoint {}
unsafe impl Send for Disjoint {}

impl Disjoint {
    /// # Safety
    /// `i` is in bounds and no other thread reads or writes element `i` meanwhile.
    unsafe fn write(self, i: usize, v: f32) {
        // SAFETY: as the caller promises.
        unsafe { *self.0.add(i) = v }
    }

    /// # Safety
    /// `i` is in bounds and no other thread writes element `i` meanwhile.
    unsafe fn read(self, i: usize) -> f32 {
        // SAFETY: as the caller promises.
        unsafe { *self.0.add(i) }
    }
}

pub(crate) fn same_or_row_broadcast(a: &Tensor, b: &Tensor, op: &str) -> Result<()> {
    let (_, cols) = a.rows_cols();
    if b.numel() == a.numel() || b.numel() == cols {
        Ok(())
    } else {
        shape_err(format!(
            "{op}: {:?} and {:?} must match, or the second must be one row of {cols}",
            a.shape, b.shape
        ))
    }
}

/// Elements processed between two deadline checks in element-wise and row kernels.
const ELEM_CHUNK: usize = 1 << 16;

/// A copy of `a`'s values, paid for from the budget (plus `extra` bytes of scratch).
fn copy_of(a: &Tensor, extra: Option<usize>, budget: Budget) -> Result<Vec<f32>> {
    let av = a.owned()?;
    budget.reserve(total_bytes(&[f32_bytes(av.len()), extra]))?;
    let mut v = Vec::new();
    v.try_reserve_exact(av.len())
        .map_err(|_| TensorError::Quota("the host could not allocate the result".into()))?;
    v.extend_from_slice(av);
    Ok(v)
}

/// Apply `f` to rows of `cols` values, checking the deadline every [`ELEM_CHUNK`]
/// values. Zero-width rows have nothing to do (and `chunks_mut(0)` would panic).
fn for_rows(
    data: &mut [f32],
    cols: usize,
    budget: Budget,
    mut f: impl FnMut(usize, &mut [f32]),
) -> Result<()> {
    if cols == 0 {
        return Ok(());
    }
    let rows_per_check = (ELEM_CHUNK / cols).max(1);
    for (c, block) in data.chunks_mut(rows_per_check * cols).enumerate() {
        budget.check()?;
        for (i, row) in block.chunks_mut(cols).enumerate() {
            f(c * rows_per_check + i, row);
        }
    }
    Ok(())
}

fn binary(
    a: &Tensor,
    b: &Tensor,
    op: &str,
    budget: Budget,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Tensor> {
    same_or_row_broadcast(a, b, op)?;
    let mut data = copy_of(a, mapped_copy_bytes(b), budget)?;
    let bv = b.to_f32()?;
    if bv.is_empty() {
        return Ok(out(a.shape.clone(), data));
    }
    if bv.len() == data.len() {
        for (xs, ys) in data.chunks_mut(ELEM_CHUNK).zip(bv.chunks(ELEM_CHUNK)) {
            budget.check()?;
            for (x, y) in xs.iter_mut().zip(ys) {
                *x = f(*x, *y);
            }
        }
    } else {
        for_rows(&mut data, bv.len(), budget, |_, row| {
            for (x, y) in row.iter_mut().zip(bv.iter()) {
                *x = f(*x, *y);
            }
        })?;
    }
    Ok(out(a.shape.clone(), data))
}

pub fn add(a: &Tensor, b: &Tensor, budget: Budget) -> Result<Tensor> {
    binary(a, b, "add", budget, |x, y| x + y)
}

pub fn mul(a: &Tensor, b: &Tensor, budget: Budget) -> Result<Tensor> {
    binary(a, b, "mul", budget, |x, y| x * y)
}

fn unary(a: &Tensor, budget: Budget, f: impl Fn(f32) -> f32 + Sync) -> Result<Tensor> {
    let mut data = copy_of(a, Some(0), budget)?;
    // A prompt's activations (GELU, SiLU) are large enough to split over the kernel
    // pool, a chunk per job: each value is computed alone, so the result is the same
    // whichever thread ran it.
    let chunks = data.len().div_ceil(ELEM_CHUNK);
    let dst = Disjoint(data.as_mut_ptr());
    let len = data.len();
    let failed = std::sync::atomic::AtomicBool::new(false);
    crate::pool::run(chunks, |c| {
        if budget.check().is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        for i in c * ELEM_CHUNK..((c + 1) * ELEM_CHUNK).min(len) {
            // SAFETY: chunk `c` alone reads and writes elements c·ELEM_CHUNK.., below
            // `len`, and `data` outlives the pool job.
            unsafe { dst.write(i, f(dst.read(i))) };
        }
    });
    if failed.into_inner() {
        budget.check()?;
        return Err(TensorError::Deadline);
    }
    Ok(out(a.shape.clone(), data))
}

pub fn scale(a: &Tensor, s: f32, budget: Budget) -> Result<Tensor> {
    unary(a, budget, |x| x * s)
}

pub fn silu(a: &Tensor, budget: Budget) -> Result<Tensor> {
    unary(a, budget, |x| x / (1.0 + (-x).exp()))
}

/// GELU, tanh approximation (what GPT-2-style and Gemma models use).
pub fn gelu(a: &Tensor, budget: Budget) -> Result<Tensor> {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    unary(a, budget, |x| {
        0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
    })
}

/// Softmax over the last dimension, numerically stable.
pub fn softmax(a: &Tensor, budget: Budget) -> Result<Tensor> {
    let (_, cols) = a.rows_cols();
    let mut data = copy_of(a, Some(0), budget)?;
    for_rows(&mut data, cols, budget, |_, row| softmax_in_place(row))?;
    Ok(out(a.shape.clone(), data))
}

fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

pub(crate) fn check_norm_weight(w: &Tensor, cols: usize, what: &str) -> Result<()> {
    if w.numel() != cols {
        return shape_err(format!(
            "{what}: weight has {} values, rows have {cols}",
            w.numel()
        ));
    }
    Ok(())
}

fn norm_weight(w: &Tensor, cols: usize, what: &str) -> Result<Vec<f32>> {
    check_norm_weight(w, cols, what)?;
    Ok(w.to_f32()?.into_owned())
}

/// x / rms(x) · w, per row.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, budget: Budget) -> Result<Tensor> {
    let (_, cols) = x.rows_cols();
    check_norm_weight(w, cols, "rms-norm")?;
    let mut data = copy_of(x, f32_bytes(cols), budget)?;
    let w = norm_weight(w, cols, "rms-norm")?;
    for_rows(&mut data, cols, budget, |_, row| {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, g) in row.iter_mut().zip(&w) {
            *v *= inv * g;
        }
    })?;
    Ok(out(x.shape.clone(), data))
}

/// (x − mean) / std · w + b, per row.
pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    eps: f32,
    budget: Budget,
) -> Result<Tensor> {
    let (_, cols) = x.rows_cols();
    check_norm_weight(w, cols, "layer-norm")?;
    if let Some(b) = b {
        check_norm_weight(b, cols, "layer-norm bias")?;
    }
    let mut data = copy_of(x, cols.checked_mul(8), budget)?;
    let w = norm_weight(w, cols, "layer-norm")?;
    let b = match b {
        Some(b) => norm_weight(b, cols, "layer-norm bias")?,
        None => vec![0.0; cols],
    };
    for_rows(&mut data, cols, budget, |_, row| {
        let mean = row.iter().sum::<f32>() / cols as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), bb) in row.iter_mut().zip(&w).zip(&b) {
            *v = (*v - mean) * inv * g + bb;
        }
    })?;
    Ok(out(x.shape.clone(), data))
}

/// Rotary position embedding on `[n, heads·head_dim]`, row `i` at position `pos + i`.
/// `neox` rotates pairs (j, j + head_dim/2) (GPT-NeoX, Gemma); otherwise adjacent pairs
/// (2j, 2j + 1) (llama.cpp's layout for llama models).
pub fn rope(
    x: &Tensor,
    pos: usize,
    head_dim: usize,
    base: f32,
    neox: bool,
    budget: Budget,
) -> Result<Tensor> {
    let (_, cols) = x.rows_cols();
    check_rope(cols, head_dim)?;
    let half = head_dim / 2;
    // inv_freq, sin and cos: three half-heads of scratch.
    let mut data = copy_of(x, half.checked_mul(12), budget)?;
    let inv_freq: Vec<f32> = (0..half)
        .map(|j| base.powf(-((2 * j) as f32) / head_dim as f32))
        .collect();
    for_rows(&mut data, cols, budget, |r, row| {
        // Positions past f32's exact integers only lose precision, never panic.
        let p = pos.saturating_add(r) as f32;
        let (sin, cos): (Vec<f32>, Vec<f32>) = inv_freq.iter().map(|f| (p * f).sin_cos()).unzip();
        for head in row.chunks_mut(head_dim) {
            for j in 0..half {
                let (i0, i1) = if neox {
                    (j, j + half)
                } else {
                    (2 * j, 2 * j + 1)
                };
                let (a, b) = (head[i0], head[i1]);
                head[i0] = a * cos[j] - b * sin[j];
                head[i1] = a * sin[j] + b * cos[j];
            }
        }
    })?;
    Ok(out(x.shape.clone(), data))
}

pub(crate) fn check_rope(cols: usize, head_dim: usize) -> Result<()> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) || !cols.is_multiple_of(head_dim) {
        return shape_err(format!(
            "rope: head_dim {head_dim} must be even and divide the row length {cols}"
        ));
    }
    Ok(())
}

/// Options of [`attention`].
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpec {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Absolute position of the first query row.
    pub pos: usize,
    /// Score scale, usually 1/√head_dim.
    pub scale: f32,
    /// Only the last `window` keys are visible (0: all).
    pub window: usize,
}

/// Causal multi-head attention with grouped-query heads. `q` is `[n, n_heads·d]`; the
/// caches `k`, `v` are `[t, n_kv_heads·d]` holding every position up to `pos + n`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: AttentionSpec,
    budget: Budget,
) -> Result<Tensor> {
    let (n, qcols, _, d) = attention_dims(q, k, v, &spec)?;
    let AttentionSpec {
        n_heads,
        n_kv_heads,
        pos,
        scale,
        window,
    } = spec;
    let kcols = n_kv_heads * d;
    let (qv, kv, vv) = (q.owned()?, k.owned()?, v.owned()?);
    let group = n_heads / n_kv_heads;
    // Per-head outputs and their concatenation, plus one row of scores per worker.
    let (_, _, t, _) = attention_dims(q, k, v, &spec)?;
    let out_bytes = n.checked_mul(qcols).and_then(f32_bytes);
    let scores = t.checked_mul(crate::pool::threads()).and_then(f32_bytes);
    budget.reserve(total_bytes(&[out_bytes, out_bytes, scores]))?;
    budget.check()?;
    let mut data = vec![0f32; n * qcols];
    let dst = Disjoint(data.as_mut_ptr());
    // One job per (query row, head), writing that head's `d` outputs of that row.
    crate::pool::run(n * n_heads, |job| {
        if budget.check().is_err() {
            return;
        }
        let (i, h) = (job / n_heads, job % n_heads);
        let kvh = h / group;
        let qrow = &qv[i * qcols + h * d..i * qcols + (h + 1) * d];
        let last = pos + i; // inclusive
        let first = if window > 0 {
            (last + 1).saturating_sub(window)
        } else {
            0
        };
        let mut scores: Vec<f32> = (first..=last)
            .map(|s| {
                crate::quant::dot_f32(qrow, &kv[s * kcols + kvh * d..s * kcols + (kvh + 1) * d])
                    * scale
            })
            .collect();
        softmax_in_place(&mut scores);
        let mut o = vec![0f32; d];
        for (s, p) in (first..=last).zip(&scores) {
            let vrow = &vv[s * kcols + kvh * d..s * kcols + (kvh + 1) * d];
            for (acc, x) in o.iter_mut().zip(vrow) {
                *acc += p * x;
            }
        }
        for (c, v) in o.into_iter().enumerate() {
            // SAFETY: job `job` alone writes data[job·d .. (job + 1)·d] (row i, head h),
            // and `data` outlives the pool job.
            unsafe { dst.write(job * d + c, v) };
        }
    });
    // A job that saw the deadline pass left its head unwritten.
    budget.check()?;
    Ok(out(vec![n, qcols], data))
}

/// Validate attention operands: returns (query rows, query row width, cache rows, head
/// width).
pub(crate) fn attention_dims(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &AttentionSpec,
) -> Result<(usize, usize, usize, usize)> {
    let AttentionSpec {
        n_heads,
        n_kv_heads,
        pos,
        ..
    } = *spec;
    let (n, qcols) = q.rows_cols();
    let (t, kcols) = k.rows_cols();
    if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || qcols % n_heads != 0 {
        return shape_err(format!(
            "attention: {n_heads} heads, {n_kv_heads} kv heads, q rows of {qcols}"
        ));
    }
    let d = qcols / n_heads;
    if kcols != n_kv_heads * d || v.shape != k.shape {
        return shape_err(format!(
            "attention: caches {:?}/{:?} must be [t, {}]",
            k.shape,
            v.shape,
            n_kv_heads * d
        ));
    }
    if pos.checked_add(n).is_none_or(|end| end > t) {
        return shape_err(format!(
            "attention: queries reach position {pos} + {n} but the cache holds {t}"
        ));
    }
    Ok((n, qcols, t, d))
}

/// Append the rows of `x` to a cache `[t, w]` (an empty cache is `[0, w]`-like: created
/// from the first append).
pub fn append_rows(cache: &mut Tensor, x: &Tensor, budget: Budget) -> Result<()> {
    let (_, w) = cache.rows_cols();
    let (n, xw) = x.rows_cols();
    if w != xw || w == 0 {
        return shape_err(format!(
            "append: cache rows of {w}, new rows of {xw} (both must be the same, non-zero)"
        ));
    }
    let xv = x.owned()?;
    match &mut cache.storage {
        Storage::Owned(v) => {
            // Growth doubles at most: pay for the new capacity before asking for it.
            let need = v.len().checked_add(xv.len());
            let grow = need.map(|need| need.max(v.capacity().saturating_mul(2)) - v.capacity());
            budget.reserve(grow.and_then(f32_bytes))?;
            v.try_reserve(xv.len())
                .map_err(|_| TensorError::Quota("the host could not grow the cache".into()))?;
            v.extend_from_slice(xv);
        }
        Storage::Mapped { .. } => {
            return Err(TensorError::Dtype("cannot append to mapped weights".into()));
        }
        #[cfg(feature = "wgpu")]
        Storage::Device(_) => {
            return Err(TensorError::Dtype(
                "internal: append to a GPU cache goes to the GPU backend".into(),
            ));
        }
    }
    let rows = cache.numel() / w + n;
    cache.shape = vec![rows, w];
    Ok(())
}

/// Rows `ids` of an embedding table `[vocab, dim]` (any dtype) as f32 `[len(ids), dim]`.
pub fn embedding(table: &Tensor, ids: &[u32], budget: Budget) -> Result<Tensor> {
    if table.shape.len() != 2 {
        return shape_err(format!(
            "embedding table must be [vocab, dim], got {:?}",
            table.shape
        ));
    }
    let (vocab, dim) = (table.shape[0], table.shape[1]);
    let mut data = budget.zeros(ids.len().saturating_mul(dim))?;
    if let Storage::Mapped { .. } = table.storage {
        let need = table
            .dtype
            .bytes_for(dim)
            .and_then(|r| r.checked_mul(vocab));
        let have = table.bytes().map(<[u8]>::len);
        if need.is_none() || have < need {
            return Err(TensorError::InvalidFile(
                "embedding table shorter than its shape".into(),
            ));
        }
    }
    for (i, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= vocab {
            return shape_err(format!("token id {id} out of range (vocab {vocab})"));
        }
        let dst = &mut data[i * dim..(i + 1) * dim];
        match &table.storage {
            Storage::Owned(v) => dst.copy_from_slice(&v[id * dim..(id + 1) * dim]),
            #[cfg(feature = "wgpu")]
            Storage::Device(_) => {
                dst.copy_from_slice(&table.owned()?[id * dim..(id + 1) * dim]);
            }
            Storage::Mapped { .. } => {
                let row_bytes = table
                    .dtype
                    .bytes_for(dim)
                    .ok_or_else(|| TensorError::Shape("bad row".into()))?;
                let bytes = table
                    .bytes()
                    .ok_or_else(|| TensorError::InvalidFile("mapping too short".into()))?;
                crate::quant::dequantize(
                    table.dtype,
                    &bytes[id * row_bytes..(id + 1) * row_bytes],
                    dst,
                );
            }
        }
    }
    Ok(out(vec![ids.len(), dim], data))
}

/// Rows `start..start + count` of `x`.
pub fn slice_rows(x: &Tensor, start: usize, count: usize, budget: Budget) -> Result<Tensor> {
    let (rows, cols) = x.rows_cols();
    check_slice(rows, start, count)?;
    let src = &x.owned()?[start * cols..(start + count) * cols];
    let mut data = budget.zeros(src.len())?;
    data.copy_from_slice(src);
    Ok(out(vec![count, cols], data))
}

pub(crate) fn check_slice(rows: usize, start: usize, count: usize) -> Result<()> {
    if count == 0 || start.checked_add(count).is_none_or(|end| end > rows) {
        return shape_err(format!(
            "rows {start}..{} of a tensor with {rows}",
            start + count
        ));
    }
    Ok(())
}

/// The same values under another shape (the same rules as `from_f32`: 1 to 4
/// dimensions, only the first may be 0). Owned values are copied, and paid for.
pub fn reshape(x: &Tensor, shape: Vec<usize>, budget: Budget) -> Result<Tensor> {
    // The row width must be representable too: an empty tensor of rows wider than
    // memory would overflow every kernel's index arithmetic.
    if checked_numel(&shape) != Some(x.numel())
        || shape.is_empty()
        || shape.len() > 4
        || shape[1..].contains(&0)
        || checked_numel(&shape[1..]).is_none()
    {
        return shape_err(format!("cannot reshape {:?} to {shape:?}", x.shape));
    }
    budget.reserve(Some(x.owned_bytes()))?;
    Ok(Tensor { shape, ..x.clone() })
}

/// log softmax(row i)[ids[i]] for each row i of `logits`.
pub fn token_logprobs(logits: &Tensor, ids: &[u32], budget: Budget) -> Result<Vec<f32>> {
    let (rows, cols) = logits.rows_cols();
    if ids.len() != rows {
        return shape_err(format!("token-logprobs: {} ids for {rows} rows", ids.len()));
    }
    let v = logits.owned()?;
    budget.reserve(f32_bytes(ids.len()))?;
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            let id = id as usize;
            if id >= cols {
                return shape_err(format!("token id {id} out of range ({cols} logits)"));
            }
            budget.check()?;
            let row = &v[i * cols..(i + 1) * cols];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            Ok(row[id] - lse)
        })
        .collect()
}

/// Index of the largest value of the last row.
pub fn argmax(x: &Tensor) -> Result<u32> {
    let (rows, cols) = x.rows_cols();
    if rows == 0 || cols == 0 {
        return shape_err("argmax of an empty tensor");
    }
    let v = &x.owned()?[(rows - 1) * cols..];
    let mut best = 0;
    for (i, &val) in v.iter().enumerate() {
        if val > v[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

/// Sample a token from the last row of logits: temperature, then top-k, then top-p
/// (nucleus), with a draw derived from `seed` (splitmix64) so a round replays exactly.
/// Temperature 0 is greedy.
pub fn sample(
    x: &Tensor,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    seed: u64,
    budget: Budget,
) -> Result<u32> {
    if temperature <= 0.0 || !temperature.is_finite() {
        return argmax(x);
    }
    let (rows, cols) = x.rows_cols();
    if rows == 0 || cols == 0 {
        return shape_err("sample from an empty tensor");
    }
    let v = &x.owned()?[(rows - 1) * cols..];
    // The index permutation and the probabilities.
    budget.reserve(cols.checked_mul(12))?;
    let mut idx: Vec<usize> = (0..cols).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    let k = if top_k == 0 {
        cols
    } else {
        (top_k as usize).min(cols)
    };
    idx.truncate(k);
    let mut probs: Vec<f32> = idx.iter().map(|&i| v[i] / temperature).collect();
    softmax_in_place(&mut probs);
    let p = if top_p > 0.0 && top_p < 1.0 {
        top_p
    } else {
        1.0
    };
    let mut cum = 0.0;
    let mut keep = probs.len();
    for (j, pr) in probs.iter().enumerate() {
        cum += pr;
        if cum >= p {
            keep = j + 1;
            break;
        }
    }
    let total: f32 = probs[..keep].iter().sum();
    // splitmix64: nearby seeds (step counters) must give unrelated draws.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let s = z ^ (z >> 31);
    let mut r = (s >> 40) as f32 / (1u64 << 24) as f32 * total;
    for j in 0..keep {
        r -= probs[j];
        if r <= 0.0 {
            return Ok(idx[j] as u32);
        }
    }
    Ok(idx[keep - 1] as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn vals(x: &Tensor) -> Vec<f32> {
        x.to_f32().unwrap().into_owned()
    }

    #[test]
    fn matmul_plain_and_transposed() {
        let a = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = t(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
        assert_eq!(
            vals(&matmul(&a, &b, false, Budget::NONE).unwrap()),
            vec![58., 64., 139., 154.]
        );
        let bt = t(&[2, 3], &[7., 9., 11., 8., 10., 12.]);
        assert_eq!(
            vals(&matmul(&a, &bt, true, Budget::NONE).unwrap()),
            vec![58., 64., 139., 154.]
        );
        assert!(matmul(&a, &a, false, Budget::NONE).is_err());
    }

    #[test]
    fn batched_matmul() {
        let a = t(&[2, 1, 2], &[1., 2., 3., 4.]);
        let b = t(&[2, 2, 1], &[5., 6., 7., 8.]);
        assert_eq!(
            vals(&matmul(&a, &b, false, Budget::NONE).unwrap()),
            vec![17., 53.]
        );
    }

    #[test]
    fn norms_and_activations() {
        let x = t(&[1, 4], &[1., 2., 3., 4.]);
        let w = t(&[4], &[1., 1., 1., 2.]);
        let r = vals(&rms_norm(&x, &w, 0.0, Budget::NONE).unwrap());
        let rms = (30f32 / 4.0).sqrt();
        assert!((r[3] - 8.0 / rms).abs() < 1e-6);
        let l = vals(&layer_norm(&x, &t(&[4], &[1.; 4]), None, 0.0, Budget::NONE).unwrap());
        assert!(l.iter().sum::<f32>().abs() < 1e-5);
        let s = vals(&softmax(&t(&[1, 3], &[1., 2., 3.]), Budget::NONE).unwrap());
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[2] > s[1]);
        assert!(
            (vals(&silu(&t(&[1], &[1.0]), Budget::NONE).unwrap())[0] - 0.731_058_6).abs() < 1e-6
        );
        assert!((vals(&gelu(&t(&[1], &[1.0]), Budget::NONE).unwrap())[0] - 0.841_192).abs() < 1e-4);
        assert!(rms_norm(&x, &t(&[3], &[1.; 3]), 1e-5, Budget::NONE).is_err());
    }

    #[test]
    fn rope_rotates_pairs() {
        let x = t(&[1, 4], &[1., 0., 1., 0.]);
        // Position 0 is the identity.
        assert_eq!(
            vals(&rope(&x, 0, 4, 10000.0, false, Budget::NONE).unwrap()),
            vec![1., 0., 1., 0.]
        );
        // Position 1, first pair rotates by 1 radian.
        let r = vals(&rope(&x, 1, 4, 10000.0, false, Budget::NONE).unwrap());
        assert!((r[0] - 1f32.cos()).abs() < 1e-6 && (r[1] - 1f32.sin()).abs() < 1e-6);
        let x = t(&[1, 4], &[1., 0., 0., 0.]);
        let n = vals(&rope(&x, 1, 4, 10000.0, true, Budget::NONE).unwrap());
        assert!((n[0] - 1f32.cos()).abs() < 1e-6 && (n[2] - 1f32.sin()).abs() < 1e-6);
        assert!(rope(&x, 0, 3, 10000.0, false, Budget::NONE).is_err());
    }

    #[test]
    fn attention_is_causal_and_grouped() {
        // 2 query heads share 1 kv head; head dim 1; three positions.
        let k = t(&[3, 1], &[0., 0., 0.]);
        let v = t(&[3, 1], &[1., 2., 3.]);
        let q = t(&[3, 2], &[1., 1., 1., 1., 1., 1.]);
        let spec = AttentionSpec {
            n_heads: 2,
            n_kv_heads: 1,
            pos: 0,
            scale: 1.0,
            window: 0,
        };
        let o = vals(&attention(&q, &k, &v, spec, Budget::NONE).unwrap());
        // Equal scores: mean of the visible values.
        assert_eq!(o, vec![1., 1., 1.5, 1.5, 2., 2.]);
        let w = AttentionSpec { window: 1, ..spec };
        assert_eq!(
            vals(&attention(&q, &k, &v, w, Budget::NONE).unwrap()),
            vec![1., 1., 2., 2., 3., 3.]
        );
        let too_far = AttentionSpec { pos: 1, ..spec };
        assert!(attention(&q, &k, &v, too_far, Budget::NONE).is_err());
    }

    #[test]
    fn cache_append_embedding_and_sampling() {
        let mut cache = t(&[1, 2], &[1., 2.]);
        append_rows(&mut cache, &t(&[2, 2], &[3., 4., 5., 6.]), Budget::NONE).unwrap();
        assert_eq!(cache.shape, vec![3, 2]);
        assert!(append_rows(&mut cache, &t(&[1, 3], &[0.; 3]), Budget::NONE).is_err());
        let table = t(&[3, 2], &[0., 1., 10., 11., 20., 21.]);
        assert_eq!(
            vals(&embedding(&table, &[2, 0], Budget::NONE).unwrap()),
            vec![20., 21., 0., 1.]
        );
        assert!(embedding(&table, &[3], Budget::NONE).is_err());
        let logits = t(&[1, 4], &[0.1, 3.0, 0.2, 2.9]);
        assert_eq!(argmax(&logits).unwrap(), 1);
        let lp = token_logprobs(&t(&[2, 2], &[0., 0., 5., 5.]), &[0, 1], Budget::NONE).unwrap();
        assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6 && (lp[1] - 0.5f32.ln()).abs() < 1e-6);
        assert!(token_logprobs(&logits, &[9], Budget::NONE).is_err());
        assert_eq!(sample(&logits, 0.0, 0, 1.0, 9, Budget::NONE).unwrap(), 1);
        let a = sample(&logits, 1.0, 2, 1.0, 42, Budget::NONE).unwrap();
        assert!(a == 1 || a == 3, "top-k 2 keeps only the two best");
        assert_eq!(
            a,
            sample(&logits, 1.0, 2, 1.0, 42, Budget::NONE).unwrap(),
            "same seed, same token"
        );
        assert_eq!(
            sample(&logits, 1.0, 0, 0.01, 5, Budget::NONE).unwrap(),
            1,
            "tiny top-p keeps the best"
        );
    }

    #[test]
    fn deadline_stops_long_kernels() {
        let a = t(&[1, 4], &[1.; 4]);
        let past = Budget::until(std::time::Instant::now() - std::time::Duration::from_millis(1));
        assert_eq!(
            matmul(&a, &t(&[4, 1], &[1.; 4]), false, past).unwrap_err(),
            TensorError::Deadline
        );
    }

    #[test]
    fn zero_width_and_empty_tensors_are_handled() {
        let none = Budget::NONE;
        let empty = t(&[0], &[]);
        let rows0 = t(&[0, 4], &[]);
        assert_eq!(softmax(&empty, none).unwrap().shape, vec![0]);
        assert_eq!(softmax(&rows0, none).unwrap().shape, vec![0, 4]);
        assert_eq!(rms_norm(&empty, &empty, 1e-5, none).unwrap().shape, vec![0]);
        assert_eq!(
            layer_norm(&empty, &empty, None, 1e-5, none).unwrap().shape,
            vec![0]
        );
        assert_eq!(
            rope(&rows0, 0, 4, 1e4, false, none).unwrap().shape,
            vec![0, 4]
        );
        assert!(rope(&rows0, usize::MAX, 4, 1e4, false, none).is_ok());
        assert!(append_rows(&mut empty.clone(), &empty, none).is_err());
        assert!(argmax(&rows0).is_err());
        assert!(slice_rows(&rows0, 0, 1, none).is_err());
        assert!(slice_rows(&t(&[1, 1], &[1.]), usize::MAX, 2, none).is_err());
        let b = t(&[4, 1], &[1.; 4]);
        assert_eq!(matmul(&rows0, &b, false, none).unwrap().shape, vec![0, 1]);
    }

    #[test]
    fn overflowing_shapes_are_refused() {
        let none = Budget::NONE;
        let empty = t(&[0], &[]);
        // 2^16 four times is 2^64: the product wraps to 0 in unchecked arithmetic.
        let wraps = vec![1 << 16; 4];
        assert!(reshape(&empty, wraps, none).is_err());
        assert!(reshape(&empty, vec![0, usize::MAX, usize::MAX], none).is_err());
        assert!(Tensor::from_f32(vec![0, 1 << 32, 1 << 32], vec![]).is_err());
        assert_eq!(crate::numel(&[usize::MAX, 2]), usize::MAX);
    }

    #[test]
    fn the_quota_is_checked_before_anything_is_allocated() {
        // [2^20, 2] · [2, 2^20] would be 4 TiB: refused by the budget, not the allocator.
        let a = t(&[1 << 20, 2], &vec![1.; 2 << 20]);
        let b = t(&[2, 1 << 20], &vec![1.; 2 << 20]);
        let small = Budget::new(None, 512 << 20);
        assert!(matches!(
            matmul(&a, &b, false, small),
            Err(TensorError::Quota(_))
        ));
        let x = t(&[4, 4], &[1.; 16]);
        let tight = Budget::new(None, 63);
        assert!(matches!(softmax(&x, tight), Err(TensorError::Quota(_))));
        assert!(softmax(&x, Budget::new(None, 64)).is_ok());
        assert!(matches!(
            embedding(&x, &vec![0; 1 << 20], tight),
            Err(TensorError::Quota(_))
        ));
    }

    #[test]
    fn long_products_stop_at_the_deadline_within_one_band() {
        let n = 1024;
        let a = t(&[n, n], &vec![0.5; n * n]);
        let started = std::time::Instant::now();
        let soon = Budget::until(started + std::time::Duration::from_millis(20));
        let mut stopped = false;
        for _ in 0..200 {
            if matmul(&a, &a, false, soon).is_err() {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "200 products of 1024³ finished within 20 ms?");
        // One band is 2^29 multiply-adds: well under a second on any machine we run.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
