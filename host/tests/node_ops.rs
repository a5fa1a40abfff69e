//! Operating a real node (`apiary run` on loopback): admission control under a burst,
//! `/metrics` read by the Prometheus project's own parser, `/health`, `/v1/events`, and
//! the governor driven by hand through `apiary pause` / `resume`.

mod common;

use common::node::{API_KEY, NodeProc, chat_at, client, get, start, wait_for_peers};
use common::{fixture, plugin, workspace};
use std::process::Command;
use std::time::{Duration, Instant};

async fn post(url: &str, body: serde_json::Value) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(url)
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

fn question(q: &str) -> serde_json::Value {
    serde_json::json!({"model": "apiary-swarm", "messages": [{"role": "user", "content": q}]})
}

/// An arith node whose only peer spins in `answer` until its 1.5 s budget ends, so every
/// round takes that long: one runs, two wait, the rest of a burst of eight are refused at
/// once with 429 and `Retry-After`, the node keeps answering `GET /v1/node` meanwhile, and
/// every request let in gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_queue_gets_429s_and_every_accepted_request_is_answered() {
    let entry = start(
        &[(&plugin("arith"), "arith")],
        None,
        &["--api-key", API_KEY, "--max-rounds", "1", "--queue", "2"],
    );
    let spinner = start(
        &[(&fixture("infinite-loop"), "spin")],
        Some(&entry.p2p),
        &["--max-answer-ms", "1500"],
    );
    wait_for_peers(&entry, 1).await;
    let url = format!("{}/v1/chat/completions", entry.http);
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, question(&format!("What is {i} + 40?"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let node = get(&format!("{}/v1/node", entry.http)).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the node answered late"
    );
    assert_eq!(node["rounds"]["max_rounds"], 1);
    let mut answered = 0;
    let mut refused = 0;
    for (i, h) in burst.into_iter().enumerate() {
        let (status, headers, body) = h.await.unwrap();
        match status {
            200 => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let text = v["choices"][0]["message"]["content"].as_str().unwrap();
                assert!(text.ends_with(&format!("= {}", i + 40)), "{body}");
                answered += 1;
            }
            429 => {
                assert_eq!(headers["retry-after"], "5");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"]["type"], "rate_limit_error", "{body}");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("--max-rounds")
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}\n{}", entry.log()),
        }
    }
    assert_eq!(answered + refused, 8);
    assert!(
        refused >= 1,
        "a burst of 8 past 1 slot and 2 places was not refused"
    );
    assert!(answered >= 3, "only {answered} answered:\n{}", entry.log());
    let metrics = metrics_text(&entry).await;
    assert!(metrics.contains("apiary_http_rejected_total{reason=\"busy\"}"));
    drop(spinner);
}

/// A conversation too large to announce is refused with 413 and the limit, not answered
/// by this node alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_too_large_to_broadcast_gets_413() {
    let node = start(
        &[(&plugin("arith"), "arith")],
        None,
        &["--api-key", API_KEY],
    );
    let big = "What is 1 + 1? ".repeat(20_000);
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", node.http),
        question(&big),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 262144"), "{body}");
}

async fn metrics_text(node: &NodeProc) -> String {
    client()
        .get(format!("{}/metrics", node.http))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Parse with `prometheus_client`'s OpenMetrics parser (the Prometheus project's Python
/// client, installed by scripts/test.sh) and print `family type` per line.
fn parse_with_prometheus(text: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = [
        "import sys",
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families",
        "for f in text_string_to_metric_families(open(sys.argv[1]).read()):",
        "    print(f.name, f.type, len(f.samples))",
    ]
    .join("\n");
    let out = Command::new("python3")
        .env("PYTHONPATH", workspace().join("target/pydeps"))
        .args(["-c", &script])
        .arg(&file)
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_count_rounds_plugins_and_peers() {
    let node = start(
        &[(&plugin("arith"), "arith")],
        None,
        &["--api-key", API_KEY],
    );
    let health = client()
        .get(format!("{}/health", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "no key is needed for /health");
    let denied = client()
        .get(format!("{}/metrics", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    chat_at(&node.http, "What is 6 * 7?").await;
    let text = metrics_text(&node).await;
    let families = parse_with_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (family, kind) in [
        ("apiary_rounds", "counter"),
        ("apiary_round_seconds", "histogram"),
        ("apiary_plugin_call_seconds", "histogram"),
        ("apiary_plugin_faults", "counter"),
        ("apiary_peers", "gauge"),
        ("apiary_governor_state", "gauge"),
    ] {
        assert!(
            families
                .lines()
                .any(|l| l.starts_with(&format!("{family} {kind}"))),
            "{family} {kind} missing: {families}"
        );
    }
    assert!(
        text.contains("apiary_rounds_total{outcome=\"single\"} 1"),
        "{text}"
    );
    assert!(text.contains("plugin=\"arith\",call=\"answer\""), "{text}");
    assert!(
        text.contains("apiary_governor_state{state=\"active\"} 1"),
        "{text}"
    );
    // The parser is strict: a broken exposition must fail it, or this test proves nothing.
    assert!(parse_with_prometheus(&text.replace("# EOF\n", "")).is_err());
}

/// `apiary pause --for` and `resume` through the real binary: `/v1/node` says paused and
/// why, a round through another node completes without this one, and it comes back.
#[tokio::test(flavor = "multi_thread")]
async fn paused_by_hand_a_node_sits_rounds_out_and_resumes() {
    let entry = start(&[(&plugin("arith"), "a1")], None, &["--api-key", API_KEY]);
    let other = start(
        &[(&plugin("arith"), "a2")],
        Some(&entry.p2p),
        &["--api-key", API_KEY],
    );
    wait_for_peers(&entry, 1).await;
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(args)
            .args(["--node", &other.http, "--api-key", API_KEY])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = cli(&["pause", "--for", "10m"]);
    assert!(said.contains("paused"), "{said}");
    let v = get(&format!("{}/v1/node", other.http)).await;
    assert_eq!(v["governor"]["state"], "paused", "{v}");
    assert_eq!(v["governor"]["manual"], true, "{v}");
    let r = chat_at(&entry.http, "What is 17 * 23?").await;
    let other_id = v["node"].as_str().unwrap();
    let members = r["apiary"]["members"].to_string();
    assert!(
        !members.contains(other_id),
        "a paused node took part: {members}"
    );
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.ends_with("391"), "{text}");
    cli(&["resume"]);
    let v = get(&format!("{}/v1/node", other.http)).await;
    assert_eq!(v["governor"]["state"], "active", "{v}");
    let r = chat_at(&entry.http, "What is 18 * 23?").await;
    let members = r["apiary"]["members"].to_string();
    assert!(
        members.contains(other_id),
        "the resumed node sat out: {members}"
    );
}

/// `/v1/events` sends the node first, then a round through its phases to `done`.
#[tokio::test(flavor = "multi_thread")]
async fn events_stream_a_round_through_its_phases() {
    use futures::StreamExt;
    let node = start(
        &[(&plugin("arith"), "arith")],
        None,
        &["--api-key", API_KEY],
    );
    let resp = client()
        .get(format!("{}/v1/events", node.http))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next()).await;
    seen.push_str(&String::from_utf8_lossy(&first.unwrap().unwrap().unwrap()));
    assert!(seen.starts_with("event: node\n"), "{seen}");
    chat_at(&node.http, "What is 2 + 2?").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("\"phase\":\"done\"") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next()).await;
        let Ok(Some(Ok(chunk))) = chunk else {
            panic!("no done event: {seen}")
        };
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let phases: Vec<&str> = ["forming", "answering", "done"]
        .into_iter()
        .filter(|p| seen.contains(&format!("\"phase\":\"{p}\"")))
        .collect();
    assert_eq!(phases, ["forming", "answering", "done"], "{seen}");
    assert!(seen.contains("= 4\""), "{seen}");
    assert!(seen.contains("\"verified\":true"), "{seen}");
}

/// `/health` is 503 while the plugins load and 200 once they are: served before loading,
/// with a language model compiled from scratch (`--no-cache`) so loading takes seconds.
#[tokio::test(flavor = "multi_thread")]
async fn health_is_503_while_plugins_load_then_200() {
    use std::io::{BufRead, BufReader};
    let folder = common::Folder::new();
    folder.add(&plugin("smollm"), "smollm");
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["--no-cache", "run", "--plugins"])
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
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child);
    let mut lines = BufReader::new(guard.0.stdout.take().unwrap()).lines();
    let http = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("http ").map(str::to_string))
        .expect("the node reports its HTTP address");
    let health = |http: String| async move {
        let r = client().get(format!("{http}/health")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, body) = health(http.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("loading"), "{body}");
    assert!(
        lines.map_while(Result::ok).any(|l| l == "ready"),
        "the node never said it was ready"
    );
    assert_eq!(health(http).await.0, 200);
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nothing the operator did not ask for: the GPU probe's system libraries used to print
/// `error: XDG_RUNTIME_DIR is invalid…` twice before every command on a machine without a
/// desktop session.
#[test]
fn a_command_prints_nothing_on_stderr_it_was_not_asked_for() {
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env_remove("RUST_LOG")
        .args(["--tensor-backend", "auto", "plugins", "list"])
        .arg(plugin("arith"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded"));
}
