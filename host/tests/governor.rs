//! The governor against a real CPU hog: a node whose owner's machine gets busy pauses,
//! a round started from another node completes without it, and once the hog stops it
//! comes back. Its own test binary, so no other test of this suite loads the machine
//! while it measures.

mod common;

use common::node::{API_KEY, NodeProc, chat_at, get, start, wait_for_peers};
use common::plugin;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One busy-looping shell per core, killed on drop.
struct Hog(Vec<Child>);

impl Hog {
    fn start() -> Hog {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Hog((0..cores)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .unwrap()
            })
            .collect())
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_for_state(node: &NodeProc, state: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let v = get(&format!("{}/v1/node", node.http)).await;
        if v["governor"]["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "not {state} within {within:?}: {}\n{}",
            v["governor"],
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_hog_pauses_the_node_and_its_end_resumes_it() {
    let config = tempfile::NamedTempFile::new().unwrap();
    // Quick rules, so the test takes seconds: sample twice a second, pause above 60 %
    // of the machine, come back after 3 calm seconds.
    std::fs::write(
        config.path(),
        "[governor]\nsample-every-ms = 500\npause-above-percent = 60\nthrottle-above-percent = 60\nresume-after-s = 3\n",
    )
    .unwrap();
    let config_path = config.path().to_str().unwrap();
    let entry = start(
        &[(&plugin("arith"), "a1")],
        None,
        &["--api-key", API_KEY, "--governor", "always"],
    );
    let owner = start(
        &[(&plugin("arith"), "a2")],
        Some(&entry.p2p),
        &["--api-key", API_KEY, "--config", config_path],
    );
    wait_for_peers(&entry, 1).await;
    // A shared machine may be busy when the test starts: wait for calm first.
    let calm = wait_for_state(&owner, "active", Duration::from_secs(60)).await;
    let owner_id = calm["node"].as_str().unwrap().to_string();

    let hog = Hog::start();
    let paused = wait_for_state(&owner, "paused", Duration::from_secs(10)).await;
    let reason = paused["governor"]["reason"].as_str().unwrap();
    assert!(reason.contains("other processes"), "{reason}");
    let r = chat_at(&entry.http, "What is 17 * 23?").await;
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.ends_with("391"), "{text}");
    let members = r["apiary"]["members"].to_string();
    assert!(
        !members.contains(&owner_id),
        "a paused node answered: {members}"
    );

    drop(hog);
    wait_for_state(&owner, "active", Duration::from_secs(30)).await;
    let r = chat_at(&entry.http, "What is 18 * 23?").await;
    let members = r["apiary"]["members"].to_string();
    assert!(
        members.contains(&owner_id),
        "the resumed node sat out: {members}"
    );
}
