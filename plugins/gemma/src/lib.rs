//! Gemma 3 270M as an Apiary specialist.
//!
//! A second language model on the same host kernels as `smollm`, with a different
//! architecture (see [`model`]) and tokenizer (SentencePiece, see [`tokenizer`]). The
//! weights are Google's base (pre-trained, not instruction-tuned) model in GGUF Q4_K_M,
//! so the plugin prompts it the way one prompts a base model: a short few-shot
//! `Question: … / Answer: …` preamble, and the reply ends at the first line break.
//!
//! - `answer`: multiple-choice requests get the option the model finds most likely as the
//!   answer (scored after one shared pass over the prompt); other requests get a
//!   generated one-line answer (greedy at temperature 0, seeded sampling otherwise).
//! - `compare`: the candidate the model finds more likely as the answer wins; close
//!   scores are a tie. Anything stating a quantity is judged `tie`: a 270M model cannot
//!   check it.
//! - `assess`: volunteers for knowledge and multiple-choice questions, declines
//!   arithmetic and free-form questions about quantities (it gets them wrong, and saying
//!   so keeps it out of those rounds).

use apiary_plugin_api::lm;
use apiary_plugin_api::tensor::{self, MetadataExt, TensorError, Weights};
use apiary_plugin_api::text::without_option_letter;
use apiary_plugin_api::{
    Answer, Manifest, PluginError, Request, Specialist, Verdict, export_specialist,
};

pub mod model;
pub mod tokenizer;

use model::{Cache, Model};
use tokenizer::Tokenizer;

pub const WEIGHTS_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// Mean log-probabilities closer than this are a tie.
const TIE_MARGIN: f32 = 0.1;
/// Candidates are scored on at most this many tokens.
const MAX_SCORED_TOKENS: usize = 96;

/// Teaches the base model the answer format: short, one line.
const PREAMBLE: &str = "Question: What is the capital of Italy?\nAnswer: Rome\n\n\
Question: Which gas do plants take in from the air to make food?\nAnswer: carbon dioxide\n\n";

/// The model and its tokenizer, loaded from the weights file.
pub struct Engine {
    pub model: Model,
    pub tok: Tokenizer,
    bos: u32,
    eos: u32,
    /// `\n\n`, which ends each answer of the preamble.
    end_of_answer: Option<u32>,
}

#[derive(Default)]
pub struct Gemma {
    loaded: lm::Lazy<Engine>,
}

/// Load the model from [`WEIGHTS_FILE`] in the plugin's weights.
pub fn load() -> Result<Engine, TensorError> {
    let w = Weights::open(WEIGHTS_FILE)?;
    let need = |k: &str| TensorError::NotFound(format!("metadata {k}"));
    let tokens = w
        .meta_texts("tokenizer.ggml.tokens")
        .ok_or_else(|| need("tokenizer.ggml.tokens"))?;
    let scores = w
        .meta_floats("tokenizer.ggml.scores")
        .ok_or_else(|| need("tokenizer.ggml.scores"))?
        .into_iter()
        .map(|s| s as f32)
        .collect();
    let types = w.meta_ints("tokenizer.ggml.token_type").unwrap_or_default();
    let tok = Tokenizer::new(tokens, scores, types);
    let id = |k: &str, default: u32| w.meta_u64(k).map(|v| v as u32).unwrap_or(default);
    Ok(Engine {
        bos: id("tokenizer.ggml.bos_token_id", 2),
        eos: id("tokenizer.ggml.eos_token_id", 1),
        end_of_answer: tok.id("\n\n"),
        model: Model::load(&w)?,
        tok,
    })
}

impl Gemma {
    fn get(&self) -> Result<&Engine, PluginError> {
        self.loaded.get(WEIGHTS_FILE, load)
    }
}

impl Engine {
    /// BOS, the preamble and the question, ending at `Answer:`.
    pub fn prompt(&self, question: &str) -> Vec<u32> {
        let mut ids = vec![self.bos];
        ids.extend(
            self.tok
                .encode(&format!("{PREAMBLE}Question: {}\nAnswer:", question.trim())),
        );
        ids
    }

    /// Generate a one-line answer: its text and confidence (geometric-mean token
    /// probability).
    pub fn generate(&self, req: &Request) -> Result<(String, f32), TensorError> {
        let prompt = self.prompt(&req.prompt);
        let (ids, confidence) = self.generate_ids(&prompt, req)?;
        Ok((self.tok.decode(&ids).trim().to_string(), confidence))
    }

    /// Generate token ids after `prompt`, stopping at a line break or end of text.
    pub fn generate_ids(
        &self,
        prompt: &[u32],
        req: &Request,
    ) -> Result<(Vec<u32>, f32), TensorError> {
        let budget = (self.model.config.context.saturating_sub(prompt.len()))
            .min(req.max_tokens.max(1) as usize);
        let mut cache = self.model.cache()?;
        let logits = self.model.forward(prompt, &mut cache, prompt.len() - 1)?;
        lm::generate(
            logits,
            budget,
            req,
            |t| t == self.eos || self.tok.decode(&[t]).contains('\n'),
            |next| self.model.forward(&[next], &mut cache, 0),
        )
    }

    /// Mean log-probability per token of each of `candidates` as the answer to
    /// `question`. The prompt is run once; each candidate continues a copy of its cache.
    pub fn scores(&self, question: &str, candidates: &[&str]) -> Result<Vec<f32>, TensorError> {
        let prompt = self.prompt(question);
        let mut cache = self.model.cache()?;
        let last = self.model.forward(&prompt, &mut cache, prompt.len() - 1)?;
        candidates
            .iter()
            .map(|c| {
                let mut ids = self.tok.encode(&format!(" {}", c.trim()));
                ids.truncate(MAX_SCORED_TOKENS);
                ids.extend(self.end_of_answer);
                // The prompt's last row predicts the first token; the candidate's own
                // rows predict the rest.
                let mut lp = tensor::token_logprobs(&last, &ids[..1])?;
                if ids.len() > 1 {
                    let mut fork: Cache = cache.fork()?;
                    let rows = self.model.forward(&ids[..ids.len() - 1], &mut fork, 0)?;
                    lp.extend(tensor::token_logprobs(&rows, &ids[1..])?);
                }
                Ok(lp.iter().sum::<f32>() / lp.len() as f32)
            })
            .collect()
    }
}

impl Specialist for Gemma {
    fn describe(&self, base: Manifest) -> Manifest {
        Manifest {
            domains: vec!["general".into(), "knowledge".into(), "science".into()],
            ..base
        }
    }

    fn assess(&self, req: &Request, _domains: &[String]) -> f32 {
        lm::assess(req, 0.6, 0.55)
    }

    fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
        let engine = self.get()?;
        if !req.choices.is_empty() {
            let options: Vec<&str> = req.choices.iter().map(String::as_str).collect();
            let scores = engine.scores(&req.prompt, &options)?;
            return lm::best_option(&req.choices, &scores, 0.9)
                .ok_or_else(|| PluginError::InvalidRequest("no options".into()));
        }
        let (text, confidence) = engine.generate(req)?;
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
        let Ok(engine) = self.get() else {
            return Verdict::Tie;
        };
        let pair = [without_option_letter(first), without_option_letter(second)];
        match engine.scores(prompt, &pair).as_deref() {
            Ok([a, b]) if *a > b + TIE_MARGIN => Verdict::First,
            Ok([a, b]) if *b > a + TIE_MARGIN => Verdict::Second,
            _ => Verdict::Tie,
        }
    }
}

export_specialist!(Gemma);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declines_arithmetic() {
        let g = Gemma::default();
        let req = |p: &str| Request {
            prompt: p.into(),
            domain: None,
            choices: vec![],
            max_tokens: 8,
            temperature: 0.0,
            seed: 0,
        };
        assert!(g.assess(&req("What is 12 * 7?"), &[]) < 0.5);
        assert!(g.assess(&req("What is the capital of Peru?"), &[]) >= 0.5);
    }
}
