//! The fuzz corpora as a regression test: every committed input of every target, run
//! once through the target (no fuzzing, no libFuzzer). `corpus/NAME/` must exist and hold
//! inputs; `regressions/NAME/` (minimized crashes, once fixed) is optional.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let target = apiary_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no target {name}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus").join(name);
    assert!(
        corpus.is_dir(),
        "{} is missing: every target needs a committed corpus",
        corpus.display()
    );
    let mut files = inputs(&corpus);
    assert!(!files.is_empty(), "{} is empty", corpus.display());
    let regressions = root.join("regressions").join(name);
    if regressions.is_dir() {
        files.extend(inputs(&regressions));
    }
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            failed.push(
                file.strip_prefix(root)
                    .unwrap_or(file)
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} of {} inputs fail (panic messages above): {failed:#?}",
        failed.len(),
        files.len()
    );
}

macro_rules! replay {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$m])*
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*
    };
}

replay!(
    #[cfg(feature = "host")]
    tensor_ops,
    gguf,
    safetensors,
    #[cfg(feature = "host")]
    manifest,
    #[cfg(feature = "host")]
    wire,
    #[cfg(feature = "host")]
    transcript,
    #[cfg(feature = "host")]
    chat_request,
    arith,
);

/// Every libFuzzer wrapper in `fuzz_targets/` has its function, and the other way round.
#[cfg(feature = "host")]
#[test]
fn every_target_has_a_wrapper_and_a_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    let mut wrappers: Vec<String> = inputs(&dir)
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    wrappers.sort();
    let mut targets: Vec<String> = apiary_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    targets.sort();
    assert_eq!(wrappers, targets);
}
