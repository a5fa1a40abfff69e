//! What small language-model plugins share: when to volunteer, how to pick an option
//! from likelihood scores, and when not to judge. (A 135M or 270M model ranks given
//! options usefully, cannot compute, and its likelihood cannot check a quantity.)

use crate::tensor::{self, Tensor, TensorError};
use crate::text::{looks_arithmetic, quantitative};
use crate::{Answer, PluginError, Request};

/// `assess` for a language model: `choice` for multiple-choice questions, `free` for
/// other questions; it declines arithmetic (0.1) and free-form questions about
/// quantities (0.2), which want a computed answer.
pub fn assess(req: &Request, choice: f32, free: f32) -> f32 {
    if looks_arithmetic(&req.prompt) {
        0.1
    } else if !req.choices.is_empty() {
        choice
    } else if quantitative(&req.prompt) {
        0.2
    } else {
        free
    }
}

/// The option with the highest score (mean log-probability per token), as `"B. text"`
/// with its index. Confidence is its share of the options' likelihoods, capped at
/// `cap`, so two models' confidences measure the same thing.
pub fn best_option(choices: &[String], scores: &[f32], cap: f32) -> Option<Answer> {
    let (best, _) = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let total: f32 = scores.iter().map(|s| s.exp()).sum();
    let confidence = scores[best].exp() / total.max(f32::MIN_POSITIVE);
    let letter = char::from(b'A' + (best as u8).min(25));
    Some(Answer::choice(
        format!("{letter}. {}", choices.get(best)?),
        best as u32,
        confidence.min(cap),
    ))
}

/// Decode after a prompt: `logits` are the prompt's last row; `step(token)` runs the
/// model on one token and returns the next logits. Greedy at temperature 0, else
/// seeded top-k 40 / top-p 0.9 sampling (step `i` uses seed + i, so a round replays).
/// Stops at `is_stop` or after `budget` tokens. Returns the tokens and the confidence
/// (geometric-mean token probability).
pub fn generate(
    mut logits: Tensor,
    budget: usize,
    req: &Request,
    is_stop: impl Fn(u32) -> bool,
    mut step: impl FnMut(u32) -> Result<Tensor, TensorError>,
) -> Result<(Vec<u32>, f32), TensorError> {
    let mut out = Vec::new();
    let mut logprob = 0.0;
    for i in 0..budget {
        let next = if req.temperature <= 0.0 {
            tensor::argmax(&logits)?
        } else {
            let seed = req.seed.wrapping_add(i as u64);
            tensor::sample(&logits, req.temperature, 40, 0.9, seed)?
        };
        if is_stop(next) {
            break;
        }
        logprob += tensor::token_logprobs(&logits, &[next])?[0];
        out.push(next);
        logits = step(next)?;
    }
    let confidence = if out.is_empty() {
        0.0
    } else {
        (logprob / out.len() as f32).exp()
    };
    Ok((out, confidence))
}

/// Per-sequence key/value caches of a decoder, one `[t, kv_width]` pair per layer,
/// held on the host; `len` is the number of positions already run.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub len: usize,
}

impl KvCache {
    /// Empty caches for `layers` layers of `kv_width` (key/value heads × head width).
    pub fn new(layers: usize, kv_width: usize) -> Result<KvCache, TensorError> {
        let empty = || Tensor::from_f32(&[0, kv_width as u32], &[]);
        Ok(KvCache {
            k: (0..layers).map(|_| empty()).collect::<Result<_, _>>()?,
            v: (0..layers).map(|_| empty()).collect::<Result<_, _>>()?,
            len: 0,
        })
    }

    /// A copy to extend without changing this one (scoring several continuations of
    /// one prompt).
    pub fn fork(&self) -> Result<KvCache, TensorError> {
        let copy = |t: &Tensor| tensor::slice_rows(t, 0, self.len as u32);
        Ok(KvCache {
            k: self.k.iter().map(copy).collect::<Result<_, _>>()?,
            v: self.v.iter().map(copy).collect::<Result<_, _>>()?,
            len: self.len,
        })
    }
}

/// A model loaded on first use and kept for the instance's life (one round): a
/// failed load is remembered and reported as the plugin's error.
pub struct Lazy<E>(std::cell::OnceCell<Result<E, String>>);

impl<E> Default for Lazy<E> {
    fn default() -> Self {
        Lazy(std::cell::OnceCell::new())
    }
}

impl<E> Lazy<E> {
    /// The loaded value; `file` names what was loaded in the error.
    pub fn get(
        &self,
        file: &str,
        load: impl FnOnce() -> Result<E, TensorError>,
    ) -> Result<&E, PluginError> {
        self.0
            .get_or_init(|| load().map_err(|e| format!("{e:?}")))
            .as_ref()
            .map_err(|e| PluginError::Internal(format!("cannot load {file} from /weights: {e}")))
    }
}

/// A likelihood judge abstains when the question or a candidate states a quantity.
pub fn abstains(prompt: &str, first: &str, second: &str) -> bool {
    [prompt, first, second].into_iter().any(quantitative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str, choices: &[&str]) -> Request {
        Request {
            prompt: prompt.into(),
            domain: None,
            choices: choices.iter().map(|c| c.to_string()).collect(),
            max_tokens: 8,
            temperature: 0.0,
            seed: 0,
        }
    }

    #[test]
    fn volunteers_for_knowledge_and_options_only() {
        assert_eq!(assess(&req("What is 12 * 7?", &[]), 0.6, 0.5), 0.1);
        assert_eq!(
            assess(&req("How many feet are in 3 meters?", &[]), 0.6, 0.5),
            0.2
        );
        assert_eq!(assess(&req("Capital of Peru?", &[]), 0.6, 0.5), 0.5);
        assert_eq!(
            assess(&req("Which is a mammal?", &["cat", "cod"]), 0.6, 0.5),
            0.6
        );
        assert!(abstains("How tall?", "2 m", "3 m"));
        assert!(!abstains("Capital of Peru?", "Lima", "Cusco"));
    }

    #[test]
    fn best_option_and_its_share() {
        let choices = ["Berlin".to_string(), "Paris".to_string()];
        let a = best_option(&choices, &[-2.0, -1.0], 0.9).unwrap();
        assert_eq!((a.choice, a.text.as_str()), (Some(1), "B. Paris"));
        assert!((a.confidence - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert!(best_option(&choices, &[], 0.9).is_none());
    }
}
