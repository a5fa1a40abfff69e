//! `apiary eval`: questions with known answers through rounds (local, or over an
//! in-process swarm with `--nodes`), scored per plugin,
//! by majority vote, by the swarm (with and without adversarial judges) and by an oracle.

use super::{CliError, SandboxArgs, to_json};
use apiary::eval::{self, Item, Report, Tally};
use apiary::plugins::Plugin;
use apiary::round::RoundConfig;
use apiary::swarm::RoundSettings;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct EvalCommand {
    /// Dataset files (JSON lines in apiary's item format).
    #[arg(required = true)]
    datasets: Vec<PathBuf>,
    #[arg(long, env = "APIARY_PLUGINS", default_value = "plugins")]
    plugins: PathBuf,
    /// At most this many items per dataset (a seeded sample).
    #[arg(long)]
    limit: Option<usize>,
    /// With --nodes: first play this many other items of each dataset (multiple choice)
    /// as known-answer rounds, unscored, so the swarm has measured how far each
    /// member's option scores can be trusted before the scored items (`consensus::known`).
    #[arg(long, default_value_t = 0, value_name = "ITEMS")]
    calibrate: usize,
    /// With --calibrate: take the known-answer items from this file (a bank as `apiary
    /// run --known-answers` reads) instead of each dataset's unscored items, skipping any
    /// whose question is scored; for a set with no items to spare (the mixed set).
    #[arg(long, value_name = "FILE", requires = "calibrate")]
    known_answers: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of the judges (plugins) made adversarial: every verdict reversed.
    #[arg(long, default_value_t = 0.0)]
    byzantine: f64,
    /// Minimum assess score to answer.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// The whole report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Run every round over a swarm of this many nodes in this process (libp2p's
    /// in-memory transport, signed and gated messages, the swarm's round settings with
    /// calibration) instead of locally; the plugins are spread over the nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// With --nodes: which plugins each node runs. `spread` (plugin i on node i mod N:
    /// one plugin per node by default) or groups such as `arith+facts,units`.
    #[arg(long, default_value = "spread")]
    layout: eval::swarm::Layout,
    /// With --nodes: phase deadlines in milliseconds (default: the swarm's, 3 s + 60 s +
    /// 60 s), for slow plugins on a busy machine. Members refuse rounds that end more
    /// than 15 minutes ahead, so the three add up to at most that.
    #[arg(long, value_name = "MS")]
    join_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    answer_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    judge_ms: Option<u64>,
}

impl EvalCommand {
    fn swarm_settings(&self) -> Result<RoundSettings, CliError> {
        let base = RoundSettings::swarm();
        let settings = RoundSettings {
            threshold: self.threshold,
            join_ms: self.join_ms.unwrap_or(base.join_ms),
            answer_ms: self.answer_ms.unwrap_or(base.answer_ms),
            judge_ms: self.judge_ms.unwrap_or(base.judge_ms),
            ..base
        };
        let total = settings.join_ms + settings.answer_ms + settings.judge_ms;
        if total > apiary::swarm::node::MAX_ROUND_MS {
            return Err(CliError::Usage(format!(
                "--join-ms + --answer-ms + --judge-ms is {total} ms; members refuse rounds \
                 that end more than {} ms ahead, so shorten them",
                apiary::swarm::node::MAX_ROUND_MS
            )));
        }
        Ok(settings)
    }

    pub fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        let (mut items, mut calibration) = (Vec::new(), Vec::new());
        for path in &self.datasets {
            let (scored, known) = self.read_dataset(path)?;
            items.extend(scored);
            calibration.extend(known);
        }
        if !calibration.is_empty() && self.nodes.is_none() {
            return Err(CliError::Usage(
                "--calibrate needs --nodes: local rounds keep no standings between items".into(),
            ));
        }
        let registry = sandbox.registry(&self.plugins)?;
        let plugins = registry.active();
        if plugins.is_empty() {
            return Err(CliError::Plugins(format!(
                "no plugins loaded from {}",
                self.plugins.display()
            )));
        }
        let total = items.len();
        let progress = |k: usize, r: &eval::ItemResult| {
            let outcome = if r.swarm_right { "right" } else { "wrong" };
            let id: String = r.id.chars().take(30).collect();
            eprint!("\r{}/{} {:<40}", k + 1, total, format!("{id} {outcome}"))
        };
        let report = if self.nodes.is_some() || self.layout != eval::swarm::Layout::Spread {
            let groups = eval::swarm::arrange(&self.layout, self.nodes, &plugins)
                .map_err(CliError::Usage)?;
            eprintln!(
                "eval over a swarm of {} nodes: {}",
                groups.len(),
                describe(&groups)
            );
            let settings = self.swarm_settings()?;
            if !calibration.is_empty() {
                eprintln!("first {} known-answer rounds (unscored)", calibration.len());
            }
            eval::swarm::run(
                registry.sandbox(),
                groups,
                eval::Items {
                    scored: &items,
                    calibration: &calibration,
                },
                &settings,
                self.seed,
                self.byzantine,
                progress,
            )
        } else {
            let config = RoundConfig {
                threshold: self.threshold,
                ..Default::default()
            };
            eval::run(
                registry.sandbox(),
                &plugins,
                &items,
                &config,
                self.seed,
                self.byzantine,
                progress,
            )
        }
        .map_err(CliError::round)?;
        // Ends the progress line.
        eprintln!();
        let names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
        let table = self.table(&report, &names);
        if self.json {
            // stdout stays pure JSON for whatever reads it.
            eprint!("{table}");
            println!("{}", to_json(&report)?);
        } else {
            print!("{table}");
        }
        Ok(ExitCode::SUCCESS)
    }

    /// One dataset's items; with `--limit`, a seeded sample so runs are comparable. With
    /// `--calibrate K`, also K multiple-choice items from outside the sample (the same
    /// shuffle, further on), for known-answer rounds.
    fn read_dataset(&self, path: &Path) -> Result<(Vec<Item>, Vec<Item>), CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
        let mut items = eval::read_items(&text)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        let n = self.limit.unwrap_or(items.len());
        if items.len() > n || self.calibrate > 0 {
            apiary::consensus::pairs::SplitMix(self.seed).shuffle(&mut items);
        }
        let mut rest = items.split_off(n.min(items.len()));
        let mut from = path.to_path_buf();
        if let Some(bank) = &self.known_answers {
            rest = self.read_bank(bank)?;
            from = bank.clone();
        }
        let scored: std::collections::HashSet<&str> =
            items.iter().map(|i| i.question.as_str()).collect();
        let known: Vec<Item> = rest
            .into_iter()
            .filter(|i| eval::gold_option(i).is_some() && !scored.contains(i.question.as_str()))
            .take(self.calibrate)
            .collect();
        if known.len() < self.calibrate {
            return Err(CliError::Input(format!(
                "{}: --calibrate {} but only {} multiple-choice items lie outside the {n} scored",
                from.display(),
                self.calibrate,
                known.len()
            )));
        }
        Ok((items, known))
    }

    /// The `--known-answers` file's items, in the seed's order.
    fn read_bank(&self, path: &Path) -> Result<Vec<Item>, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
        let mut items = eval::read_items(&text)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        apiary::consensus::pairs::SplitMix(self.seed ^ 0xBA4C).shuffle(&mut items);
        Ok(items)
    }

    /// Accuracy per dataset and overall, one column per plugin and per way of deciding.
    fn table(&self, report: &Report, names: &[String]) -> String {
        let byzantine = self.byzantine > 0.0;
        let mut table = format!("{:<16} {:>6}", "dataset", "items");
        for n in names {
            table.push_str(&format!(" {:>9}", n.chars().take(9).collect::<String>()));
        }
        table.push_str(&format!(
            " {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "majority",
            "swarm",
            if byzantine { "swarm-byz" } else { "-" },
            "oracle",
            "answered",
            "multi"
        ));
        table.push_str(&format!(
            "{:<16} (multi: rounds with two or more different answers; decided there by)\n",
            ""
        ));
        let rows = report
            .per_task
            .iter()
            .map(|(k, t)| (k.as_str(), t))
            .chain(std::iter::once(("overall", &report.overall)));
        for (name, t) in rows {
            table.push_str(&row(name, t, names, byzantine));
        }
        table.push_str(&format!(
            "{:.1} rounds per minute; seed {}{}\n",
            report.rounds_per_minute,
            report.seed,
            if byzantine {
                format!(
                    "; {:.0}% of judges adversarial in swarm-byz",
                    self.byzantine * 100.0
                )
            } else {
                String::new()
            }
        ));
        table.push_str(&judges(&report.overall));
        let t = &report.overall;
        table.push_str(&format!(
            "swarm with verdicts weighed by reputation alone (version 5's rule), same rounds: {}\n",
            pct(t.swarm_unrecorded, t.items)
        ));
        if report.calibration_rounds > 0 {
            table.push_str(&format!(
                "after {} known-answer rounds (unscored):\n",
                report.calibration_rounds
            ));
            table.push_str(&records(report, names));
        }
        table
    }
}

/// Each judge's verdicts on pairs with exactly one right answer, when there were any.
fn judges(t: &Tally) -> String {
    if t.judges.is_empty() {
        return String::new();
    }
    let each: Vec<String> = t
        .judges
        .iter()
        .map(|(n, j)| format!("{n} {}/{}/{}", j.right, j.wrong, j.no_lean))
        .collect();
    format!(
        "judges on pairs with one right answer (right/wrong/no lean): {}\n",
        each.join(", ")
    )
}

fn row(name: &str, t: &Tally, names: &[String], byzantine: bool) -> String {
    let mut row = format!("{:<16} {:>6}", name, t.items);
    for n in names {
        let right = t.per_plugin.get(n).copied().unwrap_or(0);
        row.push_str(&format!(" {:>9}", pct(right, t.items)));
    }
    row.push_str(&format!(
        " {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        pct(t.majority, t.items),
        pct(t.swarm, t.items),
        if byzantine {
            pct(t.swarm_byzantine, t.items)
        } else {
            "-".into()
        },
        pct(t.oracle, t.items),
        pct(t.answered, t.items),
        pct(t.multi, t.items)
    ));
    if t.multi > 0 {
        let by: Vec<String> = ["verdicts", "pooled", "support", "order"]
            .iter()
            .map(|k| format!("{k} {}", pct(t.by.get(*k).copied().unwrap_or(0), t.multi)))
            .collect();
        row.push_str(&format!("{:<16} {}\n", "", by.join(", ")));
    }
    row
}

/// Each plugin's known-answer record as the first scored round it answered saw it: what
/// the pool weighed it by.
fn records(report: &Report, names: &[String]) -> String {
    let scale = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s}"));
    names
        .iter()
        .filter_map(|n| {
            let a = report
                .items
                .iter()
                .flat_map(|i| &i.answers)
                .find(|a| &a.plugin == n)?;
            let (answered, right) = a.known;
            let j = a.judge;
            Some(format!(
                "  {n:<10} right {right}/{answered}, fitted scale {} (v3) {} (v4, debiased); \
                 judged right {}/{}, verdicts weigh x{:.2} (v6)\n",
                scale(a.scale),
                scale(a.debiased_scale),
                j.right,
                j.judged,
                j.factor()
            ))
        })
        .collect()
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / of as f64)
    }
}

/// `node 0: arith; node 1: facts+units`.
fn describe(groups: &[Vec<Arc<Plugin>>]) -> String {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let names: Vec<&str> = g.iter().map(|p| p.name.as_str()).collect();
            format!("node {i}: {}", names.join("+"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
