//! A bounded soak: a few thousand local rounds mixing hostile fixtures with well-behaved
//! plugins. Every round must complete with `arith` answering, and the host's resident
//! memory must stay flat (what one round allocates is released when it ends).

mod common;

use apiary::round::{self, RoundConfig};
use common::*;
use std::time::Instant;

const ROUNDS: usize = 2_000;
const WARM_UP: usize = 200;

fn rss() -> u64 {
    proc_memory("VmRSS")
}

#[test]
fn thousands_of_mixed_rounds_keep_memory_flat() {
    // glibc gives each thread that allocates its own arena (up to 8 per core) and keeps
    // what was freed in it: every round runs its plugins on fresh threads, so the
    // resident size wanders by tens of MiB with no leak at all (measured: 162 → 227 MiB
    // with the default, 56 → 56 MiB with two arenas, same code). Two arenas leave only
    // what this test is about: memory that a round keeps.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before the rounds run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    folder.add(&plugin("units"), "units");
    for f in [
        "degenerate-shapes",
        "quota-matmul",
        "panic",
        "memory-bomb",
        "giant-answer",
        "confident-abstainer",
        "liar",
    ] {
        folder.add_fixture(f);
    }
    let registry = folder.registry();
    assert_eq!(registry.active().len(), 9, "{:?}", registry.listing());
    // Faulty plugins stay in every round instead of being quarantined after three.
    let config = RoundConfig {
        quarantine_after: u32::MAX,
        ..Default::default()
    };
    let plugins = registry.active();
    let started = Instant::now();
    let mut after_warm_up = 0;
    let mut peak = 0;
    for i in 0..ROUNDS {
        let request = round::request("What is 6 * 7?", i as u64);
        let r = round::run_local_round(registry.sandbox(), &plugins, &request, &config)
            .expect("round runs");
        assert_eq!(
            member(&r, "arith").answer.as_deref(),
            Some("6 * 7 = 42"),
            "round {i}: {r:#?}"
        );
        assert!(member(&r, "panic").fault && member(&r, "memory-bomb").fault);
        if i + 1 == WARM_UP {
            after_warm_up = rss();
        }
        peak = peak.max(rss());
    }
    let end = rss();
    eprintln!(
        "soak: {ROUNDS} rounds of 9 plugins in {:?}; RSS after {WARM_UP} rounds {} MiB, \
         peak {} MiB, at the end {} MiB",
        started.elapsed(),
        after_warm_up >> 20,
        peak >> 20,
        end >> 20
    );
    assert!(
        end < after_warm_up + (64 << 20),
        "resident memory grew from {} MiB to {} MiB",
        after_warm_up >> 20,
        end >> 20
    );
}
