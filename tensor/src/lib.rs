//! Apiary's tensor kernels: the work behind the WIT `tensor` interface.
//!
//! This crate has no WebAssembly in it. The host (`apiary`) exposes it to plugins through
//! the WIT interface; `apiary-plugin-api` links it directly when a plugin is compiled
//! natively, so the same model code can run in and out of the sandbox on the same
//! kernels (which is how the sandbox's overhead is measured).
//!
//! Why on the host: small models still need fast matrix math, and pure wasm in a sandbox
//! is an order of magnitude slower at it (no threads, 128-bit SIMD at best). Plugins
//! therefore hold *handles* to tensors that live here; data crosses the boundary only when
//! a guest uploads a vector or reads one back. Weights are opened by file name from the
//! plugin's own `weights/` folder, memory-mapped, and never copied into guest memory.
//!
//! Every kernel validates shapes and dtypes and returns a [`TensorError`] on misuse; none
//! panics on guest input. Kernels check the call's deadline between chunks of work, so a
//! host call cannot outlive the plugin's budget by more than one chunk.

pub mod backend;
pub mod batched;
pub mod cpu;
pub mod dtype;
pub mod gguf;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod pool;
pub mod quant;
pub mod quiet;
pub mod weights;
pub mod wide;

pub use dtype::DType;

use std::sync::Arc;
use std::time::Instant;

/// Why a tensor operation failed. Shown to the plugin author, so each says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("shape error: {0}")]
    Shape(String),
    #[error("dtype error: {0}")]
    Dtype(String),
    #[error("tensor memory quota exceeded: {0}")]
    Quota(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid weights file: {0}")]
    InvalidFile(String),
    #[error("the call's time budget ran out inside a tensor kernel")]
    Deadline,
}

pub type Result<T> = std::result::Result<T, TensorError>;

pub fn shape_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(TensorError::Shape(msg.into()))
}

/// Bytes of memory shared by all tensors mapped from one weights file.
pub type Mapping = Arc<weights::MappedFile>;

/// Where a tensor's elements live.
#[derive(Clone)]
pub enum Storage {
    /// f32 values owned by the host (activations, caches, uploads).
    Owned(Vec<f32>),
    /// A byte range of a memory-mapped weights file, in `dtype`'s block format.
    Mapped {
        file: Mapping,
        start: usize,
        len: usize,
    },
    /// f32 values in GPU memory (the wgpu backend's results): read back only on demand.
    #[cfg(feature = "wgpu")]
    Device(Arc<gpu::DeviceBuffer>),
}

/// A host-owned tensor. Shapes are outermost first: a matrix is `[rows, cols]`.
#[derive(Clone)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype.name())
    }
}

/// Elements of a tensor of `shape`; `usize::MAX` when the product overflows, which no
/// real buffer can hold, so every length comparison against it fails safely.
pub fn numel(shape: &[usize]) -> usize {
    checked_numel(shape).unwrap_or(usize::MAX)
}

/// Elements of a tensor of `shape`, or `None` when the product overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        // A leading 0 is allowed: an empty cache that rows are appended to.
        if shape.is_empty()
            || shape.len() > 4
            || shape[1..].contains(&0)
            || checked_numel(&shape[1..]).is_none()
        {
            return shape_err(format!(
                "shape {shape:?}: 1 to 4 dimensions, only the first may be 0"
            ));
        }
        if checked_numel(&shape) != Some(data.len()) {
            return shape_err(format!(
                "shape {shape:?} holds {} values, got {}",
                numel(&shape),
                data.len()
            ));
        }
        Ok(Tensor {
            shape,
            dtype: DType::F32,
            storage: Storage::Owned(data),
        })
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Host memory this tensor owns (mapped weights are backed by the file, not counted).
    pub fn owned_bytes(&self) -> usize {
        match &self.storage {
            Storage::Owned(v) => v.capacity() * 4,
            Storage::Mapped { .. } => 0,
            // Device memory counts too: a plugin's quota bounds what it holds anywhere.
            #[cfg(feature = "wgpu")]
            Storage::Device(d) => d.capacity() * 4,
        }
    }

    /// Rows × columns, treating all leading dimensions as rows.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        (self.numel() / cols.max(1), cols)
    }

    /// The raw bytes of a mapped tensor.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::Mapped { file, start, len } => {
                file.bytes().get(*start..start.checked_add(*len)?)
            }
            _ => None,
        }
    }

    /// The values as f32 (owned tensors borrow; mapped ones are dequantized).
    pub fn to_f32(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        match &self.storage {
            Storage::Owned(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Storage::Mapped { .. } => {
                let bytes = self
                    .bytes()
                    .filter(|b| {
                        self.dtype
                            .bytes_for(self.numel())
                            .is_some_and(|n| n <= b.len())
                    })
                    .ok_or_else(|| TensorError::InvalidFile("mapping too short".into()))?;
                let mut out = Budget::NONE.zeros(self.numel())?;
                quant::dequantize(self.dtype, bytes, &mut out);
                Ok(std::borrow::Cow::Owned(out))
            }
            #[cfg(feature = "wgpu")]
            Storage::Device(d) => Ok(std::borrow::Cow::Owned(d.read(self.numel(), Budget::NONE)?)),
        }
    }

    /// This tensor with its values in host memory (device values are read back, waiting
    /// at most until `budget`); host tensors are borrowed.
    pub fn on_host(&self, budget: Budget) -> Result<std::borrow::Cow<'_, Tensor>> {
        match &self.storage {
            #[cfg(feature = "wgpu")]
            Storage::Device(d) => Ok(std::borrow::Cow::Owned(Tensor {
                shape: {
                    budget.reserve(f32_bytes(self.numel()))?;
                    self.shape.clone()
                },
                dtype: DType::F32,
                storage: Storage::Owned(d.read(self.numel(), budget)?),
            })),
            _ => {
                let _ = budget;
                Ok(std::borrow::Cow::Borrowed(self))
            }
        }
    }

    pub fn owned(&self) -> Result<&[f32]> {
        match &self.storage {
            Storage::Owned(v) => Ok(v),
            Storage::Mapped { .. } => Err(TensorError::Dtype(format!(
                "this operand must be an f32 activation, not mapped {} weights",
                self.dtype.name()
            ))),
            // The backend reads device values back before a CPU kernel sees them.
            #[cfg(feature = "wgpu")]
            Storage::Device(_) => Err(TensorError::Dtype(
                "internal: a GPU tensor reached a CPU kernel without being read back".into(),
            )),
        }
    }
}

/// What one host call may spend in the kernels: time until its deadline, and bytes of
/// new tensor memory (host or device) it may create.
///
/// Why both travel together: a kernel is a host call, which epoch interruption cannot stop
/// and the wasm memory limiter does not see. So every kernel checks the deadline between
/// chunks of work, and computes the bytes of every buffer it will create (with checked
/// arithmetic, before allocating any) and asks [`Budget::reserve`] first. A request the
/// plugin's quota cannot cover is a `Quota` error before the allocator is reached, whatever
/// the shapes say. Plain values (`Copy`): no hidden shared state between kernels.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    until: Option<Instant>,
    bytes: usize,
}

impl Budget {
    /// No deadline and no memory cap (native model code, benches, tests).
    pub const NONE: Budget = Budget {
        until: None,
        bytes: usize::MAX,
    };

    pub fn new(until: Option<Instant>, bytes: usize) -> Budget {
        Budget { until, bytes }
    }

    /// A deadline and no memory cap.
    pub fn until(t: Instant) -> Budget {
        Budget {
            until: Some(t),
            bytes: usize::MAX,
        }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Bytes of new tensor memory this call may still create.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `Err(Deadline)` once the deadline has passed.
    pub fn check(&self) -> Result<()> {
        match self.until {
            Some(t) if Instant::now() > t => Err(TensorError::Deadline),
            _ => Ok(()),
        }
    }

    /// Refuse unless `bytes` of new buffers fit what the call may create. `None` means
    /// the size itself overflowed.
    pub fn reserve(&self, bytes: Option<usize>) -> Result<()> {
        match bytes {
            Some(b) if b <= self.bytes => Ok(()),
            Some(b) => Err(TensorError::Quota(format!(
                "this operation needs {} MiB of new tensor memory, {} MiB are left of the quota",
                b.div_ceil(1 << 20),
                self.bytes >> 20
            ))),
            None => Err(TensorError::Quota(
                "this operation's result size overflows; check the shapes".into(),
            )),
        }
    }

    /// A zeroed buffer of `n` f32 values, after [`Budget::reserve`] and without aborting
    /// the process if the allocator says no.
    pub fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        self.reserve(n.checked_mul(4))?;
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| {
            TensorError::Quota(format!("the host could not allocate {} MiB", (n * 4) >> 20))
        })?;
        v.resize(n, 0.0);
        Ok(v)
    }
}

/// Bytes of `n` f32 values, `None` on overflow.
pub fn f32_bytes(n: usize) -> Option<usize> {
    n.checked_mul(4)
}

/// Sum of byte counts, `None` if any is `None` or the sum overflows.
pub fn total_bytes(parts: &[Option<usize>]) -> Option<usize> {
    parts
        .iter()
        .try_fold(0usize, |acc, p| p.and_then(|p| acc.checked_add(p)))
}

/// What runs the kernels, for logs, `apiary plugins list` and a plugin's `backend()`.
pub fn backend_name() -> String {
    backend::name()
}

/// The CPU backend's description.
pub fn cpu_name() -> String {
    let simd = if cfg!(target_arch = "x86_64") && quant::vnni_available() {
        "avx512-vnni"
    } else if cfg!(target_arch = "x86_64") && quant::simd_available() {
        "avx2+fma"
    } else {
        "portable"
    };
    format!("cpu ({simd}, {} threads)", pool::threads())
}
