//! `apiary plugins check DIR`: the conformance run before publishing. The work is in
//! `apiary::author::check`; this file holds the flags, finds the folder and prints.

use super::{CliError, SandboxArgs, exit, to_json};
use apiary::author::build::package_name;
use apiary::author::check::{self, CheckOptions};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckArgs {
    /// A plugin folder (what `apiary plugins build` prints, or any folder a node loads),
    /// or a plugin crate after `apiary plugins build`, whose `target/plugin/NAME` is
    /// checked.
    dir: PathBuf,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    /// A question of the plugin's own domain to ask as well (repeatable); its first
    /// declared domain is the hint.
    #[arg(long = "prompt", value_name = "TEXT")]
    prompts: Vec<String>,
    /// List every call with its time and memory.
    #[arg(long, short)]
    verbose: bool,
}

impl CheckArgs {
    /// The report is printed whatever it finds; the exit code says whether anything
    /// failed (5), as `plugins audit` does for a refusal.
    pub fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        let folder = plugin_folder(&self.dir)?;
        let parent = folder
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let registry = sandbox.empty_registry(&parent)?;
        let options = CheckOptions {
            prompts: self.prompts,
        };
        let report = check::check(&registry, &folder, &options);
        if self.json {
            println!("{}", to_json(&report)?);
        } else {
            print!("{}", check::render(&report, self.verbose));
        }
        Ok(if report.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::CHECK_FAILED)
        })
    }
}

/// `dir` itself, or for a crate (a `Cargo.toml` beside its `plugin.toml`) the folder
/// `apiary plugins build` made from it.
fn plugin_folder(dir: &Path) -> Result<PathBuf, CliError> {
    let dir = dir.canonicalize().map_err(|e| {
        CliError::Usage(format!(
            "{} cannot be checked: {e}; pass a plugin folder (`apiary plugins build` prints one)",
            dir.display()
        ))
    })?;
    if !dir.join("Cargo.toml").is_file() {
        return Ok(dir);
    }
    let name = package_name(&dir).map_err(|e| CliError::Usage(e.to_string()))?;
    let built = dir.join("target").join("plugin").join(&name);
    if !built.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is a plugin crate that has not been built: run `apiary plugins build {}` first, \
             then check again",
            dir.display(),
            dir.display()
        )));
    }
    Ok(built)
}
