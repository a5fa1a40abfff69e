//! The Gemma 3 architecture on the host's tensor kernels.
//!
//! What differs from llama (and so what this plugin proves the kernel API covers):
//! - embeddings scaled by √dim, and tied to the output projection;
//! - four RMS norms per layer: before and after attention, before and after the MLP
//!   (llama.cpp's converter has already folded Gemma's `1 + w` into the stored weights);
//! - RMS norms of each query and key head (QK-norm) before RoPE;
//! - GeGLU: `gelu(gate) · up`, with the tanh approximation;
//! - five sliding-window layers (512 positions, RoPE base 10⁴) to one global layer
//!   (RoPE base 10⁶), one key/value head shared by all query heads, head width 256.

use apiary_plugin_api::tensor::{self, AttentionSpec, MetadataExt, Tensor, TensorError, Weights};

pub struct Config {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub context: usize,
    /// RoPE base of the global layers; the sliding-window layers use [`LOCAL_ROPE_BASE`].
    pub rope_base: f32,
    pub window: usize,
}

/// Gemma 3's fixed RoPE base for sliding-window layers (not stored in the GGUF file).
const LOCAL_ROPE_BASE: f32 = 10_000.0;
/// Every sixth layer attends globally (llama.cpp's `set_swa_pattern(6)` for gemma3).
const GLOBAL_EVERY: usize = 6;

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    q_norm: Tensor,
    wk: Tensor,
    k_norm: Tensor,
    wv: Tensor,
    wo: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    post_ffn_norm: Tensor,
}

pub struct Model {
    pub config: Config,
    embd: Tensor,
    output_norm: Tensor,
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
        if arch != "gemma3" {
            return Err(TensorError::InvalidFile(format!(
                "architecture {arch}, expected gemma3"
            )));
        }
        let u = |k: &str| {
            w.meta_u64(&format!("gemma3.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| missing(k))
        };
        let heads = u("attention.head_count")?;
        let config = Config {
            layers: u("block_count")?,
            dim: u("embedding_length")?,
            heads,
            kv_heads: u("attention.head_count_kv")?,
            head_dim: u("attention.key_length")?,
            eps: w
                .meta_f32("gemma3.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-6),
            context: u("context_length")?,
            rope_base: w.meta_f32("gemma3.rope.freq_base").unwrap_or(1_000_000.0),
            window: u("attention.sliding_window").unwrap_or(512),
        };
        let t = |name: String| w.tensor(&name);
        let layers = (0..config.layers)
            .map(|i| {
                Ok(Layer {
                    attn_norm: t(format!("blk.{i}.attn_norm.weight"))?,
                    wq: t(format!("blk.{i}.attn_q.weight"))?,
                    q_norm: t(format!("blk.{i}.attn_q_norm.weight"))?,
                    wk: t(format!("blk.{i}.attn_k.weight"))?,
                    k_norm: t(format!("blk.{i}.attn_k_norm.weight"))?,
                    wv: t(format!("blk.{i}.attn_v.weight"))?,
                    wo: t(format!("blk.{i}.attn_output.weight"))?,
                    post_attn_norm: t(format!("blk.{i}.post_attention_norm.weight"))?,
                    ffn_norm: t(format!("blk.{i}.ffn_norm.weight"))?,
                    gate: t(format!("blk.{i}.ffn_gate.weight"))?,
                    up: t(format!("blk.{i}.ffn_up.weight"))?,
                    down: t(format!("blk.{i}.ffn_down.weight"))?,
                    post_ffn_norm: t(format!("blk.{i}.post_ffw_norm.weight"))?,
                })
            })
            .collect::<Result<Vec<_>, TensorError>>()?;
        Ok(Model {
            config,
            embd: t("token_embd.weight".into())?,
            output_norm: t("output_norm.weight".into())?,
            layers,
        })
    }

    pub fn cache(&self) -> Result<Cache, TensorError> {
        Cache::new(
            self.config.layers,
            self.config.kv_heads * self.config.head_dim,
        )
    }

    /// RMS-normalise each head of `x` (`[n, heads·head_dim]`) with `weight`.
    fn head_norm(&self, x: &Tensor, weight: &Tensor, heads: usize) -> Result<Tensor, TensorError> {
        let c = &self.config;
        let n = x.shape()[0];
        let per_head = tensor::reshape(x, &[n * heads as u32, c.head_dim as u32])?;
        let normed = tensor::rms_norm(&per_head, weight, c.eps)?;
        tensor::reshape(&normed, &[n, (heads * c.head_dim) as u32])
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
        let mut x = tensor::scale(&tensor::embedding(&self.embd, ids)?, (c.dim as f32).sqrt())?;
        for (l, layer) in self.layers.iter().enumerate() {
            let global = (l + 1) % GLOBAL_EVERY == 0;
            let (base, window) = if global {
                (c.rope_base, 0)
            } else {
                (LOCAL_ROPE_BASE, c.window as u32)
            };
            let h = tensor::rms_norm(&x, &layer.attn_norm, c.eps)?;
            let q = self.head_norm(
                &tensor::matmul(&h, &layer.wq, true)?,
                &layer.q_norm,
                c.heads,
            )?;
            let k = self.head_norm(
                &tensor::matmul(&h, &layer.wk, true)?,
                &layer.k_norm,
                c.kv_heads,
            )?;
            let q = tensor::rope(&q, pos, c.head_dim as u32, base, true)?;
            let k = tensor::rope(&k, pos, c.head_dim as u32, base, true)?;
            let v = tensor::matmul(&h, &layer.wv, true)?;
            tensor::append_rows(&cache.k[l], &k)?;
            tensor::append_rows(&cache.v[l], &v)?;
            let spec = AttentionSpec {
                n_heads: c.heads as u32,
                n_kv_heads: c.kv_heads as u32,
                pos,
                scale: 1.0 / (c.head_dim as f32).sqrt(),
                window,
            };
            let a = tensor::attention(&q, &cache.k[l], &cache.v[l], spec)?;
            let a = tensor::rms_norm(
                &tensor::matmul(&a, &layer.wo, true)?,
                &layer.post_attn_norm,
                c.eps,
            )?;
            x = tensor::add(&x, &a)?;
            let h = tensor::rms_norm(&x, &layer.ffn_norm, c.eps)?;
            let g = tensor::gelu(&tensor::matmul(&h, &layer.gate, true)?)?;
            let u = tensor::matmul(&h, &layer.up, true)?;
            let f = tensor::rms_norm(
                &tensor::matmul(&tensor::mul(&g, &u)?, &layer.down, true)?,
                &layer.post_ffn_norm,
                c.eps,
            )?;
            x = tensor::add(&x, &f)?;
        }
        cache.len += ids.len();
        // Only the rows asked for meet the 262,144-row output matrix.
        let x = tensor::slice_rows(&x, from as u32, (ids.len() - from) as u32)?;
        let x = tensor::rms_norm(&x, &self.output_norm, c.eps)?;
        tensor::matmul(&x, &self.embd, true)
    }
}
