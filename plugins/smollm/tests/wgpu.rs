//! The model on the wgpu backend (lavapipe where there is no GPU): every kernel but the
//! embedding gather runs on the device, the greedy output still equals the independent
//! reference, and each decode step costs one GPU submission. A test binary of its own,
//! since the backend is chosen once per process.

use apiary_plugin_api::Request;
use apiary_tensor::backend;
use std::path::Path;

#[test]
fn greedy_output_on_the_gpu_matches_the_reference_in_one_submission_per_token() {
    if !backend::wgpu_for_tests() {
        return;
    }
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/smollm/weights");
    apiary_plugin_api::tensor::set_weights_dir(weights);
    let e = smollm::load().expect("model loads (run scripts/build-plugins.sh)");
    let f: serde_json::Value = serde_json::from_str(include_str!("fixtures/greedy.json")).unwrap();
    let case = &f["cases"][0];
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let req = Request {
        prompt: case["prompt"].as_str().unwrap().into(),
        domain: None,
        choices: vec![],
        max_tokens: f["steps"].as_u64().unwrap() as u32,
        temperature: 0.0,
        seed: 0,
        messages: Vec::new(),
    };
    let before = backend::gpu_submissions().expect("the wgpu backend is in use");
    let start = std::time::Instant::now();
    let (out, confidence) = e.generate_ids(&ids(&case["prompt_ids"]), &req).unwrap();
    let submitted = backend::gpu_submissions().unwrap() - before;
    eprintln!(
        "{} tokens in {:.1?}, {submitted} submissions",
        out.len(),
        start.elapsed()
    );
    assert_eq!(
        out,
        ids(&case["output_ids"]),
        "got {:?}",
        e.tok.decode(&out)
    );
    assert!(confidence > 0.0 && confidence <= 1.0);
    // One read per chosen token (the last one is the stop token), plus at most one early
    // submission while the prompt's ~480 dispatches are recorded.
    let reads = out.len() as u64 + 1;
    assert!(
        (reads..=reads + 1).contains(&submitted),
        "{submitted} submissions for {reads} tokens"
    );
}
