//! The scoring-rule grid that the language-model plugins' examples `smollm_scoring_grid`
//! and `gemma_scoring_grid` print: for each dataset, the accuracy of every way of picking
//! an option from the model's likelihoods, on the seeded sample that
//! `apiary eval --seed S --limit N` takes.

use apiary_plugin_api::lm::{self, Rule};
use std::io::Write;
use std::time::Instant;

/// Per-token log-probabilities of each option, the end of the answer last.
type OptionLogprobs = Vec<Vec<f32>>;

/// What a model gives for one item (see the plugins' `Engine` methods of the same names).
pub struct Model<'a> {
    pub name: &'a str,
    /// Per-token log-probabilities of each option after the question, the end last.
    pub given: &'a dyn Fn(&str, &[&str]) -> OptionLogprobs,
    /// The same after the neutral prompt.
    pub neutral: &'a dyn Fn(&[&str]) -> OptionLogprobs,
    /// The log-probability of each option's letter, the options listed.
    pub letters: &'a dyn Fn(&str, &[&str]) -> Vec<f32>,
    /// The rule the plugin uses for a request with these options.
    pub plugin_rule: &'a dyn Fn(&[String]) -> Rule,
}

/// `host::consensus::pairs::SplitMix`, replicated (the plugins do not depend on the host).
struct SplitMix(u64);

impl SplitMix {
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `apiary eval --seed S --limit N`'s sample of one dataset file. (The shuffle does not
/// depend on N, so a smaller N's sample is the first items of a larger one's.)
pub fn sample(path: &str, seed: u64, n: usize) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut items: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    if items.len() > n {
        SplitMix(seed).shuffle(&mut items);
        items.truncate(n);
    }
    items
}

/// The first of the highest scores, as `lm::best_option` picks.
fn argmax(s: &[f32]) -> usize {
    (0..s.len())
        .max_by(|&a, &b| s[a].total_cmp(&s[b]))
        .unwrap_or(0)
}

/// The grid's columns: each rule without the end of the answer (as OLMES scores), then
/// with it (as the plugins did); then the letters and what the plugin now does.
const COLUMNS: [(Rule, bool); 8] = [
    (Rule::Sum, false),
    (Rule::PerToken, false),
    (Rule::PerChar, false),
    (Rule::Pmi, false),
    (Rule::Sum, true),
    (Rule::PerToken, true),
    (Rule::PerChar, true),
    (Rule::Pmi, true),
];

#[derive(Default)]
struct Row {
    name: String,
    items: usize,
    right: [usize; COLUMNS.len() + 2],
    declined: usize,
    seconds: f64,
}

fn table(m: &Model, seed: u64, rows: &[Row]) -> String {
    let mut t = format!(
        "{} on seed {seed}, accuracy (%) per scoring rule; +end: the end of the answer \
         scored too; letters: the options listed, the letter scored; plugin: the \
         plugin's rule; arithmetic-looking: what `lm::assess` used to decline\n\n\
         | dataset | items | sum | per-token | per-char | pmi | sum+end | per-token+end \
         | per-char+end | pmi+end | letters | plugin | arithmetic-looking | s/item |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        m.name
    );
    for r in rows {
        let total = r.items.max(1);
        let pct = |n: usize| format!("{:.0}", 100.0 * n as f64 / total as f64);
        t.push_str(&format!("| {} | {} |", r.name, r.items));
        for n in r.right {
            t.push_str(&format!(" {} |", pct(n)));
        }
        // Seconds are unknown for items replayed from a dump that has none.
        let seconds = r.seconds / total as f64;
        let seconds = if seconds.is_nan() {
            "-".to_string()
        } else {
            format!("{seconds:.1}")
        };
        t.push_str(&format!(" {} | {seconds} |\n", pct(r.declined)));
    }
    t
}

/// `…_scoring_grid [N] [SEED] [DATASET.jsonl ...]`: print the grid as a markdown table.
/// The datasets take turns item by item, so a run stopped early (the table so far is
/// printed to stderr every 10 rounds) has as many items of each. `GRID_DUMP=file` writes
/// every item's log-probabilities as JSON lines; `GRID_REPLAY=file` reads them back
/// instead of running the model (the table again, e.g. after a change of the plugin's
/// rule, in seconds).
pub fn main(m: Model) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(100);
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/datasets");
    let paths: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        ["arc_easy", "arc_challenge", "mmlu", "boolq"]
            .iter()
            .map(|d| format!("{root}/{d}.jsonl"))
            .collect()
    };
    let samples: Vec<Vec<serde_json::Value>> = paths.iter().map(|p| sample(p, seed, n)).collect();
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|p| Row {
            name: std::path::Path::new(p)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..Row::default()
        })
        .collect();
    // Every item's log-probabilities, for analyses the table does not make.
    let mut dump = std::env::var("GRID_DUMP")
        .ok()
        .map(|p| std::fs::File::create(p).expect("GRID_DUMP is writable"));
    let replay: std::collections::HashMap<String, serde_json::Value> =
        match std::env::var("GRID_REPLAY") {
            Ok(p) => std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .map(|v| (v["id"].as_str().unwrap().to_string(), v))
                .collect(),
            Err(_) => Default::default(),
        };
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let lists = |v: &serde_json::Value| -> OptionLogprobs {
        v.as_array().unwrap().iter().map(floats).collect()
    };
    let longest = samples.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for (row, items) in rows.iter_mut().zip(&samples) {
            let Some(item) = items.get(k) else { continue };
            let t = Instant::now();
            let q = item["question"].as_str().unwrap();
            let choices: Vec<String> = item["choices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            let options: Vec<&str> = choices.iter().map(String::as_str).collect();
            let gold = (item["answer"].as_str().unwrap().as_bytes()[0] - b'A') as usize;
            let (given, neutral, letters) = match replay.get(item["id"].as_str().unwrap()) {
                Some(r) => (
                    lists(&r["given"]),
                    lists(&r["neutral"]),
                    floats(&r["letters"]),
                ),
                None if !replay.is_empty() => continue,
                None => (
                    (m.given)(q, &options),
                    (m.neutral)(&options),
                    (m.letters)(q, &options),
                ),
            };
            let mut right = |c: usize, scores: &[f32]| {
                row.right[c] += usize::from(argmax(scores) == gold);
            };
            for (c, &(rule, end)) in COLUMNS.iter().enumerate() {
                let l = lm::likelihoods(&options, &given, Some(&neutral), end);
                right(c, &lm::option_scores(rule, &l));
            }
            right(COLUMNS.len(), &letters);
            let rule = (m.plugin_rule)(&choices);
            let l = lm::likelihoods(&options, &given, Some(&neutral), rule.scores_end());
            right(COLUMNS.len() + 1, &lm::option_scores(rule, &l));
            row.items += 1;
            row.declined += usize::from(apiary_plugin_api::text::looks_arithmetic(q));
            row.seconds += match replay.get(item["id"].as_str().unwrap()) {
                Some(r) => r["seconds"].as_f64().unwrap_or(f64::NAN),
                None => t.elapsed().as_secs_f64(),
            };
            if let Some(f) = dump.as_mut() {
                let line = serde_json::json!({
                    "dataset": row.name, "id": item["id"], "gold": gold,
                    "chars": options.iter().map(|o| o.trim().chars().count()).collect::<Vec<_>>(),
                    "given": given, "neutral": neutral, "letters": letters,
                    "seconds": t.elapsed().as_secs_f64(),
                });
                writeln!(f, "{line}").unwrap();
                f.flush().unwrap();
            }
        }
        eprint!("\r{} round {}/{longest} ", m.name, k + 1);
        if (k + 1) % 10 == 0 && k + 1 < longest {
            eprintln!("\n{}", table(&m, seed, &rows));
        }
    }
    eprintln!();
    println!("{}", table(&m, seed, &rows));
}
