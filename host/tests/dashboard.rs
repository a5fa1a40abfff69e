//! The live dashboard in a real headless browser: `apiary run` with an API key serves it
//! at `/`; Chromium, driven over the DevTools protocol, opens it through `/?key=`, sees a
//! round asked through the API arrive and finish live, shows the governor's state, and
//! reports no failed request, console error or exception on the way. Screenshots go to
//! `target/dashboard/`.
//!
//! Needs Chromium (`$APIARY_CHROMIUM`, or `chromium`/`chromium-browser` on `PATH`);
//! without it the test is skipped unless `APIARY_REQUIRE_BROWSER` is set
//! (`scripts/test.sh` installs it and sets that).

mod cdp;
mod common;

use cdp::{Browser, MAX_WAIT};
use common::node::{API_KEY, chat_at, get, start};
use common::{plugin, workspace};
use std::time::Duration;

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[test]
fn the_dashboard_shows_a_round_live_in_a_real_browser() {
    let Some(chromium) = cdp::find_chromium() else {
        assert!(
            std::env::var_os("APIARY_REQUIRE_BROWSER").is_none(),
            "APIARY_REQUIRE_BROWSER is set but no Chromium was found (set APIARY_CHROMIUM)"
        );
        eprintln!(
            "skipping the dashboard browser test: no chromium (set APIARY_CHROMIUM or install it)"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = start(
        &[(&plugin("arith"), "arith")],
        None,
        &["--api-key", API_KEY],
    );
    let shots = workspace().join("target/dashboard");
    let mut page = Browser::launch(&chromium);

    // Through `/?key=`: the node keeps the key in a cookie and redirects to `/`.
    page.navigate(&format!("{}/?key={API_KEY}", node.http));
    page.wait_for(
        "the first node event",
        "document.body.dataset.ready === '1'",
        MAX_WAIT,
    );
    let path = page.eval("location.pathname + location.search");
    assert_eq!(path, "/", "the key is not left in the address bar");
    assert_eq!(
        page.eval("document.getElementById('auth').hidden"),
        true,
        "the key form is shown although the cookie was set"
    );
    assert_eq!(
        page.eval("document.getElementById('node-id').textContent.length > 8"),
        true
    );
    page.screenshot(&shots.join("load.png"));

    // Every phase a round element shows, in order, as the page changes.
    page.eval(
        "window.__phases = {};
         new MutationObserver(() => {
           for (const el of document.querySelectorAll('[data-round]')) {
             const seen = (window.__phases[el.dataset.round] ||= []);
             if (seen[seen.length - 1] !== el.dataset.phase) seen.push(el.dataset.phase);
           }
         }).observe(document.getElementById('rounds'), {subtree: true, childList: true, attributes: true});
         true",
    );

    // Ask a round through the API while the page watches.
    let http = node.http.clone();
    let asked = rt.spawn(async move { chat_at(&http, "What is 17 * 23?").await });
    page.wait_for(
        "a round to appear",
        "document.querySelector('[data-round]') !== null",
        MAX_WAIT,
    );
    let v = rt.block_on(asked).unwrap();
    let id = v["id"]
        .as_str()
        .and_then(|i| i.strip_prefix("chatcmpl-"))
        .unwrap_or_else(|| panic!("a round id: {v}"))
        .to_string();
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("391"),
        "{v}"
    );

    let round = format!(
        "document.querySelector('[data-round=' + {} + ']')",
        js(&js(&id))
    );
    page.wait_for(
        "the round to be shown done",
        &format!("{round} && {round}.dataset.phase === 'done'"),
        MAX_WAIT,
    );
    let phases = page.eval(&format!("window.__phases[{}] || []", js(&id)));
    let phases: Vec<&str> = phases
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        phases.len() >= 2 && phases.last() == Some(&"done"),
        "the round was not shown live before it finished: {phases:?}"
    );
    let winner = page.eval(&format!(
        "({round}.querySelector('[data-winner]') || {{}}).textContent"
    ));
    assert!(
        winner.as_str().is_some_and(|w| w.contains("391")),
        "the winner shown: {winner}"
    );
    let members = page.eval(&format!(
        "[...{round}.querySelectorAll('[data-member]')].map(m => m.textContent)"
    ));
    let members = members.as_array().unwrap();
    assert!(!members.is_empty(), "no members shown");
    assert!(
        members
            .iter()
            .any(|m| m.as_str().is_some_and(|t| t.contains("arith"))),
        "the arith member is not shown: {members:?}"
    );

    // The round reaches the history table (GET /v1/rounds) too.
    page.wait_for(
        "the round in the history",
        &format!(
            "[...document.querySelectorAll('[data-history]')].some(r => r.dataset.history === {})",
            js(&id)
        ),
        MAX_WAIT,
    );

    page.screenshot(&shots.join("round.png"));
    page.pump();
    assert!(
        page.problems.is_empty(),
        "the page reported problems: {:#?}\nnode log:\n{}",
        page.problems,
        node.log()
    );

    // The governor's state is the node's (retried: the page hears of a change within
    // one node event).
    let mut shown = serde_json::Value::Null;
    for _ in 0..30 {
        let node_view = rt.block_on(get(&format!("{}/v1/node", node.http)));
        let state = &node_view["governor"]["state"];
        assert!(
            state.is_string(),
            "/v1/node has no governor.state: {node_view}"
        );
        shown = page.eval("document.getElementById('governor-state').textContent");
        if &shown == state {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        page.pump();
        shown = serde_json::Value::Null;
    }
    assert!(
        !shown.is_null(),
        "the governor state shown never matched /v1/node"
    );
}
