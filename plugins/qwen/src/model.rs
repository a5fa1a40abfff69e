//! The qwen2 architecture on the host's tensor kernels, as llama.cpp's `llm_build_qwen2`
//! runs it: pre-norm decoder blocks (RMS norm), grouped-query attention whose Q, K and V
//! projections carry biases, NEOX-style RoPE (pairs `(j, j + d/2)`, base 10⁶), a SwiGLU
//! feed-forward, and an output matrix of its own (not tied to the embeddings).

use apiary_plugin_api::tensor::{self, AttentionSpec, MetadataExt, Tensor, TensorError, Weights};

pub struct Config {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub eps: f32,
    /// The context the model was trained for (32,768).
    pub context: usize,
}

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    bq: Tensor,
    wk: Tensor,
    bk: Tensor,
    wv: Tensor,
    bv: Tensor,
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
        if arch != "qwen2" {
            return Err(TensorError::InvalidFile(format!(
                "architecture {arch}, expected qwen2"
            )));
        }
        let u = |k: &str| {
            w.meta_u64(&format!("qwen2.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| missing(k))
        };
        let dim = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        if heads == 0 || dim % heads != 0 {
            return Err(TensorError::InvalidFile(format!(
                "{dim} wide with {heads} heads"
            )));
        }
        let config = Config {
            layers: u("block_count")?,
            dim,
            heads,
            kv_heads: u("attention.head_count_kv")?,
            head_dim: dim / heads,
            rope_base: w.meta_f32("qwen2.rope.freq_base").unwrap_or(1_000_000.0),
            eps: w
                .meta_f32("qwen2.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-6),
            context: u("context_length")?,
        };
        let t = |name: String| w.tensor(&name);
        let layers = (0..config.layers)
            .map(|i| {
                let b = |n: &str| t(format!("blk.{i}.{n}"));
                Ok(Layer {
                    attn_norm: b("attn_norm.weight")?,
                    wq: b("attn_q.weight")?,
                    bq: b("attn_q.bias")?,
                    wk: b("attn_k.weight")?,
                    bk: b("attn_k.bias")?,
                    wv: b("attn_v.weight")?,
                    bv: b("attn_v.bias")?,
                    wo: b("attn_output.weight")?,
                    ffn_norm: b("ffn_norm.weight")?,
                    gate: b("ffn_gate.weight")?,
                    up: b("ffn_up.weight")?,
                    down: b("ffn_down.weight")?,
                })
            })
            .collect::<Result<Vec<_>, TensorError>>()?;
        let embd = t("token_embd.weight".into())?;
        // Qwen2.5's small models tie the output to the embeddings; this file unties them,
        // but a file without `output.weight` still loads.
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
    /// rows `from..` of `ids` (`ids.len() - 1` for just the next token).
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut Cache,
        from: usize,
    ) -> Result<Tensor, TensorError> {
        let c = &self.config;
        if ids.is_empty() || from >= ids.len() {
            return Err(TensorError::Shape(format!(
                "logits from row {from} of {} tokens",
                ids.len()
            )));
        }
        let pos = cache.len as u32;
        let spec = AttentionSpec {
            n_heads: c.heads as u32,
            n_kv_heads: c.kv_heads as u32,
            pos,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: 0,
        };
        let hd = c.head_dim as u32;
        let mut x = tensor::embedding(&self.embd, ids)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = tensor::rms_norm(&x, &layer.attn_norm, c.eps)?;
            // Biases after the projections, one row broadcast over the tokens.
            let proj = |w: &Tensor, b: &Tensor| tensor::add(&tensor::matmul(&h, w, true)?, b);
            let q = tensor::rope(&proj(&layer.wq, &layer.bq)?, pos, hd, c.rope_base, true)?;
            let k = tensor::rope(&proj(&layer.wk, &layer.bk)?, pos, hd, c.rope_base, true)?;
            let v = proj(&layer.wv, &layer.bv)?;
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
        // Only the rows asked for meet the 151,936-row output matrix.
        let x = if from == 0 {
            x
        } else {
            tensor::slice_rows(&x, from as u32, (ids.len() - from) as u32)?
        };
        let x = tensor::rms_norm(&x, &self.output_norm, c.eps)?;
        tensor::matmul(&x, &self.output, true)
    }
}
