//! Shared helpers: where the built plugins are, and temporary plugin folders.
#![allow(dead_code)]

use apiary::plugins::Registry;
use apiary::round::{self, RoundConfig, RoundReport};
use apiary::sandbox::{Sandbox, SandboxConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod node;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn built(kind: &str) -> PathBuf {
    let dir = workspace().join("target").join(kind);
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/build-plugins.sh first (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// `target/plugins/<name>`: an example plugin folder.
pub fn plugin(name: &str) -> PathBuf {
    built("plugins").join(name)
}

/// `target/fixtures/<name>`: a hostile fixture folder.
pub fn fixture(name: &str) -> PathBuf {
    built("fixtures").join(name)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A temporary plugins folder.
pub struct Folder {
    pub dir: tempfile::TempDir,
}

impl Folder {
    pub fn new() -> Self {
        Folder {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copy a plugin folder in under `id`.
    pub fn add(&self, src: &Path, id: &str) -> PathBuf {
        let dest = self.path().join(id);
        copy_dir(src, &dest);
        dest
    }

    /// Two arithmetic judges, `arith` and `arith2` (the same component under two names), so
    /// that a third plugin's answer can be judged by someone other than its author.
    pub fn add_two_ariths(&self) {
        self.add(&plugin("arith"), "arith");
        let second = self.add(&plugin("arith"), "arith2");
        std::fs::write(
            second.join("plugin.toml"),
            "name = \"arith2\"\nwasm = \"arith.wasm\"\n",
        )
        .unwrap();
    }

    /// Copy a hostile fixture in, with tight limits so tests finish fast.
    pub fn add_fixture(&self, name: &str) -> PathBuf {
        let dest = self.add(&fixture(name), name);
        std::fs::write(
            dest.join("plugin.toml"),
            format!(
                "name = \"{name}\"\n[limits]\nassess-ms = 1000\nanswer-ms = 400\ncompare-ms = 400\nmemory-mib = 32\noutput-kib = 16\nanswer-kib = 16\nlog-lines = 50\n"
            ),
        )
        .unwrap();
        dest
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry_with(SandboxConfig::default())
    }

    pub fn registry_with(&self, config: SandboxConfig) -> Arc<Registry> {
        let sandbox = Arc::new(Sandbox::new(config).expect("sandbox"));
        let r = Arc::new(Registry::new(self.path(), sandbox, None));
        r.rescan().expect("rescan");
        r
    }
}

pub fn ask(registry: &Registry, prompt: &str) -> RoundReport {
    ask_with(registry, round::request(prompt, 7))
}

pub fn ask_with(registry: &Registry, request: apiary::sandbox::Request) -> RoundReport {
    round::run_local_round(
        registry.sandbox(),
        &registry.active(),
        &request,
        &RoundConfig::default(),
    )
    .expect("round runs")
}

pub fn winner(report: &RoundReport) -> String {
    report
        .winning_answer()
        .map(|a| a.text.clone())
        .unwrap_or_default()
}

pub fn member<'r>(report: &'r RoundReport, plugin: &str) -> &'r apiary::round::Member {
    report
        .members
        .iter()
        .find(|m| m.plugin == plugin)
        .unwrap_or_else(|| panic!("{plugin} not in round"))
}

pub fn refusal(registry: &Registry, id: &str) -> String {
    registry
        .listing()
        .into_iter()
        .find(|l| l.id == id)
        .map(|l| match l.status {
            apiary::plugins::registry::Status::Refused { reason } => reason,
            apiary::plugins::registry::Status::Loaded { .. } => {
                panic!("{id} loaded but should be refused")
            }
        })
        .unwrap_or_else(|| panic!("{id} not listed"))
}

/// A `/proc/self/status` memory figure (`VmRSS`, `VmHWM`, ...) of this process, in bytes.
pub fn proc_memory(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib * 1024
}
