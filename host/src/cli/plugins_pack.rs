//! `apiary plugins pack|install`: signed packages.
//! (Skeleton: filled in by the packaging work.)

use super::{CliError, SandboxArgs};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct PackArgs {}

impl PackArgs {
    pub fn run(self) -> Result<ExitCode, CliError> {
        Err(CliError::Usage("not built yet".into()))
    }
}

#[derive(Args)]
pub struct InstallArgs {}

impl InstallArgs {
    pub fn run(self, _sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        Err(CliError::Usage("not built yet".into()))
    }
}
