//! The default kernels quantize activations to 8 bits per block (as llama.cpp does for
//! these weight types). That moves logits in the last bits, so a near-tied greedy choice
//! can go the other way: against the f32 numpy reference the first prompt's answer is
//! identical and the second agrees for its first 9 tokens, then picks a different word.
//! This test pins that, so a kernel change that loses accuracy shows up here.

use apiary_plugin_api::Request;
use std::path::Path;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn eight_bit_activations_stay_close_to_the_reference() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/smollm/weights");
    apiary_plugin_api::tensor::set_weights_dir(weights);
    let e = smollm::load().expect("model loads (run scripts/build-plugins.sh)");
    let f: serde_json::Value = serde_json::from_str(include_str!("fixtures/greedy.json")).unwrap();
    let steps = f["steps"].as_u64().unwrap() as u32;
    let run = |case: &serde_json::Value| {
        let req = Request {
            prompt: String::new(),
            domain: None,
            choices: vec![],
            max_tokens: steps,
            temperature: 0.0,
            seed: 0,
            messages: Vec::new(),
        };
        e.generate_ids(&ids(&case["prompt_ids"]), &req).unwrap().0
    };
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(run(&cases[0]), ids(&cases[0]["output_ids"]));
    let got = run(&cases[1]);
    let want = ids(&cases[1]["output_ids"]);
    let common = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    assert!(
        common >= 9,
        "only {common} tokens agree: {got:?} vs {want:?}"
    );
}
