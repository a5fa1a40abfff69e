//! Ask the model natively (on the host kernels, no sandbox):
//! `cargo run --release -p gemma --example ask -- WEIGHTS_DIR "question" [choice ...]`
use apiary_plugin_api::{Request, Specialist};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: ask WEIGHTS_DIR QUESTION [CHOICE...]");
    let prompt = args.next().expect("a question");
    let choices: Vec<String> = args.collect();
    apiary_plugin_api::tensor::set_weights_dir(dir);
    let t = std::time::Instant::now();
    let engine = gemma::load().expect("model loads");
    eprintln!("loaded in {:?}", t.elapsed());
    eprintln!("prompt ids: {:?}", engine.prompt(&prompt));
    let req = Request {
        prompt,
        domain: None,
        choices,
        max_tokens: 24,
        temperature: 0.0,
        seed: 0,
        messages: Vec::new(),
    };
    let t = std::time::Instant::now();
    let answer = gemma::Gemma::default().answer(&req);
    eprintln!("answered in {:?}", t.elapsed());
    println!("{answer:?}");
}
