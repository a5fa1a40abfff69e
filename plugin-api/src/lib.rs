//! Write an Apiary specialist plugin.
//!
//! A specialist is a WebAssembly component that an Apiary node loads into a sandbox and
//! asks questions. This crate hides the component-model plumbing: implement the
//! [`Specialist`] trait for a type, call [`export_specialist!`] once, and build with
//! `cargo build --target wasm32-wasip2 --release`. The output `.wasm` is the plugin.
//!
//! Only [`Specialist::answer`] is required. The defaults for the rest are deliberately
//! modest: [`Specialist::assess`] volunteers only when the request's domain hint names one
//! of the plugin's domains, and [`Specialist::judge`] abstains, so a
//! plugin that does not judge well never sways a round.
//!
//! # A complete plugin
//!
//! ```
//! use apiary_plugin_api::{export_specialist, Answer, Manifest, PluginError, Request, Specialist};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Specialist for Echo {
//!     fn describe(&self, base: Manifest) -> Manifest {
//!         Manifest { domains: vec!["echo".into()], ..base }
//!     }
//!
//!     fn answer(&self, req: &Request) -> Result<Answer, PluginError> {
//!         if req.prompt.is_empty() {
//!             return Err(PluginError::InvalidRequest("empty prompt".into()));
//!         }
//!         Ok(Answer::new(format!("You said: {}", req.prompt), 1.0))
//!     }
//! }
//!
//! export_specialist!(Echo);
//! # fn main() {}
//! ```
//!
//! # What a plugin can reach
//!
//! Nothing but its own read-only `weights/` folder, mounted at `/weights`, and the host's
//! [`log`]. No network, no environment variables, no clock-based randomness worth relying
//! on: derive randomness from [`Request::seed`] so rounds can be replayed. `println!` works
//! but is captured, capped and logged by the host; prefer [`log`].
//!
//! Each round gets a fresh instance, so state kept in the type (built in `Default`) lives
//! for one round: cache what is expensive to rebuild in the host (weights are mapped by the
//! host), not in the guest.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "specialist",
        pub_export_macro: true,
        export_macro_name: "__export_specialist_raw",
        additional_derives: [PartialEq],
        default_bindings_module: "::apiary_plugin_api::bindings",
    });
}

/// A plugin's answer (the WIT record `response`).
pub use bindings::apiary::plugin::types::Response as Answer;
pub use bindings::apiary::plugin::types::{
    Judgment, Manifest, Message, PluginError, Request, Verdict,
};

/// The contract version this crate was built against (the WIT package version).
pub const CONTRACT_VERSION: &str = "1.2.0";

/// The trait a specialist implements. One value of the type is created (with `Default`)
/// per sandbox instance, which the host makes fresh for every round.
pub trait Specialist: Default + 'static {
    /// Describe the plugin. `base` is filled from the crate's `Cargo.toml` (name, version,
    /// description); add the domains you know.
    fn describe(&self, base: Manifest) -> Manifest {
        base
    }

    /// How much expertise the plugin has for `req`, in [0, 1]. The default volunteers
    /// (0.6) only when the request's domain hint is one of `domains`, else declines (0.0).
    fn assess(&self, req: &Request, domains: &[String]) -> f32 {
        match &req.domain {
            Some(d) if domains.iter().any(|x| x.eq_ignore_ascii_case(d)) => 0.6,
            _ => 0.0,
        }
    }

    /// Answer the request, or say why not.
    fn answer(&self, req: &Request) -> Result<Answer, PluginError>;

    /// Judge which of two candidate answers to `req` is better, and how strongly
    /// ([`Judgment::Prefer`] with the probability that `first` is better), or say that they
    /// are the same answer, or abstain. The default asks [`Specialist::compare`], so a
    /// plugin written for contract 1.1 judges as before: `First` and `Second` are
    /// certainties, `Tie` abstains.
    fn judge(&self, req: &Request, first: &str, second: &str) -> Judgment {
        match self.compare(&req.prompt, first, second) {
            Verdict::First => Judgment::Prefer(1.0),
            Verdict::Second => Judgment::Prefer(0.0),
            Verdict::Tie => Judgment::Abstain,
        }
    }

    /// Contract 1.1's ungraded judge, kept so that plugins written for it still build;
    /// implement [`Specialist::judge`] instead. The default abstains (`Verdict::Tie`).
    fn compare(&self, prompt: &str, first: &str, second: &str) -> Verdict {
        let _ = (prompt, first, second);
        Verdict::Tie
    }
}

impl Request {
    /// A single question: `prompt` as the conversation's one user message.
    pub fn question(prompt: impl Into<String>) -> Request {
        let prompt = prompt.into();
        Request {
            messages: vec![Message::user(prompt.clone())],
            prompt,
            domain: None,
            choices: Vec::new(),
            max_tokens: 64,
            temperature: 0.0,
            seed: 0,
        }
    }

    /// The conversation's system prompt, if it has one.
    pub fn system(&self) -> Option<&str> {
        self.messages
            .iter()
            .find(|m| m.role == "system")
            .map(|m| m.content.as_str())
    }

    /// The conversation as turns, never empty: a request from an older host (or built by
    /// hand) without `messages` is its prompt as one user turn.
    pub fn turns(&self) -> Vec<Message> {
        if self.messages.is_empty() {
            vec![Message::user(self.prompt.clone())]
        } else {
            self.messages.clone()
        }
    }
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
}

impl Judgment {
    /// A graded preference from two scores of the candidates (higher is better), e.g.
    /// mean log-likelihoods: the logistic of their difference times `sharpness`. Scores
    /// closer than `margin` abstain; a non-finite score abstains.
    pub fn from_scores(first: f32, second: f32, sharpness: f32, margin: f32) -> Judgment {
        let d = first - second;
        if !d.is_finite() || d.abs() < margin {
            return Judgment::Abstain;
        }
        Judgment::Prefer(1.0 / (1.0 + (-sharpness * d).exp()))
    }
}

impl Answer {
    /// An answer to a free-form question.
    pub fn new(text: impl Into<String>, confidence: f32) -> Self {
        Answer {
            text: text.into(),
            confidence: confidence.clamp(0.0, 1.0),
            choice: None,
            option_scores: Vec::new(),
            tokens: 0,
        }
    }

    /// With a score per option (log-likelihoods, in the order of the request's choices),
    /// which the host pools across plugins.
    pub fn with_option_scores(self, scores: Vec<f32>) -> Self {
        Answer {
            option_scores: scores,
            ..self
        }
    }

    /// With the number of tokens generated for the text (the API's `usage`).
    pub fn with_tokens(self, tokens: u32) -> Self {
        Answer { tokens, ..self }
    }

    /// An answer picking option `index` of a multiple-choice request.
    pub fn choice(text: impl Into<String>, index: u32, confidence: f32) -> Self {
        Answer {
            choice: Some(index),
            ..Answer::new(text, confidence)
        }
    }

    /// For a multiple-choice request: the first of `choices` that `is_right` accepts, as
    /// `"B. text"` with its index; `None` when no option is (the plugin's own answer is
    /// not among them, so it should decline rather than answer past the options).
    pub fn from_options(
        choices: &[String],
        is_right: impl Fn(&str) -> bool,
        confidence: f32,
    ) -> Option<Self> {
        let (i, option) = choices.iter().enumerate().find(|(_, c)| is_right(c))?;
        let letter = char::from(b'A' + (i as u8).min(25));
        Some(Answer::choice(
            format!("{letter}. {option}"),
            i as u32,
            confidence,
        ))
    }
}

/// Log into the host's log. Messages are tagged with the plugin's name by the host and
/// bounded per call; past the bound they are dropped (and the drop is counted).
pub mod log {
    use crate::bindings::apiary::plugin::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Export a [`Specialist`] implementation as the plugin's entry points. Call once, at the
/// crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_specialist {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __ApiarySpecialistExport;

        impl __ApiarySpecialistExport {
            fn with<R>(f: impl FnOnce(&$ty) -> R) -> R {
                ::std::thread_local! {
                    static INSTANCE: $ty = <$ty as ::core::default::Default>::default();
                }
                INSTANCE.with(f)
            }

            fn manifest() -> $crate::Manifest {
                let base = $crate::Manifest {
                    name: ::core::env!("CARGO_PKG_NAME").into(),
                    version: ::core::env!("CARGO_PKG_VERSION").into(),
                    domains: ::std::vec::Vec::new(),
                    description: ::core::env!("CARGO_PKG_DESCRIPTION").into(),
                };
                Self::with(|s| <$ty as $crate::Specialist>::describe(s, base))
            }
        }

        impl $crate::bindings::exports::apiary::plugin::handler::Guest for __ApiarySpecialistExport {
            fn describe() -> $crate::Manifest {
                Self::manifest()
            }

            fn assess(req: $crate::Request) -> f32 {
                let domains = Self::manifest().domains;
                let score = Self::with(|s| <$ty as $crate::Specialist>::assess(s, &req, &domains));
                if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 }
            }

            fn answer(req: $crate::Request) -> ::core::result::Result<$crate::Answer, $crate::PluginError> {
                Self::with(|s| <$ty as $crate::Specialist>::answer(s, &req))
            }

            fn judge(
                req: $crate::Request,
                first: ::std::string::String,
                second: ::std::string::String,
            ) -> $crate::Judgment {
                Self::with(|s| <$ty as $crate::Specialist>::judge(s, &req, &first, &second))
            }
        }

        // Only wasm builds export the entry points: natively (unit tests, docs) the export
        // names, which contain `:` and `@`, are not valid symbol names for the linker.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_specialist_raw!(__ApiarySpecialistExport with_types_in $crate::bindings);
    };
}

#[cfg(not(target_arch = "wasm32"))]
mod native;

pub mod lm;

/// Helpers that many specialists need: pulling numbers out of text, normalising words.
pub mod text {
    /// Every number written with digits in `s` (integers, decimals, negatives, `1,234`),
    /// in order of appearance.
    pub fn numbers(s: &str) -> Vec<f64> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let starts_number = c.is_ascii_digit()
                || (c == b'-'
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                    && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()));
            if !starts_number {
                i += 1;
                continue;
            }
            let start = i;
            i += 1;
            while i < bytes.len() {
                let b = bytes[i];
                let digit_follows = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if b.is_ascii_digit() || ((b == b'.' || b == b',') && digit_follows) {
                    i += 1;
                } else {
                    break;
                }
            }
            let cleaned: String = s[start..i].chars().filter(|&c| c != ',').collect();
            if let Ok(v) = cleaned.parse::<f64>() {
                out.push(v);
            }
        }
        out
    }

    /// The last number in `s`: by convention, a worked answer's final result.
    pub fn final_number(s: &str) -> Option<f64> {
        numbers(s).last().copied()
    }

    /// Lower-case ASCII words of `s`, punctuation dropped.
    pub fn words(s: &str) -> Vec<String> {
        s.split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect()
    }

    /// Whether two numbers agree to a relative tolerance (and an absolute one near zero).
    pub fn close(a: f64, b: f64) -> bool {
        let scale = a.abs().max(b.abs()).max(1.0);
        (a - b).abs() <= 1e-6 * scale
    }

    /// Digits and an operator: arithmetic, which a small language model can neither do
    /// nor check, so its plugin declines to answer and abstains from judging.
    pub fn looks_arithmetic(s: &str) -> bool {
        s.chars().any(|c| c.is_ascii_digit()) && s.chars().any(|c| "+-*/×÷=^%".contains(c))
    }

    /// Whether `s` states a quantity (has a digit). A likelihood judge cannot check a
    /// quantity, and a small language model should not volunteer a computed one.
    pub fn quantitative(s: &str) -> bool {
        s.chars().any(|c| c.is_ascii_digit())
    }

    /// `"B. Paris"` → `"Paris"`: what a multiple-choice answer says, without its letter,
    /// for judges that score the content.
    pub fn without_option_letter(s: &str) -> &str {
        let b = s.as_bytes();
        if b.len() > 3 && b[0].is_ascii_uppercase() && b[1] == b'.' && b[2] == b' ' {
            &s[3..]
        } else {
            s
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn arithmetic_and_option_letters() {
            assert!(looks_arithmetic("What is 12 * 7?"));
            assert!(!looks_arithmetic("What is the capital of Peru?"));
            assert!(!looks_arithmetic("How many legs has a spider, 6 or 8?"));
            assert!(quantitative("How many feet are in 3 meters?"));
            assert!(!quantitative("What is the capital of Peru?"));
            assert_eq!(without_option_letter("B. Paris"), "Paris");
            assert_eq!(without_option_letter("Paris"), "Paris");
            assert_eq!(without_option_letter("A."), "A.");
        }

        #[test]
        fn numbers_in_text() {
            assert_eq!(numbers("17 * 23 = 391"), vec![17.0, 23.0, 391.0]);
            assert_eq!(numbers("x = -5."), vec![-5.0]);
            assert_eq!(numbers("about 1,234.5 km"), vec![1234.5]);
            assert_eq!(numbers("a is 1.25, b is 2.5"), vec![1.25, 2.5]);
            assert_eq!(numbers("a-3"), vec![3.0]);
            assert!(numbers("no digits").is_empty());
            assert_eq!(final_number("first 2 then 40"), Some(40.0));
        }

        #[test]
        fn closeness() {
            assert!(close(391.0, 391.0000001));
            assert!(!close(391.0, 381.0));
            assert!(close(0.0, 1e-9));
        }
    }
}

/// Host tensors and kernels (contract 1.1).
///
/// In a wasm build these are the host's, through the WIT `tensor` interface. In a native
/// build (unit tests, benches) the same API runs the same kernels (`apiary-tensor`)
/// in-process, reading weights from the folder named by `APIARY_WEIGHTS_DIR`, so model
/// code can be tested and measured outside the sandbox.
///
/// Tensors are host-owned: a [`Tensor`] is a handle, dropped when it goes out of scope.
/// Data crosses into the host with [`Tensor::from_f32`] and back with [`Tensor::read`].
/// Open weights with [`Weights::open`] by file name inside the plugin's `weights/`
/// folder; their tensors stay memory-mapped on the host.
///
/// ```no_run
/// use apiary_plugin_api::tensor::{self, Tensor, Weights};
/// # fn demo() -> Result<(), tensor::TensorError> {
/// let w = Weights::open("model.gguf")?;
/// let embd = w.tensor("token_embd.weight")?;
/// let x = tensor::embedding(&embd, &[1, 2, 3])?;
/// let norm = w.tensor("output_norm.weight")?;
/// let h = tensor::rms_norm(&x, &norm, 1e-5)?;
/// let logits = tensor::matmul(&h, &embd, true)?;
/// let next = tensor::argmax(&logits)?;
/// # let _ = (next, Tensor::from_f32(&[1], &[0.0]));
/// # Ok(()) }
/// ```
pub mod tensor {
    pub use crate::bindings::apiary::plugin::tensor::{
        AttentionSpec, Dtype, MetaValue, TensorError,
    };
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::apiary::plugin::tensor::{
        Tensor, Weights, add, append_rows, argmax, attention, backend, embedding, gelu, layer_norm,
        matmul, mul, reshape, rms_norm, rope, sample, scale, silu, slice_rows, softmax,
        token_logprobs,
    };
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::native::*;

    /// Metadata helpers for [`Weights`].
    pub trait MetadataExt {
        fn meta_u64(&self, key: &str) -> Option<u64>;
        fn meta_f32(&self, key: &str) -> Option<f32>;
        fn meta_str(&self, key: &str) -> Option<String>;
        fn meta_texts(&self, key: &str) -> Option<Vec<String>>;
        fn meta_ints(&self, key: &str) -> Option<Vec<i64>>;
        fn meta_floats(&self, key: &str) -> Option<Vec<f64>>;
    }

    impl MetadataExt for Weights {
        fn meta_u64(&self, key: &str) -> Option<u64> {
            match self.metadata(key)? {
                MetaValue::Int(v) => u64::try_from(v).ok(),
                MetaValue::Float(v) if v >= 0.0 => Some(v as u64),
                _ => None,
            }
        }
        fn meta_f32(&self, key: &str) -> Option<f32> {
            match self.metadata(key)? {
                MetaValue::Float(v) => Some(v as f32),
                MetaValue::Int(v) => Some(v as f32),
                _ => None,
            }
        }
        fn meta_str(&self, key: &str) -> Option<String> {
            match self.metadata(key)? {
                MetaValue::Text(s) => Some(s),
                _ => None,
            }
        }
        fn meta_texts(&self, key: &str) -> Option<Vec<String>> {
            match self.metadata(key)? {
                MetaValue::Texts(v) => Some(v),
                _ => None,
            }
        }
        fn meta_ints(&self, key: &str) -> Option<Vec<i64>> {
            match self.metadata(key)? {
                MetaValue::Ints(v) => Some(v),
                _ => None,
            }
        }
        fn meta_floats(&self, key: &str) -> Option<Vec<f64>> {
            match self.metadata(key)? {
                MetaValue::Floats(v) => Some(v),
                _ => None,
            }
        }
    }

    impl From<TensorError> for crate::PluginError {
        fn from(e: TensorError) -> Self {
            crate::PluginError::Internal(format!("{e:?}"))
        }
    }
}
