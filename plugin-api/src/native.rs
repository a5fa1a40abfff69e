//! The tensor API for native builds: the same signatures as the WIT bindings, run
//! in-process on `apiary-tensor`'s kernels.

use crate::bindings::apiary::plugin::tensor::{AttentionSpec, Dtype, MetaValue, TensorError};
use apiary_tensor as k;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn err(e: k::TensorError) -> TensorError {
    match e {
        k::TensorError::Shape(m) => TensorError::Shape(m),
        k::TensorError::Dtype(m) => TensorError::Dtype(m),
        k::TensorError::Quota(m) => TensorError::Quota(m),
        k::TensorError::NotFound(m) => TensorError::NotFound(m),
        k::TensorError::InvalidFile(m) => TensorError::InvalidFile(m),
        k::TensorError::Deadline => TensorError::Deadline,
    }
}

type R<T> = Result<T, TensorError>;

/// A tensor held in-process (the wasm build holds a host handle instead).
pub struct Tensor(RefCell<k::Tensor>);

fn wrap(t: k::Result<k::Tensor>) -> R<Tensor> {
    t.map(|t| Tensor(RefCell::new(t))).map_err(err)
}

fn dims(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

impl Tensor {
    pub fn from_f32(shape: &[u32], data: &[f32]) -> R<Tensor> {
        wrap(k::Tensor::from_f32(dims(shape), data.to_vec()))
    }

    pub fn shape(&self) -> Vec<u32> {
        self.0.borrow().shape.iter().map(|&d| d as u32).collect()
    }

    pub fn dtype(&self) -> Dtype {
        match self.0.borrow().dtype {
            k::DType::F32 => Dtype::F32,
            k::DType::F16 => Dtype::F16,
            k::DType::Q4_0 => Dtype::Q40,
            k::DType::Q4_1 => Dtype::Q41,
            k::DType::Q8_0 => Dtype::Q80,
            k::DType::Q4_K => Dtype::Q4K,
            k::DType::Q6_K => Dtype::Q6K,
        }
    }

    pub fn read(&self) -> R<Vec<f32>> {
        k::backend::read(&self.0.borrow(), NO_DEADLINE).map_err(err)
    }
}

static WEIGHTS_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Native builds only: the folder [`Weights::open`] reads from (what the host mounts as a
/// plugin's `weights/`). Defaults to `$APIARY_WEIGHTS_DIR`.
pub fn set_weights_dir(dir: impl Into<PathBuf>) {
    *WEIGHTS_DIR.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.into());
}

/// A weights file from the folder set by [`set_weights_dir`] (or `$APIARY_WEIGHTS_DIR`).
pub struct Weights(Arc<k::weights::WeightsFile>);

impl Weights {
    pub fn open(name: &str) -> R<Weights> {
        let dir = WEIGHTS_DIR
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .or_else(|| std::env::var_os("APIARY_WEIGHTS_DIR").map(PathBuf::from));
        k::weights::open(dir.as_deref(), name)
            .map(Weights)
            .map_err(err)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.names()
    }

    pub fn metadata(&self, key: &str) -> Option<MetaValue> {
        use k::gguf::Value;
        Some(match self.0.metadata(key)? {
            Value::U64(x) => MetaValue::Int(i64::try_from(x).unwrap_or(i64::MAX)),
            Value::I64(x) => MetaValue::Int(x),
            Value::F64(x) => MetaValue::Float(x),
            Value::Bool(b) => MetaValue::Boolean(b),
            Value::Str(s) => MetaValue::Text(s),
            Value::Array(items) => {
                if items.iter().all(|i| matches!(i, Value::Str(_))) {
                    MetaValue::Texts(
                        items
                            .into_iter()
                            .filter_map(|i| i.as_str().map(str::to_string))
                            .collect(),
                    )
                } else if items
                    .iter()
                    .all(|i| matches!(i, Value::U64(_) | Value::I64(_)))
                {
                    MetaValue::Ints(
                        items
                            .iter()
                            .map(|i| {
                                if let Value::I64(x) = i {
                                    *x
                                } else {
                                    i.as_u64().unwrap_or(0) as i64
                                }
                            })
                            .collect(),
                    )
                } else {
                    MetaValue::Floats(items.iter().filter_map(Value::as_f64).collect())
                }
            }
        })
    }

    pub fn tensor(&self, name: &str) -> R<Tensor> {
        wrap(self.0.tensor(name))
    }
}

/// Native model code runs unbudgeted: no deadline, no quota (it is not sandboxed).
const NO_DEADLINE: k::Budget = k::Budget::NONE;

pub fn matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> R<Tensor> {
    wrap(k::backend::matmul(
        &a.0.borrow(),
        &b.0.borrow(),
        transpose_b,
        NO_DEADLINE,
    ))
}
pub fn add(a: &Tensor, b: &Tensor) -> R<Tensor> {
    wrap(k::backend::add(&a.0.borrow(), &b.0.borrow(), NO_DEADLINE))
}
pub fn mul(a: &Tensor, b: &Tensor) -> R<Tensor> {
    wrap(k::backend::mul(&a.0.borrow(), &b.0.borrow(), NO_DEADLINE))
}
pub fn scale(a: &Tensor, factor: f32) -> R<Tensor> {
    wrap(k::backend::scale(&a.0.borrow(), factor, NO_DEADLINE))
}
pub fn softmax(a: &Tensor) -> R<Tensor> {
    wrap(k::backend::softmax(&a.0.borrow(), NO_DEADLINE))
}
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> R<Tensor> {
    wrap(k::backend::rms_norm(
        &x.0.borrow(),
        &weight.0.borrow(),
        eps,
        NO_DEADLINE,
    ))
}
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> R<Tensor> {
    let bias = bias.map(|b| b.0.borrow());
    wrap(k::backend::layer_norm(
        &x.0.borrow(),
        &weight.0.borrow(),
        bias.as_deref(),
        eps,
        NO_DEADLINE,
    ))
}
pub fn silu(x: &Tensor) -> R<Tensor> {
    wrap(k::backend::silu(&x.0.borrow(), NO_DEADLINE))
}
pub fn gelu(x: &Tensor) -> R<Tensor> {
    wrap(k::backend::gelu(&x.0.borrow(), NO_DEADLINE))
}
pub fn rope(x: &Tensor, pos: u32, head_dim: u32, base: f32, neox: bool) -> R<Tensor> {
    wrap(k::backend::rope(
        &x.0.borrow(),
        pos as usize,
        head_dim as usize,
        base,
        neox,
        NO_DEADLINE,
    ))
}
pub fn attention(q: &Tensor, kc: &Tensor, vc: &Tensor, spec: AttentionSpec) -> R<Tensor> {
    let spec = k::cpu::AttentionSpec {
        n_heads: spec.n_heads as usize,
        n_kv_heads: spec.n_kv_heads as usize,
        pos: spec.pos as usize,
        scale: spec.scale,
        window: spec.window as usize,
    };
    wrap(k::backend::attention(
        &q.0.borrow(),
        &kc.0.borrow(),
        &vc.0.borrow(),
        spec,
        NO_DEADLINE,
    ))
}
pub fn append_rows(cache: &Tensor, x: &Tensor) -> R<()> {
    let x = x.0.borrow().clone();
    k::backend::append_rows(&mut cache.0.borrow_mut(), &x, NO_DEADLINE).map_err(err)
}
pub fn embedding(table: &Tensor, ids: &[u32]) -> R<Tensor> {
    wrap(k::backend::embedding(&table.0.borrow(), ids, NO_DEADLINE))
}
pub fn slice_rows(x: &Tensor, start: u32, count: u32) -> R<Tensor> {
    wrap(k::backend::slice_rows(
        &x.0.borrow(),
        start as usize,
        count as usize,
        NO_DEADLINE,
    ))
}
pub fn reshape(x: &Tensor, shape: &[u32]) -> R<Tensor> {
    wrap(k::backend::reshape(&x.0.borrow(), dims(shape), NO_DEADLINE))
}
pub fn token_logprobs(logits: &Tensor, ids: &[u32]) -> R<Vec<f32>> {
    k::backend::token_logprobs(&logits.0.borrow(), ids, NO_DEADLINE).map_err(err)
}
pub fn argmax(x: &Tensor) -> R<u32> {
    k::backend::argmax(&x.0.borrow(), NO_DEADLINE).map_err(err)
}
pub fn sample(x: &Tensor, temperature: f32, top_k: u32, top_p: f32, seed: u64) -> R<u32> {
    k::backend::sample(&x.0.borrow(), temperature, top_k, top_p, seed, NO_DEADLINE).map_err(err)
}
pub fn backend() -> String {
    format!("native {}", k::backend_name())
}
