//! Signed plugin packages through the real binary: `keys new`, `plugins pack`,
//! `plugins install`, and what `plugins list`, `audit` and `ask` then see. Every refusal
//! must say why and leave the plugins folder exactly as it was (no staging folder, no
//! partial plugin): the folder is snapshotted, hidden entries included, before and after.
//!
//! Hostile archives are crafted here byte by byte (the `tar` crate's builder refuses `..`
//! and absolute names, so those names are written into the raw header), and signed with
//! the test's own author key where the test is about what comes after the signature.

mod common;

use apiary::package::AuthorSigner;
use apiary::package::index::{FileEntry, Index};
use apiary::plugins::Registry;
use apiary::plugins::registry::Status;
use apiary::sandbox::{Sandbox, SandboxConfig};
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// An author's and an operator's world: a config home (key, config file), a compile
/// cache, a plugins folder and a folder for packages.
struct World {
    root: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let w = World {
            root: tempfile::tempdir().unwrap(),
        };
        for d in ["cfg", "plugins", "out", "cache"] {
            std::fs::create_dir_all(w.root.path().join(d)).unwrap();
        }
        w
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }

    fn plugins_arg(&self) -> String {
        self.plugins().display().to_string()
    }

    /// `apiary ARGS` with this world's config home and cache, and none of the caller's
    /// APIARY_* settings.
    fn apiary(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiary"));
        cmd.args(args)
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .env("XDG_CONFIG_HOME", self.path("cfg"))
            .env("HOME", self.root.path());
        for var in [
            "APIARY_PLUGINS",
            "APIARY_AUTHOR_KEY",
            "APIARY_TRUSTED_AUTHORS",
            "APIARY_ALLOW_UNSIGNED",
            "APIARY_ALLOW_UNKNOWN_AUTHORS",
            "APIARY_CONFIG",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.output().expect("apiary runs")
    }

    /// `apiary ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.apiary(args);
        assert!(
            o.status.success(),
            "apiary {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `apiary ARGS`, which must fail with exit code 1; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.apiary(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "apiary {args:?} should fail: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stderr).unwrap()
    }

    /// `keys new`: the public key.
    fn new_key(&self) -> String {
        self.ok(&["keys", "new"]).trim().to_string()
    }

    fn key_file(&self) -> PathBuf {
        self.path("cfg/apiary/author.key")
    }

    /// `plugins pack DIR --out out --json`: the package's path.
    fn pack(&self, dir: &Path, extra: &[&str]) -> PathBuf {
        let out = self.path("out").display().to_string();
        let mut args = vec![
            "plugins",
            "pack",
            dir.to_str().unwrap(),
            "--out",
            &out,
            "--json",
        ];
        args.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&self.ok(&args)).unwrap();
        PathBuf::from(v["path"].as_str().unwrap())
    }

    /// `plugins install PACKAGE --plugins <this world's> EXTRA...`.
    fn install_output(&self, package: &Path, extra: &[&str]) -> (Vec<String>, Output) {
        let mut args: Vec<String> = ["plugins", "install"].map(String::from).to_vec();
        args.push(package.display().to_string());
        args.push("--plugins".into());
        args.push(self.plugins_arg());
        args.extend(extra.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.apiary(&refs);
        (args, o)
    }

    fn install(&self, package: &Path, extra: &[&str]) -> String {
        let (args, o) = self.install_output(package, extra);
        assert!(
            o.status.success(),
            "apiary {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn refused(&self, package: &Path, extra: &[&str]) -> String {
        let (args, o) = self.install_output(package, extra);
        assert_eq!(
            o.status.code(),
            Some(1),
            "apiary {args:?} should fail: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stderr).unwrap()
    }

    fn list_json(&self, extra: &[&str]) -> Vec<Value> {
        let dir = self.plugins_arg();
        let mut args = vec!["plugins", "list", &dir, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
}

/// Every entry under `dir`, hidden ones included: path → kind, size and content hash.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else if meta.is_file() {
                let sha = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                out.insert(rel, format!("file {} {sha}", meta.len()));
            } else {
                out.insert(rel, format!("{:?}", meta.file_type()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Install `package` and expect a refusal naming `needle`, with the plugins folder
/// exactly as it was.
fn assert_refused(w: &World, package: &Path, extra: &[&str], needle: &str) -> String {
    let before = snapshot(&w.plugins());
    let err = w.refused(package, extra);
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(err.len() < 2000, "a {} byte message: {err}", err.len());
    let after = snapshot(&w.plugins());
    assert_eq!(before, after, "the plugins folder changed after: {err}");
    assert!(
        !after
            .keys()
            .any(|k| k.starts_with(".installing-") || k.starts_with(".replaced-")),
        "{after:?}"
    );
    err
}

/// A copy of `target/plugins/NAME` in `w`, to change before packing.
fn source(w: &World, name: &str, as_name: &str) -> PathBuf {
    let dir = w.path(&format!("src/{as_name}"));
    copy_dir(&plugin(name), &dir);
    dir
}

// --- crafting archives ------------------------------------------------------------------

/// One raw tar entry: a header and the data that follows it (possibly none, whatever the
/// header's size says).
struct Raw {
    header: tar::Header,
    data: Vec<u8>,
}

fn regular(name: &str, data: &[u8]) -> Raw {
    let mut header = tar::Header::new_ustar();
    header.set_path(name).unwrap();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Raw {
        header,
        data: data.to_vec(),
    }
}

/// A header whose name is written byte for byte (the builder refuses `..` and `/x`).
fn raw_named(name: &[u8], kind: tar::EntryType, size: u64, data: &[u8]) -> Raw {
    let mut header = tar::Header::new_old();
    let field = &mut header.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    Raw {
        header,
        data: data.to_vec(),
    }
}

fn tar_bytes(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(e.header.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The index and files of a real plugin folder, for crafted packages.
fn index_of(
    dir: &Path,
    name: &str,
    author: Option<&AuthorSigner>,
) -> (Index, Vec<(String, Vec<u8>)>) {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    let index = Index {
        format: 1,
        name: name.into(),
        version: "0.1.0".into(),
        author: author.map(AuthorSigner::public),
        files: files
            .iter()
            .map(|(p, d)| FileEntry {
                path: p.clone(),
                sha256: hex::encode(Sha256::digest(d)),
                bytes: d.len() as u64,
            })
            .collect(),
    };
    (index, files)
}

/// A package: `index` signed by `signer` (if any), then `entries`.
fn craft(
    w: &World,
    file: &str,
    index: &Index,
    signer: Option<&AuthorSigner>,
    entries: Vec<Raw>,
) -> PathBuf {
    let bytes = index.to_bytes();
    let mut all = vec![regular("apiary-package.json", &bytes)];
    if let Some(s) = signer {
        let sig = format!("{}\n", hex::encode(s.sign(&bytes)));
        all.push(regular("apiary-package.sig", sig.as_bytes()));
    }
    all.extend(entries);
    let path = w.path(&format!("out/{file}"));
    std::fs::write(&path, tar_bytes(&all)).unwrap();
    path
}

fn files_entries(files: &[(String, Vec<u8>)]) -> Vec<Raw> {
    files
        .iter()
        .map(|(p, d)| regular(&format!("files/{p}"), d))
        .collect()
}

/// The entries of a real package file, by name, with their data's offset in the file.
fn entries_of(package: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(package).unwrap());
    let mut out = Vec::new();
    for e in archive.entries().unwrap().raw(true) {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let at = e.raw_file_position();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((name, at, data));
    }
    out
}

fn the_author(w: &World) -> AuthorSigner {
    AuthorSigner::load(&w.key_file()).unwrap()
}

// --- the tests --------------------------------------------------------------------------

#[test]
fn a_signed_package_installs_loads_and_shows_its_signer() {
    let w = World::new();
    let key = w.new_key();
    assert!(key.starts_with("ed25519:") && key.len() == 72, "{key}");
    assert_eq!(w.ok(&["keys", "show"]).trim(), key);
    let shown: Value = serde_json::from_str(&w.ok(&["keys", "show", "--json"])).unwrap();
    assert_eq!(shown["key"], key.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.key_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `keys new` keeps an existing key unless told otherwise.
    let err = w.fails(&["keys", "new"]);
    assert!(err.contains("--force") && err.contains(&key), "{err}");
    assert_eq!(w.ok(&["keys", "show"]).trim(), key);

    let arith = w.pack(&plugin("arith"), &[]);
    assert_eq!(arith.file_name().unwrap(), "arith-0.1.0.apiary");
    let text = w.ok(&[
        "plugins",
        "pack",
        plugin("units").to_str().unwrap(),
        "--out",
        w.path("out").to_str().unwrap(),
    ]);
    assert!(text.contains("units-0.1.0.apiary"), "{text}");
    assert!(
        text.contains("files    2") && text.contains(&format!("signer   {key}")),
        "{text}"
    );
    let units = w.path("out/units-0.1.0.apiary");

    let out = w.install(&arith, &["--trust", &key]);
    assert!(out.starts_with("installed arith 0.1.0 in "), "{out}");
    assert!(out.contains(&format!("signed by {key} (trusted)")), "{out}");
    assert!(out.contains("took "), "{out}");
    let v: Value = serde_json::from_str(&w.install(&units, &["--trust", &key, "--json"])).unwrap();
    assert_eq!(v["name"], "units");
    assert_eq!(v["replaced"], false);
    assert_eq!(v["signer"]["state"], "signed");
    assert_eq!(v["signer"]["trusted"], true);
    assert_eq!(v["files"], 2);

    // The folder holds the plugin's files and its record, nothing else.
    let names: Vec<String> = snapshot(&w.plugins()).into_keys().collect();
    assert_eq!(
        names,
        [
            "arith",
            "arith/.apiary-package.json",
            "arith/.apiary-package.sig",
            "arith/arith.wasm",
            "arith/plugin.toml",
            "units",
            "units/.apiary-package.json",
            "units/.apiary-package.sig",
            "units/plugin.toml",
            "units/units.wasm",
        ]
    );
    assert_eq!(
        std::fs::read(w.plugins().join("arith/arith.wasm")).unwrap(),
        std::fs::read(plugin("arith").join("arith.wasm")).unwrap()
    );

    // `list` loads both and names the signer; trusted by the config file, or by --trust.
    let listing = w.list_json(&[]);
    assert_eq!(listing.len(), 2);
    for l in &listing {
        assert_eq!(l["status"], "loaded", "{l}");
        assert_eq!(l["signer"]["state"], "signed", "{l}");
        assert_eq!(l["signer"]["author"], key.as_str());
        assert_eq!(l["signer"]["trusted"], false, "no trust list given: {l}");
        assert_eq!(l["signer"]["modified"], Value::Array(vec![]));
    }
    std::fs::write(
        w.path("cfg/apiary/config.toml"),
        format!("trusted-authors = [\"{key}\"]\n"),
    )
    .unwrap();
    for l in w.list_json(&[]) {
        assert_eq!(l["signer"]["trusted"], true, "{l}");
    }
    let text = w.ok(&["plugins", "list", &w.plugins_arg()]);
    assert!(text.contains("loaded   arith"), "{text}");
    assert_eq!(
        text.matches(&format!("signed by {key} (trusted)")).count(),
        2,
        "{text}"
    );
    // `config show` lists the trust policy with its sources.
    let cfg: Value = serde_json::from_str(&w.ok(&["config", "show", "--json"])).unwrap();
    let s = &cfg["settings"];
    assert_eq!(s["trusted-authors"]["value"], serde_json::json!([key]));
    assert_eq!(s["trusted-authors"]["source"], "file");
    assert_eq!(s["allow-unsigned"]["value"], false);
    assert_eq!(s["allow-unknown-authors"]["value"], false);
    let text = w.ok(&["config", "show", "--allow-unsigned"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("allow-unsigned"))
        .unwrap();
    assert!(
        line.starts_with("allow-unsigned = true") && line.ends_with("# flag"),
        "{text}"
    );

    // `audit` checks every byte and says who signed it.
    let arith_dir = w.plugins().join("arith");
    let text = w.ok(&["plugins", "audit", arith_dir.to_str().unwrap()]);
    assert!(
        text.contains(&format!("signer     signed by {key} (trusted)")),
        "{text}"
    );
    assert!(text.contains("verdict    LOADS"), "{text}");

    // The node answers from the installed plugins.
    let answer = w.ok(&["ask", "What is 6 * 7?", "--plugins", &w.plugins_arg()]);
    assert_eq!(answer, "6 * 7 = 42\n");

    // A file changed after install: both commands still load it and say what changed.
    let toml = arith_dir.join("plugin.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("# edited by hand\n");
    std::fs::write(&toml, text).unwrap();
    let l = w
        .list_json(&[])
        .into_iter()
        .find(|l| l["id"] == "arith")
        .unwrap();
    assert_eq!(l["status"], "loaded");
    assert_eq!(l["signer"]["modified"][0]["path"], "plugin.toml", "{l}");
    let text = w.ok(&["plugins", "list", &w.plugins_arg()]);
    assert!(
        text.contains("MODIFIED since signing: plugin.toml"),
        "{text}"
    );
    let o = w.apiary(&["plugins", "audit", arith_dir.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["signer"]["modified"][0]["path"], "plugin.toml");
    assert_eq!(report["signer"]["checked"], "full");
}

#[test]
fn the_list_compares_weights_by_size_and_the_audit_by_hash() {
    let w = World::new();
    let key = w.new_key();
    let src = source(&w, "arith", "arith");
    std::fs::create_dir(src.join("weights")).unwrap();
    std::fs::write(src.join("weights/table.bin"), vec![7u8; 10_000]).unwrap();
    let package = w.pack(&src, &[]);
    w.install(&package, &["--trust", &key]);
    let dir = w.plugins().join("arith");
    let mut data = std::fs::read(dir.join("weights/table.bin")).unwrap();
    data[5000] = 8;
    std::fs::write(dir.join("weights/table.bin"), &data).unwrap();
    let l = &w.list_json(&["--trust", &key])[0];
    assert_eq!(l["signer"]["checked"], "quick");
    assert_eq!(l["signer"]["modified"], Value::Array(vec![]), "{l}");
    let text = w.ok(&["plugins", "audit", dir.to_str().unwrap(), "--trust", &key]);
    assert!(
        text.contains("MODIFIED since signing: weights/table.bin (its sha256 differs)"),
        "{text}"
    );
    // A file added beside them is seen by both.
    std::fs::write(dir.join("weights/extra.bin"), b"x").unwrap();
    let l = &w.list_json(&[])[0];
    assert_eq!(
        l["signer"]["modified"][0]["path"], "weights/extra.bin",
        "{l}"
    );
    assert_eq!(l["signer"]["modified"][0]["change"], "added", "{l}");
    // A folder put in by hand is loaded and reported as such.
    w.ok(&["plugins", "list", &w.plugins_arg()]);
    copy_dir(&plugin("units"), &w.plugins().join("units"));
    let text = w.ok(&["plugins", "list", &w.plugins_arg()]);
    assert!(text.contains("loaded   units"), "{text}");
    assert!(text.contains("unsigned (installed by hand)"), "{text}");
}

#[test]
fn unsigned_and_unknown_author_packages_are_refused_unless_allowed() {
    let w = World::new();
    let key = w.new_key();
    let unsigned = w.pack(&plugin("arith"), &["--unsigned"]);
    let err = assert_refused(&w, &unsigned, &["--trust", &key], "is not signed");
    assert!(err.contains("--allow-unsigned"), "{err}");
    // Allowing unknown authors does not allow unsigned packages.
    assert_refused(&w, &unsigned, &["--allow-unknown-author"], "is not signed");
    let out = w.install(&unsigned, &["--allow-unsigned"]);
    assert!(out.contains("unsigned package arith 0.1.0"), "{out}");
    let l = &w.list_json(&[])[0];
    assert_eq!(l["signer"]["state"], "unsigned", "{l}");
    std::fs::remove_dir_all(w.plugins().join("arith")).unwrap();

    // Signed, but by nobody the operator trusts (none, or someone else).
    let signed = w.pack(&plugin("arith"), &[]);
    let err = assert_refused(&w, &signed, &[], "which is not one of your trusted authors");
    assert!(err.contains(&format!("--trust {key}")), "{err}");
    let other = AuthorSigner::from_secret([42; 32]).public().to_string();
    assert_refused(
        &w,
        &signed,
        &["--trust", &other],
        "not one of your trusted authors",
    );
    // The config file's allowance, as the flag's, admits it.
    std::fs::write(
        w.path("cfg/apiary/config.toml"),
        "allow-unknown-authors = true\n",
    )
    .unwrap();
    let out = w.install(&signed, &[]);
    assert!(out.contains(&format!("signed by {key} (unknown)")), "{out}");
    // An unknown author key in the config file is an error naming the key.
    std::fs::write(
        w.path("cfg/apiary/config.toml"),
        "trusted-authors = [\"ed25519:00\"]\n",
    )
    .unwrap();
    let err = w.refused(&signed, &[]);
    assert!(err.contains("key \"trusted-authors\""), "{err}");
}

#[test]
fn tampered_packages_are_refused_and_nothing_is_written() {
    let w = World::new();
    let key = w.new_key();
    let good = w.pack(&plugin("arith"), &[]);
    let trust = ["--trust", key.as_str()];
    // Something is installed already: a refusal must leave it alone too.
    w.install(&w.pack(&plugin("units"), &[]), &trust);
    let bytes = std::fs::read(&good).unwrap();
    let entries = entries_of(&good);
    let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap();

    // One byte of the component changed.
    let (_, at, data) = find("files/arith.wasm");
    let mut changed = bytes.clone();
    changed[*at as usize + data.len() / 2] ^= 0x01;
    let file = w.path("out/changed-file.apiary");
    std::fs::write(&file, &changed).unwrap();
    let err = assert_refused(
        &w,
        &file,
        &trust,
        "files/arith.wasm: sha256 does not match the signed index",
    );
    assert!(
        err.contains("get the package again from its author"),
        "{err}"
    );

    // One byte of the index changed (the version, so the JSON stays valid).
    let (_, at, data) = find("apiary-package.json");
    let text = String::from_utf8(data.clone()).unwrap();
    let offset = text.find("0.1.0").unwrap() + 4;
    let mut changed = bytes.clone();
    changed[*at as usize + offset] = b'9';
    let file = w.path("out/changed-index.apiary");
    std::fs::write(&file, &changed).unwrap();
    let err = assert_refused(&w, &file, &trust, "the signature does not verify");
    assert!(err.contains("Do not install it"), "{err}");
    // Allowances never admit a signature that does not verify.
    assert_refused(
        &w,
        &file,
        &["--allow-unknown-author", "--allow-unsigned"],
        "the signature does not verify",
    );

    // The signature removed: not quietly unsigned, since the index names its author.
    let me = the_author(&w);
    let (index, files) = index_of(&plugin("arith"), "arith", Some(&me));
    let file = craft(&w, "no-sig.apiary", &index, None, files_entries(&files));
    assert_refused(&w, &file, &["--allow-unsigned"], "the signature is missing");

    // Re-signed by another key: naming the original author, it does not verify; naming
    // itself, it is a valid signature by an unknown key.
    let mallory = AuthorSigner::from_secret([66; 32]);
    let file = craft(
        &w,
        "resigned.apiary",
        &index,
        Some(&mallory),
        files_entries(&files),
    );
    assert_refused(&w, &file, &trust, "the signature does not verify");
    let (index_m, _) = index_of(&plugin("arith"), "arith", Some(&mallory));
    let file = craft(
        &w,
        "mallory.apiary",
        &index_m,
        Some(&mallory),
        files_entries(&files),
    );
    let err = assert_refused(&w, &file, &trust, "not one of your trusted authors");
    assert!(err.contains(&mallory.public().to_string()), "{err}");
    // The same archive, the key trusted: it installs (the test crafts real packages).
    let out = w.install(&file, &["--trust", &mallory.public().to_string()]);
    assert!(out.contains("installed arith"), "{out}");
}

#[test]
fn crafted_archives_are_refused_and_nothing_is_written() {
    let w = World::new();
    let key = w.new_key();
    let trust = ["--trust", key.as_str()];
    w.install(&w.pack(&plugin("units"), &[]), &trust);
    let me = the_author(&w);
    let (index, files) = index_of(&plugin("arith"), "arith", Some(&me));
    let toml = files
        .iter()
        .find(|f| f.0 == "plugin.toml")
        .unwrap()
        .1
        .clone();
    let wasm_entry = regular("files/arith.wasm", &files[0].1);
    let good_entries = || files_entries(&files);
    // The crafted packages are real ones: unchanged, this installs (and is removed again).
    let ok = craft(&w, "ok.apiary", &index, Some(&me), good_entries());
    w.install(&ok, &trust);
    std::fs::remove_dir_all(w.plugins().join("arith")).unwrap();

    let with = |name: &str, last: Raw| {
        craft(
            &w,
            name,
            &index,
            Some(&me),
            vec![regular("files/arith.wasm", &files[0].1), last],
        )
    };
    use tar::EntryType as T;
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            with(
                "dotdot.apiary",
                raw_named(b"files/../x", T::Regular, 4, b"evil"),
            ),
            "has a `..` part",
        ),
        (
            with(
                "dotdot-top.apiary",
                raw_named(b"../x", T::Regular, 4, b"evil"),
            ),
            "../x: is outside files/",
        ),
        (
            with(
                "absolute.apiary",
                raw_named(b"/tmp/x", T::Regular, 4, b"evil"),
            ),
            "/tmp/x: is outside files/",
        ),
        (
            with(
                "absolute-in.apiary",
                raw_named(b"files//tmp/x", T::Regular, 4, b"evil"),
            ),
            "is absolute",
        ),
        (
            with("symlink.apiary", {
                let mut r = raw_named(b"files/plugin.toml", T::Symlink, 0, b"");
                r.header.set_link_name("/etc/passwd").unwrap();
                r.header.set_cksum();
                r
            }),
            "files/plugin.toml: is a symbolic link",
        ),
        (
            with("hardlink.apiary", {
                let mut r = raw_named(b"files/plugin.toml", T::Link, 0, b"");
                r.header.set_link_name("/etc/shadow").unwrap();
                r.header.set_cksum();
                r
            }),
            "is a hard link",
        ),
        (
            with(
                "fifo.apiary",
                raw_named(b"files/plugin.toml", T::Fifo, 0, b""),
            ),
            "is a named pipe (FIFO)",
        ),
        (
            with("chardev.apiary", {
                let mut r = regular("files/plugin.toml", b"");
                r.header.set_entry_type(T::Char);
                r.header.set_device_major(1).unwrap();
                r.header.set_device_minor(5).unwrap();
                r.header.set_cksum();
                r
            }),
            "is a character device",
        ),
        (
            with(
                "pax.apiary",
                raw_named(b"files/plugin.toml", T::XHeader, 0, b""),
            ),
            "PAX extended header",
        ),
        (
            with(
                "longname.apiary",
                raw_named(b"././@LongLink", T::GNULongName, 0, b""),
            ),
            "GNU long-name",
        ),
        // The index's plugin.toml, but a header claiming 10 GB (only the header is written).
        (
            with(
                "huge-header.apiary",
                raw_named(b"files/plugin.toml", T::Regular, 10 << 30, b""),
            ),
            "its header says 10737418240 bytes but the signed index says",
        ),
        (
            with("not-listed.apiary", regular("files/extra.bin", b"x")),
            "files/extra.bin: is not listed in the signed index",
        ),
        (
            with("twice.apiary", regular("files/arith.wasm", &files[0].1)),
            "files/arith.wasm: is in the archive twice",
        ),
        (
            craft(&w, "missing.apiary", &index, Some(&me), vec![wasm_entry]),
            "files/plugin.toml is in the signed index but not in the archive",
        ),
    ];
    for (file, needle) in &cases {
        assert_refused(&w, file, &trust, needle);
    }

    // Cut short inside the last file: the archive ends after 10 of plugin.toml's bytes.
    let file = with("truncated.apiary", regular("files/plugin.toml", &toml));
    let len = std::fs::metadata(&file).unwrap().len();
    let cut = len - 1024 - toml.len().div_ceil(512) as u64 * 512 + 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(cut)
        .unwrap();
    assert_refused(&w, &file, &trust, "files/plugin.toml: ends after 10 of its");

    // Signed indexes that are themselves unacceptable: refused before a byte is written.
    let mut big = index.clone();
    big.files.push(FileEntry {
        path: "weights/big.gguf".into(),
        sha256: "0".repeat(64),
        bytes: 10 << 30,
    });
    let file = craft(
        &w,
        "huge-index.apiary",
        &big,
        Some(&me),
        vec![raw_named(
            b"files/weights/big.gguf",
            T::Regular,
            10 << 30,
            b"",
        )],
    );
    let err = assert_refused(&w, &file, &trust, "more than the 8589934592 allowed");
    assert!(err.contains("--max-bytes"), "{err}");
    let started = std::time::Instant::now();
    let mut many = index.clone();
    many.files = (0..100_000)
        .map(|i| FileEntry {
            path: format!("f{i:06}"),
            sha256: "0".repeat(64),
            bytes: 1,
        })
        .collect();
    let file = craft(&w, "many.apiary", &many, Some(&me), vec![]);
    assert_refused(
        &w,
        &file,
        &trust,
        "lists 100000 files, more than the 10000 allowed",
    );
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    for (path, needle) in [("../x", "has a `..` part"), ("/tmp/x", "is absolute")] {
        let mut bad = index.clone();
        bad.files.insert(
            0,
            FileEntry {
                path: path.into(),
                sha256: "0".repeat(64),
                bytes: 1,
            },
        );
        let file = craft(&w, "bad-path.apiary", &bad, Some(&me), vec![]);
        assert_refused(&w, &file, &trust, needle);
    }
    // The caps are the operator's: a lower one refuses what the default admits.
    assert_refused(
        &w,
        &ok,
        &["--trust", &key, "--max-files", "1"],
        "more than the 1 allowed",
    );
    // Not a package at all.
    let file = w.path("out/plain.apiary");
    std::fs::write(&file, tar_bytes(&[regular("hello.txt", b"hi")])).unwrap();
    assert_refused(&w, &file, &trust, "is not an apiary package");
    std::fs::write(&file, b"not a tar at all, just text that goes on and on").unwrap();
    assert_refused(&w, &file, &trust, "plain.apiary");
    // A plugin the host would refuse is not moved into place.
    let mut bad = index.clone();
    let junk = b"\0asm but not really a component".to_vec();
    bad.files[0].sha256 = hex::encode(Sha256::digest(&junk));
    bad.files[0].bytes = junk.len() as u64;
    let file = craft(
        &w,
        "does-not-load.apiary",
        &bad,
        Some(&me),
        vec![
            regular("files/arith.wasm", &junk),
            regular("files/plugin.toml", &toml),
        ],
    );
    assert_refused(&w, &file, &trust, "does not load on this host");
}

/// Two versions of one plugin, `calc`: 1.0.0 is arith with a weights file, 2.0.0 is units
/// without one.
fn two_versions(w: &World) -> (PathBuf, PathBuf) {
    let v1 = source(w, "arith", "calc-1");
    std::fs::write(
        v1.join("plugin.toml"),
        "name = \"calc\"\nversion = \"1.0.0\"\nwasm = \"arith.wasm\"\n",
    )
    .unwrap();
    std::fs::create_dir(v1.join("weights")).unwrap();
    std::fs::write(v1.join("weights/old.txt"), b"only in 1.0.0").unwrap();
    let v2 = source(w, "units", "calc-2");
    std::fs::write(
        v2.join("plugin.toml"),
        "name = \"calc\"\nversion = \"2.0.0\"\nwasm = \"units.wasm\"\n",
    )
    .unwrap();
    (w.pack(&v1, &[]), w.pack(&v2, &[]))
}

#[test]
fn installing_over_a_plugin_replaces_it_whole_and_the_registry_sees_it() {
    let w = World::new();
    let key = w.new_key();
    let trust = ["--trust", key.as_str()];
    let (v1, v2) = two_versions(&w);
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let registry = Registry::new(&w.plugins(), sandbox, None);
    w.install(&v1, &trust);
    let report = registry.rescan().unwrap();
    assert_eq!(report.added, ["calc"]);
    let version = |r: &Registry| match &r.listing()[0].status {
        Status::Loaded { version, .. } => version.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(version(&registry), "1.0.0");
    assert_eq!(winner(&ask(&registry, "What is 6 * 7?")), "6 * 7 = 42");

    let out = w.install(&v2, &trust);
    assert!(out.contains("(replaced the previous version)"), "{out}");
    let report = registry.rescan().unwrap();
    assert_eq!(report.replaced, ["calc"], "{report:?}");
    assert_eq!(version(&registry), "2.0.0");
    let names: Vec<String> = snapshot(&w.plugins()).into_keys().collect();
    assert_eq!(
        names,
        [
            "calc",
            "calc/.apiary-package.json",
            "calc/.apiary-package.sig",
            "calc/plugin.toml",
            "calc/units.wasm",
        ],
        "nothing of 1.0.0 is left, and no staging folder"
    );
    let l = &w.list_json(&trust)[0];
    assert_eq!(l["version"], "2.0.0");
    assert_eq!(l["signer"]["version"], "2.0.0");
    assert_eq!(l["signer"]["trusted"], true);
}

#[test]
fn a_reader_never_sees_a_mix_of_two_versions() {
    let w = World::new();
    let key = w.new_key();
    let (v1, v2) = two_versions(&w);
    let (v1, v2) = (v1.display().to_string(), v2.display().to_string());
    w.install(Path::new(&v1), &["--trust", &key]);
    let calc = w.plugins().join("calc");
    let stop = Arc::new(AtomicBool::new(false));
    let (whole, gone, mixed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let reader = {
        let (stop, whole, gone, mixed) = (stop.clone(), whole.clone(), gone.clone(), mixed.clone());
        std::thread::spawn(move || {
            use cap_std::ambient_authority;
            while !stop.load(Ordering::Relaxed) {
                // One folder handle, as the loader reads a plugin.
                let Ok(dir) = cap_std::fs::Dir::open_ambient_dir(&calc, ambient_authority()) else {
                    gone.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Ok(toml) = dir.read_to_string("plugin.toml") else {
                    gone.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (mine, other) = if toml.contains("1.0.0") {
                    ("arith.wasm", "units.wasm")
                } else {
                    ("units.wasm", "arith.wasm")
                };
                match (dir.exists(mine), dir.exists(other)) {
                    (true, false) => whole.fetch_add(1, Ordering::Relaxed),
                    (false, false) => gone.fetch_add(1, Ordering::Relaxed),
                    _ => mixed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    for i in 0..6 {
        let p = if i % 2 == 0 { &v2 } else { &v1 };
        w.install(Path::new(p), &["--trust", &key]);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let (whole, gone, mixed) = (
        whole.load(Ordering::Relaxed),
        gone.load(Ordering::Relaxed),
        mixed.load(Ordering::Relaxed),
    );
    eprintln!("reads: {whole} whole, {gone} of a folder being removed, {mixed} mixed");
    assert_eq!(mixed, 0);
    assert!(whole > 0);
    let names: Vec<String> = snapshot(&w.plugins()).into_keys().collect();
    assert!(names.iter().all(|n| n.starts_with("calc")), "{names:?}");
}
