//! `apiary keys new|show`: the author key that signs plugin packages.
//! (Skeleton: filled in by the packaging work.)

use super::CliError;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct KeysCommand {
    #[command(subcommand)]
    command: KeysSubcommand,
}

#[derive(Subcommand)]
enum KeysSubcommand {
    /// Create the author key.
    New,
    /// Show the author key's public half.
    Show,
}

impl KeysCommand {
    pub fn run(self, _ctx: &super::Context) -> Result<ExitCode, CliError> {
        match self.command {
            KeysSubcommand::New | KeysSubcommand::Show => {
                Err(CliError::Usage("not built yet".into()))
            }
        }
    }
}
