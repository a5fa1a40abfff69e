//! Prefill and decode speed of the three language-model plugins, natively (the plugin's
//! model code on the host kernels, in this process) and in the sandbox (the built
//! `.wasm` through the host's loader, as a node runs it), on one prompt each. The
//! native run also prints the prompt's token ids, so `scripts/bench-anchor.sh` can give
//! llama.cpp exactly the same tokens and count.
//!
//! `cargo run --release -p apiary-benches --example decode -- [--tokens N] [--json]
//!  [--only smollm|gemma|qwen] [--reps R]`
//!
//! Decode is timed greedily for N tokens after the prompt, best of R runs. In the sandbox
//! the plugin decides when to stop (gemma stops at a line break), so decode there is
//! (t(N) − t(1)) ÷ (tokens(N) − tokens(1)) over two `answer` calls on a warm instance,
//! and prefill is the prompt's tokens over t(1) less one decode step.

use apiary::plugins::{Plugin, loader};
use apiary::round;
use apiary::sandbox::{Sandbox, SandboxConfig};
use apiary_plugin_api::tensor::{self, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An ARC-style question: about a hundred tokens, the length of a real round's prompt.
const PROMPT: &str = "Read the question and the four options, then explain step by step which \
option is correct and why the others are wrong.\nQuestion: A student places a metal spoon and \
a wooden spoon in a cup of hot water. After a few minutes the metal spoon feels hotter than \
the wooden spoon. Which statement best explains this?\nA. Metal is a better conductor of heat \
than wood.\nB. Wood absorbs more heat than metal.\nC. Metal has a lower melting point than \
wood.\nD. Wood is a better conductor of heat than metal.";

/// Gemma's plugin answers one line (it stops at a line break), so its prompt asks for a
/// long one: the sandboxed decode then runs as many steps as the others'.
const ONE_LINE_PROMPT: &str = "List the names of forty different animals, separated by commas, \
all on one line, without numbering them.";

fn prompt_of(model: &str) -> &'static str {
    if model == "gemma" {
        ONE_LINE_PROMPT
    } else {
        PROMPT
    }
}

struct Options {
    tokens: usize,
    reps: usize,
    json: bool,
    only: Option<String>,
}

#[derive(Default)]
struct Figures {
    prompt_ids: Vec<u32>,
    prefill_s: f64,
    decode_s: f64,
    generated: usize,
}

fn plugin_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(name)
}

/// Bytes of weights one decode step reads: every tensor once, except the embedding table,
/// of which one row is read, unless it doubles as the output matrix (tied embeddings).
fn bytes_per_token(dir: &Path) -> u64 {
    let file = std::fs::read_dir(dir.join("weights"))
        .expect("weights folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .expect("a .gguf in weights/");
    let data = std::fs::read(&file).expect("read gguf");
    let g = apiary_tensor::gguf::Gguf::parse(&data).expect("parse gguf");
    let tied = !g.tensors.contains_key("output.weight");
    g.tensors
        .values()
        .map(|t| {
            if t.name == "token_embd.weight" && !tied {
                (t.len / t.shape.iter().skip(1).product::<usize>().max(1)) as u64
            } else {
                t.len as u64
            }
        })
        .sum()
}

/// Prefill `prompt`, then `n` greedy steps; `forward` runs tokens through the model and
/// returns the last row's logits.
fn time_native(prompt: &[u32], n: usize, mut forward: impl FnMut(&[u32]) -> Tensor) -> Figures {
    let t = Instant::now();
    let mut logits = forward(prompt);
    let prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..n {
        let next = tensor::argmax(&logits).expect("argmax");
        logits = forward(&[next]);
    }
    Figures {
        prompt_ids: prompt.to_vec(),
        prefill_s,
        decode_s: t.elapsed().as_secs_f64(),
        generated: n,
    }
}

fn native(name: &str, n: usize) -> Figures {
    tensor::set_weights_dir(plugin_dir(name).join("weights"));
    let missing = "run scripts/build-plugins.sh to build the plugins and fetch the models";
    match name {
        "smollm" => {
            let e = smollm::load().expect(missing);
            let ids = e.chat(PROMPT);
            let mut cache = e.model.cache().unwrap();
            time_native(&ids, n, |x| e.model.forward(x, &mut cache, false).unwrap())
        }
        "gemma" => {
            let e = gemma::load().expect(missing);
            let ids = e.prompt(ONE_LINE_PROMPT);
            let mut cache = e.model.cache().unwrap();
            time_native(&ids, n, |x| {
                e.model.forward(x, &mut cache, x.len() - 1).unwrap()
            })
        }
        "qwen" => {
            let e = qwen::load().expect(missing);
            let ids = e.chat(PROMPT);
            let mut cache = e.model.cache().unwrap();
            time_native(&ids, n, |x| {
                e.model.forward(x, &mut cache, x.len() - 1).unwrap()
            })
        }
        other => panic!("unknown model {other}"),
    }
}

/// Two `answer` calls on a warm instance: one token, then up to `n + 1`.
fn sandboxed(
    sandbox: &Sandbox,
    plugin: &Plugin,
    prompt: &str,
    prompt_len: usize,
    n: usize,
) -> Figures {
    let mut session = plugin.session(sandbox, 1).expect("instantiate");
    let mut ask = |max_tokens: usize| {
        let mut req = round::request(prompt, 1);
        req.max_tokens = max_tokens as u32;
        let t = Instant::now();
        let a = session.answer(&req).expect("answer");
        (t.elapsed().as_secs_f64(), a.tokens as usize)
    };
    ask(1); // loads the model into the instance (the weights are cached by the host)
    let (t1, k1) = ask(1);
    let (tn, kn) = ask(n + 1);
    let steps = kn.saturating_sub(k1);
    assert!(
        steps >= n / 2,
        "the plugin stopped after {kn} of {n} tokens: give it a prompt with a longer answer"
    );
    let step = (tn - t1).max(0.0) / steps as f64;
    Figures {
        prompt_ids: Vec::with_capacity(prompt_len),
        prefill_s: (t1 - step).max(1e-9),
        decode_s: (tn - t1).max(1e-9),
        generated: steps,
    }
}

fn best(reps: usize, mut f: impl FnMut() -> Figures) -> Figures {
    let mut all: Vec<Figures> = (0..reps.max(1)).map(|_| f()).collect();
    let prefill = all
        .iter()
        .map(|f| f.prefill_s)
        .fold(f64::INFINITY, f64::min);
    let decode = all
        .iter()
        .map(|f| f.decode_s / f.generated as f64)
        .fold(f64::INFINITY, f64::min);
    let mut out = all.swap_remove(0);
    out.prefill_s = prefill;
    out.decode_s = decode * out.generated as f64;
    out
}

fn parse() -> Options {
    let mut o = Options {
        tokens: 64,
        reps: 3,
        json: false,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--tokens" => o.tokens = args.next().and_then(|v| v.parse().ok()).expect("N"),
            "--reps" => o.reps = args.next().and_then(|v| v.parse().ok()).expect("R"),
            "--only" => o.only = args.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn main() {
    let o = parse();
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    for name in ["smollm", "gemma", "qwen"] {
        if o.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let dir = plugin_dir(name);
        let nat = best(o.reps, || native(name, o.tokens));
        let plugin = loader::load(&sandbox, None, &dir).expect("plugin loads");
        let prompt = prompt_of(name);
        let sbx = best(o.reps, || {
            sandboxed(&sandbox, &plugin, prompt, nat.prompt_ids.len(), o.tokens)
        });
        let p = nat.prompt_ids.len() as f64;
        let bytes = bytes_per_token(&dir);
        let row = serde_json::json!({
            "model": name,
            "prompt_ids": nat.prompt_ids,
            "tokens": o.tokens,
            "bytes_per_token": bytes,
            "native": {"prefill_tok_s": p / nat.prefill_s,
                       "decode_tok_s": nat.generated as f64 / nat.decode_s},
            "sandbox": {"prefill_tok_s": p / sbx.prefill_s,
                        "decode_tok_s": sbx.generated as f64 / sbx.decode_s,
                        "decode_tokens": sbx.generated},
        });
        if o.json {
            println!("{row}");
        } else {
            println!(
                "{name}: prompt {} tokens, {:.1} MB read per token\n  native  prefill {:6.1} tok/s  decode {:6.1} tok/s\n  sandbox prefill {:6.1} tok/s  decode {:6.1} tok/s ({} tokens)",
                nat.prompt_ids.len(),
                bytes as f64 / 1e6,
                row["native"]["prefill_tok_s"].as_f64().unwrap(),
                row["native"]["decode_tok_s"].as_f64().unwrap(),
                row["sandbox"]["prefill_tok_s"].as_f64().unwrap(),
                row["sandbox"]["decode_tok_s"].as_f64().unwrap(),
                sbx.generated
            );
        }
    }
}
