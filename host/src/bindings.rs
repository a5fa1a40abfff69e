//! Host-side bindings of the `apiary:plugin` contract, generated from `wit/`.
//!
//! A leaf module: it uses no other module of this crate. The two modules that need the
//! generated code import it — [`crate::tensor`] implements the `tensor` interface on its
//! own state, [`crate::sandbox`] links the world and calls the exports — so the
//! dependencies run one way:
//!
//! - `sandbox` imports `tensor` (the state it keeps per instance, and how to link it) and
//!   `bindings` (the world it links and calls);
//! - `tensor` imports `bindings` (the traits it implements);
//! - `bindings` imports neither.
//!
//! When the bindings lived in `sandbox`, `tensor` had to import `sandbox` for the traits
//! it implements, and `sandbox` imported `tensor` for the state it stores: a circle in
//! which neither module could be read, tested or changed without the other.

use apiary_tensor::weights::WeightsFile;
use std::sync::Arc;

/// A weights file as the guest sees it: a handle to the host's shared parse. Declared
/// here, beside the bindings whose `with:` names it, so that they need nothing from
/// [`crate::tensor`]; the tensor interface re-exports it.
pub struct WeightsHandle(pub Arc<WeightsFile>);

wasmtime::component::bindgen!({
    path: "../wit",
    world: "specialist",
    // Host functions may trap (e.g. on a resource-table failure); errors the guest
    // should handle are WIT `result`s inside.
    imports: { default: trappable },
    with: {
        "apiary:plugin/tensor.tensor": apiary_tensor::Tensor,
        "apiary:plugin/tensor.weights": WeightsHandle,
    },
});
