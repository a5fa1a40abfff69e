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
pub mod cpu;
pub mod dtype;
pub mod gguf;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod quant;
pub mod weights;

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

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        // A leading 0 is allowed: an empty cache that rows are appended to.
        if shape.is_empty() || shape.len() > 4 || shape[1..].contains(&0) {
            return shape_err(format!(
                "shape {shape:?}: 1 to 4 dimensions, only the first may be 0"
            ));
        }
        if numel(&shape) != data.len() {
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
            Storage::Mapped { file, start, len } => file.bytes().get(*start..*start + *len),
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
                    .ok_or_else(|| TensorError::InvalidFile("mapping too short".into()))?;
                let mut out = vec![0f32; self.numel()];
                quant::dequantize(self.dtype, bytes, &mut out);
                Ok(std::borrow::Cow::Owned(out))
            }
            #[cfg(feature = "wgpu")]
            Storage::Device(d) => Ok(std::borrow::Cow::Owned(
                d.read(self.numel(), Deadline::NONE)?,
            )),
        }
    }

    /// This tensor with its values in host memory (device values are read back, waiting
    /// at most until `dl`); host tensors are borrowed.
    pub fn on_host(&self, dl: Deadline) -> Result<std::borrow::Cow<'_, Tensor>> {
        match &self.storage {
            #[cfg(feature = "wgpu")]
            Storage::Device(d) => Ok(std::borrow::Cow::Owned(Tensor {
                shape: self.shape.clone(),
                dtype: DType::F32,
                storage: Storage::Owned(d.read(self.numel(), dl)?),
            })),
            _ => {
                let _ = dl;
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

/// A deadline checked by kernels between chunks of work.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Option<Instant>);

impl Deadline {
    pub const NONE: Deadline = Deadline(None);

    pub fn check(&self) -> Result<()> {
        match self.0 {
            Some(t) if Instant::now() > t => Err(TensorError::Deadline),
            _ => Ok(()),
        }
    }
}

/// What runs the kernels, for logs, `apiary plugins list` and a plugin's `backend()`.
pub fn backend_name() -> String {
    backend::name()
}

/// The CPU backend's description.
pub fn cpu_name() -> String {
    let simd = if cfg!(target_arch = "x86_64") && quant::simd_available() {
        "avx2+fma"
    } else {
        "portable"
    };
    format!("cpu ({simd}, {} threads)", rayon::current_num_threads())
}
