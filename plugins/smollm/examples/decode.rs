//! Native decode speed of the model code on the host kernels (no sandbox):
//! `cargo run --release -p smollm --example decode -- [tokens]`.
use apiary_plugin_api::Request;
use std::time::Instant;

fn main() {
    let weights = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins/smollm/weights");
    apiary_plugin_api::tensor::set_weights_dir(weights);
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let e = smollm::load().expect("run scripts/build-plugins.sh to fetch the model");
    let prompt = e.chat("Write a short poem about bees.");
    let req = Request {
        prompt: String::new(),
        domain: None,
        choices: vec![],
        max_tokens: n,
        temperature: 0.0,
        seed: 0,
        messages: Vec::new(),
    };
    let t = Instant::now();
    let mut cache = e.model.cache().unwrap();
    e.model.forward(&prompt, &mut cache, false).unwrap();
    let prefill = t.elapsed();
    let t = Instant::now();
    let (ids, _) = e.generate_ids(&prompt, &req).unwrap();
    let total = t.elapsed();
    let decode = total.saturating_sub(prefill);
    println!(
        "prompt {} tokens: prefill {:.1} ms ({:.0} tok/s); generated {} tokens: decode {:.1} tok/s",
        prompt.len(),
        prefill.as_secs_f64() * 1e3,
        prompt.len() as f64 / prefill.as_secs_f64(),
        ids.len(),
        ids.len() as f64 / decode.as_secs_f64()
    );
}
