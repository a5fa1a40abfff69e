//! Qwen2.5-Coder-0.5B-Instruct as an Apiary specialist.
//!
//! A third language model on the host kernels, and the first that is good at code: the
//! qwen2 architecture (see [`model`]: biased Q/K/V projections, NEOX RoPE), Qwen2's
//! byte-level BPE with its own pre-tokenizer and special tokens (see [`tokenizer`]),
//! and the ChatML template with Qwen's default system prompt. The weights are Qwen's
//! own GGUF (Q4_K_M; most matrices Q5_0, which the host widens losslessly to Q8_0 at
//! open), memory-mapped on the host.
//!
//! - `answer`: multiple-choice requests get the option the model finds most likely as
//!   its reply (mean log-probability per token, the end of the turn included, after one
//!   shared pass over the prompt); other requests get a generated reply (greedy at
//!   temperature 0, else seeded sampling; `max-tokens` honoured).
//! - `compare`: the candidate the model finds more likely as the reply wins; close
//!   scores are a tie. Outside code questions, anything stating a quantity is a tie, as
//!   for the other language models; a code question is judged even when the candidates
//!   hold digits (code does).
//! - `assess`: volunteers most for code and programming questions, modestly for general
//!   knowledge and multiple choice, and declines arithmetic and free-form questions
//!   about quantities, which a 0.5B model computes badly.

use apiary_plugin_api::lm;
use apiary_plugin_api::tensor::{self, MetadataExt, TensorError, Weights};
use apiary_plugin_api::text::{looks_arithmetic, without_option_letter, words};
use apiary_plugin_api::{
    Answer, Judgment, Manifest, Message, PluginError, Request, Specialist, Verdict,
    export_specialist,
};

pub mod model;
pub mod tokenizer;
mod unicode;

use model::Model;
use tokenizer::Tokenizer;

pub const WEIGHTS_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The system turn Qwen's chat template adds when the conversation has none.
pub const DEFAULT_SYSTEM: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// Mean log-probabilities closer than this are a tie.
const TIE_MARGIN: f32 = 0.05;
/// The scoring rule for questions with three or more options (`lm::Rule::for_request`
/// picks PMI for yes/no). Per character, OLMES's default for ARC and MMLU; not measured
/// for this model with the grid the other two plugins were tuned with.
const OPTION_RULE: lm::Rule = lm::Rule::PerChar;
/// Options and candidates are scored on at most this many tokens.
const MAX_SCORED_TOKENS: usize = 96;
/// Longest prompt plus reply run, in tokens. The model was trained for 32,768, but the
/// key/value caches take 24 KiB a token and the CPU would not finish such a prompt
/// within the answer budget.
pub const MAX_CONTEXT: usize = 4096;

/// The model, its tokenizer and chat tokens, loaded from the weights file.
pub struct Engine {
    pub model: Model,
    pub tok: Tokenizer,
    im_end: u32,
    eos: u32,
    end_of_text: Option<u32>,
}

#[derive(Default)]
pub struct Qwen {
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
    let im_end = tok
        .id("<|im_end|>")
        .ok_or_else(|| TensorError::NotFound("token <|im_end|>".into()))?;
    let eos = w
        .meta_u64("tokenizer.ggml.eos_token_id")
        .map(|v| v as u32)
        .unwrap_or(im_end);
    let model = Model::load(&w)?;
    if tok.vocab_size() != model_vocab(&w)? {
        return Err(TensorError::InvalidFile(
            "the vocabulary and the output matrix differ in size".into(),
        ));
    }
    Ok(Engine {
        end_of_text: tok.id("<|endoftext|>"),
        model,
        tok,
        im_end,
        eos,
    })
}

/// Rows of the embedding table.
fn model_vocab(w: &Weights) -> Result<usize, TensorError> {
    Ok(w.tensor("token_embd.weight")?.shape()[0] as usize)
}

impl Qwen {
    fn get(&self) -> Result<&Engine, PluginError> {
        self.loaded.get(WEIGHTS_FILE, load)
    }
}

/// Qwen's chat template (the GGUF's `tokenizer.chat_template`, without tools) as text:
/// a system turn (the conversation's first message if it is one, else
/// [`DEFAULT_SYSTEM`]), every turn as `<|im_start|>role\ncontent<|im_end|>\n`, then the
/// assistant's turn opened.
pub fn chat_text(turns: &[Message]) -> String {
    let mut s = String::new();
    let (system, rest) = match turns.split_first() {
        Some((first, rest)) if first.role == "system" => (first.content.as_str(), rest),
        _ => (DEFAULT_SYSTEM, turns),
    };
    let mut turn = |role: &str, content: &str| {
        s.push_str("<|im_start|>");
        s.push_str(role);
        s.push('\n');
        s.push_str(content);
        s.push_str("<|im_end|>\n");
    };
    turn("system", system);
    for m in rest {
        let role = match m.role.as_str() {
            "system" | "assistant" => m.role.as_str(),
            _ => "user",
        };
        turn(role, &m.content);
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

impl Engine {
    /// The conversation `turns` in ChatML, ready for the assistant's reply.
    pub fn chat_ids(&self, turns: &[Message]) -> Vec<u32> {
        self.tok.encode(&chat_text(turns))
    }

    /// One question as the user's turn, after the default system turn.
    pub fn chat(&self, prompt: &str) -> Vec<u32> {
        self.chat_ids(&[Message::user(prompt)])
    }

    fn is_stop(&self, t: u32) -> bool {
        t == self.im_end || t == self.eos || Some(t) == self.end_of_text
    }

    /// Generate a reply: its text, confidence (geometric-mean token probability) and
    /// number of tokens.
    pub fn generate(&self, req: &Request) -> Result<(String, f32, usize), TensorError> {
        let (ids, confidence) = self.generate_ids(&self.chat_ids(&req.turns()), req)?;
        Ok((
            self.tok.decode(&ids).trim().to_string(),
            confidence,
            ids.len(),
        ))
    }

    /// Generate token ids after `prompt` (already templated).
    pub fn generate_ids(
        &self,
        prompt: &[u32],
        req: &Request,
    ) -> Result<(Vec<u32>, f32), TensorError> {
        let context = self.model.config.context.min(MAX_CONTEXT);
        if prompt.is_empty() || prompt.len() >= context {
            return Err(TensorError::Shape(format!(
                "a prompt of {} tokens (at most {} are run)",
                prompt.len(),
                context - 1
            )));
        }
        let budget = (context - prompt.len()).min(req.max_tokens.max(1) as usize);
        let mut cache = self.model.cache()?;
        let logits = self.model.forward(prompt, &mut cache, prompt.len() - 1)?;
        lm::generate(
            logits,
            budget,
            req,
            |t| self.is_stop(t),
            |next| self.model.forward(&[next], &mut cache, 0),
        )
    }

    /// The log-probabilities of each of `continuations` after `context`, token by token:
    /// the context is run once, and each continuation extends a copy of its cache.
    pub fn continuation_logprobs(
        &self,
        context: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>, TensorError> {
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if context.is_empty() || context.len() + longest > MAX_CONTEXT {
            return Err(TensorError::Shape(format!(
                "{} tokens to score (at most {MAX_CONTEXT})",
                context.len() + longest
            )));
        }
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
                    let mut fork = cache.fork()?;
                    let rows = self.model.forward(&ids[..ids.len() - 1], &mut fork, 0)?;
                    lp.extend(tensor::token_logprobs(&rows, &ids[1..])?);
                }
                Ok(lp)
            })
            .collect()
    }

    /// `text` as the assistant's reply: its tokens (at most [`MAX_SCORED_TOKENS`]), then
    /// the end of the turn.
    fn reply(&self, text: &str) -> Vec<u32> {
        let mut ids = self.tok.encode(text.trim());
        ids.truncate(MAX_SCORED_TOKENS);
        ids.push(self.im_end);
        ids
    }

    /// Each option's likelihood as the reply to `question` under `rule` (with the neutral
    /// prompt's pass when the rule needs it), as log-likelihood-scaled scores.
    pub fn option_scores(
        &self,
        question: &str,
        options: &[&str],
        rule: lm::Rule,
    ) -> Result<Vec<f32>, TensorError> {
        let replies: Vec<Vec<u32>> = options.iter().map(|c| self.reply(c)).collect();
        let given = self.continuation_logprobs(&self.chat(question), &replies)?;
        let neutral = if rule.needs_neutral() {
            Some(self.continuation_logprobs(&self.chat(lm::NEUTRAL_PROMPT), &replies)?)
        } else {
            None
        };
        let l = lm::likelihoods(options, &given, neutral.as_deref(), rule.scores_end());
        Ok(lm::option_scores(rule, &l))
    }

    /// Mean log-probability per token (the end of the turn included) of each of
    /// `candidates` as the reply to `question`: the option and judge score.
    pub fn scores(&self, question: &str, candidates: &[&str]) -> Result<Vec<f32>, TensorError> {
        let replies: Vec<Vec<u32>> = candidates.iter().map(|c| self.reply(c)).collect();
        Ok(self
            .continuation_logprobs(&self.chat(question), &replies)?
            .iter()
            .map(|lp| lp.iter().sum::<f32>() / lp.len().max(1) as f32)
            .collect())
    }

    /// Mean log-probability per token of `candidate` as the reply to `prompt`.
    pub fn score(&self, prompt: &str, candidate: &str) -> Result<f32, TensorError> {
        Ok(self.scores(prompt, &[candidate])?[0])
    }
}

/// Words that mark a question about code or programming.
const CODE_WORDS: &[&str] = &[
    "code",
    "coding",
    "program",
    "programming",
    "programmer",
    "function",
    "functions",
    "compile",
    "compiler",
    "debug",
    "refactor",
    "script",
    "algorithm",
    "regex",
    "python",
    "rust",
    "javascript",
    "typescript",
    "java",
    "golang",
    "kotlin",
    "haskell",
    "sql",
    "html",
    "css",
    "json",
    "yaml",
    "bash",
    "git",
    "docker",
    "api",
    "struct",
    "enum",
    "variable",
    "recursion",
    "recursive",
    "exception",
    "segfault",
    "lambda",
    "http",
    "database",
    "linux",
    "unittest",
    "npm",
];

/// Phrases that do the same.
const CODE_PHRASES: &[&str] = &[
    "data structure",
    "linked list",
    "hash map",
    "hash table",
    "binary tree",
    "time complexity",
    "command line",
    "unit test",
];

/// Whether `req` is about code: the domain hint says so, or the prompt has code in
/// backticks, a code keyword or a piece of syntax.
pub fn is_code_question(req: &Request) -> bool {
    let hinted = req.domain.as_deref().is_some_and(|d| {
        matches!(
            d.to_lowercase().as_str(),
            "code" | "coding" | "programming" | "software"
        )
    });
    let p = &req.prompt;
    let syntax = [
        "`", "def ", "fn ", "#include", "();", "=>", "->", "::", "!=", "==",
    ]
    .iter()
    .any(|s| p.contains(s))
        || p.contains("C++")
        || p.contains("C#");
    let lower = p.to_lowercase();
    let phrase = CODE_PHRASES.iter().any(|s| lower.contains(s));
    hinted || syntax || phrase || words(p).iter().any(|w| CODE_WORDS.contains(&w.as_str()))
}

impl Specialist for Qwen {
    fn describe(&self, base: Manifest) -> Manifest {
        Manifest {
            domains: vec![
                "code".into(),
                "programming".into(),
                "general".into(),
                "knowledge".into(),
            ],
            ..base
        }
    }

    fn assess(&self, req: &Request, _domains: &[String]) -> f32 {
        let code = is_code_question(req);
        // Free text only: a multiple-choice passage with figures in it (a date range, a
        // "20-year-old") is no computation, and declining it left 90 % of BoolQ and the
        // numeric items of ARC and MMLU without this model's answer (`lm::assess` caps
        // such questions instead).
        if req.choices.is_empty() && looks_arithmetic(&req.prompt) {
            // Even about code (what `2 ** 10` prints), the answer is a computation.
            return if code { 0.3 } else { 0.1 };
        }
        if code {
            return 0.8;
        }
        // A coder first: modest elsewhere, and no volunteering of quantities.
        lm::assess(req, 0.55, 0.5)
    }

    fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
        let engine = self.get()?;
        if !req.choices.is_empty() {
            let options: Vec<&str> = req.choices.iter().map(String::as_str).collect();
            let rule = lm::Rule::for_request(req, OPTION_RULE);
            let scores = engine.option_scores(&req.prompt, &options, rule)?;
            return lm::best_option(&req.choices, &scores, 0.9)
                .map(|a| a.with_option_scores(scores))
                .ok_or_else(|| PluginError::InvalidRequest("no options".into()));
        }
        let (text, confidence, tokens) = engine.generate(req)?;
        if text.is_empty() {
            return Err(PluginError::Internal("the model produced no text".into()));
        }
        Ok(Answer::new(text, confidence.min(0.7)).with_tokens(tokens as u32))
    }

    /// Graded: on multiple choice the two candidates' shares as options under the
    /// request's rule; otherwise the logistic of their mean log-probabilities' difference.
    /// Code questions are judged even when they hold digits.
    fn judge(&self, req: &Request, first: &str, second: &str) -> Judgment {
        let Ok(engine) = self.get() else {
            return Judgment::Abstain;
        };
        if is_code_question(req) && !looks_arithmetic(&req.prompt) {
            let pair = [without_option_letter(first), without_option_letter(second)];
            return match engine.scores(&req.prompt, &pair).as_deref() {
                Ok([a, b]) => Judgment::from_scores(*a, *b, lm::FREE_SHARPNESS, TIE_MARGIN),
                _ => Judgment::Abstain,
            };
        }
        let rule = lm::Rule::for_request(req, OPTION_RULE);
        lm::judge(
            req,
            first,
            second,
            TIE_MARGIN,
            |pair| engine.option_scores(&req.prompt, pair, rule),
            |pair| engine.scores(&req.prompt, pair),
        )
    }

    fn compare(&self, prompt: &str, first: &str, second: &str) -> Verdict {
        // Likelihood cannot check a quantity: abstain rather than guess, except on code,
        // where digits are part of the text being judged.
        let code = is_code_question(&Request::question(prompt)) && !looks_arithmetic(prompt);
        if !code && lm::abstains(prompt, first, second) {
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

export_specialist!(Qwen);

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str) -> Request {
        Request::question(prompt)
    }

    #[test]
    fn volunteers_for_code_and_declines_arithmetic() {
        let q = Qwen::default();
        let code = q.assess(&req("Write a Python function that reverses a list."), &[]);
        let knowledge = q.assess(&req("What is the capital of Peru?"), &[]);
        assert!(
            code > knowledge && knowledge >= 0.4,
            "{code} vs {knowledge}"
        );
        assert!(q.assess(&req("What is 12 * 7?"), &[]) < 0.2);
        assert!(q.assess(&req("How many feet are in 3 meters?"), &[]) < 0.3);
        assert!(q.assess(&req("What does `len([1, 2, 3])` return in Python?"), &[]) >= 0.8);
        let hinted = Request {
            domain: Some("programming".into()),
            ..req("What is a closure?")
        };
        assert!(q.assess(&hinted, &[]) >= 0.8);
        let mc = Request {
            choices: vec!["cat".into(), "cod".into()],
            ..req("Which is a mammal?")
        };
        assert!(q.assess(&mc, &[]) < code);
    }

    /// BoolQ's and MMLU's passages are full of figures; as multiple choice they are
    /// answered (at most `lm::ARITHMETIC_CHOICE`), as free text still declined.
    #[test]
    fn multiple_choice_with_figures_in_the_passage_is_answered() {
        let q = Qwen::default();
        let passage = "Ethanol fuel -- one unit of fossil-fuel energy is required to create 1.3 \
                       energy units (2007 report, 20-30% of the 1990-2000 crop). Is corn \
                       ethanol energy positive?";
        let mc = Request {
            choices: vec!["yes".into(), "no".into()],
            ..req(passage)
        };
        assert!(q.assess(&mc, &[]) >= 0.5, "{}", q.assess(&mc, &[]));
        assert!(q.assess(&req("What is 17 * 23 - 5?"), &[]) < 0.2);
    }

    #[test]
    fn chat_template_with_and_without_a_system_turn() {
        assert_eq!(
            chat_text(&[Message::user("Hi")]),
            format!(
                "<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                 <|im_start|>assistant\n"
            )
        );
        assert_eq!(
            chat_text(&[
                Message::system("Be brief."),
                Message::user("Hi"),
                Message::assistant("Hello."),
                Message::user("Bye"),
            ]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }
}
