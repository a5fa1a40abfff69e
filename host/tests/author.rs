//! A plugin author's path through the real binary: `plugins new` for both kinds, the
//! scaffold's own `cargo test`, `plugins build`, and a `plugins check` that passes; then
//! `plugins check` on plugins that must fail, each for its own named reason.
//!
//! The scaffolds build in the same target folder as the workspace (`CARGO_TARGET_DIR`,
//! else `target/`), so their dependencies are the ones `scripts/build-plugins.sh` and the
//! host's build already compiled: only the new crate itself is compiled here.

mod common;

use common::{fixture, plugin, workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// `apiary ARGS` with a compile cache of its own.
fn apiary(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUST_LOG")
        .output()
        .expect("apiary runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `plugins check PATH --json` and its report.
fn check(path: &Path, extra: &[&str], cache: &Path) -> (Output, Value) {
    let p = path.to_str().unwrap();
    let mut args = vec!["plugins", "check", p, "--json"];
    args.extend_from_slice(extra);
    let o = apiary(&args, cache);
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", text(&o)));
    (o, report)
}

fn outcome<'r>(report: &'r Value, name: &str) -> &'r str {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no item {name} in {report:#}"))["outcome"]
        .as_str()
        .unwrap()
}

fn failed(report: &Value) -> Vec<String> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == "fail")
        .map(|i| format!("{}: {}", i["name"], i["message"]))
        .collect()
}

/// `new` → the crate's `cargo test` → `build` → `check`, timed step by step. Returns
/// the folder holding the crate (removed when dropped), the plugin folder and the
/// check's report.
fn author(kind: &str, name: &str, weights: Option<&Path>) -> (tempfile::TempDir, PathBuf, Value) {
    let parent = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let o = apiary(
        &[
            "plugins",
            "new",
            name,
            "--kind",
            kind,
            "--dir",
            parent.path().to_str().unwrap(),
        ],
        cache.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let dir = parent.path().join(name);
    assert!(dir.join("Cargo.toml").is_file() && dir.join("plugin.toml").is_file());
    let made = started.elapsed();

    let o = Command::new(env!("CARGO"))
        .args(["test", "--release"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo runs");
    assert!(
        o.status.success(),
        "the scaffold's own tests:\n{}",
        text(&o)
    );
    let tested = started.elapsed();

    if let Some(w) = weights {
        for f in std::fs::read_dir(w).unwrap().flatten() {
            std::fs::copy(f.path(), dir.join("weights").join(f.file_name())).unwrap();
        }
    }
    let o = apiary(&["plugins", "build", dir.to_str().unwrap()], cache.path());
    assert!(o.status.success(), "{}", text(&o));
    let folder = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(
        folder,
        dir.join("target/plugin").join(name).canonicalize().unwrap()
    );
    assert!(folder.join(format!("{name}.wasm")).is_file());
    assert!(folder.join("plugin.toml").is_file());
    let built = started.elapsed();

    // The crate's folder is accepted too: its built plugin folder is checked.
    let (o, report) = check(&dir, &[], cache.path());
    assert!(
        o.status.success() && report["passed"] == true,
        "a fresh {kind} plugin should pass its check: {:?}\n{}",
        failed(&report),
        text(&o)
    );
    eprintln!(
        "{kind} plugin: new {:.1} s, cargo test {:.1} s, build {:.1} s, check {:.1} s (total {:.1} s)",
        made.as_secs_f64(),
        (tested - made).as_secs_f64(),
        (built - tested).as_secs_f64(),
        (started.elapsed() - built).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    (parent, folder, report)
}

#[test]
fn a_rule_plugin_goes_from_new_to_a_passing_check() {
    let (_crate, _folder, report) = author("rule", "word-count", None);
    assert_eq!(report["plugin"]["name"], "word-count");
    assert_eq!(report["plugin"]["contract"], "1.2.0");
    for name in [
        "load",
        "volunteers-in-domain",
        "declines-outside-domains",
        "order-consistency",
        "traps",
        "latency",
        "memory",
        "outputs",
    ] {
        assert_eq!(outcome(&report, name), "pass", "{name}: {report:#}");
    }
    // Its judge checks for real: it committed on the word-count pair in both orders.
    let calls = report["calls"].as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c["call"] == "compare" && c["result"] == "prefer the first at 1.00"),
        "{report:#}"
    );
    // Every call was measured: memory within the plugin's limit, never zero.
    let limit = report["plugin"]["limits"]["memory-mib"].as_f64().unwrap();
    for c in calls.iter().filter(|c| c["call"] != "describe") {
        let mib = c["memory_mib"].as_f64().unwrap();
        assert!(mib > 0.0 && mib <= limit, "{c}");
    }
}

#[test]
fn a_model_plugin_goes_from_new_to_a_passing_check_with_real_weights() {
    let weights = plugin("smollm").join("weights");
    assert!(
        weights.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file(),
        "{} lacks the SmolLM2 weights: run scripts/fetch-models.sh (scripts/test.sh does)",
        weights.display()
    );
    let (_crate, folder, report) = author("model", "tiny-lm", Some(&weights));
    assert!(
        folder
            .join("weights/SmolLM2-135M-Instruct.Q4_1.gguf")
            .is_file()
    );
    assert_eq!(
        outcome(&report, "volunteers-in-domain"),
        "pass",
        "{report:#}"
    );
    assert_eq!(outcome(&report, "order-consistency"), "pass", "{report:#}");
    // The model really ran: it picked an option and used host tensors.
    let calls = report["calls"].as_array().unwrap();
    let picked = calls
        .iter()
        .find(|c| c["probe"] == "choice:mammal" && c["call"] == "answer")
        .unwrap();
    assert!(
        picked["result"]
            .as_str()
            .unwrap()
            .starts_with("answered \""),
        "{picked}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c["tensor_mib"].as_f64().unwrap() > 0.0),
        "{report:#}"
    );
}

#[test]
fn new_refuses_bad_names_existing_folders_and_a_missing_api() {
    let parent = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let p = parent.path().to_str().unwrap();
    let o = apiary(&["plugins", "new", "Bad Name", "--dir", p], cache.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is not a valid plugin name"),
        "{}",
        text(&o)
    );
    std::fs::create_dir(parent.path().join("taken")).unwrap();
    let o = apiary(&["plugins", "new", "taken", "--dir", p], cache.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = apiary(
        &[
            "plugins",
            "new",
            "fresh",
            "--dir",
            p,
            "--api",
            "/nonexistent/plugin-api",
        ],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("pass --api PATH"), "{}", text(&o));
    assert!(
        !parent.path().join("fresh").exists(),
        "nothing is written on refusal"
    );
    let o = apiary(
        &["plugins", "new", "x", "--kind", "llm", "--dir", p],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(2), "a usage error: {}", text(&o));

    // A crate that was never built: check says to build it.
    let o = apiary(&["plugins", "new", "unbuilt", "--dir", p], cache.path());
    assert!(o.status.success(), "{}", text(&o));
    let unbuilt = parent.path().join("unbuilt");
    let o = apiary(
        &["plugins", "check", unbuilt.to_str().unwrap()],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("apiary plugins build"), "{}", text(&o));
}

#[test]
fn the_good_example_plugins_pass() {
    let cache = tempfile::tempdir().unwrap();
    for name in ["arith", "units"] {
        let (o, report) = check(&plugin(name), &[], cache.path());
        assert!(
            o.status.success() && report["passed"] == true,
            "{name}: {:?}",
            failed(&report)
        );
        assert_eq!(outcome(&report, "declines-outside-domains"), "pass");
        assert_eq!(outcome(&report, "order-consistency"), "pass");
    }
}

/// Each fixture fails the check it was built to fail, with exit code 5, and quickly: the
/// operator ceilings on the command line bound every call (time for the ones that hang,
/// memory for the one that hoards, so that it reaches its limit before its deadline).
#[test]
fn check_flags_each_hostile_fixture_by_name() {
    let cache = tempfile::tempdir().unwrap();
    let time: &[&str] = &["--max-answer-ms", "500", "--max-compare-ms", "500"];
    let memory: &[&str] = &["--max-memory-mib", "48"];
    let cases = [
        (
            "harmless",
            "declines-outside-domains",
            "volunteers (1.00)",
            time,
        ),
        ("echo-conversation", "order-consistency", "at 0.80", time),
        ("infinite-loop", "latency", "timed out", time),
        ("slow-compare", "latency", "compare timed out", time),
        // Its kernel stops at the deadline and it returns ("returned only after its
        // 500 ms budget"), or the epoch stops the guest first when the kernel's last band
        // ends past the epoch deadline ("exceeded its 500 ms budget"): a race of a few
        // milliseconds, and an answer lost either way.
        ("long-kernel", "latency", "500 ms budget", time),
        ("memory-bomb", "memory", "memory limit of 48 MiB", memory),
        ("panic", "traps", "panicked", time),
        ("wild-judge", "outputs", "NaN", time),
        ("unknown-import", "load", "a node refuses it", time),
    ];
    for (fixture_name, item, says, ceilings) in cases {
        let started = Instant::now();
        let (o, report) = check(&fixture(fixture_name), ceilings, cache.path());
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(5), "{fixture_name}: {}", text(&o));
        assert_eq!(report["passed"], false);
        assert_eq!(outcome(&report, item), "fail", "{fixture_name}: {report:#}");
        let message = report["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == item)
            .unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(says), "{fixture_name}: {message}");
        assert!(took.as_secs() < 30, "{fixture_name} took {took:?}");
    }
}

#[test]
fn check_prints_a_line_per_item_and_help_lists_its_exit_code() {
    let cache = tempfile::tempdir().unwrap();
    let o = apiary(
        &["plugins", "check", fixture("panic").to_str().unwrap()],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(5));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("  FAIL  traps "), "{out}");
    assert!(out.contains("  pass  load "), "{out}");
    assert!(out.contains("FAILED: "), "{out}");
    let o = apiary(&["--help"], cache.path());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.lines()
            .any(|l| l.trim_start().starts_with("5  ") && l.contains("`plugins check`")),
        "{help}"
    );
}
