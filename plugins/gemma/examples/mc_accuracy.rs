//! Multiple-choice accuracy of the model natively, with f32 or 8-bit activations:
//! `cargo run --release -p gemma --example mc_accuracy -- WEIGHTS_DIR DATASET.jsonl [N]`
//! (choice items only; the same scoring as the plugin's `answer`).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, data) = (&args[0], &args[1]);
    let n: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    apiary_plugin_api::tensor::set_weights_dir(dir);
    let engine = gemma::load().expect("model loads");
    let items: Vec<serde_json::Value> = std::fs::read_to_string(data)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "choice")
        .take(n)
        .collect();
    for exact in [true, false] {
        apiary_tensor::quant::set_exact_activations(exact);
        let t = std::time::Instant::now();
        let mut right = 0;
        for item in &items {
            let options: Vec<&str> = item["choices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let choices: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            let rule = apiary_plugin_api::lm::Rule::for_choices(&choices, gemma::OPTIONS_RULE);
            let l = engine
                .likelihoods(item["question"].as_str().unwrap(), &options, rule)
                .unwrap();
            let s = apiary_plugin_api::lm::option_scores(rule, &l);
            let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
            let gold = (item["answer"].as_str().unwrap().as_bytes()[0] - b'A') as usize;
            right += usize::from(best == gold);
        }
        println!(
            "exact activations {exact}: {right}/{} right, {:.2} s/item",
            items.len(),
            t.elapsed().as_secs_f64() / items.len() as f64
        );
    }
}
