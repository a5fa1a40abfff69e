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
//! Two contracts are bound: the current one (1.2), whose imports every plugin links
//! against, and [`v1_1`], whose `handler` export older plugins have (a 1.2 record has
//! fields a 1.1 plugin does not know, so the two exports cannot share one binding).
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

// The contract this host speaks (1.2): every import is linked from these.
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

/// Contract 1.1 (and 1.0, which it extends), kept to call plugins built against it: only
/// its `handler` export is used. Its imports (`log`, `tensor`, `types`) are the same
/// interfaces 1.2 has, and wasmtime links a 1.1 import to the host's 1.2 definition by
/// semver, so nothing of this module is added to the linker.
pub mod v1_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v1.1",
        world: "specialist",
        imports: { default: trappable },
        with: {
            "apiary:plugin/tensor.tensor": apiary_tensor::Tensor,
            "apiary:plugin/tensor.weights": super::WeightsHandle,
        },
    });
}
