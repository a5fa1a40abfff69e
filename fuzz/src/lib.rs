//! Fuzz targets for the inputs Apiary takes from people it does not trust: plugins (the
//! tensor calls they make, the weights files they ship, their `plugin.toml`), peers (wire
//! messages, round transcripts), HTTP clients (chat requests) and, for the arith plugin,
//! users' questions.
//!
//! Each target is a plain function, `NAME(data: &[u8])`, that must not panic for any
//! input: a panic (or an abort, a hang, a blown memory limit) is a bug. The functions
//! drive the real code, and assert what must hold whatever the input (a tensor quota
//! never exceeded, a parsed tensor lying inside its file, a message the gate accepted
//! opening again after a round trip, ...).
//!
//! - `cargo fuzz` runs them through the thin wrappers in `fuzz_targets/` (feature
//!   `libfuzzer`; `scripts/fuzz.sh` is the front end);
//! - `tests/replay.rs` runs every input committed under `corpus/NAME/` and
//!   `regressions/NAME/` through them in the ordinary test suite, without libFuzzer.
//!
//! The targets that need the node runtime (`apiary`) are behind the default feature
//! `host`; `gguf`, `safetensors` and `arith` build without it.

pub mod build;

use apiary_tensor::weights::{MappedFile, WeightsFile};
use apiary_tensor::{DType, Storage, numel};
use std::sync::Arc;

/// Tensors with at most this many values are dequantized in full by the weights targets.
const MAX_DEQUANTIZE: usize = 1 << 16;

/// Text of an input: the bytes if they are UTF-8, else their lossy decoding.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Values of `elems` elements of `dtype` take exactly `len` bytes.
fn bytes_fit(dtype: DType, shape: &[usize], len: usize) -> bool {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|elems| {
            let (per, bytes) = dtype.block();
            elems
                .is_multiple_of(per)
                .then_some(elems / per)
                .and_then(|blocks| blocks.checked_mul(bytes))
        })
        == Some(len)
}

/// What must hold for every tensor of a parsed weights file: it lies inside its mapping,
/// its bytes are exactly its shape's worth, and it dequantizes to its shape's values.
fn check_weights(w: &WeightsFile) {
    for name in w.names() {
        let entry = &w.tensors[&name];
        let t = w
            .tensor(&name)
            .unwrap_or_else(|e| panic!("listed tensor {name:?} cannot be made: {e}"));
        let Storage::Mapped { file, start, len } = &t.storage else {
            panic!("weights tensor {name:?} is not mapped");
        };
        assert!(
            start
                .checked_add(*len)
                .is_some_and(|end| end <= file.bytes().len()),
            "tensor {name:?} ({start}+{len}) lies outside its {}-byte mapping",
            file.bytes().len()
        );
        assert!(
            bytes_fit(t.dtype, &t.shape, *len),
            "tensor {name:?}: {len} bytes for {:?} {:?}",
            t.shape,
            t.dtype
        );
        assert_eq!((entry.start, entry.len), (*start, *len));
        assert!(!t.shape.is_empty(), "tensor {name:?} has no dimensions");
        if numel(&t.shape) <= MAX_DEQUANTIZE {
            let values = t
                .to_f32()
                .unwrap_or_else(|e| panic!("tensor {name:?} does not dequantize: {e}"));
            assert_eq!(values.len(), numel(&t.shape), "tensor {name:?}");
        }
    }
}

fn parse_weights(name: &str, data: &[u8]) -> Option<WeightsFile> {
    let file = Arc::new(MappedFile::from_bytes(data).expect("an anonymous mapping"));
    WeightsFile::parse(name, file).ok()
}

/// GGUF: the header parser on any bytes, then the whole weights-file parse (Q5_0 widening
/// included) and every tensor it lists.
pub fn gguf(data: &[u8]) {
    let Ok(g) = apiary_tensor::gguf::Gguf::parse(data) else {
        return;
    };
    for (name, t) in &g.tensors {
        assert_eq!(name, &t.name);
        assert!(
            t.start
                .checked_add(t.len)
                .is_some_and(|end| end <= data.len()),
            "tensor {name:?} lies past the end of the file"
        );
        let stored = if t.q5_0 {
            let elems = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            elems.is_some_and(|e| {
                e.is_multiple_of(32) && e / 32 * apiary_tensor::gguf::Q5_0_BLOCK_BYTES == t.len
            })
        } else {
            bytes_fit(t.dtype, &t.shape, t.len)
        };
        assert!(stored, "tensor {name:?}: {} bytes for {:?}", t.len, t.shape);
        assert!(
            (1..=4).contains(&t.shape.len()),
            "tensor {name:?}: {:?}",
            t.shape
        );
    }
    for key in g.metadata.keys() {
        let _ = g.get(key).map(|v| (v.as_u64(), v.as_f64(), v.as_str()));
    }
    if let Some(w) = parse_weights("fuzz.gguf", data) {
        check_weights(&w);
        for key in g.metadata.keys() {
            assert!(w.metadata(key).is_some(), "metadata {key:?} lost");
        }
    }
}

/// Safetensors: the weights-file parse of any bytes (as if named `*.safetensors`) and
/// every tensor it lists. Inputs that start with `GGUF` take the GGUF path.
pub fn safetensors(data: &[u8]) {
    if let Some(w) = parse_weights("fuzz.safetensors", data) {
        check_weights(&w);
        if let apiary_tensor::weights::Format::Safetensors { metadata } = &w.format {
            for key in metadata.keys() {
                assert!(w.metadata(key).is_some());
            }
        }
    }
}

/// The arith plugin on a question: the first line is the prompt, the next two are
/// candidate answers to judge, any further lines are multiple-choice options.
pub fn arith(data: &[u8]) {
    use apiary_plugin_api::{Request, Specialist};
    let text = text(data);
    let mut lines = text.split('\n');
    let prompt = lines.next().unwrap_or_default().to_string();
    let first = lines.next().unwrap_or_default();
    let second = lines.next().unwrap_or_default();
    let choices: Vec<String> = lines.take(8).map(str::to_string).collect();
    if let Ok(solution) = arith::solve(&prompt) {
        let shown = solution.to_string();
        assert!(!shown.is_empty());
        if matches!(solution, arith::Solution::Root { .. }) {
            assert!(solution.value().is_finite(), "{shown}");
        }
    }
    let plugin = arith::Arith;
    let mut req = Request {
        prompt: prompt.clone(),
        domain: None,
        choices: Vec::new(),
        max_tokens: 64,
        temperature: 0.0,
        seed: 0,
        messages: Vec::new(),
    };
    let confidence = plugin.assess(&req, &[]);
    assert!((0.0..=1.0).contains(&confidence), "assess {confidence}");
    let _ = plugin.answer(&req);
    if !choices.is_empty() {
        req.choices = choices;
        if let Ok(a) = plugin.answer(&req) {
            let i = a.choice.expect("a multiple-choice answer names its option");
            assert!((i as usize) < req.choices.len());
        }
    }
    let _ = plugin.compare(&prompt, first, second);
    let _ = apiary_plugin_api::text::final_number(&prompt);
}

#[cfg(feature = "host")]
mod host;
#[cfg(feature = "host")]
pub use host::{chat_request, manifest, tensor_ops, transcript, wire};

/// A fuzz target: any bytes, and a panic is a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    #[cfg(feature = "host")]
    ("tensor_ops", tensor_ops),
    ("gguf", gguf),
    ("safetensors", safetensors),
    #[cfg(feature = "host")]
    ("manifest", manifest),
    #[cfg(feature = "host")]
    ("wire", wire),
    #[cfg(feature = "host")]
    ("transcript", transcript),
    #[cfg(feature = "host")]
    ("chat_request", chat_request),
    ("arith", arith),
];
