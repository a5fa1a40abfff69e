//! What small language-model plugins share: when to volunteer, how to pick an option
//! from likelihood scores, and when not to judge. (A 135M or 270M model ranks given
//! options usefully, cannot compute, and its likelihood cannot check a quantity.)

use crate::tensor::{self, Tensor, TensorError};
use crate::text::{looks_arithmetic, quantitative, without_option_letter};
use crate::{Answer, Judgment, PluginError, Request};

/// How willing a language model is to rank the options of a multiple-choice question
/// that looks like arithmetic: at the default threshold, so it still answers, below any
/// plugin that computes.
pub const ARITHMETIC_CHOICE: f32 = 0.5;

/// `assess` for a language model: `choice` for multiple-choice questions, `free` for
/// other questions; it declines free-form arithmetic (0.1) and free-form questions about
/// quantities (0.2), which want a computed answer.
///
/// A multiple-choice question is never declined: ranking given options is what the
/// model does, and a digit next to a `-`, `/` or `%` (a date range, "20-year-old", a
/// passage with figures) is no reason to leave a round unanswered. Declining such
/// questions left 22 of 100 MMLU items and about two thirds of BoolQ's (passages with
/// numbers) unanswered. One that looks like arithmetic gets at most
/// [`ARITHMETIC_CHOICE`].
pub fn assess(req: &Request, choice: f32, free: f32) -> f32 {
    if !req.choices.is_empty() {
        if looks_arithmetic(&req.prompt) {
            choice.min(ARITHMETIC_CHOICE)
        } else {
            choice
        }
    } else if looks_arithmetic(&req.prompt) {
        0.1
    } else if quantitative(&req.prompt) {
        0.2
    } else {
        free
    }
}

/// How a multiple-choice option's likelihood as the answer becomes its score: the
/// cloze-style rules that OLMES (Gu et al. 2024, "OLMES: A Standard for Language Model
/// Evaluations") compares. The option is scored as the continuation of the question
/// (its text after `Answer:`, the options not shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The sum of the option's token log-probabilities, `log P(option | question)`:
    /// favours short options.
    Sum,
    /// The mean log-probability per token.
    PerToken,
    /// The sum per character of the option's text: OLMES's default for ARC and MMLU.
    PerChar,
    /// Pointwise mutual information, `log P(option | question) − log P(option |
    /// "Answer:")`: how much the question raises the option, which removes what the
    /// option is likely to be anyway (short, common, "yes").
    Pmi,
}

impl Rule {
    pub const ALL: [Rule; 4] = [Rule::Sum, Rule::PerToken, Rule::PerChar, Rule::Pmi];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Sum => "sum",
            Rule::PerToken => "per-token",
            Rule::PerChar => "per-char",
            Rule::Pmi => "pmi",
        }
    }

    /// Whether the rule needs the option's likelihood after the neutral prompt (one
    /// more pass per option).
    pub fn needs_neutral(self) -> bool {
        self == Rule::Pmi
    }

    /// Whether the option's score counts the end of the answer after it (the end of the
    /// turn, or the line break that ends an answer): under PMI only. Under PMI the end's
    /// own prior (how readily the model stops after a bare option) cancels out, and what
    /// is left says the answer is complete; under the other rules that prior dominates a
    /// short option's score (SmolLM2 gives its end of turn about −7 nats after a bare
    /// option, more than the option's own tokens). Measured: with the end, SmolLM2's
    /// sum loses 5 to 8 points on ARC-Easy and MMLU, its PMI gains 6 on ARC-Easy and 9
    /// on BoolQ; Gemma's change by a point or so either way except BoolQ's PMI (+4).
    pub fn scores_end(self) -> bool {
        self == Rule::Pmi
    }

    /// The rule for a multiple-choice request, by what the request shows: PMI for a
    /// yes/no question (two options whose prior likelihoods differ more than the
    /// question moves them: without PMI a small model answers almost always "yes" or
    /// almost always "no"), and `options`, the rule measured best for the model on
    /// questions with three or more options, for the rest. (A request does not say
    /// whether it is from ARC or MMLU, so one rule serves all of them.) The
    /// measurements are in the plugins' module docs and their `*_scoring_grid` examples.
    pub fn for_request(req: &Request, options: Rule) -> Rule {
        Rule::for_choices(&req.choices, options)
    }

    /// [`Rule::for_request`] by the request's options alone.
    pub fn for_choices(choices: &[String], options: Rule) -> Rule {
        if is_yes_no(choices) {
            Rule::Pmi
        } else {
            options
        }
    }
}

/// Whether `choices` are a yes/no pair (in either order, any case).
pub fn is_yes_no(choices: &[String]) -> bool {
    let mut c: Vec<String> = choices.iter().map(|c| c.trim().to_lowercase()).collect();
    c.sort();
    c == ["no", "yes"]
}

/// An option's score under `rule`, from one pass over it after the question (the sum of
/// its token log-probabilities and its number of tokens), its number of characters, and,
/// for [`Rule::Pmi`], the sum of its log-probabilities after the neutral prompt.
pub fn option_score(
    rule: Rule,
    sum_logprob: f32,
    n_tokens: usize,
    n_chars: usize,
    neutral_sum: f32,
) -> f32 {
    match rule {
        Rule::Sum => sum_logprob,
        Rule::PerToken => sum_logprob / n_tokens.max(1) as f32,
        Rule::PerChar => sum_logprob / n_chars.max(1) as f32,
        Rule::Pmi => sum_logprob - neutral_sum,
    }
}

/// One option's likelihood as the answer: what [`option_score`] needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Likelihood {
    /// The sum of the option's token log-probabilities after the question.
    pub sum: f32,
    pub tokens: usize,
    /// Characters of the option's text.
    pub chars: usize,
    /// The sum of its token log-probabilities after the neutral prompt (0 unless
    /// measured, for [`Rule::Pmi`]).
    pub neutral: f32,
}

impl Likelihood {
    pub fn score(&self, rule: Rule) -> f32 {
        option_score(rule, self.sum, self.tokens, self.chars, self.neutral)
    }
}

/// The prompt PMI conditions on instead of the question (OLMES's "Answer:").
pub const NEUTRAL_PROMPT: &str = "Answer:";

/// The options' likelihoods from their per-token log-probabilities after the question
/// (`given`) and, for PMI, after [`NEUTRAL_PROMPT`] (`neutral`). Each list ends with the
/// log-probability of the end of the answer, which counts when `with_end`.
pub fn likelihoods(
    options: &[&str],
    given: &[Vec<f32>],
    neutral: Option<&[Vec<f32>]>,
    with_end: bool,
) -> Vec<Likelihood> {
    let part = |lp: &[f32]| -> (f32, usize) {
        let n = if with_end {
            lp.len()
        } else {
            lp.len().saturating_sub(1)
        };
        (lp[..n].iter().sum(), n)
    };
    options
        .iter()
        .zip(given)
        .enumerate()
        .map(|(i, (o, lp))| {
            let (sum, tokens) = part(lp);
            Likelihood {
                sum,
                tokens,
                chars: o.trim().chars().count(),
                neutral: neutral.and_then(|n| n.get(i)).map_or(0.0, |n| part(n).0),
            }
        })
        .collect()
}

/// The question with its options listed under it, `A. …` a line, ending at
/// `Answer:`: the multiple-choice formulation, where the model is to give the letter.
pub fn lettered(question: &str, options: &[&str]) -> String {
    let mut s = question.trim().to_string();
    for (i, o) in options.iter().enumerate() {
        let letter = char::from(b'A' + (i as u8).min(25));
        s.push_str(&format!("\n{letter}. {}", o.trim()));
    }
    s.push_str("\nAnswer:");
    s
}

/// The options' scores under `rule` as log-likelihoods (what [`best_option`] and an
/// answer's option scores take): for the length-normalised rules, the normalised score
/// times the options' mean length, i.e. the log-likelihood each option would have at the
/// common length. That ranks the options as [`option_score`] does, and keeps the
/// softmax of the scores (the confidence) on the scale of a log-likelihood, where a
/// per-character score would make every option look alike.
pub fn option_scores(rule: Rule, options: &[Likelihood]) -> Vec<f32> {
    let n = options.len().max(1) as f32;
    let scale = match rule {
        Rule::Sum | Rule::Pmi => 1.0,
        Rule::PerToken => options.iter().map(|o| o.tokens.max(1) as f32).sum::<f32>() / n,
        Rule::PerChar => options.iter().map(|o| o.chars.max(1) as f32).sum::<f32>() / n,
    };
    options.iter().map(|o| o.score(rule) * scale).collect()
}

/// The option with the highest score (log-likelihood-like, see [`option_scores`]), as
/// `"B. text"` with its index and the scores. Confidence is its share of the options'
/// likelihoods (the softmax of the scores), capped at `cap`, so two models' confidences
/// measure the same thing.
pub fn best_option(choices: &[String], scores: &[f32], cap: f32) -> Option<Answer> {
    let (best, _) = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    // Shifted by the best score, so that long options' sums (-100 and less) do not
    // underflow to a zero total.
    let top = scores[best];
    let total: f32 = scores.iter().map(|s| (s - top).exp()).sum();
    let confidence = 1.0 / total.max(1.0);
    let letter = char::from(b'A' + (best as u8).min(25));
    Some(
        Answer::choice(
            format!("{letter}. {}", choices.get(best)?),
            best as u32,
            confidence.min(cap),
        )
        .with_option_scores(scores.to_vec()),
    )
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

/// How sharply a free-form likelihood judge's preference follows the difference of the
/// candidates' mean log-probabilities per token: 0.1 nats is 60 %, 0.5 nats 88 %. (A
/// mean log-probability says how fluent an answer is more than whether it is right,
/// hence not the sequence log-likelihood ratio, which would be near certainty.)
pub const FREE_SHARPNESS: f32 = 4.0;

/// A likelihood judge's graded judgment of two candidate answers to `req` (an option's
/// letter, `"B. "`, is dropped first). Abstains when scoring fails, on a free-form
/// question when anything states a quantity (see [`abstains`]), and on a
/// multiple-choice question that looks like arithmetic; the same text twice is
/// [`Judgment::Same`]. (A multiple-choice question with figures in it is judged by the
/// same option scores the plugin answers it by: abstaining there would leave its answer
/// without its own judgment.)
///
/// - Multiple choice: `options([first, second])` gives their scores as options under the
///   request's rule, as log-likelihoods ([`option_scores`]), and the preference is the
///   first's share of the two likelihoods (the logistic of the difference).
/// - Free-form: `free([first, second])` gives their mean log-probabilities per token,
///   and the preference is the logistic of the difference times [`FREE_SHARPNESS`].
///
/// Differences under `margin` abstain.
pub fn judge(
    req: &Request,
    first: &str,
    second: &str,
    margin: f32,
    options: impl FnOnce(&[&str]) -> Result<Vec<f32>, TensorError>,
    free: impl FnOnce(&[&str]) -> Result<Vec<f32>, TensorError>,
) -> Judgment {
    let quantity = if req.choices.is_empty() {
        abstains(&req.prompt, first, second)
    } else {
        looks_arithmetic(&req.prompt)
    };
    if quantity {
        return Judgment::Abstain;
    }
    let pair = [without_option_letter(first), without_option_letter(second)];
    let norm = |s: &str| s.trim().trim_end_matches('.').to_lowercase();
    if norm(pair[0]) == norm(pair[1]) {
        return Judgment::Same;
    }
    let (scores, sharpness) = if req.choices.is_empty() {
        (free(&pair), FREE_SHARPNESS)
    } else {
        (options(&pair), 1.0)
    };
    match scores.as_deref() {
        Ok([a, b]) => Judgment::from_scores(*a, *b, sharpness, margin),
        _ => Judgment::Abstain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str, choices: &[&str]) -> Request {
        Request {
            choices: choices.iter().map(|c| c.to_string()).collect(),
            max_tokens: 8,
            ..Request::question(prompt)
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
    fn multiple_choice_is_answered_even_when_it_looks_like_arithmetic() {
        let mc = req("A 20-year-old man presents with...", &["flu", "cold"]);
        assert_eq!(assess(&mc, 0.6, 0.5), ARITHMETIC_CHOICE);
        assert_eq!(assess(&mc, 0.45, 0.5), 0.45);
        let sum = req("What is 12 * 7?", &["84", "74"]);
        assert!(assess(&sum, 0.6, 0.5) >= 0.5, "at the default threshold");
    }

    #[test]
    fn scoring_rules() {
        let (sum, tokens, chars, neutral) = (-6.0, 3, 12, -4.0);
        assert_eq!(option_score(Rule::Sum, sum, tokens, chars, neutral), -6.0);
        assert_eq!(
            option_score(Rule::PerToken, sum, tokens, chars, neutral),
            -2.0
        );
        assert_eq!(
            option_score(Rule::PerChar, sum, tokens, chars, neutral),
            -0.5
        );
        assert_eq!(option_score(Rule::Pmi, sum, tokens, chars, neutral), -2.0);
        assert_eq!(option_score(Rule::PerToken, -1.0, 0, 0, 0.0), -1.0);
        // A short option and a long one: the sum prefers the short, the per-character
        // score the long one, which is likelier per character.
        let options = [
            Likelihood {
                sum: -2.0,
                tokens: 1,
                chars: 2,
                neutral: -1.0,
            },
            Likelihood {
                sum: -3.0,
                tokens: 3,
                chars: 10,
                neutral: -5.0,
            },
        ];
        let best = |s: Vec<f32>| if s[0] > s[1] { 0 } else { 1 };
        assert_eq!(best(option_scores(Rule::Sum, &options)), 0);
        assert_eq!(best(option_scores(Rule::PerChar, &options)), 1);
        assert_eq!(best(option_scores(Rule::PerToken, &options)), 1);
        assert_eq!(best(option_scores(Rule::Pmi, &options)), 1);
        // Normalised scores come back on the scale of a log-likelihood: times the mean
        // length (6 characters).
        let per_char = option_scores(Rule::PerChar, &options);
        assert!((per_char[0] - -6.0).abs() < 1e-6 && (per_char[1] - -1.8).abs() < 1e-6);
    }

    #[test]
    fn likelihoods_from_token_logprobs() {
        let given = vec![vec![-1.0, -2.0, -0.5], vec![-3.0, -0.25]];
        let neutral = vec![vec![-0.5, -1.0, -0.5], vec![-1.0, -1.0]];
        let l = likelihoods(&["ab c", " x "], &given, Some(&neutral), false);
        assert_eq!(
            l,
            [
                Likelihood {
                    sum: -3.0,
                    tokens: 2,
                    chars: 4,
                    neutral: -1.5
                },
                Likelihood {
                    sum: -3.0,
                    tokens: 1,
                    chars: 1,
                    neutral: -1.0
                },
            ]
        );
        let with_end = likelihoods(&["ab c", " x "], &given, None, true);
        assert_eq!(
            (with_end[0].sum, with_end[0].tokens, with_end[0].neutral),
            (-3.5, 3, 0.0)
        );
    }

    #[test]
    fn the_rule_follows_the_options() {
        let yes_no = req("Passage.\n\nQuestion: is it?", &["yes", "no"]);
        assert_eq!(Rule::for_request(&yes_no, Rule::Sum), Rule::Pmi);
        assert!(Rule::Pmi.needs_neutral() && !Rule::Sum.needs_neutral());
        assert!(Rule::Pmi.scores_end() && !Rule::Sum.scores_end());
        let four = req("Which is a mammal?", &["cat", "cod", "eel", "ant"]);
        assert_eq!(Rule::for_request(&four, Rule::Sum), Rule::Sum);
        assert_eq!(Rule::for_request(&four, Rule::PerChar), Rule::PerChar);
        assert!(is_yes_no(&["No".into(), " Yes".into()]));
        assert!(!is_yes_no(&["yes".into(), "no".into(), "maybe".into()]));
        assert_eq!(
            lettered(" Which? ", &["cat", "cod"]),
            "Which?\nA. cat\nB. cod\nAnswer:"
        );
    }

    #[test]
    fn best_option_and_its_share() {
        let choices = ["Berlin".to_string(), "Paris".to_string()];
        let a = best_option(&choices, &[-2.0, -1.0], 0.9).unwrap();
        assert_eq!((a.choice, a.text.as_str()), (Some(1), "B. Paris"));
        assert!((a.confidence - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert_eq!(a.option_scores, [-2.0, -1.0]);
        assert!(best_option(&choices, &[], 0.9).is_none());
        // Long options' sums do not underflow the share.
        let a = best_option(&choices, &[-300.0, -301.0], 1.0).unwrap();
        assert!((a.confidence - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn judging_by_likelihood() {
        let free = req("Capital of France?", &[]);
        let never = |_: &[&str]| -> Result<Vec<f32>, TensorError> { unreachable!("free-form") };
        let j = judge(&free, "Paris", "Berlin", 0.05, never, |_| {
            Ok(vec![-1.0, -1.5])
        });
        let want = 1.0 / (1.0 + (-FREE_SHARPNESS * 0.5).exp());
        assert!(
            matches!(j, Judgment::Prefer(p) if (p - want).abs() < 1e-6),
            "{j:?}"
        );
        assert!(matches!(
            judge(&free, "Paris", "Lyon", 0.05, never, |_| Ok(vec![
                -1.0, -1.01
            ])),
            Judgment::Abstain
        ));
        assert!(matches!(
            judge(&free, "B. Paris", "paris.", 0.05, never, |_| unreachable!()),
            Judgment::Same
        ));
        assert!(matches!(
            judge(&free, "2 m", "3 m", 0.05, never, |_| unreachable!()),
            Judgment::Abstain
        ));
        // Multiple choice: the share of the two options' likelihoods.
        let mc = req("Which is a mammal?", &["cat", "cod"]);
        let options = |pair: &[&str]| {
            assert_eq!(pair, ["cod", "cat"]);
            Ok(vec![-3.0, -1.0])
        };
        let j = judge(&mc, "B. cod", "A. cat", 0.05, options, |_| unreachable!());
        let want = 1.0 / (1.0 + 2.0f32.exp());
        assert!(
            matches!(j, Judgment::Prefer(p) if (p - want).abs() < 1e-6),
            "{j:?}"
        );
        // Figures in a multiple-choice question are judged; arithmetic is not.
        let figures = req("Which was built in 1889?", &["Eiffel Tower", "Big Ben"]);
        let scored = |_: &[&str]| Ok(vec![-1.0, -2.0]);
        let j = judge(
            &figures,
            "A. Eiffel Tower",
            "B. Big Ben",
            0.05,
            scored,
            never,
        );
        assert!(matches!(j, Judgment::Prefer(p) if p > 0.5), "{j:?}");
        let sum = req("What is 12 * 7?", &["84", "74"]);
        let j = judge(&sum, "A. 84", "B. 74", 0.05, never, never);
        assert!(matches!(j, Judgment::Abstain), "{j:?}");
    }
}
