//! The boundary against the classes of misbehaviour issue 11 found: degenerate and
//! overflowing shapes in host kernels, allocations past the tensor quota, a kernel that
//! outruns its call's budget, a plugin that panics in `describe`, and a plugin that claims
//! full confidence and never judges. Each hostile fixture sits beside the well-behaved
//! `arith`, which must keep answering in the same round.

mod common;

use apiary::round::RoundReport;
use common::*;
use std::process::Command;
use std::time::Instant;

const QUESTION: &str = "What is 6 * 7?";
const RIGHT: &str = "6 * 7 = 42";

fn beside_arith(fixture: &str, plugin_toml: Option<&str>) -> (Folder, RoundReport) {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let dest = folder.add_fixture(fixture);
    if let Some(toml) = plugin_toml {
        std::fs::write(dest.join("plugin.toml"), toml).unwrap();
    }
    let registry = folder.registry();
    assert_eq!(registry.active().len(), 2, "{:?}", registry.listing());
    let before = peak_rss();
    let report = ask(&registry, QUESTION);
    // A figure for the notes (tests run in parallel, so only an upper bound).
    eprintln!(
        "{fixture}: the process's peak RSS grew by {} MiB in its round (tensor quota 512 MiB)",
        peak_rss().saturating_sub(before) >> 20
    );
    assert_eq!(
        member(&report, "arith").answer.as_deref(),
        Some(RIGHT),
        "{report:#?}"
    );
    (folder, report)
}

fn peak_rss() -> u64 {
    proc_memory("VmHWM")
}

#[test]
fn degenerate_and_overflowing_shapes_are_errors_not_crashes() {
    let (_f, r) = beside_arith("degenerate-shapes", None);
    let m = member(&r, "degenerate-shapes");
    assert!(!m.fault, "legal calls must not fault the plugin: {m:?}");
    let text = m.answer.clone().unwrap();
    assert!(text.ends_with("survived"), "{text}");
    for must_fail in [
        "reshape to overflow: error",
        "reshape wraps: error",
        "reshape [1,4]->[4,0]: error",
        "slice past end: error",
        "slice of empty: error",
        "rope head 0: error",
        "attention 0 heads: error",
        "attention far pos: error",
        "append [0] to [0]: error",
        "embedding of empty: error",
        "argmax of empty: error",
        "sample of empty: error",
    ] {
        assert!(text.contains(must_fail), "{must_fail} missing in:\n{text}");
    }
    for empty_ok in [
        "softmax [0]: ok [0]",
        "rms-norm [0]: ok [0]",
        "layer-norm [0]: ok [0]",
        "softmax [0,4]: ok [0, 4]",
        "append to itself: ok [2, 4]",
    ] {
        assert!(text.contains(empty_ok), "{empty_ok} missing in:\n{text}");
    }
}

#[test]
fn products_past_the_quota_are_refused_before_allocation() {
    let before = peak_rss();
    let (_f, r) = beside_arith("quota-matmul", None);
    let grew = peak_rss().saturating_sub(before);
    let m = member(&r, "quota-matmul");
    let text = m.answer.clone().unwrap_or_default();
    assert!(!text.contains("ACCEPTED"), "{text}");
    assert_eq!(text.matches("Quota(").count(), 2, "{text}");
    eprintln!(
        "quota-matmul: peak RSS grew by {} MiB for products of 4 TiB and 4 GiB (quota 512 MiB)",
        grew >> 20
    );
    // The operands are 8 MiB each; a 4 GiB result allocated and filled would show here.
    assert!(grew < 1 << 30, "peak RSS grew by {} MiB", grew >> 20);
}

#[test]
fn a_long_kernel_stops_near_the_calls_deadline() {
    let toml = "name = \"long-kernel\"\n[limits]\nanswer-ms = 1000\ncompare-ms = 400\n";
    let started = Instant::now();
    let (_f, r) = beside_arith("long-kernel", Some(toml));
    let m = member(&r, "long-kernel");
    let took = m.answer_ms.unwrap();
    eprintln!(
        "long-kernel: answer call ended after {took} ms against a 1000 ms budget ({:?}): {m:?}",
        started.elapsed()
    );
    // Stopped either by the kernel's deadline check (the plugin then reports it) or by
    // the epoch right after the host call returned; never by the product finishing.
    let stopped_in_kernel = m.answer.as_deref().is_some_and(|a| a.contains("Deadline"));
    assert!(stopped_in_kernel || m.fault, "{m:?}");
    assert!(took < 1_500, "overshoot {} ms", took.saturating_sub(1_000));
}

#[test]
fn a_panicking_describe_is_refused_and_the_others_load() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    folder.add_fixture("panic-describe");
    let registry = folder.registry();
    let why = refusal(&registry, "panic-describe");
    assert!(why.contains("describe"), "{why}");
    assert_eq!(winner(&ask(&registry, QUESTION)), RIGHT);
}

fn apiary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("apiary runs")
}

/// The winning answer of `apiary ask --json`.
fn cli_winner(
    plugins: &Folder,
    data: &std::path::Path,
    cache: &std::path::Path,
    seed: u64,
) -> String {
    let o = apiary(&[
        "ask",
        QUESTION,
        "--plugins",
        &plugins.path().display().to_string(),
        "--data-dir",
        &data.display().to_string(),
        "--cache-dir",
        &cache.display().to_string(),
        "--seed",
        &seed.to_string(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let w = v["winner"].as_u64().expect("a winner") as usize;
    v["answers"][w]["text"].as_str().unwrap().to_string()
}

/// A plugin that volunteers with assess 1.0, answers wrongly and never commits as a judge
/// must not win undecided rounds against a correct specialist once the specialist has
/// earned reputation in rounds the verdicts did decide.
#[test]
fn a_confident_abstainer_loses_to_earned_reputation() {
    let (data, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let folder = Folder::new();
    folder.add_two_ariths();
    folder.add_fixture("confident-abstainer");
    // Decided rounds: each arith judges the other's 42 against the abstainer's 41.
    for seed in 0..3 {
        assert_eq!(cli_winner(&folder, data.path(), cache.path(), seed), RIGHT);
    }
    // Now two answerers who cannot judge each other: undecided, and reputation decides.
    std::fs::remove_dir_all(folder.path().join("arith2")).unwrap();
    for seed in 0..6 {
        assert_eq!(
            cli_winner(&folder, data.path(), cache.path(), seed),
            RIGHT,
            "seed {seed}"
        );
    }
}

/// Exact ties (equal reputation, equal assess, no judge) go by the round's seed: both
/// answers win for some seed, and the folder names do not change which.
#[test]
fn exact_ties_are_broken_by_the_seed_not_by_folder_names() {
    let winners = |first: &str, second: &str| -> Vec<String> {
        let folder = Folder::new();
        let a = folder.add_fixture("harmless");
        let b = folder.add_fixture("confident-abstainer");
        std::fs::rename(&a, folder.path().join(first)).unwrap();
        std::fs::rename(&b, folder.path().join(second)).unwrap();
        let registry = folder.registry();
        (0..16)
            .map(|seed| {
                let r = ask_with(&registry, apiary::round::request(QUESTION, seed));
                assert!(r.undecided, "{r:#?}");
                winner(&r)
            })
            .collect()
    };
    let ab = winners("aaa", "zzz");
    assert!(
        ab.iter().any(|w| w == "harmless") && ab.iter().any(|w| w == "41"),
        "{ab:?}"
    );
    assert_eq!(
        ab,
        winners("zzz", "aaa"),
        "renaming the folders changed winners"
    );
}
