//! The default kernels quantize activations to 8 bits per block, including for the Q4_K
//! and Q6_K products. That moves logits in the last bits; this test pins that Gemma's
//! greedy answers stay those of the f32 numpy reference, so a kernel change that loses
//! accuracy shows up here. (A separate test binary: the activation mode is process-wide.)

use apiary_plugin_api::Request;
use std::path::Path;

#[test]
fn eight_bit_activations_keep_the_reference_answers() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/gemma/weights");
    apiary_plugin_api::tensor::set_weights_dir(weights);
    let e = gemma::load().expect("model loads (run scripts/build-plugins.sh)");
    let f: serde_json::Value = serde_json::from_str(include_str!("fixtures/greedy.json")).unwrap();
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
        let (text, _) = e.generate(&req).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap().trim(), "{q}");
    }
}
