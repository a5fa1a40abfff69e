//! Swarm tests with real processes: `apiary run` nodes on loopback TCP, asked through
//! their HTTP API, by the official `openai` Python package and by `apiary ask --node`.

mod common;

use common::node::{API_KEY, NodeProc, chat_at, client, get, start, wait_for_peers};
use common::{fixture, plugin, workspace};
use std::process::Command;
use std::time::{Duration, Instant};

async fn chat(node: &NodeProc, question: &str) -> serde_json::Value {
    chat_at(&node.http, question).await
}

/// Five processes: three arithmetic specialists, a confident liar, and a plugin that
/// spins in `answer` (killed mid-round). The right answer wins by consensus, the round
/// completes without the killed member long before the answer deadline, the transcript
/// verifies, and the API works for the OpenAI SDK and for `apiary ask --node`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_on_loopback_answer_by_consensus() {
    let arith = plugin("arith");
    let entry = start(
        &[(&arith, "arith")],
        None,
        &["--api-key", API_KEY, "--answer-ms", "60000"],
    );
    let boot = entry.p2p.clone();
    let members = [
        start(&[(&arith, "arith")], Some(&boot), &[]),
        start(&[(&arith, "arith")], Some(&boot), &[]),
        start(&[(&fixture("liar"), "liar")], Some(&boot), &[]),
    ];
    let mut spinner = start(
        &[(&fixture("infinite-loop"), "spinner")],
        Some(&boot),
        &["--max-answer-ms", "60000"],
    );
    wait_for_peers(&entry, 4).await;

    let started = Instant::now();
    let entry_http = entry.http.clone();
    let round = tokio::spawn(async move { chat_at(&entry_http, "What is 6 * 7?").await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    spinner.child.kill().unwrap();
    let _ = spinner.child.wait();
    let v = round.await.unwrap();
    let took = started.elapsed();
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("42"), "consensus answer {answer:?}: {v}");
    let a = &v["apiary"];
    let members_seen = a["members"].as_array().unwrap();
    assert_eq!(members_seen.len(), 5, "{a}");
    let left_out: Vec<_> = members_seen
        .iter()
        .filter(|m| m["answered"] == false)
        .collect();
    assert_eq!(left_out.len(), 1, "only the killed member is missing: {a}");
    assert_eq!(left_out[0]["plugin"], "infinite-loop");
    assert_eq!(a["answers"], 4, "{a}");
    // The three ariths agree: one candidate, against the liar's. Every member answered,
    // so nobody may judge that pair, and the reputation behind the ariths' wins.
    assert_eq!(a["decided_by"], "support", "{a}");
    assert!(
        took < Duration::from_secs(30),
        "the round waited for the dead member ({took:?})"
    );

    // The transcript verifies, through the API and from the ledger.
    let id = a["id"].as_str().unwrap();
    let r = get(&format!("{}/v1/rounds/{id}", entry.http)).await;
    assert_eq!(r["verified"], true, "{r}");
    assert!(r["answer"].as_str().unwrap().contains("42"));
    let signers: std::collections::BTreeSet<_> = r["transcript"]["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["signer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(signers.len(), 4, "each answer is signed by its own node");
    // Proof of capability: every judge met hidden calibration items, the arithmetic
    // specialists passed them and the liar (who always says "first") did not.
    // The items are in the transcript, so the standings they produce are recomputed too:
    // claiming a different right answer for one of them breaks verification.
    let p = apiary::consensus::scoring::ReputationParams::default();
    let mut t: apiary::ledger::Transcript =
        serde_json::from_value(r["transcript"].clone()).unwrap();
    let calibrated = t
        .result
        .payload
        .after
        .iter()
        .filter(|s| s.calibrated(&p))
        .count();
    assert_eq!(calibrated, 3, "three arithmetic judges calibrated: {r}");
    let decisive = t
        .calibration
        .iter()
        .position(|c| c.correct().is_some())
        .expect("some calibration verdict was decisive");
    t.calibration[decisive].first_is_right ^= true;
    assert!(
        !t.verify().is_empty(),
        "a falsified calibration item went unnoticed"
    );
    // No verdict compared the two candidates (support decided): the fit's margin is even.
    assert!(a["margin"].as_f64().unwrap() >= 0.5, "{a}");
    let verify = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["rounds", "verify", id, "--data-dir"])
        .arg(entry.data.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The official OpenAI client, plain and streaming; a wrong key is refused.
    let pydeps = workspace().join("target/pydeps");
    let py = Command::new("python3")
        .arg(workspace().join("host/tests/py/openai_client.py"))
        .args([&entry.http, API_KEY, "What is 6 * 7?", "42"])
        .env("PYTHONPATH", &pydeps)
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success(),
        "openai client failed (scripts/test.sh installs the `openai` package into {}):\n{}\n{}",
        pydeps.display(),
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );

    // `apiary ask --node` is a client of the same API.
    let ask = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["ask", "What is 6 * 7?", "--node", &entry.http])
        .args(["--api-key", API_KEY])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ask.stdout);
    assert!(ask.status.success() && out.contains("42"), "{out}");
    drop(members);
}

/// A node alone answers by itself, flagged as a single answer; errors have OpenAI's
/// shape; a question nobody can answer is a clear 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_flags_single_answers_and_reports_errors_in_openai_shape() {
    let node = start(&[(&plugin("arith"), "arith")], None, &["--join-ms", "200"]);
    let v = chat(&node, "What is 2 + 3?").await;
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains('5')
    );
    assert_eq!(v["apiary"]["single_answer"], true);

    let c = client();
    let bad = c
        .post(format!("{}/v1/chat/completions", node.http))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let e: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");

    let none = c
        .post(format!("{}/v1/chat/completions", node.http))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "Tell me a poem about rain"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 503);
    let e: serde_json::Value = none.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("volunteer"),
        "{e}"
    );
}

/// A multi-turn chat request reaches the plugin as the whole conversation (contract
/// 1.2's `request.messages`), and the plugin's token count becomes the API's `usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_turn_conversation_reaches_the_plugin_through_the_api() {
    let node = start(
        &[(&fixture("echo-conversation"), "echo")],
        None,
        &["--join-ms", "200"],
    );
    let resp = client()
        .post(format!("{}/v1/chat/completions", node.http))
        .json(&serde_json::json!({
            "model": "apiary-swarm",
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": [{"type": "text", "text": "Another one?"}]},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "system: Answer in one word.\nuser: Name a colour.\nassistant: Blue.\nuser: Another one?",
        "{v}"
    );
    assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");
    assert_eq!(v["usage"]["total_tokens"], 4, "{v}");
}

/// Two answerers cannot judge each other (nobody judges a pair with its own answer), so a
/// node that joined without volunteering to answer is asked to judge: here the entry
/// node's arithmetic specialist, held back by a high threshold, sides with the right
/// answer over a confident liar who assessed the question higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_answerers_a_non_answering_node_judges() {
    let arith = plugin("arith");
    let entry = start(&[(&arith, "arith")], None, &["--threshold", "0.99"]);
    let boot = entry.p2p.clone();
    let _others = [
        start(&[(&arith, "arith")], Some(&boot), &[]),
        start(&[(&fixture("liar"), "liar")], Some(&boot), &[]),
    ];
    wait_for_peers(&entry, 2).await;
    let v = chat(&entry, "What is 6 * 7?").await;
    let a = &v["apiary"];
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("42"),
        "{v}"
    );
    assert_eq!(a["answers"], 2, "{a}");
    assert_eq!(a["undecided"], false, "{a}");
    let judge_only: Vec<_> = a["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["note"] == "judge only")
        .collect();
    assert_eq!(judge_only.len(), 1, "{a}");
    assert!(judge_only[0]["judged"].as_u64().unwrap() > 0, "{a}");
}
