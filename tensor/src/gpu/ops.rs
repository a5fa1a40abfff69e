//! The kernels of the wgpu backend. Each validates shapes on the host (the same checks,
//! and messages, as the CPU backend), records its dispatch into its operands' stream and
//! returns a device tensor; nothing is read back here except by `argmax`.

use super::{DeviceBuffer, Gpu, bytemuck_f32};
use crate::cpu::{self, AttentionSpec};
use crate::{Budget, DType, Result, Storage, Tensor, TensorError, shape_err};
use std::sync::Arc;

const MATMUL_WGSL: &str = include_str!("matmul.wgsl");
const MATVEC_WGSL: &str = include_str!("matvec_quant.wgsl");
const ELEMENTWISE_WGSL: &str = include_str!("elementwise.wgsl");
const ROWS_WGSL: &str = include_str!("rows.wgsl");
const ROPE_WGSL: &str = include_str!("rope.wgsl");
const ATTENTION_WGSL: &str = include_str!("attention.wgsl");
const ARGMAX_WGSL: &str = include_str!("argmax.wgsl");

/// The widest attention head `attention.wgsl` holds in workgroup memory.
const MAX_HEAD: usize = 256;

/// One compute pipeline per kernel, built when the device is opened.
pub(super) struct Pipelines {
    matmul: wgpu::ComputePipeline,
    matvec: wgpu::ComputePipeline,
    elementwise: wgpu::ComputePipeline,
    rows: wgpu::ComputePipeline,
    rope: wgpu::ComputePipeline,
    attention: wgpu::ComputePipeline,
    argmax: wgpu::ComputePipeline,
}

impl Pipelines {
    pub(super) fn build(device: &wgpu::Device) -> Pipelines {
        let pipeline = |src: &str, label: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Pipelines {
            matmul: pipeline(MATMUL_WGSL, "matmul"),
            matvec: pipeline(MATVEC_WGSL, "matvec_quant"),
            elementwise: pipeline(ELEMENTWISE_WGSL, "elementwise"),
            rows: pipeline(ROWS_WGSL, "rows"),
            rope: pipeline(ROPE_WGSL, "rope"),
            attention: pipeline(ATTENTION_WGSL, "attention"),
            argmax: pipeline(ARGMAX_WGSL, "argmax"),
        }
    }
}

/// Element-wise operations with a second operand (same shape, or one row broadcast).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinaryOp {
    Add,
    Mul,
}

/// Element-wise operations of one operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Scale(f32),
    Silu,
    Gelu,
}

/// Operations over each row of a matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowOp {
    Softmax,
    RmsNorm { eps: f32 },
    LayerNorm { eps: f32 },
}

/// A kernel operand's device buffer: a device tensor's own, a fresh upload of host
/// values, or resident weights.
enum Operand<'t> {
    Borrowed(&'t wgpu::Buffer),
    Uploaded(wgpu::Buffer),
    Resident(Arc<wgpu::Buffer>),
}

impl std::ops::Deref for Operand<'_> {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        match self {
            Operand::Borrowed(b) => b,
            Operand::Uploaded(b) => b,
            Operand::Resident(b) => b,
        }
    }
}

/// Workgroups laid out in two dimensions when there are more than one dimension holds.
fn grid(groups: usize) -> (u32, u32, u32) {
    let groups = groups.max(1) as u32;
    (groups.min(65_535), groups.div_ceil(65_535), 1)
}

fn bytes_of(t: &Tensor) -> usize {
    let (per, size) = t.dtype.block();
    t.numel() / per * size
}

impl Gpu {
    /// Whether `t` can be an f32 operand of the element-wise, row, RoPE and attention
    /// kernels: f32 values (host, device or mapped) within one storage binding.
    pub fn takes(&self, t: &Tensor) -> bool {
        t.dtype == DType::F32 && self.fits(t.numel() * 4) && t.numel() > 0
    }

    /// Whether this backend has a kernel for `a · b` (else the CPU backend runs it).
    pub fn supports(&self, a: &Tensor, b: &Tensor) -> bool {
        // Every operand must fit one storage binding (128 MiB on many devices): a larger
        // one (Gemma 3's 262,144-row embedding table) stays on the CPU rather than fail.
        let rows = a.numel() / a.shape.last().copied().unwrap_or(1).max(1);
        let widest = b.shape.iter().copied().max().unwrap_or(0);
        self.fits(bytes_of(a))
            && self.fits(bytes_of(b))
            && self.fits(rows * widest * 4)
            && a.dtype == DType::F32
            && a.shape.len() <= 2
            && b.shape.len() == 2
            && matches!(
                b.dtype,
                DType::F32 | DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q4_K | DType::Q6_K
            )
    }

    /// The device buffer of an operand, uploading host values when needed.
    fn operand<'t>(&self, t: &'t Tensor, budget: Budget) -> Result<Operand<'t>> {
        match &t.storage {
            Storage::Device(d) if std::ptr::eq(d.gpu, self) => Ok(Operand::Borrowed(&d.buf)),
            // Another device's tensor (tests open their own): through the host.
            Storage::Device(d) => Ok(Operand::Uploaded(
                self.upload(bytemuck_f32(&d.read(t.numel(), budget)?), "operand"),
            )),
            Storage::Owned(v) => Ok(Operand::Uploaded(self.upload(bytemuck_f32(v), "operand"))),
            Storage::Mapped { .. } => Ok(Operand::Resident(self.resident_weights(t)?)),
        }
    }

    /// `a · b` or `a · bᵀ`, as [`cpu::matmul`] for 2-D `b` (batched products stay on the
    /// CPU backend). The result stays on the device.
    pub fn matmul(
        &'static self,
        a: &Tensor,
        b: &Tensor,
        transpose_b: bool,
        budget: Budget,
    ) -> Result<Tensor> {
        let k = *a.shape.last().unwrap_or(&0);
        if b.shape.len() != 2 {
            return shape_err(format!("gpu matmul: b must be a matrix, got {:?}", b.shape));
        }
        if a.dtype != DType::F32 {
            return Err(TensorError::Dtype(format!(
                "the left operand must be f32 activations, not {}",
                a.dtype.name()
            )));
        }
        let (bk, m) = if transpose_b {
            (b.shape[1], b.shape[0])
        } else {
            (b.shape[0], b.shape[1])
        };
        if bk != k || k == 0 {
            return shape_err(format!(
                "inner dimensions differ: {:?} · {:?} (transpose_b={transpose_b})",
                a.shape, b.shape
            ));
        }
        let n = a.numel() / k;
        let mut shape = a.shape.clone();
        *shape.last_mut().expect("non-empty") = m;
        let stream = self.stream_for(&[a, b])?;
        let a_buf = self.operand(a, budget)?;
        let out = self.buffer(n * m, "matmul", budget)?;
        match b.dtype {
            DType::F32 => {
                let b_buf = self.operand(b, budget)?;
                let params = self.uniform(&[n as u32, k as u32, m as u32, u32::from(transpose_b)]);
                let groups = ((m as u32).div_ceil(32), (n as u32).div_ceil(32), 1);
                self.dispatch(
                    &stream,
                    &self.pipelines.matmul,
                    &[&params, &a_buf, &b_buf, &out],
                    groups,
                    budget,
                )?;
            }
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q4_K | DType::Q6_K => {
                if !transpose_b {
                    return Err(TensorError::Dtype(format!(
                        "{} weights need transpose_b",
                        b.dtype.name()
                    )));
                }
                let kind = match b.dtype {
                    DType::Q4_0 => 0u32,
                    DType::Q4_1 => 1,
                    DType::Q8_0 => 2,
                    DType::Q4_K => 3,
                    _ => 4,
                };
                let (per_block, block_bytes) = b.dtype.block();
                if !k.is_multiple_of(per_block) {
                    return shape_err(format!(
                        "row length {k} is not a whole number of {per_block}-value blocks"
                    ));
                }
                let w = self.resident_weights(b)?;
                let params = self.uniform(&[
                    n as u32,
                    k as u32,
                    m as u32,
                    kind,
                    block_bytes as u32,
                    per_block as u32,
                    0,
                    0,
                ]);
                // One workgroup per output row; rows past 65,535 go to the second dimension.
                let groups = ((m as u32).min(65_535), (m as u32).div_ceil(65_535), 1);
                self.dispatch(
                    &stream,
                    &self.pipelines.matvec,
                    &[&params, &a_buf, &w, &out],
                    groups,
                    budget,
                )?;
            }
            other => {
                return Err(TensorError::Dtype(format!(
                    "the wgpu backend has no {} kernel yet",
                    other.name()
                )));
            }
        }
        Ok(self.tensor(&stream, shape, out, n * m))
    }

    /// `a + b` or `a * b`, `b` the same size as `a` or one row broadcast over its rows.
    pub fn binary(
        &'static self,
        op: BinaryOp,
        a: &Tensor,
        b: &Tensor,
        budget: Budget,
    ) -> Result<Tensor> {
        let name = match op {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        };
        cpu::same_or_row_broadcast(a, b, name)?;
        let n = a.numel();
        let stream = self.stream_for(&[a, b])?;
        let (a_buf, b_buf) = (self.operand(a, budget)?, self.operand(b, budget)?);
        let code = match op {
            BinaryOp::Add => 0,
            BinaryOp::Mul => 1,
        };
        let params = self.uniform(&[n as u32, b.numel() as u32, code, 0]);
        let out = self.buffer(n, name, budget)?;
        self.dispatch(
            &stream,
            &self.pipelines.elementwise,
            &[&params, &a_buf, &b_buf, &out],
            grid(n.div_ceil(256)),
            budget,
        )?;
        Ok(self.tensor(&stream, a.shape.clone(), out, n))
    }

    /// Scale, SiLU or GELU of every element.
    pub fn unary(&'static self, op: UnaryOp, a: &Tensor, budget: Budget) -> Result<Tensor> {
        let n = a.numel();
        let stream = self.stream_for(&[a])?;
        let a_buf = self.operand(a, budget)?;
        let (code, s) = match op {
            UnaryOp::Scale(s) => (2, s),
            UnaryOp::Silu => (3, 0.0),
            UnaryOp::Gelu => (4, 0.0),
        };
        let params = self.uniform(&[n as u32, n as u32, code, s.to_bits()]);
        let out = self.buffer(n, "unary", budget)?;
        self.dispatch(
            &stream,
            &self.pipelines.elementwise,
            &[&params, &a_buf, &a_buf, &out],
            grid(n.div_ceil(256)),
            budget,
        )?;
        Ok(self.tensor(&stream, a.shape.clone(), out, n))
    }

    /// Softmax, RMS norm (`w`) or layer norm (`w`, optional `b`) of each row.
    pub fn rows(
        &'static self,
        op: RowOp,
        x: &Tensor,
        w: Option<&Tensor>,
        b: Option<&Tensor>,
        budget: Budget,
    ) -> Result<Tensor> {
        let (rows, cols) = x.rows_cols();
        let (code, eps) = match op {
            RowOp::Softmax => (0, 0.0),
            RowOp::RmsNorm { eps } => (1, eps),
            RowOp::LayerNorm { eps } if b.is_some() => (2, eps),
            RowOp::LayerNorm { eps } => (3, eps),
        };
        let what = match op {
            RowOp::Softmax => "softmax",
            RowOp::RmsNorm { .. } => "rms-norm",
            RowOp::LayerNorm { .. } => "layer-norm",
        };
        let stream = self.stream_for(&[Some(x), w, b].into_iter().flatten().collect::<Vec<_>>())?;
        let x_buf = self.operand(x, budget)?;
        let w_buf = match w {
            Some(w) => {
                cpu::check_norm_weight(w, cols, what)?;
                Some(self.operand(w, budget)?)
            }
            None if code != 0 => return shape_err(format!("{what}: a weight is needed")),
            None => None,
        };
        let b_buf = match b {
            Some(b) => {
                cpu::check_norm_weight(b, cols, "layer-norm bias")?;
                Some(self.operand(b, budget)?)
            }
            None => None,
        };
        let params = self.uniform(&[rows as u32, cols as u32, code, eps.to_bits()]);
        let out = self.buffer(x.numel(), what, budget)?;
        let w_ref: &wgpu::Buffer = w_buf.as_deref().unwrap_or(&x_buf);
        let b_ref: &wgpu::Buffer = b_buf.as_deref().unwrap_or(w_ref);
        self.dispatch(
            &stream,
            &self.pipelines.rows,
            &[&params, &x_buf, w_ref, b_ref, &out],
            grid(rows),
            budget,
        )?;
        Ok(self.tensor(&stream, x.shape.clone(), out, x.numel()))
    }

    /// Rotary position embedding, as [`cpu::rope`].
    pub fn rope(
        &'static self,
        x: &Tensor,
        pos: usize,
        head_dim: usize,
        base: f32,
        neox: bool,
        budget: Budget,
    ) -> Result<Tensor> {
        let (rows, cols) = x.rows_cols();
        cpu::check_rope(cols, head_dim)?;
        let stream = self.stream_for(&[x])?;
        let x_buf = self.operand(x, budget)?;
        let params = self.uniform(&[
            rows as u32,
            cols as u32,
            head_dim as u32,
            pos as u32,
            base.to_bits(),
            u32::from(neox),
            0,
            0,
        ]);
        let out = self.buffer(x.numel(), "rope", budget)?;
        self.dispatch(
            &stream,
            &self.pipelines.rope,
            &[&params, &x_buf, &out],
            grid((rows * cols / 2).div_ceil(256)),
            budget,
        )?;
        Ok(self.tensor(&stream, x.shape.clone(), out, x.numel()))
    }

    /// Whether [`Gpu::attention`] can run these operands (the head fits workgroup memory;
    /// output and scores fit one binding).
    pub fn supports_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spec: &AttentionSpec,
    ) -> bool {
        let (n, qcols) = q.rows_cols();
        let (t, _) = k.rows_cols();
        let d = qcols / spec.n_heads.max(1);
        [q, k, v].iter().all(|x| self.takes(x))
            && d <= MAX_HEAD
            && self.fits((n * qcols + n * spec.n_heads * t) * 4)
    }

    /// Causal grouped-query attention, as [`cpu::attention`].
    pub fn attention(
        &'static self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spec: AttentionSpec,
        budget: Budget,
    ) -> Result<Tensor> {
        let (n, qcols, t, d) = cpu::attention_dims(q, k, v, &spec)?;
        if d > MAX_HEAD {
            return shape_err(format!("gpu attention: heads of {d} (at most {MAX_HEAD})"));
        }
        let stream = self.stream_for(&[q, k, v])?;
        let (q_buf, k_buf, v_buf) = (
            self.operand(q, budget)?,
            self.operand(k, budget)?,
            self.operand(v, budget)?,
        );
        let params = self.uniform(&[
            n as u32,
            t as u32,
            spec.n_heads as u32,
            (spec.n_heads / spec.n_kv_heads) as u32,
            d as u32,
            spec.pos as u32,
            spec.window as u32,
            spec.scale.to_bits(),
        ]);
        // The output, then the scores as scratch (one binding fewer than a separate
        // buffer: downlevel devices bind four storage buffers per kernel).
        let capacity = n * qcols + n * spec.n_heads * t;
        let out = self.buffer(capacity, "attention", budget)?;
        self.dispatch(
            &stream,
            &self.pipelines.attention,
            &[&params, &q_buf, &k_buf, &v_buf, &out],
            grid(n * spec.n_heads),
            budget,
        )?;
        Ok(self.tensor(&stream, vec![n, qcols], out, capacity))
    }

    /// Append the rows of `x` to `cache`, moving the cache to the device. The buffer
    /// grows by doubling; a buffer shared with another tensor (a reshape) is copied
    /// first, so appending never changes what another handle sees.
    pub fn append_rows(
        &'static self,
        cache: &mut Tensor,
        x: &Tensor,
        budget: Budget,
    ) -> Result<()> {
        let (_, w) = cache.rows_cols();
        let (n, xw) = x.rows_cols();
        if w != xw {
            return shape_err(format!("append: cache rows of {w}, new rows of {xw}"));
        }
        if cache.dtype != DType::F32 || matches!(cache.storage, Storage::Mapped { .. }) {
            return Err(TensorError::Dtype("cannot append to mapped weights".into()));
        }
        budget.check()?;
        let (have, add) = (cache.numel(), x.numel());
        let stream = self.stream_for(&[cache, x])?;
        let x_buf = self.operand(x, budget)?;
        let in_place = match &mut cache.storage {
            Storage::Device(d) if std::ptr::eq(d.gpu, self) => {
                Arc::get_mut(d).filter(|d| d.capacity >= have + add)
            }
            _ => None,
        };
        if let Some(d) = in_place {
            d.host.take();
            d.writer = stream.clone();
            self.copy(&stream, &x_buf, 0, &d.buf, have, add);
        } else {
            let capacity = (2 * (have + add)).max(64 * w);
            if !self.fits(capacity * 4) {
                return shape_err(format!(
                    "append: a cache of {} values does not fit one GPU binding",
                    have + add
                ));
            }
            let grown = self.buffer(capacity, "cache", budget)?;
            let old = self.operand(cache, budget)?;
            self.copy(&stream, &old, 0, &grown, 0, have);
            self.copy(&stream, &x_buf, 0, &grown, have, add);
            drop(old);
            cache.storage =
                Storage::Device(Arc::new(DeviceBuffer::new(self, grown, capacity, stream)));
        }
        cache.shape = vec![have / w.max(1) + n, w];
        Ok(())
    }

    /// Rows `start..start + count` of `x`, copied on the device.
    pub fn slice_rows(
        &'static self,
        x: &Tensor,
        start: usize,
        count: usize,
        budget: Budget,
    ) -> Result<Tensor> {
        let (rows, cols) = x.rows_cols();
        cpu::check_slice(rows, start, count)?;
        budget.check()?;
        let stream = self.stream_for(&[x])?;
        let src = self.operand(x, budget)?;
        let out = self.buffer(count * cols, "slice", budget)?;
        self.copy(&stream, &src, start * cols, &out, 0, count * cols);
        Ok(self.tensor(&stream, vec![count, cols], out, count * cols))
    }

    /// Index of the largest value of the last row, reading back only the index (for
    /// many rows: the backend reads a single row back, for the log-probability too).
    pub fn argmax(&'static self, x: &Tensor, budget: Budget) -> Result<u32> {
        let (rows, cols) = x.rows_cols();
        if rows == 0 || cols == 0 {
            return shape_err("argmax of an empty tensor");
        }
        let stream = self.stream_for(&[x])?;
        let x_buf = self.operand(x, budget)?;
        let params = self.uniform(&[((rows - 1) * cols) as u32, cols as u32]);
        let out = self.buffer(1, "argmax", budget)?;
        self.dispatch(
            &stream,
            &self.pipelines.argmax,
            &[&params, &x_buf, &out],
            (1, 1, 1),
            budget,
        )?;
        let words = self.read_words(&stream, &out, 0, 1, budget)?;
        words
            .first()
            .copied()
            .filter(|&i| (i as usize) < cols)
            .ok_or_else(|| super::gpu_err("argmax returned no index"))
    }
}
