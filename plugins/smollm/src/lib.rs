//! SmolLM2-135M-Instruct as an Apiary specialist.
//!
//! The plugin implements the llama architecture, the GPT-2 byte-level BPE tokenizer
//! (from the GGUF metadata) and the ChatML template in Rust; every heavy operation runs in
//! the host's tensor kernels, and the 98 MB of weights stay memory-mapped on the host.
//!
//! `answer` generates a reply (greedy at temperature 0, else seeded top-k/top-p sampling,
//! `max-tokens` honoured). `compare` judges by likelihood: the candidate whose tokens the
//! model finds more probable (mean log-probability per token) after the question wins,
//! and near-equal scores are a tie; anything stating a quantity is a tie, since
//! likelihood cannot check it. It is a generalist: it volunteers modestly for knowledge
//! and multiple-choice questions and declines arithmetic and free-form questions about
//! quantities, which it is known to get wrong.

use apiary_plugin_api::lm;
use apiary_plugin_api::tensor::{self, MetadataExt, TensorError, Weights};
use apiary_plugin_api::text::without_option_letter;
use apiary_plugin_api::{
    Answer, Manifest, PluginError, Request, Specialist, Verdict, export_specialist,
};

pub mod model;
pub mod tokenizer;

use model::Model;
use tokenizer::Tokenizer;

pub const WEIGHTS_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Mean log-probabilities closer than this are a tie.
const TIE_MARGIN: f32 = 0.05;

/// The model, its tokenizer and chat tokens, loaded from the weights file.
pub struct Engine {
    pub model: Model,
    pub tok: Tokenizer,
    im_start: u32,
    im_end: u32,
    eos: u32,
}

#[derive(Default)]
pub struct SmolLm {
    loaded: lm::Lazy<Engine>,
}

/// Load the model from [`WEIGHTS_FILE`] in the plugin's weights.
pub fn load() -> Result<Engine, TensorError> {
    let w = Weights::open(WEIGHTS_FILE)?;
    let texts = |k: &str| {
        w.meta_texts(k)
            .ok_or_else(|| TensorError::NotFound(format!("metadata {k}")))
    };
    let tok = Tokenizer::new(
        texts("tokenizer.ggml.tokens")?,
        &texts("tokenizer.ggml.merges")?,
        &w.meta_ints("tokenizer.ggml.token_type").unwrap_or_default(),
    );
    let id = |t: &str| {
        tok.id(t)
            .ok_or_else(|| TensorError::NotFound(format!("token {t}")))
    };
    let (im_start, im_end) = (id("<|im_start|>")?, id("<|im_end|>")?);
    let eos = w
        .meta_u64("tokenizer.ggml.eos_token_id")
        .map(|v| v as u32)
        .unwrap_or(im_end);
    Ok(Engine {
        model: Model::load(&w)?,
        tok,
        im_start,
        im_end,
        eos,
    })
}

impl SmolLm {
    fn get(&self) -> Result<&Engine, PluginError> {
        self.loaded.get(WEIGHTS_FILE, load)
    }
}

impl Engine {
    /// ChatML without a system turn: SmolLM2's default system prompt makes the quantized
    /// model worse at short factual answers.
    pub fn chat(&self, prompt: &str) -> Vec<u32> {
        let mut ids = vec![self.im_start];
        ids.extend(self.tok.encode(&format!("user\n{prompt}")));
        ids.push(self.im_end);
        ids.extend(self.tok.encode("\n"));
        ids.push(self.im_start);
        ids.extend(self.tok.encode("assistant\n"));
        ids
    }

    /// Generate a reply: its text and confidence (geometric-mean token probability).
    pub fn generate(&self, req: &Request) -> Result<(String, f32), TensorError> {
        let (ids, confidence) = self.generate_ids(&self.chat(&req.prompt), req)?;
        Ok((self.tok.decode(&ids).trim().to_string(), confidence))
    }

    /// Generate token ids after `prompt` (already templated).
    pub fn generate_ids(
        &self,
        prompt: &[u32],
        req: &Request,
    ) -> Result<(Vec<u32>, f32), TensorError> {
        let budget = (self.model.config.context.saturating_sub(prompt.len()))
            .min(req.max_tokens.max(1) as usize);
        let mut cache = self.model.cache()?;
        let logits = self.model.forward(prompt, &mut cache, false)?;
        lm::generate(
            logits,
            budget,
            req,
            |t| t == self.im_end || t == self.eos,
            |next| self.model.forward(&[next], &mut cache, false),
        )
    }

    /// Mean log-probability of `candidate` as the assistant's reply to `prompt`.
    pub fn score(&self, prompt: &str, candidate: &str) -> Result<f32, TensorError> {
        let context = self.chat(prompt);
        let mut reply = self.tok.encode(candidate);
        reply.push(self.im_end);
        reply.truncate(128);
        let mut ids = context.clone();
        ids.extend(&reply);
        let mut cache = self.model.cache()?;
        let logits = self.model.forward(&ids, &mut cache, true)?;
        // Row i predicts token i + 1: the reply's tokens are predicted by the rows from
        // the last context position on.
        let rows = tensor::slice_rows(&logits, context.len() as u32 - 1, reply.len() as u32)?;
        let lp = tensor::token_logprobs(&rows, &reply)?;
        Ok(lp.iter().sum::<f32>() / lp.len() as f32)
    }
}

impl Specialist for SmolLm {
    fn describe(&self, base: Manifest) -> Manifest {
        Manifest {
            domains: vec!["general".into(), "chat".into(), "knowledge".into()],
            ..base
        }
    }

    fn assess(&self, req: &Request, _domains: &[String]) -> f32 {
        // Free-form below gemma: on every knowledge set `apiary eval` measured, smollm is
        // the weaker of the two language models.
        lm::assess(req, 0.55, 0.5)
    }

    fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
        let loaded = self.get()?;
        if !req.choices.is_empty() {
            // Multiple choice: the option the model finds most likely as its reply. A
            // 135M model picks letters at random; it ranks option texts rather better.
            let scores = req
                .choices
                .iter()
                .map(|c| loaded.score(&req.prompt, c))
                .collect::<Result<Vec<f32>, _>>()?;
            if let Some(answer) = lm::best_option(&req.choices, &scores, 0.9) {
                return Ok(answer);
            }
        }
        let (text, confidence) = loaded.generate(req)?;
        if text.is_empty() {
            return Err(PluginError::Internal("the model produced no text".into()));
        }
        Ok(Answer::new(text, confidence.min(0.6)))
    }

    fn compare(&self, prompt: &str, first: &str, second: &str) -> Verdict {
        // Likelihood cannot check a quantity: abstain rather than guess.
        if lm::abstains(prompt, first, second) {
            return Verdict::Tie;
        }
        let Ok(loaded) = self.get() else {
            return Verdict::Tie;
        };
        let (first, second) = (without_option_letter(first), without_option_letter(second));
        match (loaded.score(prompt, first), loaded.score(prompt, second)) {
            (Ok(a), Ok(b)) if a > b + TIE_MARGIN => Verdict::First,
            (Ok(a), Ok(b)) if b > a + TIE_MARGIN => Verdict::Second,
            _ => Verdict::Tie,
        }
    }
}

export_specialist!(SmolLm);
