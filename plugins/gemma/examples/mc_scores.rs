//! Each multiple-choice item's option scores, natively, with 8-bit or f32 activations:
//! `cargo run --release -p gemma --example mc_scores -- WEIGHTS_DIR DATASET.jsonl q8|exact`
//! writes one JSON line per item (`id`, `scores`, `gold`), the scores the plugin's
//! `answer` reports, and the token ids they were computed over (`context`, `options`,
//! `neutral`), so `scripts/reference/llama_scores.py` can score the same ids with
//! llama.cpp (yes/no items: PMI with the end of the answer, as the plugin does). Two hosts' kernels, or the two activation modes, are compared item
//! by item with `scripts/reference/compare_scores.py`: how far the scores moved and how
//! many answers flipped, which an accuracy figure alone cannot tell apart from a bug.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, data, mode] = &args[..] else {
        eprintln!("usage: mc_scores WEIGHTS_DIR DATASET.jsonl q8|exact");
        std::process::exit(2);
    };
    apiary_plugin_api::tensor::set_weights_dir(dir);
    apiary_tensor::quant::set_exact_activations(mode == "exact");
    let engine = gemma::load().expect("model loads");
    let text = std::fs::read_to_string(data).expect("dataset readable");
    for line in text.lines() {
        let item: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if item["kind"] != "choice" {
            continue;
        }
        let choices: Vec<String> = serde_json::from_value(item["choices"].clone()).unwrap();
        let options: Vec<&str> = choices.iter().map(String::as_str).collect();
        let rule = apiary_plugin_api::lm::Rule::for_choices(&choices, gemma::OPTIONS_RULE);
        let question = item["question"].as_str().unwrap_or_default();
        let scores = engine.option_scores(question, &options, rule).unwrap();
        let context = engine.prompt(question);
        let neutral: Vec<u32> = context[..1]
            .iter()
            .copied()
            .chain(engine.tok.encode(apiary_plugin_api::lm::NEUTRAL_PROMPT))
            .collect();
        let ids: Vec<Vec<u32>> = options.iter().map(|o| engine.answer_ids(o)).collect();
        let out = serde_json::json!({
            "id": item["id"], "scores": scores, "gold": item["answer"],
            "rule": rule.name(), "context": context, "neutral": neutral, "options": ids,
        });
        println!("{out}");
    }
}
