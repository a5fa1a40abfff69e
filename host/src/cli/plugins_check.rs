//! `apiary plugins check DIR`: the conformance run before publishing.
//! (Skeleton: filled in by the authoring work.)

use super::{CliError, SandboxArgs};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckArgs {}

impl CheckArgs {
    pub fn run(self, _sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        Err(CliError::Usage("not built yet".into()))
    }
}
