//! `apiary rounds list|show|verify`: the rounds recorded in a node's ledger, and a check
//! that a transcript proves its own result.

use super::{CliError, exit, open_ledger, to_json};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct RoundsCommand {
    #[command(subcommand)]
    command: RoundsSubcommand,
}

#[derive(Subcommand)]
enum RoundsSubcommand {
    /// The most recent rounds.
    List(ListArgs),
    /// A round's transcript as JSON: signed answers, verdicts and result.
    Show(ShowArgs),
    /// Check every signature and recompute winner, rewards and reputation changes from
    /// the transcript alone. Exit 0 if it holds, 4 if not.
    Verify(VerifyArgs),
}

impl RoundsCommand {
    pub fn run(self) -> Result<ExitCode, CliError> {
        match self.command {
            RoundsSubcommand::List(c) => c.run(),
            RoundsSubcommand::Show(c) => c.run(),
            RoundsSubcommand::Verify(c) => c.run(),
        }
    }
}

#[derive(Args)]
struct ListArgs {
    #[arg(long, env = "APIARY_DATA_DIR")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

impl ListArgs {
    fn run(self) -> Result<ExitCode, CliError> {
        let (_, ledger) = open_ledger(&self.data_dir)?;
        for (id, created, prompt) in ledger.rounds(self.limit).map_err(CliError::ledger)? {
            println!("{id}  {created}  {prompt}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
struct ShowArgs {
    id: String,
    #[arg(long, env = "APIARY_DATA_DIR")]
    data_dir: PathBuf,
}

impl ShowArgs {
    fn run(self) -> Result<ExitCode, CliError> {
        let (_, ledger) = open_ledger(&self.data_dir)?;
        let t = ledger.round(&self.id).map_err(CliError::ledger)?;
        println!("{}", to_json(&t)?);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
struct VerifyArgs {
    id: String,
    #[arg(long, env = "APIARY_DATA_DIR")]
    data_dir: PathBuf,
}

impl VerifyArgs {
    /// A transcript that does not hold is a finding, not an error: the problems go to
    /// stdout and the exit code is 4, so a script can tell it from a missing round (1).
    fn run(self) -> Result<ExitCode, CliError> {
        let id = &self.id;
        let (_, ledger) = open_ledger(&self.data_dir)?;
        let t = ledger.round(id).map_err(CliError::ledger)?;
        let problems = t.verify();
        if !problems.is_empty() {
            for p in &problems {
                println!("round {id}: {p}");
            }
            return Ok(ExitCode::from(exit::VERIFY_FAILED));
        }
        let winner = t
            .result
            .payload
            .winner
            .map(|w| t.answers[w].payload.text.clone());
        println!(
            "round {id}: {} signatures valid; winner, rewards and reputation recomputed and equal (winner: {})",
            t.answers.len() + t.verdicts.len() + 1,
            winner.as_deref().unwrap_or("none")
        );
        Ok(ExitCode::SUCCESS)
    }
}
