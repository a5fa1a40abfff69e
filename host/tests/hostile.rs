//! Hostile plugins against the real host. Each is loaded beside the well-behaved `arith`
//! plugin; the test asserts the misbehaviour is contained with a clear error, within its
//! budget, and that `arith` still answers in the same round.

mod common;

use apiary::round::RoundReport;
use apiary::sandbox::SandboxConfig;
use apiary::sandbox::imports::{AllowedInterface, ImportPolicy};
use common::*;
use std::time::{Duration, Instant};

const QUESTION: &str = "What is 6 * 7?";

/// Run one round with `arith` and the fixture; check arith answered (and won, if the
/// fixture faulted) and return the report.
fn round_beside_arith(fixture: &str) -> (Folder, RoundReport) {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    folder.add_fixture(fixture);
    let registry = folder.registry();
    assert_eq!(registry.active().len(), 2, "{:?}", registry.listing());
    let started = Instant::now();
    let report = ask(&registry, QUESTION);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "round took {:?}; budgets are 400 ms per call",
        started.elapsed()
    );
    assert_eq!(
        member(&report, "arith").answer.as_deref(),
        Some("6 * 7 = 42"),
        "{report:#?}"
    );
    if member(&report, fixture).fault {
        assert_eq!(
            winner(&report),
            "6 * 7 = 42",
            "a faulting plugin cannot win: {report:#?}"
        );
    }
    (folder, report)
}

fn fault_of(report: &RoundReport, plugin: &str) -> String {
    let m = member(report, plugin);
    assert!(m.fault, "{plugin} should have faulted: {m:?}");
    m.error.clone().unwrap()
}

#[test]
fn infinite_loop_times_out_at_its_budget() {
    let (_f, r) = round_beside_arith("infinite-loop");
    let e = fault_of(&r, "infinite-loop");
    assert!(
        e.contains("answer timed out") && e.contains("400 ms"),
        "{e}"
    );
    assert!(member(&r, "infinite-loop").answer_ms.unwrap() < 2_000);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let (_f, r) = round_beside_arith("memory-bomb");
    let e = fault_of(&r, "memory-bomb");
    assert!(e.contains("memory limit of 32 MiB"), "{e}");
}

#[test]
fn stack_overflow_is_a_trap_not_a_crash() {
    let (_f, r) = round_beside_arith("stack-overflow");
    let e = fault_of(&r, "stack-overflow");
    assert!(e.contains("overflowed the stack"), "{e}");
}

#[test]
fn panic_is_reported_with_its_message() {
    let (_f, r) = round_beside_arith("panic");
    let e = fault_of(&r, "panic");
    assert!(
        e.contains("panicked") && e.contains("hostile plugin panicked on purpose"),
        "{e}"
    );
}

#[test]
fn output_flood_is_capped() {
    let (_f, r) = round_beside_arith("output-flood");
    let e = fault_of(&r, "output-flood");
    assert!(e.contains("wrote more than 16 KiB to stdout"), "{e}");
}

#[test]
fn giant_answer_is_refused() {
    let (_f, r) = round_beside_arith("giant-answer");
    let e = fault_of(&r, "giant-answer");
    assert!(e.contains("larger than the 16 KiB limit"), "{e}");
    assert!(r.answers.iter().all(|a| a.text.len() < 16 << 10));
}

#[test]
fn slow_judge_times_out_and_forfeits_its_answer() {
    // Two ariths (one candidate) and a liar, so the slow judge has a pair of candidates
    // it may judge (theirs against the liar's).
    let folder = Folder::new();
    folder.add_two_ariths();
    folder.add_fixture("liar");
    folder.add_fixture("slow-compare");
    let registry = folder.registry();
    let started = Instant::now();
    let r = ask(&registry, QUESTION);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(winner(&r), "6 * 7 = 42");
    let e = fault_of(&r, "slow-compare");
    assert!(e.contains("compare timed out"), "{e}");
    let theirs = r
        .answers
        .iter()
        .find(|a| a.plugin == "slow-compare")
        .unwrap();
    assert!(theirs.disqualified);
}

#[test]
fn log_flood_is_bounded_and_not_a_fault() {
    let folder = Folder::new();
    folder.add_fixture("log-flood");
    // Logging 100k lines through the host takes longer than the tight test budget.
    std::fs::write(
        folder.path().join("log-flood/plugin.toml"),
        "name = \"log-flood\"\n[limits]\nanswer-ms = 20000\nlog-lines = 50\n",
    )
    .unwrap();
    let registry = folder.registry();
    let plugin = registry.get("log-flood").unwrap();
    let mut session = plugin.session(registry.sandbox(), 1).unwrap();
    let a = session.answer(&apiary::round::request("go", 1)).unwrap();
    assert_eq!(a.text, "logged 100000 lines");
    let (lines, dropped) = session.logs();
    assert_eq!(lines.len(), 50);
    assert_eq!(dropped, 100_000 - 50);
}

#[test]
fn filesystem_outside_weights_is_unreachable() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let dir = folder.add_fixture("fs-escape");
    // A secret next to the plugin folder, and a symlink inside weights/ pointing at it.
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-HOST-DATA").unwrap();
    std::fs::write(folder.path().join("arith/secret.txt"), "TOP-SECRET-SIBLING").unwrap();
    std::fs::create_dir(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/ok.txt"), "readable").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("weights/link.txt")).unwrap();
    let registry = folder.registry();
    let mut req = apiary::round::request(QUESTION, 1);
    req.domain = Some(format!(
        "{} /weights/ok.txt /weights/link.txt /weights/../plugin.toml /weights/../../arith/secret.txt ../arith/secret.txt /etc/passwd",
        secret.display()
    ));
    let r = ask_with(&registry, req);
    assert_eq!(member(&r, "arith").answer.as_deref(), Some("6 * 7 = 42"));
    let report = member(&r, "fs-escape")
        .answer
        .clone()
        .expect("fixture reports");
    assert!(!report.contains("TOP-SECRET"), "{report}");
    assert!(!report.contains("root:"), "{report}");
    assert!(
        report.contains("READ /weights/ok.txt: readable"),
        "{report}"
    );
    for denied in [
        secret.display().to_string(),
        "/weights/link.txt".into(),
        "/weights/../plugin.toml".into(),
        "../arith/secret.txt".into(),
        "/etc/passwd".into(),
    ] {
        assert!(
            report.contains(&format!("denied {denied}")),
            "{denied} not denied: {report}"
        );
    }
}

#[test]
fn weights_are_read_only() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let dir = folder.add_fixture("fs-write");
    std::fs::create_dir(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/data.txt"), "original").unwrap();
    let registry = folder.registry();
    let r = ask(&registry, QUESTION);
    assert_eq!(member(&r, "arith").answer.as_deref(), Some("6 * 7 = 42"));
    let report = member(&r, "fs-write").answer.clone().unwrap();
    assert!(
        !report.contains("WROTE") && !report.contains("DELETED"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("weights/data.txt")).unwrap(),
        "original"
    );
    assert!(!dir.join("weights/pwned.txt").exists());
}

#[test]
fn environment_args_and_stdin_are_empty() {
    let (_f, r) = round_beside_arith("env-read");
    let report = member(&r, "env-read").answer.clone().unwrap();
    // The test process has PATH, HOME, CARGO_* ...; none of it reaches the plugin.
    assert!(report.starts_with("vars=[] args=[]"), "{report}");
    assert!(!report.contains("CARGO"), "{report}");
    assert!(report.contains("stdin=Ok(0)"), "{report}");
}

#[test]
fn network_plugin_is_refused_at_load_naming_the_import() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    folder.add_fixture("network");
    let registry = folder.registry();
    let why = refusal(&registry, "network");
    assert!(why.contains("wasi:sockets/"), "{why}");
    assert_eq!(winner(&ask(&registry, QUESTION)), "6 * 7 = 42");
}

#[test]
fn network_is_denied_even_if_sockets_were_linked() {
    // Defence in depth: an operator who (wrongly) allowed wasi:sockets still gets a WASI
    // context that denies TCP, UDP and name lookup.
    let mut imports = ImportPolicy::contract();
    imports.allowed.push(AllowedInterface {
        package: "wasi:sockets",
        interfaces: &[
            "network",
            "instance-network",
            "tcp",
            "tcp-create-socket",
            "udp",
            "udp-create-socket",
            "ip-name-lookup",
        ],
        track: (0, 2),
        why: "test only",
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let folder = Folder::new();
    folder.add_fixture("network");
    let registry = folder.registry_with(SandboxConfig {
        imports,
        ..Default::default()
    });
    let plugin = registry
        .get("network")
        .expect("loads under the permissive policy");
    let mut session = plugin.session(registry.sandbox(), 1).unwrap();
    let mut req = apiary::round::request("connect", 1);
    req.domain = Some(addr.to_string());
    let report = session.answer(&req).unwrap().text;
    assert!(report.contains(&format!("denied tcp {addr}")), "{report}");
    assert!(report.contains("denied dns"), "{report}");
    assert!(report.contains("denied udp"), "{report}");
    assert!(listener.accept().is_err(), "nothing may have connected");
}

#[test]
fn unknown_import_is_refused_naming_it() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    folder.add(&fixture("unknown-import"), "unknown-import");
    let registry = folder.registry();
    let why = refusal(&registry, "unknown-import");
    assert!(why.contains("apiary:evil/backdoor"), "{why}");
    assert_eq!(winner(&ask(&registry, QUESTION)), "6 * 7 = 42");
}

#[test]
fn corrupt_truncated_and_core_wasm_are_refused() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let garbage = folder.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("garbage.wasm"), b"this is not wasm at all").unwrap();
    let truncated = folder.path().join("truncated");
    std::fs::create_dir(&truncated).unwrap();
    let arith = std::fs::read(plugin("arith").join("arith.wasm")).unwrap();
    std::fs::write(truncated.join("t.wasm"), &arith[..arith.len() / 2]).unwrap();
    // A bare core module (not a component), dropped straight into the folder.
    std::fs::write(
        folder.path().join("core.wasm"),
        [0, b'a', b's', b'm', 1, 0, 0, 0],
    )
    .unwrap();
    let registry = folder.registry();
    assert!(refusal(&registry, "garbage").contains("not a valid WebAssembly component"));
    assert!(refusal(&registry, "truncated").contains("not a valid WebAssembly component"));
    assert!(refusal(&registry, "core").contains("core WebAssembly module, not a component"));
    assert_eq!(winner(&ask(&registry, QUESTION)), "6 * 7 = 42");
}

#[test]
fn broken_manifest_is_refused_with_the_problem() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let dir = folder.add(&plugin("units"), "units");
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"units\"\n[limits]\nmemory-mb = 64\n",
    )
    .unwrap();
    let bad_syntax = folder.add(&plugin("facts"), "facts");
    std::fs::write(bad_syntax.join("plugin.toml"), "name = [unclosed\n").unwrap();
    let registry = folder.registry();
    let why = refusal(&registry, "units");
    assert!(
        why.contains("plugin.toml is invalid") && why.contains("memory-mb"),
        "{why}"
    );
    assert!(refusal(&registry, "facts").contains("plugin.toml is invalid"));
    assert_eq!(winner(&ask(&registry, QUESTION)), "6 * 7 = 42");
}

#[test]
fn weights_symlink_out_of_the_folder_is_refused() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let dir = folder.add(&plugin("facts"), "facts");
    std::fs::remove_dir_all(dir.join("weights")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("facts.tsv"), "capital\tFrance\tParis\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("weights")).unwrap();
    // A .wasm symlink leading out of the folder is refused by cap-std as well.
    let sneaky = folder.path().join("sneaky");
    std::fs::create_dir(&sneaky).unwrap();
    std::fs::copy(
        plugin("units").join("units.wasm"),
        outside.path().join("units.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("units.wasm"), sneaky.join("units.wasm"))
        .unwrap();
    let registry = folder.registry();
    let why = refusal(&registry, "facts");
    assert!(
        why.contains("weights") && why.contains("symbolic link"),
        "{why}"
    );
    let why = refusal(&registry, "sneaky");
    assert!(why.contains("cannot read"), "{why}");
    assert_eq!(winner(&ask(&registry, QUESTION)), "6 * 7 = 42");
}

#[test]
fn repeated_faults_quarantine_until_reload() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let dir = folder.add_fixture("panic");
    let registry = folder.registry();
    for _ in 0..registry.quarantine_after {
        assert_eq!(winner(&ask(&registry, QUESTION)), "6 * 7 = 42");
    }
    let active: Vec<String> = registry.active().iter().map(|p| p.name.clone()).collect();
    assert_eq!(active, vec!["arith"], "panic should be quarantined");
    let r = ask(&registry, QUESTION);
    assert!(
        r.members.iter().all(|m| m.plugin != "panic"),
        "quarantined plugins get no rounds"
    );
    // Reloading (any change to the folder) gives it a fresh start.
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"panic\"\n[limits]\nanswer-ms = 401\n",
    )
    .unwrap();
    let report = registry.rescan().unwrap();
    assert_eq!(report.replaced, vec!["panic"]);
    assert_eq!(registry.active().len(), 2);
}

#[test]
fn judges_outvote_a_confident_liar() {
    // Two arithmetic plugins and a liar that answers "7" to everything with full
    // confidence and votes "first" on every pair. The ariths agree, so they are one
    // candidate; nobody outside it can judge it against the liar's, and the liar may not
    // judge its own. Its confidence counts for nothing: the reputation behind the
    // ariths' candidate (support) wins, and the liar's reputation falls.
    let folder = Folder::new();
    folder.add_two_ariths();
    folder.add_fixture("liar");
    let registry = folder.registry();
    let r = ask(&registry, "What is 15% of 80?");
    assert!(winner(&r).ends_with("= 12"), "{r:#?}");
    assert_eq!(
        r.decided_by,
        Some(apiary::ledger::fold::DecidedBy::Support),
        "{r:#?}"
    );
    let t = r.transcript.as_ref().unwrap();
    let liar = t
        .members
        .iter()
        .position(|m| m.key.ends_with("/liar"))
        .unwrap();
    assert!(t.result.payload.after[liar].reputation < t.members[liar].before.reputation);
}

#[test]
fn untrusted_self_descriptions_are_sanitised() {
    let folder = Folder::new();
    let dir = folder.add(&fixture("evil-describe"), "evil-describe");
    // No name in plugin.toml: the host must fall back to what describe() said, cleaned.
    std::fs::remove_file(dir.join("plugin.toml")).unwrap();
    let registry = folder.registry();
    let p = registry.get("evil-describe").expect("loads");
    for text in [&p.name, &p.version, &p.description] {
        assert!(
            !text.chars().any(char::is_control),
            "control characters survived: {text:?}"
        );
    }
    assert!(
        p.name.chars().count() <= 64 && p.name.starts_with("[2J[31mevil"),
        "{:?}",
        p.name
    );
    assert!(p.description.chars().count() <= 512);
    assert!(p.domains.len() <= 32 && p.domains.iter().all(|d| !d.chars().any(char::is_control)));
}
