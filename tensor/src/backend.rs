//! Which backend runs the kernels, chosen once per process.
//!
//! `auto` uses the wgpu backend only with a hardware GPU adapter (software adapters such as
//! lavapipe are hundreds of times slower than the CPU backend here) and the CPU backend
//! otherwise; `cpu` and `wgpu` force one (a forced `wgpu` accepts a software adapter).
//! Kernels the GPU backend does not have (or operands it cannot bind) run on the CPU
//! backend, with device operands read back first. Every kernel the host exposes goes
//! through here.

#[cfg(feature = "wgpu")]
use crate::gpu::{BinaryOp, RowOp, UnaryOp};
use crate::{Budget, Result, Tensor, cpu};
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

/// What system libraries printed while the backend was chosen (see [`crate::quiet`]).
static PROBE_SAID: OnceLock<String> = OnceLock::new();

/// The probe's captured stderr, for the host to log at debug level.
pub fn probe_output() -> &'static str {
    PROBE_SAID.get().map_or("", String::as_str)
}

/// Choose the backend. Only the first call decides; returns what is in use, or why the
/// forced choice is impossible.
pub fn init(choice: Choice) -> std::result::Result<String, String> {
    if BACKEND.get().is_none() {
        let (backend, said) = crate::quiet::capture_stderr(|| pick(choice));
        let _ = PROBE_SAID.set(said);
        let _ = BACKEND.set(backend?);
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

/// For test suites that run model code on the GPU: choose the wgpu backend (a software
/// adapter such as lavapipe allowed) and say whether it is in use. Without an adapter
/// the caller skips, unless `APIARY_REQUIRE_WGPU` is set (CI sets it where lavapipe is
/// installed), in which case this panics with the reason.
pub fn wgpu_for_tests() -> bool {
    match init(Choice::Wgpu) {
        Ok(name) if name.starts_with("wgpu") => {
            eprintln!("backend: {name}");
            true
        }
        Ok(name) => panic!("another backend was chosen first: {name}"),
        Err(e) if std::env::var_os("APIARY_REQUIRE_WGPU").is_some() => {
            panic!("APIARY_REQUIRE_WGPU is set but: {e}")
        }
        Err(e) => {
            eprintln!("skipping the wgpu backend: {e}");
            false
        }
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

#[cfg(feature = "wgpu")]
fn gpu() -> Option<&'static crate::gpu::Gpu> {
    match current() {
        Backend::Wgpu(g) => Some(g),
        Backend::Cpu => None,
    }
}

/// Command buffers the GPU backend has submitted (`None` on the CPU backend): a greedy
/// decode step should cost one.
pub fn gpu_submissions() -> Option<u64> {
    #[cfg(feature = "wgpu")]
    if let Some(g) = gpu() {
        return Some(g.submissions());
    }
    None
}

#[cfg(feature = "wgpu")]
fn on_device(t: &Tensor) -> bool {
    matches!(t.storage, crate::Storage::Device(_))
}

/// Run `$gpu` when the wgpu backend is in use and `$when` holds for it; otherwise fall
/// through to the CPU code after the macro.
macro_rules! on_gpu {
    (|$g:ident| $when:expr => $gpu:expr) => {
        #[cfg(feature = "wgpu")]
        if let Some($g) = gpu() {
            if $when {
                return $gpu;
            }
        }
    };
}

/// `a · b` (or `a · bᵀ`) on the chosen backend.
pub fn matmul(a: &Tensor, b: &Tensor, transpose_b: bool, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.supports(a, b) => g.matmul(a, b, transpose_b, budget));
    cpu::matmul(
        &*a.on_host(budget)?,
        &*b.on_host(budget)?,
        transpose_b,
        budget,
    )
}

pub fn add(a: &Tensor, b: &Tensor, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(a) && g.takes(b) => g.binary(BinaryOp::Add, a, b, budget));
    cpu::add(&*a.on_host(budget)?, &*b.on_host(budget)?, budget)
}

pub fn mul(a: &Tensor, b: &Tensor, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(a) && g.takes(b) => g.binary(BinaryOp::Mul, a, b, budget));
    cpu::mul(&*a.on_host(budget)?, &*b.on_host(budget)?, budget)
}

pub fn scale(a: &Tensor, factor: f32, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(a) => g.unary(UnaryOp::Scale(factor), a, budget));
    cpu::scale(&*a.on_host(budget)?, factor, budget)
}

pub fn silu(a: &Tensor, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(a) => g.unary(UnaryOp::Silu, a, budget));
    cpu::silu(&*a.on_host(budget)?, budget)
}

pub fn gelu(a: &Tensor, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(a) => g.unary(UnaryOp::Gelu, a, budget));
    cpu::gelu(&*a.on_host(budget)?, budget)
}

pub fn softmax(a: &Tensor, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(a) => g.rows(RowOp::Softmax, a, None, None, budget));
    cpu::softmax(&*a.on_host(budget)?, budget)
}

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| g.takes(x) && g.takes(w) => g.rows(RowOp::RmsNorm { eps }, x, Some(w), None, budget));
    cpu::rms_norm(&*x.on_host(budget)?, &*w.on_host(budget)?, eps, budget)
}

pub fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    eps: f32,
    budget: Budget,
) -> Result<Tensor> {
    on_gpu!(|g| g.takes(x) && g.takes(w) && b.is_none_or(|b| g.takes(b))
        => g.rows(RowOp::LayerNorm { eps }, x, Some(w), b, budget));
    let b = b.map(|b| b.on_host(budget)).transpose()?;
    cpu::layer_norm(
        &*x.on_host(budget)?,
        &*w.on_host(budget)?,
        b.as_deref(),
        eps,
        budget,
    )
}

pub fn rope(
    x: &Tensor,
    pos: usize,
    head_dim: usize,
    base: f32,
    neox: bool,
    budget: Budget,
) -> Result<Tensor> {
    on_gpu!(|g| g.takes(x) => g.rope(x, pos, head_dim, base, neox, budget));
    cpu::rope(&*x.on_host(budget)?, pos, head_dim, base, neox, budget)
}

pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: cpu::AttentionSpec,
    budget: Budget,
) -> Result<Tensor> {
    on_gpu!(|g| g.supports_attention(q, k, v, &spec) => g.attention(q, k, v, spec, budget));
    cpu::attention(
        &*q.on_host(budget)?,
        &*k.on_host(budget)?,
        &*v.on_host(budget)?,
        spec,
        budget,
    )
}

/// Append rows to a cache. On the GPU backend a cache moves to the device with the
/// first device rows appended to it, and stays there.
pub fn append_rows(cache: &mut Tensor, x: &Tensor, budget: Budget) -> Result<()> {
    on_gpu!(|g| g.takes(x) && (on_device(cache) || on_device(x)) => g.append_rows(cache, x, budget));
    let x = x.on_host(budget)?;
    if let std::borrow::Cow::Owned(host) = cache.on_host(budget)? {
        *cache = host;
    }
    cpu::append_rows(cache, &x, budget)
}

/// Rows of an embedding table, gathered on the CPU (tables are mapped weights, often
/// larger than one GPU binding; a few rows cost nothing to upload).
pub fn embedding(table: &Tensor, ids: &[u32], budget: Budget) -> Result<Tensor> {
    cpu::embedding(&*table.on_host(budget)?, ids, budget)
}

pub fn slice_rows(x: &Tensor, start: usize, count: usize, budget: Budget) -> Result<Tensor> {
    on_gpu!(|g| on_device(x) => g.slice_rows(x, start, count, budget));
    cpu::slice_rows(&*x.on_host(budget)?, start, count, budget)
}

pub fn reshape(x: &Tensor, shape: Vec<usize>, budget: Budget) -> Result<Tensor> {
    cpu::reshape(x, shape, budget)
}

pub fn token_logprobs(logits: &Tensor, ids: &[u32], budget: Budget) -> Result<Vec<f32>> {
    cpu::token_logprobs(&*logits.on_host(budget)?, ids, budget)
}

/// The largest value's index in the last row. A one-row device tensor (a decode step's
/// logits) is read back whole, since the caller usually wants the token's
/// log-probability next and the copy is kept; of more rows only the index comes back.
pub fn argmax(x: &Tensor, budget: Budget) -> Result<u32> {
    on_gpu!(|g| on_device(x) && x.rows_cols().0 > 1 => g.argmax(x, budget));
    cpu::argmax(&*x.on_host(budget)?)
}

pub fn sample(
    x: &Tensor,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    seed: u64,
    budget: Budget,
) -> Result<u32> {
    if temperature <= 0.0 || !temperature.is_finite() {
        return argmax(x, budget);
    }
    cpu::sample(
        &*x.on_host(budget)?,
        temperature,
        top_k,
        top_p,
        seed,
        budget,
    )
}

/// A tensor's values on the host.
pub fn read(x: &Tensor, budget: Budget) -> Result<Vec<f32>> {
    // A device read-back, a dequantized mapping or the copy of owned values: one buffer.
    budget.reserve(crate::f32_bytes(x.numel()))?;
    Ok(x.on_host(budget)?.to_f32()?.into_owned())
}
