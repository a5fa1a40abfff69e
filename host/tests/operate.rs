//! Operating a node as its owner would: the configuration file (`config show|path`),
//! `service install|uninstall` (a systemd user unit, written into a temporary
//! XDG_CONFIG_HOME), and `status`, `pause`, `resume` against a real `apiary run`.
//!
//! Every command runs with XDG_CONFIG_HOME in a temporary folder and the environment
//! variables apiary reads removed, so the developer's own config and services are
//! never read or touched.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const VARS: &[&str] = &[
    "RUST_LOG",
    "APIARY_CONFIG",
    "APIARY_API_KEY",
    "APIARY_DATA_DIR",
    "APIARY_PLUGINS",
    "APIARY_CACHE_DIR",
    "APIARY_TENSOR_BACKEND",
];

/// `apiary` with its own config folder `home` and none of apiary's variables set.
fn apiary(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiary"));
    cmd.env("XDG_CONFIG_HOME", home);
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("apiary runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config folder holding `apiary/config.toml` with `text`.
fn config_home(text: &str) -> (tempfile::TempDir, PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("apiary").join("config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    (home, file)
}

/// The line of `config show` for `key` (`key = ...  # source`).
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
}

#[test]
fn config_show_says_where_each_value_comes_from() {
    let (home, file) = config_home(
        "join-ms = 5000\nhttp = \"127.0.0.1:9999\"\nmax-memory-mib = 300\n\
         listen = [\"/ip4/127.0.0.1/tcp/7000\"]\n[governor]\nmode = \"never\"\npause-above-percent = 80.0\n",
    );
    let data = home.path().join("from-env");
    let o = run(apiary(home.path()).env("APIARY_DATA_DIR", &data).args([
        "config",
        "show",
        "--http",
        "127.0.0.1:1234",
        "--max-memory-mib",
        "77",
    ]));
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let file_src = format!("# file {}", file.display());
    // file < env < flag, and the default where nothing says otherwise.
    let l = line(&text, "join-ms");
    assert!(l.contains("5000") && l.ends_with(&file_src), "{l}");
    let l = line(&text, "listen");
    assert!(
        l.contains("/ip4/127.0.0.1/tcp/7000") && l.ends_with(&file_src),
        "{l}"
    );
    let l = line(&text, "data-dir");
    assert!(
        l.contains(&data.display().to_string()) && l.ends_with("# env APIARY_DATA_DIR"),
        "{l}"
    );
    let l = line(&text, "http");
    assert!(l.contains("127.0.0.1:1234") && l.ends_with("# flag"), "{l}");
    // A global flag after the subcommand beats the file too.
    let l = line(&text, "max-memory-mib");
    assert!(l.contains("77") && l.ends_with("# flag"), "{l}");
    let l = line(&text, "answer-ms");
    assert!(l.contains("60000") && l.ends_with("# default"), "{l}");
    // The [governor] table, and --governor over its mode.
    let (_, governor) = text.split_once("[governor]").expect("a [governor] section");
    let l = line(governor, "mode");
    assert!(l.contains("\"never\"") && l.ends_with(&file_src), "{l}");
    let l = line(governor, "pause-above-percent");
    assert!(l.contains("80") && l.ends_with(&file_src), "{l}");

    let o = run(apiary(home.path()).args(["config", "show", "--json", "--governor", "always"]));
    assert!(o.status.success(), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let s = &j["settings"];
    assert_eq!(s["governor.mode"]["value"], "always");
    assert_eq!(s["governor.mode"]["source"], "flag");
    assert_eq!(s["join-ms"]["value"], 5000);
    assert_eq!(s["join-ms"]["source"], "file");
    assert_eq!(s["join-ms"]["file"], file.display().to_string());
    assert_eq!(s["http"]["source"], "file");
    assert_eq!(s["threshold"]["source"], "default");
    assert_eq!(j["file"]["found"], true);

    let o = run(apiary(home.path()).args(["config", "path"]));
    assert!(o.status.success());
    assert_eq!(out(&o).trim(), file.display().to_string());
}

#[test]
fn the_api_key_is_not_shown() {
    let (home, _) = config_home("api-key = \"hunter2\"\n");
    let o = run(apiary(home.path()).args(["config", "show"]));
    assert!(o.status.success(), "{}", err(&o));
    assert!(!out(&o).contains("hunter2"), "{}", out(&o));
    assert!(line(&out(&o), "api-key").contains("(set)"));
}

#[test]
fn a_bad_file_is_an_error_that_names_the_key() {
    for (text, want) in [
        ("max-round = 3\n", "config.toml: unknown key \"max-round\""),
        (
            "join-ms = \"soon\"\n",
            "config.toml: key \"join-ms\": expected an integer, got \"soon\"",
        ),
        (
            "[governor]\nmode = \"sometimes\"\n",
            "key \"governor.mode\"",
        ),
        (
            "[governor]\nthrottled-rounds = 0\n",
            "governor.throttled-rounds",
        ),
        ("listen = [\"nowhere\"]\n", "key \"listen\""),
    ] {
        let (home, _) = config_home(text);
        // Every command reads the file, not only `config show`.
        for args in [
            &["config", "show"][..],
            &["rounds", "list", "--data-dir", "/nonexistent"],
        ] {
            let o = run(apiary(home.path()).args(args));
            assert_eq!(o.status.code(), Some(1), "{text:?} {args:?}: {}", err(&o));
            assert!(
                err(&o).contains(want),
                "{text:?}: wanted {want:?} in\n{}",
                err(&o)
            );
        }
        // `config path` still answers, so the broken file can be found.
        let o = run(apiary(home.path()).args(["config", "path"]));
        assert!(o.status.success(), "{}", err(&o));
    }
}

#[test]
fn a_missing_explicit_config_is_an_error_and_a_missing_default_is_not() {
    let home = tempfile::tempdir().unwrap();
    let o = run(apiary(home.path()).args(["config", "show"]));
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("not found"), "{}", out(&o));
    let missing = home.path().join("nope.toml");
    let o = run(apiary(home.path())
        .arg("--config")
        .arg(&missing)
        .args(["config", "show"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains(&missing.display().to_string()),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
}

/// A folder with a `systemctl` that records its arguments in `calls` and succeeds.
fn fake_systemctl(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let calls = dir.join("calls");
    let script = dir.join("systemctl");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    calls
}

#[test]
fn service_install_writes_a_low_priority_user_unit_and_uninstall_removes_it() {
    let (home, file) = config_home("no-mdns = true\n");
    let unit = home.path().join("systemd/user/apiary.service");
    let empty = tempfile::tempdir().unwrap();
    let o = run(apiary(home.path())
        .env("PATH", empty.path())
        .arg("--config")
        .arg(&file)
        .args(["service", "install", "--no-start"]));
    assert!(o.status.success(), "{}", err(&o));
    let text = std::fs::read_to_string(&unit).expect("the unit is written");
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_apiary")).unwrap();
    for want in [
        format!(
            "ExecStart={} run --config {}",
            exe.display(),
            file.display()
        ),
        "Nice=10".into(),
        "IOSchedulingClass=idle".into(),
        "CPUSchedulingPolicy=batch".into(),
        "Restart=on-failure".into(),
        "RestartSec=10".into(),
        "WantedBy=default.target".into(),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want:?} missing from\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("Description=")),
        "{text}"
    );
    let said = out(&o);
    assert!(
        said.contains("systemctl --user enable --now apiary.service"),
        "{said}"
    );
    assert!(said.contains("journalctl --user -u apiary"), "{said}");

    // No systemctl on PATH: the file is removed and the commands are printed.
    let o = run(apiary(home.path())
        .env("PATH", empty.path())
        .args(["service", "uninstall"]));
    assert!(o.status.success(), "{}", err(&o));
    assert!(!unit.exists());
    assert!(
        out(&o).contains("systemctl --user disable --now apiary.service"),
        "{}",
        out(&o)
    );
}

#[test]
fn service_install_enables_and_starts_through_systemctl() {
    let home = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let calls = fake_systemctl(bin.path());
    let o = run(apiary(home.path())
        .env("PATH", bin.path())
        .args(["service", "install"]));
    assert!(o.status.success(), "{}", err(&o));
    let unit = home.path().join("systemd/user/apiary.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    // Without --config the service reads the default file.
    let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.ends_with(" run"), "{exec}");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "--user daemon-reload\n--user enable --now apiary.service\n"
    );
    assert!(
        out(&o).contains("journalctl --user -u apiary"),
        "{}",
        out(&o)
    );
    std::fs::remove_file(&calls).unwrap();
    let o = run(apiary(home.path())
        .env("PATH", bin.path())
        .args(["service", "uninstall"]));
    assert!(o.status.success(), "{}", err(&o));
    assert!(!unit.exists());
    assert!(
        std::fs::read_to_string(&calls)
            .unwrap()
            .starts_with("--user disable --now apiary.service\n")
    );
}

#[test]
fn status_of_a_node_that_is_not_there_says_what_to_do() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for cmd in [&["status"][..], &["pause", "--for", "1h"], &["resume"]] {
        let o = run(apiary(home.path()).args(cmd).args(["--node", &url]));
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        let e = err(&o);
        assert!(e.contains(&format!("cannot reach a node at {url}")), "{e}");
        assert!(e.contains("apiary run") && e.contains("--node"), "{e}");
    }
    let o = run(apiary(home.path()).args(["pause", "--for", "soon"]));
    assert_eq!(o.status.code(), Some(2), "a bad duration is a usage error");
}

struct Node {
    child: Child,
    http: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `apiary run` with no plugins, configured by `home`'s config file, on loopback ports.
fn start(home: &Path) -> Node {
    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("stderr.log")).unwrap();
    let mut child = apiary(home)
        .args(["--no-cache", "run", "--plugins"])
        .arg(plugins.path())
        .arg("--data-dir")
        .arg(data.path())
        .args(["--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("apiary run starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Some(h) = line.strip_prefix("http ") {
            http = Some(h.to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let log = || std::fs::read_to_string(data.path().join("stderr.log")).unwrap_or_default();
    let http = http.unwrap_or_else(|| panic!("no http line; stderr:\n{}", log()));
    Node {
        child,
        http,
        _dirs: vec![plugins, data],
    }
}

#[test]
fn a_configured_node_is_operated_with_status_pause_and_resume() {
    // The file sets the key, mDNS off and a governor that keeps the node active whatever
    // the test machine's load, so `resume` lands on `active`.
    let (home, _) = config_home(
        "api-key = \"sekrit\"\nno-mdns = true\nmax-rounds = 2\nqueue = 3\n[governor]\nmode = \"always\"\n",
    );
    let node = start(home.path());
    let status = || {
        let o = run(apiary(home.path()).args(["status", "--node", &node.http]));
        assert!(o.status.success(), "{}", err(&o));
        out(&o)
    };
    let s = status();
    assert!(s.lines().any(|l| l.starts_with("node ")), "{s}");
    assert!(s.contains("governor    active"), "{s}");
    // --max-rounds and --queue reached the API through the file.
    assert!(
        s.contains("(at most 2)") && s.contains("(at most 3)"),
        "{s}"
    );
    assert!(s.contains("peers       0"), "{s}");

    let o = run(apiary(home.path()).args(["status", "--json", "--node", &node.http]));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["governor"]["mode"], "always");
    assert!(j["node"].as_str().is_some_and(|n| s.contains(n)));

    // The key comes from the file; without it the node refuses, and says how to fix it.
    let o = run(apiary(tempfile::tempdir().unwrap().path()).args(["status", "--node", &node.http]));
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--api-key"), "{}", err(&o));

    let o = run(apiary(home.path()).args(["pause", "--for", "1h", "--node", &node.http]));
    assert!(o.status.success(), "{}", err(&o));
    let said = out(&o);
    assert!(said.starts_with("paused: "), "{said}");
    assert!(
        said.contains("resumes in 59m") || said.contains("resumes in 1h"),
        "{said}"
    );
    assert!(status().contains("governor    paused: "));

    let o = run(apiary(home.path()).args(["resume", "--node", &node.http]));
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).starts_with("active"), "{}", out(&o));
    assert!(status().contains("governor    active"));
}
