//! The tensor interface through the sandbox: a hostile plugin probing it, and the real
//! SmolLM2 and Gemma 3 plugins answering.

mod common;

use common::*;

#[test]
fn tensor_misuse_is_an_error_and_weights_stay_in_the_plugins_folder() {
    let folder = Folder::new();
    let dir = folder.add_fixture("tensor-abuse");
    std::fs::write(
        dir.join("plugin.toml"),
        "name = \"tensor-abuse\"\n[limits]\nanswer-ms = 5000\nmemory-mib = 64\ntensor-mib = 16\n",
    )
    .unwrap();
    // A weights file of another plugin, a symlink to it, and a file of its own.
    let other = folder.add(&plugin("facts"), "facts");
    std::fs::create_dir(dir.join("weights")).unwrap();
    let model = workspace().join("target/plugins/smollm/weights/SmolLM2-135M-Instruct.Q4_1.gguf");
    std::os::unix::fs::symlink(&model, dir.join("weights/link.gguf")).unwrap();
    std::fs::write(dir.join("weights/junk.gguf"), b"GGUF\x03\0\0\0 truncated").unwrap();
    let registry = folder.registry();
    let mut req = apiary::round::request("probe", 1);
    req.domain = Some(format!(
        "../../facts/weights/facts.tsv {} link.gguf junk.gguf /etc/passwd",
        other.join("weights/facts.tsv").display()
    ));
    let p = registry.get("tensor-abuse").unwrap();
    let report = p
        .session(registry.sandbox(), 1)
        .unwrap()
        .answer(&req)
        .expect("no trap")
        .text;
    assert!(!report.contains("OPENED"), "{report}");
    for name in ["../../facts/weights/facts.tsv", "link.gguf", "/etc/passwd"] {
        assert!(
            report.contains(&format!("denied {name}: TensorError::NotFound")),
            "{name}: {report}"
        );
    }
    assert!(
        report.contains("denied junk.gguf: TensorError::InvalidFile"),
        "{report}"
    );
    assert!(
        report.contains("shape error: TensorError::Shape"),
        "{report}"
    );
    assert!(
        report.contains("upload error: TensorError::Shape"),
        "{report}"
    );
    assert!(
        report.contains("embedding error: TensorError::Shape"),
        "{report}"
    );
    // 16 MiB quota: three 4 MiB tensors plus the small one already held leave no room for a fourth.
    assert!(
        report.contains("quota after 3 tensors: TensorError::Quota"),
        "{report}"
    );
    assert!(report.contains("quota released"), "{report}");
    assert!(report.contains("backend cpu"), "{report}");
}

fn greedy_fixture() -> serde_json::Value {
    let path = workspace().join("plugins/smollm/tests/fixtures/greedy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn smollm_in_the_sandbox_matches_the_reference() {
    let folder = Folder::new();
    folder.add(&plugin("smollm"), "smollm");
    let registry = folder.registry();
    let p = registry.get("smollm").expect("smollm loads");
    let f = greedy_fixture();
    let case = &f["cases"][0];
    let mut req = apiary::round::request(case["prompt"].as_str().unwrap(), 0);
    req.max_tokens = f["steps"].as_u64().unwrap() as u32;
    let a = p
        .session(registry.sandbox(), 0)
        .unwrap()
        .answer(&req)
        .unwrap();
    assert_eq!(a.text, case["text"].as_str().unwrap().trim());
    assert!(a.confidence > 0.0);
}

/// Gemma 3 (a second architecture on the same kernels) in the sandbox: its greedy answer
/// is the independent reference's, and it ranks multiple-choice options.
#[test]
fn gemma_in_the_sandbox_matches_the_reference() {
    let folder = Folder::new();
    folder.add(&plugin("gemma"), "gemma");
    let registry = folder.registry();
    let p = registry.get("gemma").expect("gemma loads");
    let path = workspace().join("plugins/gemma/tests/fixtures/greedy.json");
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = &f["cases"][0];
    let mut req = apiary::round::request(case["question"].as_str().unwrap(), 0);
    req.max_tokens = f["steps"].as_u64().unwrap() as u32;
    let mut session = p.session(registry.sandbox(), 0).unwrap();
    let a = session.answer(&req).unwrap();
    assert_eq!(a.text, case["text"].as_str().unwrap().trim());
    req.choices = vec!["Berlin".into(), "Paris".into(), "Madrid".into()];
    let a = session.answer(&req).unwrap();
    assert_eq!((a.choice, a.text.as_str()), (Some(1), "B. Paris"));
}

#[test]
fn ask_gets_paris_from_the_swarm_with_a_language_model() {
    let folder = Folder::new();
    folder.add(&plugin("smollm"), "smollm");
    let registry = folder.registry();
    let r = ask(&registry, "What is the capital of France?");
    assert!(winner(&r).contains("Paris"), "{r:#?}");
}
