//! The Gemma model code, run natively on the same kernels the host uses, against an
//! independent reference: `scripts/reference/gemma_reference.py` (Google's
//! `sentencepiece` on a model built from the GGUF vocabulary, and numpy on weights
//! dequantized by llama.cpp's `gguf` package) produced `fixtures/greedy.json`. Needs the
//! weights: scripts/build-plugins.sh fetches them. Activations stay in f32, as in the
//! reference.

use apiary_plugin_api::Request;
use std::path::Path;

fn engine() -> gemma::Engine {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/gemma/weights");
    assert!(
        weights.join(gemma::WEIGHTS_FILE).exists(),
        "{} missing: run scripts/build-plugins.sh (it fetches the model)",
        weights.display()
    );
    apiary_plugin_api::tensor::set_weights_dir(weights);
    apiary_tensor::quant::set_exact_activations(true);
    gemma::load().expect("model loads")
}

fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/greedy.json")).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_matches_sentencepiece() {
    let e = engine();
    let f = fixture();
    for case in f["cases"].as_array().unwrap() {
        let q = case["question"].as_str().unwrap();
        assert_eq!(e.prompt(q), ids(&case["prompt_ids"]), "{q}");
    }
    for case in f["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(e.tok.encode(text), ids(&case["ids"]), "{text}");
        assert_eq!(e.tok.decode(&e.tok.encode(text)), text);
    }
}

#[test]
fn greedy_output_matches_the_numpy_reference() {
    let e = engine();
    let f = fixture();
    for case in f["cases"].as_array().unwrap() {
        let q = case["question"].as_str().unwrap();
        let req = Request {
            prompt: q.into(),
            domain: None,
            choices: vec![],
            max_tokens: f["steps"].as_u64().unwrap() as u32,
            temperature: 0.0,
            seed: 0,
            messages: Vec::new(),
        };
        let (out, _) = e.generate_ids(&e.prompt(q), &req).unwrap();
        assert_eq!(
            out,
            ids(&case["output_ids"]),
            "{q}: {:?}",
            e.tok.decode(&out)
        );
    }
}

#[test]
fn multiple_choice_picks_the_likely_option() {
    use apiary_plugin_api::Specialist;
    let e = engine();
    let s = e
        .scores(
            "What is the capital of France?",
            &["Berlin", "Paris", "Madrid"],
        )
        .unwrap();
    assert!(s[1] > s[0] && s[1] > s[2], "{s:?}");
    let g = gemma::Gemma::default();
    let req = Request::question("What is the capital of France?");
    let judgment = g.judge(&req, "B. Paris", "A. Berlin");
    assert!(
        matches!(judgment, apiary_plugin_api::Judgment::Prefer(p) if p > 0.5),
        "{judgment:?}"
    );
}
