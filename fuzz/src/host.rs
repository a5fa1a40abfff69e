//! The targets that drive the node runtime (`apiary`).

use apiary::bindings::apiary::plugin::tensor as wit;
use apiary::ledger::NodeKey;
use apiary::ledger::transcript::{self, Transcript};
use apiary::sandbox::PluginState;
use apiary::swarm::wire::{self, Envelope, Gate, MAX_AGE_MS, Rejection};
use apiary_tensor::Tensor;
use arbitrary::{Arbitrary, Unstructured};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wit::{Host, HostTensor, HostWeights};

/// The fixed key the targets sign with when they re-sign a fuzzed message, so that the
/// checks behind the signature are reached.
fn fuzz_key() -> &'static NodeKey {
    static KEY: OnceLock<NodeKey> = OnceLock::new();
    KEY.get_or_init(|| NodeKey::from_secret([7; 32]))
}

fn other_key() -> &'static NodeKey {
    static KEY: OnceLock<NodeKey> = OnceLock::new();
    KEY.get_or_init(|| NodeKey::from_secret([8; 32]))
}

// ---------------------------------------------------------------------------------------
// tensor_ops

/// The plugin's host tensor quota in the target.
pub const TENSOR_QUOTA: usize = 64 << 20;
/// Values uploaded through `from-f32` per input, all tensors together.
const MAX_CREATED_VALUES: usize = 4096;
/// Operations per input.
const MAX_OPS: usize = 64;
/// Ids per `embedding` / `token-logprobs` call.
const MAX_IDS: usize = 64;
/// Deadline of each host call.
const CALL_BUDGET: Duration = Duration::from_millis(200);

/// The weights folder the target's plugin state may open files from (shared by every
/// process, written once, atomically).
fn weights_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("apiary-fuzz-weights-v1");
        std::fs::create_dir_all(&dir).expect("a temporary weights folder");
        for (name, bytes) in [
            ("tiny.gguf", crate::build::tiny_gguf()),
            ("tiny.safetensors", crate::build::tiny_safetensors()),
        ] {
            let path = dir.join(name);
            if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                std::fs::write(&tmp, &bytes).expect("write a weights file");
                std::fs::rename(&tmp, &path).expect("move a weights file in place");
            }
        }
        dir
    })
}

const WEIGHTS_FILES: &[&str] = &[
    "tiny.gguf",
    "tiny.safetensors",
    "missing.gguf",
    "../tiny.gguf",
    "/etc/passwd",
    "",
];

/// A handle argument: usually one of the live tensors, sometimes one that is not (a
/// dropped tensor, a weights handle, a number nobody was given).
#[derive(Debug, Clone, Copy, Arbitrary)]
struct H(u8);

/// A dimension, index or count: mostly small, often a boundary, sometimes anything.
#[derive(Debug, Clone, Copy)]
struct Dim(u32);

impl<'a> Arbitrary<'a> for Dim {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const EDGES: &[u32] = &[
            0,
            1,
            2,
            3,
            4,
            7,
            8,
            16,
            31,
            32,
            33,
            64,
            255,
            256,
            1 << 10,
            4095,
            4096,
            (1 << 16) - 1,
            1 << 16,
            1 << 24,
            1 << 31,
            u32::MAX / 2,
            u32::MAX - 1,
            u32::MAX,
        ];
        Ok(Dim(match u.int_in_range(0u8..=7)? {
            0..=3 => u.int_in_range(0..=8)?,
            4..=5 => *u.choose(EDGES)?,
            _ => u.arbitrary()?,
        }))
    }
}

/// A float argument: ordinary values, and the ones kernels get wrong.
#[derive(Debug, Clone, Copy)]
struct F(f32);

impl<'a> Arbitrary<'a> for F {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(F(value(u)?))
    }
}

fn value(u: &mut Unstructured<'_>) -> arbitrary::Result<f32> {
    Ok(match u.arbitrary::<u8>()? {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => f32::MAX,
        4 => f32::MIN,
        5 => f32::MIN_POSITIVE,
        6 => -0.0,
        7 => 1e-30,
        8 => 1e30,
        9 => f32::from_bits(u.arbitrary()?),
        x => f32::from(x as i8) / 16.0,
    })
}

fn dims(u: &[Dim]) -> Vec<u32> {
    u.iter().take(6).map(|d| d.0).collect()
}

fn ids(u: &[Dim]) -> Vec<u32> {
    u.iter().take(MAX_IDS).map(|d| d.0).collect()
}

#[derive(Debug, Arbitrary)]
enum Op {
    FromF32 {
        shape: Vec<Dim>,
        /// Supply as many values as the shape holds (when that is few enough).
        fit: bool,
        extra: u8,
    },
    OpenWeights(u8),
    WeightTensor {
        file: u8,
        name: u8,
    },
    WeightMeta {
        file: u8,
        key: u8,
    },
    Matmul(H, H, bool),
    Add(H, H),
    Mul(H, H),
    Scale(H, F),
    Softmax(H),
    RmsNorm(H, H, F),
    LayerNorm(H, H, Option<H>, F),
    Silu(H),
    Gelu(H),
    Rope {
        x: H,
        pos: Dim,
        head_dim: Dim,
        base: F,
        neox: bool,
    },
    Attention {
        q: H,
        k: H,
        v: H,
        n_heads: Dim,
        n_kv_heads: Dim,
        pos: Dim,
        scale: F,
        window: Dim,
    },
    AppendRows(H, H),
    Embedding(H, Vec<Dim>),
    SliceRows(H, Dim, Dim),
    Reshape(H, Vec<Dim>),
    TokenLogprobs(H, Vec<Dim>),
    Argmax(H),
    Sample {
        x: H,
        temperature: F,
        top_k: Dim,
        top_p: F,
        seed: u64,
    },
    Read(H),
    Shape(H),
    Dtype(H),
    Drop(H),
    Backend,
}

struct Ops {
    state: PluginState,
    /// Reps of the tensors the "plugin" holds.
    live: Vec<u32>,
    /// Open weights files (rep, name).
    weights: Vec<(u32, &'static str)>,
    /// Reps that were tensors once.
    dropped: Vec<u32>,
    created: usize,
}

type Ret<T> = wasmtime::Result<Result<T, wit::TensorError>>;

impl Ops {
    /// A handle and whether it names a live tensor.
    fn arg(&self, h: H) -> (Resource<Tensor>, bool) {
        let rep = match (h.0, self.live.len()) {
            (0..=239, n) if n > 0 => self.live[h.0 as usize % n],
            (240..=247, _) if !self.dropped.is_empty() => {
                self.dropped[h.0 as usize % self.dropped.len()]
            }
            (248..=251, _) if !self.weights.is_empty() => self.weights[0].0,
            _ => u32::from(h.0) << 20 | 0xfff,
        };
        (Resource::new_borrow(rep), self.live.contains(&rep))
    }

    /// An operation's result: a new tensor, a refusal, or (only for a bad handle) a trap.
    fn made(&mut self, what: &str, valid: bool, r: Ret<Resource<Tensor>>) {
        match r {
            Ok(Ok(t)) => {
                assert!(valid, "{what} succeeded on a handle that is not live");
                assert!(!self.live.contains(&t.rep()), "{what} reused a live handle");
                self.dropped.retain(|&d| d != t.rep());
                self.live.push(t.rep());
            }
            Ok(Err(_)) => {}
            Err(e) => assert!(!valid, "{what} trapped on live handles: {e:?}"),
        }
    }

    fn value<T>(&self, what: &str, valid: bool, r: Ret<T>) -> Option<T> {
        match r {
            Ok(Ok(v)) => {
                assert!(valid, "{what} succeeded on a handle that is not live");
                Some(v)
            }
            Ok(Err(_)) => None,
            Err(e) => {
                assert!(!valid, "{what} trapped on live handles: {e:?}");
                None
            }
        }
    }

    fn shape_of(&mut self, rep: u32) -> Vec<u32> {
        HostTensor::shape(self.state.tensors_mut(), Resource::new_borrow(rep))
            .expect("the shape of a live tensor")
    }

    /// Values of the last row of a live tensor, if its shape says how many.
    fn cols(&mut self, rep: u32) -> Option<usize> {
        self.shape_of(rep).last().map(|&c| c as usize)
    }

    fn weights_file(&mut self, file: u8) -> Option<u32> {
        let name = WEIGHTS_FILES[file as usize % WEIGHTS_FILES.len()];
        if let Some(&(rep, _)) = self.weights.iter().find(|w| w.1 == name) {
            return Some(rep);
        }
        match HostWeights::open(self.state.tensors_mut(), name.to_string()) {
            Ok(Ok(w)) => {
                assert!(
                    !name.contains("..") && !name.starts_with('/') && !name.is_empty(),
                    "weights {name:?} opened"
                );
                self.weights.push((w.rep(), name));
                Some(w.rep())
            }
            Ok(Err(_)) => None,
            Err(e) => panic!("opening weights {name:?} trapped: {e:?}"),
        }
    }

    fn run(&mut self, op: Op, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
        match op {
            Op::FromF32 { shape, fit, extra } => {
                let shape = dims(&shape);
                let room = MAX_CREATED_VALUES - self.created;
                let holds = shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d as usize));
                let n = match holds {
                    Some(n) if fit && n <= room => n,
                    _ => usize::from(extra % 8).min(room),
                };
                let mut data = Vec::with_capacity(n);
                for _ in 0..n {
                    data.push(value(u).unwrap_or(0.0));
                }
                self.created += n;
                let r = HostTensor::from_f32(self.state.tensors_mut(), shape.clone(), data);
                if let Ok(Ok(_)) = &r {
                    assert_eq!(
                        holds,
                        Some(n),
                        "from-f32 accepted {n} values for shape {shape:?}"
                    );
                }
                self.made("from-f32", true, r);
            }
            Op::OpenWeights(file) => {
                self.weights_file(file);
            }
            Op::WeightTensor { file, name } => {
                if let Some(w) = self.weights_file(file) {
                    let names =
                        HostWeights::names(self.state.tensors_mut(), Resource::new_borrow(w))
                            .expect("names of an open weights file");
                    let name = names
                        .get(name as usize % names.len().max(1))
                        .cloned()
                        .unwrap_or_else(|| "none".into());
                    let r = HostWeights::tensor(
                        self.state.tensors_mut(),
                        Resource::new_borrow(w),
                        name,
                    );
                    self.made("weights.tensor", true, r);
                }
            }
            Op::WeightMeta { file, key } => {
                if let Some(w) = self.weights_file(file) {
                    const KEYS: &[&str] = &[
                        "general.architecture",
                        "llama.block_count",
                        "tokenizer.ggml.tokens",
                        "tokenizer.ggml.scores",
                        "fuzz.nested",
                        "fuzz.i64",
                        "format",
                        "missing",
                    ];
                    let key = KEYS[key as usize % KEYS.len()].to_string();
                    HostWeights::metadata(self.state.tensors_mut(), Resource::new_borrow(w), key)
                        .expect("metadata of an open weights file");
                }
            }
            Op::Matmul(a, b, t) => {
                let ((a, va), (b, vb)) = (self.arg(a), self.arg(b));
                let r = Host::matmul(self.state.tensors_mut(), a, b, t);
                self.made("matmul", va && vb, r);
            }
            Op::Add(a, b) => {
                let ((a, va), (b, vb)) = (self.arg(a), self.arg(b));
                let r = Host::add(self.state.tensors_mut(), a, b);
                self.made("add", va && vb, r);
            }
            Op::Mul(a, b) => {
                let ((a, va), (b, vb)) = (self.arg(a), self.arg(b));
                let r = Host::mul(self.state.tensors_mut(), a, b);
                self.made("mul", va && vb, r);
            }
            Op::Scale(a, f) => {
                let (a, va) = self.arg(a);
                let r = Host::scale(self.state.tensors_mut(), a, f.0);
                self.made("scale", va, r);
            }
            Op::Softmax(a) => {
                let (a, va) = self.arg(a);
                let r = Host::softmax(self.state.tensors_mut(), a);
                self.made("softmax", va, r);
            }
            Op::RmsNorm(x, w, eps) => {
                let ((x, vx), (w, vw)) = (self.arg(x), self.arg(w));
                let r = Host::rms_norm(self.state.tensors_mut(), x, w, eps.0);
                self.made("rms-norm", vx && vw, r);
            }
            Op::LayerNorm(x, w, b, eps) => {
                let ((x, vx), (w, vw)) = (self.arg(x), self.arg(w));
                let (b, vb) = match b.map(|b| self.arg(b)) {
                    Some((b, vb)) => (Some(b), vb),
                    None => (None, true),
                };
                let r = Host::layer_norm(self.state.tensors_mut(), x, w, b, eps.0);
                self.made("layer-norm", vx && vw && vb, r);
            }
            Op::Silu(x) => {
                let (x, vx) = self.arg(x);
                let r = Host::silu(self.state.tensors_mut(), x);
                self.made("silu", vx, r);
            }
            Op::Gelu(x) => {
                let (x, vx) = self.arg(x);
                let r = Host::gelu(self.state.tensors_mut(), x);
                self.made("gelu", vx, r);
            }
            Op::Rope {
                x,
                pos,
                head_dim,
                base,
                neox,
            } => {
                let (x, vx) = self.arg(x);
                let r = Host::rope(self.state.tensors_mut(), x, pos.0, head_dim.0, base.0, neox);
                self.made("rope", vx, r);
            }
            Op::Attention {
                q,
                k,
                v,
                n_heads,
                n_kv_heads,
                pos,
                scale,
                window,
            } => {
                let ((q, vq), (k, vk), (v, vv)) = (self.arg(q), self.arg(k), self.arg(v));
                let spec = wit::AttentionSpec {
                    n_heads: n_heads.0,
                    n_kv_heads: n_kv_heads.0,
                    pos: pos.0,
                    scale: scale.0,
                    window: window.0,
                };
                let r = Host::attention(self.state.tensors_mut(), q, k, v, spec);
                self.made("attention", vq && vk && vv, r);
            }
            Op::AppendRows(c, x) => {
                let ((c, vc), (x, vx)) = (self.arg(c), self.arg(x));
                let rep = c.rep();
                let before = vc.then(|| self.shape_of(rep));
                let r = Host::append_rows(self.state.tensors_mut(), c, x);
                if self.value("append-rows", vc && vx, r).is_some() {
                    let after = self.shape_of(rep);
                    let before = before.expect("a live cache");
                    let values =
                        |s: &[u32]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d as usize));
                    assert!(
                        values(&after) >= values(&before),
                        "append-rows shrank {before:?} to {after:?}"
                    );
                }
            }
            Op::Embedding(t, list) => {
                let (t, vt) = self.arg(t);
                let list = ids(&list);
                let r = Host::embedding(self.state.tensors_mut(), t, list);
                self.made("embedding", vt, r);
            }
            Op::SliceRows(x, start, count) => {
                let (x, vx) = self.arg(x);
                let r = Host::slice_rows(self.state.tensors_mut(), x, start.0, count.0);
                if let Ok(Ok(t)) = &r {
                    let rep = t.rep();
                    assert_eq!(self.shape_of(rep).first(), Some(&count.0), "slice-rows");
                }
                self.made("slice-rows", vx, r);
            }
            Op::Reshape(x, shape) => {
                let (x, vx) = self.arg(x);
                let shape = dims(&shape);
                let r = Host::reshape(self.state.tensors_mut(), x, shape.clone());
                if let Ok(Ok(t)) = &r {
                    let rep = t.rep();
                    assert_eq!(self.shape_of(rep), shape, "reshape");
                }
                self.made("reshape", vx, r);
            }
            Op::TokenLogprobs(x, list) => {
                let (x, vx) = self.arg(x);
                let list = ids(&list);
                let n = list.len();
                let r = Host::token_logprobs(self.state.tensors_mut(), x, list);
                if let Some(lp) = self.value("token-logprobs", vx, r) {
                    assert_eq!(lp.len(), n, "token-logprobs");
                }
            }
            Op::Argmax(x) => {
                let (x, vx) = self.arg(x);
                let rep = x.rep();
                let r = Host::argmax(self.state.tensors_mut(), x);
                if let Some(i) = self.value("argmax", vx, r) {
                    let cols = self.cols(rep).unwrap_or(0);
                    assert!((i as usize) < cols, "argmax {i} of {cols} columns");
                }
            }
            Op::Sample {
                x,
                temperature,
                top_k,
                top_p,
                seed,
            } => {
                let (x, vx) = self.arg(x);
                let rep = x.rep();
                let r = Host::sample(
                    self.state.tensors_mut(),
                    x,
                    temperature.0,
                    top_k.0,
                    top_p.0,
                    seed,
                );
                if let Some(i) = self.value("sample", vx, r) {
                    let cols = self.cols(rep).unwrap_or(0);
                    assert!((i as usize) < cols, "sampled {i} of {cols} columns");
                }
            }
            Op::Read(x) => {
                let (x, vx) = self.arg(x);
                let rep = x.rep();
                let r = HostTensor::read(self.state.tensors_mut(), x);
                if let Some(values) = self.value("read", vx, r) {
                    let shape = self.shape_of(rep);
                    let n = shape
                        .iter()
                        .try_fold(1usize, |a, &d| a.checked_mul(d as usize));
                    assert_eq!(Some(values.len()), n, "read of a {shape:?} tensor");
                }
            }
            Op::Shape(x) => {
                let (x, vx) = self.arg(x);
                let r = HostTensor::shape(self.state.tensors_mut(), x);
                assert!(r.is_ok() || !vx, "shape of a live tensor trapped");
            }
            Op::Dtype(x) => {
                let (x, vx) = self.arg(x);
                let r = HostTensor::dtype(self.state.tensors_mut(), x);
                assert!(r.is_ok() || !vx, "dtype of a live tensor trapped");
            }
            Op::Drop(x) => {
                let (x, vx) = self.arg(x);
                let rep = x.rep();
                // A guest cannot drop a weights handle as a tensor (handles are typed),
                // and wasmtime's table would free it before noticing the type.
                if self.weights.iter().any(|w| w.0 == rep) {
                    return Ok(());
                }
                let r = HostTensor::drop(self.state.tensors_mut(), Resource::new_own(rep));
                if vx {
                    r.expect("dropping a live tensor");
                    self.live.retain(|&l| l != rep);
                    self.dropped.push(rep);
                }
            }
            Op::Backend => {
                Host::backend(self.state.tensors_mut()).expect("the backend's name");
            }
        }
        Ok(())
    }
}

/// Sequences of tensor calls, as a plugin makes them, against the host's real tensor
/// state: any shapes, dimensions, values, dtypes (via a weights file of every type) and
/// handles, live or not. A trap is allowed only for a handle that is not live; a refusal
/// is a `tensor-error`. The quota holds after every call, and everything is released
/// when the handles are dropped.
pub fn tensor_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut ops = Ops {
        state: PluginState::detached("fuzz", TENSOR_QUOTA, Some(weights_dir().to_path_buf())),
        live: Vec::new(),
        weights: Vec::new(),
        dropped: Vec::new(),
        created: 0,
    };
    for _ in 0..MAX_OPS {
        let Ok(op) = u.arbitrary::<Op>() else {
            break;
        };
        ops.state
            .set_call_deadline(Some(Instant::now() + CALL_BUDGET));
        if ops.run(op, &mut u).is_err() {
            break;
        }
        let used = ops.state.tensor_bytes_in_use();
        assert!(
            used <= TENSOR_QUOTA,
            "{used} bytes of tensors held, quota {TENSOR_QUOTA}"
        );
        if u.is_empty() {
            break;
        }
    }
    ops.state.set_call_deadline(None);
    for rep in std::mem::take(&mut ops.live) {
        HostTensor::drop(ops.state.tensors_mut(), Resource::new_own(rep))
            .expect("drop a live tensor");
    }
    for (rep, _) in std::mem::take(&mut ops.weights) {
        HostWeights::drop(ops.state.tensors_mut(), Resource::new_own(rep))
            .expect("drop open weights");
    }
    assert_eq!(
        ops.state.tensor_bytes_in_use(),
        0,
        "tensor memory still counted after every handle was dropped"
    );
}

// ---------------------------------------------------------------------------------------
// manifest

/// `plugin.toml` on any text, then the limits it asks for granted under the default
/// policy and under a tight one.
pub fn manifest(data: &[u8]) {
    use apiary::plugins::manifest::PluginManifest;
    use apiary::sandbox::limits::{CallKind, LimitPolicy, Limits};
    let Ok(m) = PluginManifest::parse(&crate::text(data)) else {
        return;
    };
    if let Some(w) = &m.wasm {
        assert!(
            !w.is_empty() && !w.contains(['/', '\\']) && w != "." && w != "..",
            "wasm = {w:?} accepted"
        );
    }
    if let Some(n) = &m.name {
        assert!(
            !n.trim().is_empty() && n.len() <= 64 && !n.chars().any(char::is_control),
            "name = {n:?} accepted"
        );
    }
    let tight = Limits {
        assess_ms: 1,
        answer_ms: 1,
        compare_ms: 1,
        memory_mib: 1,
        output_kib: 1,
        answer_kib: 1,
        log_lines: 1,
        tensor_mib: 1,
    };
    for policy in [LimitPolicy::default(), LimitPolicy::new(tight, tight)] {
        let (granted, clamped) = policy.grant(&m.limits);
        assert_eq!(
            granted,
            granted.min(policy.ceilings),
            "granted past a ceiling"
        );
        for c in &clamped {
            assert!(c.granted < c.requested, "{c:?}");
        }
        let _ = (
            granted.memory_bytes(),
            granted.output_bytes(),
            granted.tensor_bytes(),
            granted.answer_bytes(),
        );
        for call in [
            CallKind::Describe,
            CallKind::Assess,
            CallKind::Answer,
            CallKind::Compare,
        ] {
            let _ = granted.budget(call);
        }
    }
    serde_json::to_string(&m).expect("a parsed manifest serializes");
}

// ---------------------------------------------------------------------------------------
// wire

/// A clock the node could have: the message's own time where it has a plausible one.
fn clock_near(v: &serde_json::Value) -> u64 {
    v.get("payload")
        .and_then(|p| p.get("sent_ms"))
        .and_then(serde_json::Value::as_u64)
        .filter(|&t| t < 1 << 50)
        .unwrap_or_else(wire::now_ms)
}

/// What must hold of one gate decision.
fn check_open(gate: &mut Gate, v: &serde_json::Value, len: usize, peer: Option<&str>, now: u64) {
    match gate.open(v.clone(), len, peer, now) {
        Ok(env) => {
            assert!(len <= wire::MAX_MESSAGE_BYTES);
            assert_eq!(env.payload.version, wire::WIRE_VERSION);
            env.verify().expect("an opened message verifies");
            if let Some(peer) = peer {
                assert_eq!(peer, env.signer, "opened a message from another peer");
            }
            assert!(env.payload.sent_ms.abs_diff(now) <= MAX_AGE_MS);
            let _ = (env.payload.msg.kind(), env.payload.msg.round());
            // The same message again is a replay.
            assert_eq!(
                gate.open(v.clone(), len, peer, now),
                Err(Rejection::Replayed(env.payload.nonce)),
                "a message opened twice"
            );
            // Forwarded (re-serialized), it opens at a node that has not seen it.
            let bytes = wire::to_bytes(&env);
            if bytes.len() > wire::MAX_MESSAGE_BYTES {
                return;
            }
            let again: serde_json::Value =
                serde_json::from_slice(&bytes).expect("an envelope is JSON");
            let reopened = Gate::default()
                .open(again, bytes.len(), peer, now)
                .unwrap_or_else(|e| panic!("a forwarded message is refused: {e}"));
            assert_eq!(reopened, env, "a forwarded message changed");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A received message (gossip, request or response): JSON parse, then the gate, as
/// `swarm/net.rs` does. The message as sent, and re-signed with the fuzz key (so that
/// the checks behind the signature see fuzzed bodies), from no peer, its signer, and
/// another peer, at the node's clock and at one near the message's time.
pub fn wire(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let near = clock_near(&v);
    let signer = v
        .get("signer")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    let mut gate = Gate::default();
    for now in [wire::now_ms(), near] {
        check_open(&mut gate, &v, data.len(), None, now);
        if let Some(s) = &signer {
            check_open(&mut gate, &v, data.len(), Some(s), now);
        }
    }
    let Ok(env) = serde_json::from_value::<Envelope>(v) else {
        return;
    };
    let resigned = fuzz_key().sign(env.payload);
    let bytes = wire::to_bytes(&resigned);
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an envelope is JSON");
    let mut gate = Gate::default();
    let me = fuzz_key().id();
    let other = other_key().id();
    check_open(&mut gate, &v, bytes.len(), Some(&other), near);
    check_open(&mut gate, &v, bytes.len(), Some(&me), near);
    check_open(&mut gate, &v, bytes.len(), None, near);
    check_open(
        &mut gate,
        &v,
        bytes.len(),
        None,
        near.saturating_add(MAX_AGE_MS + 1),
    );
}

// ---------------------------------------------------------------------------------------
// transcript

/// The shape of an outcome computed for `t`'s messages.
fn check_outcomes(o: &transcript::Outcomes, members: usize, answers: usize) {
    assert_eq!(o.scores.len(), answers, "a score per answer");
    assert_eq!(o.rewards.len(), answers, "a reward per answer");
    assert_eq!(o.after.len(), members, "a standing per member");
    assert!(
        o.winner.is_none_or(|w| w < answers),
        "winner {:?}",
        o.winner
    );
    assert_eq!(o.winner.is_some(), answers > 0);
}

/// A round transcript from a peer (or the ledger): JSON parse, `verify`, and the
/// recomputation of its result from its messages, whatever they say. Then the same
/// messages re-signed by the members' nodes and assembled by an honest entry node:
/// that transcript must verify except for problems of the messages themselves, and
/// survive storage (a JSON round trip) unchanged.
pub fn transcript(data: &[u8]) {
    let Ok(t) = serde_json::from_slice::<Transcript>(data) else {
        return;
    };
    let _ = t.verify();
    // Both folds, whatever the transcript's version says: each must stay total.
    let o = transcript::recompute(
        &t.members,
        &t.params,
        &t.answers,
        &t.verdicts,
        &t.calibration,
    );
    check_outcomes(&o, t.members.len(), t.answers.len());
    let v2 = t.recompute();
    assert_eq!(v2.scores.len(), t.answers.len(), "a score per answer");
    assert_eq!(v2.after.len(), t.members.len(), "a standing per member");
    assert!(v2.winner.is_none_or(|w| w < t.answers.len()));
    assert!(v2.candidates.is_empty() || v2.candidates.len() == t.answers.len());

    // An honest entry node's inputs are sane: standings from its ledger (reputation in
    // [0, 1]) and parameters of a plausible configuration.
    let key = fuzz_key();
    let mut members = t.members;
    for (i, m) in members.iter_mut().enumerate() {
        m.key = format!("{}/m{i}", key.id());
        m.before.reputation = m.before.reputation.clamp(0.0, 1.0);
    }
    let mut params = t.params;
    params.clip = params.clip.clamp(0.0, 100.0);
    params.prior = params.prior.clamp(0.0, 100.0);
    params.points = params.points.clamp(0.0, 1e6);
    let r = &mut params.reputation;
    r.alpha = r.alpha.clamp(0.0, 1.0);
    r.initial = r.initial.clamp(0.0, 1.0);
    r.calibration_accuracy = r.calibration_accuracy.clamp(0.0, 1.0);
    let answers: Vec<_> = t.answers.into_iter().map(|a| key.sign(a.payload)).collect();
    let verdicts: Vec<_> = t
        .verdicts
        .into_iter()
        .map(|v| key.sign(v.payload))
        .collect();
    let calibration: Vec<_> = t
        .calibration
        .into_iter()
        .map(|mut c| {
            c.verdict = key.sign(c.verdict.payload);
            c
        })
        .collect();
    let honest = Transcript::assemble(
        key,
        t.id,
        t.prompt,
        t.seed,
        members,
        params,
        answers,
        verdicts,
        calibration,
    );
    check_outcomes(
        &honest.result.payload,
        honest.members.len(),
        honest.answers.len(),
    );
    let problems = honest.verify();
    for p in &problems {
        assert!(
            !(p.starts_with("winner") || p.contains("differ") || p.starts_with("result")),
            "an honestly assembled transcript fails verification: {p} (all: {problems:?})"
        );
    }
    let stored = serde_json::to_vec(&honest).expect("a transcript serializes");
    let loaded: Transcript = serde_json::from_slice(&stored)
        .unwrap_or_else(|e| panic!("a stored transcript cannot be read back: {e}"));
    assert_eq!(
        loaded.verify(),
        problems,
        "verification changed across storage"
    );
}

// ---------------------------------------------------------------------------------------
// chat_request

/// The body of `POST /v1/chat/completions`, parsed and validated as the API does.
pub fn chat_request(data: &[u8]) {
    if let Ok(ask) = apiary::api::parse_chat_request(data) {
        assert!(!ask.prompt.trim().is_empty(), "a blank prompt was accepted");
        assert!((1..=4096).contains(&ask.max_tokens), "{}", ask.max_tokens);
        assert!(
            (0.0..=2.0).contains(&ask.temperature),
            "temperature {}",
            ask.temperature
        );
    }
}
