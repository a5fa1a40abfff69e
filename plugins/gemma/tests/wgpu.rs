//! Gemma 3 on the wgpu backend (lavapipe where there is no GPU). Besides what SmolLM2's
//! GPU test covers, this architecture takes the paths where device and host meet: the
//! 170 MiB tied embedding is larger than one GPU binding, so each step's output product
//! reads the hidden state back and runs on the CPU; sliding-window attention, per-head
//! QK-norm on reshaped device tensors, and multiple-choice scoring over KV caches forked
//! on the device. Its own test binary: the backend is chosen once per process.

use apiary_plugin_api::Request;
use apiary_tensor::backend;
use std::path::Path;

#[test]
fn greedy_output_and_option_scores_on_the_gpu_match_the_cpu() {
    if !backend::wgpu_for_tests() {
        return;
    }
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/gemma/weights");
    apiary_plugin_api::tensor::set_weights_dir(weights);
    // The CPU's share of the work (the output product) in f32, as in the reference.
    apiary_tensor::quant::set_exact_activations(true);
    let e = gemma::load().expect("model loads (run scripts/build-plugins.sh)");
    let f: serde_json::Value = serde_json::from_str(include_str!("fixtures/greedy.json")).unwrap();
    let case = &f["cases"][0];
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
    let start = std::time::Instant::now();
    let (out, _) = e.generate_ids(&e.prompt(q), &req).unwrap();
    eprintln!("{} tokens in {:.1?}", out.len(), start.elapsed());
    let want: Vec<u32> = case["output_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(out, want, "{q}: {:?}", e.tok.decode(&out));
    let s = e
        .scores(q, &["Berlin", "Paris", "Madrid"])
        .expect("scores on the device");
    assert!(s[1] > s[0] && s[1] > s[2], "{s:?}");
}
