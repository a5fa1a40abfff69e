//! The model code, run natively on the same kernels the host uses, against an independent
//! reference: `scripts/reference/smollm_reference.py` (Hugging Face `tokenizers` + numpy on
//! weights dequantized by llama.cpp's `gguf` package) produced `fixtures/greedy.json`.
//! Needs the weights: scripts/build-plugins.sh fetches them. These tests keep activations
//! in f32, as the reference does; `fast_path.rs` checks the default 8-bit activations.

use apiary_plugin_api::Request;
use std::path::Path;

fn engine() -> smollm::Engine {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/smollm/weights");
    assert!(
        weights.join(smollm::WEIGHTS_FILE).exists(),
        "{} missing: run scripts/build-plugins.sh (it fetches the model)",
        weights.display()
    );
    apiary_plugin_api::tensor::set_weights_dir(weights);
    // f32 activations, like the numpy reference; tests/fast_path.rs checks the default.
    apiary_tensor::quant::set_exact_activations(true);
    smollm::load().expect("model loads")
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
fn tokenizer_matches_hugging_face_tokenizers() {
    let e = engine();
    for case in fixture()["cases"].as_array().unwrap() {
        assert_eq!(
            e.chat(case["prompt"].as_str().unwrap()),
            ids(&case["prompt_ids"]),
            "{}",
            case["prompt"]
        );
    }
    assert_eq!(
        e.tok.decode(&e.tok.encode("Héllo, wörld! 1234  ok")),
        "Héllo, wörld! 1234  ok"
    );
}

#[test]
fn greedy_output_matches_the_numpy_reference() {
    let e = engine();
    let f = fixture();
    for case in f["cases"].as_array().unwrap() {
        let req = Request {
            prompt: case["prompt"].as_str().unwrap().into(),
            domain: None,
            choices: vec![],
            max_tokens: f["steps"].as_u64().unwrap() as u32,
            temperature: 0.0,
            seed: 0,
            messages: Vec::new(),
        };
        let (out, confidence) = e.generate_ids(&ids(&case["prompt_ids"]), &req).unwrap();
        assert_eq!(
            out,
            ids(&case["output_ids"]),
            "{}: got {:?}",
            case["prompt"],
            e.tok.decode(&out)
        );
        assert!(confidence > 0.0 && confidence <= 1.0);
    }
}

#[test]
fn likelihood_judge_prefers_the_right_answer() {
    let e = engine();
    let q = "What is the capital of France?";
    let right = e.score(q, "The capital of France is Paris.").unwrap();
    let wrong = e.score(q, "The capital of France is Berlin.").unwrap();
    assert!(right > wrong, "{right} vs {wrong}");
}
