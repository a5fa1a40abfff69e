//! The `apiary` binary, driven as an operator would.

mod common;

use common::*;
use std::process::{Command, Output};

fn apiary(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("RUST_LOG")
        .output()
        .expect("apiary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn plugins_dir() -> String {
    workspace().join("target/plugins").display().to_string()
}

/// Scripts branch on the exit codes, so `--help` lists every one the commands return
/// (the values are constants in `host/src/cli/mod.rs`; other tests here check that
/// `ask`, `plugins audit` and `rounds verify` return them).
#[test]
fn help_lists_the_exit_codes() {
    let o = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .arg("--help")
        .env_remove("RUST_LOG")
        .output()
        .expect("apiary runs");
    assert!(o.status.success());
    let out = stdout(&o);
    let (_, section) = out
        .split_once("Exit codes:")
        .unwrap_or_else(|| panic!("no exit codes in\n{out}"));
    for (code, meaning) in [
        (0, "success"),
        (1, "error"),
        (2, "no plugin could answer"),
        (2, "usage error"),
        (3, "`plugins audit`: the plugin would be refused"),
        (4, "`rounds verify`"),
    ] {
        assert!(
            section
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{code}  ")) && l.contains(meaning)),
            "exit code {code} ({meaning}) is not listed in\n{section}"
        );
    }
    // The usage code is clap's own; check the binary really uses it.
    let o = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .arg("no-such-command")
        .env_remove("RUST_LOG")
        .output()
        .expect("apiary runs");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn ask_answers_from_the_right_specialist() {
    let cache = tempfile::tempdir().unwrap();
    for (q, expect) in [
        ("What is 17 * 23?", "17 * 23 = 391\n"),
        ("Solve 3x + 5 = 20", "x = 5\n"),
        (
            "What is the capital of France?",
            "The capital of France is Paris.\n",
        ),
        (
            "How many feet are in 3 meters?",
            "3 meters = 9.84252 feet\n",
        ),
    ] {
        let o = apiary(&["ask", q, "--plugins", &plugins_dir()], cache.path());
        assert!(
            o.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(stdout(&o), expect);
    }
    // The second and later runs used the compile cache.
    assert!(
        std::fs::read_dir(cache.path()).unwrap().count() >= 4,
        "3 entries + key"
    );
}

#[test]
fn ask_explain_and_json() {
    let cache = tempfile::tempdir().unwrap();
    let o = apiary(
        &[
            "ask",
            "What is 2 to the power of 10?",
            "--plugins",
            &plugins_dir(),
            "--explain",
        ],
        cache.path(),
    );
    let out = stdout(&o);
    assert!(
        out.contains("members:") && out.contains("arith") && out.contains("candidates"),
        "{out}"
    );
    assert!(out.contains("declined: assess"), "{out}");
    assert!(out.trim_end().ends_with("2 ^ 10 = 1024"), "{out}");

    let o = apiary(
        &[
            "ask",
            "What is 2 + 2?",
            "--plugins",
            &plugins_dir(),
            "--json",
        ],
        cache.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v["answers"][0]["text"], "2 + 2 = 4");
    assert_eq!(v["winner"], 0);
    assert_eq!(
        v["members"].as_array().unwrap().len(),
        6,
        "arith, facts, gemma, qwen, smollm, units"
    );
}

#[test]
fn ask_with_no_specialist_fails_clearly() {
    let cache = tempfile::tempdir().unwrap();
    // Without the language model nobody knows this one.
    let folder = Folder::new();
    for p in ["arith", "facts", "units"] {
        folder.add(&plugin(p), p);
    }
    let dir = folder.path().display().to_string();
    let o = apiary(
        &["ask", "Who painted the Mona Lisa?", "--plugins", &dir],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no plugin could answer"));
    let o = apiary(
        &["ask", "hi", "--plugins", "/nonexistent/plugins"],
        cache.path(),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

#[test]
fn plugins_list_reports_loaded_and_refused() {
    let cache = tempfile::tempdir().unwrap();
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    folder.add(&fixture("unknown-import"), "unknown-import");
    let o = apiary(
        &["plugins", "list", &folder.path().display().to_string()],
        cache.path(),
    );
    let out = stdout(&o);
    assert!(out.contains("loaded   arith"), "{out}");
    assert!(
        out.contains("refused  unknown-import") && out.contains("apiary:evil/backdoor"),
        "{out}"
    );
    let o = apiary(
        &[
            "plugins",
            "list",
            &folder.path().display().to_string(),
            "--json",
        ],
        cache.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn plugins_audit_shows_what_a_reviewer_needs() {
    let cache = tempfile::tempdir().unwrap();
    let o = apiary(
        &["plugins", "audit", &plugin("facts").display().to_string()],
        cache.path(),
    );
    assert!(o.status.success());
    let out = stdout(&o);
    for needle in [
        "verdict    LOADS",
        "sha256",
        "apiary:plugin@1.2.0",
        "ok       wasi:filesystem/preopens",
        "apiary:plugin/handler@1.2.0",
        "read-only /weights",
        "facts.tsv",
        "memory-mib",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let o = apiary(
        &[
            "plugins",
            "audit",
            &fixture("network").display().to_string(),
            "--json",
        ],
        cache.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "a refused plugin audits with exit 3"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let denied: Vec<&str> = v["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["allowed"] == false)
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        !denied.is_empty() && denied.iter().all(|n| n.starts_with("wasi:sockets/")),
        "{denied:?}"
    );
}

#[test]
fn operator_ceiling_caps_what_a_plugin_asks_for() {
    let cache = tempfile::tempdir().unwrap();
    let o = apiary(
        &[
            "plugins",
            "audit",
            &plugin("arith").display().to_string(),
            "--max-memory-mib",
            "16",
        ],
        cache.path(),
    );
    let out = stdout(&o);
    assert!(out.contains("memory-mib         64 -> 16 (16)"), "{out}");
}

#[test]
fn rounds_are_recorded_verified_and_tampering_is_caught() {
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    // Two arithmetic plugins (one candidate: they agree), a liar, and a judge that does
    // not answer: real verdicts to record.
    let folder = Folder::new();
    folder.add_two_ariths();
    folder.add(&fixture("liar"), "liar");
    folder.add(&plugin("units"), "units");
    let dir = folder.path().display().to_string();
    let o = apiary(
        &[
            "ask",
            "What is 15% of 80?",
            "--plugins",
            &dir,
            "--data-dir",
            &data_dir,
        ],
        cache.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).trim_end().ends_with("= 12"), "{}", stdout(&o));
    let list = stdout(&apiary(
        &["rounds", "list", "--data-dir", &data_dir],
        cache.path(),
    ));
    let id = list
        .split_whitespace()
        .next()
        .expect("one round")
        .to_string();
    let o = apiary(
        &["rounds", "verify", &id, "--data-dir", &data_dir],
        cache.path(),
    );
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("signatures valid"));

    // Flip one recorded verdict in the database: verification must fail.
    let ledger = apiary::ledger::Ledger::open(data.path()).unwrap();
    let mut t = ledger.round(&id).unwrap();
    assert!(!t.verdicts.is_empty());
    let v = &mut t.verdicts[0].payload;
    v.outcome = match v.outcome {
        apiary::consensus::Outcome::First => apiary::consensus::Outcome::Second,
        _ => apiary::consensus::Outcome::First,
    };
    ledger
        .overwrite_transcript(&id, &serde_json::to_string(&t).unwrap())
        .unwrap();
    let o = apiary(
        &["rounds", "verify", &id, "--data-dir", &data_dir],
        cache.path(),
    );
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("verdict 0: signature does not match"),
        "{}",
        stdout(&o)
    );
}

/// `--tensor-backend wgpu` end to end: SmolLM2 in the sandbox with its activations, KV
/// cache and logits held on the device (lavapipe where there is no GPU: slow, so the
/// plugin is given the ceiling's two minutes), answering as it does on the CPU.
#[test]
fn ask_on_the_wgpu_backend_answers_as_on_the_cpu() {
    let folder = Folder::new();
    let dir = folder.add(&plugin("smollm"), "smollm");
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
    let manifest = manifest.replace("answer-ms = 60000", "answer-ms = 120000");
    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let plugins = folder.path().display().to_string();
    let o = apiary(
        &[
            "ask",
            "What is the capital of France?",
            "--plugins",
            &plugins,
            "--tensor-backend",
            "wgpu",
        ],
        cache.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success()
        && err.contains("no GPU adapter")
        && std::env::var_os("APIARY_REQUIRE_WGPU").is_none()
    {
        eprintln!("skipping: {err}");
        return;
    }
    assert!(o.status.success(), "{err}");
    assert_eq!(stdout(&o), "The capital of France is Paris.\n", "{err}");
}
