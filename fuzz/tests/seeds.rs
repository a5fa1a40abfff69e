//! The hand-made seeds of the corpora: valid inputs each target should accept, built with
//! the real code (a signed envelope by `wire::seal`, a transcript by `Transcript::build`).
//! The tests here check that they are still valid; `write_seeds` (ignored) writes them
//! to `corpus/NAME/seed-*`:
//!
//! ```text
//! cargo test --release -p apiary-fuzz --test seeds -- --ignored write_seeds
//! ```

use apiary_fuzz::build::{self, GgufTensor, Meta};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn gguf() -> Seeds {
    let one = |align: u32| {
        build::gguf(
            3,
            &[("general.alignment", Meta::U32(align))],
            &[GgufTensor {
                name: "w",
                ggml_type: 0,
                shape: vec![2, 2],
                data: [1.0f32, 2.0, 3.0, 4.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            }],
        )
    };
    vec![
        ("seed-every-type.gguf", build::tiny_gguf()),
        (
            "seed-v2-metadata-only.gguf",
            build::gguf(
                2,
                &[
                    ("general.architecture", Meta::Str("gemma3")),
                    ("general.name", Meta::Str("x")),
                ],
                &[],
            ),
        ),
        ("seed-empty.gguf", build::gguf(3, &[], &[])),
        ("seed-align-32.gguf", one(32)),
        ("seed-align-64.gguf", one(64)),
    ]
}

fn safetensors() -> Seeds {
    vec![
        ("seed-tiny.safetensors", build::tiny_safetensors()),
        ("seed-empty.safetensors", build::safetensors("{}", &[])),
        (
            "seed-metadata.safetensors",
            build::safetensors(r#"{"__metadata__":{"format":"pt","n":"1"}}"#, &[]),
        ),
        (
            "seed-f16.safetensors",
            build::safetensors(
                r#"{"h":{"dtype":"F16","shape":[1,2],"data_offsets":[0,4]}}"#,
                &[0, 60, 0, 188],
            ),
        ),
    ]
}

fn arith() -> Seeds {
    [
        ("seed-times", "What is 17 * 23?\n17 * 23 = 391\nIt is 381"),
        (
            "seed-words",
            "What is 17 times 23?\n391\n381\n381\n391\n401",
        ),
        ("seed-equation", "Solve for x: 2(x + 3) = 14\nx = 4\nx = 5"),
        ("seed-percent", "What is 15% of 80?\n12\n\n"),
        ("seed-root", "What is the square root of 144?\n12\n13"),
        ("seed-power", "What is 2 to the power of 10? 2^3^2\n1024"),
        ("seed-unicode", "√16 × 3 ÷ 2 − 1,000\n-994\n"),
        ("seed-prose", "What is the capital of France?\nParis\nLyon"),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.as_bytes().to_vec()))
    .collect()
}

#[cfg(feature = "host")]
mod host {
    use super::Seeds;
    use apiary::consensus::Outcome;
    use apiary::consensus::scoring::Standing;
    use apiary::ledger::NodeKey;
    use apiary::ledger::Transcript;
    use apiary::ledger::transcript::{AnswerMsg, CalibrationCheck, Member, Params, VerdictMsg};
    use apiary::swarm::wire::{self, Msg};

    fn key() -> NodeKey {
        NodeKey::from_secret([1; 32])
    }

    pub fn manifest() -> Seeds {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seeds: Seeds = ["arith", "facts", "units", "smollm", "gemma"]
            .iter()
            .map(|p| {
                let toml = std::fs::read(root.join("plugins").join(p).join("plugin.toml"))
                    .expect("a plugin's manifest");
                let name: &'static str = Box::leak(format!("seed-{p}.toml").into_boxed_str());
                (name, toml)
            })
            .collect();
        seeds.push((
            "seed-every-limit.toml",
            br#"name = "every-limit"
version = "1.2.3"
description = "asks for every limit"
wasm = "x.wasm"
domains = ["math", "geography"]

[limits]
assess-ms = 100000
answer-ms = 1
compare-ms = 5000
memory-mib = 4096
output-kib = 64
answer-kib = 1024
log-lines = 4294967295
tensor-mib = 18446744073709551615
"#
            .to_vec(),
        ));
        seeds.push(("seed-empty.toml", Vec::new()));
        seeds
    }

    fn messages() -> Vec<(&'static str, Msg)> {
        let k = key();
        vec![
            (
                "request",
                Msg::Request(wire::RoundRequest {
                    round: "r1".into(),
                    entry: k.id(),
                    prompt: "What is 17 * 23?".into(),
                    domain: Some("math".into()),
                    max_tokens: 64,
                    temperature: 0.5,
                    seed: 7,
                    choices: Vec::new(),
                    messages: Vec::new(),
                    join_by: 1,
                    answer_by: 2,
                    judge_by: 3,
                    open: vec!["r0".into()],
                }),
            ),
            (
                "join",
                Msg::Join(wire::Join {
                    round: "r1".into(),
                    willing: true,
                    score: 0.95,
                    plugin: "arith".into(),
                    note: None,
                }),
            ),
            (
                "select",
                Msg::Select(wire::Select {
                    round: "r1".into(),
                    member: 2,
                }),
            ),
            (
                "answer",
                Msg::Answer(wire::AnswerReply {
                    round: "r1".into(),
                    answer: Some(k.sign(AnswerMsg {
                        round: "r1".into(),
                        member: 2,
                        text: "391".into(),
                        ..Default::default()
                    })),
                    error: None,
                }),
            ),
            (
                "judge",
                Msg::Judge(wire::JudgeTask {
                    round: "r1".into(),
                    judge: 1,
                    items: vec![wire::JudgeItem {
                        prompt: "What is 17 * 23?".into(),
                        first: 0,
                        second: 1,
                        first_text: "391".into(),
                        second_text: "381".into(),
                    }],
                }),
            ),
            (
                "verdicts",
                Msg::Verdicts(wire::VerdictReply {
                    round: "r1".into(),
                    verdicts: vec![k.sign(VerdictMsg {
                        round: "r1".into(),
                        judge: 1,
                        first: 0,
                        second: 1,
                        outcome: Outcome::First,
                    })],
                }),
            ),
            (
                "ack",
                Msg::Ack(wire::Ack {
                    round: "r1".into(),
                    note: Some("late".into()),
                }),
            ),
        ]
    }

    pub fn wire() -> Seeds {
        let k = key();
        messages()
            .into_iter()
            .map(|(kind, msg)| {
                let name: &'static str = Box::leak(format!("seed-{kind}.json").into_boxed_str());
                (name, wire::to_bytes(&wire::seal(&k, msg)))
            })
            .collect()
    }

    pub fn transcripts() -> Vec<(&'static str, Transcript)> {
        let k = key();
        let calibrated = Standing {
            reputation: 0.8,
            calibration_correct: 5,
            calibration_total: 5,
            known: Default::default(),
        };
        let members = |n: usize, node: &str| -> Vec<Member> {
            (0..n)
                .map(|i| Member {
                    key: format!("{node}/p{i}"),
                    before: calibrated,
                })
                .collect()
        };
        let answer = |member, text: &str| AnswerMsg {
            round: "r1".into(),
            member,
            text: text.into(),
            ..Default::default()
        };
        let verdict = |judge, first, second, outcome| VerdictMsg {
            round: "r1".into(),
            judge,
            first,
            second,
            outcome,
        };
        let local = Transcript::build(
            &k,
            "r1".into(),
            "What is 17 * 23?".into(),
            7,
            members(3, &k.id()),
            Params::default(),
            vec![answer(0, "391"), answer(1, "381")],
            vec![
                verdict(2, 0, 1, Outcome::First),
                verdict(2, 1, 0, Outcome::Second),
            ],
        );
        let swarm = Transcript::assemble(
            &k,
            "r1".into(),
            "What is 17 * 23?".into(),
            9,
            members(5, &k.id()),
            Params::default(),
            vec![
                k.sign(answer(0, "391")),
                k.sign(answer(1, "381")),
                k.sign(answer(2, "401")),
                k.sign(answer(3, "391.0")),
            ],
            vec![
                k.sign(verdict(4, 0, 1, Outcome::First)),
                k.sign(verdict(4, 1, 2, Outcome::Tie)),
                k.sign(verdict(0, 1, 2, Outcome::Second)),
            ],
            vec![CalibrationCheck {
                prompt: "2 + 2?".into(),
                first_text: "4".into(),
                second_text: "5".into(),
                first_is_right: true,
                verdict: k.sign(verdict(4, 100, 101, Outcome::First)),
            }],
        );
        let empty = Transcript::build(
            &k,
            "r2".into(),
            "nobody answers".into(),
            0,
            members(1, &k.id()),
            Params::default(),
            vec![],
            vec![],
        );
        let mut known = local.unsealed();
        known.choices = vec!["391".into(), "381".into()];
        known.known = Some(0);
        for (a, scores) in known.answers.iter_mut().zip([[2.0, -1.0], [0.5, 1.0]]) {
            a.payload.choice = Some(a.payload.member as u32);
            a.payload.option_scores = scores.to_vec();
            *a = k.sign(a.payload.clone());
        }
        let known = Transcript::seal(&k, known);
        vec![
            ("seed-local.json", local),
            ("seed-known-answer.json", known),
            ("seed-swarm-calibration.json", swarm),
            ("seed-no-answers.json", empty),
        ]
    }

    pub fn transcript() -> Seeds {
        transcripts()
            .into_iter()
            .map(|(n, t)| (n, serde_json::to_vec(&t).expect("a transcript serializes")))
            .collect()
    }

    pub fn chat_request() -> Seeds {
        [
            (
                "seed-plain.json",
                r#"{"model":"apiary-swarm","messages":[{"role":"user","content":"What is 17 * 23?"}]}"#,
            ),
            (
                "seed-full.json",
                r#"{"model":"x","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"What is the capital of France?"}],"max_tokens":64,"max_completion_tokens":32,"temperature":0.7,"seed":42,"stream":true}"#,
            ),
            (
                "seed-parts.json",
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]}],"temperature":9,"max_tokens":0}"#,
            ),
            (
                "seed-no-user.json",
                r#"{"messages":[{"role":"system","content":"hi"},{"role":"user","content":"   "}]}"#,
            ),
        ]
        .into_iter()
        .map(|(n, s)| (n, s.as_bytes().to_vec()))
        .collect()
    }

    pub fn tensor_ops() -> Seeds {
        // Structured inputs have no readable form: patterned bytes of a few lengths
        // start the fuzzer off; what it finds is kept beside them.
        [16usize, 64, 256, 1024]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let name: &'static str = Box::leak(format!("seed-pattern-{n}").into_boxed_str());
                (name, apiary_fuzz::build::pattern(n, i as u32 + 1))
            })
            .collect()
    }
}

fn all() -> Vec<(&'static str, Seeds)> {
    vec![
        #[cfg(feature = "host")]
        ("tensor_ops", host::tensor_ops()),
        ("gguf", gguf()),
        ("safetensors", safetensors()),
        #[cfg(feature = "host")]
        ("manifest", host::manifest()),
        #[cfg(feature = "host")]
        ("wire", host::wire()),
        #[cfg(feature = "host")]
        ("transcript", host::transcript()),
        #[cfg(feature = "host")]
        ("chat_request", host::chat_request()),
        ("arith", arith()),
    ]
}

#[test]
#[ignore = "writes the seed files into fuzz/corpus"]
fn write_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn seeds_are_small_and_pass_their_target() {
    for (target, seeds) in all() {
        let f = apiary_fuzz::TARGETS
            .iter()
            .find(|(n, _)| *n == target)
            .map(|(_, f)| *f)
            .unwrap();
        for (name, bytes) in seeds {
            assert!(bytes.len() < 10 << 10, "{target}/{name} is too big");
            f(&bytes);
        }
    }
}

#[test]
fn weights_seeds_parse() {
    for (name, bytes) in gguf() {
        let g = apiary_tensor::gguf::Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == "seed-every-type.gguf" {
            assert_eq!(g.tensors.len(), 8);
            assert_eq!(g.metadata.len(), 16);
        }
    }
    for (name, bytes) in gguf().into_iter().chain(safetensors()) {
        let file =
            std::sync::Arc::new(apiary_tensor::weights::MappedFile::from_bytes(&bytes).unwrap());
        let w = apiary_tensor::weights::WeightsFile::parse(name, file)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for t in w.names() {
            w.tensor(&t).unwrap().to_f32().unwrap();
        }
    }
}

#[test]
fn arith_seeds_mostly_solve() {
    let solved = arith()
        .iter()
        .filter(|(_, b)| {
            let q = std::str::from_utf8(b).unwrap().lines().next().unwrap();
            arith::solve(q).is_ok()
        })
        .count();
    assert!(solved >= 6, "{solved}");
}

#[cfg(feature = "host")]
#[test]
fn host_seeds_are_valid() {
    use apiary::swarm::wire::{Gate, now_ms};
    for (name, bytes) in host::wire() {
        let v = serde_json::from_slice(&bytes).unwrap();
        Gate::default()
            .open(v, bytes.len(), None, now_ms())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, t) in host::transcripts() {
        assert!(t.verify().is_empty(), "{name}: {:?}", t.verify());
    }
    for (name, bytes) in host::manifest() {
        apiary::plugins::manifest::PluginManifest::parse(std::str::from_utf8(&bytes).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in host::chat_request().into_iter().take(3) {
        apiary::api::parse_chat_request(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
