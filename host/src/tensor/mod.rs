//! The tensor service as plugins see it: the kernels of `apiary-tensor`, exposed through
//! the WIT `tensor` interface with per-instance quotas and deadlines.

pub mod host;

pub use apiary_tensor::*;

/// Per-instance tensor bookkeeping, kept in the plugin's store.
#[derive(Debug, Clone)]
pub struct TensorState {
    /// Bytes of owned tensors alive in this instance.
    pub used: usize,
    pub quota: usize,
    /// The plugin's own `weights/` folder, the only place `weights.open` looks.
    pub weights_dir: Option<std::path::PathBuf>,
    /// End of the current call's budget.
    pub deadline: Deadline,
}
