//! `apiary ask`: one question, answered by a local round among the plugins of a folder,
//! or by the swarm behind a running node (`--node`).

use super::{CliError, SandboxArgs, exit, open_ledger, runtime, to_json};
use apiary::consensus::Outcome;
use apiary::ledger::transcript::Transcript;
use apiary::ledger::{Ledger, NodeKey, local};
use apiary::plugins::{Plugin, Registry};
use apiary::round::{self, RoundConfig, RoundReport};
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct AskCommand {
    /// The question.
    question: String,
    #[arg(long, env = "APIARY_PLUGINS", default_value = "plugins")]
    plugins: PathBuf,
    /// Show every answer, verdict and score.
    #[arg(long)]
    explain: bool,
    /// Print the whole round as JSON.
    #[arg(long)]
    json: bool,
    /// Domain hint passed to the plugins (e.g. math, geography).
    #[arg(long)]
    domain: Option<String>,
    /// Seed for everything random in the round.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Minimum assess score to answer.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Most tokens a generative plugin may produce.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature for generative plugins (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Record the round in the ledger in this folder (node key, SQLite ledger);
    /// plugins' reputations from earlier rounds weigh their verdicts.
    #[arg(long, env = "APIARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Ask a running node (its HTTP API, e.g. http://127.0.0.1:8080) instead of
    /// running a local round: the question goes to the swarm.
    #[arg(long, env = "APIARY_NODE")]
    node: Option<String>,
    /// API key for --node, if its operator set one.
    #[arg(long, env = "APIARY_API_KEY")]
    api_key: Option<String>,
}

impl AskCommand {
    pub fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        match &self.node {
            Some(url) => self.ask_node(url),
            None => self.ask_locally(sandbox),
        }
    }

    fn ask_locally(&self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        let registry = sandbox.registry(&self.plugins)?;
        let ledger = self.data_dir.as_deref().map(open_ledger).transpose()?;
        warn_refused(&registry);
        let mut config = RoundConfig {
            threshold: self.threshold,
            ..Default::default()
        };
        let active = registry.active();
        let ledger = match ledger {
            Some((key, ledger)) => {
                let key = Arc::new(key);
                let domain = apiary::round::domain_of(&self.request());
                weigh_by_reputation(&key, &ledger, &active, &domain, &mut config)?;
                config.node = Some(key);
                Some(ledger)
            }
            None => None,
        };
        let report = round::run_local_round(registry.sandbox(), &active, &self.request(), &config)
            .map_err(CliError::round)?;
        if let (Some(ledger), Some(t)) = (ledger, &report.transcript) {
            record(ledger, t)?;
        }
        self.print(&report)
    }

    fn request(&self) -> apiary::sandbox::Request {
        let mut request = round::request(&self.question, self.seed);
        request.domain = self.domain.clone();
        request.max_tokens = self.max_tokens;
        request.temperature = self.temperature;
        request
    }

    /// The answer on stdout, or exit code 2 when there is none: scripts tell "no plugin
    /// knows" from a failure without reading stderr.
    fn print(&self, report: &RoundReport) -> Result<ExitCode, CliError> {
        if self.json {
            println!("{}", to_json(report)?);
        } else if self.explain {
            print_explain(report);
        }
        let Some(answer) = report.winning_answer() else {
            if !self.json {
                eprintln!("no plugin could answer this question (use --explain to see why)");
            }
            return Ok(ExitCode::from(exit::NO_ANSWER));
        };
        if !self.json {
            if self.explain {
                println!();
            }
            println!("{}", answer.text);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn ask_node(&self, url: &str) -> Result<ExitCode, CliError> {
        let v = runtime()?.block_on(self.post(url))?;
        if self.json {
            println!("{}", to_json(&v)?);
            return Ok(ExitCode::SUCCESS);
        }
        if self.explain {
            print_node_explain(&v["apiary"]);
        }
        println!(
            "{}",
            v["choices"][0]["message"]["content"].as_str().unwrap_or("")
        );
        Ok(ExitCode::SUCCESS)
    }

    /// The question as an OpenAI chat completion; the node's reply, or its error message.
    async fn post(&self, url: &str) -> Result<Value, CliError> {
        let endpoint = format!("{}/v1/chat/completions", url.trim_end_matches('/'));
        let body = serde_json::json!({
            "model": apiary::api::MODEL,
            "messages": [{"role": "user", "content": self.question}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        });
        let resp = reqwest::Client::new()
            .post(&endpoint)
            // A node without --api-key accepts any token, but one must be sent.
            .bearer_auth(self.api_key.as_deref().unwrap_or("apiary"))
            .json(&body)
            .send()
            .await
            .map_err(|e| CliError::Node(format!("cannot reach the node at {url}: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| {
            CliError::Node(format!("the node at {url} did not answer with JSON: {e}"))
        })?;
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("unknown error");
            return Err(CliError::Node(format!("the node answered {status}: {msg}")));
        }
        Ok(v)
    }
}

/// Refused plugins do not stop the round, but the operator should know why they are
/// missing from it.
fn warn_refused(registry: &Registry) {
    for l in registry.listing() {
        if let apiary::plugins::registry::Status::Refused { reason } = &l.status {
            eprintln!("warning: plugin {} refused: {reason}", l.id);
        }
    }
}

/// Each plugin's verdicts count by the reputation it earned in earlier rounds: its
/// standing before this round, which the transcript records.
fn weigh_by_reputation(
    key: &NodeKey,
    ledger: &Ledger,
    active: &[Arc<Plugin>],
    domain: &str,
    config: &mut RoundConfig,
) -> Result<(), CliError> {
    let params = &config.settings.params.reputation;
    for p in active {
        let s = ledger
            .standing(&local::member_key(&key.id(), &p.name), domain, params)
            .map_err(CliError::ledger)?;
        config.standings.insert(p.name.clone(), s);
    }
    Ok(())
}

/// Store the round's sealed transcript (the ledger checks it recomputes).
fn record(mut ledger: Ledger, t: &Transcript) -> Result<(), CliError> {
    ledger.record(t).map_err(CliError::ledger)?;
    eprintln!("round {} recorded (apiary rounds show {})", t.id, t.id);
    Ok(())
}

/// `--explain` for a local round: every member, verdict and score, then how it was decided.
fn print_explain(r: &RoundReport) {
    println!("question: {}", r.prompt);
    print_members(r);
    if !r.verdicts.is_empty() {
        print_verdicts(r);
    }
    println!("candidates (equal answers grouped; Bradley-Terry log-strength):");
    for (i, a) in r.answers.iter().enumerate() {
        let mark = if Some(i) == r.winner { "*" } else { " " };
        let candidate = a
            .candidate
            .map(|c| format!("#{c}"))
            .unwrap_or_else(|| "struck".into());
        println!(
            " {mark} {candidate:<6} {:<12} {:+.3}  {}",
            a.plugin, a.score, a.text
        );
    }
    if !r.pooled.is_empty() {
        let pooled: Vec<String> = r
            .pooled
            .iter()
            .map(|p| format!("{:.0} %", p * 100.0))
            .collect();
        println!("pooled option scores: {}", pooled.join(", "));
    }
    println!("{}; round took {} ms", how_decided(r), r.elapsed_ms);
}

/// One line on what decided the round.
fn how_decided(r: &RoundReport) -> String {
    use apiary::ledger::fold::DecidedBy;
    match r.decided_by {
        None => "no answer".into(),
        Some(DecidedBy::Single) => "decided by: a single candidate (nothing to compare)".into(),
        Some(DecidedBy::Verdicts) => format!(
            "decided by: verdicts (margin P(winner beats runner-up) = {:.2})",
            r.margin
        ),
        Some(DecidedBy::Pooled) => {
            "decided by: pooled option scores (the verdicts left the best tied)".into()
        }
        Some(DecidedBy::Support) => {
            "decided by: support (the most reputation behind one candidate; verdicts and option scores left it tied)".into()
        }
        Some(DecidedBy::Order) => {
            "decided by: fallback order (earned reputation, then assess, then the seed)".into()
        }
    }
}

fn print_members(r: &RoundReport) {
    println!("members:");
    for m in &r.members {
        let assess = m
            .assess
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "-".into());
        match (&m.answer, &m.error) {
            (Some(a), _) => println!("  {:<12} assess {assess}  answered: {a}", m.plugin),
            (None, Some(e)) => println!(
                "  {:<12} assess {assess}  {}{e}",
                m.plugin,
                if m.fault { "FAULT: " } else { "" }
            ),
            (None, None) => println!("  {:<12} assess {assess}", m.plugin),
        }
    }
}

fn print_verdicts(r: &RoundReport) {
    println!("verdicts (judge: first vs second -> preferred):");
    for v in &r.verdicts {
        let pick = match v.outcome {
            Some(Outcome::First) => r.answers[v.first].plugin.clone(),
            Some(Outcome::Second) => r.answers[v.second].plugin.clone(),
            Some(Outcome::Tie) => "tie".into(),
            Some(Outcome::Prefer(p)) => format!(
                "{} ({:.0} %)",
                r.answers[if p >= 500 { v.first } else { v.second }].plugin,
                f64::from(p.max(1000 - p.min(1000))) / 10.0
            ),
            Some(Outcome::Same) => "the same answer".into(),
            Some(Outcome::Abstain) => "abstains".into(),
            None => format!("error: {}", v.error.as_deref().unwrap_or("?")),
        };
        println!(
            "  {:<12} {} vs {} -> {pick}",
            v.judge, r.answers[v.first].plugin, r.answers[v.second].plugin
        );
    }
}

/// `--explain` for a swarm round, from the `apiary` block of the node's reply.
fn print_node_explain(a: &Value) {
    println!(
        "round {} ({} ms)",
        a["id"].as_str().unwrap_or("?"),
        a["elapsed_ms"]
    );
    for m in a["members"].as_array().into_iter().flatten() {
        println!(
            "  {} {:<10} assess {:.2} answered {} judged {} {}",
            m["node"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(12)
                .collect::<String>(),
            m["plugin"].as_str().unwrap_or("?"),
            m["score"].as_f64().unwrap_or(0.0),
            m["answered"],
            m["judged"],
            m["note"].as_str().unwrap_or("")
        );
    }
    let candidates: std::collections::BTreeSet<u64> = a["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    println!(
        "{} answers in {} candidates, {} verdicts, decided by {}, margin {:.2}{}",
        a["answers"],
        candidates.len(),
        a["verdicts"],
        a["decided_by"].as_str().unwrap_or("?"),
        a["margin"].as_f64().unwrap_or(0.0),
        if a["single_answer"].as_bool() == Some(true) {
            " (single answer)"
        } else if a["undecided"].as_bool() == Some(true) {
            " (undecided: no verdict separated the answers; took the best-reputed node's)"
        } else {
            ""
        }
    );
    println!();
}
