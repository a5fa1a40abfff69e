//! `apiary status`: what a running node is doing, read from its `GET /v1/node` (and its
//! recent rounds from `GET /v1/rounds`). The summary is printed tolerantly: a node of
//! another version may lack any key, and what is missing is left out, not an error.

use super::{CliError, Context, NodeArgs, human_ms, now_ms, to_json};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};
use std::fmt::Write;
use std::process::ExitCode;

#[derive(Args)]
pub struct StatusCommand {
    #[command(flatten)]
    node: NodeArgs,
    /// Print the node's JSON (`/v1/node`, with `recent_rounds` from `/v1/rounds`).
    #[arg(long)]
    json: bool,
    /// How many recent rounds to list.
    #[arg(long, value_name = "N", default_value_t = 5)]
    rounds: usize,
}

impl StatusCommand {
    pub fn run(self, ctx: &Context) -> Result<ExitCode, CliError> {
        let mut view = self.node.call(ctx.config, Method::GET, "/v1/node", None)?;
        // Recent rounds are a second endpoint; a node without it still has a status.
        if self.rounds > 0 {
            let path = format!("/v1/rounds?limit={}", self.rounds);
            if let Ok(r) = self.node.call(ctx.config, Method::GET, &path, None)
                && let Some(obj) = view.as_object_mut()
            {
                obj.insert("recent_rounds".into(), r["data"].clone());
            }
        }
        if self.json {
            println!("{}", to_json(&view)?);
        } else {
            print!("{}", summary(&view, &self.node.url(ctx.config)));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// One line for a governor status (`{"state", "reason", ...}`): `paused: on battery`.
pub fn governor_line(g: &Value) -> String {
    let state = g["state"].as_str().unwrap_or("unknown");
    let mut line = match g["reason"].as_str().filter(|r| !r.is_empty()) {
        Some(r) if state != "active" || g["manual"] == json!(true) => format!("{state}: {r}"),
        Some(r) => format!("{state} ({r})"),
        None => state.to_string(),
    };
    if let Some(until) = g["paused_until_ms"].as_u64() {
        let left = until.saturating_sub(now_ms());
        let _ = write!(line, "; resumes in {}", human_ms(left));
    } else if g["manual"] == json!(true) {
        line.push_str("; until `apiary resume`");
    }
    line
}

/// Text of a JSON value on one line: strings bare, everything else as JSON, shortened.
fn text(v: &Value) -> String {
    let t = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if t.chars().count() > 100 {
        format!("{}…", t.chars().take(99).collect::<String>())
    } else {
        t
    }
}

fn short(id: &str) -> String {
    if id.chars().count() > 16 {
        format!("{}…", id.chars().take(16).collect::<String>())
    } else {
        id.to_string()
    }
}

/// The readable summary of a `/v1/node` view.
pub fn summary(v: &Value, url: &str) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<11} {value}");
    };
    row(
        "node",
        v["node"].as_str().unwrap_or("(unknown)").to_string(),
    );
    row("api", url.to_string());
    if let Some(p) = v["peer_id"].as_str() {
        row("peer id", p.to_string());
    }
    let mut about = Vec::new();
    if let Some(ver) = v["version"].as_str() {
        about.push(format!("apiary {ver}"));
    }
    if let Some(up) = v["uptime_s"].as_u64() {
        about.push(format!("up {}", human_ms(up * 1000)));
    }
    if v["ready"] == json!(false) {
        about.push("loading plugins".into());
    }
    if !about.is_empty() {
        row("running", about.join(", "));
    }
    match &v["governor"] {
        Value::Null => {
            if v.get("governor").is_some() {
                row("governor", "none (always active)".into());
            }
        }
        g => {
            row("governor", governor_line(g));
            let mut detail = Vec::new();
            if let Some(m) = g["mode"].as_str() {
                detail.push(format!("mode {m}"));
            }
            let s = &g["sample"];
            if let Some(c) = s["other_cpu_percent"].as_f64() {
                detail.push(format!("other CPU {c:.0}%"));
            }
            if let Some(c) = s["own_cpu_percent"].as_f64() {
                detail.push(format!("own CPU {c:.0}%"));
            }
            if let Some(m) = s["available_memory_mib"].as_u64() {
                detail.push(format!("{m} MiB free"));
            }
            if let Some(b) = s["on_battery"].as_bool() {
                detail.push(if b { "on battery" } else { "on mains" }.into());
            }
            if !detail.is_empty() {
                row("", detail.join(", "));
            }
        }
    }
    if let Some(r) = v["resources"].as_object() {
        let mut parts = Vec::new();
        if let Some(m) = r.get("rss_mib").and_then(Value::as_f64) {
            parts.push(format!("{m} MiB resident"));
        }
        if let Some(c) = r.get("cpu_percent").and_then(Value::as_f64) {
            parts.push(format!("{c:.0}% CPU"));
        }
        if !parts.is_empty() {
            row("resources", parts.join(", "));
        }
    }
    if let Some(peers) = v["peers"].as_array() {
        row("peers", peers.len().to_string());
        for p in peers {
            row("", text(p));
        }
    }
    if let Some(listening) = v["listening"].as_array() {
        for (i, a) in listening.iter().enumerate() {
            row(if i == 0 { "listening" } else { "" }, text(a));
        }
    }
    plugins(v, &mut row);
    let r = &v["rounds"];
    if r.is_object() {
        let n = |k: &str| r[k].as_u64().map(|x| x.to_string()).unwrap_or("?".into());
        row(
            "rounds",
            format!(
                "{} running (at most {}), {} waiting (at most {})",
                n("running"),
                n("max_rounds"),
                n("queued"),
                n("queue")
            ),
        );
    }
    let me = v["node"].as_str().unwrap_or_default();
    if let Some(recent) = v["recent_rounds"].as_array() {
        row(
            "recent",
            if recent.is_empty() {
                "no rounds yet".into()
            } else {
                String::new()
            },
        );
        for t in recent {
            row("", round_line(t));
        }
        if let Some(rep) = reputation(recent, me) {
            row("reputation", rep);
        }
    }
    if let Some(rep) = v.get("reputation").filter(|r| !r.is_null()) {
        match rep.as_object() {
            Some(m) => {
                for (i, (k, x)) in m.iter().enumerate() {
                    row(
                        if i == 0 { "reputation" } else { "" },
                        format!("{k}: {}", text(x)),
                    );
                }
            }
            None => row("reputation", text(rep)),
        }
    }
    out
}

/// The plugin listing (`plugin_listing`: loaded, refused, quarantined), else the names.
fn plugins(v: &Value, row: &mut impl FnMut(&str, String)) {
    if let Some(list) = v["plugin_listing"].as_array() {
        let count = |s: &str| list.iter().filter(|p| p["status"] == s).count();
        row(
            "plugins",
            format!(
                "{} loaded, {} refused, {} quarantined",
                count("loaded"),
                count("refused"),
                count("quarantined")
            ),
        );
        for p in list {
            let id = p["id"].as_str().or(p["name"].as_str()).unwrap_or("?");
            let status = p["status"].as_str().unwrap_or("?");
            let mut line = format!("{id:<16} {status}");
            if let Some(ver) = p["version"].as_str() {
                let _ = write!(line, " {ver}");
            }
            if let Some(d) = p["domains"].as_array().filter(|d| !d.is_empty()) {
                let d: Vec<String> = d.iter().map(text).collect();
                let _ = write!(line, " ({})", d.join(", "));
            }
            if let Some(r) = p["reason"].as_str() {
                let _ = write!(line, ": {r}");
            }
            row("", line);
        }
    } else if let Some(names) = v["plugins"].as_array() {
        row("plugins", format!("{} loaded", names.len()));
        for n in names {
            row("", text(n));
        }
    }
}

/// One recent round: when, what was asked, what won and how.
fn round_line(t: &Value) -> String {
    let id = short(t["id"].as_str().unwrap_or("?"));
    let mut line = id;
    if let Some(at) = t["at_ms"].as_u64() {
        let _ = write!(line, " {} ago", human_ms(now_ms().saturating_sub(at)));
    }
    if let Some(p) = t["prompt"].as_str() {
        let p: String = p.chars().take(40).collect();
        let _ = write!(line, " {p:?}");
    }
    match t["answer"].as_str() {
        Some(a) => {
            let a: String = a.chars().take(40).collect();
            let _ = write!(line, " → {a:?}");
        }
        None if t.get("answer").is_some() => line.push_str(" → no answer"),
        None => {}
    }
    if let Some(d) = t["decided_by"].as_str() {
        let _ = write!(line, " ({d})");
    } else if !t["decided_by"].is_null() {
        let _ = write!(line, " ({})", text(&t["decided_by"]));
    }
    if t["verified"] == json!(false) {
        line.push_str(" NOT VERIFIED");
    }
    line
}

/// This node's reputation after the most recent round it was a member of.
fn reputation(recent: &[Value], me: &str) -> Option<String> {
    if me.is_empty() {
        return None;
    }
    recent.iter().find_map(|t| {
        let m = t["members"].as_array()?.iter().find(|m| {
            m["key"]
                .as_str()
                .is_some_and(|k| k == me || k.starts_with(&format!("{me}/")))
        })?;
        let after = m["after"].as_f64().or(m["before"].as_f64())?;
        let domain = t["domain"]
            .as_str()
            .map(|d| format!(" in {d}"))
            .unwrap_or_default();
        Some(format!(
            "{after:.3}{domain} (after round {})",
            short(t["id"].as_str().unwrap_or("?"))
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_may_be_missing() {
        let s = summary(&json!({}), "http://x");
        assert!(s.contains("(unknown)"), "{s}");
        let s = summary(
            &json!({"node": "abc", "peers": "odd", "governor": 3}),
            "http://x",
        );
        assert!(s.contains("abc"), "{s}");
    }

    #[test]
    fn a_full_view_is_summarised() {
        let v = json!({
            "node": "n1", "version": "0.1.0", "uptime_s": 3700,
            "peers": ["p1", "p2"],
            "plugin_listing": [
                {"id": "arith", "status": "loaded", "version": "1.0", "domains": ["math"]},
                {"id": "bad", "status": "refused", "reason": "imports wasi:sockets"},
                {"id": "slow", "status": "quarantined"}
            ],
            "governor": {"state": "paused", "reason": "on battery", "mode": "auto", "manual": false,
                         "sample": {"other_cpu_percent": 12.0, "on_battery": true}},
            "rounds": {"running": 1, "queued": 0, "max_rounds": 4, "queue": 16},
            "recent_rounds": [{"id": "r1", "prompt": "2+2", "answer": "4", "decided_by": "verdicts",
                               "domain": "math", "members": [{"key": "n1", "before": 1.0, "after": 1.2}]}]
        });
        let s = summary(&v, "http://x");
        for want in [
            "peers       2",
            "1 loaded, 1 refused, 1 quarantined",
            "refused: imports wasi:sockets",
            "paused: on battery",
            "on battery",
            "1 running (at most 4)",
            "\"2+2\" → \"4\" (verdicts)",
            "1.200 in math",
            "up 1h 1m",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
    }

    #[test]
    fn governor_lines() {
        assert_eq!(
            governor_line(&json!({"state": "active", "reason": "idle machine"})),
            "active (idle machine)"
        );
        assert_eq!(
            governor_line(
                &json!({"state": "paused", "reason": "paused by the owner", "manual": true})
            ),
            "paused: paused by the owner; until `apiary resume`"
        );
        let until = now_ms() + 3_600_000 + 500;
        let l = governor_line(
            &json!({"state": "paused", "reason": "r", "manual": true, "paused_until_ms": until}),
        );
        assert_eq!(l, "paused: r; resumes in 1h");
    }
}
