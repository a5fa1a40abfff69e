//! Native prefill and decode speed of the model code on the host kernels (no sandbox):
//! `cargo run --release -p qwen --example qwen_decode -- [tokens]`.
use apiary_plugin_api::Request;
use std::time::Instant;

fn main() {
    let weights =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/qwen/weights");
    apiary_plugin_api::tensor::set_weights_dir(weights);
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let t = Instant::now();
    let e = qwen::load().expect("run scripts/build-plugins.sh to fetch the model");
    let first = t.elapsed();
    // Weights stay parsed (and widened) in the host's cache; a fresh instance per round
    // pays for the tokenizer and the tensor handles only.
    let t = Instant::now();
    let e2 = qwen::load().unwrap();
    println!(
        "load {:.0} ms (weights cached: {:.0} ms)",
        first.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(e2);
    let prompt = e.chat("Write a Python function that checks whether a number is prime.");
    let req = Request {
        max_tokens: n,
        ..Request::question("")
    };
    let t = Instant::now();
    let mut cache = e.model.cache().unwrap();
    e.model
        .forward(&prompt, &mut cache, prompt.len() - 1)
        .unwrap();
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
    println!("{}", e.tok.decode(&ids));
}
