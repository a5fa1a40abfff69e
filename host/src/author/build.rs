//! `apiary plugins build`: compile a plugin crate for wasm32-wasip2 and lay out the
//! plugin folder a node loads.
//!
//! The `.wasm` is found from cargo's own account of what it built
//! (`--message-format=json-render-diagnostics`: one JSON line per artifact, with the
//! package's manifest path and the files produced), never by guessing a path: the target
//! folder may be shared (`CARGO_TARGET_DIR`, inherited as it is), renamed in
//! `.cargo/config.toml`, or hold other crates' `.wasm` files. Diagnostics still reach the
//! author as cargo renders them, on stderr, and the last of them are kept to recognise a
//! missing target.
//!
//! The folder is assembled beside its final place under a name starting with `.` (which
//! a node's plugins folder ignores) and renamed into place, so a node watching the output
//! folder never loads half a plugin.

use crate::plugins::loader::WEIGHTS_DIR;
use crate::plugins::manifest::{MANIFEST_FILE, PluginManifest};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Why a build did not produce a plugin folder. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{} is not a plugin crate (no Cargo.toml); pass the folder `apiary plugins new` made",
        .0.display()
    )]
    NotACrate(PathBuf),
    #[error("{}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("cannot run cargo ({0}); install Rust with rustup (https://rustup.rs)")]
    NoCargo(String),
    #[error(
        "the {TARGET} target is not installed: run `rustup target add {TARGET}`, then build again"
    )]
    TargetMissing,
    #[error("cargo build failed ({status}); its errors are above")]
    CargoFailed { status: String },
    #[error(
        "cargo built no .wasm for {package}: is `crate-type = [\"cdylib\"]` in its [lib] section?"
    )]
    NoWasm { package: String },
    #[error(
        "{} exists and is not a plugin folder (no plugin.toml or .wasm in it); choose another --out or remove it",
        .0.display()
    )]
    OutTaken(PathBuf),
    #[error("cannot write {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
}

fn io_error(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    /// The plugin folder: `plugin.toml`, `NAME.wasm`, `weights/`.
    pub folder: PathBuf,
    pub wasm_bytes: u64,
    /// Files copied (or linked) into `weights/`.
    pub weight_files: usize,
    /// How long cargo took.
    pub cargo_time: Duration,
}

/// The package name in `dir/Cargo.toml`.
pub fn package_name(dir: &Path) -> Result<String, BuildError> {
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|_| BuildError::NotACrate(dir.into()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| BuildError::Manifest {
            path: path.clone(),
            message: e.message().to_string(),
        })?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .ok_or(BuildError::Manifest {
            path,
            message: "has no [package] name".into(),
        })
}

/// Build the crate in `dir` and lay out its plugin folder in `out` (default
/// `dir/target/plugin`).
pub fn build(dir: &Path, out: Option<&Path>) -> Result<Built, BuildError> {
    let name = package_name(dir)?;
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .map_err(|e| io_error(dir, e))?;
    check_target(dir)?;
    let started = Instant::now();
    let wasm = cargo_build(dir, &manifest, &name)?;
    let cargo_time = started.elapsed();
    let out = out.map_or_else(|| dir.join("target").join("plugin"), Path::to_path_buf);
    let (folder, wasm_bytes, weight_files) = lay_out(dir, &name, &wasm, &out)?;
    Ok(Built {
        name,
        folder,
        wasm_bytes,
        weight_files,
        cargo_time,
    })
}

/// With rustup, ask it whether the target is there before building: cargo's own error
/// for a missing target ("can't find crate for `core`") does not say what to do. Asked
/// in `dir`, so a `rust-toolchain.toml` there picks the toolchain asked about.
fn check_target(dir: &Path) -> Result<(), BuildError> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
    else {
        return Ok(()); // no rustup: cargo will say what it says
    };
    let listed = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !listed.lines().any(|l| l.trim() == TARGET) {
        return Err(BuildError::TargetMissing);
    }
    Ok(())
}

/// The cargo that runs us if any (`cargo run`, tests), else the one on the PATH.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn cargo_build(dir: &Path, manifest: &Path, package: &str) -> Result<PathBuf, BuildError> {
    let mut child = cargo()
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::NoCargo(e.to_string()))?;
    let stderr = child.stderr.take().map(|s| std::thread::spawn(|| tee(s)));
    let mut wasm = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = wasm_artifact(&line, manifest) {
                wasm = Some(path);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| BuildError::NoCargo(e.to_string()))?;
    let said = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        if target_missing(&said) {
            return Err(BuildError::TargetMissing);
        }
        return Err(BuildError::CargoFailed {
            status: status.to_string(),
        });
    }
    wasm.ok_or_else(|| BuildError::NoWasm {
        package: package.to_string(),
    })
}

/// Copy cargo's stderr to ours as it comes, keeping its last 16 KiB.
fn tee(mut from: impl Read) -> String {
    const KEPT: usize = 16 << 10;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut to = std::io::stderr();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = to.write_all(&buf[..n]);
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * KEPT {
            kept.drain(..kept.len() - KEPT);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Whether cargo's or rustc's words say the target's standard library is missing.
pub fn target_missing(stderr: &str) -> bool {
    stderr.contains("target may not be installed")
        || (stderr.contains("can't find crate for `core`") && stderr.contains(TARGET))
}

/// The `.wasm` a JSON line of cargo's reports, if it is a `compiler-artifact` of the
/// package whose manifest is `manifest`.
pub fn wasm_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    let from = Path::new(msg["manifest_path"].as_str()?);
    let same = from == manifest || from.canonicalize().ok().as_deref() == Some(manifest);
    if !same {
        return None;
    }
    msg["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// Assemble `out/.NAME.building/` and rename it to `out/NAME/`. Returns the folder, the
/// `.wasm`'s size and the number of weight files.
fn lay_out(
    dir: &Path,
    name: &str,
    wasm: &Path,
    out: &Path,
) -> Result<(PathBuf, u64, usize), BuildError> {
    let folder = out.join(name);
    let staging = out.join(format!(".{name}.building"));
    std::fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| io_error(&staging, e))?;
    let result = fill(dir, name, wasm, &staging).and_then(|(bytes, weights)| {
        replace(&staging, &folder)?;
        Ok((folder.clone(), bytes, weights))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// The plugin folder's content: `plugin.toml` (if the crate has one), the `.wasm` under
/// the name the manifest gives (default `NAME.wasm`), and `weights/`.
fn fill(dir: &Path, name: &str, wasm: &Path, into: &Path) -> Result<(u64, usize), BuildError> {
    let manifest_src = dir.join(MANIFEST_FILE);
    let mut wasm_name = format!("{name}.wasm");
    if manifest_src.is_file() {
        let text =
            std::fs::read_to_string(&manifest_src).map_err(|e| io_error(&manifest_src, e))?;
        let manifest = PluginManifest::parse(&text).map_err(|message| BuildError::Manifest {
            path: manifest_src.clone(),
            message,
        })?;
        if let Some(w) = manifest.wasm {
            wasm_name = w;
        }
        let dest = into.join(MANIFEST_FILE);
        std::fs::write(&dest, text).map_err(|e| io_error(&dest, e))?;
    }
    let dest = into.join(&wasm_name);
    let bytes = std::fs::copy(wasm, &dest).map_err(|e| io_error(&dest, e))?;
    let weights = dir.join(WEIGHTS_DIR);
    let mut files = 0;
    if weights.is_dir() {
        copy_tree(&weights, &into.join(WEIGHTS_DIR), &mut files)?;
    }
    Ok((bytes, files))
}

/// Copy a folder, hard-linking files where the filesystem allows (weights are large and
/// read-only in the sandbox) and copying them where it does not. Symbolic links are
/// followed: what is shipped is the file, since a node refuses links that lead out.
fn copy_tree(from: &Path, to: &Path, files: &mut usize) -> Result<(), BuildError> {
    std::fs::create_dir_all(to).map_err(|e| io_error(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io_error(from, e))? {
        let entry = entry.map_err(|e| io_error(from, e))?;
        let src = entry.path();
        let dest = to.join(entry.file_name());
        let real = src.canonicalize().map_err(|e| io_error(&src, e))?;
        if real.is_dir() {
            copy_tree(&real, &dest, files)?;
        } else if real.is_file() {
            if std::fs::hard_link(&real, &dest).is_err() {
                std::fs::copy(&real, &dest).map_err(|e| io_error(&dest, e))?;
            }
            *files += 1;
        }
    }
    Ok(())
}

/// Put `staging` at `folder`, replacing an earlier build there (a folder with a
/// `plugin.toml` or a `.wasm`), never anything else.
fn replace(staging: &Path, folder: &Path) -> Result<(), BuildError> {
    if std::fs::symlink_metadata(folder).is_ok() {
        if !looks_like_plugin(folder) {
            return Err(BuildError::OutTaken(folder.to_path_buf()));
        }
        std::fs::remove_dir_all(folder).map_err(|e| io_error(folder, e))?;
    }
    std::fs::rename(staging, folder).map_err(|e| io_error(folder, e))
}

fn looks_like_plugin(folder: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return false;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.is_empty()
        || names
            .iter()
            .any(|n| n == MANIFEST_FILE || n.ends_with(".wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasm_is_the_one_cargo_reports_for_this_package() {
        let manifest = Path::new("/p/words/Cargo.toml");
        let ours = r#"{"reason":"compiler-artifact","manifest_path":"/p/words/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip2/release/words.wasm"]}"#;
        assert_eq!(
            wasm_artifact(ours, manifest),
            Some(PathBuf::from("/t/wasm32-wasip2/release/words.wasm"))
        );
        let dependency = r#"{"reason":"compiler-artifact","manifest_path":"/api/Cargo.toml","filenames":["/t/x.rlib"]}"#;
        assert_eq!(wasm_artifact(dependency, manifest), None);
        let other = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(wasm_artifact(other, manifest), None);
        assert_eq!(wasm_artifact("not json", manifest), None);
    }

    #[test]
    fn a_missing_target_is_recognised() {
        assert!(target_missing(
            "error[E0463]: can't find crate for `core`\n  = note: the `wasm32-wasip2` target may not be installed"
        ));
        assert!(!target_missing("error[E0425]: cannot find value `x`"));
    }

    #[test]
    fn a_folder_is_replaced_only_if_it_is_an_earlier_build() {
        let out = tempfile::tempdir().unwrap();
        let staging = out.path().join(".p.building");
        let folder = out.path().join("p");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("p.wasm"), "new").unwrap();
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            replace(&staging, &folder),
            Err(BuildError::OutTaken(_))
        ));
        assert!(folder.join("notes.txt").exists());
        std::fs::remove_file(folder.join("notes.txt")).unwrap();
        std::fs::write(folder.join("p.wasm"), "old").unwrap();
        replace(&staging, &folder).unwrap();
        assert_eq!(
            std::fs::read_to_string(folder.join("p.wasm")).unwrap(),
            "new"
        );
        assert!(!staging.exists());
    }

    #[test]
    fn not_a_crate_says_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let e = build(dir.path(), None).unwrap_err();
        assert!(matches!(e, BuildError::NotACrate(_)), "{e}");
        assert!(e.to_string().contains("apiary plugins new"), "{e}");
    }
}
