//! Adding, replacing and removing plugins while the host runs.

mod common;

use common::*;
use std::sync::mpsc::channel;
use std::time::Duration;

#[test]
fn rescan_adds_replaces_and_removes() {
    let folder = Folder::new();
    let registry = folder.registry();
    assert!(registry.active().is_empty());

    folder.add(&plugin("arith"), "arith");
    let r = registry.rescan().unwrap();
    assert_eq!(r.added, vec!["arith"]);
    assert_eq!(winner(&ask(&registry, "What is 6 * 7?")), "6 * 7 = 42");
    let before = registry.get("arith").unwrap().wasm_sha256.clone();

    // Unchanged folder: nothing reloads.
    assert!(registry.rescan().unwrap().is_empty());

    // Replace the component with a different specialist under the same folder.
    std::fs::copy(
        plugin("units").join("units.wasm"),
        folder.path().join("arith/arith.wasm"),
    )
    .unwrap();
    let r = registry.rescan().unwrap();
    assert_eq!(r.replaced, vec!["arith"]);
    assert_ne!(registry.get("arith").unwrap().wasm_sha256, before);
    assert!(winner(&ask(&registry, "Convert 2 hours to minutes")).contains("120 minutes"));

    std::fs::remove_dir_all(folder.path().join("arith")).unwrap();
    let r = registry.rescan().unwrap();
    assert_eq!(r.removed, vec!["arith"]);
    assert!(registry.active().is_empty());
}

#[test]
fn watcher_reloads_without_a_restart() {
    let folder = Folder::new();
    let registry = folder.registry();
    let (tx, rx) = channel();
    let _watch = registry
        .watch(move |report| tx.send(report.clone()).unwrap())
        .unwrap();
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("watcher reported a change")
    };
    // A change seen half-way (a folder being deleted file by file is briefly a broken
    // plugin, refused) may be reported before the final state: wait for that one.
    let until = |done: &dyn Fn(&apiary::plugins::registry::ScanReport) -> bool| {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            let report = rx.recv_timeout(left).expect("watcher reported the change");
            if done(&report) {
                return report;
            }
        }
    };

    // Add: copy into a hidden name, then rename, as an operator's `mv` would.
    let staging = folder.path().join(".incoming");
    copy_dir(&plugin("facts"), &staging);
    std::fs::rename(&staging, folder.path().join("facts")).unwrap();
    assert_eq!(next().added, vec!["facts"]);
    assert!(winner(&ask(&registry, "What is the capital of Japan?")).contains("Tokyo"));

    // Replace: a new plugin.toml with a different name.
    std::fs::write(
        folder.path().join("facts/plugin.toml"),
        "name = \"atlas\"\nwasm = \"facts.wasm\"\n",
    )
    .unwrap();
    // (A write is a truncate, then the text: the watcher may load the empty file first.)
    let replaced = until(&|r| {
        !r.replaced.is_empty() && registry.get("facts").is_some_and(|p| p.name == "atlas")
    });
    assert_eq!(replaced.replaced, vec!["facts"]);
    assert_eq!(registry.get("facts").unwrap().name, "atlas");

    // Remove.
    std::fs::remove_dir_all(folder.path().join("facts")).unwrap();
    assert_eq!(until(&|r| !r.removed.is_empty()).removed, vec!["facts"]);
    assert!(registry.active().is_empty());
}

#[test]
fn a_round_in_flight_keeps_the_plugin_it_started_with() {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let registry = folder.registry();
    let held = registry.active();
    std::fs::remove_dir_all(folder.path().join("arith")).unwrap();
    registry.rescan().unwrap();
    assert!(registry.active().is_empty());
    // The Arc taken before removal still runs.
    let r = apiary::round::run_local_round(
        registry.sandbox(),
        &held,
        &apiary::round::request("What is 1 + 1?", 0),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(winner(&r), "1 + 1 = 2");
}
