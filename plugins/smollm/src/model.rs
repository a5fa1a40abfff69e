//! The llama architecture on the host's tensor kernels: every matrix product, norm and
//! attention runs on the host; the guest only sequences the calls and keeps handles.

use apiary_plugin_api::tensor::{self, AttentionSpec, MetadataExt, Tensor, TensorError, Weights};

pub struct Config {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub eps: f32,
    pub context: usize,
}

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

pub struct Model {
    pub config: Config,
    embd: Tensor,
    output_norm: Tensor,
    output: Tensor,
    layers: Vec<Layer>,
}

/// The decoder's key/value caches (shared with the other language-model plugins).
pub use apiary_plugin_api::lm::KvCache as Cache;

fn missing(key: &str) -> TensorError {
    TensorError::NotFound(format!("metadata {key}"))
}

impl Model {
    pub fn load(w: &Weights) -> Result<Model, TensorError> {
        let arch = w
            .meta_str("general.architecture")
            .ok_or_else(|| missing("general.architecture"))?;
        if arch != "llama" {
            return Err(TensorError::InvalidFile(format!(
                "architecture {arch}, expected llama"
            )));
        }
        let u = |k: &str| {
            w.meta_u64(&format!("llama.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| missing(k))
        };
        let dim = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        let config = Config {
            layers: u("block_count")?,
            dim,
            heads,
            kv_heads: u("attention.head_count_kv")?,
            head_dim: dim / heads,
            rope_base: w.meta_f32("llama.rope.freq_base").unwrap_or(10_000.0),
            eps: w
                .meta_f32("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            context: u("context_length")?,
        };
        let t = |name: String| w.tensor(&name);
        let layers = (0..config.layers)
            .map(|i| {
                Ok(Layer {
                    attn_norm: t(format!("blk.{i}.attn_norm.weight"))?,
                    wq: t(format!("blk.{i}.attn_q.weight"))?,
                    wk: t(format!("blk.{i}.attn_k.weight"))?,
                    wv: t(format!("blk.{i}.attn_v.weight"))?,
                    wo: t(format!("blk.{i}.attn_output.weight"))?,
                    ffn_norm: t(format!("blk.{i}.ffn_norm.weight"))?,
                    gate: t(format!("blk.{i}.ffn_gate.weight"))?,
                    up: t(format!("blk.{i}.ffn_up.weight"))?,
                    down: t(format!("blk.{i}.ffn_down.weight"))?,
                })
            })
            .collect::<Result<Vec<_>, TensorError>>()?;
        let embd = t("token_embd.weight".into())?;
        // Tied embeddings: without an output matrix the embedding table is the output.
        let output = w
            .tensor("output.weight")
            .or_else(|_| t("token_embd.weight".into()))?;
        Ok(Model {
            config,
            embd,
            output_norm: t("output_norm.weight".into())?,
            output,
            layers,
        })
    }

    pub fn cache(&self) -> Result<Cache, TensorError> {
        Cache::new(
            self.config.layers,
            self.config.kv_heads * self.config.head_dim,
        )
    }

    /// Run `ids` at positions `cache.len..`, extend the cache, and return the logits of
    /// the last row (or of every row with `all_rows`).
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut Cache,
        all_rows: bool,
    ) -> Result<Tensor, TensorError> {
        let c = &self.config;
        let pos = cache.len as u32;
        let spec = AttentionSpec {
            n_heads: c.heads as u32,
            n_kv_heads: c.kv_heads as u32,
            pos,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: 0,
        };
        let mut x = tensor::embedding(&self.embd, ids)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = tensor::rms_norm(&x, &layer.attn_norm, c.eps)?;
            let q = tensor::rope(
                &tensor::matmul(&h, &layer.wq, true)?,
                pos,
                c.head_dim as u32,
                c.rope_base,
                false,
            )?;
            let k = tensor::rope(
                &tensor::matmul(&h, &layer.wk, true)?,
                pos,
                c.head_dim as u32,
                c.rope_base,
                false,
            )?;
            let v = tensor::matmul(&h, &layer.wv, true)?;
            tensor::append_rows(&cache.k[l], &k)?;
            tensor::append_rows(&cache.v[l], &v)?;
            let a = tensor::attention(&q, &cache.k[l], &cache.v[l], spec)?;
            x = tensor::add(&x, &tensor::matmul(&a, &layer.wo, true)?)?;
            let h = tensor::rms_norm(&x, &layer.ffn_norm, c.eps)?;
            let g = tensor::silu(&tensor::matmul(&h, &layer.gate, true)?)?;
            let u = tensor::matmul(&h, &layer.up, true)?;
            x = tensor::add(
                &x,
                &tensor::matmul(&tensor::mul(&g, &u)?, &layer.down, true)?,
            )?;
        }
        cache.len += ids.len();
        let x = if all_rows {
            x
        } else {
            tensor::slice_rows(&x, ids.len() as u32 - 1, 1)?
        };
        let x = tensor::rms_norm(&x, &self.output_norm, c.eps)?;
        tensor::matmul(&x, &self.output, true)
    }
}
