//! The accuracy of each way of scoring multiple-choice options with SmolLM2, natively, on
//! the seeded sample `apiary eval --seed SEED --limit N` takes of each dataset:
//! `cargo run --release -p smollm --example smollm_scoring_grid -- [N] [SEED] [DATASET.jsonl ...]`
//! (N 100, seed 1, and ARC-Easy, ARC-Challenge, MMLU and BoolQ by default). Seed 1 is the
//! development sample; seed 2 is held out. `GRID_DUMP=file` also writes every item's
//! log-probabilities as JSON lines, and `GRID_REPLAY=file` makes the table from such a
//! file instead of the model.
#[path = "../../gemma/examples/grid/mod.rs"]
mod grid;

fn main() {
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/plugins/smollm/weights"
    );
    apiary_plugin_api::tensor::set_weights_dir(weights);
    let e = smollm::load().expect("run scripts/build-plugins.sh to fetch the model");
    grid::main(grid::Model {
        name: "smollm",
        given: &|q, o| e.option_logprobs(q, o).unwrap(),
        neutral: &|o| e.neutral_logprobs(o).unwrap(),
        letters: &|q, o| e.letter_logprobs(q, o).unwrap(),
        plugin_rule: &|c| apiary_plugin_api::lm::Rule::for_choices(c, smollm::OPTIONS_RULE),
    });
}
