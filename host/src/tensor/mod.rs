//! The tensor service as plugins see it: the kernels of `apiary-tensor`, exposed through
//! the WIT `tensor` interface with per-instance quotas and deadlines.
//!
//! A self-contained capability (the shape of a Spin "factor"): [`TensorState`] holds
//! everything the interface needs — its own resource table, the quota, the weights
//! folder, the call's deadline — and implements the generated host traits itself. The
//! sandbox only keeps one per instance and links it with a getter ([`add_to_linker`]), so
//! this module depends on [`crate::bindings`] alone and never on [`crate::sandbox`].

pub mod host;

pub use apiary_tensor::*;
pub use host::WeightsHandle;

use wasmtime::component::{HasSelf, Linker, ResourceTable};

/// Per-instance tensor bookkeeping, kept in the plugin's store.
pub struct TensorState {
    /// Bytes of owned tensors alive in this instance.
    pub used: usize,
    /// The most `used` has been since [`TensorState::start_peak`] (or since the instance
    /// began): what a call needed at its worst, not only what it left behind.
    pub peak: usize,
    pub quota: usize,
    /// The plugin's own `weights/` folder, the only place `weights.open` looks.
    pub weights_dir: Option<std::path::PathBuf>,
    /// End of the current host call's time budget (set before every export call).
    pub deadline: Option<std::time::Instant>,
    /// The guest's tensors and open weights files. A table of their own rather than the
    /// instance's WASI table, so the interface needs nothing of the store but this state
    /// (only tensor functions are ever handed these handles).
    table: ResourceTable,
}

impl TensorState {
    /// No tensors yet; at most `quota` bytes of them, weights opened from `weights_dir`.
    pub fn new(quota: usize, weights_dir: Option<std::path::PathBuf>) -> Self {
        TensorState {
            used: 0,
            peak: 0,
            quota,
            weights_dir,
            deadline: None,
            table: ResourceTable::new(),
        }
    }

    /// What a kernel called now may spend: time to the call's deadline, and the bytes
    /// left of the quota.
    pub fn budget(&self) -> Budget {
        Budget::new(self.deadline, self.quota.saturating_sub(self.used))
    }

    /// Start measuring a new peak from what is held now (before each export call).
    pub fn start_peak(&mut self) {
        self.peak = self.used;
    }

    /// `used` went up: keep the high-water mark.
    fn note_peak(&mut self) {
        self.peak = self.peak.max(self.used);
    }
}

/// Define the `tensor` interface in `linker` for stores whose data holds a
/// [`TensorState`] that `get` reaches. The getter is the whole coupling to the store's
/// type: any embedder (the sandbox, a test harness) links the interface the same way.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut TensorState,
) -> wasmtime::Result<()> {
    crate::bindings::apiary::plugin::tensor::add_to_linker::<T, HasSelf<TensorState>>(linker, get)
}
