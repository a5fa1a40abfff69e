//! `apiary run` as a child process on loopback, for the tests that drive real nodes.

use super::{Folder, workspace};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "test-key";

pub struct NodeProc {
    pub child: Child,
    pub http: String,
    pub p2p: String,
    pub data: tempfile::TempDir,
    _plugins: Folder,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Start `apiary run` with the given plugin folders and wait until it reports its
/// addresses and has loaded its plugins.
pub fn start(plugins: &[(&Path, &str)], bootstrap: Option<&str>, extra: &[&str]) -> NodeProc {
    let folder = Folder::new();
    for (src, id) in plugins {
        folder.add(src, id);
    }
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("stderr.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiary"));
    cmd.args(["--log", "info", "--cache-dir"])
        .arg(workspace().join("target/tmp/swarm-test-cache"))
        .arg("run")
        .arg("--plugins")
        .arg(folder.path())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            "127.0.0.1:0",
            "--no-mdns",
        ])
        .args(extra)
        // A test machine is busy by nature (other tests, compiles): under the default
        // rules the node would pause. Only tests about the governor let it decide.
        .args(
            if extra.iter().any(|a| *a == "--governor" || *a == "--config") {
                &[][..]
            } else {
                &["--governor", "always"][..]
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd.spawn().expect("apiary starts");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let (mut http, mut p2p) = (None, None);
    while let Some(Ok(line)) = lines.next() {
        if let Some(a) = line.strip_prefix("listening ") {
            p2p.get_or_insert(a.to_string());
        }
        if let Some(h) = line.strip_prefix("http ") {
            http = Some(h.to_string());
        }
        // Printed once the plugins are loaded (`/health` says 200 from then on).
        if line == "ready" {
            break;
        }
    }
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    NodeProc {
        child,
        http: http.expect("the node reports its HTTP address"),
        p2p: p2p.expect("the node reports its libp2p address"),
        data,
        _plugins: folder,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub async fn get(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn wait_for_peers(node: &NodeProc, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(&format!("{}/v1/node", node.http)).await;
        let peers = v["peers"].as_array().map(|p| p.len()).unwrap_or(0);
        if peers >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {peers} of {n} peers joined: {v}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chat completion from the node at `http`; panics (with the body) unless it succeeds.
pub async fn chat_at(http: &str, question: &str) -> serde_json::Value {
    let resp = client()
        .post(format!("{http}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({
            "model": "apiary-swarm",
            "messages": [{"role": "user", "content": question}],
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status}: {v}");
    v
}
