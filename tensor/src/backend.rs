//! Which backend runs the kernels, chosen once per process.
//!
//! `auto` uses the wgpu backend only with a hardware GPU adapter (software adapters such as
//! lavapipe are hundreds of times slower than the CPU backend here) and the CPU backend
//! otherwise; `cpu` and `wgpu` force one (a forced `wgpu` accepts a software adapter).
//! Kernels the GPU backend does not have yet run on the CPU backend.

use crate::{Deadline, Result, Tensor, cpu};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Cpu,
    Wgpu,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "cpu" => Ok(Choice::Cpu),
            "wgpu" => Ok(Choice::Wgpu),
            other => Err(format!(
                "unknown tensor backend {other:?} (auto, cpu or wgpu)"
            )),
        }
    }
}

enum Backend {
    Cpu,
    #[cfg(feature = "wgpu")]
    Wgpu(Box<crate::gpu::Gpu>),
}

static BACKEND: OnceLock<Backend> = OnceLock::new();

/// Choose the backend. Only the first call decides; returns what is in use, or why the
/// forced choice is impossible.
pub fn init(choice: Choice) -> std::result::Result<String, String> {
    if BACKEND.get().is_none() {
        let backend = pick(choice)?;
        let _ = BACKEND.set(backend);
    }
    Ok(name())
}

fn pick(choice: Choice) -> std::result::Result<Backend, String> {
    match choice {
        Choice::Cpu => Ok(Backend::Cpu),
        #[cfg(feature = "wgpu")]
        Choice::Wgpu => crate::gpu::Gpu::open(crate::gpu::AdapterPolicy::AllowSoftware)
            .map(|g| Backend::Wgpu(Box::new(g))),
        #[cfg(not(feature = "wgpu"))]
        Choice::Wgpu => Err("this build has no wgpu backend (feature `wgpu`)".into()),
        #[cfg(feature = "wgpu")]
        Choice::Auto => Ok(
            crate::gpu::Gpu::open(crate::gpu::AdapterPolicy::HardwareOnly)
                .map(|g| Backend::Wgpu(Box::new(g)))
                .unwrap_or(Backend::Cpu),
        ),
        #[cfg(not(feature = "wgpu"))]
        Choice::Auto => Ok(Backend::Cpu),
    }
}

fn current() -> &'static Backend {
    BACKEND.get_or_init(|| Backend::Cpu)
}

/// What runs the kernels, for logs, `apiary plugins list` and a plugin's `backend()`.
pub fn name() -> String {
    match current() {
        Backend::Cpu => crate::cpu_name(),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(g) => format!("{} + {} for the rest", g.name(), crate::cpu_name()),
    }
}

/// `a · b` on the chosen backend.
pub fn matmul(a: &Tensor, b: &Tensor, transpose_b: bool, dl: Deadline) -> Result<Tensor> {
    match current() {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(g) if g.supports(a, b) => g.matmul(a, b, transpose_b, dl),
        _ => cpu::matmul(a, b, transpose_b, dl),
    }
}
