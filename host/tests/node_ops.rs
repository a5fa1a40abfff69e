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

/// The `apiary_known_rounds_total` counts in a node's `/metrics`: (right, wrong, failed).
async fn known_rounds(node: &NodeProc) -> (u64, u64, u64) {
    let text = metrics_text(node).await;
    let count = |outcome: &str| {
        let key = format!("apiary_known_rounds_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    (count("right"), count("wrong"), count("failed"))
}

fn rounds_cli(node: &NodeProc, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["rounds"])
        .args(args)
        .arg("--data-dir")
        .arg(node.data.path())
        .output()
        .unwrap()
}

/// A node given a known-answer bank (`--known-answers`) asks its items now and then as
/// rounds of the swarm, and only while idle: paused by hand it asks none. Each such
/// transcript names the right option, verifies, and grows the members' known-answer
/// records; a transcript that claims another right option fails verification; a bank
/// with a bad item stops the node before it starts, naming the item.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_asks_its_known_answer_bank_while_idle_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank.jsonl");
    std::fs::write(
        &bank,
        concat!(
            r#"{"id": "k1", "task": "t", "kind": "choice", "question": "What is 6 * 7?", "choices": ["41", "42", "43"], "answer": "B"}"#,
            "\n",
            r#"{"id": "k2", "task": "t", "kind": "choice", "question": "What is the capital of France?", "choices": ["Paris", "Lyon"], "answer": "Paris"}"#,
            "\n"
        ),
    )
    .unwrap();
    let member = start(&[(&plugin("arith"), "arith")], None, &[]);
    let bank_arg = bank.to_str().unwrap();
    let entry = start(
        &[(&plugin("facts"), "facts")],
        Some(&member.p2p),
        &[
            "--api-key",
            API_KEY,
            "--known-answers",
            bank_arg,
            "--known-every",
            "0.02",
        ],
    );
    wait_for_peers(&entry, 1).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while known_rounds(&entry).await.0 < 4 {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            known_rounds(&entry).await,
            entry.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, wrong, failed) = known_rounds(&entry).await;
    assert_eq!((wrong, failed), (0, 0), "{}", entry.log());

    // Paused, the node asks nothing (a round already under way may still finish).
    let pause = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args([
            "pause",
            "--for",
            "10m",
            "--node",
            &entry.http,
            "--api-key",
            API_KEY,
        ])
        .output()
        .unwrap();
    assert!(
        pause.status.success(),
        "{}",
        String::from_utf8_lossy(&pause.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused = known_rounds(&entry).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        known_rounds(&entry).await,
        paused,
        "a paused node asked its bank"
    );

    let list = rounds_cli(&entry, &["list", "--limit", "100"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(ids.len() >= 4, "{list}");
    let mut grown = 0;
    for id in &ids {
        let shown = rounds_cli(&entry, &["show", id]);
        let t: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        let want = if t["prompt"] == "What is 6 * 7?" {
            1
        } else {
            0
        };
        assert_eq!(t["known"], want, "{t}");
        let verify = rounds_cli(&entry, &["verify", id]);
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let after = t["result"]["payload"]["after"].as_array().unwrap();
        grown += after
            .iter()
            .filter(|s| s["known"]["answered"].as_u64() >= Some(1))
            .count();
    }
    assert!(
        grown >= ids.len(),
        "every known-answer round measures its answerer: {list}"
    );

    // The signed record is what every node folds: claiming another right option is caught.
    let shown = rounds_cli(&entry, &["show", ids[0]]);
    let mut t: apiary::ledger::Transcript = serde_json::from_slice(&shown.stdout).unwrap();
    t.known = t.known.map(|k| 1 - k);
    let problems = t.verify();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("differs from what the entry node signed")),
        "a changed right option went unnoticed: {problems:?}"
    );

    // A bank with a bad item: the node refuses to start and says which.
    std::fs::write(
        &bank,
        r#"{"id": "bad", "task": "t", "kind": "choice", "question": "?", "choices": ["x", "y"], "answer": "Q"}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["run", "--known-answers", bank_arg, "--plugins"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("item 1 (bad)") && err.contains("bank.jsonl"),
        "{err}"
    );
}
