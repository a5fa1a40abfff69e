//! `apiary sim`: a whole swarm in this process (in-memory libp2p transport, simulated
//! experts and adversaries), to see what the protocol does under attack.

use super::{CliError, RoundArgs, runtime, to_json};
use apiary::swarm::sim::{SimConfig, SimReport};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SimCommand {
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of nodes that collude: all answer one wrong number and vote for it.
    #[arg(long, default_value_t = 0.0)]
    colluders: f64,
    /// Fraction of nodes that answer garbage and judge at random.
    #[arg(long, default_value_t = 0.0)]
    garbage: f64,
    /// Fraction of nodes that answer after the deadline.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// Fraction of nodes that crash when asked for their answer.
    #[arg(long, default_value_t = 0.0)]
    crashing: f64,
    /// Fraction of nodes that send forged, replayed, oversized and malformed messages.
    #[arg(long, default_value_t = 0.0)]
    forgers: f64,
    /// How often an honest node answers right.
    #[arg(long, default_value_t = 0.8)]
    answer_accuracy: f64,
    /// How often an honest judge prefers a right answer over a wrong one.
    #[arg(long, default_value_t = 0.8)]
    judge_accuracy: f64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    round: RoundArgs,
}

/// The phase deadline a node gets by default; simulated experts answer at once, so a
/// simulation that was not given one waits [`SIM_PHASE_MS`] instead.
const NODE_PHASE_MS: u64 = 60_000;
const SIM_PHASE_MS: u64 = 2_000;

impl SimCommand {
    pub fn run(self) -> Result<ExitCode, CliError> {
        if self.nodes < 2 {
            return Err(CliError::Usage(
                "a swarm needs at least 2 nodes (--nodes)".into(),
            ));
        }
        let report = runtime()?
            .block_on(apiary::swarm::sim::run(self.config()))
            .map_err(CliError::round)?;
        if self.json {
            println!("{}", to_json(&report)?);
        } else {
            print_report(&report);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn config(&self) -> SimConfig {
        let mut settings = self.round.settings();
        if settings.answer_ms == NODE_PHASE_MS {
            settings.answer_ms = SIM_PHASE_MS;
        }
        if settings.judge_ms == NODE_PHASE_MS {
            settings.judge_ms = SIM_PHASE_MS;
        }
        SimConfig {
            nodes: self.nodes,
            rounds: self.rounds,
            seed: self.seed,
            colluders: self.colluders,
            garbage: self.garbage,
            slow: self.slow,
            crashing: self.crashing,
            forgers: self.forgers,
            answer_accuracy: self.answer_accuracy,
            judge_accuracy: self.judge_accuracy,
            settings,
        }
    }
}

fn print_report(report: &SimReport) {
    println!(
        "{} nodes: {}",
        report.nodes,
        counts(report.roles.iter().map(|(r, n)| (r, *n)))
    );
    for (i, r) in report.rounds.iter().enumerate() {
        match &r.error {
            None => println!(
                "round {i:>3}: {} = {:<6} got {:<8} {}  {} members, {} answers, {} verdicts, {} ms{}",
                r.prompt
                    .trim_start_matches("What is ")
                    .trim_end_matches('?'),
                r.truth,
                r.answer.as_deref().unwrap_or("-"),
                if r.correct { "right" } else { "WRONG" },
                r.members,
                r.answers,
                r.verdicts,
                r.ms,
                if r.single_answer {
                    " (single answer)"
                } else {
                    ""
                }
            ),
            Some(e) => println!("round {i:>3}: {} failed: {e}", r.prompt),
        }
    }
    println!(
        "accuracy {:.0}% ({} of {} rounds right); round time p50 {} ms, p95 {} ms",
        report.accuracy * 100.0,
        report.rounds.iter().filter(|r| r.correct).count(),
        report.rounds.len(),
        report.p50_ms,
        report.p95_ms
    );
    if !report.rejected.is_empty() {
        println!(
            "messages refused by the entry node: {}",
            counts(report.rejected.iter().map(|(k, n)| (k, *n)))
        );
    }
}

/// "3 honest, 1 forged": counts with what they count.
fn counts<'a>(items: impl Iterator<Item = (&'a String, impl std::fmt::Display)>) -> String {
    items
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}
