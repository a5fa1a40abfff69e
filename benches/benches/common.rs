//! What the tensor and GPU benches share: paths into `target/` and the SmolLM2 answer
//! bench (plugin through host kernels vs the same code native), run on whichever
//! backend the process chose.

use apiary::plugins::loader;
use apiary::round;
use apiary::sandbox::{Sandbox, SandboxConfig};
use criterion::Criterion;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

pub fn target(p: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(p);
    assert!(
        p.exists(),
        "{} missing: run scripts/build-plugins.sh",
        p.display()
    );
    p
}

/// SmolLM2 answering (prefill + 32 greedy tokens) as a plugin and natively.
pub fn smollm_answer(c: &mut Criterion, group: &str) {
    let prompt = "Write a short poem about bees.";
    let mut req = round::request(prompt, 0);
    req.max_tokens = 32;
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(20));

    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let plugin = loader::load(&sandbox, None, &target("plugins/smollm")).unwrap();
    let mut session = plugin.session(&sandbox, 0).unwrap();
    session.answer(&req).unwrap(); // load the model once in this instance
    if let Some(before) = apiary_tensor::backend::gpu_submissions() {
        session.answer(&req).unwrap();
        let after = apiary_tensor::backend::gpu_submissions().unwrap_or(before);
        eprintln!("{group}: {} GPU submissions per answer", after - before);
    }
    g.bench_function("plugin-through-host-kernels", |b| {
        b.iter(|| black_box(session.answer(&req).unwrap()))
    });

    apiary_plugin_api::tensor::set_weights_dir(target("plugins/smollm/weights"));
    let engine = smollm::load().unwrap();
    let native_req = apiary_plugin_api::Request {
        prompt: prompt.into(),
        domain: None,
        choices: vec![],
        max_tokens: 32,
        temperature: 0.0,
        seed: 0,
        messages: vec![],
    };
    g.bench_function("native-same-code", |b| {
        b.iter(|| black_box(engine.generate(&native_req).unwrap()))
    });
    g.finish();
}
