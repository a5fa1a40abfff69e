//! `apiary plugins new|build`: a plugin crate from a template, and its plugin folder.
//! (Skeleton: filled in by the authoring work.)

use super::CliError;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct NewArgs {
    name: String,
}

impl NewArgs {
    pub fn run(self) -> Result<ExitCode, CliError> {
        Err(CliError::Usage("not built yet".into()))
    }
}

#[derive(Args)]
pub struct BuildArgs {}

impl BuildArgs {
    pub fn run(self) -> Result<ExitCode, CliError> {
        Err(CliError::Usage("not built yet".into()))
    }
}
