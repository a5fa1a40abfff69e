//! Gemma 3 270M as an Apiary specialist.
//!
//! A second language model on the same host kernels as `smollm`, with a different
//! architecture (see [`model`]) and tokenizer (SentencePiece, see [`tokenizer`]). The
//! weights are Google's base (pre-trained, not instruction-tuned) model in GGUF Q4_K_M,
//! so the plugin prompts it the way one prompts a base model: a short few-shot
//! `Question: … / Answer: …` preamble, and the reply ends at the first line break.
//!
//! - `answer`: multiple-choice requests get the option the model finds most likely as the
//!   answer under the scoring rule below (scored after one shared pass over the prompt),
//!   with every option's score (`option-scores`) and, as confidence, the chosen option's
//!   share of the options' likelihoods; other requests get a generated one-line answer
//!   (greedy at temperature 0, seeded sampling otherwise).
//! - `judge`: by likelihood. Two options of a multiple-choice question are compared by
//!   the same rule (the preference is the first's share of the two likelihoods); two
//!   free-form answers by mean log-probability per token as the answer; close scores
//!   abstain. It abstains on free-form answers where anything states a quantity, and on
//!   multiple-choice arithmetic: a 270M model cannot check either ([`lm::judge`]).
//! - `assess`: volunteers for knowledge questions and every multiple-choice question,
//!   declines free-form arithmetic and free-form questions about quantities (it gets them
//!   wrong, and saying so keeps it out of those rounds).
//!
//! # Multiple choice: the scoring rule
//!
//! Each option is scored cloze-style, as the text after `Answer:` (the options not
//! shown). The rule ([`rule`], from [`lm::Rule`]) is **PMI** for every multiple-choice
//! question: the option's log-probability after the question minus its log-probability
//! after the neutral prompt `Answer:` (one more short pass per option), the end of the
//! answer (`\n\n`) included.
//!
//! Measured with `examples/gemma_scoring_grid.rs` on the development sample (seed 1:
//! the 100 items per dataset that `apiary eval --seed 1 --limit 100` takes), accuracy in
//! %; `+end` scores the end of the answer too, `letters` lists the options and scores the
//! letter (the multiple-choice formulation, after one worked example):
//!
//! | dataset | sum | per-token | per-char | pmi | sum+end | per-token+end | per-char+end | pmi+end | letters |
//! |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|
//! | ARC-Easy | 64 | 63 | 58 | 52 | **65** | **65** | 57 | 51 | 22 |
//! | ARC-Challenge | 23 | 27 | 22 | **32** | 24 | 28 | 23 | 31 | 27 |
//! | MMLU | 30 | 23 | 23 | **40** | 31 | 25 | 21 | 39 | 23 |
//! | BoolQ (yes/no) | 54 | 54 | 55 | 51 | 54 | 54 | 55 | 55 | 43 |
//!
//! The plugin used per-token+end (25 % on MMLU, near chance). A request does not say
//! which set it is from, so one rule serves all questions with three or more options:
//! PMI is the best on ARC-Challenge and MMLU (+9 and +8 points over per-token+end) and
//! the best on average over the three four-option sets (41.3 without the end, 40.3 with
//! it, the sum 39.0), though it loses 13 points on ARC-Easy, where the plain likelihood
//! of the right option is already high. OLMES's per-character default is the worst of
//! the cloze rules here, and the letters are at chance (a 270M base model does not map an
//! option to its letter). On BoolQ no rule beats always answering "yes" (56 % of
//! the sample): every rule but PMI answers "yes" to 92 to 99 questions of 100; PMI+end
//! is within a point of the best (55) and answers "yes" to 61. With N = 100 a difference of a few points is noise (a 95 % interval is ±9).

use apiary_plugin_api::lm;
use apiary_plugin_api::tensor::{self, MetadataExt, TensorError, Weights};
use apiary_plugin_api::{
    Answer, Judgment, Manifest, PluginError, Request, Specialist, export_specialist,
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

/// The example before a question in the multiple-choice formulation.
const LETTER_PREAMBLE: &str = "Question: What is the capital of Italy?\nA. Paris\nB. Rome\n\
C. Madrid\nD. Berlin\nAnswer: B\n\n";

/// The scoring rule for multiple-choice questions with three or more options (see
/// the module doc for the measurement).
pub const OPTIONS_RULE: lm::Rule = lm::Rule::Pmi;

/// The scoring rule for a multiple-choice request: PMI for yes/no, else
/// [`OPTIONS_RULE`].
pub fn rule(req: &Request) -> lm::Rule {
    lm::Rule::for_request(req, OPTIONS_RULE)
}

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
    /// `question` (the end of the answer included): the judge's score.
    pub fn scores(&self, question: &str, candidates: &[&str]) -> Result<Vec<f32>, TensorError> {
        Ok(self
            .option_logprobs(question, candidates)?
            .iter()
            .map(|lp| lp.iter().sum::<f32>() / lp.len().max(1) as f32)
            .collect())
    }

    /// The log-probabilities of each of `continuations` after `context`, token by token:
    /// the context is run once, and each continuation extends a copy of its cache.
    pub fn continuation_logprobs(
        &self,
        context: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>, TensorError> {
        let mut cache = self.model.cache()?;
        let last = self.model.forward(context, &mut cache, context.len() - 1)?;
        continuations
            .iter()
            .map(|ids| {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // The context's last row predicts the first token; the continuation's own
                // rows predict the rest.
                let mut lp = tensor::token_logprobs(&last, &ids[..1])?;
                if ids.len() > 1 {
                    let mut fork: Cache = cache.fork()?;
                    let rows = self.model.forward(&ids[..ids.len() - 1], &mut fork, 0)?;
                    lp.extend(tensor::token_logprobs(&rows, &ids[1..])?);
                }
                Ok(lp)
            })
            .collect()
    }

    /// `option` as the answer after `Answer:`: ` option` (at most
    /// [`MAX_SCORED_TOKENS`] tokens), then the end of the answer.
    pub fn answer_ids(&self, option: &str) -> Vec<u32> {
        let mut ids = self.tok.encode(&format!(" {}", option.trim()));
        ids.truncate(MAX_SCORED_TOKENS);
        ids.extend(self.end_of_answer);
        ids
    }

    /// The log-probabilities of each option's tokens as the answer to `question` (the
    /// options not shown), the end of the answer last.
    pub fn option_logprobs(
        &self,
        question: &str,
        options: &[&str],
    ) -> Result<Vec<Vec<f32>>, TensorError> {
        let answers: Vec<Vec<u32>> = options.iter().map(|o| self.answer_ids(o)).collect();
        self.continuation_logprobs(&self.prompt(question), &answers)
    }

    /// The same after the neutral prompt (BOS and [`lm::NEUTRAL_PROMPT`]), for PMI.
    pub fn neutral_logprobs(&self, options: &[&str]) -> Result<Vec<Vec<f32>>, TensorError> {
        let mut context = vec![self.bos];
        context.extend(self.tok.encode(lm::NEUTRAL_PROMPT));
        let answers: Vec<Vec<u32>> = options.iter().map(|o| self.answer_ids(o)).collect();
        self.continuation_logprobs(&context, &answers)
    }

    /// Each option's likelihood as the answer to `question`, as `rule` needs it (the
    /// neutral pass only for PMI).
    pub fn likelihoods(
        &self,
        question: &str,
        options: &[&str],
        rule: lm::Rule,
    ) -> Result<Vec<lm::Likelihood>, TensorError> {
        let given = self.option_logprobs(question, options)?;
        let neutral = if rule.needs_neutral() {
            Some(self.neutral_logprobs(options)?)
        } else {
            None
        };
        let with_end = rule.scores_end() && self.end_of_answer.is_some();
        Ok(lm::likelihoods(
            options,
            &given,
            neutral.as_deref(),
            with_end,
        ))
    }

    /// The options' scores under `rule` as the answer to `question`, as log-likelihoods
    /// ([`lm::option_scores`]).
    pub fn option_scores(
        &self,
        question: &str,
        options: &[&str],
        rule: lm::Rule,
    ) -> Result<Vec<f32>, TensorError> {
        Ok(lm::option_scores(
            rule,
            &self.likelihoods(question, options, rule)?,
        ))
    }

    /// The multiple-choice formulation: one worked example, then the question with its
    /// options listed with letters, and the log-probability of each letter (` A`) as
    /// the answer.
    pub fn letter_logprobs(
        &self,
        question: &str,
        options: &[&str],
    ) -> Result<Vec<f32>, TensorError> {
        let mut context = vec![self.bos];
        context.extend(self.tok.encode(&format!(
            "{LETTER_PREAMBLE}Question: {}",
            lm::lettered(question, options)
        )));
        let mut cache = self.model.cache()?;
        let last = self
            .model
            .forward(&context, &mut cache, context.len() - 1)?;
        (0..options.len())
            .map(|i| {
                let letter = char::from(b'A' + (i as u8).min(25));
                let ids = self.tok.encode(&format!(" {letter}"));
                Ok(tensor::token_logprobs(&last, &ids[..1])?[0])
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
            let scores = engine.option_scores(&req.prompt, &options, rule(req))?;
            return lm::best_option(&req.choices, &scores, 0.9)
                .ok_or_else(|| PluginError::InvalidRequest("no options".into()));
        }
        let (ids, confidence) = engine.generate_ids(&engine.prompt(&req.prompt), req)?;
        let text = engine.tok.decode(&ids).trim().to_string();
        if text.is_empty() {
            return Err(PluginError::Internal("the model produced no text".into()));
        }
        Ok(Answer::new(text, confidence.min(0.6)).with_tokens(ids.len() as u32))
    }

    fn judge(&self, req: &Request, first: &str, second: &str) -> Judgment {
        let Ok(engine) = self.get() else {
            return Judgment::Abstain;
        };
        lm::judge(
            req,
            first,
            second,
            TIE_MARGIN,
            |pair| engine.option_scores(&req.prompt, pair, rule(req)),
            |pair| engine.scores(&req.prompt, pair),
        )
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
            messages: Vec::new(),
        };
        assert!(g.assess(&req("What is 12 * 7?"), &[]) < 0.5);
        assert!(g.assess(&req("What is the capital of Peru?"), &[]) >= 0.5);
    }
}
