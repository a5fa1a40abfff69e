//! The WIT `tensor` interface, implemented on [`TensorState`].
//!
//! Tensors live in the state's resource table, inside the plugin's store, so they are
//! freed with the instance at the end of the round at the latest. Every owned tensor
//! counts towards the plugin's host tensor quota (mapped weights do not: the file backs
//! them, shared by every round).
//! A handle the guest does not own cannot be named: the component model checks handles.

use super::TensorState;
use crate::bindings::apiary::plugin::tensor as wit;
use apiary_tensor::gguf::Value;
use apiary_tensor::weights;
use apiary_tensor::{Tensor, TensorError, backend, cpu};
use wasmtime::component::Resource;

/// A weights file as the guest sees it (declared with the bindings, which name it).
pub use crate::bindings::WeightsHandle;

type Ret<T> = wasmtime::Result<Result<T, wit::TensorError>>;

impl From<TensorError> for wit::TensorError {
    fn from(e: TensorError) -> Self {
        match e {
            TensorError::Shape(m) => wit::TensorError::Shape(m),
            TensorError::Dtype(m) => wit::TensorError::Dtype(m),
            TensorError::Quota(m) => wit::TensorError::Quota(m),
            TensorError::NotFound(m) => wit::TensorError::NotFound(m),
            TensorError::InvalidFile(m) => wit::TensorError::InvalidFile(m),
            TensorError::Deadline => wit::TensorError::Deadline,
        }
    }
}

fn dims(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

fn meta(v: Value) -> Option<wit::MetaValue> {
    Some(match v {
        Value::U64(x) => wit::MetaValue::Int(i64::try_from(x).unwrap_or(i64::MAX)),
        Value::I64(x) => wit::MetaValue::Int(x),
        Value::F64(x) => wit::MetaValue::Float(x),
        Value::Bool(b) => wit::MetaValue::Boolean(b),
        Value::Str(s) => wit::MetaValue::Text(s),
        Value::Array(items) => {
            if items.iter().all(|i| matches!(i, Value::Str(_))) {
                wit::MetaValue::Texts(
                    items
                        .into_iter()
                        .filter_map(|i| if let Value::Str(s) = i { Some(s) } else { None })
                        .collect(),
                )
            } else if items
                .iter()
                .all(|i| matches!(i, Value::U64(_) | Value::I64(_)))
            {
                wit::MetaValue::Ints(
                    items
                        .iter()
                        .filter_map(|i| {
                            i.as_u64().map(|u| u as i64).or(if let Value::I64(x) = i {
                                Some(*x)
                            } else {
                                None
                            })
                        })
                        .collect(),
                )
            } else if items.iter().all(|i| i.as_f64().is_some()) {
                wit::MetaValue::Floats(items.iter().filter_map(Value::as_f64).collect())
            } else {
                return None;
            }
        }
    })
}

fn dtype(d: apiary_tensor::DType) -> wit::Dtype {
    use apiary_tensor::DType::*;
    match d {
        F32 => wit::Dtype::F32,
        F16 => wit::Dtype::F16,
        Q4_0 => wit::Dtype::Q40,
        Q4_1 => wit::Dtype::Q41,
        Q8_0 => wit::Dtype::Q80,
        Q4_K => wit::Dtype::Q4K,
        Q6_K => wit::Dtype::Q6K,
    }
}

impl TensorState {
    fn tensor(&self, r: &Resource<Tensor>) -> wasmtime::Result<&Tensor> {
        Ok(self.table.get(r)?)
    }

    /// Store a new tensor if the quota allows.
    fn keep(&mut self, t: apiary_tensor::Result<Tensor>) -> Ret<Resource<Tensor>> {
        let t = match t {
            Ok(t) => t,
            Err(e) => return Ok(Err(e.into())),
        };
        let bytes = t.owned_bytes();
        if self.used + bytes > self.quota {
            return Ok(Err(wit::TensorError::Quota(format!(
                "{} MiB in use, {} MiB more requested, quota {} MiB",
                self.used >> 20,
                bytes >> 20,
                self.quota >> 20
            ))));
        }
        self.used += bytes;
        self.note_peak();
        Ok(Ok(self.table.push(t)?))
    }

    fn unary(
        &mut self,
        x: Resource<Tensor>,
        f: impl FnOnce(&Tensor) -> apiary_tensor::Result<Tensor>,
    ) -> Ret<Resource<Tensor>> {
        let r = f(self.tensor(&x)?);
        self.keep(r)
    }

    fn binary(
        &mut self,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
        f: impl FnOnce(&Tensor, &Tensor) -> apiary_tensor::Result<Tensor>,
    ) -> Ret<Resource<Tensor>> {
        let r = f(self.tensor(&a)?, self.tensor(&b)?);
        self.keep(r)
    }
}

impl wit::HostTensor for TensorState {
    fn from_f32(&mut self, shape: Vec<u32>, data: Vec<f32>) -> Ret<Resource<Tensor>> {
        let t = Tensor::from_f32(dims(&shape), data);
        self.keep(t)
    }

    fn shape(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .tensor(&this)?
            .shape
            .iter()
            .map(|&d| d as u32)
            .collect())
    }

    fn dtype(&mut self, this: Resource<Tensor>) -> wasmtime::Result<wit::Dtype> {
        Ok(dtype(self.tensor(&this)?.dtype))
    }

    fn read(&mut self, this: Resource<Tensor>) -> Ret<Vec<f32>> {
        let budget = self.budget();
        Ok(backend::read(self.tensor(&this)?, budget).map_err(Into::into))
    }

    fn drop(&mut self, this: Resource<Tensor>) -> wasmtime::Result<()> {
        let t = self.table.delete(this)?;
        self.used = self.used.saturating_sub(t.owned_bytes());
        Ok(())
    }
}

impl wit::HostWeights for TensorState {
    fn open(&mut self, name: String) -> Ret<Resource<WeightsHandle>> {
        match weights::open(self.weights_dir.as_deref(), &name) {
            Ok(w) => Ok(Ok(self.table.push(WeightsHandle(w))?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn names(&mut self, this: Resource<WeightsHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&this)?.0.names())
    }

    fn metadata(
        &mut self,
        this: Resource<WeightsHandle>,
        key: String,
    ) -> wasmtime::Result<Option<wit::MetaValue>> {
        Ok(self.table.get(&this)?.0.metadata(&key).and_then(meta))
    }

    fn tensor(&mut self, this: Resource<WeightsHandle>, name: String) -> Ret<Resource<Tensor>> {
        let t = self.table.get(&this)?.0.tensor(&name);
        self.keep(t)
    }

    fn drop(&mut self, this: Resource<WeightsHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit::Host for TensorState {
    fn matmul(
        &mut self,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
        transpose_b: bool,
    ) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.binary(a, b, |a, b| backend::matmul(a, b, transpose_b, budget))
    }

    fn add(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.binary(a, b, |a, b| backend::add(a, b, budget))
    }

    fn mul(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.binary(a, b, |a, b| backend::mul(a, b, budget))
    }

    fn scale(&mut self, a: Resource<Tensor>, factor: f32) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(a, |a| backend::scale(a, factor, budget))
    }

    fn softmax(&mut self, a: Resource<Tensor>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(a, |a| backend::softmax(a, budget))
    }

    fn rms_norm(
        &mut self,
        x: Resource<Tensor>,
        weight: Resource<Tensor>,
        eps: f32,
    ) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.binary(x, weight, |x, w| backend::rms_norm(x, w, eps, budget))
    }

    fn layer_norm(
        &mut self,
        x: Resource<Tensor>,
        weight: Resource<Tensor>,
        bias: Option<Resource<Tensor>>,
        eps: f32,
    ) -> Ret<Resource<Tensor>> {
        let r = {
            let bias = match &bias {
                Some(b) => Some(self.tensor(b)?),
                None => None,
            };
            let budget = self.budget();
            backend::layer_norm(self.tensor(&x)?, self.tensor(&weight)?, bias, eps, budget)
        };
        self.keep(r)
    }

    fn silu(&mut self, x: Resource<Tensor>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(x, |x| backend::silu(x, budget))
    }

    fn gelu(&mut self, x: Resource<Tensor>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(x, |x| backend::gelu(x, budget))
    }

    fn rope(
        &mut self,
        x: Resource<Tensor>,
        pos: u32,
        head_dim: u32,
        base: f32,
        neox: bool,
    ) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(x, |x| {
            backend::rope(x, pos as usize, head_dim as usize, base, neox, budget)
        })
    }

    fn attention(
        &mut self,
        q: Resource<Tensor>,
        k: Resource<Tensor>,
        v: Resource<Tensor>,
        spec: wit::AttentionSpec,
    ) -> Ret<Resource<Tensor>> {
        let spec = cpu::AttentionSpec {
            n_heads: spec.n_heads as usize,
            n_kv_heads: spec.n_kv_heads as usize,
            pos: spec.pos as usize,
            scale: spec.scale,
            window: spec.window as usize,
        };
        let budget = self.budget();
        let r = backend::attention(
            self.tensor(&q)?,
            self.tensor(&k)?,
            self.tensor(&v)?,
            spec,
            budget,
        );
        self.keep(r)
    }

    fn append_rows(&mut self, cache: Resource<Tensor>, x: Resource<Tensor>) -> Ret<()> {
        let budget = self.budget();
        // The rows are copied out first (they may be the cache itself); that copy is paid
        // for like any buffer, and the growth of the cache by the kernel.
        let x = self.tensor(&x)?;
        if let Err(e) = budget.reserve(Some(x.owned_bytes())) {
            return Ok(Err(e.into()));
        }
        let x = x.clone();
        let budget = apiary_tensor::Budget::new(
            budget.deadline(),
            budget.bytes().saturating_sub(x.owned_bytes()),
        );
        let cache = self.table.get_mut(&cache)?;
        let before = cache.owned_bytes();
        let r = backend::append_rows(cache, &x, budget);
        let after = cache.owned_bytes();
        self.used = self.used + after - before.min(after);
        self.note_peak();
        Ok(r.map_err(Into::into))
    }

    fn embedding(&mut self, table: Resource<Tensor>, ids: Vec<u32>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(table, |t| backend::embedding(t, &ids, budget))
    }

    fn slice_rows(&mut self, x: Resource<Tensor>, start: u32, count: u32) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(x, |x| {
            backend::slice_rows(x, start as usize, count as usize, budget)
        })
    }

    fn reshape(&mut self, x: Resource<Tensor>, shape: Vec<u32>) -> Ret<Resource<Tensor>> {
        let budget = self.budget();
        self.unary(x, |x| backend::reshape(x, dims(&shape), budget))
    }

    fn token_logprobs(&mut self, logits: Resource<Tensor>, ids: Vec<u32>) -> Ret<Vec<f32>> {
        let budget = self.budget();
        Ok(backend::token_logprobs(self.tensor(&logits)?, &ids, budget).map_err(Into::into))
    }

    fn argmax(&mut self, x: Resource<Tensor>) -> Ret<u32> {
        let budget = self.budget();
        Ok(backend::argmax(self.tensor(&x)?, budget).map_err(Into::into))
    }

    fn sample(
        &mut self,
        x: Resource<Tensor>,
        temperature: f32,
        top_k: u32,
        top_p: f32,
        seed: u64,
    ) -> Ret<u32> {
        let budget = self.budget();
        Ok(
            backend::sample(self.tensor(&x)?, temperature, top_k, top_p, seed, budget)
                .map_err(Into::into),
        )
    }

    fn backend(&mut self) -> wasmtime::Result<String> {
        Ok(apiary_tensor::backend_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::{Host, HostTensor, HostWeights};

    fn borrow(t: &Resource<Tensor>) -> Resource<Tensor> {
        Resource::new_borrow(t.rep())
    }

    /// The capability works on its own state, with no sandbox or plugin store around it:
    /// the quota is charged and refunded, and weights resolve only in its own folder.
    #[test]
    fn the_tensor_state_alone_serves_the_interface() {
        let mut state = TensorState::new(1 << 10, None);
        let a = HostTensor::from_f32(&mut state, vec![4, 4], vec![1.0; 16])
            .unwrap()
            .unwrap();
        let one = state.used;
        assert!(one > 0);
        let sum = Host::add(&mut state, borrow(&a), borrow(&a))
            .unwrap()
            .unwrap();
        assert_eq!(state.used, 2 * one);
        assert_eq!(
            HostTensor::read(&mut state, borrow(&sum)).unwrap().unwrap(),
            vec![2.0; 16]
        );
        let too_big = HostTensor::from_f32(&mut state, vec![1024], vec![0.0; 1024]).unwrap();
        assert!(
            matches!(too_big, Err(wit::TensorError::Quota(_))),
            "{too_big:?}"
        );
        let missing = HostWeights::open(&mut state, "model.gguf".into()).unwrap();
        assert!(missing.is_err());
        HostTensor::drop(&mut state, a).unwrap();
        HostTensor::drop(&mut state, sum).unwrap();
        assert_eq!(state.used, 0);
        // The high-water mark outlives the tensors, until the next call starts anew.
        assert_eq!(state.peak, 2 * one);
        state.start_peak();
        assert_eq!(state.peak, 0);
    }
}
