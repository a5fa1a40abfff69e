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
    /// End of the current host call's time budget (set before every export call).
    pub deadline: Option<std::time::Instant>,
}

impl TensorState {
    /// What a kernel called now may spend: time to the call's deadline, and the bytes
    /// left of the quota.
    pub fn budget(&self) -> Budget {
        Budget::new(self.deadline, self.quota.saturating_sub(self.used))
    }
}
