//! A hostile plugins folder (named pipes, device nodes, huge or flooding files) next to a
//! well-behaved plugin: the real `apiary` binary must finish loading in bounded time,
//! load the good plugin, refuse each bad one with a short reason, and print little.

mod common;

use apiary::plugins::Registry;
use apiary::plugins::registry::Status;
use apiary::sandbox::{Sandbox, SandboxConfig};
use common::*;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Far more than loading takes (seconds); a blocked open never ends at all.
const LIMIT: Duration = Duration::from_secs(90);
/// What the test keeps of each output stream (the rest is only counted).
const KEEP: usize = 1 << 20;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// A character device like /dev/zero at `path`, where mknod is permitted (root).
fn mknod_zero(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; makedev(1, 5) is /dev/zero.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) == 0 }
}

/// A FIFO at `path` that a thread keeps writing into. O_RDWR opens it without waiting for
/// a reader; the thread blocks once the pipe is full, and is left behind with the test.
fn fed_fifo(path: &Path) {
    mkfifo(path);
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut block = b"\0asm\x0d\0\x01\0".to_vec();
        block.resize(1 << 16, b'A');
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
    });
}

/// A copy of `target/plugins/arith` under `id`, with `file` (a name inside it) removed so
/// the caller can put something else there.
fn arith_without(folder: &Folder, id: &str, file: &str) -> PathBuf {
    let dir = folder.add(&plugin("arith"), id);
    let _ = std::fs::remove_file(dir.join(file));
    dir
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Bytes written to stdout and stderr together.
    total: usize,
    took: Duration,
}

/// Keep the first [`KEEP`] bytes of a stream, count all of them.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<(Vec<u8>, usize)> {
    std::thread::spawn(move || {
        let (mut kept, mut total, mut buf) = (Vec::new(), 0, vec![0u8; 1 << 16]);
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            let room = KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        (kept, total)
    })
}

/// Run `apiary ARGS --cache-dir CACHE`, killing it (and failing) if it runs past [`LIMIT`].
fn apiary(args: &[&str], cache: &Path) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apiary starts");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, out_total) = out.join().unwrap();
    let (err, err_total) = err.join().unwrap();
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        total: out_total + err_total,
        took: started.elapsed(),
    };
    assert!(
        status.is_some(),
        "apiary {args:?} was still running after {LIMIT:?} and was killed; stderr ends: {}",
        tail(&run.stderr)
    );
    run
}

fn tail(s: &str) -> &str {
    let mut at = s.len().saturating_sub(2000);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// The hostile folder: every bad entry and what its refusal must name.
fn hostile_folder() -> (Folder, Vec<(&'static str, &'static str)>) {
    let folder = Folder::new();
    folder.add(&plugin("arith"), "arith");
    let mut expect = vec![];

    // plugin.toml, the .wasm, a bare .wasm: named pipes, one with a writer.
    mkfifo(&arith_without(&folder, "fifo-manifest", "plugin.toml").join("plugin.toml"));
    expect.push(("fifo-manifest", "plugin.toml is a named pipe (FIFO)"));
    mkfifo(&arith_without(&folder, "fifo-wasm", "arith.wasm").join("arith.wasm"));
    expect.push(("fifo-wasm", "arith.wasm is a named pipe (FIFO)"));
    fed_fifo(&arith_without(&folder, "fed-fifo-wasm", "arith.wasm").join("arith.wasm"));
    expect.push(("fed-fifo-wasm", "arith.wasm is a named pipe (FIFO)"));
    mkfifo(&folder.path().join("bare-fifo.wasm"));
    expect.push(("bare-fifo", "bare-fifo.wasm is a named pipe (FIFO)"));

    // A 64 MiB plugin.toml, one bad line: refused by its size, never parsed or quoted.
    let huge = arith_without(&folder, "huge-manifest", "plugin.toml");
    let mut line = b"name = \"".to_vec();
    line.resize(64 << 20, b'x');
    std::fs::write(huge.join("plugin.toml"), &line).unwrap();
    expect.push(("huge-manifest", "more than the 65536 byte limit"));
    // Under the cap, one long bad line full of escape sequences: the parser's message,
    // located, with a short excerpt.
    let long = arith_without(&folder, "long-bad-line", "plugin.toml");
    let bad = format!("wasm = [{}\n", "\"\u{1b}[2J\", ".repeat(6000));
    std::fs::write(long.join("plugin.toml"), bad).unwrap();
    expect.push(("long-bad-line", "plugin.toml is invalid: line 1, column"));

    // /dev/zero: by a symlink inside the folder (leads out: cap-std refuses), as a bare
    // .wasm symlink (followed, then refused as a device), and as a device node in the
    // folder itself where mknod is permitted.
    let link = arith_without(&folder, "devzero-link", "arith.wasm");
    std::os::unix::fs::symlink("/dev/zero", link.join("arith.wasm")).unwrap();
    expect.push(("devzero-link", "cannot read"));
    std::os::unix::fs::symlink("/dev/zero", folder.path().join("bare-zero.wasm")).unwrap();
    expect.push(("bare-zero", "bare-zero.wasm is a character device"));
    let node = arith_without(&folder, "devzero-node", "arith.wasm");
    if mknod_zero(&node.join("arith.wasm")) {
        expect.push(("devzero-node", "arith.wasm is a character device"));
    } else {
        eprintln!("mknod not permitted here: the in-folder device node case is skipped");
        std::fs::remove_dir_all(&node).unwrap();
    }

    // A FIFO where the weights folder should be.
    mkfifo(
        &folder
            .add(&plugin("arith"), "fifo-weights-dir")
            .join("weights"),
    );
    expect.push(("fifo-weights-dir", "weights is not a folder"));
    (folder, expect)
}

#[test]
fn a_hostile_folder_neither_hangs_nor_floods_the_loader() {
    let cache = tempfile::tempdir().unwrap();
    let (folder, expect) = hostile_folder();
    // A plugin whose weights/ holds a named pipe still loads: the loader does not open
    // weights files (the tensor API refuses a FIFO when the plugin asks: unit
    // `weights::tests::pipes_devices_and_folders_are_errors_not_hangs`).
    let with_fifo = folder.add(&plugin("arith"), "fifo-in-weights");
    std::fs::create_dir(with_fifo.join("weights")).unwrap();
    fed_fifo(&with_fifo.join("weights/model.gguf"));
    let dir = folder.path().display().to_string();

    let run = apiary(&["plugins", "list", &dir, "--json"], cache.path());
    assert_eq!(run.code, Some(0), "{}", tail(&run.stderr));
    assert!(run.total < 64 << 10, "{} bytes of output", run.total);
    let listing: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let entry = |id: &str| {
        listing
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {}", run.stdout))
    };
    for id in ["arith", "fifo-in-weights"] {
        assert_eq!(entry(id)["status"], "loaded", "{id}: {}", entry(id));
    }
    for (id, needle) in &expect {
        let e = entry(id);
        assert_eq!(e["status"], "refused", "{id}: {e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains(needle), "{id}: {reason}");
        assert!(reason.len() < 1024, "{id}: a {} byte reason", reason.len());
        assert!(!reason.contains('\u{1b}'), "{id}: {reason:?}");
    }
    assert_eq!(listing.len(), expect.len() + 2, "{}", run.stdout);

    // The same folder as an operator reads it, and a question answered from it.
    let run = apiary(&["plugins", "list", &dir], cache.path());
    assert_eq!(run.code, Some(0), "{}", tail(&run.stderr));
    assert!(run.total < 64 << 10, "{} bytes of output", run.total);
    assert!(run.stdout.contains("loaded   arith "), "{}", run.stdout);
    assert!(
        run.stdout.contains("refused  fifo-manifest") && run.stdout.contains("named pipe"),
        "{}",
        run.stdout
    );
    let run = apiary(&["ask", "What is 6 * 7?", "--plugins", &dir], cache.path());
    assert_eq!(run.code, Some(0), "{}", tail(&run.stderr));
    assert_eq!(run.stdout, "6 * 7 = 42\n");
    assert!(run.total < 64 << 10, "{} bytes of output", run.total);
    assert!(run.took < LIMIT);
}

#[test]
fn audit_of_hostile_folders_is_prompt_and_short() {
    let cache = tempfile::tempdir().unwrap();
    let (folder, expect) = hostile_folder();
    for (id, needle) in expect {
        let path = match id {
            "bare-fifo" | "bare-zero" => folder.path().join(format!("{id}.wasm")),
            _ => folder.path().join(id),
        };
        let run = apiary(
            &["plugins", "audit", &path.display().to_string()],
            cache.path(),
        );
        assert_eq!(run.code, Some(3), "{id}: {}", tail(&run.stderr));
        assert!(
            run.stdout.contains("REFUSED") && run.stdout.contains(needle),
            "{id}: {}",
            run.stdout
        );
        assert!(run.total < 16 << 10, "{id}: {} bytes of output", run.total);
    }
    // A weights/ with a named pipe: listed as such, not read.
    let dir = folder.add(&plugin("arith"), "fifo-in-weights");
    std::fs::create_dir(dir.join("weights")).unwrap();
    fed_fifo(&dir.join("weights/model.gguf"));
    let run = apiary(
        &["plugins", "audit", &dir.display().to_string()],
        cache.path(),
    );
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains("model.gguf [a named pipe (FIFO)]"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_plugin_past_its_load_budget_is_refused_and_its_late_result_discarded() {
    let folder = Folder::new();
    let arith = folder.add(&plugin("arith"), "arith");
    let sandbox = Arc::new(Sandbox::new(SandboxConfig::default()).expect("sandbox"));
    let registry = Registry::new(folder.path(), sandbox, None);
    // Reading and compiling a component takes far more than a millisecond.
    registry.set_load_budget(Duration::from_millis(1));
    let started = Instant::now();
    let report = registry.rescan().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{report:?}");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert!(
        refusal(&registry, "arith").starts_with("loading took longer than 1 ms"),
        "{}",
        refusal(&registry, "arith")
    );
    // The abandoned load finishes in the background; it does not sneak in.
    std::thread::sleep(Duration::from_secs(10));
    assert!(registry.active().is_empty());
    assert!(
        registry.rescan().unwrap().is_empty(),
        "retried only on change"
    );
    assert!(refusal(&registry, "arith").contains("longer than 1 ms"));

    // With time enough, a change to the folder loads it.
    registry.set_load_budget(apiary::plugins::DEFAULT_LOAD_BUDGET);
    std::fs::write(
        arith.join("plugin.toml"),
        "name = \"arith\"\nwasm = \"arith.wasm\"\n",
    )
    .unwrap();
    let report = registry.rescan().unwrap();
    assert_eq!(report.replaced, vec!["arith"], "{report:?}");
    assert_eq!(winner(&ask(&registry, "What is 6 * 7?")), "6 * 7 = 42");
    match &registry.listing()[0].status {
        Status::Loaded { name, .. } => assert_eq!(name, "arith"),
        other => panic!("{other:?}"),
    }
}
